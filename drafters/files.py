"""A trained drafter's directory: config.json (its config dataclass, tagged with a "kind" so it is never
mistaken for a causal LM) and model.safetensors (the drafter's own weights, not the target's)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_files(directory: str | Path, kind: str, config, state: dict[str, torch.Tensor]) -> Path:
    """config.json of the dataclass `config` and model.safetensors of `state`, floating tensors in fp16."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps({"kind": kind, **asdict(config)}, indent=1))
    tensors = {name: (t.half() if t.is_floating_point() else t).detach().contiguous().cpu() for name, t in state.items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    return directory


def read_config(directory: str | Path, kind: str, what: str, owner: str, hint: str) -> dict:
    """The config values stored in `directory` by `owner`.save_pretrained (its "kind" removed).
    FileNotFoundError without the two files, ValueError for another kind of model; both name the fix."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.exists() or not (directory / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"no {what} at {str(directory)!r}: need {CONFIG_FILE} and {WEIGHTS_FILE} "
                                f"written by {owner}.save_pretrained; {hint}")
    values = json.loads(config_path.read_text())
    if values.pop("kind", None) != kind:
        raise ValueError(f"{str(directory)!r} holds a model, not {what} (its {CONFIG_FILE} has no "
                         f"\"kind\": \"{kind}\"); pass a directory written by {owner}.save_pretrained")
    return values
