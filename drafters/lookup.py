"""Prompt lookup: continuations of earlier occurrences of the context's last n-gram (no model)."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch

from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.kv import common_prefix_length
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
        # measure_shape: draft every match or the most recent alone, cut to 1, 2, 4 or k tokens, or
        # nothing, whichever measures the most tokens per second of step time on this machine (ShapeChooser).
        self.shapes = ShapeChooser(k, clock) if measure_shape else None

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        pass  # proposes the context's own ids, always in the target's vocabulary

    def reset(self) -> None:
        pass

    def propose(self, ctx: DraftContext) -> DraftTree:
        continuations = self._continuations(ctx)
        if self.shapes is not None:
            continuations = self.shapes.choose(ctx.token_ids, continuations)
        return tree_from_sequences(continuations) if continuations else DraftTree.empty()

    def _continuations(self, ctx: DraftContext) -> list[list[int]]:
        return self.match(ctx)[1]

    def match(self, ctx: DraftContext) -> tuple[int, list[list[int]]]:
        """(n, continuations): the longest n-gram (ngram down to min_ngram) that ends the context and occurred
        before, and what followed its most recent occurrences (see the class); (0, []) without a match."""
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
                return n, continuations
        return 0, []


Arm = tuple[int, int]  # (branches, depth): branches 0 drafts nothing; ALL keeps every match
ALL = 1 << 30


def cut(continuations: list[list[int]], arm: Arm) -> list[list[int]]:
    """The draft an arm makes of the matches' continuations (most recent first): the first `branches`
    of them, each cut to `depth` tokens (duplicates that cutting makes are dropped)."""
    branches, depth = arm
    kept: list[list[int]] = []
    for continuation in continuations[:branches]:
        if continuation[:depth] not in kept:
            kept.append(continuation[:depth])
    return kept


def trie_rows(continuations: list[list[int]]) -> int:
    """Verify rows of the trie of `continuations`: its nodes, plus the row of the last committed token."""
    return 1 + len({tuple(c[: i + 1]) for c in continuations for i in range(len(c))})


class ShapeChooser:
    """The draft's shape by measured throughput. Whether extra verify rows pay depends on the hardware:
    on a GPU 64 rows cost what 1 costs, in fp32 on a CPU 16 rows cost ~3x, in emulated bf16 up to ~9x
    (BENCHMARKS.md). So instead of a rule per device and dtype the chooser measures, and picks among
    arms: every match or the most recent one alone, cut to 1, 2, 4 or all `k` tokens, or no draft.

    Two measurements, neither of which costs a step:
    - the step time by verify rows (the time from one proposal to the next: verify, acceptance, commit),
      from every step, whatever it drafted; rows never timed are interpolated between timed ones. The
      first `explore` steps with a match draft every match in full, so that the largest shape is timed;
    - what every arm would have committed at every step. Greedy verification accepts the longest drafted
      prefix of the target's own continuation, and that continuation is what the generation goes on to
      commit whatever is drafted: so once the context has grown `k + 1` tokens past a step, each arm's
      draft at that step is scored against those tokens (its longest prefix of them, plus the bonus
      token). When sampling this is an estimate, not exact; the shape only has to be fast, not right.
    An arm's rate is its tokens over their estimated step time, over the last `window` steps. The chooser
    drafts the most recent match in full (HF's shape) unless an arm beats it on the same steps by more
    than `margin` with `z` jackknife standard errors to spare, over `min_samples` steps or more (an
    earlier chooser that drafted the largest shape on probe steps to learn this, and chose on a few of
    them, cost lookup 2-4% against the plain chain on this CPU). Steps count within one generation: the
    verifier extends one list of ids per generation (DraftContext), so a new list starts afresh.
    Only the draft's shape depends on the clock, never which tokens are accepted: lossless either way."""

    def __init__(self, k: int, clock=time.perf_counter, explore: int = 4, window: int = 256, margin: float = 0.05,
                 min_samples: int = 16, z: float = 2.0, every: int = 8):
        if min(k, window, min_samples, every) < 1 or explore < 0 or margin < 0 or z < 0:
            raise ValueError(f"k, window, min_samples and every must be >= 1, explore, margin and z >= 0, got {k}, "
                             f"{window}, {min_samples}, {every}, {explore}, {margin}, {z}")
        self.k, self.clock, self.explore, self.margin = k, clock, explore, margin
        self.min_samples, self.z, self.every = min_samples, z, every
        self.default: Arm = (1, k)
        depths = sorted({d for d in (1, 2, 4) if d < k} | {k})
        self.arms: list[Arm] = [(0, 0)] + [(b, d) for b in (1, ALL) for d in depths]
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        self.booked: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=window)  # (rows, tokens) by arm, a step each
        self.times: dict[int, list[float]] = {}  # verify rows -> [seconds, steps]
        self.steps = 0  # steps with a match
        self.last: Arm | None = None  # what the last step with a match drafted
        self._best: Arm = self.default
        self._unjudged = 0  # steps booked since `_best` was last recomputed
        self._context: list[int] | None = None  # the ids of the generation in progress
        self._pending: deque[tuple[int, list[list[int]]]] = deque()  # (context length, matches) not yet scored
        self._open: tuple[float, int] | None = None  # the step in progress: started, verify rows

    def choose(self, token_ids: list[int], continuations: list[list[int]]) -> list[list[int]]:
        """The continuations to draft, cut to the chosen arm."""
        now = self.clock()
        if token_ids is self._context:
            self._book(token_ids, now)
        else:  # a new generation: the previous one's last step and unscored steps are dropped
            self._context = token_ids
            self._pending.clear()
        drafted = continuations
        if continuations:
            self.steps += 1
            self._pending.append((len(token_ids), continuations))
            if self.steps > self.explore:
                if self._unjudged >= self.every:
                    self._best, self._unjudged = self.best(), 0
                drafted = cut(continuations, self._best)
            self.last = self._best if self.steps > self.explore else (ALL, self.k)
        self._open = (now, trie_rows(drafted))
        return drafted

    def _book(self, token_ids: list[int], now: float) -> None:
        """Time the step that just ended, and score every arm at the steps now `k + 1` tokens behind."""
        started, rows = self._open
        timed = self.times.setdefault(rows, [0.0, 0])
        timed[0] += now - started
        timed[1] += 1
        while self._pending and self._pending[0][0] + self.k + 1 <= len(token_ids):
            length, continuations = self._pending.popleft()
            self.booked.append(self.score(continuations, token_ids[length : length + self.k + 1]))
            self._unjudged += 1

    def score(self, continuations: list[list[int]], continuation: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Verify rows and tokens committed of every arm, had it drafted from `continuations` (the matches,
        most recent first) where the target went on with `continuation` (k + 1 tokens)."""
        accepted = [common_prefix_length(c, continuation) for c in continuations]
        rows, tokens = np.empty(len(self.arms)), np.empty(len(self.arms))
        rows[0], tokens[0] = 1, 1  # no draft: the target's own token, one row
        for i, (branches, depth) in enumerate(self.arms[1:], start=1):
            kept = continuations[:branches]
            rows[i] = trie_rows([c[:depth] for c in kept])
            tokens[i] = max(min(a, depth) for a in accepted[: len(kept)]) + 1
        return rows, tokens

    def seconds(self, rows):
        """The step time of `rows` verify rows (an int or an array): measured, else interpolated between
        the row counts timed, and below the smallest one extrapolated along the line through the two
        smallest (optimistic, so that a shorter arm gets drafted, and so timed; None before any step)."""
        if not self.times:
            return None
        measured = sorted(self.times)
        means = [self.times[r][0] / self.times[r][1] for r in measured]
        estimate = np.interp(rows, measured, means)
        if len(measured) > 1:
            slope = (means[1] - means[0]) / (measured[1] - measured[0])
            below = np.maximum(means[0] - slope * (measured[0] - np.asarray(rows)), 0.1 * means[0])
            estimate = np.where(np.asarray(rows) < measured[0], below, estimate)
        return estimate

    def samples(self, arm: Arm) -> list[tuple[int, int]]:
        """(verify rows, tokens committed) of `arm` at each step scored, oldest first."""
        i = self._index[arm]
        return [(int(rows[i]), int(tokens[i])) for rows, tokens in self.booked]

    def rate(self, arm: Arm) -> float:
        """Estimated tokens per second of step time for `arm` (0 before any step is scored)."""
        table = self._table()
        if table is None:
            return 0.0
        rows, tokens, seconds = table
        i = self._index[arm]
        return float(tokens[:, i].sum() / seconds[:, i].sum())

    def _table(self):
        """Rows, tokens and estimated seconds of every scored step (rows) by arm (columns); None before any."""
        if not self.booked or not self.times:
            return None
        rows, tokens = (np.array(column) for column in zip(*self.booked))
        return rows, tokens, self.seconds(rows)

    def against_default(self, arm: Arm, table=None) -> tuple[float, float, int]:
        """`arm`'s rate over the default's on the same steps, the ratio's jackknife standard error (inf
        below 2 steps) and the number of steps."""
        table = table or self._table()
        if table is None:
            return 0.0, float("inf"), 0
        rows, tokens, seconds = table
        i, d = self._index[arm], self._index[self.default]
        n = len(rows)
        a, c, sa, sc = tokens[:, i], tokens[:, d], seconds[:, i], seconds[:, d]
        ratio = (a.sum() / sa.sum()) / (c.sum() / sc.sum())
        if n < 2:
            return float(ratio), float("inf"), n
        left_out = ((a.sum() - a) / (sa.sum() - sa)) / ((c.sum() - c) / (sc.sum() - sc))
        error = np.sqrt((n - 1) / n * ((left_out - left_out.mean()) ** 2).sum())
        return float(ratio), float(error), n

    def best(self) -> Arm:
        """The arm whose lower bound (ratio - z errors) over the default is highest, if it clears the
        margin after `min_samples` steps; else the default."""
        table = self._table()
        if table is None or len(table[0]) < self.min_samples:
            return self.default
        bounds = {}
        for arm in self.arms:
            if arm != self.default:
                ratio, error, _ = self.against_default(arm, table)
                bounds[arm] = ratio - self.z * error
        best = max(bounds, key=bounds.__getitem__)
        return best if bounds[best] > 1 + self.margin else self.default
