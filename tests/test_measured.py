"""MeasuredSize (trees/measured.py): the tree cut to the size that measures fastest. The choice by hand from
given times and probabilities, the exploration ladder, the calibration, the loop's reports, and greedy
equality with `generate` whatever the clock says (the size never changes which tokens are accepted)."""

import numpy as np
import pytest
import torch

import tiny
from specdiff import SpecDiff, methods
from specdiff.drafters import AutoregressiveDrafter
from specdiff.trees import Chain, MeasuredDraftLength, MeasuredSize, MeasuringTreeBuilder, OptTree, Reliability
from specdiff.types import DraftTree, ProposalKind
from test_trees import TopKLatticeDrafter

# Path probabilities: node 0 0.9, node 1 (child of 0) 0.9 * 0.5 = 0.45, node 2 (root) 0.3, node 3 (child of 1) 0.09.
TREE = DraftTree(torch.tensor([11, 12, 13, 14]), torch.tensor([-1, 0, -1, 1]),
                 torch.tensor([0.9, 0.5, 0.3, 0.2]), None, ProposalKind.IID)


class FixedCost(MeasuredSize):
    """A MeasuredSize timed by a fixed cost model instead of the clock (verify 1 + 0.3 per row, 0.5 more per
    step) and trusting the drafter's probabilities as they are: sizes by the drafted values alone, cut where
    a node's path probability falls to ~0.2-0.3, whatever a random test drafter gets accepted."""

    def __init__(self, inner, **options):
        super().__init__(inner, reliability=Reliability.trusting(), **options)

    def observe(self, tree, path, verify_seconds, step_seconds):
        verify = 1.0 + 0.3 * (tree.num_nodes + 1)
        super().observe(tree, path, verify, verify + 0.5)

    def calibration(self) -> float:
        return 1.0


def timed(builder: MeasuredSize, seconds_by_rows: dict[int, float], other: float, steps: int = 3):
    """Feed the builder `steps` steps at each row count, as the loop would, each accepting what it expected."""
    for rows, seconds in seconds_by_rows.items():
        for _ in range(steps):
            builder.observe(DraftTree.chain(torch.arange(rows - 1)), [], seconds, seconds + other)


def test_a_first_time_is_dropped():
    builder = MeasuredSize(Chain())
    builder.observe(DraftTree.chain(torch.arange(3)), [], 9.0, 9.0)  # a kernel's first call at 4 rows
    builder.observe(DraftTree.empty(), [], 9.0, 9.0)
    assert builder.verify_seconds(np.array([1, 4])) is None  # nothing timed yet
    builder.observe(DraftTree.chain(torch.arange(3)), [], 0.080, 0.090)
    builder.observe(DraftTree.empty(), [], 0.050, 0.060)
    assert builder.verify_seconds(np.array([1, 4])) == pytest.approx([0.050, 0.080])


def test_the_size_maximises_expected_tokens_per_second_by_hand():
    builder = MeasuredSize(Chain())
    timed(builder, {1: 0.050, 2: 0.070, 5: 0.130}, other=0.010)  # 20 ms per extra row
    gains = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    # (1 + E_n) / (10 + verify(n + 1)) ms: n=0 1/60, n=1 1.9/80 = 0.02375, n=2 2.4/100 = 0.024, n=3 2.5/120
    assert builder.best_size(gains) == 2
    free = MeasuredSize(Chain())
    timed(free, {1: 0.050, 5: 0.050}, other=0.010)  # rows cost nothing: every node pays
    assert free.best_size(gains) == 3
    dear = MeasuredSize(Chain())
    timed(dear, {1: 0.050, 2: 0.100}, other=0.0)  # a second row doubles the step: nothing below 1.0 pays
    assert dear.best_size(gains) == 0


def test_verify_time_is_interpolated_and_extrapolated():
    builder = MeasuredSize(Chain())
    assert builder.verify_seconds(np.array([1, 2])) is None  # nothing timed yet
    timed(builder, {2: 0.060, 4: 0.080, 8: 0.160}, other=0.0)
    estimate = builder.verify_seconds(np.array([1, 2, 3, 6, 8, 10]))
    assert estimate == pytest.approx([0.050, 0.060, 0.070, 0.120, 0.160, 0.200])
    builder.observe(DraftTree.chain(torch.arange(1)), [], 1.0, 1.0)  # one slow step among three: the median holds
    assert builder.verify_seconds(np.array([2]))[0] == pytest.approx(0.060)
    noisy = MeasuredSize(Chain())
    timed(noisy, {1: 0.050, 2: 0.090, 4: 0.080}, other=0.0)  # 4 rows timed faster than 2: flat beyond, not falling
    assert noisy.verify_seconds(np.array([8, 16])) == pytest.approx([0.080, 0.080])


