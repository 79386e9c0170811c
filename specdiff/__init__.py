"""SpecDiff: lossless speculative decoding for Hugging Face causal LMs.

Names are loaded on first use (PEP 562), so `import specdiff` (and the `specdiff` CLI's --help) does
not import torch, and the foundation (`specdiff.types`) stays free of the top (the API imports the
sibling packages).
"""

from importlib import import_module

_EXPORTS = {
    "SpecDiff": "specdiff.api", "GenerationResult": "specdiff.api", "DecodingConfig": "specdiff.config",
    "GenerationStats": "specdiff.metrics", "FixedDraftLength": "specdiff.policies",
    "AdaptiveDraftLength": "specdiff.policies", "DraftTree": "specdiff.types", "TokenLattice": "specdiff.types",
    "ProposalKind": "specdiff.types",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'specdiff' has no attribute {name!r}")


__all__ = list(_EXPORTS)
