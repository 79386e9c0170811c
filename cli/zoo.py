"""`specdiff zoo ...`: what is shipped, and how to rebuild it."""

from __future__ import annotations

from pathlib import Path

import click

from specdiff import zoo
from specdiff.zoo.recipes import DEFAULT_WORK_DIR, RECIPES, run_recipe


@click.group("zoo")
def zoo_group():
    """The embedded default models.

    \b
    Example:
      specdiff zoo list
    """


@zoo_group.command("list")
def zoo_list():
    """List shipped models with size and held-out loss.

    \b
    Example:
      specdiff zoo list
    """
    names = zoo.available()
    if not names:
        click.echo("no zoo models shipped; `specdiff zoo build` makes them")
        return
    click.echo(f"{'name':<22} {'params':>10} {'size MB':>8} {'held-out loss':>14} {'steps':>7}")
    for name in names:
        card = zoo.card(name)
        size = sum(f.stat().st_size for f in zoo.path(name).iterdir()) / 2**20
        click.echo(f"{name:<22} {card['parameters']:>10,} {size:>8.1f} {card['heldout_loss']:>14.3f} {card['steps']:>7}")


@zoo_group.command("build")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORK_DIR,
              show_default=True, help="Checkpoints and caches; an interrupted build resumes from here.")
def zoo_build(work_dir):
    """Reproduce every shipped model, in dependency order (hours on a 2-core CPU).

    \b
    Example:
      specdiff zoo build --work-dir /tmp/zoo
    """
    for recipe in RECIPES.values():
        result = run_recipe(recipe, work_dir)
        if result.interrupted:
            raise SystemExit(130)
    from specdiff.zoo.diffusion_drafter import ship_corpus_ngram

    click.echo(f"corpus 3-gram: {ship_corpus_ngram(work_dir)}", err=True)
