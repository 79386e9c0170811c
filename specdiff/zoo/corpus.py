"""The zoo's corpus: the running Python's standard library, split by file path.

The split is a pure function of each file's path relative to the stdlib root, so every machine
with the same Python version draws the same train and held-out files.
"""

from __future__ import annotations

import hashlib
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HELDOUT_PERCENT = 5
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """Every `.py` file of the stdlib, site-packages excluded, sorted by relative path."""
    root = stdlib_root()
    files = [
        path
        for path in root.rglob("*.py")
        if not _SKIPPED_DIRS.intersection(path.relative_to(root).parts)
    ]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def is_heldout(relative_path: str) -> bool:
    """Deterministic ~5% split: md5 of the relative path, so it does not depend on file order."""
    digest = hashlib.md5(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELDOUT_PERCENT


@dataclass(frozen=True)
class CorpusSplit:
    train: list[Path]
    heldout: list[Path]


def split_files() -> CorpusSplit:
    root = stdlib_root()
    train, heldout = [], []
    for path in stdlib_files():
        (heldout if is_heldout(path.relative_to(root).as_posix()) else train).append(path)
    return CorpusSplit(train=train, heldout=heldout)


def read_source(path: Path) -> str:
    # Some files under Lib/test are deliberately not valid UTF-8.
    return path.read_text(encoding="utf-8", errors="replace")


def heldout_prompts(n: int, seed: int = 0, min_lines: int = 8, max_lines: int = 24) -> list[str]:
    """`n` excerpts of held-out files, each cut at a line boundary, for benchmarks.

    Each excerpt starts at a line that begins a top-level or indented statement and ends with a
    newline, so the model continues code from a natural point.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    files = [path for path in split_files().heldout if path.stat().st_size > 2000]
    prompts: list[str] = []
    attempts = 0
    while len(prompts) < n and attempts < 50 * n:
        attempts += 1
        lines = read_source(rng.choice(files)).splitlines(keepends=True)
        num_lines = rng.randint(min_lines, max_lines)
        if len(lines) < num_lines + 1:
            continue
        start = rng.randrange(0, len(lines) - num_lines)
        excerpt = "".join(lines[start : start + num_lines])
        if len(excerpt.strip()) < 80 or len(excerpt) > 1500:
            continue
        prompts.append(excerpt)
    return prompts


def distinct_bigram_ratio(token_ids: list[int]) -> float:
    """Distinct bigrams / bigrams: about 0.88 for real code, near 0 for a looping model."""
    bigrams = list(zip(token_ids, token_ids[1:]))
    if not bigrams:
        return 1.0
    return len(set(bigrams)) / len(bigrams)
