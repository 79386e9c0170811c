"""Probe behind `kv.RowPadding`: each method with its forwards padded to the cheaper measured row count
("pad", the default on a CPU) and fed as asked ("no pad"), in the same run, on Spec-Bench prompts (PER
per single-turn category), greedy, on SmolLM2-135M-Instruct with its zoo drafters; HF greedy first.
Every row is checked against HF greedy token for token (meaningful in fp32). Also prints the verifier's
measured step time by rows fed, which is what the padding chooses from.

    OMP_NUM_THREADS=1 python benchmarks/row_padding.py [--dtype float32] [--per-category 2]
        [--max-new-tokens 128] [--methods ar,ar-opt-tree,eagle-tree,heads,lookup]
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from specdiff import methods, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation

CATEGORIES = ("translation", "summarization", "qa", "math_reasoning", "rag")
DRAFTERS = {"ar": "smollm2-135m-instruct-small", "heads": "smollm2-135m-instruct-heads",
            "eagle": "smollm2-135m-instruct-eagle"}


def drafter_for(name: str, dtype: str):
    family = name.split("-")[0]
    if family not in DRAFTERS:
        return None
    method = methods.get(name)
    if hasattr(method, "load_drafter"):
        return method.load_drafter(DRAFTERS[family], zoo.torch_dtype(dtype), "cpu")
    return zoo.load(DRAFTERS[family], dtype=dtype)[0]


def engines(spec):
    """The CachedLMs a SpecDiff drives: the verifier's, and its drafter's when it has one."""
    found = [spec.verifier.lm]
    drafter_lm = getattr(spec.drafter, "lm", None)
    return found + ([drafter_lm] if drafter_lm is not None else [])


def compare_arms(target, runs: dict, prompts: list[list[int]], max_new_tokens: int, dtype: str) -> None:
    """Time HF greedy and every arm (name -> SpecDiff) prompt by prompt after one untimed warm-up each;
    print tokens/s, speedup, tau and how many replies equal HF greedy's."""

    def greedy(ids):
        x = torch.tensor([ids])
        return target.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                               do_sample=False)[0, len(ids):].tolist()

    for spec in runs.values():
        spec.generate(prompts[0], max_new_tokens)  # warm-up, untimed (measured sizes' first probes too)
    totals = {name: [0, 0.0, 0, 0] for name in ["hf-generate", *runs]}  # tokens, seconds, forwards, equal
    for number, ids in enumerate(prompts, 1):
        started = time.perf_counter()
        reference = greedy(ids)
        totals["hf-generate"][:2] = [totals["hf-generate"][0] + len(reference),
                                     totals["hf-generate"][1] + time.perf_counter() - started]
        for name, spec in runs.items():
            started = time.perf_counter()
            result = spec.generate(ids, max_new_tokens)
            total = totals[name]
            total[0] += len(result.token_ids)
            total[1] += time.perf_counter() - started
            total[2] += result.stats.target_forwards
            total[3] += result.token_ids == reference
        click.echo(f"prompt {number}/{len(prompts)} done", err=True)
    base = totals["hf-generate"][0] / totals["hf-generate"][1]
    click.echo(f"{dtype}, {len(prompts)} Spec-Bench prompts, {max_new_tokens} tokens, torch threads "
               f"{torch.get_num_threads()}\n")
    click.echo("| method | tokens/s | speedup vs hf-generate | tau | equal to greedy |\n|---|---|---|---|---|")
    for name, (tokens, seconds, forwards, equal) in totals.items():
        tau = f"{tokens / forwards:.2f}" if forwards else "–"
        shown = "–" if name == "hf-generate" else f"{equal}/{len(prompts)}"
        click.echo(f"| {name} | {tokens / seconds:.2f} | {tokens / seconds / base:.2f}x | {tau} | {shown} |")


@click.command()
@click.option("--dtype", default="float32", show_default=True)
@click.option("--per-category", default=2, show_default=True)
@click.option("--max-new-tokens", default=128, show_default=True)
@click.option("--methods", "names", default="ar,ar-opt-tree,eagle-tree,heads,lookup", show_default=True)
def main(dtype, per_category, max_new_tokens, names):
    target, tokenizer = zoo.load("smollm2-135m-instruct", dtype=dtype)
    data = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
    prompts = [Conversation(tokenizer).prompt_ids(p.turns[0])
               for p in load_prompts(str(data), categories=CATEGORIES, per_category=per_category)]
    runs = {}
    for name in names.split(","):
        drafter = drafter_for(name, dtype)
        for padded in (True, False):
            spec = methods.build(name, target, tokenizer, drafter)
            if not padded:
                for lm in engines(spec):
                    lm.row_padding = None
            runs[f"{name} {'pad' if padded else 'no pad'}"] = spec

    compare_arms(target, runs, prompts, max_new_tokens, dtype)
    for name, spec in runs.items():
        padding = spec.verifier.lm.row_padding
        if padding is not None:
            timed = " ".join(f"{rows}:{1000 * padding.seconds[rows]:.0f}ms" for rows in sorted(padding.seconds)
                             if rows <= padding.up_to)
            click.echo(f"\n{name}: verifier step time by rows fed (ms): {timed}")


if __name__ == "__main__":
    main()
