"""Lossless sampling (algorithms.md §6): one warp for target and drafter, and rejection sampling over
chains and trees, as pure functions with an explicit `torch.Generator`.

Every rule here is the step of Leviathan et al. (2023), accept a drafted x with min(1, p(x) / q(x)),
else go on with the residual norm(max(0, p - q)), taken with the proposal q each child was really
drawn from (`DraftTree.kind`):

    IID                  q = the child's draft distribution                      (SpecInfer, MSS)
    WITHOUT_REPLACEMENT  q = the siblings' distribution, earlier siblings removed (EAGLE-1)
    DETERMINISTIC        q = a point mass on the child: accept with p(x), zero it (EAGLE-2)

A drawn tree may also hold fixed candidates (`DraftTree.fixed`: prompt lookup's nodes merged into a
drafter's sampled tree). At each node they are tried first, as point masses, and the drawn children after,
against what the fixed trials left of p: each phase is a lossless step from the law it starts with, as long
as which nodes are fixed does not depend on the drawn children's values. A node both fixed and drawn takes
both trials: rejected as a fixed candidate, it still meets its drawn trial (which cannot pass, p(x) being
zero by then) so that the residual subtracts the q it was drawn from; skipping that biases the law.

Shapes: `N` tree nodes, `V` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from specdiff.acceptance import Acceptance
from specdiff.types import DraftTree, ProposalKind, children


@dataclass(frozen=True)
class SamplingSettings:
    """The warp applied to target and drafter logits alike before any ratio. top_k 0 and top_p 1 are off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"sampling needs temperature > 0, got {self.temperature}; "
                             "temperature 0 is greedy decoding, which takes no SamplingSettings")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")

    def warpers(self) -> LogitsProcessorList:
        """transformers' own warpers, in `generate`'s order and with its rules for skipping one."""
        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k != 0:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., V] (context processors already applied) -> warped probabilities [..., V], fp32."""
        rows = logits.float().reshape(-1, logits.shape[-1])  # [R, V]: the warpers want 2-D scores
        return torch.softmax(self.warpers()(None, rows), dim=-1).reshape(logits.shape)


def sample_token(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One draw from probs [V], on the generator's device."""
    return int(torch.multinomial(probs.to(generator.device), 1, generator=generator))


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, device=generator.device))


def _normalised(mass: torch.Tensor) -> torch.Tensor | None:
    """mass [V] / its sum, or None when nothing is left (the zero-mass guard)."""
    total = mass.sum()
    return mass / total if total > 0 else None


def speculative_step(target_probs: torch.Tensor, proposal: torch.Tensor, token: int,
                     generator: torch.Generator) -> tuple[bool, torch.Tensor]:
    """One trial of `token` ~ proposal [V] against target_probs [V] (Leviathan et al. 2023, Alg. 1).

    Returns (accepted, the law to go on with): target_probs when accepted, else the residual
    norm(max(0, p - q)). `u q(x) < p(x)` is `u < p(x) / q(x)` without dividing, so a token with
    p(x) = 0 never passes. The residual has no mass only when p = q up to rounding, where a
    rejection cannot happen in exact arithmetic; p itself is then the law.
    """
    if _uniform(generator) * float(proposal[token]) < float(target_probs[token]):
        return True, target_probs
    residual = _normalised((target_probs - proposal).clamp(min=0))  # [V]
    return False, target_probs if residual is None else residual


# --- the proposal each child was drawn from, per ProposalKind ---------------------------------------


def _draft_dist(tree: DraftTree, node: int, like: torch.Tensor) -> torch.Tensor:
    """draft_dists[node] as fp32 on the target's device, zero-padded to the target's V."""
    dist = tree.draft_dists[node].to(device=like.device, dtype=torch.float32)
    return torch.nn.functional.pad(dist, (0, like.shape[-1] - dist.shape[-1]))


def _distinct(tokens: list[int], siblings: list[int]) -> list[int]:
    """The first sibling of each token (EAGLE skips repeats: a rejected token cannot pass again)."""
    first: dict[int, int] = {}
    for node in siblings:
        first.setdefault(tokens[node], node)
    return list(first.values())


def _iid_trials(tree, tokens, siblings, like) -> Iterator[tuple[int, torch.Tensor]]:
    # Each child is an independent draw from its own q (SpecInfer allows one q per child). A repeated
    # token is still a trial: it cannot pass (its residual mass is zero after the first rejection),
    # but the residual subtracts q once per draw, as in SpecInfer's proof.
    for node in siblings:
        yield node, _draft_dist(tree, node, like)


