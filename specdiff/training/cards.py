"""Model cards: the machine a model was trained on, and card.json + README.md next to the weights."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def machine_label() -> str:
    return f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip()


def write_card(out: Path, card: dict, markdown: str) -> None:
    (out / "card.json").write_text(json.dumps(card, indent=1))
    (out / "README.md").write_text(markdown)


def fact_table(rows: list[tuple[str, object]]) -> str:
    """A model card's two-column Markdown table, one (label, value) per row."""
    return "| | |\n|---|---|\n" + "\n".join(f"| {label} | {value} |" for label, value in rows)
