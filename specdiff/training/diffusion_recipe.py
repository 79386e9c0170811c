"""The zoo's diffusion drafter: a block-diffusion LlamaForCausalLM trained with DEER's two stages,
Stage I on the corpus, Stage II on the shipped target's own greedy continuations."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from specdiff.training.cards import machine_label, write_card
from specdiff.ngram import NGramModel
from specdiff.training.data import WindowSampler
from specdiff.training.diffusion import DiffusionStage, RowSampler, greedy_continuations, heldout_block_accuracy
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps
from specdiff.training.stdlib import (DEFAULT_WORK_DIR, SHIPPED_DIR, Recipe, build_tokenizer,
                                  save_shipped, token_streams)

HELDOUT_SEED = 12345


def run_diffusion_recipe(recipe: Recipe, work_dir: Path, steps: int | None = None,
                         out_root: Path = SHIPPED_DIR) -> TrainResult:
    """Train one diffusion-drafter stage in `work_dir/<name>` (resuming), then export it to `out_root/<name>`."""
    from specdiff import zoo

    stage = recipe.diffusion
    if stage.init_from is not None and stage.init_from not in zoo.shipped():  # the wheel ships Stage II only
        raise FileNotFoundError(f"Stage {stage.stage} starts from {stage.init_from!r}, which is not in the zoo; "
                                "train it first: `specdiff train diffusion-drafter --stage 1`")
    torch.manual_seed(recipe.train.seed)
    tokenizer = build_tokenizer(work_dir)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"the tokenizer in {work_dir / 'tokenizer'} has no mask token; rebuild it "
                         "(specdiff.training.tokenizer adds <|mask|>)")
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    sample, eval_batches = _data(recipe, stage, work_dir, tokenizer, config)
    model = _initial_model(recipe, stage, tokenizer)
    objective = stage.objective(tokenizer.mask_token_id, tokenizer.pad_token_id, config.seed)
    result = train(model, objective, sample, eval_batches, config, work_dir / recipe.name,
                   desc=f"training {recipe.name}")
    if not result.interrupted:
        metrics = heldout_block_accuracy(model, eval_batches, tokenizer.mask_token_id, stage.eval_block)
        export_diffusion(recipe, stage, model, tokenizer, result, metrics, config, out_root)
    return result


def _initial_model(recipe: Recipe, stage: DiffusionStage, tokenizer) -> LlamaForCausalLM:
    if stage.init_from is not None:
        from specdiff import zoo

        return LlamaForCausalLM.from_pretrained(zoo.path(stage.init_from), dtype=torch.float32)
    config = recipe.shape.config(tokenizer)
    config.mask_token_id = tokenizer.mask_token_id  # so DiffusionDrafter finds it without a tokenizer
    return LlamaForCausalLM(config)


def _data(recipe: Recipe, stage: DiffusionStage, work_dir: Path, tokenizer, config: TrainConfig):
    """(sample_batch, held-out batches): corpus windows for Stage I, target continuations for Stage II."""
    train_stream, heldout_stream = token_streams(work_dir, tokenizer)
    if stage.stage == 1:
        sampler = WindowSampler(train_stream, config.seq_len, config.batch_size, config.seed)
        heldout = WindowSampler(heldout_stream, config.seq_len, config.batch_size, seed=HELDOUT_SEED)
        return sampler.batch, heldout.fixed_batches(config.eval_batches)
    row_length = stage.prompt_tokens + stage.continuation_tokens
    if config.seq_len != row_length:
        raise ValueError(f"stage 2 rows are prompt_tokens + continuation_tokens = {row_length} tokens; "
                         f"set the recipe's TrainConfig.seq_len to {row_length} (got {config.seq_len})")
    from specdiff import zoo

    target, _ = zoo.load(recipe.teacher)
    rows = _continuations(target, train_stream, stage, stage.examples, config.seed, work_dir / recipe.name / "train")
    heldout_rows = _continuations(target, heldout_stream, stage, stage.heldout_examples, HELDOUT_SEED,
                                  work_dir / recipe.name / "heldout")
    heldout = RowSampler(heldout_rows, config.batch_size, seed=HELDOUT_SEED)
    return RowSampler(rows, config.batch_size, config.seed).batch, heldout.fixed_batches(config.eval_batches)


def _continuations(target, stream, stage: DiffusionStage, count: int, seed: int, cache_stem: Path):
    prompts = WindowSampler(stream, stage.prompt_tokens, count, seed).batch(0)  # [count, P]
    cache = cache_stem.with_name(f"{cache_stem.name}-continuations-{count}x{stage.prompt_tokens}+"
                                 f"{stage.continuation_tokens}-seed{seed}.npy")
    return greedy_continuations(target, prompts, stage.continuation_tokens, cache_path=cache)


def corpus_ngram(work_dir: Path = DEFAULT_WORK_DIR, order: int = 3, min_count: int = 2) -> NGramModel:
    """CPS's corpus proxy (DiffuSpec: a 3-gram fitted on the training split): an n-gram of the zoo
    tokenizer's stdlib train stream, cached in `work_dir`. n-grams seen once are dropped
    (min_count 2: 4.6 MB instead of 9.4 MB for the 8.2M-token stream, fitted in seconds)."""
    path = work_dir / f"ngram{order}-min{min_count}.npz"
    if path.exists():
        return NGramModel.load(path)
    tokenizer = build_tokenizer(work_dir)
    train_stream, _ = token_streams(work_dir, tokenizer)
    model = NGramModel.fit(train_stream, len(tokenizer), order=order, min_count=min_count)
    model.save(path)
    return model


def ship_corpus_ngram(work_dir: Path = DEFAULT_WORK_DIR, out_root: Path = SHIPPED_DIR) -> Path:
    """Copy the corpus 3-gram next to the shipped models, where `specdiff.zoo.ngram_path()` finds it."""
    import shutil

    corpus_ngram(work_dir)
    out = out_root / "stdlib-ngram"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(work_dir / "ngram3-min2.npz", out / "ngram3.npz")
    (out / "README.md").write_text(
        "# stdlib-ngram\n\nA 3-gram (absolute discounting, n-grams seen once dropped) of the zoo tokenizer's "
        "stdlib training stream: the causal proxy of causal-consistency search (DiffuSpec uses a KenLM 3-gram "
        "fitted on the training split). Rebuilt by `specdiff zoo build`.\n")
    return out / "ngram3.npz"


def export_diffusion(recipe: Recipe, stage: DiffusionStage, model, tokenizer, result: TrainResult, metrics: dict,
                     config: TrainConfig, out_root: Path = SHIPPED_DIR) -> Path:
    out = save_shipped(model, tokenizer, out_root / recipe.name)
    card = {
        "name": recipe.name,
        "description": recipe.description,
        "kind": "block-diffusion drafter: LlamaForCausalLM, causal over the context, bidirectional inside "
                "the masked block; each mask predicts its own position (no logit shift)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": asdict(recipe.shape),
        "mask_token_id": tokenizer.mask_token_id,
        "data": ("Python stdlib .py files (train split)" if stage.stage == 1 else
                 f"{stage.examples} greedy continuations of {recipe.teacher} ({stage.prompt_tokens}-token corpus "
                 f"prompts + {stage.continuation_tokens} tokens)"),
        "stage": asdict(stage),
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "heldout_loss": round(result.eval_loss, 4),
        "one_step_drafting": metrics,
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "teacher": recipe.teacher,
        "machine": machine_label(),
        "command": recipe.command,
        **recipe.extra_card,
    }
    write_card(out, card, _card_markdown(card))
    return out


def _card_markdown(card: dict) -> str:
    drafting = card["one_step_drafting"]
    accuracy = ", ".join(f"{a:.2f}" for a in drafting["accuracy_by_position"])
    stage = card["stage"]["stage"]
    loss_kind = "masked diffusion, 1/t weighted" if stage == 1 else "tail alignment, alpha^(R-i) weighted"
    return f"""# {card['name']}

{card['description']}

| | |
|---|---|
| kind | {card['kind']} |
| parameters | {card['parameters']:,} |
| architecture | LlamaForCausalLM {card['architecture']} |
| mask token id | {card['mask_token_id']} |
| training | DEER Stage {stage}: {card['data']} |
| steps | {card['steps']} (batch {card['train_config']['batch_size']} x {card['train_config']['seq_len']} tokens) |
| held-out loss ({loss_kind}) | {card['heldout_loss']} |
| one-step block of {drafting['block']}, held-out CE | {drafting['block_ce']} |
| one-step top-1 accuracy by block position | {accuracy} |
| training time | {card['train_seconds'] / 60:.1f} min on {card['machine']} |
| reproduce | `{card['command']}` |

Use it as a drafter (weights are fp16 on disk, loaded as fp32):

```python
from specdiff import SpecDiff, zoo
from specdiff.drafters import DiffusionDrafter
target, tokenizer = zoo.load("stdlib-target")
drafter_model, _ = zoo.load("{card['name']}")
spec = SpecDiff(target, DiffusionDrafter(drafter_model, k=8), tokenizer=tokenizer)
```
"""
