"""The target's hidden states over a distillation set, computed once and kept on disk.

EAGLE, DFlash and Medusa heads all learn from the target's hidden states at a few layers. Recomputing
them every epoch costs a teacher forward per token (~500 tokens/s on one CPU thread in bf16), so
`TeacherFeatures.build` runs it once per (dataset, target, layers, dtype) and stores the result as one
flat float16 array [tokens, layers, H] (a numpy memmap: a 300k-token set at 4 layers of 576 is ~1.4 GB
on disk, read lazily). The build resumes after an interruption: it writes record groups in order and
records how far it got. A data set that grew (`specdiff train data` appends records) starts from the
largest finished build of its first records, so only the new records cost a teacher forward; the
smaller build is then removed (a data set only grows, so it is not read again).

Layers index `output_hidden_states` as `distill.teacher_hidden_states` does: 0 is the embeddings, i the
output of decoder layer i, and the last one is the LM head's input (after the final norm, for Llama).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from specdiff.training.distill import DistillDataset, teacher_hidden_states

FORMAT = "specdiff teacher features v1"
GROUP = 64  # records per written group (the unit of resume)


def default_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "specdiff" / "features"


def record_ids(dataset: DistillDataset, index: int) -> np.ndarray:
    """[P + R] int64: the templated prompt, then the target's reply."""
    record = dataset[index]
    return np.concatenate([record.prompt_ids, record.response_ids]).astype(np.int64)


