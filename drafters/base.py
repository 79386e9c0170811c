"""The drafter contract (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from transformers import LogitsProcessorList

from specdiff.sampling import SamplingSettings
from specdiff.types import DraftTree, TokenLattice


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading ids two sequences share: what a drafter's cache can keep of its last context."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@dataclass(frozen=True)
class DraftContext:
    """What a drafter sees each step.

    token_ids: every committed id (prompt + generated so far); the drafter reconciles its own cache
    against them. budget: the draft length the policy allows this step (>= 1).
    hidden_state [H]: the target's last-layer hidden state at the last committed token, when the
    verifier captured it (heads drafters); None otherwise.
    sampling: the warp the target samples with (None: greedy). A drafter that samples its drafts
    draws them from `sampling.probs` of its logits with `generator`, reports that distribution in
    draft_dists and declares the tree's kind; fixed candidates are DETERMINISTIC (algorithms.md §6).
    """

    token_ids: list[int]
    budget: int
    hidden_state: torch.Tensor | None = None
    sampling: SamplingSettings | None = None
    generator: torch.Generator | None = None
    # The target's context-dependent processors (repetition penalty, no-repeat n-gram). A drafter
    # may apply them to its own logits so its drafts follow the target's decoding rule; acceptance
    # stays exact either way, only the acceptance rate changes.
    processors: LogitsProcessorList | None = None
    # [E, V] fp32 logits of the query slots the drafter added to the verifier's last forward
    # (`query_slots`, TiDAR's pre-draft blocks); None when it added none.
    slot_logits: torch.Tensor | None = None

    def __post_init__(self):
        if self.sampling is not None and self.generator is None:
            raise ValueError("a sampled DraftContext needs the run's torch.Generator (generator=...)")


@runtime_checkable
class Drafter(Protocol):
    forward_count: int  # drafter model forwards so far (0 for model-free drafters)

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        """Check the pairing with the target once, at the boundary; raise ValueError on a mismatch."""

    def propose(self, ctx: DraftContext) -> TokenLattice | DraftTree: ...

    def reset(self) -> None:
        """Forget per-request state (caches)."""


# Optional, for drafters that draft inside the verifier's forward (TiDAR):
#   query_slots(token_ids: list[int], tree: DraftTree | None) -> specdiff.masks.QuerySlots
# is called before each verifier forward (tree None: the prefill of `token_ids`; else the score of
# `tree` after the committed `token_ids`); the slots' logits come back in the next DraftContext.
