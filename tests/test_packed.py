"""PackedLinears: oneDNN-prepacked fp32 linears for multi-row forwards; the target's one-row forwards stay torch's
own, a drafter's are packed too."""

import pytest
import torch
from torch import nn

import tiny
from specdiff import SpecDiff
from specdiff.drafters import AutoregressiveDrafter, EagleDrafter, EagleModel, HeadsDrafter, PromptLookupDrafter
from specdiff.drafters.base import DraftContext
from specdiff.drafters.eagle_model import Borrowed
from specdiff.kv import CachedLM
from specdiff.masks import query_parents, query_positions
from specdiff.packed import PackedLinears, packing_available
from specdiff.trees import OptTree
from specdiff.types import DraftTree, ancestor_mask

pytestmark = pytest.mark.skipif(not packing_available() or tiny.DEVICE != "cpu",
                                reason="needs a CPU torch built with oneDNN")


def test_multi_row_inputs_take_the_packed_weights_and_one_row_inputs_torchs_kernel():
    layer = nn.Linear(64, 96)
    packed = PackedLinears(nn.Sequential(layer))
    rows = torch.randn(2, 5, 64)  # [B, S, in]: 10 rows
    one = torch.randn(1, 1, 64)
    with torch.no_grad():
        expected_rows, expected_one = layer(rows), layer(one)
        with packed.active():
            got_rows, got_one = layer(rows), layer(one)
            assert packed.packed_calls == 1  # only the 10-row call
    assert got_rows.shape == (2, 5, 96)
    torch.testing.assert_close(got_rows, expected_rows, atol=1e-5, rtol=0)
    assert torch.equal(got_one, expected_one)  # bit for bit: the same kernel as a decoding step
    assert "forward" not in vars(layer)  # the layer is as it was


def test_the_layers_are_restored_when_the_forward_fails_and_autograd_takes_torchs_path():
    layer = nn.Linear(8, 8)
    packed = PackedLinears(nn.Sequential(layer))
    with pytest.raises(RuntimeError), packed.active():
        layer(torch.randn(3, 7))  # wrong width
    assert "forward" not in vars(layer)
    x = torch.randn(4, 8, requires_grad=True)
    with packed.active():
        layer(x).sum().backward()  # grad on: torch's linear, which has a backward
    assert packed.packed_calls == 0 and x.grad is not None and layer.weight.grad is not None


def test_a_weight_changed_in_place_is_packed_again():
    layer = nn.Linear(16, 16)
    packed = PackedLinears(nn.Sequential(layer))
    x = torch.randn(6, 16)
    with torch.no_grad(), packed.active():
        before = layer(x)
        layer.weight.mul_(2)
        after = layer(x)
    torch.testing.assert_close(after - layer.bias, 2 * (before - layer.bias), atol=1e-5, rtol=0)


def test_layers_whose_forward_was_already_replaced_are_left_alone():
    hooked, plain = nn.Linear(8, 8), nn.Linear(8, 8)
    hooked.forward = lambda x: torch.zeros(x.shape[0], 8)  # as accelerate's offloading hooks do
    packed = PackedLinears(nn.Sequential(hooked, plain))
    assert packed.layers == [plain]
    with torch.no_grad(), packed.active():
        assert torch.equal(hooked(torch.ones(3, 8)), torch.zeros(3, 8))
    assert "forward" in vars(hooked)


def test_the_engine_packs_fp32_on_a_cpu_only():
    model = tiny.build("llama")
    assert CachedLM(model).packed is not None and CachedLM(model, packed_weights=False).packed is None
    assert CachedLM(model).packed is CachedLM(model, packed_weights=True).packed  # one packed copy per model
    bf16 = tiny.build("llama").to(torch.bfloat16)
    assert CachedLM(bf16).packed is None
    with pytest.raises(ValueError, match="fp32 weights on a CPU"):
        CachedLM(bf16, packed_weights=True)
    with pytest.raises(ValueError, match="packed_weights must be"):
        CachedLM(model, packed_weights="always")


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gpt_neox", "opt", "phi3", "gemma3_text"])
def test_a_packed_tree_forward_gives_the_unpacked_engines_logits(model_type):
    model = tiny.build(model_type)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    tree = DraftTree(torch.tensor([5, 9, 17, 33, 65, 7]), torch.tensor([-1, -1, 0, 0, 1, 4]))
    ids = torch.cat([torch.tensor([3]), tree.tokens])
    outs = []
    for packed in (True, False):
        lm = CachedLM(model, packed_weights=packed, row_padding=None)
        prefill = lm.forward(prefix, hidden_layers=(-1,))
        scored = lm.forward(ids, query_positions(tree.parents, len(prefix)), ancestor_mask(query_parents(tree.parents)))
        outs.append((prefill, scored, lm.packed.packed_calls if lm.packed else 0))
    (packed_prefill, packed_tree, calls), (prefill, scored, _) = outs
    assert calls > 0
    torch.testing.assert_close(packed_prefill.logits, prefill.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_prefill.hidden, prefill.hidden, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_tree.logits, scored.logits, atol=1e-5, rtol=0)


