"""Prompt lookup: continuations of earlier occurrences of the context's last n-gram (no model)."""

from __future__ import annotations

import time

import torch

from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.types import DraftTree, tree_from_sequences


class PromptLookupDrafter:
    """Match the last `ngram` tokens (backing off to `min_ngram`) against the context; the `k` tokens
    that followed the most recent match, and the `branch_depth` (default `k`) that followed each of the
    next `max_branches - 1` distinct matches, become a trie. A shorter `branch_depth` keeps the
    alternatives where they pay (the first tokens, where matches disagree) for fewer verify rows."""

    needs = DraftNeeds()
    forward_count = 0

    def __init__(self, ngram: int = 3, k: int = 10, max_branches: int = 4, min_ngram: int = 1,
                 branch_depth: int | None = None, measure_shape: bool = False, clock=time.perf_counter):
        if not 1 <= min_ngram <= ngram:
            raise ValueError(f"need 1 <= min_ngram <= ngram, got min_ngram={min_ngram}, ngram={ngram}")
        if k < 1 or max_branches < 1 or (branch_depth is not None and branch_depth < 1):
            raise ValueError(f"k, max_branches and branch_depth must be >= 1, got k={k}, max_branches={max_branches}, "
                             f"branch_depth={branch_depth}")
        self.ngram, self.k, self.max_branches, self.min_ngram = ngram, k, max_branches, min_ngram
        self.branch_depth = k if branch_depth is None else branch_depth
        # measure_shape: when the matches disagree, draft either the trie or the most recent match alone,
        # whichever has given more tokens per second of step time on this machine (ShapeChooser).
        self.shapes = ShapeChooser(clock) if measure_shape and max_branches > 1 else None

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        pass  # proposes the context's own ids, always in the target's vocabulary

    def reset(self) -> None:
        pass

    def propose(self, ctx: DraftContext) -> DraftTree:
        continuations = self._continuations(ctx)
        if self.shapes is not None:
            continuations = continuations[: self.shapes.choose(ctx.token_ids, len(continuations))]
        return tree_from_sequences(continuations) if continuations else DraftTree.empty()

    def _continuations(self, ctx: DraftContext) -> list[list[int]]:
        ids = torch.tensor(ctx.token_ids)
        depth = min(self.k, ctx.budget)
        for n in range(self.ngram, self.min_ngram - 1, -1):
            if len(ids) <= n:
                continue
            windows = ids[:-1].unfold(0, n, 1)  # [T - n, n]: every n-gram that has a next token
            starts = (windows == ids[-n:]).all(dim=1).nonzero().flatten().tolist()
            continuations: list[list[int]] = []
            for start in reversed(starts):  # most recent first
                width = depth if not continuations else min(depth, self.branch_depth)
                continuation = ids[start + n : start + n + width].tolist()
                if continuation and not any(kept[: len(continuation)] == continuation for kept in continuations):
                    continuations.append(continuation)
                if len(continuations) == self.max_branches:
                    break
            if continuations:
                return continuations
        return []


class ShapeChooser:
    """Trie or chain, by measured throughput. Whether extra verify rows pay depends on the hardware: on
    a GPU 64 rows cost what 1 costs, in fp32 on a CPU 16 rows cost ~3x, in emulated bf16 ~9x (BENCHMARKS.md).
    So instead of a rule per device and dtype, each step whose matches disagree drafts one of the two
    shapes, and the time from one proposal to the next (the step: verify, acceptance, commit) and the
    tokens it committed are added to that shape's totals. Both shapes are tried `explore` times first,
    then the faster one (tokens / second) is drafted, with the other retried every `revisit` steps as
    the context grows. Only the draft's shape depends on the clock, never which tokens are accepted:
    lossless either way."""

    SHAPES = ("trie", "chain")

    def __init__(self, clock=time.perf_counter, explore: int = 4, revisit: int = 16):
        self.clock, self.explore, self.revisit = clock, explore, revisit
        self.tokens = dict.fromkeys(self.SHAPES, 0)
        self.seconds = dict.fromkeys(self.SHAPES, 0.0)
        self.samples = dict.fromkeys(self.SHAPES, 0)
        self.steps = 0
        self._open: tuple[str, int, int, float] | None = None  # shape, context length, last id, started

    def rate(self, shape: str) -> float:
        return self.tokens[shape] / self.seconds[shape] if self.seconds[shape] > 0 else 0.0

    def choose(self, token_ids: list[int], branches: int) -> int:
        """How many of `branches` continuations to draft (all: the trie; 1: the chain)."""
        now = self.clock()
        self._close(token_ids, now)
        if branches <= 1:
            return branches
        self.steps += 1
        shape = self._pick()
        self._open = (shape, len(token_ids), token_ids[-1], now)
        return branches if shape == "trie" else 1

    def _close(self, token_ids: list[int], now: float) -> None:
        """Book the step that followed the open proposal, if this context continues it."""
        if self._open is None:
            return
        shape, length, last, started = self._open
        self._open = None
        if len(token_ids) > length and token_ids[length - 1] == last:  # else a new generation began
            self.tokens[shape] += len(token_ids) - length
            self.seconds[shape] += now - started
            self.samples[shape] += 1

    def _pick(self) -> str:
        untried = [shape for shape in self.SHAPES if self.samples[shape] < self.explore]
        if untried:
            return min(untried, key=lambda shape: self.samples[shape])
        best = max(self.SHAPES, key=self.rate)
        if self.steps % self.revisit == 0:
            return next(shape for shape in self.SHAPES if shape != best)
        return best
