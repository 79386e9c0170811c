"""The zoo's TiDAR model: stdlib-target's weights, trained further with TiDAR's doubled-sequence
objective so that the one model drafts (mask blocks) and verifies (causal rows) in one forward."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from specdiff.training.cards import machine_label, write_card
from specdiff.training.data import WindowSampler
from specdiff.training.diffusion import heldout_block_accuracy
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps
from specdiff.training.tidar import TiDARObjective, TiDARRecipe
from specdiff.zoo.quality import quality_report
from specdiff.training.stdlib import SHIPPED_DIR, build_tokenizer, heldout_ce, save_shipped, token_streams

HELDOUT_SEED = 12345


def run_tidar_recipe(recipe: TiDARRecipe, work_dir: Path, steps: int | None = None,
                     out_root: Path = SHIPPED_DIR) -> TrainResult:
    """Train `recipe` in `work_dir/<name>` (resuming), then export it with its card to `out_root/<name>`."""
    from specdiff import zoo

    torch.manual_seed(recipe.train.seed)
    tokenizer = build_tokenizer(work_dir)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"the tokenizer in {work_dir / 'tokenizer'} has no mask token; rebuild it "
                         "(specdiff.training.tokenizer adds <|mask|>)")
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    train_stream, heldout_stream = token_streams(work_dir, tokenizer)
    sampler = WindowSampler(train_stream, config.seq_len, config.batch_size, config.seed)
    heldout = WindowSampler(heldout_stream, config.seq_len, config.batch_size, seed=HELDOUT_SEED)
    eval_batches = heldout.fixed_batches(config.eval_batches)
    model = LlamaForCausalLM.from_pretrained(zoo.path(recipe.init_from), dtype=torch.float32)
    model.config.mask_token_id = tokenizer.mask_token_id
    model.config.tidar_block_size = recipe.block_size
    objective = TiDARObjective(tokenizer.mask_token_id, recipe.block_sizes, recipe.alpha, seed=config.seed)
    result = train(model, objective, sampler.batch, eval_batches, config, work_dir / recipe.name,
                   desc=f"training {recipe.name}")
    if not result.interrupted:
        export_tidar(recipe, model, tokenizer, result, eval_batches, config, out_root)
    return result


def export_tidar(recipe: TiDARRecipe, model, tokenizer, result: TrainResult, eval_batches, config: TrainConfig,
                 out_root: Path = SHIPPED_DIR) -> Path:
    """Save the model and a card comparing its AR mode with the model it started from."""
    from specdiff import zoo

    start, _ = zoo.load(recipe.init_from)
    start.eval()
    model.eval()
    start_loss = heldout_ce(start, eval_batches)
    # The clean half is causal, so L_AR here is the plain next-token loss on the same batches.
    measure = TiDARObjective(tokenizer.mask_token_id, (recipe.block_size,), seed=0)
    with torch.no_grad():
        pairs = [measure.losses(model, batch) for batch in eval_batches]
    ar = sum(a.item() for a, _ in pairs) / len(pairs)
    diff = sum(d.item() for _, d in pairs) / len(pairs)
    drafting = heldout_block_accuracy(model, eval_batches, tokenizer.mask_token_id, recipe.block_size)
    out = save_shipped(model, tokenizer, out_root / recipe.name)
    shipped = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    card = {
        "name": recipe.name,
        "description": recipe.description,
        "kind": "TiDAR: one LlamaForCausalLM that verifies causally and drafts a block of masks in the same forward",
        "parameters": sum(p.numel() for p in model.parameters()),
        "init_from": recipe.init_from,
        "mask_token_id": tokenizer.mask_token_id,
        "block_size": recipe.block_size,
        "block_sizes_trained": list(recipe.block_sizes),
        "alpha": recipe.alpha,
        "data": "Python stdlib .py files (train split), doubled sequences [clean | all masks]",
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "heldout_loss": round(ar, 4),
        "heldout_loss_init": round(start_loss, 4),
        "heldout_objective": {"ar": round(ar, 4), "diff": round(diff, 4)},
        "one_step_drafting": drafting,
        "quality": quality_report(shipped, tokenizer),
        "quality_init": zoo.card(recipe.init_from).get("quality", {}),
        "generation_config": {"repetition_penalty": shipped.generation_config.repetition_penalty},
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "machine": machine_label(),
        "command": recipe.command,
        "role": "target",
    }
    write_card(out, card, _card_markdown(card))
    return out


def _card_markdown(card: dict) -> str:
    drafting = card["one_step_drafting"]
    accuracy = ", ".join(f"{a:.2f}" for a in drafting["accuracy_by_position"])
    quality, init_quality = card["quality"], card["quality_init"]
    return f"""# {card['name']}

{card['description']}

| | |
|---|---|
| kind | {card['kind']} |
| parameters | {card['parameters']:,} |
| started from | {card['init_from']} (same architecture, weights copied) |
| mask token id | {card['mask_token_id']} |
| training | {card['data']}; blocks of {card['block_sizes_trained']} per row, alpha {card['alpha']} |
| steps | {card['steps']} (batch {card['train_config']['batch_size']} x {card['train_config']['seq_len']} tokens, doubled) |
| held-out next-token loss (AR mode) | {card['heldout_loss']} (the starting model: {card['heldout_loss_init']}) |
| held-out objective, block {card['block_size']} | AR {card['heldout_objective']['ar']}, diffusion {card['heldout_objective']['diff']} |
| one-step top-1 accuracy by block position (block {drafting['block']}) | {accuracy} |
| distinct-bigram ratio, greedy with generation_config {card['generation_config']}, {quality['max_new_tokens']} tokens, {quality['prompts']} held-out prompts | {quality['distinct_bigram_ratio']} (the starting model: {init_quality.get('distinct_bigram_ratio', '-')}; gate {quality['quality_gate']}: {'pass' if quality['passes_gate'] else 'FAIL'}) |
| training time | {card['train_seconds'] / 60:.1f} min on {card['machine']} |
| reproduce | `{card['command']}` |

Use it as its own drafter (weights are fp16 on disk, loaded as fp32). Greedy output equals
`model.generate(do_sample=False)`: the drafts are checked by the model's own causal rows.

```python
from specdiff import SpecDiff, zoo
from specdiff.drafters import TiDARDrafter
model, tokenizer = zoo.load("{card['name']}")
spec = SpecDiff(model, TiDARDrafter(model), tokenizer=tokenizer)
```
"""
