"""Probe behind the `ar` / `ar-opt-tree` / `eagle` stop rule (OPT-Tree's delta): how many tokens a weak
drafter should draft on the real target. Spec-Bench prompts (2 per single-turn category), greedy,
SmolLM2-135M-Instruct in fp32; HF greedy, HF assisted generation with the same small model (5 tokens, no
confidence cut, and HF's own cut of 0.4), then SpecDiff's AR chain and OPT-Tree at several deltas.
Every SpecDiff row is checked against HF greedy token for token. Prints tokens/s, speedup and tau.

    OMP_NUM_THREADS=1 python benchmarks/draft_threshold.py [--max-new-tokens 64] [--per-category 2]

`--heads auto,full` compares the small LM's reduced draft head (its draft_vocab.json) with its whole head.
`--dflash NAME|DIR` adds a DFlash drafter's chain (`Chain(threshold)`: cut before the first position with
probability <= the delta) and its OPT-Tree (delta = OPT-Tree's threshold); `--no-ar --no-eagle
--no-assisted` leaves only those and HF greedy.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from specdiff import SpecDiff, zoo
from specdiff.bench import assistant_settings, load_prompts
from specdiff.conversation import Conversation
from specdiff.drafters import AutoregressiveDrafter, EagleDrafter, TargetDiffusionDrafter
from specdiff.trees import Chain, OptTree

CATEGORIES = ("translation", "summarization", "qa", "math_reasoning", "rag")


def tree_specs(ctx, param, text: str) -> list[tuple[int, int, int]]:
    """--eagle-trees: "16/4/6,32/8/8" -> [(nodes, top_k, depth), ...]."""
    try:
        trees = [tuple(int(n) for n in spec.split("/")) for spec in text.split(",")]
        if all(len(tree) == 3 and min(tree) >= 1 for tree in trees):
            return trees
    except ValueError:
        pass
    raise click.BadParameter(f"need NODES/TOP_K/DEPTH, each >= 1 (e.g. 16/4/6,32/8/8), got {text!r}")


@click.command()
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--per-category", default=2, show_default=True)
@click.option("--deltas", default="none,0.2,0.4,0.6", show_default=True, help="comma-separated; none = no cut")
@click.option("--ar/--no-ar", default=True, show_default=True, help="the small LM's chain and tree")
@click.option("--assisted/--no-assisted", "with_assisted", default=True, show_default=True,
              help="HF assisted generation with the small LM (confidence cut 0 and 0.4)")
@click.option("--eagle/--no-eagle", default=True, show_default=True, help="also the EAGLE drafter's chain and tree")
@click.option("--dflash", default=None, help="also this DFlash drafter's chain and OPT-Tree (zoo name or directory)")
@click.option("--heads", default="auto", show_default=True,
              help="comma-separated LM heads of the small LM's drafts: auto (its draft_vocab.json, 8192 tokens), "
                   "full (all 49152)")
@click.option("--eagle-trees", "trees", default="16/4/6", show_default=True, callback=tree_specs,
              help="comma-separated EAGLE trees, each NODES/TOP_K/DEPTH (OPT-Tree budget, beam width, depth)")
def main(max_new_tokens, per_category, deltas, ar, with_assisted, eagle, dflash, heads, trees):
    target, tokenizer = zoo.load("smollm2-135m-instruct", dtype="float32")
    small, _ = zoo.load("smollm2-135m-instruct-small", dtype="float32")
    eagle_model = EagleDrafter.from_pretrained(zoo.path("smollm2-135m-instruct-eagle"), target).eagle if eagle else None
    dflash_dir = None if dflash is None else (dflash if Path(dflash).exists() else zoo.path(dflash))
    data = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
    prompts = [Conversation(tokenizer).prompt_ids(p.turns[0])
               for p in load_prompts(str(data), categories=CATEGORIES, per_category=per_category)]
    cuts = [None if d == "none" else float(d) for d in deltas.split(",")]

    def hf(**options):
        def run(ids):
            x = torch.tensor([ids])
            return target.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                   do_sample=False, **options)[0, len(ids):].tolist(), None
        return run

    def assisted(threshold):
        def run(ids):
            with assistant_settings(small, 5):
                small.generation_config.assistant_confidence_threshold = threshold
                return hf(assistant_model=small)(ids)
        return run

    def spec(make_drafter, tree):
        decoder = SpecDiff(target, make_drafter(), tokenizer, tree=tree)

        def run(ids):
            result = decoder.generate(ids, max_new_tokens)
            return result.token_ids, result.stats.target_forwards
        return run

    runs = {"hf-generate": hf()}
    if with_assisted:
        runs.update({"hf-assisted": assisted(0.0), "hf-assisted-conf0.4": assisted(0.4)})
    for cut in cuts:
        for head in heads.split(",") if ar else ():
            vocab = {"auto": "auto", "full": None}[head]
            label = "" if heads == "auto" else f" [{head} head]"
            runs[f"ar d={cut}{label}"] = spec(
                lambda cut=cut, vocab=vocab: AutoregressiveDrafter(small, k=5, tree_threshold=cut, draft_vocab=vocab),
                Chain())
            runs[f"ar-opt-tree d={cut}{label}"] = spec(
                lambda cut=cut, vocab=vocab: AutoregressiveDrafter(small, k=6, top_k=4, tree_threshold=cut,
                                                                   draft_vocab=vocab),
                OptTree(node_budget=16, max_depth=6))
        if eagle_model is not None:
            runs[f"eagle d={cut}"] = spec(lambda cut=cut: EagleDrafter(eagle_model, target, k=5, tree_threshold=cut),
                                          Chain())
            for nodes, top_k, depth in trees:
                label = "" if len(trees) == 1 and (nodes, top_k, depth) == (16, 4, 6) else f" {nodes}/{top_k}/{depth}"
                runs[f"eagle-tree d={cut}{label}"] = spec(
                    lambda cut=cut, top_k=top_k, depth=depth: EagleDrafter(eagle_model, target, k=depth, top_k=top_k,
                                                                           tree_threshold=cut),
                    OptTree(node_budget=nodes, max_depth=depth))
        if dflash_dir is not None:
            runs[f"dflash d={cut}"] = spec(lambda: TargetDiffusionDrafter.from_pretrained(dflash_dir, target),
                                           Chain(cut or 0.0))
            runs[f"dflash-opt-tree d={cut}"] = spec(lambda: TargetDiffusionDrafter.from_pretrained(dflash_dir, target),
                                                    OptTree(node_budget=16, max_depth=15, threshold=cut or 0.0))
    for run in runs.values():
        run(prompts[0])  # warm-up, untimed
    totals = {name: [0, 0.0, 0, True] for name in runs}  # tokens, seconds, target forwards, equal to greedy
    for number, ids in enumerate(prompts, 1):
        reference = None
        for name, run in runs.items():
            started = time.perf_counter()
            tokens, forwards = run(ids)
            total = totals[name]
            total[1] += time.perf_counter() - started
            reference = tokens if reference is None else reference  # hf-generate runs first
            total[0] += len(tokens); total[2] += forwards or len(tokens); total[3] &= tokens == reference
        click.echo(f"prompt {number}/{len(prompts)} done", err=True)
    base = totals["hf-generate"][0] / totals["hf-generate"][1]
    click.echo(f"| method | tokens/s | speedup vs hf-generate | tau | equal to greedy |\n|---|---|---|---|---|")
    for name, (tokens, seconds, forwards, equal) in totals.items():
        tau = "–" if name.startswith("hf") else f"{tokens / forwards:.2f}"
        click.echo(f"| {name} | {tokens / seconds:.2f} | {tokens / seconds / base:.2f}x | {tau} | "
                   f"{'yes' if equal else 'NO'} |")


if __name__ == "__main__":
    main()
