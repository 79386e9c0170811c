"""`specdiff chat` driven through a pseudo-terminal, as a user would type it."""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys
from pathlib import Path

import pexpect
import pytest

from test_cli import tiny_models  # noqa: F401  (session fixture)

TIMEOUT = 120  # generous: the machine may be busy; no assertion is about time


def spawn_chat(*args):
    script = Path(sys.executable).with_name("specdiff")
    command = str(script) if script.exists() else shutil.which("specdiff")
    if command is None:
        pytest.skip("the specdiff console script is not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", TERM="dumb")
    # A test run started in the background (`pytest &`) inherits SIGINT ignored, and Python then never
    # raises KeyboardInterrupt: give the chat the default disposition a terminal user's shell gives it.
    child = pexpect.spawn(command, ["chat", *map(str, args)], env=env, encoding="utf-8", timeout=TIMEOUT,
                          dimensions=(40, 200), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.logfile_read = io.StringIO()  # the whole transcript, for the no-traceback check
    child.expect(">>> ")
    return child


def turn(child, line, expected):
    """Type `line`, wait for `expected` (a regex), then for the next prompt; returns the match."""
    child.sendline(line)
    child.expect(expected)
    match = child.match
    child.expect(">>> ")
    return match


def exit_chat(child) -> str:
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    transcript = child.logfile_read.getvalue()
    assert "Traceback" not in transcript
    return transcript


def test_two_turns_stats_reset_and_exit(tiny_models):  # noqa: F811
    target, drafter = tiny_models
    child = spawn_chat("--target", target, "--drafter", drafter, "--max-new-tokens", 8)
    reply = r"\[tau \d+\.\d\d · [\d.]+ tokens/s · 8 tokens\]"
    turn(child, "def add(a, b):", reply)
    turn(child, "def sub(a, b):", reply)
    context = int(turn(child, "/stats", r"2 replies, (\d+) tokens of context").group(1))
    assert context >= 2 * 8 + 2 * 4  # both prompts and both replies are in the running context
    turn(child, "/reset", r"\(new conversation\)")
    turn(child, "/stats", "no replies yet")
    transcript = exit_chat(child)
    assert "plain continuation" in transcript  # the tiny tokenizer has no chat template
    assert "new tokens: 16 " in transcript


def long_context_copy(target, directory):
    """The tiny target with 16k positions: a reply long enough (seconds, even on a fast machine) that
    the interrupt always lands mid-reply, however late a busy machine delivers it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(target)
    model.config.max_position_embeddings = 16384
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(target).save_pretrained(directory)
    return directory


def test_ctrl_c_stops_the_reply_not_the_program(tiny_models, tmp_path):  # noqa: F811
    target, drafter = tiny_models
    target = long_context_copy(target, tmp_path / "long-target")
    child = spawn_chat("--target", target, "--drafter", drafter, "--method", "ar", "--max-new-tokens", 16000)
    child.sendline("def add(a, b):")
    child.expect_exact("def add(a, b):\r\n")  # the terminal's echo of the line
    child.expect(r".")  # the first streamed text: the reply is under way
    child.sendintr()
    child.expect(r"\[stopped\]")
    child.expect(r"\[tau \d+\.\d\d")
    child.expect(">>> ")
    turn(child, "/stats", r"1 replies")
    exit_chat(child)


# --- the session behind the terminal -----------------------------------------------------------

def _session(target_dir, drafter_dir, max_new_tokens=6):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdiff import methods
    from specdiff.bench import Conversation
    from specdiff.cli.chat import ChatSession

    target = AutoModelForCausalLM.from_pretrained(target_dir).eval()
    drafter = AutoModelForCausalLM.from_pretrained(drafter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    spec = methods.build("ar", target, tokenizer, drafter)
    return ChatSession(spec, Conversation(tokenizer), max_new_tokens, {})


def test_second_turn_prefills_only_the_new_tokens(tiny_models, capsys):  # noqa: F811
    session = _session(*tiny_models)
    session.reply("def add(a, b):")
    context = list(session.conversation.token_ids)
    fed = []
    hook = session.spec.model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        stats = session.reply("def sub(a, b):")
    finally:
        hook.remove()
    prompt = session.conversation.token_ids[: len(session.conversation.token_ids) - stats.new_tokens]
    assert prompt[: len(context)] == context  # the running list was extended, not rebuilt
    # The cache held context[:-1]; the prefill fed the rest of the prompt but the last token only.
    assert fed[0] == len(prompt) - len(context)
    assert len(session.conversation.messages) == 4
    assert capsys.readouterr().out  # the replies were streamed to stdout


def test_interrupted_reply_keeps_what_was_accepted(tiny_models, capsys):  # noqa: F811
    session = _session(*tiny_models, max_new_tokens=40)
    real_stream = session.spec.stream

    def interrupted_stream(*args, **kwargs):
        pieces = real_stream(*args, **kwargs)
        yield next(pieces)
        raise KeyboardInterrupt

    session.spec.stream = interrupted_stream
    stats = session.reply("def add(a, b):")
    assert "[stopped]" in capsys.readouterr().out
    assert 1 <= stats.new_tokens < 40
    assert session.spec.verifier.cache is None  # both caches start afresh next turn
    session.spec.stream = real_stream
    assert session.reply("def sub(a, b):").new_tokens == 40
