"""`specdiff`: chat, generate, bench, train and zoo commands."""

from __future__ import annotations

import click

from specdiff.cli.train import train_group
from specdiff.cli.zoo import zoo_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="specdiff")
def cli():
    """SpecDiff: lossless speculative decoding for Hugging Face causal LMs.

    \b
    Example:
      specdiff zoo list
    """


cli.add_command(train_group)
cli.add_command(zoo_group)
