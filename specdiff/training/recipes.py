"""How each shipped zoo model is made: architecture, training schedule, and export.

`specdiff zoo build` runs these in order; each step resumes from its checkpoint in the work dir.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from specdiff.training.cards import machine_label, write_card
from specdiff.training.data import WindowSampler
from specdiff.training.diffusion import DiffusionStage
from specdiff.training.diffusion_recipe import run_diffusion_recipe
from specdiff.training.heads import HeadsRecipe, run_heads_recipe
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps
from specdiff.training.objectives import CausalLMObjective, DistillationObjective
from specdiff.training.stdlib import (DEFAULT_WORK_DIR, SHIPPED_DIR, LlamaShape, Recipe, build_tokenizer, heldout_ce,
                                      save_shipped, token_streams)
from specdiff.training.tidar import TiDARRecipe
from specdiff.training.tidar_recipe import run_tidar_recipe
from specdiff.zoo.quality import quality_report

__all__ = ["RECIPES", "run_recipe", "DEFAULT_WORK_DIR", "SHIPPED_DIR", "Recipe", "LlamaShape"]


RECIPES = {
    "stdlib-target": Recipe(
        name="stdlib-target",
        description="Code-completion target: a Llama trained on the Python standard library.",
        shape=LlamaShape(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=704),
        train=TrainConfig(steps=3600, batch_size=8, seq_len=256, lr=1.5e-3, warmup_steps=200,
                          eval_every=250, save_every=100, seed=0),
        command="specdiff train target",
        # Measured at step 1300: plain greedy loops (distinct-bigram 0.1) while a penalty of 1.3 gives
        # 0.8-1.0; SpecDiff applies it per tree node, so the speculative output stays exact.
        generation=dict(repetition_penalty=1.3),
    ),
    "stdlib-ar-drafter": Recipe(
        name="stdlib-ar-drafter",
        description="Autoregressive drafter for stdlib-target (same tokenizer), trained on the same corpus.",
        role="drafter",
        shape=LlamaShape(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=352),
        # Corpus cross-entropy, not distillation: the 2-core CPU budget trains it beside the target
        # rather than after it. DistillationObjective (teacher="stdlib-target", kl_weight=0.5) is the
        # drop-in for a machine with time to spare.
        train=TrainConfig(steps=1500, batch_size=8, seq_len=256, lr=2e-3, warmup_steps=100,
                          eval_every=250, save_every=100, seed=1),
        command="specdiff train ar-drafter",
    ),
    # Block-diffusion drafter (DESIGN.md §7), DEER's two stages. lr: DEER fine-tunes a pretrained
    # 0.5B dLLM at 1e-4 then 5e-5; this one starts from scratch, so Stage I uses a from-scratch rate.
    "stdlib-dlm-drafter-s1": Recipe(
        name="stdlib-dlm-drafter-s1",
        description="Diffusion drafter for stdlib-target, DEER Stage I (masked diffusion on the stdlib).",
        shape=LlamaShape(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=352),
        train=TrainConfig(steps=2400, batch_size=8, seq_len=256, lr=2e-3, warmup_steps=100,
                          eval_every=250, save_every=100, seed=2),
        command="specdiff train diffusion-drafter --stage 1",
        diffusion=DiffusionStage(stage=1, max_block=16),
    ),
    "stdlib-dlm-drafter": Recipe(
        name="stdlib-dlm-drafter",
        description="Diffusion drafter for stdlib-target, DEER Stage II (aligned on the target's greedy output).",
        shape=LlamaShape(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=352),
        train=TrainConfig(steps=500, batch_size=16, seq_len=128, lr=5e-4, warmup_steps=50,
                          eval_every=100, save_every=100, seed=3),
        teacher="stdlib-target",
        command="specdiff train diffusion-drafter --stage 2",
        diffusion=DiffusionStage(stage=2, max_tail=16, init_from="stdlib-dlm-drafter-s1", prompt_tokens=64,
                                 continuation_tokens=64, examples=2048),
    ),
    # Medusa-1 heads on the frozen target (issue 8), self-distilled on its own greedy continuations.
    "stdlib-heads": HeadsRecipe(
        name="stdlib-heads",
        description="Medusa-style heads for stdlib-target: 4 heads, self-distilled on its greedy continuations.",
        target="stdlib-target",
        train=TrainConfig(steps=1000, batch_size=16, seq_len=128, lr=1e-3, warmup_steps=50, weight_decay=0.0,
                          eval_every=100, save_every=100, seed=4),
        num_heads=4,
        labels="target",
        prompt_tokens=64,
        continuation_tokens=64,
        examples=2048,
        command="specdiff train heads",
    ),
    # TiDAR (issue 9): the target's weights trained further to draft and verify in one forward.
    "stdlib-tidar": TiDARRecipe(
        name="stdlib-tidar",
        description="TiDAR model from stdlib-target: verifies causally and drafts blocks of masks in one forward.",
        init_from="stdlib-target",
        # The shipped model ran 800 steps of this schedule, then was resumed to 1300 (`--steps 1300`:
        # the cosine restarts over the new total); a fresh run does one 1300-step cosine.
        train=TrainConfig(steps=1300, batch_size=16, seq_len=128, lr=5e-4, warmup_steps=50,
                          eval_every=100, save_every=100, seed=5),
        block_sizes=(4, 8),
        block_size=8,
        alpha=1.0,
        command="specdiff train tidar",
    ),
}


def run_recipe(recipe: Recipe, work_dir: Path = DEFAULT_WORK_DIR, steps: int | None = None,
               out_root: Path = SHIPPED_DIR) -> TrainResult:
    """Train one recipe in `work_dir/<name>` (resuming), then export it to `out_root/<name>`
    (default: inside the package, where `specdiff.zoo.load` finds it)."""
    if isinstance(recipe, HeadsRecipe):
        return run_heads_recipe(recipe, work_dir, steps, out_root)
    if isinstance(recipe, TiDARRecipe):
        return run_tidar_recipe(recipe, work_dir, steps, out_root)
    if recipe.diffusion is not None:
        return run_diffusion_recipe(recipe, work_dir, steps, out_root)
    torch.manual_seed(recipe.train.seed)
    tokenizer = build_tokenizer(work_dir)
    train_stream, heldout_stream = token_streams(work_dir, tokenizer)
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    sampler = WindowSampler(train_stream, config.seq_len, config.batch_size, config.seed)
    heldout = WindowSampler(heldout_stream, config.seq_len, config.batch_size, seed=12345)
    model = LlamaForCausalLM(recipe.shape.config(tokenizer))
    if recipe.teacher is not None:
        from specdiff.zoo import load

        teacher, _ = load(recipe.teacher)
        objective = DistillationObjective(teacher, kl_weight=recipe.kl_weight)
    else:
        objective = CausalLMObjective()
    result = train(model, objective, sampler.batch, heldout.fixed_batches(config.eval_batches), config,
                   work_dir / recipe.name, desc=f"training {recipe.name}")
    if not result.interrupted:
        # The card reports plain next-token loss whatever the objective, so models compare.
        heldout_loss = heldout_ce(model, heldout.fixed_batches(config.eval_batches))
        export(recipe, model, tokenizer, result, heldout_loss, config, out_root)
    return result


def export(recipe: Recipe, model, tokenizer, result: TrainResult, heldout_loss: float,
           config: TrainConfig, out_root: Path = SHIPPED_DIR) -> Path:
    model.generation_config.update(**recipe.generation)
    out = save_shipped(model, tokenizer, out_root / recipe.name)
    card = {
        "name": recipe.name,
        "description": recipe.description,
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": asdict(recipe.shape),
        "data": "Python stdlib .py files (train split, ~95% of files by path hash)",
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "heldout_loss": round(heldout_loss, 4),
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "teacher": recipe.teacher,
        "kl_weight": recipe.kl_weight,
        "machine": machine_label(),
        "command": recipe.command,
        "role": recipe.role,
        **recipe.extra_card,
    }
    shipped = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # what users load
    card["quality"] = quality_report(shipped, tokenizer)
    card["generation_config"] = recipe.generation
    if recipe.generation:
        shipped.generation_config.repetition_penalty = 1.0
        card["quality_plain_greedy"] = quality_report(shipped, tokenizer)
    write_card(out, card, model_card_markdown(card))
    return out


def model_card_markdown(card: dict) -> str:
    quality = card["quality"]
    samples = "\n\n".join(
        f"Prompt (end):\n```python\n{s['prompt']}\n```\nGreedy completion:\n```python\n{s['completion']}\n```"
        for s in quality["samples"]
    )
    minutes = card["train_seconds"] / 60
    gate = (f"gate {quality['quality_gate']}: {'pass' if quality['passes_gate'] else 'FAIL'}"
            if card.get("role", "target") == "target" else "informational: the gate applies to targets")
    return f"""# {card['name']}

{card['description']}

| | |
|---|---|
| parameters | {card['parameters']:,} |
| architecture | LlamaForCausalLM {card['architecture']} |
| data | {card['data']} |
| steps | {card['steps']} (batch {card['train_config']['batch_size']} x {card['train_config']['seq_len']} tokens) |
| tokens seen | {card['tokens_seen']:,} |
| held-out loss (next-token CE, nats) | {card['heldout_loss']} |
| shipped generation_config | {card.get('generation_config') or 'defaults'} |
| distinct-bigram ratio, greedy with the shipped generation_config, {quality['max_new_tokens']} tokens, {quality['prompts']} held-out prompts | {quality['distinct_bigram_ratio']} ({gate}) |
| same, plain greedy (no repetition penalty) | {card.get('quality_plain_greedy', quality)['distinct_bigram_ratio']} |
| teacher (distillation) | {card['teacher'] or '-'} (KL weight {card['kl_weight']}) |
| training time | {minutes:.1f} min on {card['machine']} |
| reproduce | `{card['command']}` (or `specdiff zoo build` for everything) |

Weights are stored in fp16 (safetensors); `specdiff.zoo.load("{card['name']}")` casts them to fp32.

## Samples

{samples}
"""
