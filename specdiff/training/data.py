"""Token streams for training: files encoded once, cached as uint16, sampled as random windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from specdiff.zoo.corpus import read_source


def encode_files(tokenizer, files: list[Path], cache_path: Path | None = None) -> np.ndarray:
    """All files as one token stream, each file followed by EOS. [T] uint16."""
    if cache_path is not None and cache_path.exists():
        return np.load(cache_path)
    if len(tokenizer) > np.iinfo(np.uint16).max:
        raise ValueError(f"vocabulary of {len(tokenizer)} does not fit uint16 token streams")
    pieces = []
    for path in tqdm(files, desc="encoding corpus", unit="file", leave=False):
        ids = tokenizer(read_source(path), add_special_tokens=False)["input_ids"]
        pieces.append(np.asarray(ids + [tokenizer.eos_token_id], dtype=np.uint16))
    stream = np.concatenate(pieces)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, stream)
    return stream


@dataclass(frozen=True)
class WindowSampler:
    """Random windows of `seq_len` tokens; batch `step` is a pure function of (seed, step).

    That makes resuming exact without saving sampler state.
    """

    stream: np.ndarray
    seq_len: int
    batch_size: int
    seed: int

    def __post_init__(self):
        if len(self.stream) <= self.seq_len:
            raise ValueError(f"stream of {len(self.stream)} tokens is shorter than seq_len {self.seq_len}")

    def batch(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, abs(step), int(step < 0)])
        starts = rng.integers(0, len(self.stream) - self.seq_len, size=self.batch_size)
        windows = np.stack([self.stream[s : s + self.seq_len] for s in starts]).astype(np.int64)
        return torch.from_numpy(windows)  # [B, seq_len]

    def fixed_batches(self, count: int) -> list[torch.Tensor]:
        """Evaluation batches: deterministic, disjoint from training steps (negative step ids)."""
        return [self.batch(-1 - i) for i in range(count)]
