"""Drafters for the real target side by side on the same held-out blocks: the DFlash, EAGLE and heads
drafters given (directories or zoo names; a commit's shipped one: `git show REV:PATH > DIR/FILE` first), each
scored as its training scores it (DFlash: `heldout_acceptance` over random anchor blocks; EAGLE:
`chain_acceptance` of a chain of 5; heads: each head's top-1 over random reply positions), on the held-out
split of a distillation data set, with the batches its recipe draws (HELDOUT_SEED). A held-out set changes
when the data grow, so numbers from two cards are comparable only here. `--kind` keeps the held-out records
of some prompt sources only (e.g. the kinds a data part added).

    OMP_NUM_THREADS=1 python benchmarks/heldout_compare.py --data datasets/smollm2-135m-instruct \
        --dflash OLD_DIR --dflash smollm2-135m-instruct-dflash --eagle OLD_DIR --eagle smollm2-135m-instruct-eagle \
        --heads OLD_DIR --heads smollm2-135m-instruct-heads
"""

from __future__ import annotations

import click
import numpy as np
import torch

from specdiff import zoo
from specdiff.drafters import DFlashModel, EagleModel
from specdiff.drafters.heads import MedusaHeads
from specdiff.training.distill import DistillDataset
from specdiff.training.dflash import AnchorSampler, heldout_acceptance
from specdiff.training.eagle import FeatureSampler, chain_acceptance
from specdiff.training.features import TeacherFeatures
from specdiff.training.heads import HELDOUT_SEED, FeatureHeadsObjective, PositionSampler
from specdiff.vocab import read_draft_vocab

TARGET = "smollm2-135m-instruct"


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--dflash", "dflash_dirs", multiple=True, help="a DFlash drafter (directory or zoo name)")
@click.option("--eagle", "eagle_dirs", multiple=True, help="an EAGLE drafter (directory or zoo name)")
@click.option("--heads", "heads_dirs", multiple=True, help="Medusa / Hydra heads (directory or zoo name)")
@click.option("--kind", "kinds", multiple=True, help="only held-out records of these prompt sources (e.g. passage)")
@click.option("--batches", default=8, show_default=True, help="held-out batches of 8 (the recipes' eval_batches)")
@click.option("--teacher-dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="the target's dtype for the features: the recipes' (bfloat16, their cache), or float32, what "
                   "the drafters read when the target decodes in fp32")
def main(data, dflash_dirs, eagle_dirs, heads_dirs, kinds, batches, teacher_dtype):
    target, _ = zoo.load(TARGET, dtype=torch.float32)
    teacher = target if teacher_dtype == "float32" else zoo.load(TARGET, dtype=torch.bfloat16)[0]
    layers = (2, 15, 27, target.config.num_hidden_layers)
    heldout = TeacherFeatures.build(teacher, data, layers, "heldout")
    if kinds:
        heldout = records_of_kinds(heldout, DistillDataset(data, "heldout"), kinds)
        click.echo(f"{len(heldout)} held-out records of kinds {', '.join(kinds)}")
    for spec in dflash_dirs:
        model = DFlashModel.from_pretrained(zoo.directory(spec)).attach(target)
        blocks = AnchorSampler(heldout, model.config.layers, 384, 8, 16, HELDOUT_SEED).fixed_batches(batches)
        result = heldout_acceptance(model, blocks, read_draft_vocab(zoo.directory(spec)))
        click.echo(f"dflash {spec}: tau {result['tau']} over {result['blocks']} blocks; top-1 by position "
                   f"{[round(x, 3) for x in result['accuracy_by_position'][:6]]}")
    for spec in eagle_dirs:
        model = EagleModel.from_pretrained(zoo.directory(spec)).attach(target)
        windows = FeatureSampler(heldout, model.config.feature_layers, 384, 8, HELDOUT_SEED).fixed_batches(batches)
        result = chain_acceptance(model, windows, 5)
        click.echo(f"eagle {spec}: tau {result['tau_estimate']}; acceptance by position "
                   f"{[round(x, 3) for x in result['acceptance']]}")
    for spec in heads_dirs:
        heads = MedusaHeads.from_pretrained(zoo.directory(spec)).attach(target)
        positions = PositionSampler(heldout, layers[-1], heads.num_heads, 2048, HELDOUT_SEED).fixed_batches(batches)
        result = FeatureHeadsObjective(read_draft_vocab(zoo.directory(spec))).accuracy(heads, positions)
        click.echo(f"heads {spec}: top-1 by head {[round(x, 3) for x in result['top1']]} over "
                   f"{result['labels_per_head']:,} labels a head")


def records_of_kinds(features: TeacherFeatures, records: DistillDataset, kinds) -> TeacherFeatures:
    """The features of the records whose prompt source is one of `kinds` (same order; a copy in memory)."""
    keep = [i for i in range(len(features)) if records[i].meta["kind"] in kinds]
    if not keep:
        raise click.UsageError(f"no held-out records of kinds {kinds}")
    lengths = np.array([features.offsets[i + 1] - features.offsets[i] for i in keep])
    rows = np.concatenate([np.arange(features.offsets[i], features.offsets[i + 1]) for i in keep])
    return TeacherFeatures(features.directory, features.layers, np.concatenate([[0], np.cumsum(lengths)]),
                           features.prompt_lengths[keep], features.token_ids[rows], np.asarray(features.states[rows]))


if __name__ == "__main__":
    main()
