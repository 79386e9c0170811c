"""The lookup drafter's shape chooser: arms (matches x depth, or no draft) by measured tokens per second,
from step times by verify rows and what every arm would have committed at every step, scored once the
generation has gone k + 1 tokens past it (a fake clock here)."""

import numpy as np
import pytest

from specdiff.drafters.lookup import ALL, ShapeChooser, cut, trie_rows

TRUTH = [50 + i for i in range(400)]  # the target's own continuation
WRONG = [[91] * 10, [92] * 10, [93] * 10]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(chooser, clock, matches, cost, steps, ids=None):
    """Each step offers matches(position) (most recent first); the step commits the longest drafted prefix
    of TRUTH from there plus the target's next token, and takes cost(verify rows) seconds. The ids are
    one list, extended, as the verifier's are within a generation. Returns what each step drafted."""
    ids = [1, 2, 3] if ids is None else ids
    start, drafts = len(ids), []
    for _ in range(steps):
        truth = TRUTH[len(ids) - start :]
        drafted = chooser.choose(ids, [list(m) for m in matches(truth)])
        drafts.append(drafted)
        accepted = max((next((i for i, (a, b) in enumerate(zip(d, truth)) if a != b), min(len(d), len(truth)))
                        for d in drafted), default=0)
        clock.now += cost(trie_rows(drafted))
        ids.extend(truth[: accepted + 1])
    return drafts


def right_for(n):  # a match that is right for n tokens, then wrong
    return lambda truth: truth[:n] + [90] * (10 - n)


def test_cut_and_rows():
    matches = [[1, 2, 3], [1, 2, 4], [5]]
    assert cut(matches, (1, 2)) == [[1, 2]] and cut(matches, (ALL, 2)) == [[1, 2], [5]]  # [1, 2] once
    assert cut(matches, (0, 0)) == [] and cut(matches, (ALL, 10)) == matches
    assert trie_rows(matches) == 1 + 5 and trie_rows([]) == 1  # nodes 1, 12, 123, 124, 5 + the root's row


def test_every_arm_is_scored_against_what_the_target_went_on_to_commit():
    chooser = ShapeChooser(k=10)
    truth = TRUTH[:11]
    rows, tokens = chooser.score([truth[:2] + [90] * 8, truth[:10]], truth)
    by_arm = {arm: (int(r), int(t)) for arm, r, t in zip(chooser.arms, rows, tokens)}
    assert by_arm[(0, 0)] == (1, 1)  # no draft: the bonus token alone, one row
    assert by_arm[(1, 1)] == (2, 2) and by_arm[(1, 2)] == (3, 3) and by_arm[(1, 10)] == (11, 3)
    assert by_arm[(ALL, 1)] == (2, 2)  # both matches start with truth[0]: one node
    assert by_arm[(ALL, 4)] == (1 + 4 + 2, 5) and by_arm[(ALL, 10)] == (1 + 10 + 8, 11)


def test_steps_are_scored_once_the_generation_is_k_plus_1_past_them_and_each_generation_afresh():
    clock = FakeClock()
    chooser = ShapeChooser(k=4, clock=clock, explore=0)
    ids = [1, 2, 3]
    assert chooser.choose(ids, []) == []  # no match: timed, nothing to score
    clock.now += 1.0
    ids.append(7)
    assert chooser.choose(ids, [[8, 9, 10, 11]]) == [[8, 9, 10, 11]]  # the default: the match in full
    assert chooser.times == {1: [1.0, 1]} and not chooser.booked
    clock.now += 2.0
    ids.extend([8, 9, 5])  # 2 of 4 accepted, then the target's own token: 3 tokens, not yet 5
    chooser.choose(ids, [])
    assert chooser.times[5] == [2.0, 1] and not chooser.booked
    clock.now += 1.0
    ids.extend([6, 6])
    chooser.choose(ids, [])  # 5 tokens past the step: scored
    assert chooser.samples((1, 4)) == [(5, 3)] and chooser.samples((1, 1)) == [(2, 2)]
    clock.now += 9.0
    chooser.choose(list(ids), [[1]])  # a new generation (a new list, as the verifier makes): nothing booked
    assert chooser.times[1] == [1.0 + 1.0, 2] and len(chooser.booked) == 1  # the 9 s were not timed
    with pytest.raises(ValueError, match="must be >= 1"):
        ShapeChooser(k=0)


