"""Static tree builders: the chain (default) and Medusa-style `choices` trees."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from specdiff.types import DraftTree, TokenLattice, ProposalKind, children, tree_depths


def select_nodes(tree: DraftTree, keep: torch.Tensor, kind: ProposalKind | None = None) -> DraftTree:
    """The subtree of the nodes `keep` [M] (ascending, closed under parent), parents remapped.

    `kind` defaults to the proposal's: only a selection that keeps every sibling set whole (a depth
    cut) may keep a sampled kind; a selection by probability must pass DETERMINISTIC.
    """
    remap = torch.full((tree.num_nodes,), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    parents = tree.parents[keep]
    parents = torch.where(parents >= 0, remap[parents.clamp(min=0)], parents)
    if bool((parents[tree.parents[keep] >= 0] < 0).any()):
        raise ValueError("selected nodes are not closed under parent: every kept node needs its parent kept")
    kind = tree.kind if kind is None else kind
    return DraftTree(
        tree.tokens[keep], parents,
        None if tree.draft_probs is None else tree.draft_probs[keep],
        None if tree.draft_dists is None else tree.draft_dists[keep],
        kind,
        None if tree.fixed is None or kind is not ProposalKind.IID else tree.fixed[keep],
        None if tree.source is None else tree.source[keep],
    )


def truncate_depth(tree: DraftTree, max_depth: int) -> DraftTree:
    """Drop nodes deeper than `max_depth` (depth counted from 1 for roots). Parents stay valid
    because a kept node's ancestors are shallower and also kept."""
    keep = (tree_depths(tree.parents) < max_depth).nonzero().flatten()
    if len(keep) == tree.num_nodes:
        return tree
    return select_nodes(tree, keep)


@dataclass(frozen=True)
class Chain:
    """A lattice becomes its argmax chain; a tree passes through, cut at the budget's depth.

    threshold: the chain over a lattice stops before its first position whose probability is <= threshold
    (0: never), the confidence cut of EAGLE's chain and of transformers' assisted generation. Where the
    target's verify rows cost (a CPU: 16 rows ~1.7x one row in fp32), a lattice's long tail of unlikely
    positions costs more than it brings. The cut reads only the drafter's numbers: lossless either way."""

    threshold: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")

    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree:
        if isinstance(proposal, DraftTree):
            return truncate_depth(proposal, budget)
        length = min(proposal.length, budget)
        best = proposal.probs[:length].argmax(dim=-1)  # [L]
        rows = torch.arange(length)
        probs = proposal.probs[rows, best]  # [L]
        if self.threshold > 0:
            low = (probs <= self.threshold).nonzero().flatten()
            length = int(low[0]) if len(low) else length
            rows, best, probs = rows[:length], best[:length], probs[:length]
        tokens = proposal.candidates[rows, best]
        dists = None if proposal.dists is None else proposal.dists[:length]
        return DraftTree.chain(tokens, probs, dists, ProposalKind.DETERMINISTIC)


@dataclass(frozen=True)
class StaticTree:
    """A fixed tree shape, Medusa's `medusa_choices` (algorithms.md §5.2).

    choices: rank paths, e.g. ((0,), (1,), (0, 0)): `(0, 1)` is the best candidate at the first
    position, then the second best at the next. The list must be prefix-closed (every prefix of a
    choice is a choice). Over a `TokenLattice`, rank r at depth d is the r-th most probable candidate
    of lattice row d; over a `DraftTree`, it is a node's r-th most probable child (draft_probs, or
    proposal order when the drafter gives none). Choices deeper than the step's budget, or naming a
    candidate the proposal lacks, are dropped with their extensions.
    """

    choices: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        choices = tuple(sorted({tuple(int(r) for r in c) for c in self.choices}, key=lambda c: (len(c), c)))
        if not choices or any(len(c) == 0 or min(c) < 0 for c in choices):
            raise ValueError(f"choices must be non-empty tuples of ranks >= 0, e.g. ((0,), (1,), (0, 0)); "
                             f"got {self.choices!r}")
        missing = [c for c in choices if len(c) > 1 and c[:-1] not in set(choices)]
        if missing:
            raise ValueError(f"choices must be prefix-closed: {missing[0]} needs {missing[0][:-1]} too")
        object.__setattr__(self, "choices", choices)  # canonical order: by depth, then ranks

    @classmethod
    def from_widths(cls, widths: tuple[int, ...]) -> "StaticTree":
        """Every rank path with rank < widths[d] at depth d, e.g. (3, 2) gives 3 + 6 nodes."""
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of ints >= 1, got {widths!r}")
        ranges = [range(w) for w in widths]
        return cls(tuple(c for depth in range(1, len(widths) + 1) for c in itertools.product(*ranges[:depth])))

    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree:
        choices = [c for c in self.choices if len(c) <= budget]
        if isinstance(proposal, DraftTree):
            return self._from_tree(proposal, choices)
        return self._from_lattice(proposal, choices)

    def _from_lattice(self, lattice: TokenLattice, choices: list[tuple[int, ...]]) -> DraftTree:
        L, K = lattice.candidates.shape
        ranked = lattice.probs.argsort(dim=-1, descending=True, stable=True)  # [L, K] rank -> column
        choices = [c for c in choices if len(c) <= L and max(c) < K]
        if not choices:
            return DraftTree.empty()
        index = {choice: i for i, choice in enumerate(choices)}
        depths = torch.tensor([len(c) - 1 for c in choices], dtype=torch.long)  # [N]
        columns = ranked[depths, torch.tensor([c[-1] for c in choices], dtype=torch.long)]  # [N]
        parents = torch.tensor([index[c[:-1]] if len(c) > 1 else -1 for c in choices], dtype=torch.long)
        dists = None if lattice.dists is None else lattice.dists[depths]
        return DraftTree(lattice.candidates[depths, columns], parents, lattice.probs[depths, columns], dists)

    def _from_tree(self, tree: DraftTree, choices: list[tuple[int, ...]]) -> DraftTree:
        kids = children(tree.parents)  # kids[N] = the roots
        if tree.draft_probs is not None:
            kids = [sorted(group, key=lambda node: -float(tree.draft_probs[node])) for group in kids]
        node_of: dict[tuple[int, ...], int] = {(): tree.num_nodes}
        for choice in choices:  # by depth, so a choice's parent is resolved before it
            siblings = kids[node_of[choice[:-1]]] if choice[:-1] in node_of else []
            if choice[-1] < len(siblings):
                node_of[choice] = siblings[choice[-1]]
        keep = sorted(node for choice, node in node_of.items() if choice)
        return select_nodes(tree, torch.tensor(keep, dtype=torch.long), ProposalKind.DETERMINISTIC)
