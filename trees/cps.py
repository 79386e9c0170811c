"""Causal-consistency path search (DiffuSpec §3.3, Eq. 8): turn a diffusion drafter's lattice into
the path an autoregressive target is most likely to accept.

Each lattice position was predicted without seeing the tokens chosen before it, so its argmax
chain can be incoherent ("the the"). A left-to-right beam search re-scores candidates with a causal
proxy: S(path) = sum_i [ lambda * log p_dlm(path_i) + (1 - lambda) * log p_causal(path_i | context, path_<i) ].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from specdiff.hf_compat import output_vocab_size
from specdiff.kv import CachedLM
from specdiff.lattice import ContextLattice
from specdiff.masks import query_parents, query_positions
from specdiff.trees.static import truncate_depth
from specdiff.types import DraftTree, ProposalKind, TokenLattice, ancestor_mask, tree_depths, tree_from_sequences


class CausalProxy(Protocol):
    """Scores next-token candidates left to right: the n-gram models of `specdiff.ngram`, or `CausalLMProxy`."""

    def log_probs(self, context: Sequence[int], prefixes: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        """[B, K]: log p(candidates[k] | context + prefixes[b])."""


@dataclass(frozen=True)
class Beam:
    """A partial path and its score S (Eq. 8)."""

    tokens: tuple[int, ...]
    score: float
    finished: bool  # placed an EOS: carried forward with its score, competing with longer beams


@dataclass(frozen=True)
class CausalConsistencySearch:
    """Beam search over a `TokenLattice` (DiffuSpec Alg. 1); a `DraftTree` passes through, cut at the budget.

    proxy: the causal LM proxy; dlm_weight: lambda (1 = the drafter's scores only, 0 = the proxy's
    only); beam_size: B; num_paths: 1 returns the best path as a chain (the paper), more merges the
    top beams into a tree; eos_token_ids: a beam that places one of them is finished.
    The context the proxy conditions on comes with the lattice (`specdiff.lattice.ContextLattice`);
    a plain lattice is scored from its own first position. Paper defaults: lambda 0.5, B 3.
    """

    proxy: CausalProxy
    dlm_weight: float = 0.5
    beam_size: int = 3
    num_paths: int = 1
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.dlm_weight <= 1.0:
            raise ValueError(f"dlm_weight (lambda) must be in [0, 1], got {self.dlm_weight}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 1 <= self.num_paths <= self.beam_size:
            raise ValueError(f"num_paths must be in [1, beam_size={self.beam_size}], got {self.num_paths}")
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))

    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree:
        if isinstance(proposal, DraftTree):
            return truncate_depth(proposal, budget)
        beams = self.search(proposal, min(proposal.length, budget))
        paths = [list(beam.tokens) for beam in beams[: self.num_paths] if beam.tokens]
        return _with_draft_probs(tree_from_sequences(paths), proposal)

    def search(self, lattice: TokenLattice, length: int) -> list[Beam]:
        """The final beams, best first, over the first `length` lattice positions."""
        context = lattice.context if isinstance(lattice, ContextLattice) else ()
        beams = [Beam((), 0.0, False)]
        for position in range(length):
            live = [beam for beam in beams if not beam.finished]
            if not live:
                break
            valid = lattice.probs[position] > 0  # slots past the pruned set are padding
            candidates = lattice.candidates[position][valid]  # [K]
            scores = self._scores(lattice.probs[position][valid], context, live, candidates)  # [B, K]
            expanded = self._top_expansions(live, candidates, scores)
            beams = sorted([b for b in beams if b.finished] + expanded, key=lambda b: -b.score)[: self.beam_size]
        return beams

    def _scores(self, dlm_probs, context, live: list[Beam], candidates: torch.Tensor) -> torch.Tensor:
        """[B, K] path scores after appending each candidate to each live beam (Eq. 8)."""
        scores = torch.tensor([beam.score for beam in live], dtype=torch.float32)[:, None].repeat(1, len(candidates))
        if self.dlm_weight > 0:  # the weight-0 terms are skipped, not multiplied: 0 * -inf is nan
            scores += self.dlm_weight * dlm_probs.float().log().cpu()[None]
        if self.dlm_weight < 1:
            proxy = self.proxy.log_probs(context, [list(beam.tokens) for beam in live], candidates.cpu())
            scores += (1 - self.dlm_weight) * proxy
        return scores

    def _top_expansions(self, live: list[Beam], candidates: torch.Tensor, scores: torch.Tensor) -> list[Beam]:
        B, K = scores.shape
        top = scores.flatten().topk(min(self.beam_size, B * K))
        expanded = []
        for score, index in zip(top.values.tolist(), top.indices.tolist()):
            if score == float("-inf"):
                continue
            beam, token = live[index // K], int(candidates[index % K])
            expanded.append(Beam(beam.tokens + (token,), score, token in self.eos_token_ids))
        return expanded


def _with_draft_probs(tree: DraftTree, lattice: TokenLattice) -> DraftTree:
    """The tree with each node's drafter probability (and distribution) at its lattice position."""
    if tree.num_nodes == 0:
        return tree
    depths = tree_depths(tree.parents)  # [N]
    if lattice.dists is not None:
        probs = lattice.dists[depths, tree.tokens]
        dists = lattice.dists[depths]
    else:
        matches = lattice.candidates[depths] == tree.tokens[:, None]  # [N, K]
        probs = torch.where(matches, lattice.probs[depths], torch.zeros(())).amax(dim=1)
        dists = None
    return DraftTree(tree.tokens, tree.parents, probs, dists, ProposalKind.DETERMINISTIC)


