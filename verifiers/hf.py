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
from specdiff.masks import additive_mask, allowed_keys, query_positions
from specdiff.types import DraftTree


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
    def prefill(self, input_ids: list[int]) -> None:
        """Cache `input_ids[:-1]`. A prompt that extends what is committed reuses the cache (chat)."""
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
        if new_ids:
            positions = torch.arange(cached, cached + len(new_ids), device=self.device)[None]
            ids = torch.tensor([new_ids], device=self.device)
            with hf_compat.capture_last_hidden(self.model, self.capture_hidden) as hidden:
                hf_compat.forward(self.model, ids, self.cache, position_ids=positions)
            hf_compat.trim_to_window(self.cache)
            if self.capture_hidden:
                self._hidden_at_commit = hidden.value[0, -1]  # [H]: it predicts input_ids[-1]
        self.committed = list(input_ids)
        self._pending = None

    @torch.inference_mode()
    def score(self, tree: DraftTree) -> torch.Tensor:
        """Target logits [1 + N, V] (fp32) for the committed token and every tree node, in one forward."""
        if self.cache is None:
            raise RuntimeError("call prefill() before score()")
        if self._pending is not None:
            raise RuntimeError("score() called twice without commit()")
        cache_length = hf_compat.cache_length(self.cache)
        parents = tree.parents.cpu()
        masks = {
            group.name: additive_mask(
                allowed_keys(parents, cache_length, hf_compat.visible_cache_rows(self.cache, group), group.window),
                self.dtype,
                self.device,
            )
            for group in hf_compat.layer_groups(self.cache)
        }
        ids = torch.cat([torch.tensor([self.committed[-1]]), tree.tokens.cpu()])[None].to(self.device)
        positions = query_positions(parents, cache_length)[None].to(self.device)
        with hf_compat.capture_last_hidden(self.model, self.capture_hidden) as hidden:
            out = hf_compat.forward(self.model, ids, self.cache, hf_compat.pack_masks(masks), positions)
        self.forward_count += 1
        self._pending = tree
        if self.capture_hidden:
            self.last_hidden = hidden.value[0]  # [1 + N, H]
        return out.logits[0].float()  # [1 + N, V]

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
        hf_compat.compact(self.cache, keep, num_new=1 + tree.num_nodes)
        self.committed.extend(tree.tokens[path].tolist() + [int(next_token)])
        self._pending = None

    def last_hidden_at_commit(self) -> torch.Tensor | None:
        """[H] last-layer hidden state at the last accepted row: the state that predicted the token
        just committed (heads drafters read it to propose with no extra target forward)."""
        return self._hidden_at_commit

    def reset(self) -> None:
        self.cache, self.committed, self._pending = None, [], None
        self.last_hidden, self._hidden_at_commit = None, None
