"""The verifier's tree forwards through torch.compile (`SpecDiff(compile=True)`): the same logits and hidden states
as eager to float rounding, greedy output still `generate`'s, one-row steps and prefills left eager."""

import pytest
import torch

import tiny
from specdiff import SpecDiff, methods
from specdiff.cli.common import method_options
from specdiff.drafters import PromptLookupDrafter
from specdiff.kv import TREE_PATH, CachedLM

# Inductor compiles C++ for the CPU; a tiny model's graph takes ~20 s on two cores.
pytestmark = pytest.mark.skipif(tiny.DEVICE != "cpu", reason="compile times measured on a CPU only")


def tree_rows(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [5], visible [5, 5]) of a two-branch tree after `n` committed rows: 0 -> 1 -> 2, 0 -> 3 -> 4."""
    visible = torch.eye(5, dtype=torch.bool)
    for child, parent in ((1, 0), (2, 1), (3, 0), (4, 3)):
        visible[child] |= visible[parent]
    depth = torch.tensor([0, 1, 2, 1, 2])
    return n + depth, visible


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_compiled_tree_forwards_match_eager_ones(model_type):
    model = tiny.build(model_type)
    eager, compiled = CachedLM(model), CachedLM(model, compiled=True)
    prompt = torch.randint(3, tiny.VOCAB, (40,), generator=torch.Generator().manual_seed(1))
    for n in (20, 33, 27):  # the cache grows and shrinks between compiled forwards
        ids = torch.randint(3, tiny.VOCAB, (5,), generator=torch.Generator().manual_seed(n))
        outputs = []
        for engine in (eager, compiled):
            kept = engine.sync(prompt[:n].tolist())
            if kept < n:
                engine.forward(prompt[kept:n])
            positions, visible = tree_rows(n)
            outputs.append(engine.forward(ids, positions, visible, hidden_layers=(-1, 1)))
        want, got = outputs
        assert got.path == TREE_PATH
        torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.hidden, want.hidden, atol=1e-4, rtol=1e-4)
    assert compiled.compiled.calls == 3  # the tree forwards only: prefills stay eager
    assert eager.compiled is None


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_compiled_verifier_keeps_greedy_equal_to_generate(model_type):
    model = tiny.build(model_type)
    prompt = tiny.repetitive_prompt(30)
    spec = SpecDiff(model, PromptLookupDrafter(), compile=True)
    assert spec.generate(prompt, max_new_tokens=40).token_ids == tiny.reference(model, prompt, 40)
    assert spec.verifier.lm.compiled.calls > 0


def test_a_model_whose_logits_are_transformed_after_the_head_is_refused():
    model = tiny.build("gemma2", attn="eager", final_logit_softcapping=30.0)
    with pytest.raises(ValueError, match="run it uncompiled"):
        CachedLM(model, compiled=True)


def test_compile_reaches_the_engine_from_the_method_options_and_the_command_line():
    model = tiny.build("llama")
    options = method_options({"draft_length": None, "compile_target": True})
    assert options == methods.MethodOptions(compile=True)
    assert methods.build("lookup", model, None, options=options).verifier.lm.compiled is not None
    assert methods.build("lookup", model, None).verifier.lm.compiled is None
