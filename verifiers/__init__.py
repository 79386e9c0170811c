"""Verifiers: score a whole draft tree with the target in one forward, then compact the cache."""

from specdiff.verifiers.hf import HFVerifier

__all__ = ["HFVerifier"]
