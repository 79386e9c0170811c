"""`specdiff generate`: one prompt in, text on stdout, stats on stderr (or everything as JSON)."""

from __future__ import annotations

import json
import sys

import click

from specdiff.cli.common import (build_specdiff, decoding_config, decoding_options, generate_options, load_models,
                                 method_option, model_options, resolve_method)


def read_prompt(prompt: str | None, file) -> str:
    if prompt is not None and file is not None:
        raise click.UsageError("give the prompt as an argument or with --file, not both")
    if file is not None:
        text = file.read()
    elif prompt is not None:
        text = prompt
    elif sys.stdin.isatty():
        raise click.UsageError("no prompt: pass it as an argument, with --file PATH, or on stdin")
    else:
        text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("the prompt is empty" + (" (only whitespace)" if text else "")
                               + "; give some text to answer or continue")
    return text


@click.command("generate", short_help="Answer one prompt; text on stdout, stats on stderr.")
@click.argument("prompt", required=False)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), default=None,
              help="Read the prompt from this file ('-' for stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print text, token ids and stats as one JSON object.")
@click.option("--raw", is_flag=True, help="Use the prompt as is, without the tokenizer's chat template.")
@click.option("--system-prompt", default=None, help="A system message before the prompt (chat template only).")
@model_options
@method_option
@decoding_options
def generate_command(prompt, file, as_json, raw, system_prompt, **params):
    """Answer one prompt with speculative decoding: text on stdout, stats on stderr.

    The prompt goes through the tokenizer's chat template when it has one (--raw: as is).

    \b
    Examples:
      specdiff generate "Explain what a hash table is."
      specdiff generate --file question.txt --method lookup --max-new-tokens 64 --json
      specdiff generate --dtype bf16 "Summarize: ..."
      cat prompt.py | specdiff generate --target stdlib-target --raw
    """
    from specdiff.conversation import Conversation, max_prompt_tokens

    text = read_prompt(prompt, file)
    resolve_method(params)
    models = load_models(params, [params["method"]])
    config = decoding_config(models.target, params)
    spec = build_specdiff(models, params)
    try:
        conversation = Conversation(models.tokenizer, max_prompt_tokens(models.target, config.max_new_tokens),
                                    use_chat_template=not raw, system_prompt=system_prompt)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--system-prompt") from None
    prompt_ids = conversation.prompt_ids(text)
    if conversation.dropped_tokens:
        click.echo(f"note: the prompt's first {conversation.dropped_tokens} tokens were dropped to fit the "
                   "model's context", err=True)
    options = generate_options(models, config)
    try:
        if as_json:
            result = spec.generate(prompt_ids, config.max_new_tokens, **options)
        else:  # stream: the first words show as soon as they are accepted
            for piece in spec.stream(prompt_ids, config.max_new_tokens, **options):
                click.echo(piece, nl=False)
            click.echo()
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(dict(text=result.text, token_ids=result.token_ids, prompt_tokens=len(prompt_ids),
                                   method=params["method"], target=models.target_name,
                                   dtype=str(models.target.dtype).removeprefix("torch."),
                                   drafter=models.drafter_names.get(params["method"]), stats=result.stats.as_dict())))
        return
    click.echo(spec.last_stats.table(), err=True)
