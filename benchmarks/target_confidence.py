"""How predictable the target's own greedy replies are, benchmark prompts against the distillation data.

A drafter, however trained, accepts less where the target's next token is a close call: at a position
whose top-1 probability is 0.3 the argmax hangs on details a small drafter does not see. This scores the
target's greedy replies (fp32, the first `--tokens` reply tokens) on the Spec-Bench categories and
MT-Bench first turns the benchmarks use, and on held-out greedy replies of the distillation data (by data
part), teacher-forced: the mean top-1 probability, the mean entropy (nats) and the share of positions
whose top-1 probability is at least 0.9.

    OMP_NUM_THREADS=2 python benchmarks/target_confidence.py --data datasets/smollm2-135m-instruct
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from specdiff import bench, zoo
from specdiff.training.distill import DistillDataset, chat_ids

TARGET = "smollm2-135m-instruct"
SPEC_CATEGORIES = ("translation", "summarization", "qa", "math_reasoning", "rag")


@torch.no_grad()
def reply_confidence(model, prompt_ids: list[int], reply_ids: list[int]) -> torch.Tensor:
    """[R, 2]: top-1 probability and entropy of the target at each reply token, teacher-forced."""
    ids = torch.tensor([prompt_ids + reply_ids])
    logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()  # [R, V] the positions that predict the reply
    probs = logits.softmax(-1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return torch.stack([probs.max(-1).values, entropy], dim=1)


@torch.no_grad()
def greedy_reply(model, tokenizer, prompt_ids: list[int], tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=tokens, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    return out[0, len(prompt_ids):].tolist()


def summary(rows: list[torch.Tensor]) -> str:
    scores = torch.cat(rows)
    return (f"{len(rows)} replies, {len(scores):,} tokens: top-1 p {scores[:, 0].mean():.3f}, entropy "
            f"{scores[:, 1].mean():.3f}, p >= 0.9 on {(scores[:, 0] >= 0.9).float().mean():.1%}")


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--shared", default="../shared/data", show_default=True, type=click.Path(exists=True, file_okay=False))
@click.option("--per-category", default=4, show_default=True)
@click.option("--heldout", default=24, show_default=True, help="held-out greedy replies per data part")
@click.option("--tokens", default=128, show_default=True)
def main(data, shared, per_category, heldout, tokens):
    target, tokenizer = zoo.load(TARGET, dtype=torch.float32)
    target.eval()
    spec = bench.load_prompts(Path(shared) / "spec_bench" / "question.jsonl", categories=SPEC_CATEGORIES,
                              per_category=per_category)
    mt = bench.load_prompts(Path(shared) / "mt_bench" / "question.jsonl", num_prompts=10, per_category=2, max_turns=1)
    groups: dict[str, list[torch.Tensor]] = {}
    for name, prompts in (("spec-bench", spec), ("mt-bench", mt)):
        for prompt in prompts:
            ids = chat_ids(tokenizer, prompt.turns[0])
            scores = reply_confidence(target, ids, greedy_reply(target, tokenizer, ids, tokens))
            groups.setdefault(name, []).append(scores)
            if name == "spec-bench":
                groups.setdefault(f"  {prompt.category}", []).append(scores)
    records = DistillDataset(data, "heldout")
    first_new = min((i for i, r in enumerate(records) if r.meta["prompt_index"] >= 4000), default=len(records))
    for name, span in (("heldout part 0", range(first_new)), ("heldout part 1", range(first_new, len(records)))):
        greedy = [records[i] for i in span if records[i].meta["mode"] == "greedy"][:heldout]
        groups[name] = [reply_confidence(target, r.prompt_ids.tolist(), r.response_ids[:tokens].tolist())
                        for r in greedy]
    for name, rows in groups.items():
        if rows:
            click.echo(f"{name}: {summary(rows)}")


if __name__ == "__main__":
    main()
