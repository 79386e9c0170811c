"""Greedy SpecDiff output equals `model.generate(do_sample=False)` token for token, on many
architectures, eager and sdpa, for drafters that are always right, always wrong, and real."""

import pytest
import torch

import tiny
from specdiff import SpecDiff
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.drafters.lookup import ShapeChooser

CASES = [(t, a) for t in tiny.ARCHITECTURES for a in ("eager", "sdpa")] + [(t, "eager") for t in tiny.EAGER_ONLY]
NEW_TOKENS = 24


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{a}" for t, a in CASES])
def target(request):
    model_type, attn = request.param
    model = tiny.build(model_type, attn)
    prompt = tiny.repetitive_prompt()
    return model, prompt, tiny.reference(model, prompt, NEW_TOKENS)


def test_self_drafter_accepts_everything(target):
    model, prompt, expected = target
    k = 4
    result = SpecDiff(model, AutoregressiveDrafter(model, k=k)).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected
    # every step but the last (cut by max_new_tokens) accepts the whole draft: tau near k + 1
    assert all(a == k for a in result.stats.accepted_lengths[:-1])
    assert result.stats.tau == pytest.approx(NEW_TOKENS / len(result.stats.accepted_lengths))
    assert result.stats.tau >= k


def test_random_drafter_accepts_almost_nothing(target):
    model, prompt, expected = target
    drafter_model = tiny.build("llama", "sdpa", seed=123)
    result = SpecDiff(model, AutoregressiveDrafter(drafter_model, k=4)).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected
    assert result.stats.tau < 1.3


def test_prompt_lookup(target):
    model, prompt, expected = target
    result = SpecDiff(model, PromptLookupDrafter(ngram=2, k=6)).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected


def test_branching_trees(target):
    model, prompt, expected = target
    drafter_model = tiny.build("llama", "eager", seed=7)
    for drafter in (AutoregressiveDrafter(drafter_model, k=3, top_k=3), AutoregressiveDrafter(model, k=3, top_k=2),
                    PromptLookupDrafter(ngram=1, k=5, max_branches=4)):
        result = SpecDiff(model, drafter).generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.token_ids == expected


def test_lookup_alternatives_cut_to_branch_depth(target):
    """The most recent match keeps its k tokens, the older ones `branch_depth`; a match that is a
    prefix of a kept one adds no branch. Lossless either way."""
    from specdiff.drafters.base import DraftContext

    context = [9, 8, 5, 6, 0, 7, 8, 1, 2, 3, 4, 9, 8, 1, 2, 3, 4, 5, 8]  # 8 -> 5 6 0 7, 1 2 3 4, 1 2 3 4 5
    full = PromptLookupDrafter(ngram=1, k=4, max_branches=3).propose(DraftContext(context, 4))
    short = PromptLookupDrafter(ngram=1, k=4, max_branches=2, branch_depth=1).propose(DraftContext(context, 4))
    assert full.tokens.tolist() == [1, 2, 3, 4, 5, 6, 0, 7]
    assert short.tokens.tolist() == [1, 2, 3, 4, 5]  # the middle match, [1], is a prefix: the oldest gets the slot
    assert short.parents.tolist() == [-1, 0, 1, 2, -1]
    model, prompt, expected = target
    result = SpecDiff(model, PromptLookupDrafter(ngram=1, k=5, max_branches=4, branch_depth=2)).generate(
        prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected


def test_lookup_that_measures_its_shape_is_lossless(target):
    model, prompt, expected = target
    drafter = PromptLookupDrafter(ngram=1, k=5, max_branches=4, measure_shape=True)
    assert SpecDiff(model, drafter).generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected
    # A clock of random ticks and no margin: the chooser jumps between arms, and the output stays put
    # (choosing and scoring by hand: tests/test_lookup.py).
    ticks = torch.Generator().manual_seed(0)
    clock = iter(torch.rand(10_000, generator=ticks).cumsum(0).tolist()).__next__
    drafter.shapes = ShapeChooser(k=5, clock=clock, explore=1, min_samples=1, z=0.0, margin=0.0, every=1)
    arms = []
    choose = drafter.shapes.choose
    drafter.shapes.choose = lambda ids, matches: (choose(ids, matches), arms.append(drafter.shapes.last))[0]
    assert SpecDiff(model, drafter).generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected
    assert len(set(arms)) >= 2  # explore drafts (ALL, 5); then what the random clock makes best


def test_reduced_draft_vocabulary(target):
    """A drafter that computes only some rows of its LM head (FR-Spec): drafting with the target itself
    over a vocabulary holding every token of the greedy reply, its drafts are the target's own argmaxes
    (tau near k + 1), so the reduced logits are the right columns; over a vocabulary missing most of the
    reply it is often wrong, and the output is still `generate`'s. Models that transform logits after
    the head (Gemma2's soft-capping) are refused with the fix."""
    model, prompt, expected = target
    vocab_size = model.get_output_embeddings().weight.shape[0]
    if getattr(model.config, "final_logit_softcapping", None) is not None:
        with pytest.raises(ValueError, match="draft_vocab=None"):
            AutoregressiveDrafter(model, k=4, draft_vocab=sorted(set(expected)))
        return
    covering = sorted(set(expected) | set(range(0, vocab_size, 3)))
    result = SpecDiff(model, AutoregressiveDrafter(model, k=4, draft_vocab=covering)).generate(
        prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected
    assert result.stats.tau >= 3.5
    tree = AutoregressiveDrafter(model, k=3, top_k=2, draft_vocab=covering)  # its rows take the tree path
    assert SpecDiff(model, tree).generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected
    missing = [t for t in range(vocab_size) if t not in set(expected[1::2])]  # every other reply token left out
    result = SpecDiff(model, AutoregressiveDrafter(model, k=4, draft_vocab=missing)).generate(
        prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected
    assert result.stats.tau < 3.5
