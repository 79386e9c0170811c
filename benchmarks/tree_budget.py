"""tau and tokens/s versus node budget: the AR drafter's chain against OPT-Tree, on held-out prompts.

    python benchmarks/tree_budget.py                          # the zoo target and AR drafter
    python benchmarks/tree_budget.py --target DIR --drafter DIR --prompts 4 --budgets 4 8

At budget b the chain drafts b tokens (b sequential drafter forwards); OPT-Tree verifies b nodes,
grown by a beam of width b for at most --max-depth layers (one batched drafter forward per layer,
stopped early by --threshold). Both verify b draft tokens plus the committed one in one target
forward, so each pair of rows costs the same to verify. The verify-cost table times one target
forward over b + 1 tokens against a 1-token forward: where it grows faster than tau, larger trees
stop paying. Writes tree_budget.md, tree_budget.json and tree_budget.png to --out.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from matplotlib.figure import Figure
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdiff import SpecDiff, zoo
from specdiff.drafters import AutoregressiveDrafter, DiffusionDrafter
from specdiff.ngram import NGramModel
from specdiff.trees import CausalConsistencySearch
from specdiff.metrics import GenerationStats
from specdiff.trees import Chain, OptTree
from specdiff.types import DraftTree
from specdiff.verifiers.hf import HFVerifier


def model_dir(name_or_path: str) -> Path:
    """A model directory as given, or a zoo model's by name."""
    return Path(name_or_path) if Path(name_or_path).exists() else zoo.path(name_or_path)


def load_model(name_or_path: str):
    return AutoModelForCausalLM.from_pretrained(model_dir(name_or_path), dtype=torch.float32).eval()


@dataclass
class Row:
    method: str
    budget: int
    stats: GenerationStats
    bigram_ratio: float
    lossless: bool  # every output equal to HF greedy

    def as_dict(self, baseline_tps: float) -> dict:
        steps = max(1, self.stats.target_forwards)
        return {
            "method": self.method, "budget": self.budget, "tau": round(self.stats.tau, 3),
            "tokens_per_s": round(self.stats.tokens_per_second, 2),
            "speedup": round(self.stats.tokens_per_second / baseline_tps, 3),
            "nodes_per_step": round(self.stats.drafted_tokens / steps, 2),
            "drafter_forwards_per_step": round(self.stats.drafter_forwards / steps, 2),
            "distinct_bigrams": round(self.bigram_ratio, 3), "equal_to_generate": self.lossless,
        }


def hf_greedy(model, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], float]:
    """Reference outputs and tokens/s of plain `model.generate` greedy."""
    outputs, new_tokens, started = [], 0, time.perf_counter()
    for ids in prompts:
        input_ids = torch.tensor([ids])
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                             do_sample=False)
        outputs.append(out[0, len(ids):].tolist())
        new_tokens += len(outputs[-1])
    return outputs, new_tokens / (time.perf_counter() - started)


def lattice_decoder(method: str, budget: int, target, drafter_model, tokenizer, options) -> SpecDiff:
    """Diffusion lattice (one drafter forward of `max_depth` masks): CPS's single chain, cut at the
    budget, or the lattice OPT-Tree of `budget` nodes."""
    depth = options["max_depth"]
    drafter = DiffusionDrafter(drafter_model, k=depth, tokenizer=tokenizer)
    if method == "cps-chain":
        tree = CausalConsistencySearch(NGramModel.load(zoo.ngram_path()), eos_token_ids=drafter.eos_token_ids)
        return SpecDiff(target, drafter, tokenizer, tree=tree, draft_length=min(budget, depth))
    return SpecDiff(target, drafter, tokenizer, tree=OptTree(node_budget=budget, max_depth=depth), draft_length=depth)


def run_method(method: str, budget: int, target, drafter_model, tokenizer, prompts, references, options) -> Row:
    if options["lattice"]:
        decoder = lattice_decoder(method, budget, target, drafter_model, tokenizer, options)
    elif method == "chain":
        drafter = AutoregressiveDrafter(drafter_model, k=budget, tokenizer=tokenizer)
        decoder = SpecDiff(target, drafter, tokenizer, tree=Chain(), draft_length=budget)
    else:
        depth = options["max_depth"]
        drafter = AutoregressiveDrafter(drafter_model, k=depth, top_k=budget, tokenizer=tokenizer,
                                        tree_threshold=options["threshold"])
        tree = OptTree(node_budget=budget, threshold=options["threshold"], max_depth=depth)
        decoder = SpecDiff(target, drafter, tokenizer, tree=tree, draft_length=depth)
    total, outputs = GenerationStats(), []
    for ids in prompts:
        result = decoder.generate(ids, max_new_tokens=options["max_new_tokens"])
        total, outputs = total.merge(result.stats), outputs + [result.token_ids]
    ratio = statistics.mean(zoo.distinct_bigram_ratio(out) for out in outputs)
    return Row(method, budget, total, ratio, outputs == references)


