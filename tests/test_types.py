"""Pure functions over trees, checked on trees drawn by hand."""

import pytest
import torch

from specdiff.types import (DraftTree, TokenLattice, ancestor_mask, children, path_to, position_ids,
                            root_to_leaf_paths, tree_depths, tree_from_sequences)

#        r0(0)        r1(1)
#       /    \          |
#     (2)    (3)       (4)
#      |
#     (5)
PARENTS = torch.tensor([-1, -1, 0, 0, 1, 2])


def test_depths_and_positions():
    assert tree_depths(PARENTS).tolist() == [0, 0, 1, 1, 1, 2]
    assert position_ids(PARENTS, 10).tolist() == [10, 10, 11, 11, 11, 12]


def test_ancestor_mask():
    mask = ancestor_mask(PARENTS)
    assert mask[5].nonzero().flatten().tolist() == [0, 2, 5]
    assert mask[4].nonzero().flatten().tolist() == [1, 4]
    assert mask.diagonal().all()
    assert not mask.triu(1).any()  # topological order: nobody sees a later node


def test_paths_and_children():
    assert children(PARENTS) == [[2, 3], [4], [5], [], [], [], [0, 1]]
    assert path_to(PARENTS, 5) == [0, 2, 5]
    assert path_to(PARENTS, -1) == []
    assert root_to_leaf_paths(PARENTS) == [[0, 3], [1, 4], [0, 2, 5]]


def test_chain_is_a_tree():
    chain = DraftTree.chain([7, 8, 9])
    assert chain.parents.tolist() == [-1, 0, 1]
    assert root_to_leaf_paths(chain.parents) == [[0, 1, 2]]


def test_tree_from_sequences_merges_prefixes():
    tree = tree_from_sequences([[1, 2, 3], [1, 2, 4], [5]])
    assert tree.tokens.tolist() == [1, 2, 3, 4, 5]
    assert tree.parents.tolist() == [-1, 0, 1, 1, -1]


def test_validation():
    with pytest.raises(ValueError, match="topologically"):
        DraftTree(torch.tensor([1, 2]), torch.tensor([1, -1]))
    with pytest.raises(ValueError, match=r"\[N\]"):
        DraftTree(torch.tensor([1, 2]), torch.tensor([-1]))
    with pytest.raises(ValueError, match="draft_probs"):
        DraftTree.chain([1, 2], draft_probs=torch.ones(3))
    with pytest.raises(ValueError, match=r"\[L, K\]"):
        TokenLattice(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 3))
