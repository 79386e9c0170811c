"""The lookup drafter's shape chooser: arms (matches x depth, or no draft) by measured tokens per second,
from step times by verify rows and the counterfactual tokens of probe steps (a fake clock here)."""

import pytest

from specdiff.drafters.lookup import ALL, ShapeChooser, cut, trie_rows

TRUTH = [50 + i for i in range(12)]  # the target's own continuation at every step
RIGHT_FOR_2 = TRUTH[:2] + [90] * 8  # the most recent match: right for 2 tokens, then wrong
WRONG = [[91] * 10, [92] * 10, [93] * 10]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(chooser, clock, matches, cost, steps):
    """Each step offers `matches`; the step commits the longest drafted prefix of TRUTH plus the target's
    next token, and takes cost(verify rows) seconds. Returns what each step drafted."""
    ids = [1, 2, 3]
    drafts = []
    for _ in range(steps):
        drafted = chooser.choose(ids, [list(m) for m in matches])
        drafts.append(drafted)
        accepted = max((next((i for i, (a, b) in enumerate(zip(d, TRUTH)) if a != b), min(len(d), len(TRUTH)))
                        for d in drafted), default=0)
        clock.now += cost(trie_rows(drafted))
        ids = ids + TRUTH[: accepted + 1]
    chooser.choose(ids, [])  # books the last step
    return drafts


def test_cut_and_rows():
    matches = [[1, 2, 3], [1, 2, 4], [5]]
    assert cut(matches, (1, 2)) == [[1, 2]] and cut(matches, (ALL, 2)) == [[1, 2], [5]]  # [1, 2] once
    assert cut(matches, (0, 0)) == [] and cut(matches, (ALL, 10)) == matches
    assert trie_rows(matches) == 1 + 5 and trie_rows([]) == 1  # nodes 1, 12, 123, 124, 5 + the root's row


def test_a_probe_books_what_every_smaller_shape_would_have_committed():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock, explore=1)
    # The trie probe: match 2 (TRUTH itself) is accepted in full, 10 tokens + the bonus.
    simulate(chooser, clock, [RIGHT_FOR_2, TRUTH[:10]], cost=lambda rows: 1.0, steps=1)
    assert chooser.last == "trie-probe"
    last = {arm: samples[-1] for arm, samples in chooser.samples.items()}
    assert last[(0, 0)] == (1, 1)  # no draft: the bonus token alone, one row
    assert last[(1, 1)] == (2, 2) and last[(1, 2)] == (3, 3) and last[(1, 10)] == (11, 3)
    assert last[(ALL, 1)] == (2, 2)  # both matches start with TRUTH[0]: one node
    assert last[(ALL, 4)] == (1 + 4 + 2, 5) and last[(ALL, 10)] == (1 + 10 + 8, 11)
    assert chooser.times == {1 + 10 + 8: [1.0, 1]}


def test_dear_rows_cut_the_draft_to_what_is_accepted():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock, explore=4, revisit=8)
    # Emulated bf16 on some CPUs: each row costs half a one-row step. Chain of 2: 3 tokens / 2.5 s.
    drafts = simulate(chooser, clock, [RIGHT_FOR_2, *WRONG], cost=lambda rows: 1.0 + 0.5 * rows, steps=40)
    assert chooser.best() == (1, 2)
    assert chooser.rate((1, 2)) == pytest.approx(3 / 2.5)
    later = drafts[8:]
    assert sum(d == [TRUTH[:2]] for d in later) >= 0.8 * len(later)  # the rest are probes (1 in 8)
    assert chooser.rate((0, 0)) < chooser.rate((1, 2)) and chooser.rate((ALL, 10)) < chooser.rate((1, 2))


def test_free_rows_draft_every_match_in_full():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock, explore=4, revisit=8)
    # A GPU: rows are free, and the second match is the right one.
    drafts = simulate(chooser, clock, [RIGHT_FOR_2, TRUTH[:10], *WRONG[:2]], cost=lambda rows: 1.0, steps=30)
    assert chooser.best() == (ALL, 10)
    assert all(TRUTH[:10] in d for d in drafts[6:] if d != [RIGHT_FOR_2])  # chain probes aside


def test_wrong_matches_draft_nothing_and_times_interpolate():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock, explore=2, revisit=4)
    drafts = simulate(chooser, clock, WRONG, cost=lambda rows: 1.0 + 0.1 * rows, steps=20)
    assert chooser.best() == (0, 0)  # every draft is rejected: one row is the cheapest step
    assert sum(d == [] for d in drafts) >= len(drafts) // 2
    assert set(chooser.times) >= {1, 11, 31}
    assert chooser.seconds(21) == pytest.approx((chooser.seconds(11) + chooser.seconds(31)) / 2)


def test_steps_of_a_new_generation_are_not_booked():
    clock = FakeClock()
    chooser = ShapeChooser(k=4, clock=clock)
    assert chooser.choose([1, 2, 3], []) == [] and chooser.steps == 0  # no match: nothing to choose
    clock.now += 1.0
    chooser.choose([1, 2, 3, 4], [[5, 6]])  # books the one-row step above
    assert chooser.times == {1: [1.0, 1]}
    clock.now += 5.0
    chooser.choose([9, 9], [[1]])  # a new prompt, shorter: the open step is dropped, not booked
    assert chooser.times == {1: [1.0, 1]} and not any(chooser.samples.values())
    clock.now += 1.0
    chooser.choose([9, 9, 1, 4], [])
    assert chooser.times[2] == [1.0, 1] and chooser.samples[(1, 1)][-1] == (2, 2)
    with pytest.raises(ValueError, match="must be >= 1"):
        ShapeChooser(k=0)


def test_estimates_within_the_margin_keep_the_most_recent_match_in_full():
    chooser = ShapeChooser(k=10, margin=0.05)
    for arm in chooser.arms:  # every arm that drafts commits 3 tokens a step; no draft, the bonus alone
        chooser.samples[arm].append((trie_rows(cut([TRUTH[:10]], arm)), 3 if arm[0] else 1))
    chooser.times = {1: [1.0, 1], 11: [1.03, 1]}  # one draft token is ~3% faster than ten: noise
    assert chooser.rate((1, 1)) > chooser.rate((1, 10)) and chooser.best() == (1, 10)
    chooser.times = {1: [1.0, 1], 11: [1.2, 1]}  # ~18%: worth it
    assert chooser.best() == (1, 1)  # the same tokens from every arm here: the fewest rows win
