"""`specdiff generate`: one prompt in, text on stdout, stats on stderr (or everything as JSON)."""

from __future__ import annotations

import json
import sys

import click

from specdiff.bench import Conversation, max_prompt_tokens
from specdiff.cli.common import (build_specdiff, decoding_config, decoding_options, generate_options, load_models,
                                 method_option, model_options)


def read_prompt(prompt: str | None, file) -> str:
    if prompt is not None and file is not None:
        raise click.UsageError("give the prompt as an argument or with --file, not both")
    if file is not None:
        return file.read()
    if prompt is not None:
        return prompt
    if sys.stdin.isatty():
        raise click.UsageError("no prompt: pass it as an argument, with --file PATH, or on stdin")
    return sys.stdin.read()


@click.command("generate", short_help="Continue one prompt; text on stdout, stats on stderr.")
@click.argument("prompt", required=False)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), default=None,
              help="Read the prompt from this file ('-' for stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print text, token ids and stats as one JSON object.")
@click.option("--raw", is_flag=True, help="Use the prompt as is, without the tokenizer's chat template.")
@model_options
@method_option
@decoding_options
def generate_command(prompt, file, as_json, raw, **params):
    """Continue one prompt with speculative decoding: text on stdout, stats on stderr.

    \b
    Examples:
      specdiff generate "def fibonacci(n):"
      specdiff generate --file prompt.py --method lookup --max-new-tokens 64 --json
      cat prompt.py | specdiff generate --target ./my-model --drafter ./my-drafter
    """
    text = read_prompt(prompt, file)
    if not text:
        raise click.UsageError("the prompt is empty")
    models = load_models(params, [params["method"]])
    config = decoding_config(models.target, params)
    spec = build_specdiff(models, params)
    conversation = Conversation(models.tokenizer, max_prompt_tokens(models.target, config.max_new_tokens),
                                use_chat_template=not raw)
    prompt_ids = conversation.prompt_ids(text)
    if conversation.dropped_tokens:
        click.echo(f"note: the prompt's first {conversation.dropped_tokens} tokens were dropped to fit the "
                   "model's context", err=True)
    try:
        result = spec.generate(prompt_ids, config.max_new_tokens, **generate_options(models, config))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(dict(text=result.text, token_ids=result.token_ids, prompt_tokens=len(prompt_ids),
                                   method=params["method"], target=models.target_name,
                                   drafter=models.drafter_names.get(params["method"]), stats=result.stats.as_dict())))
        return
    click.echo(result.text)
    click.echo(result.stats.table(), err=True)
