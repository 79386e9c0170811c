"""Acceptance metrics, one definition everywhere (DESIGN.md §5).

tau = new tokens / target verification forwards, bonus included: plain decoding scores 1.00.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class GenerationStats:
    new_tokens: int = 0
    target_forwards: int = 0  # verification forwards (prefill not counted)
    drafter_forwards: int = 0
    drafted_tokens: int = 0  # tree nodes proposed, summed over steps
    accepted_tokens: int = 0  # draft tokens accepted (bonus not included)
    accepted_lengths: list[int] = field(default_factory=list)  # per step, draft tokens accepted
    draft_depths: list[int] = field(default_factory=list)  # per step, depth of the deepest draft node
    wall_time: float = 0.0
    # Seconds inside the model work of the loop: drafting (propose + tree search) and verifying (the
    # prefill, every verify forward, its acceptance, which holds the step's one host sync, and the commit). The
    # rest of wall_time is the loop's own overhead (DESIGN.md §5's efficiency).
    draft_time: float = 0.0
    verify_time: float = 0.0
    settings: dict = field(default_factory=dict)

    def record_step(self, drafted: int, depth: int, accepted: int) -> None:
        self.target_forwards += 1
        self.drafted_tokens += drafted
        self.accepted_tokens += accepted
        self.accepted_lengths.append(accepted)
        self.draft_depths.append(depth)

    @property
    def tau(self) -> float:
        return self.new_tokens / self.target_forwards if self.target_forwards else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def acceptance_histogram(self) -> dict[int, int]:
        """accepted draft tokens per step -> number of steps."""
        return dict(sorted(Counter(self.accepted_lengths).items()))

    @property
    def per_position_acceptance(self) -> list[float]:
        """rate[i] = P(draft position i accepted | position i - 1 accepted and position i drafted)."""
        max_depth = max(self.draft_depths, default=0)
        rates = []
        for i in range(max_depth):
            reached = sum(1 for a, d in zip(self.accepted_lengths, self.draft_depths) if d > i and a >= i)
            passed = sum(1 for a in self.accepted_lengths if a > i)
            rates.append(passed / reached if reached else 0.0)
        return rates

    def merge(self, other: "GenerationStats") -> "GenerationStats":
        """Step-weighted union of two runs (tau over a whole benchmark)."""
        return GenerationStats(
            new_tokens=self.new_tokens + other.new_tokens,
            target_forwards=self.target_forwards + other.target_forwards,
            drafter_forwards=self.drafter_forwards + other.drafter_forwards,
            drafted_tokens=self.drafted_tokens + other.drafted_tokens,
            accepted_tokens=self.accepted_tokens + other.accepted_tokens,
            accepted_lengths=self.accepted_lengths + other.accepted_lengths,
            draft_depths=self.draft_depths + other.draft_depths,
            wall_time=self.wall_time + other.wall_time,
            draft_time=self.draft_time + other.draft_time,
            verify_time=self.verify_time + other.verify_time,
            settings=self.settings or other.settings,
        )

    def as_dict(self) -> dict:
        return {
            "tau": round(self.tau, 4),
            "new_tokens": self.new_tokens,
            "target_forwards": self.target_forwards,
            "drafter_forwards": self.drafter_forwards,
            "drafted_tokens": self.drafted_tokens,
            "accepted_tokens": self.accepted_tokens,
            "mean_accepted_draft": round(self.accepted_tokens / max(1, len(self.accepted_lengths)), 4),
            "max_accepted_draft": max(self.accepted_lengths, default=0),
            "per_position_acceptance": [round(r, 4) for r in self.per_position_acceptance],
            "acceptance_histogram": self.acceptance_histogram,
            "wall_time": round(self.wall_time, 4),
            "draft_time": round(self.draft_time, 4),
            "verify_time": round(self.verify_time, 4),
            "tokens_per_second": round(self.tokens_per_second, 2),
            "settings": self.settings,
        }

    def table(self) -> str:
        """Human-readable summary, as printed by the CLI and the examples."""
        lines = [
            f"tau (new tokens / target forwards): {self.tau:.2f}",
            f"new tokens: {self.new_tokens}   target forwards: {self.target_forwards}   "
            f"drafter forwards: {self.drafter_forwards}",
            f"drafted: {self.drafted_tokens}   accepted: {self.accepted_tokens}   "
            f"tokens/s: {self.tokens_per_second:.1f}",
            "per-position acceptance: " + " ".join(f"{r:.2f}" for r in self.per_position_acceptance),
            "accepted-length histogram: " + ", ".join(f"{k}:{v}" for k, v in self.acceptance_histogram.items()),
        ]
        return "\n".join(lines)
