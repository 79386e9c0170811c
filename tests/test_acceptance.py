"""Greedy acceptance on hand-built trees and logits."""

import torch

from specdiff.acceptance import greedy_accept
from specdiff.types import DraftTree

V = 10


def logits_with_argmax(argmaxes):
    logits = torch.zeros(len(argmaxes), V)
    logits[torch.arange(len(argmaxes)), torch.tensor(argmaxes)] = 5.0
    return logits


def test_chain_prefix_and_bonus():
    tree = DraftTree.chain([3, 4, 5])
    # rows: after committed -> 3 (ok), after 3 -> 4 (ok), after 4 -> 9 (draft said 5), after 5 -> 1
    accepted = greedy_accept(tree, logits_with_argmax([3, 4, 9, 1]))
    assert accepted.path == [0, 1]
    assert accepted.next_token == 9
    assert accepted.new_tokens(tree) == [3, 4, 9]


def test_all_accepted_gives_bonus():
    tree = DraftTree.chain([3, 4])
    accepted = greedy_accept(tree, logits_with_argmax([3, 4, 7]))
    assert accepted.path == [0, 1] and accepted.next_token == 7


def test_nothing_accepted():
    tree = DraftTree.chain([3, 4])
    accepted = greedy_accept(tree, logits_with_argmax([6, 4, 7]))
    assert accepted.path == [] and accepted.next_token == 6


def test_tree_takes_the_deepest_agreeing_branch():
    #   0:a=1   1:b=2        (roots)
    #   2:1->3  3:2->4       4: 4->5 (child of 3)
    tree = DraftTree(torch.tensor([1, 2, 3, 4, 5]), torch.tensor([-1, -1, 0, 1, 3]))
    # target: after committed -> 2 (so root 1 is right), after node 1 -> 4, after node 3 -> 5, after node 4 -> 8
    argmaxes = [2, 0, 4, 0, 5, 8]
    accepted = greedy_accept(tree, logits_with_argmax(argmaxes))
    assert accepted.path == [1, 3, 4]
    assert accepted.next_token == 8


def test_empty_tree():
    accepted = greedy_accept(DraftTree.empty(), logits_with_argmax([4]))
    assert accepted.path == [] and accepted.next_token == 4
