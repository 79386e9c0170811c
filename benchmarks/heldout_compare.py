"""Drafters for the real target side by side on the same held-out blocks: the DFlash and EAGLE drafters
given (directories or zoo names; a commit's shipped one: `git show REV:PATH > DIR/FILE` first), each scored
as its training scores it (DFlash: `heldout_acceptance` over random anchor blocks; EAGLE: `chain_acceptance`
of a chain of 5), on the held-out split of a distillation data set, with the batches its recipe draws
(HELDOUT_SEED). A held-out set changes when the data grow, so tau from two cards is comparable only here.

    OMP_NUM_THREADS=1 python benchmarks/heldout_compare.py --data datasets/smollm2-135m-instruct \
        --dflash OLD_DIR --dflash smollm2-135m-instruct-dflash --eagle OLD_DIR --eagle smollm2-135m-instruct-eagle
"""

from __future__ import annotations

import click
import torch

from specdiff import zoo
from specdiff.drafters import DFlashModel, EagleModel
from specdiff.training.dflash import AnchorSampler, heldout_acceptance
from specdiff.training.eagle import FeatureSampler, chain_acceptance
from specdiff.training.features import TeacherFeatures
from specdiff.training.heads import HELDOUT_SEED
from specdiff.vocab import read_draft_vocab

TARGET = "smollm2-135m-instruct"


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--dflash", "dflash_dirs", multiple=True, help="a DFlash drafter (directory or zoo name)")
@click.option("--eagle", "eagle_dirs", multiple=True, help="an EAGLE drafter (directory or zoo name)")
@click.option("--batches", default=8, show_default=True, help="held-out batches of 8 (the recipes' eval_batches)")
@click.option("--teacher-dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="the target's dtype for the features: the recipes' (bfloat16, their cache), or float32, what "
                   "the drafters read when the target decodes in fp32")
def main(data, dflash_dirs, eagle_dirs, batches, teacher_dtype):
    target, _ = zoo.load(TARGET, dtype=torch.float32)
    teacher = target if teacher_dtype == "float32" else zoo.load(TARGET, dtype=torch.bfloat16)[0]
    layers = (2, 15, 27, target.config.num_hidden_layers)
    heldout = TeacherFeatures.build(teacher, data, layers, "heldout")
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


if __name__ == "__main__":
    main()
