"""TargetDiffusionDrafter: DFlash's target-conditioned block diffusion (algorithms.md §9), as a lattice drafter.

Each step is ONE drafter forward through `CachedLM`: the context rows committed since the last step (the
target's hidden states the verifier handed over in `DraftContext.new_hidden`, fused by `DFlashModel`)
go in causally and stay cached; the block [anchor = last committed token, masks] goes in the same
forward as pending rows that see every context row and each other, and is dropped after it. The mask
rows' distributions become a `TokenLattice`, so every lattice search (argmax chain, CPS, OPT-Tree) and
the adaptive draft length work unchanged.

Positions. The verifier hands over the target's state at every committed position but the last (the
last token has not been through the target yet): context rows 0 .. T - 2, the anchor at T - 1, the
masks at T, T + 1, ... These are the positions of `training.dflash`'s blocks, where a block anchored at
p sees the features of positions < p.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.drafters.dflash_model import TRAIN_HINT, DFlashModel
from specdiff.kv import CachedLM
from specdiff.lattice import ContextLattice, LatticePruning, prune_lattice
from specdiff.masks import context_block_visible
from specdiff.processing import process_paths
from specdiff.vocab import resolve_draft_vocab, to_draft_indices, to_full_vocab


class TargetDiffusionDrafter:
    """Drafts min(k, budget) positions per step from the target's hidden states (a `ContextLattice`).

    model: a `DFlashModel`, attached here to `target` (its embedding and LM head). k: the default draft
    length, at most block_size - 1 (a block can shrink at inference, not grow). eos_token_ids: the
    lattice ends at the first position whose argmax is one of them. pruning: candidates kept per position.
    draft_vocab: the tokens it may propose (FR-Spec): "auto" (default) the ids of `draft_vocab.json` beside
    the drafter (`model.source`), else the whole head; None: the whole head; or the ids. Only those rows of
    the LM head run; every other token gets probability 0 (lossless either way).
    """

    def __init__(self, model: DFlashModel, target, k: int | None = None, *, eos_token_ids: Sequence[int] = (),
                 pruning: LatticePruning = LatticePruning(), draft_vocab="auto"):
        most = model.config.block_size - 1
        k = most if k is None else k
        if not 1 <= k <= most:
            raise ValueError(f"k (draft length) must be in [1, block_size - 1 = {most}], got {k}: a block can "
                             "shrink at inference, not grow")
        self.model = model.attach(target).eval()
        self.needs = DraftNeeds(hidden_layers=model.config.layers, hidden_history=True)
        self.draft_vocab = resolve_draft_vocab(draft_vocab, model.source, model.config.vocab_size)  # [N] or None
        self.lm = CachedLM(self.model.decoder, head_rows=self.draft_vocab, pack_one_row=True)
        self._ids = None if self.draft_vocab is None else self.draft_vocab.to(self.lm.device)
        self.k, self.pruning = k, pruning
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        # EOS as rows of the draft head (an EOS outside it is never drafted: probability 0)
        self._eos_rows = () if self._ids is None else tuple(
            int(i) for i in to_draft_indices(torch.tensor(self.eos_token_ids, dtype=torch.long), self._ids.cpu(),
                                             model.config.vocab_size) if i >= 0)
        self.reset()

    @classmethod
    def from_pretrained(cls, directory: str | Path, target, **options) -> "TargetDiffusionDrafter":
        return cls(DFlashModel.from_pretrained(directory), target, **options)

    @property
    def forward_count(self) -> int:
        return self.lm.forward_count

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        if target_vocab_size != self.model.config.vocab_size:
            raise ValueError(f"the DFlash drafter predicts {self.model.config.vocab_size} tokens but the target's LM "
                             f"head has {target_vocab_size} rows; {TRAIN_HINT}")

    def reset(self) -> None:
        self.lm.reset()

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> ContextLattice:
        """candidates [L, K], probs [L, K], dists [L, V] with L = min(k, budget) (cut at the first EOS); dists None
        when greedy over a draft vocabulary."""
        length = min(self.k, ctx.budget)
        logits = self._block_logits(ctx, length).float()  # [L, N]: over the draft vocabulary's ids (N = V without one)
        if self._ids is not None and ctx.sampling is None and not ctx.processors:
            # Greedy with nothing context-dependent to apply: rank inside the draft vocabulary and map the kept
            # candidates to target ids (sorted ids, so ties fall as over the whole head). A softmax and a top-k
            # over 49,152 columns cost SmolLM2's drafter ~6 ms a step, for rows that are -inf.
            lattice = prune_lattice(torch.softmax(logits, dim=-1), self._eos_rows, self.pruning)
            return ContextLattice(self._ids[lattice.candidates], lattice.probs, None, context=tuple(ctx.token_ids))
        if self._ids is not None:
            logits = to_full_vocab(logits, self._ids, self.model.config.vocab_size)  # [L, V], -inf outside
        logits = process_paths(ctx.processors, ctx.token_ids, [[]] * length, logits)
        dists = torch.softmax(logits, dim=-1) if ctx.sampling is None else ctx.sampling.probs(logits)
        return prune_lattice(dists, self.eos_token_ids, self.pruning, context=ctx.token_ids)

    def _new_context(self, ctx: DraftContext) -> tuple[list[int], torch.Tensor]:
        """(ids, features [n, layers, H]) of the context rows the cache lacks; the cache is synced to the rest."""
        token_ids = ctx.token_ids
        end = len(token_ids) - 1  # every committed position but the last has a target state
        start = ctx.new_hidden_start if ctx.new_hidden is not None else end
        count = ctx.new_hidden.shape[1] if ctx.new_hidden is not None else 0
        if start + count != end:
            raise ValueError(f"new_hidden covers positions {start}..{start + count - 1}, expected up to {end - 1} "
                             "(every committed position but the last)")
        cached = self.lm.sync(token_ids[:end])
        if cached < start:
            raise RuntimeError(f"the drafter holds context rows 0..{cached - 1} but the new target states start at "
                               f"{start}: a step's states were not handed over (the drafter must see every step's DraftContext)")
        features = ctx.new_hidden[:, cached - start :].transpose(0, 1) if count else None  # [n, layers, H]
        return token_ids[cached:end], features

    def _block_logits(self, ctx: DraftContext, length: int) -> torch.Tensor:
        """One forward of [new context rows (causal, kept), anchor + `length` masks (dropped)] -> mask logits."""
        new_ids, features = self._new_context(ctx)
        n, anchor = len(new_ids), ctx.token_ids[-1]
        device = self.lm.device
        context = None if features is None else self.model.context_embeds(features.to(device))  # [n, H]
        last_context = None  # fused masks: the context row of position T - 2, new this step or already cached
        if self.model.config.fused_masks:
            if context is not None and len(context):
                last_context = context[-1]
            elif ctx.new_hidden is not None and ctx.new_hidden.shape[1]:
                last_context = self.model.context_embeds(ctx.new_hidden[:, -1].to(device))
        block = self.model.block_embeds(torch.tensor(anchor, device=device), 1 + length, last_context)  # [1 + L, H]
        rows = block if context is None else torch.cat([context, block])
        first = len(ctx.token_ids) - 1 - n  # the position of the first new context row
        positions = torch.arange(first, first + n + 1 + length)
        out = self.lm.forward(new_ids + [anchor] * (1 + length), positions, context_block_visible(n, 1 + length),
                              inputs_embeds=rows)
        self.lm.compact(list(range(n)), new_ids)  # the block goes
        return out.logits[n + 1 :]  # [L, V or N]: slot k >= 1 predicts the token at its own position
