"""The lookup drafter's shape chooser: trie or chain by measured tokens per second (a fake clock here)."""

from specdiff.drafters.lookup import ShapeChooser


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_steps(chooser, clock, cost, gain, steps, ids=None):
    """Each step: choose, then the step takes cost[shape] seconds and commits gain[shape] tokens."""
    ids = list(ids or [1, 2, 3])
    shapes = []
    for _ in range(steps):
        shape = "trie" if chooser.choose(ids, branches=4) == 4 else "chain"
        shapes.append(shape)
        clock.now += cost[shape]
        ids += [7] * gain[shape]
    return shapes, ids


def test_the_faster_shape_wins_after_exploring_both():
    clock = FakeClock()
    chooser = ShapeChooser(clock, explore=2, revisit=8)
    # Rows are dear (emulated bf16): the trie commits a little more per step but takes 3x as long.
    shapes, _ = run_steps(chooser, clock, cost=dict(trie=3.0, chain=1.0), gain=dict(trie=3, chain=2), steps=24)
    assert shapes[:4].count("trie") == 2 and shapes[:4].count("chain") == 2  # both tried first
    assert chooser.rate("chain") == 2.0 and chooser.rate("trie") == 1.0
    later = shapes[4:]
    assert later.count("chain") > later.count("trie") >= 1  # the trie is still revisited now and then
    # Rows are free (a GPU): the same chooser flips to the trie once its measurements say so.
    clock = FakeClock()
    chooser = ShapeChooser(clock, explore=2, revisit=8)
    shapes, _ = run_steps(chooser, clock, cost=dict(trie=1.0, chain=1.0), gain=dict(trie=3, chain=2), steps=24)
    assert shapes[4:].count("trie") > shapes[4:].count("chain")


def test_steps_without_a_choice_and_new_generations_are_not_booked():
    clock = FakeClock()
    chooser = ShapeChooser(clock)
    assert chooser.choose([1, 2, 3], branches=1) == 1 and chooser._open is None  # one match: nothing to choose
    assert chooser.choose([1, 2, 3], branches=0) == 0
    chooser.choose([1, 2, 3], branches=3)
    clock.now += 5.0
    chooser.choose([9, 9], branches=3)  # a new prompt, shorter: the open step is dropped, not booked
    assert sum(chooser.samples.values()) == 0
    clock.now += 1.0
    chooser.choose([9, 9, 4, 4], branches=3)
    assert sum(chooser.samples.values()) == 1 and sum(chooser.tokens.values()) == 2
