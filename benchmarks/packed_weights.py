"""Probe behind `specdiff.packed.PackedLinears`: first the target's forward time by row count with torch's
linear and with oneDNN-prepacked weights; then each method with packed weights ("packed", the default in
fp32 on a CPU) and without ("torch"), in the same run, on Spec-Bench prompts (PER per single-turn
category), greedy, on SmolLM2-135M-Instruct with its zoo drafters; HF greedy first. Every row is checked
against HF greedy token for token (meaningful in fp32).

    OMP_NUM_THREADS=1 python benchmarks/packed_weights.py [--per-category 2] [--max-new-tokens 128]
        [--methods lookup,eagle,eagle-tree,eagle-lookup,eagle-tree-lookup]
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from row_padding import compare_arms, engines
from specdiff import methods, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation
from specdiff.kv import CachedLM

CATEGORIES = ("translation", "summarization", "qa", "math_reasoning", "rag")
TARGET = "smollm2-135m-instruct"


def drafter_for(name: str):
    """The method's zoo drafter for SmolLM2 in fp32 (None: it drafts without one)."""
    method = methods.get(name)
    if method.default_drafter is None:
        return None
    drafter = zoo.drafter_for(TARGET, method.default_drafter)  # the one trained for SmolLM2
    if hasattr(method, "load_drafter"):
        return method.load_drafter(drafter, torch.float32, "cpu")
    return zoo.load(drafter, dtype="float32")[0]


@torch.inference_mode()
def forward_times(target, context: int = 300, repeats: int = 8, rows=(1, 2, 3, 4, 8, 16, 32)) -> dict:
    """ms per forward of Q rows after a `context`-token prefix, per engine (packed or not)."""
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(100, 40000, (context,), generator=generator).tolist()
    times = {}
    for packed in (False, True):
        lm = CachedLM(target, packed_weights=packed)
        lm.forward(prefix)
        for Q in rows:
            ids = torch.randint(100, 40000, (Q,), generator=generator).tolist()
            visible = torch.ones(Q, Q, dtype=torch.bool).tril()
            positions = torch.arange(context, context + Q)
            seconds = []
            for _ in range(repeats + 1):
                started = time.perf_counter()
                lm.forward(ids, positions, visible)
                seconds.append(time.perf_counter() - started)
                lm.drop(Q)
            times[(packed, Q)] = 1000 * sorted(seconds[1:])[repeats // 2]
    return times


@click.command()
@click.option("--per-category", default=2, show_default=True)
@click.option("--max-new-tokens", default=128, show_default=True)
@click.option("--methods", "names", default="lookup,eagle,eagle-tree,eagle-lookup,eagle-tree-lookup",
              show_default=True)
def main(per_category, max_new_tokens, names):
    target, tokenizer = zoo.load(TARGET, dtype="float32")
    times = forward_times(target)
    rows = sorted({Q for _, Q in times})
    click.echo("| target forward (ms) | " + " | ".join(f"{Q} rows" for Q in rows) + " |\n|---|"
               + "---|" * len(rows))
    for packed in (False, True):
        click.echo(f"| {'packed' if packed else 'torch'} | "
                   + " | ".join(f"{times[(packed, Q)]:.0f}" for Q in rows) + " |")
    data = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
    prompts = [Conversation(tokenizer).prompt_ids(p.turns[0])
               for p in load_prompts(str(data), categories=CATEGORIES, per_category=per_category)]
    runs = {}
    for name in names.split(","):
        drafter = drafter_for(name)
        for packed in (True, False):
            spec = methods.build(name, target, tokenizer, drafter)
            for lm in engines(spec):
                if not packed:
                    lm.packed = None
            runs[f"{name} {'packed' if packed else 'torch'}"] = spec

    click.echo()
    compare_arms(target, runs, prompts, max_new_tokens, "float32")

if __name__ == "__main__":
    main()
