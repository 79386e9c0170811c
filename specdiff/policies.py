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


@dataclass
class AdaptiveDraftLength:
    """DiffuSpec's adaptive draft length (ADL, Eq. 9-11).

    Two EMAs (Eq. 10, both start at 0): L^gen, the raw argmax draft's length before its first EOS,
    and L^acc, the accepted length. Eq. 11: k_{t+1} = clip(L~gen + delta * 1{L~acc >= L~gen},
    k_min, k_max); k_1 = k_max; `reset()` starts each request afresh. The EMA is not an integer and
    the paper does not say how it is rounded; `rounding` declares it ("floor", as the public
    reproduction does, or "nearest").

    Defaults are scaled to the zoo's small drafters (accepted lengths of a few tokens); the
    paper's, for 7B/32B models, are k_min=20, k_max=30, delta=10, rho=0.5.
    """

    k_min: int = 8
    k_max: int = 12
    delta: int = 4
    rho: float = 0.5
    rounding: str = "floor"

    def __post_init__(self):
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.delta < 0:
            raise ValueError(f"delta (growth step) must be >= 0, got {self.delta}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"rho (EMA weight of the newest step) must be in (0, 1], got {self.rho}")
        if self.rounding not in ("floor", "nearest"):
            raise ValueError(f"rounding must be 'floor' or 'nearest', got {self.rounding!r}")
        self.reset()

    def reset(self) -> None:
        self.generated_ema = 0.0
        self.accepted_ema = 0.0
        self.length = self.k_max

    def current(self) -> int:
        return self.length

    def update(self, drafted: int, accepted: int, generated_before_eos: int | None = None) -> None:
        """`generated_before_eos` is L^gen (None for proposals that are not lattices: then the drafted depth)."""
        generated = drafted if generated_before_eos is None else generated_before_eos
        self.generated_ema = (1 - self.rho) * self.generated_ema + self.rho * generated
        self.accepted_ema = (1 - self.rho) * self.accepted_ema + self.rho * accepted
        grow = self.delta if self.accepted_ema >= self.generated_ema else 0
        target = self.generated_ema + grow
        rounded = int(target) if self.rounding == "floor" else int(target + 0.5)
        self.length = min(max(rounded, self.k_min), self.k_max)
