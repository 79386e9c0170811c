"""N-gram language models over token ids: the cheap causal proxy of DiffuSpec's path search (Eq. 8).

The paper scores paths with a 3-gram KenLM fitted on the training split. Here the same role is
played by interpolated absolute discounting (Ney et al. 1994), a close relative of KenLM's
Kneser-Ney: p_n(w | h) = max(c(h w) - D, 0) / c(h) + D * N1+(h .) / c(h) * p_{n-1}(w | h'),
down to a uniform distribution over the vocabulary, so no token gets probability 0.

`NGramModel` is fitted once on a corpus (numpy count tables, saved and loaded as .npz);
`OnlineNGram` counts the current request's committed context as it grows.
Every proxy answers `log_probs(context, prefixes, candidates) -> [B, K]`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def _check(order: int, vocab_size: int, discount: float) -> None:
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")


def _interpolate(probs: np.ndarray, pair_counts: np.ndarray, history_counts: np.ndarray,
                 history_types: np.ndarray, discount: float) -> np.ndarray:
    """One order of absolute discounting on top of the lower order's `probs` [B, K]; rows whose
    history was never seen back off entirely."""
    total = np.maximum(history_counts, 1)[:, None]  # [B, 1]
    mixed = (np.maximum(pair_counts - discount, 0.0) + discount * history_types[:, None] * probs) / total
    return np.where(history_counts[:, None] > 0, mixed, probs)


def _proxy_log_probs(model, context: Sequence[int], prefixes: list[list[int]], candidates: torch.Tensor):
    """[B, K] log p(candidates | context + prefixes[b]), each order the history is long enough for."""
    cands = candidates.cpu().numpy().astype(np.int64)
    tail = [int(t) for t in context[len(context) - (model.order - 1):]] if model.order > 1 else []
    histories = [tail + [int(t) for t in prefix] for prefix in prefixes]
    probs = np.full((len(histories), len(cands)), 1.0 / model.vocab_size)  # [B, K]
    for n in range(1, model.order + 1):
        rows = [b for b, h in enumerate(histories) if len(h) >= n - 1]
        if not rows:
            break
        last = np.array([histories[b][len(histories[b]) - (n - 1):] if n > 1 else [] for b in rows],
                        dtype=np.int64).reshape(len(rows), n - 1)  # [B', n - 1]
        pair_counts, history_counts, history_types = model.counts(last, cands)
        probs[rows] = _interpolate(probs[rows], pair_counts, history_counts, history_types, model.discount)
    return torch.from_numpy(np.log(probs)).float()


class NGramModel:
    """A count-based n-gram LM fitted on a token stream (numpy tables, one per order).

    Order n keeps its n-grams as sorted base-V integer keys with counts, and per (n-1)-gram
    history its total count and number of distinct continuations.
    """

    def __init__(self, tables: dict[str, np.ndarray], order: int, vocab_size: int, discount: float = 0.75):
        _check(order, vocab_size, discount)
        if vocab_size ** order >= 2**63:
            raise ValueError(f"vocab_size**order must fit int64 keys; lower the order (got {order})")
        self.tables, self.order, self.vocab_size, self.discount = tables, order, vocab_size, discount

    @classmethod
    def fit(cls, stream: np.ndarray, vocab_size: int, order: int = 3, discount: float = 0.75,
            min_count: int = 1) -> "NGramModel":
        """Count every n-gram (n <= order) of `stream` [T]; drop those seen fewer than `min_count`
        times (order >= 2), which shrinks the tables a lot at little cost."""
        _check(order, vocab_size, discount)
        stream = np.asarray(stream, dtype=np.int64)
        if stream.size and (stream.min() < 0 or stream.max() >= vocab_size):
            raise ValueError(f"token ids must be in [0, {vocab_size}), got [{stream.min()}, {stream.max()}]")
        tables = {}
        for n in range(1, order + 1):
            if len(stream) < n:
                keys, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
            else:
                windows = np.lib.stride_tricks.sliding_window_view(stream, n)  # [T - n + 1, n]
                keys, counts = np.unique(windows @ (vocab_size ** np.arange(n - 1, -1, -1)), return_counts=True)
            if n > 1 and min_count > 1:
                keys, counts = keys[counts >= min_count], counts[counts >= min_count]
            history, starts, types = np.unique(keys // vocab_size, return_index=True, return_counts=True)
            totals = np.add.reduceat(counts, starts) if len(keys) else np.zeros(0, np.int64)
            tables.update({f"keys{n}": keys, f"counts{n}": counts, f"history{n}": history,
                           f"totals{n}": totals, f"types{n}": types})
        return cls(tables, order, vocab_size, discount)

    def save(self, path: str | Path) -> None:
        meta = np.array([self.order, self.vocab_size], dtype=np.int64)
        np.savez_compressed(path, meta=meta, discount=np.array(self.discount), **self.tables)

    @classmethod
    def load(cls, path: str | Path) -> "NGramModel":
        with np.load(path) as data:
            order, vocab_size = (int(x) for x in data["meta"])
            tables = {name: data[name] for name in data.files if name not in ("meta", "discount")}
            return cls(tables, order, vocab_size, float(data["discount"]))

    def counts(self, histories: np.ndarray, candidates: np.ndarray):
        """histories [B, n - 1], candidates [K] -> (c(h w) [B, K], c(h) [B], N1+(h .) [B]) at order n."""
        n = histories.shape[1] + 1
        history_keys = histories @ (self.vocab_size ** np.arange(n - 2, -1, -1, dtype=np.int64))  # [B]
        seen, row = _lookup(self.tables[f"history{n}"], history_keys)
        hit, index = _lookup(self.tables[f"keys{n}"], (history_keys[:, None] * self.vocab_size + candidates).ravel())
        pair_counts = _gather(self.tables[f"counts{n}"], hit, index).reshape(len(histories), len(candidates))
        return pair_counts, _gather(self.tables[f"totals{n}"], seen, row), _gather(self.tables[f"types{n}"], seen, row)

    def log_probs(self, context: Sequence[int], prefixes: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        return _proxy_log_probs(self, context, prefixes, candidates)


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found [Q], index [Q]) of `queries` in `sorted_keys`; index is clipped where not found."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=bool), np.zeros(len(queries), dtype=np.int64)
    index = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return sorted_keys[index] == queries, index


def _gather(values: np.ndarray, found: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] where found, 0 elsewhere."""
    out = np.zeros(len(index), dtype=np.int64)
    out[found] = values[index[found]]
    return out


