"""HFVerifier: one forward of an unmodified Hugging Face causal LM over a whole draft tree.

Cache convention (Medusa/EAGLE): the KV cache holds every committed token except the last one.
A tree forward feeds [last committed token, tree nodes...], so its logits row 0 is the
distribution after the last committed token and row i + 1 the one after tree node i.

The model, its cache and the ids in it are a `specdiff.kv.CachedLM`. What a forward computed comes
back as a `VerifyOutput`; the verifier stores nothing a drafter asked for. With `hidden_layers`
(heads drafters: (-1,), the LM head's input), every forward also returns those hidden states:
after `prefill`, of the row that predicts the last prompt token (so the first step drafts from the
prefill with no extra forward; a one-token prompt has no such row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdiff import hf_compat
from specdiff.kv import CachedLM
from specdiff.masks import QuerySlots, query_parents, query_positions, score_layout, with_slots
from specdiff.types import DraftTree, ancestor_mask


@dataclass(frozen=True)
class VerifyOutput:
    """What one verifier forward computed.

    logits [1 + N, V] fp32 (None after `prefill`); hidden [layers, rows, H] of the verifier's
    `hidden_layers` (None when it has none): after `score` one row per logits row, after `prefill`
    one per fed prompt row, the last of which predicts the last prompt token (None when no row was fed,
    as for a one-token prompt); slot_logits
    [E, V] fp32 of the forward's `QuerySlots` (None without slots).
    """

    logits: torch.Tensor | None
    hidden: torch.Tensor | None = None
    slot_logits: torch.Tensor | None = None
    hidden_start: int = 0  # the committed position of hidden row 0 (after `score`: the last committed token's)

    def hidden_at(self, row: int) -> torch.Tensor | None:
        """[layers, H] at forward row `row` (after `prefill`, row 0), or None."""
        return None if self.hidden is None else self.hidden[:, row]

    def hidden_rows(self, rows: list[int]) -> torch.Tensor | None:
        """[layers, len(rows), H] at forward rows `rows`, or None."""
        return None if self.hidden is None else self.hidden[:, rows]


class HFVerifier:
    def __init__(self, model, hidden_layers: tuple[int, ...] = (), hidden_history: bool = False,
                 row_padding="auto", compiled: bool = False):
        # row_padding "auto": padded to the cheaper row count on a CPU; compiled: tree forwards through
        # torch.compile (`specdiff.compiled`)
        self.lm = CachedLM(model, row_padding=row_padding, compiled=compiled)
        self.model = model
        self.hidden_layers = tuple(hidden_layers)
        # With a history every prefill feeds the whole prompt: a drafter that reads the hidden state of
        # every committed position must get the rows a reused cache prefix would skip.
        self.hidden_history = hidden_history
        self.committed: list[int] = []  # the cache holds committed[:-1]
        self._ids_buffer = torch.zeros(0, dtype=torch.long)  # committed ids, with spare room to append
        self.forward_count = 0  # score forwards (the prefill is not one)
        self._pending: DraftTree | None = None

    @property
    def cache(self):
        return self.lm.cache

    @property
    def committed_ids(self) -> torch.Tensor:
        """[T] the committed ids as a CPU tensor: a view of a buffer that grows by doubling, so no
        step copies the context."""
        return self._ids_buffer[: len(self.committed)]

    def _set_committed(self, ids: list[int]) -> None:
        self.committed = list(ids)
        self._ids_buffer = torch.zeros(2 * len(ids) + 64, dtype=torch.long)
        self._ids_buffer[: len(ids)] = torch.tensor(ids, dtype=torch.long)

    def _append_committed(self, ids: list[int]) -> None:
        T, new_length = len(self.committed), len(self.committed) + len(ids)
        if new_length > len(self._ids_buffer):
            grown = torch.zeros(2 * new_length, dtype=torch.long)
            grown[:T] = self._ids_buffer[:T]
            self._ids_buffer = grown
        self._ids_buffer[T:new_length] = torch.tensor(ids, dtype=torch.long)
        self.committed.extend(ids)

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def forward_seconds(self) -> float:
        """Wall time spent inside the target's forwards so far (prefill and verify forwards)."""
        return self.lm.forward_seconds

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    @property
    def vocab_size(self) -> int:
        return hf_compat.output_vocab_size(self.model)

    def prefill(self, input_ids: list[int], slots: QuerySlots | None = None) -> VerifyOutput:
        """Cache `input_ids[:-1]`, reusing the longest cached prefix (chat). slots: extra query rows
        that see the whole prompt before its last token (and each other per `slots.sees`); their
        KV entries are dropped."""
        if not input_ids:
            raise ValueError("prefill needs at least one token")
        # With hidden layers at least one row is fed (re-fed if cached): its state predicts input_ids[-1].
        if self.hidden_history:
            cached = self.lm.sync([])
        else:
            cached = self.lm.sync(input_ids[:-2] if self.hidden_layers else input_ids[:-1])
        new_ids = input_ids[cached:-1]
        self._set_committed(input_ids)
        self._pending = None
        if slots is None:
            return self._prefill_rows(new_ids, cached)
        n, E = len(new_ids), len(slots)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        allowed, positions = with_slots(causal, torch.arange(cached, cached + n), slots, torch.ones(E, n, dtype=torch.bool))
        ids = torch.cat([torch.tensor(new_ids, dtype=torch.long), slots.tokens.cpu().long()])
        out = self.lm.forward(ids, positions, allowed, self.hidden_layers)
        self.lm.compact(list(range(n)), new_ids)  # the slots' rows go
        hidden = out.hidden[:, :n] if out.hidden is not None and n else None
        return VerifyOutput(None, hidden, out.logits[n:].float(), hidden_start=cached)

    def _prefill_rows(self, new_ids: list[int], cached: int) -> VerifyOutput:
        if not new_ids:
            return VerifyOutput(None, hidden_start=cached)
        out = self.lm.forward(new_ids, hidden_layers=self.hidden_layers)
        return VerifyOutput(None, out.hidden, hidden_start=cached)

    def score(self, tree: DraftTree, slots: QuerySlots | None = None) -> VerifyOutput:
        """Target logits [1 + N, V] (fp32) for the committed token and every tree node, in one forward.
        slots: extra query rows in the same forward (see `QuerySlots`); `commit` drops their KV entries."""
        if self.lm.cache is None:
            raise RuntimeError("call prefill() before score()")
        if self._pending is not None:
            raise RuntimeError("score() called twice without commit()")
        cache_length = len(self.lm.ids)
        parents = tree.parents.cpu()
        Q = 1 + tree.num_nodes
        ids = torch.cat([torch.tensor([self.committed[-1]]), tree.tokens.cpu()])
        if slots is None:
            allowed, positions = ancestor_mask(query_parents(parents)), query_positions(parents, cache_length)
        else:
            allowed, positions = score_layout(parents, cache_length, slots)
            ids = torch.cat([ids, slots.tokens.cpu().long()])
        out = self.lm.forward(ids, positions, allowed, self.hidden_layers)
        self.forward_count += 1
        self._pending = tree
        hidden = out.hidden[:, :Q] if out.hidden is not None else None
        slot_logits = out.logits[Q:].float() if slots is not None else None
        return VerifyOutput(out.logits[:Q].float(), hidden, slot_logits, hidden_start=cache_length)  # logits [1 + N, V]

    def commit(self, path: list[int], next_token: int) -> None:
        """Keep the accepted tree nodes `path` (root to leaf) in the cache; `next_token` becomes the
        new last committed token (the bonus or correction, not yet in the cache)."""
        tree = self._pending
        if tree is None:
            raise RuntimeError("commit() without a pending score()")
        accepted = tree.tokens[path].tolist()
        keep = [0] + [1 + node for node in path]  # row 0 (the old last token) is now committed history
        self.lm.compact(keep, [self.committed[-1]] + accepted)
        self._append_committed(accepted + [int(next_token)])
        self._pending = None

    @property
    def last_path(self) -> str | None:
        """Which attention path the last forward ran ('tree', 'additive' or 'causal')."""
        return self.lm.last_path

    def reset(self) -> None:
        self.lm.reset()
        self._set_committed([])
        self._pending = None
