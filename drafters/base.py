"""The drafter contract (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from transformers import LogitsProcessorList

from specdiff.masks import QuerySlots
from specdiff.sampling import SamplingSettings
from specdiff.types import DraftTree, TokenLattice


@dataclass(frozen=True)
class DraftNeeds:
    """What a drafter asks of the verifier's forwards (declared once, read by `SpecDiff`).

    hidden_layers: target hidden states handed over in `DraftContext.hidden_state`, in this order
    (-1: the LM head's input, after the final norm; i >= 0: transformers' hidden_states[i]).
    query_slots: the drafter adds query rows to every verifier forward (`SlotDrafter.query_slots`).
    drafts_with_target: the drafter is built on the target itself (TiDAR): `SpecDiff` checks that
    `drafter.model` is the model it verifies with.
    hidden_history: the drafter reads the target's hidden states (of `hidden_layers`) at every
    committed position, not only the last one (EAGLE's features, DFlash's context): each
    `DraftContext.new_hidden` then holds the rows committed since the previous one. The verifier's
    prefill feeds the whole prompt then (no reuse of a cached chat prefix), so none is missing.
    """

    hidden_layers: tuple[int, ...] = ()
    query_slots: bool = False
    drafts_with_target: bool = False
    hidden_history: bool = False

    def __post_init__(self):
        if self.hidden_history and not self.hidden_layers:
            raise ValueError("hidden_history needs hidden_layers: which of the target's layers to hand over")


@dataclass(frozen=True)
class DraftContext:
    """What a drafter sees each step.

    token_ids: every committed id (prompt + generated so far); the drafter reconciles its own cache
    against them. budget: the draft length the policy allows this step (>= 1).
    hidden_state [layers, H]: the target's hidden states (the drafter's `needs.hidden_layers`) at the
    row that predicted the last committed token; None when the drafter asked for none, or when no
    such row ran (a one-token prompt).
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
    # (`SlotDrafter.query_slots`, TiDAR's pre-draft blocks); None when it added none.
    slot_logits: torch.Tensor | None = None
    # With `DraftNeeds.hidden_history`: new_hidden [layers, n, H] are the target's hidden states at the
    # committed positions new_hidden_start .. new_hidden_start + n - 1 that the verifier computed since
    # the previous context (after the prefill: positions 0 .. T - 2, every prompt row but the last
    # token's; after a step: the row of the previous last token and the accepted drafts). The last
    # committed token never has one yet: it is fed in the next verify forward. None otherwise.
    new_hidden: torch.Tensor | None = None
    new_hidden_start: int = 0

    def __post_init__(self):
        if self.sampling is not None and self.generator is None:
            raise ValueError("a sampled DraftContext needs the run's torch.Generator (generator=...)")


@runtime_checkable
class Drafter(Protocol):
    needs: DraftNeeds  # what the verifier's forwards must hand over (DraftNeeds() for nothing)
    k: int  # the default draft length
    forward_count: int  # drafter model forwards so far (0 for model-free drafters)

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        """Check the pairing with the target once, at the boundary; raise ValueError on a mismatch."""

    def propose(self, ctx: DraftContext) -> TokenLattice | DraftTree | None: ...

    def reset(self) -> None:
        """Forget per-request state (caches)."""


@runtime_checkable
class SlotDrafter(Drafter, Protocol):
    """A drafter that drafts inside the verifier's forward (TiDAR); `needs.query_slots` is True."""

    def query_slots(self, token_ids: list[int], tree: DraftTree | None) -> QuerySlots:
        """The rows to add to the verifier's next forward: tree None, the prefill of `token_ids`;
        else the score of `tree` after the committed `token_ids`. Their logits come back in the next
        `DraftContext.slot_logits`."""
