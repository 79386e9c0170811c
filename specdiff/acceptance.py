"""Acceptance: which tree path the target agrees with, as pure functions of (tree, target logits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdiff.types import DraftTree, path_to


@dataclass(frozen=True)
class Acceptance:
    path: list[int]  # accepted tree nodes, root to deepest
    next_token: int  # bonus (all of the path accepted) or correction token, emitted after the path

    def new_tokens(self, tree: DraftTree) -> list[int]:
        return tree.tokens[self.path].tolist() + [self.next_token]


def greedy_accept(tree: DraftTree, target_logits: torch.Tensor) -> Acceptance:
    """Deepest path whose every token is the target's argmax, plus the target's argmax after it.

    target_logits [1 + N, V]: row 0 after the committed token, row i + 1 after node i (already
    processed: penalties applied per node with its own path as context). Ties in depth go to the
    first node in topological order, so the result is deterministic.
    """
    N = tree.num_nodes
    if target_logits.shape[0] != N + 1:
        raise ValueError(f"target_logits must have 1 + N = {N + 1} rows, got {target_logits.shape[0]}")
    target_tokens = target_logits.argmax(dim=-1).tolist()  # [1 + N]
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    accepted_depth = [-1] * N  # -1: not accepted
    best_node, best_depth = -1, 0
    for node in range(N):
        parent = parents[node]
        parent_ok = parent < 0 or accepted_depth[parent] >= 0
        if parent_ok and tokens[node] == target_tokens[parent + 1]:
            accepted_depth[node] = 1 + (accepted_depth[parent] if parent >= 0 else 0)
            if accepted_depth[node] > best_depth:
                best_node, best_depth = node, accepted_depth[node]
    return Acceptance(path=path_to(tree.parents, best_node), next_token=target_tokens[best_node + 1])
