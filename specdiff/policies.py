"""Draft-length policies: the loop asks `current()` before each step and reports back with `update`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DraftLengthPolicy(Protocol):
    def current(self) -> int: ...

    def update(self, drafted: int, accepted: int, generated_before_eos: int | None = None) -> None: ...

    def reset(self) -> None: ...


@dataclass
class FixedDraftLength:
    """Always the same draft length (depth of a chain, depth limit of a tree)."""

    length: int = 5

    def __post_init__(self):
        if self.length < 0:
            raise ValueError(f"draft length must be >= 0, got {self.length}")

    def current(self) -> int:
        return self.length

    def update(self, drafted: int, accepted: int, generated_before_eos: int | None = None) -> None:
        pass

    def reset(self) -> None:
        pass