def _without_replacement_trials(tree, tokens, siblings, like) -> Iterator[tuple[int, torch.Tensor]]:
    # The siblings share one q; the i-th was drawn from q with the earlier ones' tokens removed.
    remaining = _draft_dist(tree, siblings[0], like).clone()  # [V]
    for node in _distinct(tokens, siblings):
        proposal = _normalised(remaining)
        if proposal is None:  # q has nothing left, so no further child could have been drawn from it
            return
        yield node, proposal
        remaining[tokens[node]] = 0


def _point_mass_trials(tree, tokens, siblings, like) -> Iterator[tuple[int, torch.Tensor]]:
    # A fixed candidate is a draw from δ_x: accept with p(x), residual = p with x zeroed (EAGLE-2).
    for node in _distinct(tokens, siblings):
        yield node, torch.nn.functional.one_hot(torch.tensor(tokens[node], device=like.device),
                                                like.shape[-1]).float()


def _mixed_trials(drawn_trials, fixed: list[bool], drawn: list[bool]):
    """Trials of a drawn tree with fixed candidates: the fixed siblings as point masses, then the drawn ones."""
    def trials(tree, tokens, siblings, like) -> Iterator[tuple[int, torch.Tensor]]:
        yield from _point_mass_trials(tree, tokens, [node for node in siblings if fixed[node]], like)
        sampled = [node for node in siblings if drawn[node]]
        if sampled:
            yield from drawn_trials(tree, tokens, sampled, like)
    return trials


_TRIALS = {
    ProposalKind.IID: _iid_trials,
    ProposalKind.WITHOUT_REPLACEMENT: _without_replacement_trials,
    ProposalKind.DETERMINISTIC: _point_mass_trials,
}


def check_tree(tree: DraftTree, vocab_size: int) -> None:
    """Refuse a tree whose proposal kind has no lossless rule here, or lacks the q it needs."""
    if tree.kind not in _TRIALS:
        raise ValueError(f"no lossless sampling rule for proposal kind {tree.kind!r}; a drafter must declare "
                         f"one of {[kind.name for kind in _TRIALS]}")
    if tree.kind is ProposalKind.DETERMINISTIC or tree.num_nodes == 0:
        return
    if tree.draft_dists is None:
        raise ValueError(f"a {tree.kind.name} tree needs draft_dists (the distributions its children were "
                         "drawn from); give them, or declare the candidates DETERMINISTIC")
    if tree.draft_dists.shape[-1] > vocab_size:
        raise ValueError(f"draft_dists cover {tree.draft_dists.shape[-1]} tokens, more than the target's "
                         f"{vocab_size}; cut the drafter's distributions to the shared vocabulary")


def rejection_sample(tree: DraftTree, target_probs: torch.Tensor, generator: torch.Generator) -> Acceptance:
    """Recursive rejection sampling down the tree (SpecInfer Alg. 2, residual matched to tree.kind).

    target_probs [1 + N, V], warped: row 0 after the committed token, row i + 1 after node i. At each
    node the children are tried in order; the first accepted one is walked into. When none is (or the
    node is a leaf), the next token is drawn from what is left of the target's law there. On a chain
    of IID drafts this is exactly the Leviathan rule, bonus token included.
    """
    N, V = tree.num_nodes, target_probs.shape[-1]
    if target_probs.shape[0] != N + 1:
        raise ValueError(f"target_probs must have 1 + N = {N + 1} rows, got {target_probs.shape[0]}")
    check_tree(tree, V)
    trials, kids, tokens = _TRIALS[tree.kind], children(tree.parents), tree.tokens.tolist()
    if tree.fixed is not None:
        trials = _mixed_trials(trials, tree.fixed.tolist(), (tree.draft_dists.sum(-1) > 0).tolist())
    path: list[int] = []
    node = -1  # the committed token
    while True:
        law = target_probs[node + 1]  # [V]
        siblings = kids[node if node >= 0 else N]
        for child, proposal in trials(tree, tokens, siblings, law) if siblings else ():
            accepted, law = speculative_step(law, proposal, tokens[child], generator)
            if accepted:
                path.append(child)
                node = child
                break
        else:  # no child passed, or a leaf: the next token comes from what is left of the law
            return Acceptance(path=path, next_token=sample_token(law, generator))


def sampled_accept(tree: DraftTree, target_logits: torch.Tensor, settings: SamplingSettings,
                   generator: torch.Generator) -> Acceptance:
    """The loop's accept at temperature > 0: warp target_logits [1 + N, V] (already processed per
    node), then `rejection_sample`. Bind settings and generator with functools.partial."""
    return rejection_sample(tree, settings.probs(target_logits), generator)
