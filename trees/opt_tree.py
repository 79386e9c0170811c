"""OPT-Tree (Wang et al., TACL 2025; algorithms.md §4): the draft tree with the largest expected
acceptance length under a node budget.

A node's path probability is the product of the draft probabilities on its root-to-node path
(Eq. 2) and E(A) = the sum of the nodes' path probabilities (Eq. 3). Path probability never grows
down a path (Theorem 3.1), so the n nodes with the largest path probabilities are a connected tree:
selecting them is the whole optimisation, once the candidates are there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from specdiff.lattice import ContextLattice
from specdiff.trees.static import select_nodes
from specdiff.types import DraftTree, ProposalKind, TokenLattice, tree_depths

if TYPE_CHECKING:
    from specdiff.trees.cps import CausalProxy


def path_log_probs(parents: torch.Tensor, step_log_probs: torch.Tensor) -> torch.Tensor:
    """[N] sum of `step_log_probs` [N] over each node's root-to-node path."""
    totals = step_log_probs.tolist()
    for node, parent in enumerate(parents.tolist()):
        if parent >= 0:
            totals[node] += totals[parent]
    return torch.tensor(totals, dtype=torch.float64)


def expected_acceptance(tree: DraftTree) -> float:
    """E(A) of a tree (Eq. 3): the sum of its nodes' path probabilities (bonus token excluded)."""
    if tree.draft_probs is None:
        raise ValueError("expected_acceptance needs draft_probs on the tree")
    return float(path_log_probs(tree.parents, tree.draft_probs.double().log()).exp().sum())


def _top_sum(path_probs: torch.Tensor, n: int) -> float:
    """E_sub: the sum of the n largest path probabilities."""
    return float(torch.topk(path_probs, min(n, len(path_probs))).values.sum())


