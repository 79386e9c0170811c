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

    Two measurements, each with little noise:
    - the step time by verify rows (the time from one proposal to the next: verify, acceptance, commit),
      from every step, whatever it drafted; rows never timed are interpolated between timed ones;
    - what each arm would have committed. A probe step drafts the largest shape (the trie of every
      match on one probe in `trie_every`, else the most recent match alone, which costs fewer rows:
      a 41-row trie probe cost ~6% of the steps in bf16 when every other probe was one); the tokens it
      commits then say exactly what every smaller shape would have committed: greedy verification
      accepts the longest drafted prefix of the target's own continuation, so a sub-shape accepts its
      longest prefix of the committed tokens (and the bonus token follows). When sampling this is an
      estimate, not exact; the shape only has to be fast, not right.
    An arm's rate is its counterfactual tokens over their estimated step time, over the last `window`
    probes. The first `explore` steps with a match probe, then one step in `revisit`; the others draft
    the best arm, if it beats the most recent match in full (HF's shape) by more than `margin`, else
    that chain: estimates a few percent apart are noise (chasing them cost ~5% of tau on Spec-Bench).
    Only the draft's shape depends on the clock, never which tokens are accepted: lossless either way."""

    def __init__(self, k: int, clock=time.perf_counter, explore: int = 6, revisit: int = 8, window: int = 64,
                 margin: float = 0.05, trie_every: int = 4):
        if min(k, explore, revisit, window, trie_every) < 1 or margin < 0:
            raise ValueError(f"k, explore, revisit, window and trie_every must be >= 1 and margin >= 0, got {k}, "
                             f"{explore}, {revisit}, {window}, {trie_every}, {margin}")
        self.trie_every = trie_every
        self.clock, self.explore, self.revisit, self.margin = clock, explore, revisit, margin
        self.default: Arm = (1, k)
        depths = sorted({d for d in (1, 2, 4) if d < k} | {k})
        self.arms: list[Arm] = [(0, 0)] + [(b, d) for b in (1, ALL) for d in depths]
        self.samples: dict[Arm, deque[tuple[int, int]]] = {arm: deque(maxlen=window) for arm in self.arms}
        self.times: dict[int, list[float]] = {}  # verify rows -> [seconds, steps]
        self.steps = self.probes = 0
        self.since_probe = 0
        self._best: Arm | None = None  # recomputed when a probe is booked, not on every step
        self.last: Arm | str | None = None  # what the last step drafted: an arm, "probe" or "trie-probe"
        # the open step: context length, last id, started, rows drafted, and if it probed: what it drafted
        # and whether that was every match (a chain probe says nothing of the other matches)
        self._open: tuple[int, int, float, int, tuple[list[list[int]], bool] | None] | None = None

    def choose(self, token_ids: list[int], continuations: list[list[int]]) -> list[list[int]]:
        """The continuations to draft, cut to the chosen arm."""
        now = self.clock()
        self._close(token_ids, now)
        if not continuations:
            self._open = (len(token_ids), token_ids[-1], now, 1, None)
            return continuations
        self.steps += 1
        self.since_probe += 1
        if self.probes < self.explore or self.since_probe >= self.revisit:
            self.probes += 1
            self.since_probe = 0
            whole = self.probes % self.trie_every == 1 % self.trie_every or len(continuations) == 1
            drafted = continuations if whole else continuations[:1]
            self.last = "trie-probe" if whole else "probe"
            probe = (drafted, whole)
        else:
            if self._best is None:
                self._best = self.best()
            self.last = self._best
            drafted, probe = cut(continuations, self.last), None
        self._open = (len(token_ids), token_ids[-1], now, trie_rows(drafted), probe)
        return drafted

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

    def rate(self, arm: Arm) -> float:
        """Estimated tokens per second of step time for `arm` over its probes (0 before any)."""
        samples = self.samples[arm]
        if not samples or not self.times:
            return 0.0
        rows, tokens = np.array(samples).T
        return float(tokens.sum() / self.seconds(rows).sum())

    def best(self) -> Arm:
        rates = {arm: self.rate(arm) for arm in self.arms}
        best = max(self.arms, key=rates.__getitem__)
        return best if rates[best] > (1 + self.margin) * rates[self.default] else self.default

    def _close(self, token_ids: list[int], now: float) -> None:
        """Book the step that followed the open proposal, if this context continues it."""
        if self._open is None:
            return
        length, last, started, rows, probe = self._open
        self._open = None
        if len(token_ids) <= length or token_ids[length - 1] != last:
            return  # a new generation began
        timed = self.times.setdefault(rows, [0.0, 0])
        timed[0] += now - started
        timed[1] += 1
        if probe is None:
            return
        self._best = None
        drafted_then, whole = probe
        committed = token_ids[length:]  # the accepted drafts, then the target's own token
        for arm in self.arms:
            if arm[0] > 1 and not whole:
                continue
            drafted = cut(drafted_then, arm)
            accepted = max((common_prefix_length(c, committed) for c in drafted), default=0)
            self.samples[arm].append((trie_rows(drafted), min(accepted, len(committed) - 1) + 1))
