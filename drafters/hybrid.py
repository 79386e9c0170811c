"""Prompt lookup merged with a model drafter: one tree of both, each node scored by how often such nodes were accepted.

Lookup and a trained drafter are right in different places. On Spec-Bench (SmolLM2-135M, fp32) lookup's tau is
1.98 on translation and 1.49 on summaries, where the reply copies its input, and EAGLE's 1.10 and 1.15; on
maths and questions EAGLE leads (1.67 and 1.33 against 1.52 and 1.29). A step that drafts both, in one tree,
takes the better of the two at each position for one verify forward (SAM-Decoding, Hu et al. 2024, and
ArcticInference's suffix + model drafters choose one or the other per step; a tree takes both where rows are
cheap).

What makes the merge choosable by size is one scale for both kinds of node. The model's nodes carry its
probabilities; a lookup node gets the measured rate at which lookup nodes of the same match length (the
n-gram matched) and depth were accepted when their parent was, over this drafter's life (`MatchRates`). A size
chooser (`trees.MeasuredSize`) then keeps the nodes worth their verify rows, from either source.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Callable

import torch

from specdiff.drafters.base import DraftContext
from specdiff.drafters.lookup import PromptLookupDrafter
from specdiff.types import DraftTree, ProposalKind, Source, tree_depths


class MatchRates:
    """Acceptance rate of lookup nodes by (n-gram matched, depth), given that the node's parent was accepted.

    A rate is (hits + prior * strength) / (trials + strength); counts halve once a key passes `memory` trials,
    so the rate follows the generation (a reply that starts copying its input). Scoring reads the ids the
    generation went on to commit: greedy verification accepts a node exactly when its path is a prefix of
    them, so the count is exact when greedy and an estimate when sampling (it only sizes the tree)."""

    def __init__(self, prior: float = 0.5, strength: float = 2.0, memory: int = 256):
        if not 0.0 < prior < 1.0 or strength <= 0 or memory < 1:
            raise ValueError(f"need 0 < prior < 1, strength > 0, memory >= 1, got {prior}, {strength}, {memory}")
        self.prior, self.strength, self.memory = prior, strength, memory
        self._counts: dict[tuple[int, int], list[float]] = {}  # (n, depth) -> [hits, trials]
        self._context: list[int] | None = None  # the ids of the generation in progress
        self._pending: deque[tuple[int, int, list[list[int]]]] = deque()  # (context length, n, continuations)

    def rate(self, n: int, depth: int) -> float:
        hits, trials = self._counts.get((n, depth), (0.0, 0.0))
        return (hits + self.prior * self.strength) / (trials + self.strength)

    def record(self, n: int, depth: int, hit: bool) -> None:
        counts = self._counts.setdefault((n, depth), [0.0, 0.0])
        counts[0] += hit
        counts[1] += 1
        if counts[1] > self.memory:
            counts[0] /= 2
            counts[1] /= 2

    def book(self, token_ids: list[int], n: int, continuations: list[list[int]]) -> None:
        """Score the drafts whose continuation is now committed, then hold this step's for later."""
        if token_ids is not self._context:  # a new generation: its predecessor's last drafts are never scored
            self._context = token_ids
            self._pending.clear()
        while self._pending:
            length, matched, drafted = self._pending[0]
            if length + max(map(len, drafted)) > len(token_ids):
                break
            self._pending.popleft()
            self.score(matched, drafted, token_ids[length:])
        if continuations:
            self._pending.append((len(token_ids), n, continuations))

    def score(self, n: int, continuations: list[list[int]], committed: list[int]) -> None:
        """Count each node of the trie of `continuations` whose parent is a prefix of `committed`."""
        seen: set[tuple[int, ...]] = set()
        for continuation in continuations:
            for depth in range(1, min(len(continuation), len(committed)) + 1):
                path = tuple(continuation[:depth])
                if path in seen:
                    continue
                seen.add(path)
                if list(path[:-1]) != committed[: depth - 1]:
                    break
                self.record(n, depth, path[-1] == committed[depth - 1])


