"""The small LM cut from the target: the cut itself, distillation, trained-weights-only export and
its completion from the base, and lossless drafting with it (SpecDiff's `ar` and HF assisted)."""

import gzip
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import tiny
from transformers import AutoModelForCausalLM

from specdiff import SpecDiff, zoo
from specdiff.drafters import AutoregressiveDrafter
from specdiff.training import distill
from specdiff.training.loop import TrainConfig
from specdiff.training.small_lm import (IGNORE, NextTokenObjective, ReplyWindows, SmallLMRecipe, run_small_lm,
                                        shared_parameter_names, trained_state, truncated_copy, warm_start)
from specdiff.zoo import derived


def fake_distill_dir(path, rows, seed=0):
    """A distillation directory of hand-made (prompt, reply) records: one shard and an empty plan."""
    (path / "shards").mkdir(parents=True, exist_ok=True)
    with gzip.open(path / distill.PLAN_FILE, "wt") as handle:
        handle.write("")
    batch = {"prompt_ids": [p for p, _ in rows], "response_ids": [r for _, r in rows],
             "records": [{"mode": "greedy", "kind": "test"} for _ in rows]}
    distill.write_shard(path, 0, batch, 1.0)
    return path


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gpt2"])
def test_cut_keeps_the_named_layers_and_all_of_them_is_the_target(model_type):
    target = tiny.build(model_type, num_hidden_layers=3)
    whole = truncated_copy(target, [0, 1, 2])
    ids = tiny.repetitive_prompt(12)
    with torch.no_grad():
        torch.testing.assert_close(whole(ids).logits, target(ids).logits, atol=1e-5, rtol=0)
    small = truncated_copy(target, [0, 2])
    assert small.config.num_hidden_layers == 2 and small.config.specdiff_source_layers == [0, 2]
    small_state, target_state = small.state_dict(), target.state_dict()
    renamed = {k: k.replace(".1.", ".2.", 1) for k in small_state if ".1." in k}
    for key, source in renamed.items():
        assert torch.equal(small_state[key], target_state[source])
    with pytest.raises(ValueError, match="distinct indices"):
        truncated_copy(target, [0, 0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        truncated_copy(target, [3])


def test_only_the_kept_layers_and_norm_are_trained_and_stored():
    target = tiny.build("llama", num_hidden_layers=3)
    small = truncated_copy(target, [0, 2])
    shared = set(shared_parameter_names(small))
    assert {"model.embed_tokens.weight"} <= shared
    stored = trained_state(small)
    assert not shared & set(stored) and all(v.dtype == torch.float16 for v in stored.values())
    assert any(k.startswith("model.layers.1.") for k in stored) and "model.norm.weight" in stored


def test_reply_windows_label_reply_tokens_only_and_are_a_function_of_the_step(tmp_path):
    rows = [([5, 6, 7], [8, 9, 10, 11]), ([5, 6], [12, 13])]
    data = distill.DistillDataset(fake_distill_dir(tmp_path / "d", rows))
    windows = ReplyWindows(data, seq_len=8, batch_size=4, seed=3, pad_id=0)
    batch = windows.batch(7)
    assert torch.equal(batch, windows.batch(7)) and batch.shape == (4, 2, 8)
    for ids, labels in batch:
        real = ids[ids != 0].tolist()
        reply_start = 3 if real[:3] == [5, 6, 7] else 2
        expected = [IGNORE] * (reply_start - 1) + real[reply_start:] + [IGNORE] * (8 - len(real) + 1)
        assert labels.tolist() == expected


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_greedy_with_the_cut_model_equals_generate(model_type):
    target = tiny.build(model_type, num_hidden_layers=3)
    small = truncated_copy(target, [0, 2])
    prompt = tiny.repetitive_prompt(16)
    expected = tiny.reference(target, prompt, 40)
    for top_k in (1, 3):
        spec = SpecDiff(target, AutoregressiveDrafter(small, k=4, top_k=top_k))
        assert spec.generate(prompt, max_new_tokens=40).token_ids == expected
    assisted = target.generate(prompt, attention_mask=torch.ones_like(prompt), assistant_model=small,
                               max_new_tokens=40, do_sample=False)
    assert assisted[0, prompt.shape[1]:].tolist() == expected


def test_distilled_export_is_completed_from_its_base(tmp_path, monkeypatch):
    """Train a few steps on a pattern, export trained weights only, complete them from the base
    directory: the completed model loads with AutoModelForCausalLM and equals the trained one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = tiny.build("llama", num_hidden_layers=3)
    base = tmp_path / "base"
    target.save_pretrained(base)
    zoo.load_tokenizer("stdlib-target").save_pretrained(base)
    rows = [([1 + (i % 2), 2], [3 + (i % 5), 4 + (i % 5), 5 + (i % 5)]) for i in range(40)]
    data = fake_distill_dir(tmp_path / "data", rows)
    config = TrainConfig(steps=6, batch_size=4, seq_len=8, lr=1e-3, warmup_steps=1, eval_every=3, eval_batches=1,
                         save_every=3)
    recipe = SmallLMRecipe("tiny-small", str(base), str(data), (0, 2), config, command="test", draft_vocab=8)
    out = tmp_path / "out"
    monkeypatch.setattr(distill, "is_heldout", lambda ids: False)
    with pytest.raises(ValueError, match="no records"):  # an empty held-out split: a clear error
        run_small_lm(recipe, tmp_path / "work", out)
    monkeypatch.setattr(distill, "is_heldout", lambda ids: int(ids[0]) == 1)  # prompts [1, 2] are held out
    result = run_small_lm(recipe, tmp_path / "work", out)
    assert result.step == 6 and (out / "derived.json").exists()
    stored = set(json.loads((out / "card.json").read_text())["kept_layers"])
    assert stored == {0, 2}
    assert not any("embed_tokens" in key for key in _safetensor_keys(out / "model.safetensors"))
    complete = derived.materialize(out)
    assert derived.materialize(out) == complete  # made once
    assert (complete / "tokenizer.json").exists()  # the base's tokenizer
    loaded = AutoModelForCausalLM.from_pretrained(complete)
    assert loaded.config.num_hidden_layers == 2
    torch.testing.assert_close(loaded.get_input_embeddings().weight, target.get_input_embeddings().weight)
    # the reduced draft head: the 8 most frequent train reply tokens (3..9, then the lowest unseen id)
    card = json.loads((out / "card.json").read_text())["draft_vocab"]
    assert card["size"] == 8 and card["heldout_coverage"] == 1.0
    assert AutoregressiveDrafter(loaded).draft_vocab.tolist() == [0, 3, 4, 5, 6, 7, 8, 9]  # "auto": its file
    assert AutoregressiveDrafter(loaded, draft_vocab=None).draft_vocab is None
    # A warm start (`--init`) from the export: the cut model holds its trained weights, the card says so.
    model = truncated_copy(target, (0, 2))
    assert warm_start(model, str(out)) == {"path": str(out), "steps": 6}
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert warm_start(truncated_copy(target, (0, 2)), str(complete))["steps"] == 6  # the complete model (the zoo's)
    with pytest.raises(ValueError, match="keeps layers"):
        warm_start(truncated_copy(target, (0, 1)), str(out))
    again = run_small_lm(replace(recipe, init=str(out)), tmp_path / "work2", tmp_path / "out2")
    card = json.loads((tmp_path / "out2" / "card.json").read_text())
    assert again.step == 6 and card["started_from"] == {"path": str(out), "steps": 6}
    assert "after 6 steps of" in (tmp_path / "out2" / "README.md").read_text()
    # The command line: a bad --init is a usage error that names the fix, not a traceback.
    from click.testing import CliRunner

    from specdiff.cli.main import cli

    common = ["train", "small-lm", "--target", str(base), "--data", str(data), "--layers", "0,1", "--steps", "1",
              "--work-dir", str(tmp_path / "work3"), "--out-dir", str(tmp_path / "out3")]
    for init, says in ((str(out), "pass --layers 0,2"), ("no-such-small-lm", "is not shipped")):
        result = CliRunner().invoke(cli, [*common, "--init", init])
        assert result.exit_code == 2 and says in result.output, result.output


def _safetensor_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def test_next_token_objective_is_cross_entropy_on_labelled_positions():
    model = tiny.build("llama", num_hidden_layers=1)
    ids = torch.tensor([[1, 2, 3, 4]])
    labels = torch.tensor([[IGNORE, 3, 4, IGNORE]])
    loss = NextTokenObjective().loss(model, torch.stack([ids, labels], 1))
    with torch.no_grad():
        logits = model(ids).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[1:3], torch.tensor([3, 4]))
    torch.testing.assert_close(loss.detach(), expected)
