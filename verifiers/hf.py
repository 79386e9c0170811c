"""HFVerifier: one forward of an unmodified Hugging Face causal LM over a whole draft tree.

Cache convention (Medusa/EAGLE): the KV cache holds every committed token except the last one.
A tree forward feeds [last committed token, tree nodes...], so its logits row 0 is the
distribution after the last committed token and row i + 1 the one after tree node i.

With `capture_hidden` on (heads drafters), every forward also keeps the LM head's input, and the
verifier holds the hidden state whose logits produced the last committed token: after `commit`, the
last accepted row (it produced the bonus token); after `prefill`, the prefill's last row, i.e. the
second-to-last prompt token, which predicts the last one. So the first step drafts from the
prefill with no extra forward, and only a one-token prompt (nothing to prefill) starts without one.
"""

from __future__ import annotations

import torch

from specdiff import hf_compat
from specdiff.masks import (QuerySlots, additive_mask, block_allowed, query_parents, query_positions, score_layout,
                            with_slots)
from specdiff.types import DraftTree, ancestor_mask, is_chain


class HFVerifier:
    def __init__(self, model):
        hf_compat.check_supported(model)
        self.model = model
        self.cache = None
        self.committed: list[int] = []  # the cache holds committed[:-1]
        self.forward_count = 0
        self._pending: DraftTree | None = None
        self.last_hidden: torch.Tensor | None = None  # [1 + N, H] when capture_hidden is on
        self.capture_hidden = False
        self._hidden_at_commit: torch.Tensor | None = None
        self._pending_slots = 0
        self.slot_logits: torch.Tensor | None = None  # [E, V] fp32: the last forward's QuerySlots rows
        self.last_mask_path = ""  # which mask the last score() used: "causal" (the model's own) or "additive"

    @property
    def device(self) -> torch.device:
        return self.model.get_output_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_output_embeddings().weight.dtype

    @property
    def vocab_size(self) -> int:
        return hf_compat.output_vocab_size(self.model)

    @torch.inference_mode()
    def prefill(self, input_ids: list[int], slots: QuerySlots | None = None) -> None:
        """Cache `input_ids[:-1]`. A prompt that extends what is committed reuses the cache (chat).
        slots: extra query rows that see the whole prompt before its last token (and each other per
        `slots.sees`); their logits land in `slot_logits`, their KV entries are dropped."""
        if not input_ids:
            raise ValueError("prefill needs at least one token")
        reusable = (
            self.cache is not None
            and self._pending is None
            and len(self.committed) <= len(input_ids)
            and input_ids[: len(self.committed)] == self.committed
        )
        if reusable:
            cached = len(self.committed) - 1
        else:
            self.cache, cached = hf_compat.new_cache(self.model), 0
            self._hidden_at_commit = None
        new_ids = input_ids[cached:-1]
        self.slot_logits = None
        n, num_slots = len(new_ids), len(slots) if slots is not None else 0
        if n or num_slots:
            positions = torch.arange(cached, cached + n)
            mask = None
            if slots is not None:
                causal = torch.ones(n, n, dtype=torch.bool).tril()
                allowed, positions = with_slots(causal, positions, slots, torch.ones(num_slots, n, dtype=torch.bool))
                mask = self._masks(positions, allowed, cached)
            ids = torch.cat([torch.tensor(new_ids, dtype=torch.long)]
                            + ([slots.tokens.cpu().long()] if slots is not None else []))[None].to(self.device)
            with hf_compat.capture_last_hidden(self.model, self.capture_hidden) as hidden:
                out = hf_compat.forward(self.model, ids, self.cache, mask, positions[None].to(self.device))
            if slots is not None:
                self.slot_logits = out.logits[0, n:].float()
                hf_compat.drop_last(self.cache, num_slots)
            hf_compat.trim_to_window(self.cache)
            if self.capture_hidden and n:
                self._hidden_at_commit = hidden.value[0, n - 1]  # [H]: it predicts input_ids[-1]
        self.committed = list(input_ids)
        self._pending = None

    def _masks(self, query_pos: torch.Tensor, allowed: torch.Tensor, cache_length: int):
        """The 4-D additive mask(s) for a forward whose rows are `allowed` [R, R] at `query_pos` [R]."""
        return hf_compat.pack_masks({
            group.name: additive_mask(
                block_allowed(query_pos, allowed, query_pos, cache_length,
                              hf_compat.visible_cache_rows(self.cache, group), group.window),
                self.dtype, self.device)
            for group in hf_compat.layer_groups(self.cache)
        })

    @torch.inference_mode()
    def score(self, tree: DraftTree, slots: QuerySlots | None = None) -> torch.Tensor:
        """Target logits [1 + N, V] (fp32) for the committed token and every tree node, in one forward.
        slots: extra query rows in the same forward (see `QuerySlots`); their logits land in
        `slot_logits` and `commit` drops their KV entries."""
        if self.cache is None:
            raise RuntimeError("call prefill() before score()")
        if self._pending is not None:
            raise RuntimeError("score() called twice without commit()")
        cache_length = hf_compat.cache_length(self.cache)
        parents = tree.parents.cpu()
        Q = 1 + tree.num_nodes
        positions = query_positions(parents, cache_length)
        ids = torch.cat([torch.tensor([self.committed[-1]]), tree.tokens.cpu()])
        if slots is None:
            allowed = ancestor_mask(query_parents(parents))  # row i sees its root path
        else:
            allowed, positions = score_layout(parents, cache_length, slots)
            ids = torch.cat([ids, slots.tokens.cpu().long()])
        # A chain (or no draft) over a cache of full-attention layers is exactly the model's own causal
        # forward: let transformers mask it, as `generate` does, instead of a [Q, T + Q] float mask.
        own_causal = slots is None and is_chain(parents) and hf_compat.full_attention_only(self.cache)
        mask = None if own_causal else self._masks(positions, allowed, cache_length)
        with hf_compat.capture_last_hidden(self.model, self.capture_hidden) as hidden:
            out = hf_compat.forward(self.model, ids[None].to(self.device), self.cache, mask,
                                    positions[None].to(self.device))
        self.forward_count += 1
        self.last_mask_path = "causal" if own_causal else "additive"
        self._pending = tree
        self._pending_slots = len(slots) if slots is not None else 0
        self.slot_logits = out.logits[0, Q:].float() if slots is not None else None
        if self.capture_hidden:
            self.last_hidden = hidden.value[0, :Q]  # [1 + N, H]
        return out.logits[0, :Q].float()  # [1 + N, V]

    @torch.inference_mode()
    def commit(self, path: list[int], next_token: int) -> None:
        """Keep the accepted tree nodes `path` (root to leaf) in the cache; `next_token` becomes the
        new last committed token (the bonus or correction, not yet in the cache)."""
        tree = self._pending
        if tree is None:
            raise RuntimeError("commit() without a pending score()")
        keep = [0] + [1 + node for node in path]  # row 0 (the old last token) is now committed history
        if self.capture_hidden:
            self._hidden_at_commit = self.last_hidden[keep[-1]]
        hf_compat.compact(self.cache, keep, num_new=1 + tree.num_nodes + self._pending_slots)
        self.committed.extend(tree.tokens[path].tolist() + [int(next_token)])
        self._pending = None

    def last_hidden_at_commit(self) -> torch.Tensor | None:
        """[H] last-layer hidden state at the last accepted row: the state that predicted the token
        just committed (heads drafters read it to propose with no extra target forward)."""
        return self._hidden_at_commit

    def reset(self) -> None:
        self.cache, self.committed, self._pending = None, [], None
        self.last_hidden, self._hidden_at_commit = None, None
        self._pending_slots, self.slot_logits = 0, None
