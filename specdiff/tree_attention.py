"""Tree attention that leaves the cache unmasked.

In a tree (or block) forward over a cached prefix, every query sees every cached key: only the
[Q, R] block over the forward's own rows (and earlier uncommitted rows) needs a mask. The additive
path hands SDPA a [Q, T] mask and, with a mask, transformers repeats the cached keys and values for
every query head of a GQA group (`repeat_kv`). This function instead stacks the query heads of a
group as extra rows against the shared keys, scores the whole cache with no mask and adds the
[Q, R] mask to the last R columns only; one softmax over all T keys equals the log-sum-exp merge of
"cache unmasked" and "tree masked" (same maths, one pass).

It is registered under `NAME` through transformers' `AttentionInterface` and switched on per
forward by `hf_compat.attention_implementation` (the model's own `attn_implementation` switch):
no modeling file is forked, nothing is patched.
"""

from __future__ import annotations

import torch

NAME = "specdiff_tree"


def tree_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, H, Q, D], key/value [B, Hkv, T, D], attention_mask [1, 1, Q, R] additive over the
    last R keys (the first T - R keys, the cache, are all visible) -> output [B, Q, H, D]."""
    if kwargs.get("softcap") is not None:
        raise ValueError("tree attention does not do logit soft-capping; the engine uses the additive path for it")
    B, H, Q, D = query.shape
    Hkv, T = key.shape[1], key.shape[-2]
    R = attention_mask.shape[-1]
    group = H // Hkv
    scale = scaling if scaling is not None else D ** -0.5
    grouped = query.reshape(B, Hkv, group * Q, D)  # the query heads sharing a KV head, stacked as rows
    scores = torch.matmul(grouped, key.transpose(-1, -2)).mul_(scale)  # [B, Hkv, group * Q, T]
    scores.view(B, Hkv, group, Q, T)[..., T - R:].add_(attention_mask.to(scores.dtype))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, Hkv, group * Q, D]
    return out.view(B, H, Q, D).transpose(1, 2).contiguous(), None
