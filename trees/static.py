"""Static tree builders: the chain (default)."""

from __future__ import annotations

import torch

from specdiff.types import DraftTree, TokenLattice, ProposalKind, tree_depths


def truncate_depth(tree: DraftTree, max_depth: int) -> DraftTree:
    """Drop nodes deeper than `max_depth` (depth counted from 1 for roots). Parents stay valid
    because a kept node's ancestors are shallower and also kept."""
    keep = (tree_depths(tree.parents) < max_depth).nonzero().flatten()
    if len(keep) == tree.num_nodes:
        return tree
    remap = torch.full((tree.num_nodes,), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    parents = tree.parents[keep]
    parents = torch.where(parents >= 0, remap[parents.clamp(min=0)], parents)
    return DraftTree(
        tree.tokens[keep], parents,
        None if tree.draft_probs is None else tree.draft_probs[keep],
        None if tree.draft_dists is None else tree.draft_dists[keep],
        tree.kind,
    )


class Chain:
    """A lattice becomes its argmax chain; a tree passes through, cut at the budget's depth."""

    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree:
        if isinstance(proposal, DraftTree):
            return truncate_depth(proposal, budget)
        length = min(proposal.length, budget)
        best = proposal.probs[:length].argmax(dim=-1)  # [L]
        rows = torch.arange(length)
        tokens = proposal.candidates[rows, best]
        dists = None if proposal.dists is None else proposal.dists[:length]
        return DraftTree.chain(tokens, proposal.probs[rows, best], dists, ProposalKind.DETERMINISTIC)