@dataclass
class TeacherFeatures:
    """Token ids and the target's hidden states for every record of a split.

    ids(i) [T_i] int64; hidden(i) [T_i, layers, H] float16 (a view of the memmap); response_start(i):
    where the reply begins in ids(i). `layers` as given to `build`.
    """

    directory: Path
    layers: tuple[int, ...]
    offsets: np.ndarray  # [records + 1] token offsets into the flat arrays
    prompt_lengths: np.ndarray  # [records]
    token_ids: np.ndarray  # [tokens] int32
    states: np.ndarray  # [tokens, layers, H] float16 memmap

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def hidden_size(self) -> int:
        return self.states.shape[-1]

    def ids(self, index: int) -> np.ndarray:
        return self.token_ids[self.offsets[index] : self.offsets[index + 1]].astype(np.int64)

    def hidden(self, index: int) -> torch.Tensor:
        """The record's states (tokens, layers, hidden), copied out of the read-only map: a writable tensor."""
        return torch.from_numpy(np.array(self.states[self.offsets[index] : self.offsets[index + 1]]))

    def response_start(self, index: int) -> int:
        return int(self.prompt_lengths[index])

    # --- building ---------------------------------------------------------------------------------

    @staticmethod
    def key(dataset: DistillDataset, split: str, target_name: str, layers: Sequence[int], dtype: torch.dtype,
            records: int | None = None) -> str:
        """Names the cache entry: the dataset's records (count and content hash), target, layers, dtype.
        records: the key of the first `records` records only (a smaller build of a data set that grew since)."""
        count = len(dataset) if records is None else records
        digest = hashlib.md5()
        for index in range(count):
            digest.update(record_ids(dataset, index).astype(np.uint16).tobytes())
        layer_part = "-".join(str(layer) for layer in layers)
        return f"{target_name}-{split}-{count}r-{digest.hexdigest()[:10]}-l{layer_part}-{str(dtype).split('.')[-1]}"

    @classmethod
    def _copy_prefix(cls, directory: Path, dataset: DistillDataset, split: str, name: str, layers: tuple[int, ...],
                     dtype: torch.dtype, offsets: np.ndarray, states: np.memmap) -> tuple[int, Path | None]:
        """Fill `states` from the largest build of a prefix of these records (same target, split, layers,
        dtype), finished or interrupted (then its first `records_done`); return how many records it covered
        (0: none) and its directory. `specdiff train data` only appends records, so a data set that grew while
        drafters trained (or while a build of it was stopped) costs only the records not computed yet."""
        best, source = 0, None
        for other in directory.parent.glob(f"{name}-{split}-*"):
            count = re.fullmatch(rf"{re.escape(name)}-{split}-(\d+)r-.*", other.name)
            if other == directory or count is None or not (other / "states.f16").is_file():
                continue
            records = int(count.group(1))
            if records > len(dataset):
                continue
            if not (other / "manifest.json").is_file():  # interrupted: only its finished records count
                progress = other / "progress.json"
                done = json.loads(progress.read_text())["records_done"] if progress.is_file() else 0
                records = min(records, int(done))
            if best < records and other.name == cls.key(dataset, split, name, layers, dtype, int(count.group(1))):
                best, source = records, other
        if source is None:
            return 0, None
        tokens = int(offsets[best])
        old = np.memmap(source / "states.f16", dtype=np.float16, mode="r", shape=(tokens, *states.shape[1:]))
        for start in range(0, tokens, 1 << 16):  # in slices: no copy of the whole set in memory
            end = min(start + (1 << 16), tokens)
            states[start:end] = old[start:end]
        states.flush()
        return best, source

    @classmethod
    def build(cls, target, dataset_dir: str | Path, layers: Sequence[int], split: str = "train",
              target_name: str | None = None, cache_dir: Path | None = None, batch_size: int = 8,
              progress: bool = True) -> "TeacherFeatures":
        """Load the features of `dataset_dir`'s `split`, computing what is missing (resumable)."""
        layers = tuple(int(layer) for layer in layers)
        dataset = DistillDataset(dataset_dir, split=split)
        if not len(dataset):
            raise ValueError(f"{dataset_dir} has no {split!r} records; `specdiff train data` makes them")
        name = target_name or Path(getattr(target.config, "_name_or_path", "target") or "target").name
        dtype = target.get_output_embeddings().weight.dtype
        directory = (cache_dir or default_cache_dir()) / cls.key(dataset, split, name, layers, dtype)
        directory.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(dataset[i].prompt_ids) + len(dataset[i].response_ids) for i in range(len(dataset))])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        prompt_lengths = np.array([len(dataset[i].prompt_ids) for i in range(len(dataset))])
        hidden_size = target.get_output_embeddings().weight.shape[1]
        shape = (int(offsets[-1]), len(layers), hidden_size)
        states_path, progress_path = directory / "states.f16", directory / "progress.json"
        token_ids = np.concatenate([record_ids(dataset, i) for i in range(len(dataset))]).astype(np.int32)
        done = json.loads(progress_path.read_text())["records_done"] if progress_path.exists() else 0
        mode = "r+" if states_path.exists() and done else "w+"
        states = np.memmap(states_path, dtype=np.float16, mode=mode, shape=shape)
        superseded = None
        if not done:
            done, superseded = cls._copy_prefix(directory, dataset, split, name, layers, dtype, offsets, states)
            progress_path.write_text(json.dumps({"records_done": done}))
        target.eval()
        bar = tqdm(total=len(dataset), initial=done, desc="teacher features", unit="record", disable=not progress)
        for start in range(done, len(dataset), GROUP):
            group = range(start, min(start + GROUP, len(dataset)))
            hidden = teacher_hidden_states(target, [record_ids(dataset, i) for i in group], layers, batch_size)
            for i, h in zip(group, hidden):
                states[offsets[i] : offsets[i + 1]] = h.to(torch.float16).numpy()
            states.flush()
            progress_path.write_text(json.dumps({"records_done": group[-1] + 1}))
            bar.update(len(group))
        bar.close()
        (directory / "manifest.json").write_text(json.dumps({
            "format": FORMAT, "dataset": str(dataset_dir), "split": split, "target": name, "layers": list(layers),
            "dtype": str(dtype), "records": len(dataset), "tokens": int(offsets[-1]), "hidden_size": hidden_size,
        }, indent=1))
        if superseded is not None:  # the data set only grows: the smaller build (GBs) is not read again
            shutil.rmtree(superseded, ignore_errors=True)
        states = np.memmap(states_path, dtype=np.float16, mode="r", shape=shape)
        return cls(directory, layers, offsets, prompt_lengths, token_ids, states)
