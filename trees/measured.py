"""The tree's size by measured cost (Sequoia's hardware-aware tree size, Chen et al. 2024, §3.3): keep the
n most probable nodes of a draft, with n chosen per step to maximise expected tokens per second.

Whether an extra verify row pays depends on the hardware: on a GPU 16 rows cost what one costs; on this
project's CPUs a 16-row fp32 forward of SmolLM2 costs 1.7-2.3x a one-row forward and a bf16 one 1.2x on
an AMX host (BENCHMARKS.md). A fixed node budget or confidence cut is right for one machine and dtype
only, so this builder measures instead, on the generation itself:

- verify seconds by rows, from every step (the loop reports each step's verify time, `observe`), median
  per row count, interpolated between the counts timed;
- the rest of a step (drafting, search, acceptance, commit), whatever the tree's size;
- how far the drafter's probabilities are to be trusted, node by node (`Reliability`): how often a node was
  accepted when its parent was, against the probability its drafter gave it, by who proposed it (in a tree
  merged from a model drafter and prompt lookup), its depth and its probability;
- and as a whole: accepted tokens over the expected acceptance E(A) (OPT-Tree's Eq. 3, the sum of path
  probabilities, here of the calibrated ones) of the trees verified, over a window.

Per step it keeps the top-n nodes by calibrated path probability (a connected tree: path probability never
grows down a path), n maximising (1 + c * E_n) / (other + verify(n + 1)). The first steps of a builder's life
walk a ladder of sizes (the whole draft, none, 1, 2, 4, 8, ... nodes) so that every size has a time.
Only the tree's size depends on the clock, never which tokens are accepted: lossless either way (a cut
by probability makes the kept nodes fixed candidates, as OptTree does, when sampling).
"""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np
import torch

from specdiff.trees.base import TreeBuilder
from specdiff.trees.opt_tree import path_log_probs
from specdiff.trees.static import select_nodes
from specdiff.types import DraftTree, ProposalKind, Source, TokenLattice, tree_depths


# Reliability cells: the node's source (`types.Source`); depth 1, 2, 3 and deeper; the drafter's probability in
# bins split at these edges.
RELIABILITY_DEPTHS = 3
RELIABILITY_EDGES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class Reliability:
    """The drafter's probabilities, calibrated on what the target accepted. A cell is (who proposed the node in
    a merged tree, `DraftTree.source`; its depth: 1, 2, 3+; its probability's bin); among the nodes whose parent
    was accepted, a cell counts the accepted ones and their expected number (the sum of their probabilities).
    A node's calibrated probability is its own times its cell's ratio, (hits + strength) / (expected +
    strength), below 1. Counts halve once a cell passes `memory` nodes, so they follow the generation.

    Why per node and not one factor: a tree mixes nodes whose probabilities err differently. On Spec-Bench
    (SmolLM2-135M, fp32, `heads-lookup` and `eagle-tree-lookup`), the Hydra heads' nodes drafted at 0.5-0.85
    were accepted at 0.30-0.57, EAGLE's far closer to their numbers; lookup's match rates at depth 3 and
    deeper (0.5-0.75) were accepted at 0.72-0.86, and nodes both proposed at 0.76-0.85 against 0.63-0.66.
    One factor for all prices a 5-deep copy at a fraction of its worth. The cut reads the calibrated values;
    the drafter's own are kept for verification. (Measured in ABBA on that CPU: the speed did not change,
    -2% to +5%: near the optimum the rate is flat in the tree's size; BENCHMARKS.md, eighth session.)"""

    def __init__(self, strength: float = 2.0, memory: int = 512):
        if strength <= 0 or memory < 1:
            raise ValueError(f"strength must be > 0 and memory >= 1, got {strength}, {memory}")
        self.strength, self.memory = strength, memory
        cells = (len(Source), RELIABILITY_DEPTHS, len(RELIABILITY_EDGES) + 1)
        self._hits, self._expected, self._nodes = np.zeros(cells), np.zeros(cells), np.zeros(cells)
        self._edges = torch.tensor(RELIABILITY_EDGES, dtype=torch.float64)

    @classmethod
    def trusting(cls) -> "Reliability":
        """One whose every cell's ratio stays 1: the drafter's probabilities as drafted (the chooser before
        per-node calibration; for A/B runs and tests)."""
        return cls(strength=1e12)

    def cells(self, tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(source [N], depth cell [N], probability bin [N]) of each node of `tree`."""
        source = torch.zeros(tree.num_nodes, dtype=torch.long) if tree.source is None else tree.source.long()
        depth = tree_depths(tree.parents).clamp(max=RELIABILITY_DEPTHS - 1)
        return source, depth, torch.bucketize(tree.draft_probs.double(), self._edges, right=True)

    def ratios(self) -> np.ndarray:
        """[sources, depths, bins] accepted over expected, shrunk to 1 by `strength` expected nodes."""
        return (self._hits + self.strength) / (self._expected + self.strength)

    def calibrate(self, tree: DraftTree) -> torch.Tensor:
        """[N] float64: each node's calibrated probability given its parent, in (0, 1)."""
        ratio = torch.from_numpy(self.ratios())[self.cells(tree)]
        return (tree.draft_probs.double() * ratio).clamp(1e-9, 0.999)

    def record(self, tree: DraftTree, path: list[int]) -> None:
        """Count the verified `tree`'s nodes whose parent was accepted (`path`: the accepted nodes)."""
        accepted = torch.zeros(tree.num_nodes + 1, dtype=torch.bool)  # [N + 1], the last one: the root's row
        accepted[torch.as_tensor(path, dtype=torch.long)] = True
        accepted[-1] = True
        tried = accepted[tree.parents]  # parents == -1 reads the root's row
        cells = zip(*(index[tried].tolist() for index in self.cells(tree)))
        for cell, q, hit in zip(cells, tree.draft_probs[tried].tolist(), accepted[:-1][tried].tolist()):
            self._hits[cell] += hit
            self._expected[cell] += q
            self._nodes[cell] += 1
            if self._nodes[cell] > self.memory:
                self._hits[cell] /= 2
                self._expected[cell] /= 2
                self._nodes[cell] /= 2


class MeasuredSize:
    """`inner`'s tree (e.g. `Chain()`, `OptTree(node_budget=16)`), cut to the size that measures fastest here.

    explore: times each size of the ladder is drafted before sizes are chosen (>= 1). window: steps the times
    and the calibration are taken over. probe_every: after the ladder, every probe_every-th step drafts one
    node more, or one fewer, than chosen (in turn), so the sizes next to the choice keep fresh times and the
    calibration keeps learning (without it a choice of no draft never sees a draft again, and a size timed
    slow once, e.g. at a kernel's first call, stays slow). The first time of each row count is dropped: it
    holds the kernels' one-off set-up. A tree without draft_probs (prompt lookup) passes through whole, and so does
    one of drawn nodes and fixed candidates (`DraftTree.fixed`): a cut by probability would make it all fixed.
    State lives as long as the builder (one `SpecDiff`), across generations: what it timed stays true."""

    def __init__(self, inner: TreeBuilder, explore: int = 2, window: int = 64, probe_every: int = 8,
                 reliability: Reliability | None = None):
        if explore < 1 or window < 1 or probe_every < 1:  # without the ladder only the whole draft would be timed
            raise ValueError(f"explore, window and probe_every must be >= 1, got {explore}, {window}, {probe_every}")
        self.inner, self.explore, self.window, self.probe_every = inner, explore, window, probe_every
        self.reliability = reliability or Reliability()
        self._verify: dict[int, deque] = {}  # verify rows -> recent verify seconds
        self._other: deque = deque(maxlen=window)  # step seconds outside the verify forward
        self._booked: deque = deque(maxlen=window)  # (expected acceptance, accepted) of the trees verified
        self._steps = 0  # trees built from drafts with probabilities
        self._expected: float | None = None  # E(A) of the tree just built
        self._depths: deque = deque(maxlen=window)  # depth of each tree kept after the ladder
        self._ladder_length = 0  # sizes in the longest ladder so far (a longer draft lengthens it)

    def __repr__(self) -> str:
        return f"MeasuredSize({self.inner!r})"

    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree:
        tree = self.inner.build(proposal, budget)
        self._expected = None
        if tree.draft_probs is None or tree.num_nodes == 0 or tree.fixed is not None:
            return tree  # a tree with fixed candidates among drawn nodes was sized by its drafter (drafters.hybrid)
        path_probs = path_log_probs(tree.parents, self.reliability.calibrate(tree).log()).exp()  # [N]
        order = torch.sort(path_probs, descending=True, stable=True).indices  # a parent before its equal child
        gains = path_probs[order]  # [N] E_n = gains[:n].sum()
        n = self._size(gains)
        chosen = not self.exploring  # n was chosen, not the ladder's
        self._steps += 1
        self._expected = float(gains[:n].sum())
        kept = tree if n == tree.num_nodes else DraftTree.empty() if n == 0 else select_nodes(
            tree, order[:n].sort().values, ProposalKind.DETERMINISTIC)
        if chosen:
            self._depths.append(int(tree_depths(kept.parents).max()) + 1 if n else 0)
        return kept

    @property
    def exploring(self) -> bool:
        """Still walking the ladder of sizes (the draft is then cut to the ladder's size, not chosen)."""
        return self._steps < self.explore * self._ladder_length

    def depth_cap(self, most: int, slack: int) -> int:
        """The deepest tree kept over the window plus `slack`, at most `most` (`most` while exploring)."""
        if self.exploring or not self._depths:
            return most
        return min(most, max(self._depths) + slack)

    def observe(self, tree: DraftTree, path: list[int], verify_seconds: float, step_seconds: float) -> None:
        """A step's outcome, from the decoding loop: the tree verified, its accepted nodes (root first), the
        target forward's seconds and the whole step's."""
        rows = tree.num_nodes + 1
        if rows in self._verify:
            self._verify[rows].append(verify_seconds)
        else:  # a first forward of this many rows sets up its kernels: not what it costs from then on
            self._verify[rows] = deque(maxlen=self.window)
        self._other.append(max(step_seconds - verify_seconds, 0.0))
        if self._expected is not None:  # a tree this builder sized (with probabilities, nothing fixed)
            self._booked.append((self._expected, len(path)))
            if tree.num_nodes:
                self.reliability.record(tree, path)

    def calibration(self) -> float:
        """Accepted tokens per unit of the drafter's expected acceptance, over the window (1 before any)."""
        expected = sum(e for e, _ in self._booked)
        if expected <= 0:
            return 1.0
        return min(max(sum(a for _, a in self._booked) / expected, 0.05), 2.0)

    def verify_seconds(self, rows: np.ndarray) -> np.ndarray | None:
        """Median verify seconds of `rows` [R] verify rows: timed, interpolated between the counts timed,
        linearly extrapolated beyond them (None before two counts are timed)."""
        timed = sorted(r for r, times in self._verify.items() if times)
        if len(timed) < 2:
            return None
        medians = np.array([statistics.median(self._verify[r]) for r in timed])
        estimate = np.interp(rows, timed, medians)
        # slopes of the end segments, never negative: noise must not make more rows look cheaper without bound
        low = max((medians[1] - medians[0]) / (timed[1] - timed[0]), 0.0)
        high = max((medians[-1] - medians[-2]) / (timed[-1] - timed[-2]), 0.0)
        estimate = np.where(rows < timed[0], medians[0] + low * (rows - timed[0]), estimate)
        estimate = np.where(rows > timed[-1], medians[-1] + high * (rows - timed[-1]), estimate)
        return np.maximum(estimate, 0.05 * medians.min())

    def best_size(self, gains: torch.Tensor) -> int:
        """n in 0..N maximising (1 + c * E_n) / (other + verify(n + 1)), gains [N] the path probabilities in
        descending order; N (the whole draft) while too little is timed to choose."""
        N = len(gains)
        sizes = np.arange(N + 1)
        verify = self.verify_seconds(sizes + 1)
        if verify is None or not self._other:
            return N
        expected = np.concatenate([[0.0], np.cumsum(gains.numpy())])  # [N + 1] E_n
        rate = (1 + self.calibration() * expected) / (statistics.median(self._other) + verify)
        return int(rate.argmax())

    def _size(self, gains: torch.Tensor) -> int:
        N = len(gains)
        ladder = [N, 0] + [2 ** i for i in range(N.bit_length()) if 2 ** i < N]
        self._ladder_length = max(self._ladder_length, len(ladder))
        if self.exploring:
            return ladder[self._steps % len(ladder)]
        best = self.best_size(gains)
        if self._steps % self.probe_every:
            return best
        up = (self._steps // self.probe_every) % 2 == 1  # a neighbour of the choice, above and below in turn
        return best + 1 if best == 0 or (up and best < N) else best - 1


class MeasuredDraftLength:
    """A draft-length policy (policies.DraftLengthPolicy) that follows a `MeasuredSize`: drafting deeper than the
    trees it keeps costs drafter time for nothing (DFlash: a 16-row block forward is ~2x a 3-row one; EAGLE: one
    forward per depth). The deepest tree kept over its window plus `slack`, so that it can grow again, at most
    `most`; `most` while the builder walks its ladder."""

    def __init__(self, sizes: MeasuredSize, most: int, slack: int = 2):
        if most < 1 or slack < 1:
            raise ValueError(f"most and slack must be >= 1, got {most}, {slack}")
        self.sizes, self.most, self.slack = sizes, most, slack

    def current(self) -> int:
        return self.sizes.depth_cap(self.most, self.slack)

    def update(self, drafted: int, accepted: int, generated_before_eos: int | None = None) -> None:
        pass  # the builder learns from the loop's own report (MeasuredSize.observe)

    def reset(self) -> None:
        pass  # what was measured stays true across generations
