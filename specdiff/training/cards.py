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


def read_card(directory: Path) -> dict:
    """The card.json beside a model's files ({} when there is none)."""
    path = Path(directory) / "card.json"
    return json.loads(path.read_text()) if path.exists() else {}


class InitMismatch(ValueError):
    """`--init` names a model that this run cannot start from; the message names the fix (a usage error)."""


def refuse_init(init: str, what: str, differs: str) -> InitMismatch:
    """The error of a warm start from `init` (e.g. "that drafter") whose shape differs from the recipe in `differs`."""
    return InitMismatch(f"--init {init}: {what} differs from this recipe in {differs}; train with the options it "
                        "was trained with (its card's command), or start fresh without --init")


def fact_table(rows: list[tuple[str, object]]) -> str:
    """A model card's two-column Markdown table, one (label, value) per row."""
    return "| | |\n|---|---|\n" + "\n".join(f"| {label} | {value} |" for label, value in rows)


def draft_vocab_line(about: dict | None, drafter: str, note: str = "") -> str:
    """A card's line on the reduced draft head written beside a drafter (`draft_vocab.json`), if any."""
    if not about:
        return "none: it drafts over the whole head"
    coverage = "" if about.get("heldout_coverage") is None else f"; {about['heldout_coverage']:.1%} of held-out reply tokens"
    return (f"`draft_vocab.json`: {about['size']:,} tokens ({about['source']}{coverage}); `{drafter}` computes only "
            f"those head rows (`draft_vocab=None`: all)" + (f". {note}" if note else ""))
