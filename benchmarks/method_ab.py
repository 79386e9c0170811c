"""Paired A/B of SpecDiff methods on the real target: every arm decodes every prompt in turn, the order
reversed on every other prompt (ABBA), in one process. Prints tokens/s, speedup against `hf-generate` when
it is an arm (and how many replies differ from it: 0 in fp32), tau and drafted tokens a step per arm, per
category, and for a method whose drafter measures its shape (`lookup`) each arm's rate against the default
chain on the same steps.

An arm is a method name, `hf-generate` (HF greedy), `METHOD@DIR` (the method with the drafter in DIR instead of
the zoo's: an old and a new drafter side by side), or `METHOD:trusting`: the method with its size chooser
(`MeasuredSize`) trusting the drafter's probabilities as drafted instead of calibrating them per node
(`trees.Reliability`), the chooser before the eighth session; or `METHOD:torch-rows`: the drafter's
one-row forwards on torch's kernel instead of oneDNN's packed one (before the twelfth session); or
`METHOD:compiled`: the method with the target's verify forwards through torch.compile (`SpecDiff(compile=True)`;
its first forward compiles, in a warm-up this script runs before timing). `hf-generate:compiled` is HF greedy with
the model's forward through torch.compile (Inductor with freezing, dynamic shapes; a second copy of the target, so
the other arms' model stays eager): the baseline a user who compiles `generate` would measure against.

    OMP_NUM_THREADS=1 python benchmarks/method_ab.py DTYPE PER_CATEGORY NEW_TOKENS ARM[,ARM...]
    e.g. OMP_NUM_THREADS=1 python benchmarks/method_ab.py float32 2 128 lookup,lookup-chain
         OMP_NUM_THREADS=1 python benchmarks/method_ab.py float32 4 128 \\
             hf-generate,heads-lookup:trusting,heads-lookup,eagle-tree-lookup:trusting,eagle-tree-lookup
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from specdiff import methods, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation
from specdiff.packed import PackedLinears
from specdiff.trees import Reliability

dtype, per, new_tokens, arms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
model, tokenizer = zoo.load("smollm2-135m-instruct", dtype=dtype)
questions = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
prompts = load_prompts(questions, categories=("translation", "summarization", "qa", "math_reasoning", "rag"),
                       per_category=per)


def build(arm: str):
    """The arm's SpecDiff with the method's drafter for this target (the zoo's, as `specdiff bench` picks it,
    or the directory after `@`)."""
    arm, _, directory = arm.partition("@")
    name, _, variant = arm.partition(":")
    method = methods.get(name)
    drafter = None
    if method.default_drafter is not None:
        drafter = method.load_drafter(directory or zoo.drafter_for("smollm2-135m-instruct", method.default_drafter),
                                      model.dtype, "cpu")
    spec = methods.build(name, model, tokenizer, drafter, methods.MethodOptions(compile=variant == "compiled"))
    if variant == "trusting":
        spec.tree_builder.reliability = Reliability.trusting()
    elif variant == "torch-rows":
        unpack_one_row(spec.drafter)
    elif variant and variant != "compiled":
        raise SystemExit(f"unknown arm variant {variant!r} in {arm!r}: the variants are METHOD:trusting, "
                         "METHOD:torch-rows and METHOD:compiled")
    return spec


def unpack_one_row(drafter) -> None:
    """The drafter's one-row forwards back on torch's kernel (before the twelfth session: packed from 2 rows)."""
    while drafter is not None:  # a wrapper (HybridDrafter, DrawnDrafter) holds the model's drafter
        if getattr(drafter, "lm", None) is not None:
            drafter.lm.pack_one_row = False
        if isinstance(getattr(drafter, "packed", None), PackedLinears):
            drafter.packed = None
        drafter = getattr(drafter, "model_drafter", None) or getattr(drafter, "drafter", None)


def hf_greedy(ids: list[int], max_new_tokens: int):
    output = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    reply = output[0, len(ids):].tolist()
    return reply, len(reply), 0  # reply, target forwards, drafted tokens


HF_ARMS = ("hf-generate", "hf-generate:compiled")
specs = {arm: build(arm) for arm in arms if arm not in HF_ARMS}
compiled_model = None
if "hf-generate:compiled" in arms:
    compiled_model, _ = zoo.load("smollm2-135m-instruct", dtype=dtype)
    compiled_model.forward = torch.compile(compiled_model.forward, dynamic=True)


def hf_compiled_greedy(ids: list[int], max_new_tokens: int):
    # freezing: weights as constants Inductor packs for oneDNN (specdiff.compiled); it needs inference mode
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        output = compiled_model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    reply = output[0, len(ids):].tolist()
    return reply, len(reply), 0


def decode(arm: str, ids: list[int], max_new_tokens: int):
    if arm == "hf-generate":
        return hf_greedy(ids, max_new_tokens)
    if arm == "hf-generate:compiled":
        return hf_compiled_greedy(ids, max_new_tokens)
    result = specs[arm].generate(ids, max_new_tokens)
    return result.token_ids, result.stats.target_forwards, result.stats.drafted_tokens


totals = defaultdict(lambda: [0.0, 0, 0, 0])  # arm or (category, arm) -> seconds, tokens, forwards, drafted
first = Conversation(tokenizer).prompt_ids(prompts[0].turns[0])
for arm in arms:
    decode(arm, first, 32)  # warm-up
differing = 0
for i, prompt in enumerate(prompts):
    ids = Conversation(tokenizer).prompt_ids(prompt.turns[0])
    replies = {}
    for arm in arms if i % 2 == 0 else arms[::-1]:
        started = time.perf_counter()
        replies[arm], forwards, drafted = decode(arm, ids, new_tokens)
        seconds = time.perf_counter() - started
        for key in (arm, (prompt.category, arm)):
            for j, value in enumerate((seconds, len(replies[arm]), forwards, drafted)):
                totals[key][j] += value
    if "hf-generate" in replies:
        differing += sum(reply != replies["hf-generate"] for reply in replies.values())
if "hf-generate" in arms:
    print(f"replies differing from hf-generate: {differing}")


def speed(key) -> str:
    seconds, tokens, forwards, drafted = totals[key]
    base = totals["hf-generate" if isinstance(key, str) else (key[0], "hf-generate")]
    ratio = f" {tokens / seconds / (base[1] / base[0]):.2f}x" if base[0] else ""
    return f"{tokens / seconds:.2f} tokens/s{ratio}, tau {tokens / forwards:.3f}, drafted/step {drafted / forwards:.2f}"


for arm in arms:
    print(f"{dtype} {arm}: {speed(arm)} ({totals[arm][0]:.1f} s)")
    chooser = getattr(specs[arm].drafter, "shapes", None) if arm in specs else None
    if chooser is not None:
        print(f"  shape chosen {chooser.best()} over {len(chooser.booked)} scored steps; rate / chain's (error):",
              {shape: f"{ratio:.2f} ({error:.2f})" for shape in chooser.arms
               for ratio, error, _ in [chooser.against_default(shape)]})
for category in dict.fromkeys(prompt.category for prompt in prompts):
    print(category, " | ".join(f"{arm} {speed((category, arm))}" for arm in arms if arm not in HF_ARMS))
