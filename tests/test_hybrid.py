"""Prompt lookup merged with a model drafter (drafters.HybridDrafter): lookup's acceptance rates counted by hand,
the merged tree drawn by hand, greedy equality with `generate` for the registered hybrid methods on several
architectures, and sampled runs that follow the target's law."""

from __future__ import annotations

import pytest
import torch

import tiny
from specdiff import ProposalKind, SpecDiff, methods
from specdiff.drafters import (DraftContext, EagleDrafter, EagleModel, HybridDrafter, MatchRates, MedusaHeads,
                               PromptLookupDrafter)
from specdiff.drafters.base import DraftNeeds
from specdiff.drafters.hybrid import cut_by_rates, merge
from specdiff.trees import Chain, MeasuredDraftLength, MeasuredSize, Reliability
from specdiff.trees.static import select_nodes
from specdiff.types import DraftTree, Source
from test_measured import FixedCost
from test_sampling import P_VALUE
from test_sampling_e2e import PROMPT as SMALL_PROMPT
from test_sampling_e2e import first_tokens_pvalue, small_model

NEW_TOKENS = 24


def test_lookup_reports_the_ngram_it_matched():
    lookup = PromptLookupDrafter(ngram=3, k=3, min_ngram=1)
    assert lookup.match(DraftContext([1, 2, 3, 9, 1, 2, 3], budget=3)) == (3, [[9, 1, 2]])
    assert lookup.match(DraftContext([1, 2, 3, 9, 5, 3], budget=2)) == (1, [[9, 5]])
    assert lookup.match(DraftContext([1, 2, 4], budget=3)) == (0, [])


def test_match_rates_count_the_nodes_whose_parent_was_accepted():
    rates = MatchRates(prior=0.5, strength=2.0)
    # the trie of [7, 8, 9] and [7, 5]: 7 accepted, then 8 rejected (the target went on with 5): 9 is never tried
    rates.score(3, [[7, 8, 9], [7, 5]], committed=[7, 5, 1])
    assert rates.rate(3, 1) == pytest.approx((1 + 1) / (1 + 2))  # one hit at depth 1 (the shared node, once)
    assert rates.rate(3, 2) == pytest.approx((1 + 1) / (2 + 2))  # depth 2: 8 missed, 5 hit
    assert rates.rate(3, 3) == pytest.approx(0.5)  # untried: the prior
    assert rates.rate(2, 1) == pytest.approx(0.5)  # another match length is counted apart


def test_match_rates_score_a_step_once_its_continuation_is_committed():
    rates = MatchRates()
    ids = [1, 2, 3]
    rates.book(ids, 2, [[4, 5]])
    ids += [4]  # one token later the 2-deep draft cannot be scored yet
    rates.book(ids, 0, [])
    assert rates.rate(2, 1) == 0.5
    ids += [6]
    rates.book(ids, 0, [])
    assert rates.rate(2, 1) == pytest.approx(2 / 3) and rates.rate(2, 2) == pytest.approx(1 / 3)
    rates.book([1, 2, 3], 2, [[4, 5]])  # a new generation (another list): nothing of the old one is pending
    assert not any(length > 3 for length, _, _ in rates._pending)


def test_match_rates_forget_by_halving():
    rates = MatchRates(memory=4)
    for _ in range(4):
        rates.record(1, 1, False)
    for _ in range(3):
        rates.record(1, 1, True)  # past 4 trials the counts halve: 1 of 5 -> 0.5 of 2.5; 2.5 of 4.5 -> 1.25 of 2.25
    assert rates.rate(1, 1) == pytest.approx((1.25 + 1) / (2.25 + 2))


def test_merge_by_hand():
    model = DraftTree.chain(torch.tensor([5, 6]), torch.tensor([0.9, 0.5]))
    tree = merge(model, [[5, 7], [8]], depth_rates=[0.6, 0.4])
    assert tree.tokens.tolist() == [5, 6, 7, 8]
    assert tree.parents.tolist() == [-1, 0, 0, -1]
    assert tree.draft_probs.tolist() == pytest.approx([0.9, 0.5, 0.4, 0.6])  # 5 is both's: the larger
    assert tree.kind is ProposalKind.DETERMINISTIC
    assert tree.source.tolist() == [Source.BOTH, Source.MODEL, Source.LOOKUP, Source.LOOKUP]
    kept = select_nodes(tree, torch.tensor([0, 2]), ProposalKind.DETERMINISTIC)  # a size cut keeps each node's source
    assert kept.source.tolist() == [Source.BOTH, Source.LOOKUP]
    # The size chooser learns each source's reliability apart: lookup's nodes accepted, the model's 0.5 rejected.
    reliability = Reliability(strength=1.0)
    for _ in range(20):
        reliability.record(tree, [0, 2])
    calibrated = reliability.calibrate(tree).tolist()
    assert calibrated[1] == pytest.approx(0.5 * 1 / 11) and calibrated[2] == pytest.approx(0.4 * 21 / 9)
    only_lookup = merge(DraftTree.empty(), [[4, 4, 4]], depth_rates=[0.7, 0.8])  # deeper than the rates: the last
    assert only_lookup.parents.tolist() == [-1, 0, 1] and only_lookup.draft_probs.tolist() == pytest.approx([0.7, 0.8, 0.8])
    # Sampling: lookup's trie is cut by its rates alone, one depth for every continuation (paths 0.9, 0.45, 0.27).
    assert cut_by_rates([[1, 2, 3], [4]], [0.9, 0.5, 0.6], cut=0.4) == [[1, 2], [4]]
    assert cut_by_rates([[1, 2, 3]], [0.3, 0.9], cut=0.4) == []


