"""`specdiff train ...`: train the zoo's models in the shared accelerate loop."""

from __future__ import annotations

from pathlib import Path

import click

from specdiff.zoo.recipes import DEFAULT_WORK_DIR, RECIPES, run_recipe

_work_dir = click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORK_DIR,
                         show_default=True, help="Checkpoints, tokenizer and token caches; runs resume from here.")
_steps = click.option("--steps", type=click.IntRange(min=1), default=None,
                      help="Override the recipe's step count (e.g. a smoke run).")


@click.group("train")
def train_group():
    """Train the zoo's models (resumable; Ctrl-C saves a checkpoint).

    \b
    Example:
      specdiff train target --steps 4500
      specdiff train ar-drafter
    """


def _run(name: str, work_dir: Path, steps: int | None):
    result = run_recipe(RECIPES[name], work_dir, steps)
    if result.interrupted:
        click.echo(f"stopped at step {result.step}; run the same command again to resume", err=True)
        raise SystemExit(130)
    click.echo(f"{name}: {result.step} steps, held-out loss {result.eval_loss:.4f}, "
               f"{result.tokens_seen:,} tokens, {result.train_seconds / 60:.1f} min", err=True)


@train_group.command("target")
@_work_dir
@_steps
def train_target(work_dir, steps):
    """Train the zoo target (a Llama on the stdlib) and export it into the package.

    \b
    Example:
      specdiff train target --work-dir /tmp/zoo
    """
    _run("stdlib-target", work_dir, steps)


@train_group.command("ar-drafter")
@_work_dir
@_steps
def train_ar_drafter(work_dir, steps):
    """Train the zoo's AR drafter, distilled on the shipped target.

    \b
    Example:
      specdiff train ar-drafter --steps 1500
    """
    _run("stdlib-ar-drafter", work_dir, steps)