@dataclass
class _HistoryCounts:
    following: Counter
    total: int = 0


class OnlineNGram:
    """An n-gram LM of the request's own committed context, extended as the context grows.

    Code repeats itself (names, call patterns), so the context's own statistics are a useful
    proxy with no corpus at all. A context that does not extend the one counted is recounted.
    """

    def __init__(self, vocab_size: int, order: int = 3, discount: float = 0.75):
        _check(order, vocab_size, discount)
        self.vocab_size, self.order, self.discount = vocab_size, order, discount
        self.reset()

    def reset(self) -> None:
        self.seen: list[int] = []
        self.table: dict[tuple[int, ...], _HistoryCounts] = defaultdict(lambda: _HistoryCounts(Counter()))

    def _sync(self, context: Sequence[int]) -> None:
        if len(context) < len(self.seen) or list(context[: len(self.seen)]) != self.seen:
            self.reset()
        for end in range(len(self.seen), len(context)):  # every n-gram ending at `end`
            token = int(context[end])
            for n in range(1, min(self.order, end + 1) + 1):
                entry = self.table[tuple(int(t) for t in context[end - n + 1 : end])]
                entry.following[token] += 1
                entry.total += 1
        self.seen = [int(t) for t in context]

    def counts(self, histories: np.ndarray, candidates: np.ndarray):
        """histories [B, n - 1], candidates [K] -> (c(h w) [B, K], c(h) [B], N1+(h .) [B]) at order n."""
        pair_counts = np.zeros((len(histories), len(candidates)))
        totals, types = np.zeros(len(histories), np.int64), np.zeros(len(histories), np.int64)
        for b, history in enumerate(histories.tolist()):
            entry = self.table.get(tuple(history))
            if entry is not None:
                pair_counts[b] = [entry.following.get(c, 0) for c in candidates.tolist()]
                totals[b], types[b] = entry.total, len(entry.following)
        return pair_counts, totals, types

    def log_probs(self, context: Sequence[int], prefixes: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        self._sync(context)
        return _proxy_log_probs(self, context, prefixes, candidates)
