"""SpecDiff: lossless speculative decoding for Hugging Face causal LMs."""

from specdiff.config import DecodingConfig
from specdiff.metrics import GenerationStats
from specdiff.policies import AdaptiveDraftLength, FixedDraftLength
from specdiff.types import DraftTree, ProposalKind, TokenLattice


def __getattr__(name):
    # The API imports the sibling packages (verifiers, trees, drafters); loading it lazily keeps
    # `import specdiff.types` free of them (the foundation never imports the top).
    if name in ("SpecDiff", "GenerationResult"):
        from specdiff import api

        return getattr(api, name)
    raise AttributeError(f"module 'specdiff' has no attribute {name!r}")


__all__ = ["SpecDiff", "GenerationResult", "DecodingConfig", "GenerationStats", "FixedDraftLength",
           "AdaptiveDraftLength", "DraftTree", "TokenLattice", "ProposalKind"]
