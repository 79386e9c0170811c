"""Models stored as trained weights only, completed from a base model on first use.

A small LM cut from the target (`specdiff.training.small_lm`) shares the target's embedding and LM
head: shipping them again would double its size for nothing. Its directory holds config.json, the
tokenizer, `model.safetensors` with only its own (trained, fp16) weights and `derived.json`, which
names the base (a zoo name or a model directory) and the parameters taken from it; the tokenizer is
the base's too. `materialize`
writes a complete Hugging Face model directory into the user cache (once; atomic, like the packaged
conversion), so `AutoModelForCausalLM.from_pretrained` and transformers' assisted generation load it
like any other model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

DERIVED = "derived.json"
WEIGHTS = "model.safetensors"


def is_derived(directory: Path) -> bool:
    return (Path(directory) / DERIVED).is_file()


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "specdiff" / "derived"


def _fingerprint(directory: Path) -> str:
    """Names the completed copy after what it is made of: the stored weights and every other file (recipe,
    config, draft vocabulary...), so a changed file makes a new copy."""
    digest = hashlib.sha256((directory / DERIVED).read_bytes())
    for item in sorted(directory.iterdir()):
        if item.is_file() and item.name not in (WEIGHTS, DERIVED):
            digest.update(item.name.encode() + b"\0" + item.read_bytes())
    weights = directory / WEIGHTS
    digest.update(str(weights.stat().st_size).encode())
    with open(weights, "rb") as handle:
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def _base_directory(base: str) -> Path:
    from specdiff import zoo

    if Path(base).expanduser().is_dir():
        return Path(base).expanduser()
    return zoo.path(base)  # a zoo name (a packaged one converts on first use)


def materialize(directory: str | Path) -> Path:
    """The complete model directory for a derived one (made on first use, in the user cache)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    directory = Path(directory)
    recipe = json.loads((directory / DERIVED).read_text())
    out = _cache_root() / f"{directory.name}-{_fingerprint(directory)}"
    if (out / "complete").is_file():
        return out
    base = _base_directory(recipe["base"])
    tensors = load_file(str(directory / WEIGHTS))
    with safe_open(str(base / WEIGHTS), framework="pt") as handle:
        available = set(handle.keys())
        for name in recipe["shared"]:
            if name in available:  # a tied LM head is stored once, under the embedding's name
                tensors[name] = handle.get_tensor(name)
    if not any(name in tensors for name in recipe["shared"]):
        raise ValueError(f"{base} holds none of {recipe['shared']}: it is not the base {directory} was cut from")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for item in directory.iterdir():
            if item.is_file() and item.name != WEIGHTS:
                shutil.copy2(item, work / item.name)
        for item in base.iterdir():  # the tokenizer, which the base and this model share
            if item.is_file() and _is_tokenizer_file(item.name) and not (work / item.name).exists():
                shutil.copy2(item, work / item.name)
        save_file(tensors, str(work / WEIGHTS), metadata={"format": "pt"})
        (work / "complete").write_text(json.dumps({"from": str(directory), "base": str(base)}))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _is_tokenizer_file(name: str) -> bool:
    return name.startswith(("tokenizer", "special_tokens_map", "vocab.", "merges.")) or name == "chat_template.jinja"