def verify_cost(target, prompt: list[int], budgets: list[int], repeats: int = 5) -> dict[int, float]:
    """Median time of one target forward over a chain of b draft tokens (+ the committed one),
    relative to a forward with no draft."""
    verifier = HFVerifier(target)
    prompt = prompt[:256]  # the context grows by one token per timed forward
    verifier.prefill(prompt)
    seconds = {}
    for budget in [0] + budgets:
        tree = DraftTree.chain(torch.tensor(prompt[:budget] + [prompt[0]] * max(0, budget - len(prompt))))
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            verifier.score(tree)
            times.append(time.perf_counter() - started)
            verifier.commit([], prompt[-1])
        seconds[budget] = statistics.median(times)
    return {b: seconds[b] / seconds[0] for b in budgets}


def markdown(rows: list[dict], cost: dict[int, float], header: dict) -> str:
    columns = list(rows[0])
    lines = [f"# tau and tokens/s vs node budget ({header['target']} + {header['drafter']})", "",
             f"{header['prompts']} held-out prompts (seed {header['seed']}), {header['max_new_tokens']} new tokens, "
             f"greedy; HF greedy {header['hf_tokens_per_s']:.1f} tokens/s (speedup 1.00), distinct bigrams "
             f"{header['hf_bigrams']:.3f}. OPT-Tree: beam = budget, threshold {header['threshold']}, "
             f"max depth {header['max_depth']}.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    lines += ["", "Verify cost: one target forward over budget + 1 tokens / a 1-token forward.", "",
              "| budget | " + " | ".join(str(b) for b in cost) + " |", "|---|" + "---|" * len(cost),
              "| cost | " + " | ".join(f"{c:.2f}" for c in cost.values()) + " |", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    figure = Figure(figsize=(10, 4))
    for axes, key, label in zip(figure.subplots(1, 2), ("tau", "speedup"), ("tau (tokens / target forward)",
                                                                           "speedup vs HF greedy")):
        for method in dict.fromkeys(row["method"] for row in rows):
            points = [(row["budget"], row[key]) for row in rows if row["method"] == method]
            axes.plot(*zip(*points), marker="o", label=method)
        axes.set_xscale("log", base=2)
        axes.set_xlabel("node budget (draft tokens verified per step)")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")


@click.command()
@click.option("--target", default="stdlib-target", show_default=True, help="zoo name or model directory")
@click.option("--drafter", default="stdlib-ar-drafter", show_default=True, help="zoo name or model directory")
@click.option("--tokenizer", default=None, help="tokenizer directory (default: the target's)")
@click.option("--prompts", "num_prompts", default=20, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--max-new-tokens", default=128, show_default=True)
@click.option("--budgets", default="4,8,16,32,64", show_default=True, help="comma-separated node budgets")
@click.option("--threshold", default=0.2, show_default=True, help="OPT-Tree's delta")
@click.option("--max-depth", default=10, show_default=True, help="OPT-Tree's depth limit")
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's)")
@click.option("--lattice", is_flag=True, help="--drafter is a diffusion drafter: CPS chain vs lattice OPT-Tree "
                                               "(drafts max-depth positions in one forward)")
@click.option("--out", default="benchmarks/results/tree_budget", show_default=True, type=click.Path())
def main(target, drafter, tokenizer, num_prompts, seed, max_new_tokens, budgets, threshold, max_depth, threads, lattice,
         out):
    if threads:
        torch.set_num_threads(threads)
    budgets = [int(b) for b in budgets.split(",")]
    target_model, drafter_model = load_model(target), load_model(drafter)
    target_tokenizer = AutoTokenizer.from_pretrained(tokenizer or model_dir(target))
    prompts = [target_tokenizer(text)["input_ids"] for text in zoo.heldout_prompts(num_prompts, seed)]
    references, hf_tps = hf_greedy(target_model, prompts, max_new_tokens)
    options = dict(max_new_tokens=max_new_tokens, threshold=threshold, max_depth=max_depth, lattice=lattice)
    rows = []
    for budget in budgets:
        for method in ("cps-chain", "opt-tree") if lattice else ("chain", "opt-tree"):
            row = run_method(method, budget, target_model, drafter_model, target_tokenizer, prompts, references, options)
            rows.append(row.as_dict(hf_tps))
            click.echo(json.dumps(rows[-1]))
    cost = verify_cost(target_model, prompts[0], budgets)
    header = dict(target=target, drafter=drafter, prompts=num_prompts, seed=seed, max_new_tokens=max_new_tokens,
                  hf_tokens_per_s=hf_tps, threshold=threshold, max_depth=max_depth,
                  hf_bigrams=statistics.mean(zoo.distinct_bigram_ratio(r) for r in references))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tree_budget.md").write_text(markdown(rows, cost, header))
    (out / "tree_budget.json").write_text(json.dumps(dict(header=header, rows=rows, verify_cost=cost), indent=1))
    plot(rows, out / "tree_budget.png")
    click.echo(markdown(rows, cost, header))


if __name__ == "__main__":
    main()
