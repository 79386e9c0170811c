"""`specdiff train target` end to end on the real corpus, a few steps, then resumed."""

import json

from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdiff.cli.main import cli


def test_train_target_smoke_and_resume(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
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
