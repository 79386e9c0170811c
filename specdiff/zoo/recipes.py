"""How each shipped zoo model is made: architecture, training schedule, and export.

`specdiff zoo build` runs these in order; each step resumes from its checkpoint in the work dir.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from specdiff.training.data import WindowSampler, encode_files
from specdiff.training.loop import TrainConfig, TrainResult, train
from specdiff.training.objectives import CausalLMObjective, DistillationObjective
from specdiff.zoo.corpus import split_files
from specdiff.zoo.tokenizer import train_tokenizer

SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_WORK_DIR = Path.home() / ".cache" / "specdiff" / "zoo-build"


@dataclass(frozen=True)
class LlamaShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 2048

    def config(self, tokenizer) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer),
            num_key_value_heads=self.num_attention_heads,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **asdict(self),
        )


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    shape: LlamaShape
    train: TrainConfig
    teacher: str | None = None  # zoo name of the model to distil from
    kl_weight: float = 0.0
    command: str = ""
    extra_card: dict = field(default_factory=dict)


RECIPES = {
    "stdlib-target": Recipe(
        name="stdlib-target",
        description="Code-completion target: a Llama trained on the Python standard library.",
        shape=LlamaShape(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=704),
        train=TrainConfig(steps=6500, batch_size=8, seq_len=256, lr=1.5e-3, warmup_steps=200,
                          eval_every=250, save_every=100, seed=0),
        command="specdiff train target",
    ),
    "stdlib-ar-drafter": Recipe(
        name="stdlib-ar-drafter",
        description="Autoregressive drafter for stdlib-target (same tokenizer), distilled on the target.",
        shape=LlamaShape(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=352),
        train=TrainConfig(steps=1500, batch_size=8, seq_len=256, lr=2e-3, warmup_steps=100,
                          eval_every=250, save_every=100, seed=1),
        teacher="stdlib-target",
        kl_weight=0.5,
        command="specdiff train ar-drafter",
    ),
}


def build_tokenizer(work_dir: Path):
    path = work_dir / "tokenizer"
    if not (path / "tokenizer.json").exists():
        train_tokenizer(split_files().train).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def token_streams(work_dir: Path, tokenizer):
    split = split_files()
    train_stream = encode_files(tokenizer, split.train, work_dir / "train_tokens.npy")
    heldout_stream = encode_files(tokenizer, split.heldout, work_dir / "heldout_tokens.npy")
    return train_stream, heldout_stream


def run_recipe(recipe: Recipe, work_dir: Path = DEFAULT_WORK_DIR, steps: int | None = None) -> TrainResult:
    """Train one recipe in `work_dir/<name>` (resuming), then export it to the package."""
    torch.manual_seed(recipe.train.seed)
    tokenizer = build_tokenizer(work_dir)
    train_stream, heldout_stream = token_streams(work_dir, tokenizer)
    config = recipe.train if steps is None else _with_steps(recipe.train, steps)
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
        heldout_loss = _heldout_ce(model, heldout.fixed_batches(config.eval_batches))
        export(recipe, model, tokenizer, result, heldout_loss, config)
    return result


def _with_steps(config: TrainConfig, steps: int) -> TrainConfig:
    values = asdict(config)
    values.update(steps=steps, warmup_steps=min(config.warmup_steps, steps - 1),
                  eval_every=min(config.eval_every, steps), save_every=min(config.save_every, steps))
    return TrainConfig(**values)


@torch.no_grad()
def _heldout_ce(model, batches) -> float:
    model.eval()
    return sum(model(input_ids=b, labels=b).loss.item() for b in batches) / len(batches)


def export(recipe: Recipe, model, tokenizer, result: TrainResult, heldout_loss: float,
           config: TrainConfig, out_root: Path = SHIPPED_DIR) -> Path:
    out = out_root / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
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
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
        "command": recipe.command,
        **recipe.extra_card,
    }
    (out / "card.json").write_text(json.dumps(card, indent=1))
    return out