class HybridDrafter:
    """`SpecDiff(target, HybridDrafter(model_drafter, PromptLookupDrafter(...)))`, with a size chooser
    (`MeasuredSize`) as the tree builder: alone it verifies the whole union.

    model_tree: turns the model drafter's proposal into a tree (e.g. `Chain()`, `OptTree(16)` for a lattice);
    model_depth: the model drafter drafts at most this deep (its own cost grows with depth; lookup's is nil);
    model_cap: called each step, a further cap on the model drafter's depth (e.g. the trees a `MeasuredSize` keeps:
    `MeasuredDraftLength(sized, model_depth).current`). The budget (`DraftContext.budget`) caps both; only the
    model's depth may follow what is kept: lookup drafts cost nothing, and a lookup capped by shallow kept trees
    would never draft the long copies that would be kept (MT-Bench extraction: tau 4.4 for lookup alone).
    When sampling with a model drafter that draws its tokens (an IID tree), the model's nodes stay drawn and
    lookup's join as fixed candidates (`DraftTree.fixed`): a drawn token keeps its min(1, p/q) test (a
    fixed one passes with p). No size chooser may then cut the tree by probability (that would make every node
    fixed), so lookup's trie is cut here instead, by what is known before the step's draws: its nodes whose
    path of match rates is above `sampled_cut`; the model drafter's depth by `model_cap` and its own rule.
    Otherwise (greedy, or a model drafter of fixed candidates) the tree is DETERMINISTIC as a whole."""

    def __init__(self, model_drafter, lookup: PromptLookupDrafter, model_tree, model_depth: int | None = None,
                 rates: MatchRates | None = None, model_cap: Callable[[], int] | None = None,
                 sampled_cut: float = 0.4):
        if lookup.shapes is not None:
            raise ValueError("the hybrid sizes the merged tree itself: build its PromptLookupDrafter with "
                             "measure_shape=False")
        self.model_drafter, self.lookup, self.model_tree = model_drafter, lookup, model_tree
        self.model_depth = model_drafter.k if model_depth is None else model_depth
        if self.model_depth < 1:
            raise ValueError(f"model_depth must be >= 1, got {self.model_depth}")
        if not 0.0 <= sampled_cut < 1.0:
            raise ValueError(f"sampled_cut must be in [0, 1), got {sampled_cut}")
        self.rates, self.model_cap, self.sampled_cut = rates or MatchRates(), model_cap, sampled_cut
        self.needs = model_drafter.needs
        self.k = max(self.model_depth, lookup.k)

    @property
    def forward_count(self) -> int:
        return self.model_drafter.forward_count

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        self.model_drafter.bind(target_vocab_size, tokenizer)

    def reset(self) -> None:
        self.model_drafter.reset()

    def propose(self, ctx: DraftContext) -> DraftTree:
        model_budget = min(ctx.budget, self.model_depth, self.model_cap() if self.model_cap else self.model_depth)
        proposal = self.model_drafter.propose(_with_budget(ctx, model_budget))
        model = DraftTree.empty() if proposal is None else self.model_tree.build(proposal, model_budget)
        n, continuations = self.lookup.match(ctx)
        self.rates.book(ctx.token_ids, n, continuations)
        rates = [self.rates.rate(n, d) for d in range(1, self.lookup.k + 1)]
        if ctx.sampling is not None and model.kind is ProposalKind.IID:  # even without a match: keeps it uncut
            return merge(model, cut_by_rates(continuations, rates, self.sampled_cut), rates)
        if not continuations:
            return model
        return merge(model, continuations, rates)


def _with_budget(ctx: DraftContext, budget: int) -> DraftContext:
    return ctx if ctx.budget == budget else replace(ctx, budget=budget)


def merge(model: DraftTree, continuations: list[list[int]], depth_rates: list[float]) -> DraftTree:
    """The union of `model`'s tree and the trie of `continuations`; draft_probs [N]: the model's probability for
    its nodes, depth_rates[depth - 1] for lookup's. Model nodes keep their order (a topological one); lookup's new
    nodes follow.

    A drawn (IID) `model` stays drawn and lookup's nodes join it as fixed candidates (`DraftTree.fixed`); a node
    both propose keeps its drawn row and takes lookup's rate (so that nothing about a fixed node depends on a
    draw); lookup's new nodes get all-zero draft_dists rows (not drawn). Any other `model`: the merged tree is
    DETERMINISTIC, a node both propose taking the larger probability. `source` says who proposed each node (a
    node both propose is accepted more often than either number says: a size chooser learns by how much)."""
    drawn = model.kind is ProposalKind.IID
    tokens, parents = model.tokens.tolist(), model.parents.tolist()
    if model.draft_probs is not None:
        probs = model.draft_probs.float().tolist()
    else:  # a model tree without probabilities: its nodes rank as lookup's of the same depth
        probs = [depth_rates[min(d, len(depth_rates) - 1)] for d in tree_depths(model.parents).tolist()]
    fixed = [False] * len(tokens)
    source = [Source.MODEL] * len(tokens)
    index = {(parent, token): i for i, (parent, token) in enumerate(zip(parents, tokens))}
    for continuation in continuations:
        parent = -1
        for depth, token in enumerate(continuation):
            rate = depth_rates[min(depth, len(depth_rates) - 1)]
            node = index.get((parent, token))
            if node is None:
                node = index[(parent, token)] = len(tokens)
                tokens.append(token), parents.append(parent), probs.append(rate), fixed.append(True)
                source.append(Source.LOOKUP)
            else:
                probs[node], fixed[node] = (rate if drawn else max(probs[node], rate)), True
                source[node] = Source.BOTH if node < model.num_nodes else source[node]
            parent = node
    tokens, parents, probs = (torch.tensor(tokens, dtype=torch.long), torch.tensor(parents, dtype=torch.long),
                              torch.tensor(probs, dtype=torch.float32))
    source = torch.tensor(source, dtype=torch.int8)
    if not drawn:
        return DraftTree(tokens, parents, probs, kind=ProposalKind.DETERMINISTIC, source=source)
    dists = model.draft_dists
    dists = torch.cat([dists, dists.new_zeros(len(tokens) - model.num_nodes, dists.shape[-1])])  # [N, V]
    return DraftTree(tokens, parents, probs, dists, ProposalKind.IID, torch.tensor(fixed), source)


def cut_by_rates(continuations: list[list[int]], depth_rates: list[float], cut: float) -> list[list[int]]:
    """The continuations cut before the first depth whose path of depth_rates is `cut` or below (the rates
    depend on depth only, so one depth for all); a function of the context and past steps only."""
    paths = torch.tensor(depth_rates, dtype=torch.float64).cumprod(0)  # [k]
    depth = int((paths > cut).int().cumprod(0).sum())
    return [continuation[:depth] for continuation in continuations if depth]
