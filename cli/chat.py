"""`specdiff chat`: an interactive session that streams text as the target accepts drafted tokens."""

from __future__ import annotations

from pathlib import Path

import click

from specdiff.cli.common import (build_specdiff, decoding_config, decoding_options, generate_options, load_models,
                                 method_option, model_options, resolve_method)
from specdiff.conversation import Conversation, ConversationFileError, max_prompt_tokens, read_messages
from specdiff.metrics import GenerationStats

HELP = ("/stats totals so far · /save PATH the conversation as JSON · /reset new conversation · /exit quit · "
        "Ctrl-C stops a reply · Ctrl-D quits")


class ChatSession:
    """One conversation with one SpecDiff: the running token list lives in `conversation`, so each
    turn extends the last and the target's KV cache is reused between turns."""

    def __init__(self, spec, conversation: Conversation, max_new_tokens: int, options: dict):
        self.spec, self.conversation = spec, conversation
        self.max_new_tokens, self.options = max_new_tokens, options
        self.total = GenerationStats()
        self.replies = 0

    def reply(self, text: str) -> GenerationStats:
        """Stream the answer to `text` to stdout; Ctrl-C stops it early and keeps what was accepted."""
        previous = self.spec.last_stats
        prompt_ids = self.conversation.prompt_ids(text)
        if self.conversation.dropped_tokens:
            click.echo(f"(context: dropped the oldest {self.conversation.dropped_tokens} tokens)", err=True)
        stopped = False
        try:
            for piece in self.spec.stream(prompt_ids, self.max_new_tokens, **self.options):
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            stopped = True
            click.echo(" [stopped]", nl=False)
        committed = self.spec.verifier.committed
        extends = committed[: len(prompt_ids)] == prompt_ids
        self.conversation.add_reply(prompt_ids, committed[len(prompt_ids):] if extends else [])
        if stopped:  # a forward may have been cut in the middle: start both caches afresh next turn
            self.drop_caches()
        stats = self.spec.last_stats if self.spec.last_stats is not previous else GenerationStats()  # stopped early
        self.total = self.total.merge(stats)
        self.replies += 1
        return stats

    def drop_caches(self) -> None:
        self.spec.verifier.reset()
        self.spec.drafter.reset()

    def reset(self) -> None:
        self.conversation.reset()
        self.drop_caches()
        self.total, self.replies = GenerationStats(), 0


def summary_line(stats: GenerationStats) -> str:
    return f"[tau {stats.tau:.2f} · {stats.tokens_per_second:.1f} tokens/s · {stats.new_tokens} tokens]"


def run_command(session: ChatSession, command: str) -> bool:
    """Handle a /command; False means quit."""
    if command in ("/exit", "/quit"):
        return False
    if command == "/save" or command.startswith("/save "):
        target = command[len("/save"):].strip()
        if not target:
            click.echo("usage: /save PATH (the messages as JSON; `specdiff chat --load PATH` continues them)")
            return True
        try:
            session.conversation.save(Path(target).expanduser())
        except OSError as error:
            click.echo(f"could not save: {error}")
        else:
            click.echo(f"(saved {len(session.conversation.messages)} messages to {target})")
    elif command == "/stats":
        if session.replies:
            click.echo(f"{session.replies} replies, {len(session.conversation.token_ids)} tokens of context")
            click.echo(session.total.table())
        else:
            click.echo("no replies yet")
    elif command == "/reset":
        session.reset()
        click.echo("(new conversation)")
    else:
        click.echo(f"unknown command {command!r}; {HELP}")
    return True


@click.command("chat")
@model_options
@method_option
@decoding_options
@click.option("--raw", is_flag=True, help="Plain continuation even when the tokenizer has a chat template.")
@click.option("--system-prompt", default=None, help="The system message that opens the conversation.")
@click.option("--load", "load_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Continue a conversation saved with /save (JSON: {\"messages\": [{\"role\", \"content\"}]}).")
def chat_command(raw, system_prompt, load_path, **params):
    """Chat with a model; text streams as drafted tokens are accepted.

    Shows tau and tokens/s after each reply. Each turn extends the conversation, so the target's KV
    cache is reused. The tokenizer's chat template is used when it has one; otherwise every turn is
    appended to the text so far (code completion with the zoo models).

    \b
    Examples:
      specdiff chat
      specdiff chat --system-prompt "You are a terse assistant." --dtype bf16
      specdiff chat --load saved.json
      specdiff chat --target ./my-model --drafter ./my-drafter --method ar-tree --max-new-tokens 256
    """
    messages = None
    if load_path is not None:
        try:
            messages = read_messages(load_path)
        except ConversationFileError as error:
            raise click.BadParameter(str(error), param_hint="--load") from None
    resolve_method(params)
    models = load_models(params, [params["method"]])
    config = decoding_config(models.target, params)
    spec = build_specdiff(models, params)
    try:
        conversation = Conversation(models.tokenizer, max_prompt_tokens(models.target, config.max_new_tokens),
                                    use_chat_template=not raw, system_prompt=system_prompt)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--system-prompt") from None
    if messages is not None:
        conversation.load_messages(messages)
    session = ChatSession(spec, conversation, config.max_new_tokens, generate_options(models, config))
    style = "chat template" if conversation.templated else "plain continuation"
    dtype = str(models.target.dtype).removeprefix("torch.")
    exact = "token-identical to generate" if dtype == "float32" else "not token-identical: a multi-row forward rounds differently"
    click.echo(f"specdiff chat · target {models.target_name} ({dtype}, {exact}) · method {params['method']}"
               + "".join(f" · drafter {name}" for name in models.drafter_names.values()) + f" · {style}")
    if messages is not None:
        click.echo(f"(continuing {len(messages)} messages from {load_path})")
    click.echo(HELP)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo("\n(/exit or Ctrl-D quits)")
            continue
        if not line.strip():
            continue
        if line.strip().startswith("/"):
            if not run_command(session, line.strip()):
                return
            continue
        try:
            stats = session.reply(line)
        except KeyboardInterrupt:  # landed before streaming began
            session.drop_caches()
            click.echo(" [stopped]")
            continue
        except ValueError as error:  # a boundary check of SpecDiff.generate
            click.echo(f"\nerror: {error}", err=True)
            continue
        click.echo()
        click.secho(summary_line(stats), dim=True)
