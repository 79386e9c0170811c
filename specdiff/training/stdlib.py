"""What every stdlib-zoo recipe shares: where models ship and builds resume, the model shapes and
recipe records, the zoo tokenizer, the token streams, and the fp16 export."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig

from specdiff.training.data import encode_files
from specdiff.training.diffusion import DiffusionStage
from specdiff.training.loop import TrainConfig
from specdiff.training.tokenizer import train_tokenizer
from specdiff.zoo import SHIPPED_DIR  # noqa: F401  (re-exported: where recipes export by default)
from specdiff.zoo.corpus import split_files
from specdiff.zoo.packaged import cache_root

DEFAULT_WORK_DIR = cache_root() / "zoo-build"


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
    # Shipped in generation_config, so `generate` and SpecDiff both decode with it (DESIGN.md §6).
    generation: dict = field(default_factory=dict)
    role: str = "target"  # "target": the quality gate applies; "drafter": its ratio is informational
    diffusion: DiffusionStage | None = None  # a block-diffusion drafter stage (specdiff.training.diffusion_recipe)


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


@torch.no_grad()
def heldout_ce(model, batches) -> float:
    model.eval()
    return sum(model(input_ids=b, labels=b).loss.item() for b in batches) / len(batches)


def save_shipped(model, tokenizer, out: Path) -> Path:
    """Weights as fp16 safetensors (half the package size; `zoo.load` casts back) plus the tokenizer,
    so `from_pretrained(out)` loads both. The in-memory model stays fp32."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
    return out
