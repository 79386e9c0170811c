"""Token lattices from per-position draft distributions (DiffuSpec §3.3).

A diffusion drafter predicts every position of a block independently; the lattice keeps, per
position, the few candidates worth searching. Shapes: `L` positions, `K` candidates, `V` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from specdiff.types import DraftTree, TokenLattice


@dataclass(frozen=True)
class LatticePruning:
    """DiffuSpec Eq. 7: position i keeps its smallest top-m set whose mass reaches `tau`, m <= `max_candidates`.

    Paper defaults: tau = 0.8, M_max = 15 (gains stop there, DiffuSpec Fig. 7).
    """

    tau: float = 0.8
    max_candidates: int = 15

    def __post_init__(self):
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau (cumulative mass kept per position) must be in (0, 1], got {self.tau}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


@dataclass(frozen=True)
class ContextLattice(TokenLattice):
    """A lattice that also carries the committed ids it continues, so a path search can score
    context + path with a causal proxy (DiffuSpec Eq. 8) without importing the drafter."""

    context: tuple[int, ...] = ()


def eos_cut(dists: torch.Tensor, eos_token_ids: Sequence[int]) -> int:
    """Positions to keep: up to and including the first one whose argmax is EOS (all if none)."""
    if not eos_token_ids:
        return dists.shape[0]
    is_eos = torch.isin(dists.argmax(dim=-1), torch.tensor(list(eos_token_ids), device=dists.device))  # [L]
    hits = is_eos.nonzero().flatten()
    return int(hits[0]) + 1 if len(hits) else dists.shape[0]


def _top(dists: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The m most probable tokens per row, by probability then id, so equal probabilities come
    out in a fixed order (topk leaves ties unordered)."""
    ids = dists.topk(m, dim=-1).indices.sort(dim=-1).values  # [L, m], ascending ids
    probs = dists.gather(1, ids)
    order = probs.sort(dim=-1, descending=True, stable=True).indices
    return probs.gather(1, order), ids.gather(1, order)


def prune_lattice(
    dists: torch.Tensor,
    eos_token_ids: Sequence[int] = (),
    pruning: LatticePruning = LatticePruning(),
    context: Sequence[int] = (),
) -> ContextLattice:
    """dists [L, V] (probabilities) -> lattice of candidates [L', K], probs [L', K], dists [L', V].

    The lattice ends at the first position whose argmax is EOS (that position included); every
    position keeps each EOS id among its candidates. Candidates are sorted by probability, EOS
    appended after them when it was not in the top set; slots past a position's kept set are
    padding with probability 0 (the position's top token repeated).
    """
    dists = dists[: eos_cut(dists, eos_token_ids)]
    L, V = dists.shape
    top_probs, top_ids = _top(dists, min(pruning.max_candidates, V))  # [L, M], descending
    mass_before = top_probs.cumsum(dim=-1) - top_probs
    keep = mass_before < pruning.tau  # a prefix of each row: the smallest set reaching tau
    if eos_token_ids:
        eos = torch.tensor(list(eos_token_ids), device=dists.device).expand(L, -1)  # [L, E]
        eos_missing = ~((top_ids[:, :, None] == eos[:, None, :]) & keep[:, :, None]).any(dim=1)  # [L, E]
        top_ids = torch.cat([top_ids, eos], dim=1)
        top_probs = torch.cat([top_probs, dists.gather(1, eos)], dim=1)
        keep = torch.cat([keep, eos_missing], dim=1)
    # Move each row's kept slots to the front (stable, so probability order is preserved).
    order = torch.sort((~keep).int(), dim=1, stable=True).indices
    K = int(keep.sum(dim=1).max()) if L else 1
    order = order[:, :K]
    kept = keep.gather(1, order)
    candidates = torch.where(kept, top_ids.gather(1, order), top_ids[:, :1])
    probs = torch.where(kept, top_probs.gather(1, order), torch.zeros((), dtype=top_probs.dtype))
    return ContextLattice(candidates, probs, dists, context=tuple(context))


def tokens_before_eos(proposal: TokenLattice | DraftTree | None, eos_token_ids: Sequence[int]) -> int | None:
    """DiffuSpec Eq. 9, L^gen: length of the raw argmax draft before its first EOS (the whole
    lattice when there is none). None for proposals that are not lattices."""
    if not isinstance(proposal, TokenLattice):
        return None
    rows = torch.arange(proposal.length)
    argmax_tokens = proposal.candidates[rows, proposal.probs.argmax(dim=-1)].tolist()  # [L]
    for i, token in enumerate(argmax_tokens):
        if token in eos_token_ids:
            return i
    return proposal.length