def test_kept_nodes_are_the_most_probable_and_a_cut_is_deterministic():
    builder = MeasuredSize(Chain(), probe_every=1000)
    builder._steps = builder.explore * 4 + 1  # past the ladder of a 4-node draft (4, 0, 1, 2 nodes)
    timed(builder, {1: 0.050, 2: 0.060, 3: 0.070, 4: 0.075, 5: 0.300}, other=0.0)
    # (1 + E_n) / verify(n + 1), E_n over 0.9, 0.45, 0.3, 0.09: 1 / 50, 1.9 / 60, 2.35 / 70, 2.65 / 75 (best), 2.74 / 300
    tree = builder.build(TREE, budget=4)
    assert tree.tokens.tolist() == [11, 12, 13] and tree.parents.tolist() == [-1, 0, -1]
    assert tree.kind is ProposalKind.DETERMINISTIC  # kept by value: fixed candidates when sampling
    whole = MeasuredSize(Chain()).build(TREE, budget=4)  # exploring: the first step drafts the whole tree
    assert whole.tokens.tolist() == TREE.tokens.tolist() and whole.kind is ProposalKind.IID
    no_probs = DraftTree(torch.tensor([5, 6]), torch.tensor([-1, 0]))
    assert MeasuredSize(Chain()).build(no_probs, budget=4).tokens.tolist() == [5, 6]  # prompt lookup: untouched