def test_dear_rows_cut_the_draft_to_what_is_accepted():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock)
    # Emulated bf16 on some CPUs: each row costs half a one-row step. Chain of 2: 3 tokens / 2.5 s.
    drafts = simulate(chooser, clock, lambda t: [right_for(2)(t), *WRONG], cost=lambda rows: 1.0 + 0.5 * rows,
                      steps=60)
    assert chooser.best() == (1, 2)
    assert chooser.rate((1, 2)) == pytest.approx(3 / 2.5)
    assert all(d == [d[0][:2]] for d in drafts[30:])  # explore, min_samples and k + 1 tokens of delay aside
    assert chooser.rate((0, 0)) < chooser.rate((1, 2)) and chooser.rate((ALL, 10)) < chooser.rate((1, 2))


def test_free_rows_draft_every_match_in_full():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock)
    # A GPU: rows are free, and the second match is the right one.
    drafts = simulate(chooser, clock, lambda t: [right_for(2)(t), t[:10], *WRONG[:2]], cost=lambda rows: 1.0,
                      steps=40)
    assert chooser.best()[0] == ALL and chooser.best()[1] == 10
    assert all(len(d) == 4 for d in drafts[25:])


def test_wrong_matches_draft_nothing_and_times_interpolate():
    clock = FakeClock()
    chooser = ShapeChooser(k=10, clock=clock)
    drafts = simulate(chooser, clock, lambda t: WRONG, cost=lambda rows: 1.0 + 0.1 * rows, steps=60)
    assert chooser.best() == (0, 0)  # every draft is rejected: one row is the cheapest step
    assert all(d == [] for d in drafts[40:])
    assert set(chooser.times) >= {1, 31}
    assert chooser.seconds(21) == pytest.approx((chooser.seconds(11) + chooser.seconds(31)) / 2)


def book(chooser, tokens_of, steps):
    """`steps` scored steps at which each arm would have committed tokens_of(arm, step) tokens."""
    for p in range(steps):
        rows = [trie_rows(cut([TRUTH[:10], WRONG[0]], arm)) for arm in chooser.arms]
        chooser.booked.append((np.array(rows, float), np.array([tokens_of(arm, p) for arm in chooser.arms], float)))


def test_estimates_within_the_margin_keep_the_most_recent_match_in_full():
    chooser = ShapeChooser(k=10, margin=0.05)
    book(chooser, lambda arm, p: 3 if arm[0] else 1, 16)  # every arm that drafts: 3 tokens; none: the bonus
    chooser.times = {1: [1.0, 1], 11: [1.03, 1]}  # one draft token is ~3% faster than ten: noise
    assert chooser.rate((1, 1)) > chooser.rate((1, 10)) and chooser.best() == (1, 10)
    chooser.times = {1: [1.0, 1], 11: [1.2, 1]}  # ~18%: worth it
    assert chooser.best() == (1, 1)  # the same tokens from every arm here: the fewest rows win


def test_a_few_or_noisy_steps_keep_the_default():
    chooser = ShapeChooser(k=10, min_samples=16, z=2.0)
    chooser.times = {1: [1.0, 1], 11: [1.05, 1], 21: [1.3, 1]}

    def trie_wins(every):  # the trie commits up to 8 tokens at one step in `every`, the chain 2
        return lambda arm, p: min(8, arm[1] + 1) if arm[0] == ALL and p % every == 0 else 2 if arm[0] else 1

    book(chooser, trie_wins(1), 15)
    assert chooser.against_default((ALL, 4))[0] > 1.5 and chooser.best() == (1, 10)  # 15 steps: too few
    chooser.booked.clear()
    book(chooser, trie_wins(10), 20)
    ratio, error, n = chooser.against_default((ALL, 4))
    assert n == 20 and ratio > 1.1 and ratio - 2 * error < 1.05 and chooser.best() == (1, 10)  # noise
    chooser.booked.clear()
    book(chooser, trie_wins(1), 16)
    assert chooser.best()[0] == ALL
