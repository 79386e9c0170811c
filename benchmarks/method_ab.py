"""Paired A/B of SpecDiff methods on the real target: every method decodes every prompt in turn, the order
reversed on every other prompt (ABBA), in one process. Prints tokens/s and tau per method and, for a method
whose drafter measures its shape (`lookup`), each arm's rate against the default chain on the same steps.

    OMP_NUM_THREADS=1 python benchmarks/method_ab.py DTYPE PER_CATEGORY NEW_TOKENS METHOD[,METHOD...]
    e.g. OMP_NUM_THREADS=1 python benchmarks/method_ab.py float32 2 128 lookup,lookup-chain
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from specdiff import methods, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation

dtype, per, new_tokens, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
model, tokenizer = zoo.load("smollm2-135m-instruct", dtype=dtype)
questions = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
prompts = load_prompts(questions, categories=("translation", "summarization", "qa", "math_reasoning", "rag"),
                       per_category=per)
def drafter(name: str):
    """The method's drafter for this target (the zoo's, as `specdiff bench` picks it), or None."""
    method = methods.get(name)
    if method.default_drafter is None:
        return None
    return method.load_drafter(zoo.drafter_for("smollm2-135m-instruct", method.default_drafter), model.dtype, "cpu")


specs = {name: methods.build(name, model, tokenizer, drafter(name)) for name in names}
totals = {name: [0.0, 0, 0] for name in names}  # seconds, tokens, target forwards
first = Conversation(tokenizer).prompt_ids(prompts[0].turns[0])
for spec in specs.values():
    spec.generate(first, 32)  # warm-up
for i, prompt in enumerate(prompts):
    ids = Conversation(tokenizer).prompt_ids(prompt.turns[0])
    for name in names if i % 2 == 0 else names[::-1]:
        started = time.perf_counter()
        result = specs[name].generate(ids, new_tokens)
        totals[name][0] += time.perf_counter() - started
        totals[name][1] += len(result.token_ids)
        totals[name][2] += result.stats.target_forwards
for name in names:
    seconds, tokens, forwards = totals[name]
    print(f"{dtype} {name}: {tokens / seconds:.2f} tokens/s, tau {tokens / forwards:.3f} ({seconds:.1f} s)")
    chooser = getattr(specs[name].drafter, "shapes", None)
    if chooser is not None:
        print(f"  shape chosen {chooser.best()} over {len(chooser.booked)} scored steps; rate / chain's (error):",
              {arm: f"{ratio:.2f} ({error:.2f})" for arm in chooser.arms
               for ratio, error, _ in [chooser.against_default(arm)]})
