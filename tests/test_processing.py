"""Per-row logits processors: the one-call path for set-based penalties equals row by row."""

import pytest
import torch

from specdiff.processing import RowContexts, apply_per_node, build_processors, process_paths, process_rows
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
    logits = torch.randn(len(rows), 70, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(apply_per_node(processors, tree, logits, committed),
                               process_rows(processors, rows, logits))


@pytest.mark.parametrize("penalty,ngram", [(1.3, 0), (1.3, 2)])
def test_drafter_paths_equal_whole_contexts_and_cost_nothing_without_processors(penalty, ngram):
    """A drafter's rows (committed ids + its drafts so far) without a per-row copy of the context."""
    g = torch.Generator().manual_seed(2)
    committed = torch.randint(0, 20, (11,), generator=g).tolist()
    paths = [[], [3], [3, 7], [12, 12, 5]]
    logits = torch.randn(len(paths), 20, generator=g)
    processors = build_processors(penalty, ngram)
    torch.testing.assert_close(process_paths(processors, committed, paths, logits),
                               process_rows(processors, [committed + path for path in paths], logits))
    assert process_paths(build_processors(), committed, paths, logits) is logits
    assert process_paths(None, committed, paths, logits) is logits
