"""Prompt lookup: continuations of earlier occurrences of the context's last n-gram (no model)."""

from __future__ import annotations

import torch

from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.types import DraftTree, tree_from_sequences


class PromptLookupDrafter:
    """Match the last `ngram` tokens (backing off to `min_ngram`) against the context; the `k` tokens
    that followed each of the `max_branches` most recent distinct matches become a trie."""

    needs = DraftNeeds()
    forward_count = 0

    def __init__(self, ngram: int = 3, k: int = 10, max_branches: int = 4, min_ngram: int = 1):
        if not 1 <= min_ngram <= ngram:
            raise ValueError(f"need 1 <= min_ngram <= ngram, got min_ngram={min_ngram}, ngram={ngram}")
        if k < 1 or max_branches < 1:
            raise ValueError(f"k and max_branches must be >= 1, got k={k}, max_branches={max_branches}")
        self.ngram, self.k, self.max_branches, self.min_ngram = ngram, k, max_branches, min_ngram

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        pass  # proposes the context's own ids, always in the target's vocabulary

    def reset(self) -> None:
        pass

    def propose(self, ctx: DraftContext) -> DraftTree:
        ids = torch.tensor(ctx.token_ids)
        depth = min(self.k, ctx.budget)
        for n in range(self.ngram, self.min_ngram - 1, -1):
            if len(ids) <= n:
                continue
            windows = ids[:-1].unfold(0, n, 1)  # [T - n, n]: every n-gram that has a next token
            starts = (windows == ids[-n:]).all(dim=1).nonzero().flatten().tolist()
            continuations: list[list[int]] = []
            for start in reversed(starts):  # most recent first
                continuation = ids[start + n : start + n + depth].tolist()
                if continuation and continuation not in continuations:
                    continuations.append(continuation)
                if len(continuations) == self.max_branches:
                    break
            if continuations:
                return tree_from_sequences(continuations)
        return DraftTree.empty()
