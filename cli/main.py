"""`specdiff`: chat, generate, bench, train and zoo commands."""

from __future__ import annotations

import click

from specdiff.cli.bench import bench_command
from specdiff.cli.chat import chat_command
from specdiff.cli.generate import generate_command
from specdiff.cli.train import train_group
from specdiff.cli.zoo import zoo_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="specdiff")
def cli():
    """SpecDiff: lossless speculative decoding for Hugging Face causal LMs.

    \b
    Examples:
      specdiff chat
      specdiff generate "def fibonacci(n):"
      specdiff bench --num-prompts 20
      specdiff zoo list
    """


cli.add_command(chat_command)
cli.add_command(generate_command)
cli.add_command(bench_command)
cli.add_command(train_group)
cli.add_command(zoo_group)