class CausalLMProxy:
    """A small Hugging Face causal LM as the proxy ("a tiny causal LM", DiffuSpec §3.3).

    Its model and KV cache are a `CachedLM` holding the committed context (all but the last token,
    like the verifier); it scores every beam's prefix in one forward per search depth, the beams
    merged into a tree.
    """

    def __init__(self, model):
        self.lm = CachedLM(model.eval(), pack_one_row=True)
        self.model = model
        self.vocab_size = output_vocab_size(model)

    @property
    def forward_count(self) -> int:
        return self.lm.forward_count

    def reset(self) -> None:
        self.lm.reset()

    @torch.inference_mode()
    def log_probs(self, context: Sequence[int], prefixes: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        if not context:
            raise ValueError("CausalLMProxy needs a non-empty context; give the lattice its committed ids")
        self._sync(list(context[:-1]))
        tree = tree_from_sequences(prefixes)
        logits = self._tree_logits(int(context[-1]), tree)  # [1 + N, V]
        rows = [1 + _last_node(tree, prefix) for prefix in prefixes]
        log_probs = torch.log_softmax(logits[rows], dim=-1)  # [B, V]
        in_vocab = candidates < log_probs.shape[-1]
        out = torch.full((len(prefixes), len(candidates)), float("-inf"))
        out[:, in_vocab] = log_probs[:, candidates[in_vocab]].cpu()
        return out

    def _sync(self, ids: list[int]) -> None:
        """Cache exactly `ids`, reusing the longest cached prefix."""
        kept = self.lm.sync(ids)
        if kept < len(ids):
            self.lm.forward(ids[kept:])

    def _tree_logits(self, last_token: int, tree: DraftTree) -> torch.Tensor:
        """Logits [1 + N, V] after the last committed token and after each tree node; the cache is left as it was."""
        ids = torch.cat([torch.tensor([last_token]), tree.tokens])
        positions = query_positions(tree.parents, len(self.lm.ids))
        out = self.lm.forward(ids, positions, ancestor_mask(query_parents(tree.parents)))
        self.lm.drop(1 + tree.num_nodes)
        return out.logits.float()


def _last_node(tree: DraftTree, sequence: list[int]) -> int:
    """The trie node that ends `sequence` (-1 for the empty sequence)."""
    child = {(parent, token): i for i, (parent, token) in enumerate(zip(tree.parents.tolist(), tree.tokens.tolist()))}
    node = -1
    for token in sequence:
        node = child[(node, int(token))]
    return node
