"""EAGLE drafting (algorithms.md §10): an `EagleModel` drafts autoregressively over the target's features.

The drafter's cache is a `CachedLM` over the model's one-layer decoder. Its committed rows are those of
the committed positions 0 .. T - 2, each fed with the target's feature there (`DraftContext.new_hidden`,
every step's newly verified rows: `DraftNeeds.hidden_history`). Row t reads token t + 1, so the row
is named by that token: the cache holds committed ids[1:] and `CachedLM.sync` keeps the rows whose
names still match (a new first token starts afresh). The last committed row predicts the first draft;
drafted rows read the drafter's own output at their parent row as their feature (EAGLE's recurrence),
so they never stay committed: a chain is fed as rows that are dropped after drafting, a tree as
pending rows, as the AR drafter does.

Drafts: a greedy chain of `k` (top_k 1), or EAGLE-2's dynamic tree: the AR drafter's layer-wise beam
of `top_k` paths by path probability (OPT-Tree's; an `OptTree` node budget on top keeps the best
nodes). Sampling draws chains from the drafter's warped distribution over the target vocabulary
(zero outside a reduced draft vocabulary) and reports it, so acceptance stays lossless.
"""

from __future__ import annotations

from pathlib import Path

import torch

from specdiff.drafters.autoregressive import AutoregressiveDrafter
from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.drafters.eagle_model import TRAIN_HINT, EagleModel
from specdiff.types import DraftTree


class EagleDrafter(AutoregressiveDrafter):
    """Use it with the target it is attached to: `SpecDiff(target, EagleDrafter(eagle, target))`.

    k: draft length (tree depth); top_k: 1 for the greedy chain, else the beam width of the tree;
    tree_threshold: OPT-Tree's delta (see AutoregressiveDrafter). With a committed row whose
    target feature is missing (a one-token prompt before its first verify step) it drafts nothing.
    """

    def __init__(self, eagle: EagleModel, target, k: int = 5, top_k: int = 1, tree_threshold: float | None = None):
        self.eagle = eagle.attach(target).eval()
        super().__init__(self.eagle.decoder, k=k, top_k=top_k, tree_threshold=tree_threshold)
        self.needs = DraftNeeds(hidden_layers=self.eagle.verifier_layers, hidden_history=True)
        self.vocab_size = self.shared_vocab = eagle.config.vocab_size

    @classmethod
    def from_pretrained(cls, directory: str | Path, target, k: int = 5, top_k: int = 1) -> "EagleDrafter":
        eagle = EagleModel.from_pretrained(directory, target.get_output_embeddings().weight.dtype, target.device)
        return cls(eagle, target, k=k, top_k=top_k)

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        if target_vocab_size != self.eagle.config.vocab_size:
            raise ValueError(f"the EAGLE drafter predicts {self.eagle.config.vocab_size} tokens but the target's LM "
                             f"head has {target_vocab_size} rows; {TRAIN_HINT}")

    def reset(self) -> None:
        super().reset()
        self._first: int | None = None  # committed id 0: every row depends on it, but none is named by it
        self._hidden, self._hidden_start = None, 0  # the last new_hidden [layers, n, H] and its first position
        self._feature = None  # [H] the output of the last fed chain row
        self._node_features: dict[int, torch.Tensor] = {}  # tree node (-1: the last committed row) -> its output

    def _logits(self, out) -> torch.Tensor:
        return self.eagle.to_target(out.logits.float())  # [Q, V]

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> DraftTree:
        if ctx.new_hidden is not None:
            self._hidden, self._hidden_start = ctx.new_hidden, ctx.new_hidden_start
        logits = self._sync(ctx.token_ids)
        if logits is None:
            return DraftTree.empty()
        tree = self._draft(logits, ctx)
        self.lm.drop(len(self.lm.ids) - (len(ctx.token_ids) - 1))  # chain rows read drafted features: they go
        return tree

    def _sync(self, token_ids: list[int]) -> torch.Tensor | None:
        """Feed the committed rows not cached yet; logits [V] of the last one (the first draft's), or
        None when the target's features of a row to feed are missing."""
        if token_ids[0] != self._first:
            self.lm.reset()
            self._first = token_ids[0]
        names = token_ids[1:]  # row t reads, and is named by, token t + 1
        keep = self.lm.sync(names[:-1])  # at least the last row is fed: it predicts the first draft
        start, hidden = self._hidden_start, self._hidden
        if not names or hidden is None or not start <= keep or start + hidden.shape[1] < len(names):
            return None
        states = hidden[:, keep - start : len(names) - start].transpose(0, 1)  # [rows, layers, H]
        out = self._feed(names[keep:], self.eagle.fuse_features(states))
        self._feature = out.hidden[0, -1]
        self._node_features = {-1: self._feature}
        return self._logits(out)[-1]

    def _feed(self, ids: list[int], features: torch.Tensor, positions=None, visible=None):
        """One drafter forward over rows reading `ids` [Q] and `features` [Q, H] (CachedLM.forward's rules)."""
        embeds = self.eagle.inputs(torch.tensor(ids, device=features.device), features)  # [Q, E]
        return self.lm.forward(ids, positions, visible, hidden_layers=(-1,), inputs_embeds=embeds)

    def _extend(self, token: int) -> torch.Tensor:
        out = self._feed([token], self._feature[None])
        self._feature = out.hidden[0, -1]
        return self._logits(out)[-1]

    def _forward_rows(self, rows, tokens, parents, positions, visible) -> torch.Tensor:
        features = torch.stack([self._node_features[parents[row]] for row in rows])  # [F, H]
        out = self._feed([tokens[row] for row in rows], features, positions, visible)
        self._node_features.update(zip(rows, out.hidden[0]))
        return self._logits(out)
