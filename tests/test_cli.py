"""`specdiff generate / chat / bench` through click's CliRunner, with tiny models saved to disk."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from specdiff import zoo
from specdiff.api import SpecDiff
from specdiff.cli.main import cli
from specdiff.zoo.corpus import stdlib_root
from specdiff.training.tokenizer import train_tokenizer

PROMPT = "def bisect_left(a, x, lo=0, hi=None):\n"


def build_tiny_models(root):
    """A byte-level BPE tokenizer trained on a few stdlib files, a 2-layer Llama target and a
    1-layer Llama drafter, saved with save_pretrained like any local model."""
    files = [stdlib_root() / name for name in ("bisect.py", "colorsys.py", "keyword.py", "heapq.py")]
    tokenizer = train_tokenizer(files, vocab_size=320)
    paths = {}
    for name, layers, hidden, seed in (("target", 2, 64, 0), ("drafter", 1, 32, 1)):
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * hidden,
                             max_position_embeddings=512, initializer_range=0.08, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths["target"], paths["drafter"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def assert_clean_failure(result, *fragments):
    """Non-zero exit, a message naming the problem, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize("command", ["chat", "generate", "bench"])
def test_help_shows_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and f"specdiff {command}" in result.output


def test_generate_text_on_stdout_stats_on_stderr(tiny_models):
    target, drafter = tiny_models
    result = invoke("generate", PROMPT, "--target", target, "--drafter", drafter, "--max-new-tokens", 6)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert "tau" in result.stderr and "tau" not in result.stdout


def test_generate_json_is_lossless(tiny_models):
    """Drafter = target: every draft is accepted, and the ids equal plain greedy `generate`."""
    target, _ = tiny_models
    result = invoke("generate", PROMPT, "--target", target, "--drafter", target, "--max-new-tokens", 12, "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    model = AutoModelForCausalLM.from_pretrained(target).eval()
    tokenizer = AutoTokenizer.from_pretrained(target)
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    reference = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert answer["token_ids"] == reference[0, ids.shape[1]:].tolist()
    assert answer["stats"]["tau"] > 1.5
    assert answer["text"] == tokenizer.decode(answer["token_ids"], skip_special_tokens=True)


def test_generate_reads_stdin_and_file(tiny_models, tmp_path):
    target, _ = tiny_models
    prompt_file = tmp_path / "prompt.py"
    prompt_file.write_text(PROMPT)
    common = ["--target", target, "--method", "lookup", "--max-new-tokens", 5, "--json"]
    from_stdin = invoke("generate", *common, input=PROMPT)
    from_file = invoke("generate", "--file", prompt_file, *common)
    from_argument = invoke("generate", PROMPT, *common)
    assert from_stdin.exit_code == from_file.exit_code == from_argument.exit_code == 0, from_stdin.output
    texts = {json.loads(r.stdout)["text"] for r in (from_stdin, from_file, from_argument)}
    assert len(texts) == 1


def test_generate_drops_the_oldest_tokens_of_a_too_long_prompt(tiny_models):
    target, _ = tiny_models
    result = invoke("generate", PROMPT * 60, "--target", target, "--method", "lookup", "--max-new-tokens", 4)
    assert result.exit_code == 0, result.output
    assert "dropped" in result.stderr


def test_missing_model_path(tiny_models, tmp_path):
    result = invoke("generate", PROMPT, "--target", tmp_path / "no-such-model", "--method", "lookup")
    assert_clean_failure(result, "no model at", "--target")
    _, drafter = tiny_models
    result = invoke("chat", "--target", drafter, "--drafter", tmp_path / "nope")
    assert_clean_failure(result, "no model at", "--drafter")


def test_zoo_default_not_shipped(tiny_models, monkeypatch, tmp_path):
    monkeypatch.setattr(zoo, "SHIPPED_DIR", tmp_path)
    result = invoke("generate", PROMPT, "--target", "stdlib-target", "--raw")
    assert_clean_failure(result, "stdlib-target", "--target")
    target, _ = tiny_models
    result = invoke("generate", PROMPT, "--target", target, "--method", "ar")  # the method's default drafter
    assert_clean_failure(result, "stdlib-ar-drafter", "--drafter")


def test_bad_device(tiny_models):
    target, _ = tiny_models
    result = invoke("generate", PROMPT, "--target", target, "--device", "gpu0")
    assert_clean_failure(result, "--device")


def test_unknown_method(tiny_models):
    target, drafter = tiny_models
    for command in (["generate", PROMPT], ["chat"]):
        result = invoke(*command, "--target", target, "--drafter", drafter, "--method", "no-such-method")
        assert_clean_failure(result, "no-such-method", "ar-tree", "lookup")
    result = invoke("bench", "--target", target, "--drafter", drafter, "-m", "no-such-method")
    assert_clean_failure(result, "no-such-method", "hf-assisted")


@pytest.mark.parametrize("flag, value", [("--max-new-tokens", 0), ("--temperature", -1), ("--top-p", 1.5),
                                         ("--top-k", -2), ("--repetition-penalty", 0)])
def test_bad_decoding_value_names_the_flag_before_loading(flag, value, monkeypatch):
    from specdiff.cli import generate

    def no_loading(*args, **kwargs):
        raise AssertionError("a bad flag must be refused before any model loads")

    monkeypatch.setattr(generate, "load_models", no_loading)
    result = invoke("generate", PROMPT, flag, value)
    assert_clean_failure(result, flag)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_or_blank_prompt_is_refused(prompt):
    assert_clean_failure(invoke("generate", prompt), "the prompt is empty")


def test_help_and_argument_errors_do_not_import_torch():
    """`specdiff --help` and a bad flag answer before torch and transformers are imported."""
    import subprocess

    code = ("import sys; from specdiff.cli.main import cli\n"
            "for args in (['--help'], ['generate', '--help'], ['bench', '--help'], ['chat', '--help'],"
            " ['generate', '--top-p', '1.5', 'hi']):\n"
            "    try:\n        cli.main(args, standalone_mode=False)\n    except Exception:\n        pass\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_sampling_options_are_passed_only_when_supported(tiny_models):
    """Sampling is being added to SpecDiff.generate: until it takes `temperature`, asking for it is a
    clear error; once it does, the option reaches it."""
    import inspect

    target, _ = tiny_models
    result = invoke("generate", PROMPT, "--target", target, "--method", "lookup", "--max-new-tokens", 4,
                    "--temperature", "0.8", "--seed", 1)
    if "temperature" in inspect.signature(SpecDiff.stream_tokens).parameters:
        assert result.exit_code == 0, result.output
    else:
        assert_clean_failure(result, "temperature")


def test_malformed_jsonl_line(tiny_models, tmp_path):
    target, drafter = tiny_models
    questions = tmp_path / "question.jsonl"
    questions.write_text('{"question_id": 1, "category": "x", "turns": ["hi"]}\n{"question_id": 2, "turns": \n')
    result = invoke("bench", "--target", target, "--drafter", drafter, "--prompts", questions)
    assert_clean_failure(result, "question.jsonl:2", "not valid JSON")
    questions.write_text('{"question_id": 1, "category": "x", "prompt": "hi"}\n')
    result = invoke("bench", "--target", target, "--drafter", drafter, "--prompts", questions)
    assert_clean_failure(result, "question.jsonl:1", "turns")
