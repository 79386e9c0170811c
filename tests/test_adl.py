"""DiffuSpec's adaptive draft length (Eq. 9-11), and L^gen reaching the policy from the loop."""

import pytest
import torch

import tiny
from specdiff import AdaptiveDraftLength, FixedDraftLength, SpecDiff
from specdiff.types import TokenLattice
from specdiff.drafters.base import DraftNeeds


def test_starts_at_k_max_and_follows_eq_11():
    policy = AdaptiveDraftLength(k_min=2, k_max=10, delta=3, rho=0.5)
    assert policy.current() == 10  # k_1 = k_max
    policy.update(drafted=10, accepted=10, generated_before_eos=10)
    # EMAs from 0: L~gen = 5, L~acc = 5; acceptance keeps up -> 5 + delta
    assert (policy.generated_ema, policy.accepted_ema, policy.current()) == (5.0, 5.0, 8)
    policy.update(drafted=8, accepted=1, generated_before_eos=8)
    # L~gen = 6.5, L~acc = 3 -> no growth, floor(6.5) = 6
    assert (policy.generated_ema, policy.accepted_ema, policy.current()) == (6.5, 3.0, 6)
    policy.update(drafted=6, accepted=0, generated_before_eos=1)  # an EOS early in the raw draft
    assert policy.current() == 3  # floor(3.75)


def test_rounding_is_declared():
    floor = AdaptiveDraftLength(k_min=1, k_max=10, delta=0, rho=0.5)
    nearest = AdaptiveDraftLength(k_min=1, k_max=10, delta=0, rho=0.5, rounding="nearest")
    for policy in (floor, nearest):
        policy.update(drafted=7, accepted=0, generated_before_eos=7)  # L~gen = 3.5
    assert (floor.current(), nearest.current()) == (3, 4)


def test_clipped_to_bounds():
    policy = AdaptiveDraftLength(k_min=4, k_max=6, delta=10, rho=1.0)
    policy.update(drafted=6, accepted=6, generated_before_eos=6)
    assert policy.current() == 6  # 6 + 10 clipped to k_max
    policy.update(drafted=6, accepted=0, generated_before_eos=1)
    assert policy.current() == 4  # 1, acceptance behind: no growth, clipped to k_min
    policy.update(drafted=4, accepted=0, generated_before_eos=0)
    assert policy.current() == 6  # L~acc >= L~gen (0 >= 0) grows by delta, clipped to k_max


def test_missing_l_gen_falls_back_to_the_drafted_depth_and_reset():
    policy = AdaptiveDraftLength(k_min=1, k_max=10, delta=0, rho=1.0)
    policy.update(drafted=5, accepted=0)
    assert policy.current() == 5
    policy.reset()
    assert (policy.current(), policy.generated_ema, policy.accepted_ema) == (10, 0.0, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(k_min=0), "k_min"), (dict(k_min=9, k_max=8), "k_min"), (dict(delta=-1), "delta"),
    (dict(rho=0.0), "rho"), (dict(rounding="ceil"), "rounding"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveDraftLength(**kwargs)


class LatticeWithEos:
    """A model-free drafter: a lattice whose argmax is EOS at `eos_position`."""

    forward_count = 0
    needs = DraftNeeds()
    k = 6

    def __init__(self, eos_id: int, eos_position: int, length: int = 6):
        tokens = [5 + i for i in range(length)]
        tokens[eos_position] = eos_id
        self.tokens = torch.tensor(tokens)[:, None]

    def bind(self, target_vocab_size, tokenizer=None):
        pass

    def reset(self):
        pass

    def propose(self, ctx):
        rows = self.tokens[: ctx.budget]
        return TokenLattice(rows, torch.ones(rows.shape))


class RecordingPolicy(FixedDraftLength):
    def __post_init__(self):
        super().__post_init__()
        self.calls = []

    def update(self, drafted, accepted, generated_before_eos=None):
        self.calls.append((drafted, accepted, generated_before_eos))


def test_loop_passes_l_gen_to_the_policy():
    target = tiny.build("llama", eos=True)  # eos id 2
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(target, prompt, 16)
    policy = RecordingPolicy(length=6)
    result = SpecDiff(target, LatticeWithEos(eos_id=2, eos_position=3), draft_length=policy).generate(
        prompt, max_new_tokens=16)
    assert result.token_ids == expected
    steps_with_room = [call for call in policy.calls if call[0] >= 4]
    assert steps_with_room and all(generated == 3 for _, _, generated in steps_with_room)


def test_adaptive_policy_in_the_loop_is_lossless():
    target = tiny.build("llama", eos=True)
    prompt = tiny.repetitive_prompt()
    policy = AdaptiveDraftLength(k_min=2, k_max=6, delta=2)
    result = SpecDiff(target, LatticeWithEos(eos_id=2, eos_position=3), draft_length=policy).generate(
        prompt, max_new_tokens=16)
    assert result.token_ids == tiny.reference(target, prompt, 16)
    assert set(result.stats.draft_depths) <= set(range(0, 7))
