"""Per-row logits processors: the one-call path for set-based penalties equals row by row."""

import pytest
import torch

from specdiff.processing import build_processors, process_rows


@pytest.mark.parametrize("penalty,ngram", [(1.3, 0), (1.3, 2), (0.8, 0)])
def test_rows_match_one_at_a_time(penalty, ngram):
    g = torch.Generator().manual_seed(0)
    processors = build_processors(penalty, ngram)
    contexts = [torch.randint(0, 20, (n,), generator=g).tolist() for n in (7, 3, 9, 1, 9)]
    logits = torch.randn(len(contexts), 20, generator=g)
    expected = torch.stack([processors(torch.tensor([c]), row[None].clone())[0] for c, row in zip(contexts, logits)])
    torch.testing.assert_close(process_rows(processors, contexts, logits), expected)
    assert not torch.equal(expected, logits)  # the processors did act