def test_the_hybrid_refuses_a_lookup_that_sizes_itself():
    model = tiny.build("llama")
    eagle = EagleDrafter(EagleModel.for_target(model), model)
    with pytest.raises(ValueError, match="measure_shape=False"):
        HybridDrafter(eagle, PromptLookupDrafter(measure_shape=True), Chain())


class RecordingDrafter:
    """A model drafter that drafts nothing and records the budget it was given."""

    needs, k, forward_count = DraftNeeds(), 5, 0

    def __init__(self):
        self.budgets = []

    def propose(self, ctx):
        self.budgets.append(ctx.budget)
        return None


def test_only_the_model_drafter_follows_the_cap():
    model = RecordingDrafter()
    hybrid = HybridDrafter(model, PromptLookupDrafter(ngram=2, k=4, min_ngram=1), Chain(), model_cap=lambda: 1)
    tree = hybrid.propose(DraftContext([1, 2, 3, 4, 5, 1, 2], budget=4))
    assert model.budgets == [1]
    assert tree.tokens.tolist() == [3, 4, 5, 1]  # lookup drafts its full depth (within the budget)
    hybrid.propose(DraftContext([1, 2, 3, 4, 5, 1, 2], budget=3))
    assert model.budgets == [1, 1]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_registered_hybrids_equal_generate(model_type, tmp_path):
    model = tiny.build(model_type)
    torch.manual_seed(1)
    EagleModel.for_target(model, (1, 2)).save_pretrained(tmp_path / "eagle")
    from specdiff.drafters import DFlashModel

    torch.manual_seed(2)
    drafters = {"dflash": DFlashModel.for_target(model, block_size=5),
                "ar": tiny.build(model_type, seed=4),  # another random model of the target's vocabulary
                "heads": MedusaHeads.for_target(model, num_heads=3)}
    for prompt in (tiny.repetitive_prompt(), tiny.repetitive_prompt(seed=3)):
        expected = tiny.reference(model, prompt, NEW_TOKENS)
        for name in ("eagle-lookup", "eagle-tree-lookup", "dflash-lookup", "ar-lookup", "heads-lookup"):
            family = name.split("-")[0]
            drafter = drafters[family] if family in drafters else methods.get(name).load_drafter(
                str(tmp_path / "eagle"), torch.float32, "cpu")
            spec = methods.build(name, model, None, drafter)
            assert isinstance(spec.drafter, HybridDrafter) and isinstance(spec.tree_builder, MeasuredSize)
            assert spec.draft_length.current() == 10  # lookup's depth; the model drafter's follows the trees kept
            for _ in range(2):  # a second generation: the sizes and rates carry over
                assert spec.generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected, name
            assert spec.drafter.rates._counts, name  # the repetitive prompt matched: lookup nodes were scored


def hybrid_spec(model, top_k: int) -> SpecDiff:
    torch.manual_seed(3)
    eagle = EagleDrafter(EagleModel.for_target(model), model, k=2, top_k=top_k)
    lookup = PromptLookupDrafter(ngram=2, k=2, min_ngram=1)
    drafter = HybridDrafter(eagle, lookup, Chain())
    sized = FixedCost(Chain())  # sizes by a fixed cost model, not the clock
    return SpecDiff(model, drafter, tree=sized, draft_length=MeasuredDraftLength(sized, drafter.k))


@pytest.mark.parametrize("top_k", [1, 2])
def test_sampled_runs_follow_the_target(top_k):
    model = small_model(0)
    spec = hybrid_spec(model, top_k)
    trees, propose = [], spec.drafter.propose
    spec.drafter.propose = lambda ctx: trees.append(propose(ctx)) or trees[-1]
    options = dict(temperature=1.0, top_k=0)
    assert first_tokens_pvalue(spec, model, 3, 200, options) > P_VALUE
    mixed = [tree for tree in trees if tree.fixed is not None]
    if top_k == 1:  # a drawn chain: lookup's nodes join it as fixed candidates, some on a drawn token
        assert any(tree.fixed.any() for tree in mixed)
        assert any((tree.fixed & (tree.draft_dists.sum(-1) > 0)).any() for tree in mixed)
    else:  # a beam's top-k children are fixed candidates already: the merged tree is DETERMINISTIC
        assert not mixed and any(tree.kind is ProposalKind.DETERMINISTIC and tree.num_nodes for tree in trees)
    accepted = [n for seed in range(20)
                for n in spec.generate(SMALL_PROMPT, max_new_tokens=6, seed=seed, **options).stats.accepted_lengths]
    assert 0 in accepted and max(accepted) >= 1  # drafts both rejected and accepted: the residual path runs
    assert spec.drafter.rates._counts  # the prompt's repeats matched: lookup nodes were merged and scored
