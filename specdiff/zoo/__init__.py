"""The embedded default models (DESIGN.md §6).

Two kinds, one namespace:
- packaged: pretrained models from a wheel on the package index (`smollm2-135m-instruct`, the default
  target), converted once into the user cache (`specdiff.zoo.packaged`);
- shipped: the stdlib zoo, trained here and shipped inside this package (the test bed and TiDAR demo).

This module imports neither torch nor transformers until a model is loaded, so the CLI starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from specdiff.zoo.corpus import distinct_bigram_ratio, heldout_prompts  # stdlib only: cheap to import
from specdiff.zoo.packaged import PACKAGED, ModelNotInstalledError, PackagedModel

SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_TARGET = "smollm2-135m-instruct"
STDLIB_TARGET = "stdlib-target"
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}

__all__ = ["load", "path", "directory", "available", "shipped", "card", "default_dtype", "heldout_prompts",
           "distinct_bigram_ratio", "ModelNotInstalledError", "PACKAGED", "DEFAULT_TARGET"]


def shipped() -> list[str]:
    """Models inside this package (the stdlib zoo)."""
    if not SHIPPED_DIR.exists():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").exists())


def available() -> list[str]:
    """Every zoo name: the packaged models (installed or not), then the shipped ones."""
    return [*PACKAGED, *shipped()]


def path(name: str, progress: bool = True) -> Path:
    """Directory of a zoo model, loadable with `from_pretrained`. A packaged model is converted into
    the user cache on first use (progress on stderr); ModelNotInstalledError names the install command."""
    if name in PACKAGED:
        from specdiff.zoo.packaged import ensure_converted

        return ensure_converted(PACKAGED[name], progress)
    model_dir = SHIPPED_DIR / name
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"zoo model {name!r} is not shipped (available: {', '.join(available())}); "
            "`specdiff zoo build` makes the stdlib ones"
        )
    from specdiff.zoo import derived

    if derived.is_derived(model_dir):  # stored as trained weights only: completed from its base once
        return derived.materialize(model_dir)
    return model_dir


def directory(spec: str) -> Path:
    """`spec` as a local directory when it is one, else the zoo's directory of that name (a name has no "/";
    FileNotFoundError names what is shipped)."""
    local = Path(spec).expanduser()
    if local.exists() or "/" in spec:
        return local
    return path(spec)


NGRAM_DIR = "stdlib-ngram"


def ngram_path() -> Path:
    """The shipped stdlib 3-gram (CPS's causal proxy, DiffuSpec's KenLM stand-in)."""
    path = SHIPPED_DIR / NGRAM_DIR / "ngram3.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is not shipped; `specdiff zoo build` makes it (or use an online n-gram proxy)")
    return path


def card(name: str) -> dict:
    """What `specdiff zoo list` shows: a shipped model's card.json, or a packaged model's facts."""
    if name in PACKAGED:
        model = PACKAGED[name]
        from specdiff.zoo.packaged import cache_problem

        info = dict(name=name, description=model.description, source=model.source, licence=model.licence,
                    install=model.install_command, default_method=model.default_method,
                    stored_dtype="float32")  # the converted copy: the GGUF dequantized
        converted = cache_problem(model) is None
        info["converted"] = str(model.cache_dir()) if converted else None
        if converted:
            manifest = json.loads((model.cache_dir() / "manifest.json").read_text())
            info["size_bytes"] = sum(manifest["files"].values())
            config = json.loads((model.cache_dir() / "config.json").read_text())
            info["architecture"] = config.get("architectures", ["?"])[0]
            info["parameters"] = _parameter_count(model.cache_dir() / "model.safetensors")
        return info
    data = json.loads((path(name) / "card.json").read_text())
    distilled = data.get("target") in PACKAGED  # a drafter for a packaged target: trained on its replies
    data.setdefault("source", "trained here on its target's own replies (`specdiff train data`)" if distilled
                    else "trained here on the Python stdlib (`specdiff zoo build`)")
    data.setdefault("parameters", data.get("parameters_trained", 0))
    data.setdefault("licence", "as specdiff (trained here)")
    data.setdefault("stored_dtype", "float16")
    data.setdefault("default_method", "ar")
    return data


def _parameter_count(weights: Path) -> int:
    """Parameters stored in a safetensors file (tied weights once), read from its header only."""
    import math

    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())


def default_method(name: str) -> str:
    """The best SpecDiff method that exists for this zoo target (read without touching the model files:
    the CLI asks before it loads anything)."""
    if name in PACKAGED:
        return PACKAGED[name].default_method
    return "ar" if name in shipped() else "lookup"


def drafter_for(target: str, drafter: str) -> str:
    """The zoo drafter that stands in for a method's default `drafter` when drafting for `target`."""
    if target in PACKAGED:
        return dict(PACKAGED[target].drafters).get(drafter, drafter)
    return drafter


def trained_for(drafter: str) -> str | None:
    """The target a shipped drafter was trained for (its card's `target` or `base`); None if unknown.
    The stdlib drafters' cards predate the field: they are stdlib-target's."""
    card_path = SHIPPED_DIR / drafter / "card.json"
    if not card_path.is_file():
        return None
    data = json.loads(card_path.read_text())
    return data.get("target") or data.get("base") or (STDLIB_TARGET if drafter.startswith("stdlib-") else None)


def default_dtype(device="cpu") -> str:
    """fp32 on CPU (token-identical to `generate`); bf16 on CUDA (faster; exactness is then a rate)."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def torch_dtype(name: str | None, device="cpu"):
    """'bf16' / 'bfloat16' / ... (None: `default_dtype(device)`) -> torch.dtype."""
    import torch

    key = DTYPE_NAMES.get(name or default_dtype(device))
    if key is None:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, key)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path(name))


def load(name: str, dtype=None, device="cpu", progress: bool = True):
    """(model, tokenizer) of a zoo model in `dtype` (a torch.dtype or a name; None: fp32 on CPU, bf16 on
    CUDA). Loading is quiet: only a first-use conversion shows progress."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdiff.hf_compat import quiet_loading

    if not hasattr(dtype, "is_floating_point"):
        dtype = torch_dtype(dtype, device)
    model_dir = path(name, progress)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer
