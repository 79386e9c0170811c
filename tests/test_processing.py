"""Per-row logits processors: the one-call path for set-based penalties equals row by row."""

import pytest
import torch

from specdiff.processing import RowContexts, apply_per_node, build_processors, process_rows
from specdiff.types import DraftTree


@pytest.mark.parametrize("penalty,ngram", [(1.3, 0), (1.3, 2), (0.8, 0)])
def test_rows_match_one_at_a_time(penalty, ngram):
    g = torch.Generator().manual_seed(0)
    processors = build_processors(penalty, ngram)
    contexts = [torch.randint(0, 20, (n,), generator=g).tolist() for n in (7, 3, 9, 1, 9)]
    logits = torch.randn(len(contexts), 20, generator=g)
    expected = torch.stack([processors(torch.tensor([c]), row[None].clone())[0] for c, row in zip(contexts, logits)])
    torch.testing.assert_close(process_rows(processors, contexts, logits), expected)
    assert not torch.equal(expected, logits)  # the processors did act


def test_tree_contexts_are_each_nodes_path():
    tree = DraftTree(torch.tensor([5, 9, 17, 33, 65]), torch.tensor([-1, -1, 0, 2, 1]))
    committed = torch.tensor([3, 4, 8])
    contexts = RowContexts.for_tree(tree, committed)
    rows = [contexts.ids[r, :n].tolist() for r, n in enumerate(contexts.lengths)]
    assert rows == [[3, 4, 8], [3, 4, 8, 5], [3, 4, 8, 9], [3, 4, 8, 5, 17], [3, 4, 8, 5, 17, 33], [3, 4, 8, 9, 65]]
    processors = build_processors(1.3, 2)
    logits = torch.randn(len(rows), 40, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(apply_per_node(processors, tree, logits, committed),
                               process_rows(processors, rows, logits))