def _select_top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (ascending) of the n largest finite `scores` [N]. The stable sort breaks ties toward
    the earlier node, i.e. a parent before its equal-scored child, so the selection stays connected."""
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.isfinite(scores[order])][:n]
    return order.sort().values


def _check_probs(probs: torch.Tensor, what: str) -> None:
    if not bool(((probs >= 0) & (probs <= 1 + 1e-6)).all()):
        raise ValueError(f"OptTree needs {what} that are probabilities in [0, 1]; got values in "
                         f"[{float(probs.min()):.3g}, {float(probs.max()):.3g}]")


@dataclass(frozen=True)
class OptTree:
    """Build the OPT-Tree of a proposal.

    node_budget: n, the most nodes the target verifies per step. None: n = the loop's budget each
    step, so the tree grows and shrinks with the draft-length policy. The budget also caps the depth
    (the loop lowers it near max_new_tokens), as does max_depth.
    threshold: delta; layers are added while each raises E_sub (sum of the n largest path
    probabilities so far) by more than delta. OPT-Tree advises delta between t(draft step) /
    t(target step) and 1 (the reference code uses 0.5). The layer that fails the test is kept.
    proxy, lattice_weight: lattices only; a `CausalProxy` (trees/cps.py: n-gram or small LM) mixed into
    each step's score as lambda log p_lattice + (1 - lambda) log p_proxy, DiffuSpec's path score
    (Eq. 8) with lambda = lattice_weight (CausalConsistencySearch's dlm_weight). The proxy sees the
    committed ids when the lattice is a `ContextLattice`. Node scores stay non-increasing down a
    path (every term is a log-probability), so the top-n is still a connected tree.

    From a `DraftTree` (e.g. `AutoregressiveDrafter(top_k=n, tree_threshold=delta)`, which already
    grows OPT-Tree's layer-wise beam): the stop rule over its layers, then the global top-n. From a
    `TokenLattice`: a layer-wise beam of width n over the lattice's candidates, then the global top-n.
    Without a proxy, lattice positions are independent and the beam finds the exact optimum.
    """

    node_budget: int | None = None
    threshold: float = 0.0
    max_depth: int = 10
    proxy: CausalProxy | None = None
    lattice_weight: float = 0.5

    def __post_init__(self):
        if self.node_budget is not None and self.node_budget < 1:
            raise ValueError(f"node_budget must be >= 1, or None to follow the draft-length policy; got {self.node_budget}")
        if self.threshold < 0:
            raise ValueError(f"threshold (delta) must be >= 0, got {self.threshold}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")
        if not 0 <= self.lattice_weight <= 1:
            raise ValueError(f"lattice_weight (lambda) must be in [0, 1] (1: lattice scores only), got {self.lattice_weight}")

    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree:
        num_nodes = self.node_budget if self.node_budget is not None else budget
        depth_limit = min(self.max_depth, budget)
        if num_nodes < 1 or depth_limit < 1:
            return DraftTree.empty()
        if isinstance(proposal, DraftTree):
            return self._from_tree(proposal, num_nodes, depth_limit)
        return self._from_lattice(proposal, num_nodes, depth_limit)

    def _layers_kept(self, path_probs: torch.Tensor, depths: torch.Tensor, n: int, depth_limit: int) -> int:
        """OPT-Tree's stop rule (Alg. 1) applied to the layers of an already drafted tree."""
        expected = 0.0
        for layer in range(depth_limit):
            gain = _top_sum(path_probs[depths <= layer], n) - expected
            expected += gain
            if gain <= self.threshold:
                return layer + 1
        return depth_limit

    def _from_tree(self, tree: DraftTree, n: int, depth_limit: int) -> DraftTree:
        if tree.draft_probs is None:
            raise ValueError("OptTree ranks nodes by draft_probs, and this drafter's trees have none "
                             "(e.g. PromptLookupDrafter); use Chain or StaticTree with it")
        if self.proxy is not None:
            raise ValueError("OptTree's proxy rescoring applies to TokenLattice proposals; drop proxy= "
                             "for drafters that return trees (their draft_probs are already causal)")
        _check_probs(tree.draft_probs, "draft_probs")
        scores = path_log_probs(tree.parents, tree.draft_probs.double().log())  # [N]
        depths = tree_depths(tree.parents)
        layers = self._layers_kept(scores.exp(), depths, n, depth_limit)
        keep = _select_top(torch.where(depths < layers, scores, -math.inf), n)
        # Which nodes survive depends on their drafted values, so sampled children are no longer
        # i.i.d. draws: the kept nodes are fixed candidates, which lossless acceptance handles for any tree.
        return select_nodes(tree, keep, ProposalKind.DETERMINISTIC)

    def _from_lattice(self, lattice: TokenLattice, n: int, depth_limit: int) -> DraftTree:
        _check_probs(lattice.probs, "lattice probs")
        candidate_tree, scores = self._lattice_beam(lattice, n, depth_limit)
        keep = _select_top(scores, n)
        return select_nodes(candidate_tree, keep, ProposalKind.DETERMINISTIC)

    def _lattice_beam(self, lattice: TokenLattice, n: int, depth_limit: int):
        """Layer-wise beam of width n; returns (every beam node as a tree, their path scores [M]).
        A zero-probability candidate (padding) is never taken."""
        L, K = lattice.candidates.shape
        candidates, log_probs = lattice.candidates.cpu(), lattice.probs.double().log().cpu()  # [L, K] each
        context = lattice.context if isinstance(lattice, ContextLattice) else ()
        parents, columns, scores = [], [], []
        beam, beam_scores, beam_paths = [-1], torch.zeros(1, dtype=torch.float64), [[]]
        expected = 0.0
        for depth in range(min(L, depth_limit)):
            step = self._step_scores(log_probs[depth], candidates[depth], context, beam_paths)  # [B, K]
            flat = (beam_scores[:, None] + step).flatten()  # [B * K]
            best = _select_top(flat, n)  # ascending: each layer's nodes stay grouped by parent
            if len(best) == 0:
                break
            rows, cols = (best // K).tolist(), (best % K).tolist()
            first = len(parents)
            parents += [beam[row] for row in rows]
            columns += cols
            scores.append(flat[best])
            beam, beam_scores = list(range(first, len(parents))), flat[best]
            beam_paths = [beam_paths[row] + [int(candidates[depth, col])] for row, col in zip(rows, cols)]
            gain = _top_sum(torch.cat(scores).exp(), n) - expected
            expected += gain
            if gain <= self.threshold:
                break
        return self._beam_tree(lattice, parents, columns), torch.cat(scores) if scores else torch.zeros(0)

    def _step_scores(self, log_probs: torch.Tensor, candidates: torch.Tensor, context, beam_paths: list[list[int]]):
        """[B, K] score of extending each beam path with each candidate of one lattice row."""
        B, K = len(beam_paths), len(candidates)
        step = log_probs.expand(B, K)
        if self.proxy is None or self.lattice_weight == 1:
            return step
        proxy = torch.as_tensor(self.proxy.log_probs(context, beam_paths, candidates), dtype=torch.float64)
        if proxy.shape != (B, K) or bool((proxy > 1e-6).any()):
            raise ValueError(f"the proxy must return [{B}, {K}] log-probabilities (<= 0), one per prefix and "
                             f"candidate; got shape {tuple(proxy.shape)}, max {float(proxy.max()):.3g}")
        mixed = self.lattice_weight * step + (1 - self.lattice_weight) * proxy.clamp(max=0)
        return torch.where(torch.isfinite(step), mixed, -math.inf)  # padding stays out, even at lambda 0

    @staticmethod
    def _beam_tree(lattice: TokenLattice, parents: list[int], columns: list[int]) -> DraftTree:
        parent_tensor = torch.tensor(parents, dtype=torch.long)
        depths = tree_depths(parent_tensor)
        column_tensor = torch.tensor(columns, dtype=torch.long)
        return DraftTree(
            lattice.candidates[depths, column_tensor], parent_tensor, lattice.probs[depths, column_tensor],
            None if lattice.dists is None else lattice.dists[depths],
        )
