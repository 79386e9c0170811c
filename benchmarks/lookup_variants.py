"""Probe behind PromptLookupMethod's min_ngram=2 (issue 13): HF prompt lookup vs SpecDiff's lookup as a
chain / trie backing off to 1-grams or to 2-grams, on Spec-Bench prompts (2 per category, 64 tokens; dtype from argv, default fp32).
Prints cumulative tokens/s after each prompt, then (tokens/s, tau) per variant.

    OMP_NUM_THREADS=1 python benchmarks/lookup_variants.py [float32|bfloat16]
"""
import sys
import time
from pathlib import Path

import torch
from specdiff import zoo, SpecDiff
from specdiff.drafters import PromptLookupDrafter
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation
m, tok = zoo.load("smollm2-135m-instruct", dtype=sys.argv[1] if len(sys.argv) > 1 else "float32")
prompts = load_prompts(str(Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"), categories=("summarization","qa","rag","translation","math_reasoning"), per_category=2)
variants = {"hf": None, "c-min1": dict(ngram=3, k=10, max_branches=1, min_ngram=1), "c-min2": dict(ngram=3, k=10, max_branches=1, min_ngram=2),
            "t-min2": dict(ngram=3, k=10, max_branches=4, min_ngram=2), "t-min1": dict(ngram=3, k=10, max_branches=4, min_ngram=1)}
res = {k: [0, 0.0, 0] for k in variants}
for p in prompts:
    ids = Conversation(tok).prompt_ids(p.turns[0])
    for name, v in variants.items():
        x = torch.tensor([ids])
        t = time.perf_counter()
        if v is None:
            out = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=64, do_sample=False, prompt_lookup_num_tokens=10, max_matching_ngram_size=3)
            n = out.shape[1] - x.shape[1]; f = 0
        else:
            spec = SpecDiff(m, PromptLookupDrafter(**v), tok)
            r = spec.generate(ids, 64); n = len(r.token_ids); f = r.stats.target_forwards
        dt = time.perf_counter() - t
        res[name][0] += n; res[name][1] += dt; res[name][2] += f
    print(p.category, {k: round(v[0] / v[1], 2) for k, v in res.items()}, flush=True)
print({k: (round(v[0] / v[1], 2), round(v[0] / max(1, v[2]), 2)) for k, v in res.items()})