def test_greedy_with_packed_weights_equals_generate():
    """The default engine (fp32, CPU) verifies trees and chains over packed weights; greedy stays generate's."""
    for model_type in ("llama", "qwen2", "gpt2", "mistral", "phi", "stablelm"):
        model = tiny.build(model_type)
        prompt = tiny.repetitive_prompt()
        expected = tiny.reference(model, prompt, 24)
        drafters = {"lookup chain": PromptLookupDrafter(ngram=2, k=5),
                    "AR tree": AutoregressiveDrafter(tiny.build("llama", seed=1), k=3, top_k=2)}
        for name, drafter in drafters.items():
            spec = SpecDiff(model, drafter)
            assert spec.generate(prompt, max_new_tokens=24).token_ids == expected, f"{model_type}, {name}"
            engines = [spec.verifier.lm, *([drafter.lm] if hasattr(drafter, "lm") else [])]
            assert all(lm.packed.packed_calls > 0 for lm in engines)  # the verify (and draft) forwards ran packed


def test_a_reduced_head_is_packed_too():
    model = tiny.build("qwen2")
    rows = torch.arange(0, tiny.VOCAB, 3)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    packed = CachedLM(model, head_rows=rows, row_padding=None)
    plain = CachedLM(model, head_rows=rows, row_padding=None, packed_weights=False)
    got, expected = packed.forward(prefix).logits, plain.forward(prefix).logits
    assert got.shape == (len(prefix), len(rows))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    head = packed.head.weight
    assert any(entry[0]() is head for entry in packed.packed._packs.values())  # the head's rows were packed


def test_an_eagle_drafters_borrowed_head_is_packed_and_greedy_stays_generates():
    """The EAGLE decoder's LM head is the target's (reduced) head held as buffers, not an nn.Linear: it declares
    `packs_as_linear`, so multi-row drafts project over the packed copy; unattached, it still names the fix."""
    unattached = nn.Sequential(Borrowed("head"))
    packs = PackedLinears(unattached)
    assert packs.layers == [unattached[0]] and not PackedLinears(nn.Sequential(Borrowed("embedding"))).layers
    with pytest.raises(RuntimeError, match="attach"), packs.active():  # no weight yet: its own forward, its error
        unattached(torch.zeros(3, 8))
    target = tiny.build("llama")
    prompt = tiny.repetitive_prompt()
    torch.manual_seed(1)
    eagle = EagleModel.for_target(target, (1, 2), torch.arange(0, tiny.VOCAB, 3))
    drafter = EagleDrafter(eagle, target, k=4, top_k=3)
    result = SpecDiff(target, drafter, tree=OptTree(node_budget=8)).generate(prompt, max_new_tokens=24)
    assert result.token_ids == tiny.reference(target, prompt, 24)
    head = eagle.head.weight
    assert any(entry[0]() is head for entry in drafter.lm.packed._packs.values())  # its rows were packed


def test_a_drafters_engine_packs_its_one_row_forwards_and_the_targets_does_not():
    """A drafter's numbers need not match `generate` bit for bit: its engine packs one-row forwards too (an AR
    chain drafts a row at a time); the verifier's one-row steps stay torch's."""
    model = tiny.build("llama")
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    drafting = CachedLM(model, pack_one_row=True, row_padding=None)
    plain = CachedLM(model, packed_weights=False, row_padding=None)
    drafting.forward(prefix), plain.forward(prefix)
    calls = drafting.packed.packed_calls
    got, expected = drafting.forward([7]).logits, plain.forward([7]).logits
    assert drafting.packed.packed_calls > calls  # the one row ran packed
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    verifying = CachedLM(model, row_padding=None)
    verifying.forward(prefix)
    calls = verifying.packed.packed_calls
    assert torch.equal(verifying.forward([7]).logits, expected)  # bit for bit torch's one-row kernel
    assert verifying.packed.packed_calls == calls
    target = tiny.build("qwen2")
    prompt = tiny.repetitive_prompt()
    drafter = AutoregressiveDrafter(tiny.build("llama", seed=1), k=4)  # a chain: one-row drafter forwards
    assert SpecDiff(target, drafter).generate(prompt, max_new_tokens=24).token_ids == tiny.reference(target, prompt, 24)
    assert drafter.lm.pack_one_row and drafter.lm.packed.packed_calls > 0


@pytest.mark.parametrize("conditioned", [False, True])
def test_heads_draft_over_packed_weights_and_greedy_stays_generates(conditioned):
    """Medusa / Hydra heads run their blocks and the draft vocabulary's LM-head rows packed (one row at a time
    for conditioned heads); the drafts are those of the unpacked heads."""
    from test_heads import EVERY_THIRD, random_heads

    target = tiny.build("llama")
    prompt = tiny.repetitive_prompt()
    heads = random_heads(target, num_heads=3, conditioned=conditioned)
    packed, plain = HeadsDrafter(heads, target, draft_vocab=EVERY_THIRD), HeadsDrafter(heads, target,
                                                                                       draft_vocab=EVERY_THIRD)
    plain.packed = None
    hidden = torch.randn(1, 64)
    ctx = DraftContext(token_ids=prompt[0].tolist(), hidden_state=hidden, budget=3)
    got, expected = packed.propose(ctx), plain.propose(ctx)
    assert packed.packed.packed_calls > 0
    assert torch.equal(got.candidates, expected.candidates)
    torch.testing.assert_close(got.probs, expected.probs, atol=1e-5, rtol=0)
    result = SpecDiff(target, packed).generate(prompt, max_new_tokens=24)
    assert result.token_ids == tiny.reference(target, prompt, 24)
    bf16 = tiny.build("llama").to(torch.bfloat16)
    assert HeadsDrafter(random_heads(bf16).to(torch.bfloat16), bf16).packed is None  # oneDNN already, in bf16
