"""Additive float 4-D masks for a tree forward over a cached prefix.

The forward's queries are Q = 1 + N rows: row 0 is the last committed token (not yet in the cache),
row i + 1 is tree node i. A query sees the visible cached keys (inside its sliding window, if any)
and the rows on its own root-to-node path, itself included.
"""

from __future__ import annotations

import torch

from specdiff.types import ancestor_mask, tree_depths


def query_parents(parents: torch.Tensor) -> torch.Tensor:
    """[1 + N] parents over the query rows: row 0 is the root, node i hangs under row parents[i] + 1."""
    return torch.cat([torch.tensor([-1]), parents + 1])


def query_positions(parents: torch.Tensor, cache_length: int) -> torch.Tensor:
    """[1 + N] absolute positions: the committed token at cache_length, node i at cache_length + 1 + depth."""
    return tree_depths(query_parents(parents)) + cache_length


def allowed_keys(
    parents: torch.Tensor, cache_length: int, visible_cached: int, window: int | None
) -> torch.Tensor:
    """[Q, visible_cached + Q] bool for a verifier forward over [last committed token, tree nodes]."""
    q_pos = query_positions(parents, cache_length)
    return block_allowed(q_pos, ancestor_mask(query_parents(parents)), q_pos, cache_length, visible_cached, window)


def block_allowed(
    query_pos: torch.Tensor,
    tree_allowed: torch.Tensor,
    tree_key_pos: torch.Tensor,
    cache_length: int,
    visible_cached: int,
    window: int | None,
) -> torch.Tensor:
    """[Q, visible_cached + R] bool: query rows over the visible cached keys, then R uncommitted rows.

    query_pos [Q]; tree_allowed [Q, R]: which uncommitted rows (earlier tree rows still in the
    cache, then this forward's rows) each query may see; tree_key_pos [R] their positions.
    The visible cached keys are the last `visible_cached` committed positions.
    `window` (sliding layers): a key at position k is visible to a query at q iff q - k < window.
    """
    cached_pos = torch.arange(cache_length - visible_cached, cache_length)  # [C]
    key_pos = torch.cat([cached_pos, tree_key_pos])  # [C + R]
    allowed = torch.cat([torch.ones(len(query_pos), visible_cached, dtype=torch.bool), tree_allowed], dim=1)
    if window is not None:
        allowed &= (query_pos[:, None] - key_pos[None, :]) < window
    return allowed


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    """bool [Q, K] -> additive float [1, 1, Q, K]: 0 where allowed, finfo.min elsewhere.

    A bool mask is silently wrong under eager attention and an int mask under both (hf notes, Q1).
    """
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None].to(device)
