"""The embedded default models (DESIGN.md §6): trained here on the Python stdlib, shipped inside the
package, loadable offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specdiff.zoo.corpus import distinct_bigram_ratio, heldout_prompts

SHIPPED_DIR = Path(__file__).parent / "models"

__all__ = ["load", "path", "available", "card", "heldout_prompts", "distinct_bigram_ratio"]


def available() -> list[str]:
    if not SHIPPED_DIR.exists():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").exists())


def path(name: str) -> Path:
    """Directory of a shipped model; loadable with `from_pretrained`."""
    model_dir = SHIPPED_DIR / name
    if not (model_dir / "config.json").exists():
        shipped = ", ".join(available()) or "none"
        raise FileNotFoundError(
            f"zoo model {name!r} is not shipped (available: {shipped}); `specdiff zoo build` makes them"
        )
    return model_dir


NGRAM_DIR = "stdlib-ngram"


def ngram_path() -> Path:
    """The shipped stdlib 3-gram (CPS's causal proxy, DiffuSpec's KenLM stand-in)."""
    path = SHIPPED_DIR / NGRAM_DIR / "ngram3.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is not shipped; `specdiff zoo build` makes it (or use an online n-gram proxy)")
    return path


def card(name: str) -> dict:
    return json.loads((path(name) / "card.json").read_text())


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path(name))


def load(name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """(model, tokenizer) of a shipped model. Weights are stored in fp16 and cast to `dtype`."""
    from transformers import AutoModelForCausalLM

    model_dir = path(name)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    tokenizer = load_tokenizer(name)
    return model, tokenizer
