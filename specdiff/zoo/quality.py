"""The zoo's quality gate (DESIGN.md §6): greedy continuations of held-out prompts must not loop."""

from __future__ import annotations

import torch

from specdiff.zoo.corpus import distinct_bigram_ratio, heldout_prompts

QUALITY_GATE = 0.5  # distinct-bigram ratio over 128 greedy tokens; real code ~0.88, a looping model ~0.05


@torch.inference_mode()
def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int = 128) -> list[list[int]]:
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False)
        outputs.append(out[0, ids.shape[1]:].tolist())
    return outputs


def pooled_distinct_bigram_ratio(outputs: list[list[int]]) -> float:
    """Length-weighted mean of per-output distinct-bigram ratios, so an output that ends at once
    (EOS after one token, ratio 1.0) does not hide the loops of the others."""
    bigrams = [max(0, len(ids) - 1) for ids in outputs]
    distinct = [distinct_bigram_ratio(ids) * n for ids, n in zip(outputs, bigrams)]
    return sum(distinct) / sum(bigrams) if sum(bigrams) else 1.0


def quality_report(model, tokenizer, num_prompts: int = 8, max_new_tokens: int = 128, seed: int = 1) -> dict:
    """Mean distinct-bigram ratio of greedy continuations (with the model's generation_config), and samples."""
    prompts = heldout_prompts(num_prompts, seed=seed)
    outputs = greedy_continuations(model, tokenizer, prompts, max_new_tokens)
    ratio = pooled_distinct_bigram_ratio(outputs)
    return {
        "distinct_bigram_ratio": round(ratio, 4),
        "quality_gate": QUALITY_GATE,
        "passes_gate": ratio >= QUALITY_GATE,
        "prompts": num_prompts,
        "max_new_tokens": max_new_tokens,
        "samples": [{"prompt": p[-300:], "completion": tokenizer.decode(o)} for p, o in zip(prompts[:3], outputs[:3])],
    }
