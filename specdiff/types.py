"""The two proposal types every part speaks (DESIGN.md §3), and pure functions over trees.

Shapes: `N` tree nodes, `L` lattice positions, `K` candidates per position, `V` vocabulary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class ProposalKind(enum.Enum):
    """How a drafter chose the children of a node; lossless sampling needs to know (algorithms.md §6)."""

    DETERMINISTIC = "deterministic"  # fixed candidates (top-k, argmax, lookup, CPS): q is a point mass
    IID = "iid"  # children drawn independently from draft_dists (SpecInfer)
    WITHOUT_REPLACEMENT = "without_replacement"  # children drawn without replacement (EAGLE-1)


class Source(enum.IntEnum):
    """Who proposed a node of a merged tree (`DraftTree.source`)."""

    MODEL = 0  # the model drafter alone (also: every node of an unmerged tree)
    LOOKUP = 1  # prompt lookup alone
    BOTH = 2  # both proposed it: an agreement, accepted more often than either's number says


@dataclass(frozen=True)
class DraftTree:
    """A draft tree; a chain is the tree with parents [-1, 0, 1, ...].

    tokens [N], parents [N] (topologically ordered, -1 = child of the last committed token),
    draft_probs [N] (drafter probability of each node's token), draft_dists [N, V] (the drafter's
    distribution each node was drawn from, i.e. at its parent).

    fixed [N] bool | None: in an IID tree, the nodes that are also fixed
    candidates (prompt lookup's, merged into a drafter's sampled tree): verification tries them first among
    their siblings, as point masses, then the drawn ones with the kind's rule. A fixed node that was not
    drawn has an all-zero draft_dists row; one that was (the drafter drew the same token) keeps its row and
    takes both trials. Which nodes are fixed must not depend on the drawn tokens beside or below them.

    source [N] int8 | None: which drafter proposed each node, in a tree merged from several (`Source`), so that
    a size chooser can learn how far each one's probabilities hold (`trees.Reliability`); None: one drafter.
    It never changes verification.
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    draft_probs: torch.Tensor | None = None
    draft_dists: torch.Tensor | None = None
    kind: ProposalKind = ProposalKind.DETERMINISTIC
    fixed: torch.Tensor | None = None
    source: torch.Tensor | None = None

    def __post_init__(self):
        if self.tokens.dim() != 1 or self.parents.shape != self.tokens.shape:
            raise ValueError(f"tokens and parents must both be [N], got {tuple(self.tokens.shape)} "
                             f"and {tuple(self.parents.shape)}")
        N = self.tokens.shape[0]
        if N and not bool((self.parents < torch.arange(N)).all() and (self.parents >= -1).all()):
            raise ValueError(f"parents must be topologically ordered (-1 <= parents[i] < i), got {self.parents.tolist()}")
        if self.draft_probs is not None and self.draft_probs.shape != (N,):
            raise ValueError(f"draft_probs must be [N={N}], got {tuple(self.draft_probs.shape)}")
        if self.draft_dists is not None and (self.draft_dists.dim() != 2 or self.draft_dists.shape[0] != N):
            raise ValueError(f"draft_dists must be [N={N}, V], got {tuple(self.draft_dists.shape)}")
        if self.fixed is not None:
            if self.kind is not ProposalKind.IID:
                raise ValueError(f"fixed marks the fixed candidates among an IID tree's draws, not a {self.kind.name} "
                                 "tree's (a DETERMINISTIC tree's nodes are all fixed; WITHOUT_REPLACEMENT siblings "
                                 "share one q a fixed-only sibling lacks): leave it None")
            if self.fixed.shape != (N,) or self.fixed.dtype != torch.bool:
                raise ValueError(f"fixed must be a bool [N={N}], got {self.fixed.dtype} {tuple(self.fixed.shape)}")
        if self.source is not None and (self.source.shape != (N,) or self.source.dtype != torch.int8):
            raise ValueError(f"source must be an int8 [N={N}], got {self.source.dtype} {tuple(self.source.shape)}")

    @classmethod
    def chain(cls, tokens, draft_probs=None, draft_dists=None, kind=ProposalKind.DETERMINISTIC) -> "DraftTree":
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        parents = torch.arange(tokens.shape[0]) - 1
        return cls(tokens, parents, draft_probs, draft_dists, kind)

    @classmethod
    def empty(cls) -> "DraftTree":
        return cls(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

    @property
    def num_nodes(self) -> int:
        return self.tokens.shape[0]

    def __len__(self) -> int:
        return self.num_nodes


@dataclass(frozen=True)
class TokenLattice:
    """Independent per-position proposals: candidates [L, K], probs [L, K], dists [L, V] | None.

    Not a path: positions were predicted under bidirectional or independent conditioning, so a
    tree builder must turn it into a `DraftTree`.
    """

    candidates: torch.Tensor
    probs: torch.Tensor
    dists: torch.Tensor | None = None
    kind: ProposalKind = ProposalKind.DETERMINISTIC

    def __post_init__(self):
        if self.candidates.dim() != 2 or self.probs.shape != self.candidates.shape:
            raise ValueError(f"candidates and probs must both be [L, K], got {tuple(self.candidates.shape)} "
                             f"and {tuple(self.probs.shape)}")
        if self.dists is not None and (self.dists.dim() != 2 or self.dists.shape[0] != self.candidates.shape[0]):
            raise ValueError(f"dists must be [L, V], got {tuple(self.dists.shape)}")

    @property
    def length(self) -> int:
        return self.candidates.shape[0]


# --- pure functions over parents [N] -----------------------------------------------------------


def tree_depths(parents: torch.Tensor) -> torch.Tensor:
    """[N] depth of each node; roots (parent -1) have depth 0."""
    depths = torch.zeros_like(parents)
    for i, parent in enumerate(parents.tolist()):
        depths[i] = 0 if parent < 0 else depths[parent] + 1
    return depths


def ancestor_mask(parents: torch.Tensor) -> torch.Tensor:
    """[N, N] bool: mask[i, j] is True iff j is i or an ancestor of i."""
    N = parents.shape[0]
    mask = torch.eye(N, dtype=torch.bool)
    for i, parent in enumerate(parents.tolist()):
        if parent >= 0:
            mask[i] |= mask[parent]
    return mask


def position_ids(parents: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """[N] absolute positions: a node sits at prefix_length + depth."""
    return tree_depths(parents) + prefix_length


def children(parents: torch.Tensor) -> list[list[int]]:
    """children[i] for nodes 0..N-1, and children[N] = the roots (children of the committed token)."""
    N = parents.shape[0]
    result: list[list[int]] = [[] for _ in range(N + 1)]
    for i, parent in enumerate(parents.tolist()):
        result[parent if parent >= 0 else N].append(i)
    return result


def path_to(parents: torch.Tensor, node: int) -> list[int]:
    """Node indices from a root down to `node` (empty for node -1)."""
    path = []
    parent_list = parents.tolist()
    while node >= 0:
        path.append(node)
        node = parent_list[node]
    return path[::-1]


def root_to_leaf_paths(parents: torch.Tensor) -> list[list[int]]:
    kids = children(parents)
    leaves = [i for i in range(parents.shape[0]) if not kids[i]]
    return [path_to(parents, leaf) for leaf in leaves]


def tree_from_sequences(sequences: list[list[int]]) -> DraftTree:
    """Merge token sequences into a trie (shared prefixes become shared nodes), in BFS-free
    insertion order, which is topological."""
    tokens: list[int] = []
    parents: list[int] = []
    index: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    for sequence in sequences:
        parent = -1
        for token in sequence:
            key = (parent, int(token))
            if key not in index:
                index[key] = len(tokens)
                tokens.append(int(token))
                parents.append(parent)
            parent = index[key]
    return DraftTree(torch.tensor(tokens, dtype=torch.long), torch.tensor(parents, dtype=torch.long))
