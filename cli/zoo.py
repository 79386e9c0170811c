"""`specdiff zoo ...`: what is shipped, and how to rebuild it."""

from __future__ import annotations

from pathlib import Path

import click

from specdiff import zoo
from specdiff.zoo.packaged import cache_root


@click.group("zoo")
def zoo_group():
    """The embedded default models.

    \b
    Example:
      specdiff zoo list
    """


@zoo_group.command("list")
def zoo_list():
    """List the zoo: source, licence, size and dtype of every model.

    \b
    Example:
      specdiff zoo list
    """
    click.echo(f"{'name':<28} {'params':>12} {'size MB':>8} {'stored as':<12} {'licence':<12} source")
    for name in zoo.PACKAGED:
        card = zoo.card(name)
        if card["converted"]:
            size, params = f"{card['size_bytes'] / 2**20:.0f}", f"{card['parameters']:,}"
            status = f"converted in {card['converted']}"
        else:
            size, params = "-", "-"
            status = f"not converted yet (first use converts it; needs `{card['install']}`)"
        click.echo(f"{name:<28} {params:>12} {size:>8} {card['stored_dtype']:<12} {card['licence']:<12} {card['source']}")
        click.echo(f"{'':<28} default target; {status}")
    for name in zoo.shipped():
        card = zoo.card(name)
        size = sum(f.stat().st_size for f in (zoo.SHIPPED_DIR / name).iterdir()) / 2**20  # as stored
        trained = f", for {zoo.trained_for(name)}" if zoo.trained_for(name) != zoo.STDLIB_TARGET else ""
        loss = f"held-out loss {card['heldout_loss']:.3f}, " if card.get("heldout_loss") is not None else ""
        click.echo(f"{name:<28} {card.get('parameters', 0):>12,} {size:>8.1f} {card['stored_dtype']:<12} "
                   f"{'specdiff':<12} {card['source']}{trained}; {loss}{card.get('steps', '?')} steps")


@zoo_group.command("build")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=cache_root() / "zoo-build",
              show_default=True, help="Checkpoints and caches; an interrupted build resumes from here.")
def zoo_build(work_dir):
    """Reproduce every shipped model, in dependency order (hours on a 2-core CPU).

    \b
    Example:
      specdiff zoo build --work-dir /tmp/zoo
    """
    from specdiff.training.recipes import RECIPES, run_recipe
    for recipe in RECIPES.values():
        result = run_recipe(recipe, work_dir)
        if result.interrupted:
            raise SystemExit(130)
    from specdiff.training.diffusion_recipe import ship_corpus_ngram

    click.echo(f"corpus 3-gram: {ship_corpus_ngram(work_dir)}", err=True)
