"""`specdiff train target` and `specdiff train tidar` end to end on the real corpus, a few steps (target: then resumed)."""

import json

import pytest
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdiff.cli.main import cli


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    """One work dir for the module: the tokenizer and corpus encodings are built once."""
    return tmp_path_factory.mktemp("zoo-work")


def test_train_target_smoke_and_resume(work_dir, tmp_path):
    work, out = work_dir, tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(cli, ["train", "target", "--steps", "2", "--work-dir", str(work), "--out-dir", str(out)])
    assert first.exit_code == 0, first.output
    state = json.loads((work / "stdlib-target" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2
    second = runner.invoke(cli, ["train", "target", "--steps", "3", "--work-dir", str(work), "--out-dir", str(out)])
    assert second.exit_code == 0, second.output
    card = json.loads((out / "stdlib-target" / "card.json").read_text())
    assert card["steps"] == 3 and card["tokens_seen"] == 3 * 8 * 256
    assert (out / "stdlib-target" / "README.md").exists()
    model = AutoModelForCausalLM.from_pretrained(out / "stdlib-target")
    tokenizer = AutoTokenizer.from_pretrained(out / "stdlib-target")
    assert model.config.vocab_size == len(tokenizer)


def test_train_tidar_smoke(work_dir, tmp_path):
    import torch

    from specdiff import SpecDiff
    from specdiff.drafters import TiDARDrafter

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["train", "tidar", "--steps", "2", "--block-sizes", "2,4", "--work-dir",
                                      str(work_dir), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "stdlib-tidar" / "card.json").read_text())
    assert card["steps"] == 2 and card["init_from"] == "stdlib-target" and card["block_sizes_trained"] == [2, 4]
    assert card["block_size"] == 4 and len(card["one_step_drafting"]["accuracy_by_position"]) == 4
    assert {"heldout_loss", "heldout_loss_init", "quality", "quality_init"} <= set(card)
    model = AutoModelForCausalLM.from_pretrained(out / "stdlib-tidar", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "stdlib-tidar")
    assert model.config.tidar_block_size == 4 and model.config.mask_token_id == tokenizer.mask_token_id
    ids = tokenizer("def parse(line):\n    ", return_tensors="pt")["input_ids"]
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    got = SpecDiff(model, TiDARDrafter(model), tokenizer=tokenizer).generate(ids, 12).token_ids
    assert got == expected[0, ids.shape[1]:].tolist()
    bad = CliRunner().invoke(cli, ["train", "tidar", "--block-sizes", "4,x", "--work-dir", str(work_dir)])
    assert bad.exit_code != 0 and "comma-separated" in bad.output
