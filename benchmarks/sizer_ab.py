"""Paired A/B of the size chooser's calibration on the real target: each method twice, its `MeasuredSize`
trusting the drafter's probabilities as drafted ("trusting": one calibration factor for the whole tree, as
before the seventh session's follow-up) or calibrating them node by node (`trees.Reliability`, the default),
and HF greedy; every prompt in turn, the order reversed on every other prompt (ABBA), one process. Greedy
fp32: prints how many replies differ from HF greedy (must be 0), then tokens/s, speedup, tau and drafted
tokens a step per arm, and per category.

    OMP_NUM_THREADS=1 python benchmarks/sizer_ab.py heads-lookup,eagle-tree-lookup 4
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from specdiff import methods, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation
from specdiff.trees import Reliability

names, per, new_tokens = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 128
model, tokenizer = zoo.load("smollm2-135m-instruct", dtype="float32")
questions = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
prompts = load_prompts(questions, categories=("translation", "summarization", "qa", "math_reasoning", "rag"),
                       per_category=per)
arms = {}
for name in names:
    method = methods.get(name)
    for arm in ("trusting", "calibrated"):
        drafter = method.load_drafter(zoo.drafter_for("smollm2-135m-instruct", method.default_drafter), model.dtype,
                                      "cpu")
        spec = methods.build(name, model, tokenizer, drafter)
        if arm == "trusting":
            spec.tree_builder.reliability = Reliability(strength=1e12)  # every cell's ratio stays 1
        arms[f"{name}/{arm}"] = spec
order = ["hf-generate", *arms]
totals = defaultdict(lambda: [0.0, 0, 0, 0])  # (arm) or (category, arm) -> seconds, tokens, forwards, drafted
first = Conversation(tokenizer).prompt_ids(prompts[0].turns[0])
for spec in arms.values():
    spec.generate(first, 32)  # warm-up
model.generate(torch.tensor([first]), max_new_tokens=32, do_sample=False)
differing = 0
for i, prompt in enumerate(prompts):
    ids = Conversation(tokenizer).prompt_ids(prompt.turns[0])
    replies = {}
    for name in order if i % 2 == 0 else order[::-1]:
        started = time.perf_counter()
        if name == "hf-generate":
            output = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False)
            reply = output[0, len(ids):].tolist()
            forwards, drafted = len(reply), 0
        else:
            result = arms[name].generate(ids, new_tokens)
            reply, forwards, drafted = result.token_ids, result.stats.target_forwards, result.stats.drafted_tokens
        seconds = time.perf_counter() - started
        for key in (name, (prompt.category, name)):
            for j, value in enumerate((seconds, len(reply), forwards, drafted)):
                totals[key][j] += value
        replies[name] = reply
    differing += sum(replies[name] != replies["hf-generate"] for name in arms)
print(f"replies differing from HF greedy: {differing}")
base = totals["hf-generate"][1] / totals["hf-generate"][0]
for name in order:
    seconds, tokens, forwards, drafted = totals[name]
    print(f"{name:32s} {tokens / seconds:6.2f} tokens/s {tokens / seconds / base:5.2f}x  tau {tokens / forwards:.3f}  "
          f"drafted/step {drafted / forwards:.2f}")
for category in dict.fromkeys(prompt.category for prompt in prompts):
    hf = totals[category, "hf-generate"]
    print(category, "  ".join(f"{name} {t[1] / t[0] / (hf[1] / hf[0]):.2f}x ({t[1] / t[2]:.2f})"
                              for name in arms for t in [totals[category, name]]))