def test_exploration_walks_the_ladder_then_chooses_and_probes():
    builder = MeasuredSize(Chain(), explore=2, probe_every=4)
    sizes = []
    for _ in range(17):
        tree = builder.build(TREE, budget=4)
        sizes.append(tree.num_nodes)
        builder.observe(tree, [], 0.050 + 0.100 * tree.num_nodes, 0.060 + 0.100 * tree.num_nodes)
    # the ladder twice (whole, none, 1, 2: the first time of each row count is dropped), then rows that cost
    # 2x a step: none, but every 4th step one node more (or fewer) than chosen, to keep its time fresh
    assert sizes == [4, 0, 1, 2] * 2 + [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert builder.verify_seconds(np.array([1, 2])) == pytest.approx([0.050, 0.150])
    with pytest.raises(ValueError, match="explore"):
        MeasuredSize(Chain(), explore=0)


def test_the_draft_length_follows_the_trees_kept():
    builder = MeasuredSize(Chain(), probe_every=1000)
    policy = MeasuredDraftLength(builder, most=10, slack=2)
    lengths = []
    for _ in range(10):
        lengths.append(policy.current())
        tree = builder.build(TREE, budget=4)
        builder.observe(tree, [], 0.050 + 0.100 * tree.num_nodes, 0.060 + 0.100 * tree.num_nodes)
    # the ladder twice (4, 0, 1, 2 nodes) drafts all it may; then trees of no node: 0 + 2 deep, to grow again from
    assert lengths == [10] * 9 + [2] and builder.depth_cap(10, 2) == 2
    with pytest.raises(ValueError, match="slack"):
        MeasuredDraftLength(builder, most=4, slack=0)
    with pytest.raises(ValueError, match="choose one"):
        methods.DFlashMethod("dflash-both", "a test", adaptive=True, measured=True)


def test_calibration_is_accepted_over_expected():
    builder = MeasuredSize(Chain(), reliability=Reliability.trusting())
    assert builder.calibration() == 1.0
    for path in ([], [], [0], [0]):  # the ladder: 4 nodes (E(A) = 0.9 + 0.45 + 0.3 + 0.09), none, 1 (0.9), 2 (1.35)
        builder.observe(builder.build(TREE, budget=4), path, 0.05, 0.06)
    assert builder.calibration() == pytest.approx(2 / (1.74 + 0 + 0.9 + 1.35))


def test_reliability_counts_the_nodes_whose_parent_was_accepted_by_cell():
    reliability = Reliability(strength=1.0)
    # TREE: node 0 (0.9, depth 1) accepted, node 1 (0.5, depth 2, child of 0) not, node 2 (0.3, depth 1) not,
    # node 3 (0.2, depth 3, child of 1): its parent was rejected, so it tells nothing
    reliability.record(TREE, [0])
    ratios = reliability.ratios()
    sources, depths, bins = reliability.cells(TREE)
    assert sources.tolist() == [0] * 4 and depths.tolist() == [0, 1, 0, 2]
    bins = dict(zip([0.9, 0.5, 0.3, 0.2], bins.tolist()))
    assert ratios[0, 0, bins[0.9]] == pytest.approx((1 + 1) / (0.9 + 1))
    assert ratios[0, 1, bins[0.5]] == pytest.approx(1 / (0.5 + 1)) and ratios[0, 0, bins[0.3]] == pytest.approx(1 / 1.3)
    assert ratios[0, 2, bins[0.2]] == 1.0  # untried: no evidence
    assert ratios.sum() == pytest.approx(ratios.size - 3 + 2 / 1.9 + 1 / 1.5 + 1 / 1.3)  # nothing else moved
    # Calibrated: each node's probability times its cell's ratio, below 1; path probabilities never grow.
    calibrated = reliability.calibrate(TREE)
    assert calibrated.tolist() == pytest.approx([0.9 * 2 / 1.9, 0.5 / 1.5, 0.3 / 1.3, 0.2])
    sure = DraftTree.chain(torch.tensor([7]), torch.tensor([0.99]))
    for _ in range(100):
        reliability.record(sure, [0])
    assert reliability.calibrate(sure).item() == 0.999  # 0.99 * 101 / 100 would make a path probability grow


def test_an_underrated_deep_copy_is_kept_once_its_acceptance_is_measured():
    # A chain of 5 nodes drafted at 0.55 each (path 0.55 ** 5 = 0.05 at the end) that the target accepts 4 times
    # in 5 at the last depth and always before: trusted as drafted, the cost model below keeps 2 nodes
    # ((1 + 0.55 + 0.3025) / 70 ms beats 1.55 / 60 and 2.02 / 80); measured, all 5.
    chain = DraftTree.chain(torch.arange(5), torch.full((5,), 0.55))
    sizes = {}
    for name, reliability in (("trusted", Reliability.trusting()), ("measured", Reliability(strength=1.0))):
        builder = MeasuredSize(Chain(), probe_every=1000, reliability=reliability)
        timed(builder, {1: 0.050, 2: 0.060, 6: 0.100}, other=0.0)  # 10 ms a row
        for step in range(200):
            builder.reliability.record(chain, list(range(5)) if step % 5 else [0, 1, 2, 3])
        builder._steps = 10 ** 6 + 1  # past the ladder, not a probe
        sizes[name] = builder.build(chain, budget=5).num_nodes
    assert sizes == {"trusted": 2, "measured": 5}


def test_the_loop_reports_every_step():
    model = tiny.build("llama", "sdpa")
    prompt = tiny.repetitive_prompt()
    steps = []

    class Recording(MeasuredSize):
        def observe(self, tree, path, verify_seconds, step_seconds):
            steps.append((tree.num_nodes, len(path), verify_seconds, step_seconds))
            super().observe(tree, path, verify_seconds, step_seconds)

    builder = Recording(OptTree(node_budget=6))
    assert isinstance(builder, MeasuringTreeBuilder) and not isinstance(Chain(), MeasuringTreeBuilder)
    result = SpecDiff(model, AutoregressiveDrafter(model, k=3, top_k=2), tree=builder).generate(prompt, max_new_tokens=12)
    assert [a for _, a, _, _ in steps] == result.stats.accepted_lengths
    assert sum(n for n, _, _, _ in steps) == result.stats.drafted_tokens
    # a step's own verify forward, inside the step (the prefill's is no step's: it once went to step 1's)
    assert all(0 < verify <= step for _, _, verify, step in steps)
    assert 0 < sum(v for _, _, v, _ in steps) < result.stats.verify_time  # verify_time counts the prefill too


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_greedy_equals_generate_whatever_the_sizes(model_type):
    model = tiny.build(model_type, "sdpa")
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, 24)
    for inner, drafter in ((Chain(), TopKLatticeDrafter(model)), (OptTree(node_budget=6), TopKLatticeDrafter(model)),
                           (OptTree(node_budget=6), AutoregressiveDrafter(model, k=4, top_k=3))):
        spec = SpecDiff(model, drafter, tree=MeasuredSize(inner, explore=1))
        for _ in range(3):  # the ladder, then sizes chosen from what the first generations timed
            assert spec.generate(prompt, max_new_tokens=24).token_ids == expected


@pytest.mark.parametrize("name", ["ar-hw", "ar-opt-tree-hw", "heads-tree-hw"])
def test_registered_measured_methods_equal_generate(name):
    from specdiff.drafters import MedusaHeads

    model = tiny.build("qwen2")
    torch.manual_seed(5)
    # The AR drafter is the target itself (every draft right: deep trees kept); the heads are random (mostly wrong).
    drafter = MedusaHeads.for_target(model, num_heads=3) if name.startswith("heads") else model
    spec = methods.build(name, model, None, drafter)
    assert isinstance(spec.tree_builder, MeasuredSize) and isinstance(spec.draft_length, MeasuredDraftLength)
    prompt = tiny.repetitive_prompt(seed=2)
    expected = tiny.reference(model, prompt, 24)
    for _ in range(3):
        assert spec.generate(prompt, max_new_tokens=24).token_ids == expected, name
