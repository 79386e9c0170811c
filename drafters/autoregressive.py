"""A small Hugging Face causal LM as drafter (the baseline transformers' assisted generation uses)."""

from __future__ import annotations

import torch

from specdiff import hf_compat
from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.kv import CachedLM
from specdiff.sampling import SamplingSettings, sample_token
from specdiff.processing import process_paths
from specdiff.types import DraftTree, ProposalKind, ancestor_mask, path_to, tree_depths
from specdiff.vocab import draft_vocab_for, shared_vocab_size, to_full_vocab


class AutoregressiveDrafter:
    """Greedy chain of `k` tokens (top_k=1), or an OPT-Tree beam: per layer the `top_k` most
    probable paths, each expanded with its `top_k` best children, one batched drafter forward per
    layer. With `tree_threshold` set (OPT-Tree's delta), growth stops early once a layer adds
    <= delta to the expected acceptance length; None grows all `k` layers. A chain applies the same
    rule (a layer of one node adds its path probability): it stops after the first token whose chain
    probability is <= delta, so a drafter that is unsure drafts 1-2 tokens instead of paying `k`
    forwards. The rule depends only on the drafted tokens, so it is lossless when sampling too.

    The drafter's model and KV cache are a `CachedLM`: it holds the committed ids (and, for chains,
    its last drafts); each step it is synced back to the longest prefix that still matches them.

    draft_vocab: the tokens it may propose. "auto" (default): the ids in `draft_vocab.json` of the
    directory the model was loaded from when it has one (`specdiff train small-lm` writes the most
    frequent reply tokens), else all; None: all; or a sequence of ids. Only those rows of the LM head
    are computed (FR-Spec): on SmolLM2's small LM an 8192-token head halves a draft forward. Tokens
    outside it get probability 0, which the verifier's rules already cover, so output is unchanged.
    """

    needs = DraftNeeds()

    def __init__(self, model, k: int = 5, top_k: int = 1, tokenizer=None,
                 tree_threshold: float | None = None, draft_vocab="auto"):
        if k < 1:
            raise ValueError(f"k (draft length) must be >= 1, got {k}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if tree_threshold is not None and tree_threshold < 0:
            raise ValueError(f"tree_threshold (OPT-Tree's delta) must be >= 0, or None; got {tree_threshold}")
        self.draft_vocab = draft_vocab_for(model, draft_vocab)  # [N] sorted ids, or None: the whole head
        self.lm = CachedLM(model.eval(), head_rows=self.draft_vocab, row_padding="auto", pack_one_row=True)
        self.model, self.k, self.top_k, self.tokenizer = model, k, top_k, tokenizer
        self.tree_threshold = tree_threshold
        self.vocab_size = hf_compat.output_vocab_size(model)
        self._bind_columns(self.vocab_size)
        self.reset()

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        self._bind_columns(shared_vocab_size(target_vocab_size, self.vocab_size, tokenizer, self.tokenizer))

    def _bind_columns(self, shared_vocab: int) -> None:
        """Where the reduced head's columns go among the `shared_vocab` ids both heads have."""
        self.shared_vocab = shared_vocab
        if self.draft_vocab is not None:
            device = self.model.get_output_embeddings().weight.device
            inside = self.draft_vocab < shared_vocab
            self._kept = inside.nonzero().squeeze(-1).to(device)  # [N'] columns of the reduced logits
            self._ids = self.draft_vocab[inside].to(device)  # [N'] their token ids

    @property
    def forward_count(self) -> int:
        return self.lm.forward_count

    def reset(self) -> None:
        self.lm.reset()
        self._processors, self._committed = None, []

    def _logits(self, out) -> torch.Tensor:
        """[Q, V] float logits over the shared vocabulary; -inf outside a reduced draft vocabulary."""
        if self.draft_vocab is None:
            return out.logits[:, : self.shared_vocab].float()
        return to_full_vocab(out.logits[:, self._kept].float(), self._ids, self.shared_vocab)

    def _sync(self, token_ids: list[int]) -> torch.Tensor:
        """Cache all committed ids; return logits [V] after the last one."""
        keep = self.lm.sync(token_ids[:-1])  # at least the last id is fed: its row predicts the first draft
        return self._logits(self.lm.forward(token_ids[keep:]))[-1]

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> DraftTree:
        return self._draft(self._sync(ctx.token_ids), ctx)

    def _draft(self, logits: torch.Tensor, ctx: DraftContext) -> DraftTree:
        """The chain or the tree from `logits` [V] after the last committed id."""
        depth = min(self.k, ctx.budget)
        self._processors, self._committed = ctx.processors, ctx.token_ids
        if self.top_k == 1:
            return self._chain(logits, depth, ctx.sampling, ctx.generator)
        return self._tree(logits, depth, ctx.sampling)

    def _process(self, logits: torch.Tensor, paths: list[list[int]]) -> torch.Tensor:
        """The target's processors on drafter logits [R, V], row r after committed ids + paths[r]."""
        return process_paths(self._processors, self._committed, paths, logits)

    @staticmethod
    def _dists(logits: torch.Tensor, sampling: SamplingSettings | None) -> torch.Tensor:
        """[..., V] drafter distributions: plain softmax when greedy, the target's warp when sampling."""
        return torch.softmax(logits, dim=-1) if sampling is None else sampling.probs(logits)

    def _chain(self, logits: torch.Tensor, depth: int, sampling: SamplingSettings | None = None,
               generator: torch.Generator | None = None) -> DraftTree:
        """Greedy: the argmax chain. Sampling: each token drawn from the warped q it reports (IID)."""
        tokens, probs, dists = [], [], []
        path_prob = 1.0  # the chain's probability under the drafter: what this layer adds to E(A)
        for step in range(depth):
            dist = self._dists(self._process(logits[None], [tokens])[0], sampling)  # [V]
            token = int(dist.argmax()) if sampling is None else sample_token(dist, generator)
            tokens.append(token), probs.append(dist[token]), dists.append(dist)
            path_prob *= float(dist[token])
            if step == depth - 1 or (self.tree_threshold is not None and path_prob <= self.tree_threshold):
                break
            logits = self._extend(token)
        kind = ProposalKind.DETERMINISTIC if sampling is None else ProposalKind.IID
        return DraftTree.chain(tokens, torch.stack(probs), torch.stack(dists), kind)

    def _tree(self, root_logits: torch.Tensor, depth: int, sampling: SamplingSettings | None = None) -> DraftTree:
        """OPT-Tree's layer-wise beam (algorithms.md §4.2) with n = `top_k`: each layer expands the
        previous layer's n nodes with their top-n children and keeps the global top-n by path
        probability, so the tree holds n nodes per layer. With a `tree_threshold`, growth stops after
        a layer that raises E_sub (the sum of the n largest path probabilities so far) by <= it; that
        layer is kept (no one-layer lag as in the reference code). When sampling, the beam ranks the warped
        distributions; the candidates stay fixed top-n picks, so the tree is DETERMINISTIC."""
        tokens: list[int] = []
        parents: list[int] = []
        probs, dists = [], []
        path_probs = torch.ones(0, device=root_logits.device)  # [nodes so far]
        frontier, frontier_logits = [-1], root_logits[None]  # expand from the committed token
        fed: list[int] = []  # tree nodes whose KV are pending rows of the drafter's cache, in cache order
        cache_length = len(self.lm.ids)
        expected = 0.0  # E_sub over the layers so far
        for layer in range(depth):
            frontier_paths = [[tokens[i] for i in path_to(torch.tensor(parents), node)] if node >= 0 else []
                              for node in frontier]
            layer_dists = self._dists(self._process(frontier_logits, frontier_paths), sampling)  # [F, V]
            top = torch.topk(layer_dists, min(self.top_k, layer_dists.shape[-1]), dim=-1)  # [F, n]
            base = path_probs[frontier] if layer else torch.ones(1, device=path_probs.device)  # [F]
            candidate_probs = (base[:, None] * top.values).flatten()  # [F * n]
            best = torch.topk(candidate_probs, min(self.top_k, candidate_probs.numel())).indices
            rows, cols = best // top.values.shape[1], best % top.values.shape[1]  # [n] into [F, n]
            parents += [frontier[row] for row in rows.tolist()]
            frontier = list(range(len(tokens), len(tokens) + len(best)))
            tokens += top.indices[rows, cols].tolist()
            probs.append(top.values[rows, cols]), dists.append(layer_dists[rows])
            path_probs = torch.cat([path_probs, candidate_probs[best]])
            gain = float(torch.topk(path_probs, min(self.top_k, len(path_probs))).values.sum()) - expected
            expected += gain
            if layer == depth - 1 or (self.tree_threshold is not None and gain <= self.tree_threshold):
                break
            frontier_logits = self._feed_tree_rows(frontier, fed, tokens, parents, cache_length)
            fed.extend(frontier)
        self.lm.drop(len(fed))
        return DraftTree(torch.tensor(tokens), torch.tensor(parents), torch.cat(probs), torch.cat(dists))

    def _extend(self, token: int) -> torch.Tensor:
        """Feed one drafted token after the cached ones (a chain step); logits [V] after it."""
        return self._logits(self.lm.forward([token]))[-1]

    def _feed_tree_rows(self, rows, fed, tokens, parents, cache_length) -> torch.Tensor:
        """One forward over tree nodes `rows`; each sees the committed cache and its own ancestors."""
        parent_tensor = torch.tensor(parents)
        depths = tree_depths(parent_tensor)
        visible = ancestor_mask(parent_tensor)[rows][:, fed + rows]  # [F, pending + F]
        return self._forward_rows(rows, tokens, parents, depths[rows] + cache_length, visible)

    def _forward_rows(self, rows, tokens, parents, positions, visible) -> torch.Tensor:
        """Logits [F, V] of tree nodes `rows`, fed as pending rows at `positions` [F] seeing `visible`."""
        return self._logits(self.lm.forward([tokens[r] for r in rows], positions, visible))
