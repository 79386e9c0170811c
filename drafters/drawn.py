"""A lattice drafter's chain, drawn when sampling: `SpecDiff(target, DrawnChain(lattice_drafter))`.

A lattice drafter (DFlash, the diffusion drafters, Medusa heads) reports a distribution per position,
each fixed before anything is drawn. Greedy, the tree policy takes the argmax chain. Sampling, a chain
of fixed picks passes each token with the target's p(x) only (DETERMINISTIC), where a token drawn from
the drafter's q passes with min(1, p/q): 1 - TV(p, q) on average, more than p(argmax) when q is near p.
So here each position's token is drawn from its own row, and the chain is an IID `DraftTree` whose
draft_dists are those rows: the acceptance rule of SpecInfer / Leviathan, lossless as long as nothing
about a node depends on its own draw. Its length therefore comes from the lattice (the rows up to the
budget, cut before the first row whose most probable token has probability <= `threshold`: the
`Chain(threshold)` rule over the same lattice) and from the draws before a node (`path_cut`), never from
the node's own draw.

path_cut > 0 also stops the chain after the first drawn token whose path (the product of the drawn tokens'
probabilities so far) is <= path_cut: whether node j is drafted then depends on the draws before it, never on
its own (the confidence cut of `AutoregressiveDrafter(tree_threshold=...)`'s sampled chain). The hybrids need
it: a drawn chain is verified whole (no size chooser may cut it), and a block drafter's 15 rows cost 16 verify
rows a step.

Rows do not see the tokens drawn before them (a block drafter drafts all positions from the same
context): q_j is the drafter's marginal for position j, a valid proposal that ignores x_<j.
"""

from __future__ import annotations

import torch

from specdiff.drafters.base import DraftContext
from specdiff.sampling import sample_token
from specdiff.types import DraftTree, ProposalKind, TokenLattice


class DrawnChain:
    """Wraps a drafter whose proposals are `TokenLattice`s with dists. Greedy (or a proposal without dists,
    or a tree): the proposal as it is. Sampling: the chain drawn from the lattice's rows (IID)."""

    def __init__(self, drafter, threshold: float = 0.0, path_cut: float = 0.0):
        for name, value in (("threshold", threshold), ("path_cut", path_cut)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.drafter, self.threshold, self.path_cut = drafter, threshold, path_cut
        self.needs = drafter.needs
        self.k = drafter.k

    @property
    def forward_count(self) -> int:
        return self.drafter.forward_count

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        self.drafter.bind(target_vocab_size, tokenizer)

    def reset(self) -> None:
        self.drafter.reset()

    def propose(self, ctx: DraftContext) -> TokenLattice | DraftTree | None:
        proposal = self.drafter.propose(ctx)
        if ctx.sampling is None or not isinstance(proposal, TokenLattice) or proposal.dists is None:
            return proposal
        length = min(proposal.length, ctx.budget)
        if self.threshold > 0 and length:
            low = (proposal.probs[:length].max(dim=-1).values <= self.threshold).nonzero().flatten()
            length = int(low[0]) if len(low) else length
        if not length:
            return DraftTree.empty()
        tokens, path = [], 1.0
        for row in proposal.dists[:length]:
            tokens.append(sample_token(row, ctx.generator))
            path *= float(row[tokens[-1]])
            if path <= self.path_cut:
                break
        dists = proposal.dists[: len(tokens)]  # [L, V]
        tokens = torch.tensor(tokens, device=dists.device)
        probs = dists[torch.arange(len(tokens), device=dists.device), tokens]
        return DraftTree.chain(tokens, probs, dists, ProposalKind.IID)
