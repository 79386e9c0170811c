"""Additive float 4-D masks for a tree forward over a cached prefix.

The forward's queries are Q = 1 + N rows: row 0 is the last committed token (not yet in the cache),
row i + 1 is tree node i. A query sees the visible cached keys (inside its sliding window, if any)
and the rows on its own root-to-node path, itself included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdiff.types import ancestor_mask, tree_depths


def query_parents(parents: torch.Tensor) -> torch.Tensor:
    """[1 + N] parents over the query rows: row 0 is the root, node i hangs under row parents[i] + 1."""
    return torch.cat([torch.tensor([-1]), parents + 1])


def query_positions(parents: torch.Tensor, cache_length: int) -> torch.Tensor:
    """[1 + N] absolute positions: the committed token at cache_length, node i at cache_length + 1 + depth."""
    return tree_depths(query_parents(parents)) + cache_length


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


def context_block_visible(num_context: int, block: int) -> torch.Tensor:
    """[n + b, n + b] bool over one forward of n new context rows, then a block of b rows (block diffusion):
    the context rows are causal among themselves; the block rows see every context row and the whole block."""
    visible = torch.ones(num_context + block, num_context + block, dtype=torch.bool).tril()
    visible[num_context:, num_context:] = True
    return visible


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    """bool [Q, K] -> additive float [1, 1, Q, K]: 0 where allowed, finfo.min elsewhere.

    A bool mask is silently wrong under eager attention and an int mask under both (hf notes, Q1).
    """
    allowed = allowed.to(device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass(frozen=True)
class QuerySlots:
    """Extra query rows a drafter adds to a verifier forward (TiDAR's pre-draft blocks): their
    logits come back in `VerifyOutput.slot_logits`, their KV entries are dropped before the next step.

    tokens [E]; positions [E] absolute; sees [E, E] bool: which slots each slot attends to (itself
    included, if it should). Every slot sees the visible cached keys. anchors [E] (a `score`
    forward): slot e also sees main row anchors[e] and that row's root path ([last committed
    token, tree nodes] rows; -1: none of them). In a `prefill` forward every slot sees the whole
    prefilled prompt, and anchors is not used. Main rows never see slots, so main logits are
    exactly those of a forward without them.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    sees: torch.Tensor
    anchors: torch.Tensor | None = None

    def __post_init__(self):
        E = len(self.tokens)
        if self.positions.shape != (E,) or self.sees.shape != (E, E):
            raise ValueError(f"QuerySlots: tokens [{E}] need positions [{E}] and sees [{E}, {E}], got "
                             f"{tuple(self.positions.shape)} and {tuple(self.sees.shape)}")
        if self.anchors is not None and self.anchors.shape != (E,):
            raise ValueError(f"QuerySlots: anchors must be [{E}], got {tuple(self.anchors.shape)}")

    def __len__(self) -> int:
        return len(self.tokens)


def with_slots(main_allowed: torch.Tensor, main_pos: torch.Tensor, slots: QuerySlots,
               slot_sees_main: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed [Q + E, Q + E] over this forward's rows, positions [Q + E]) for main rows followed by slots.
    main_allowed [Q, Q]: main rows among themselves; slot_sees_main [E, Q]."""
    Q, E = len(main_pos), len(slots)
    top = torch.cat([main_allowed, torch.zeros(Q, E, dtype=torch.bool)], dim=1)
    bottom = torch.cat([slot_sees_main, slots.sees.bool().cpu()], dim=1)
    return torch.cat([top, bottom]), torch.cat([main_pos, slots.positions.cpu()])


def score_layout(parents: torch.Tensor, cache_length: int, slots: QuerySlots) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed [R, R], positions [R]) over a score forward's rows: [last committed token, tree nodes], then slots."""
    paths = ancestor_mask(query_parents(parents))  # [Q, Q]: row i sees its root path
    Q = len(paths)
    anchors = slots.anchors.cpu() if slots.anchors is not None else torch.full((len(slots),), -1)
    if len(slots) and int(anchors.max()) >= Q:
        raise ValueError(f"QuerySlots anchor {int(anchors.max())} is past the forward's {Q} rows")
    sees_main = torch.where((anchors >= 0)[:, None], paths[anchors.clamp(min=0)], False)
    return with_slots(paths, query_positions(parents, cache_length), slots, sees_main)
