"""Probes behind PromptLookupMethod's settings: HF prompt lookup vs SpecDiff lookup variants on
Spec-Bench's 5 single-turn categories, PER prompts each, 64 new tokens, greedy; every variant decodes
every prompt in turn (same run). Prints tokens/s, tau and drafted rows per step per variant.

    OMP_NUM_THREADS=1 python benchmarks/lookup_variants.py DTYPE [PER] [backoff|branch-depth]

backoff (issue 13's min_ngram): chain / trie backing off to 1-grams or to 2-grams.
branch-depth (the default): a chain, and a trie of 4 matches whose alternatives (all but the most
recent match) are cut to `branch_depth` tokens; min_ngram by the dtype, as PromptLookupMethod.backoff.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from specdiff import SpecDiff, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation
from specdiff.drafters import PromptLookupDrafter

dtype = sys.argv[1] if len(sys.argv) > 1 else "float32"
per = int(sys.argv[2]) if len(sys.argv) > 2 else 2
probe = sys.argv[3] if len(sys.argv) > 3 else "branch-depth"
model, tokenizer = zoo.load("smollm2-135m-instruct", dtype=dtype)
min_ngram = 2 if dtype == "float32" else 1  # PromptLookupMethod.backoff
questions = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
prompts = load_prompts(questions, categories=("translation", "summarization", "qa", "math_reasoning", "rag"),
                       per_category=per)
PROBES = {
    "backoff": {"c-min1": dict(max_branches=1, min_ngram=1), "c-min2": dict(max_branches=1, min_ngram=2),
                "t-min2": dict(max_branches=4, min_ngram=2), "t-min1": dict(max_branches=4, min_ngram=1)},
    "branch-depth": {"chain": dict(max_branches=1), "trie": dict(max_branches=4),
                     "trie-bd5": dict(max_branches=4, branch_depth=5), "trie-bd3": dict(max_branches=4, branch_depth=3),
                     "trie-bd2": dict(max_branches=4, branch_depth=2)},
}
variants = {"hf-lookup": None, **PROBES[probe]}
totals = {name: dict(tokens=0, seconds=0.0, forwards=0, rows=0, steps=0) for name in variants}
greedy = {}
for prompt in prompts:
    ids = Conversation(tokenizer).prompt_ids(prompt.turns[0])
    x = torch.tensor([ids])
    for name, options in variants.items():
        started = time.perf_counter()
        if options is None:
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=64, do_sample=False,
                                 prompt_lookup_num_tokens=10, max_matching_ngram_size=3)
            tokens, forwards, rows, steps = out[0, len(ids):].tolist(), 0, 0, 0
        else:
            drafter = PromptLookupDrafter(**{"ngram": 3, "k": 10, "min_ngram": min_ngram, **options})
            result = SpecDiff(model, drafter, tokenizer).generate(ids, 64)
            tokens, forwards = result.token_ids, result.stats.target_forwards
            rows, steps = result.stats.drafted_tokens, len(result.stats.accepted_lengths)
        total = totals[name]
        total["seconds"] += time.perf_counter() - started
        total["tokens"] += len(tokens)
        total["forwards"] += forwards
        total["rows"] += rows
        total["steps"] += steps
        greedy.setdefault(prompt.question_id, tokens)
        if tokens != greedy[prompt.question_id]:
            print(f"  {name} differs from hf-lookup on {prompt.question_id}")
    print(prompt.category, {n: round(t["tokens"] / t["seconds"], 2) for n, t in totals.items()}, flush=True)
base = totals["hf-lookup"]["tokens"] / totals["hf-lookup"]["seconds"]
print(f"| variant | tokens/s | vs hf-lookup | tau | drafted rows per step |  ({dtype}, {len(prompts)} prompts, 64 tokens)")
for name, t in totals.items():
    speed = t["tokens"] / t["seconds"]
    tau = t["tokens"] / t["forwards"] if t["forwards"] else float("nan")
    rows = t["rows"] / t["steps"] if t["steps"] else float("nan")
    print(f"| {name} | {speed:.2f} | {speed / base:.3f}x | {tau:.2f} | {rows:.1f} |")
