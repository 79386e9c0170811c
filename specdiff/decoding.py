"""The speculative decoding loop (DESIGN.md §1): draft, search, verify, accept, commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from specdiff.acceptance import Acceptance
from specdiff.config import DecodingConfig
from specdiff.drafters.base import DraftContext
from specdiff.lattice import tokens_before_eos
from specdiff.metrics import GenerationStats
from specdiff.policies import DraftLengthPolicy
from specdiff.processing import apply_per_node
from specdiff.sampling import SamplingSettings
from specdiff.trees.base import TreeBuilder
from specdiff.types import DraftTree, tree_depths
from specdiff.verifiers.hf import HFVerifier


@dataclass
class Components:
    verifier: HFVerifier
    drafter: object  # specdiff.drafters.Drafter
    tree_builder: TreeBuilder
    length_policy: DraftLengthPolicy
    accept: Callable[[DraftTree, torch.Tensor], Acceptance]  # greedy_accept, or sampled_accept bound to the below
    sampling: SamplingSettings | None = None  # the drafter's warp (None: greedy)
    generator: torch.Generator | None = None  # the run's one generator, shared by drafter and acceptance
    on_step: Callable[[DraftTree, Acceptance], None] | None = None  # observer, e.g. trees.TreeRecorder


def cut_at_eos(tree: DraftTree, acceptance: Acceptance, eos_ids: tuple[int, ...]) -> Acceptance:
    """Stop at the first EOS, even when it was accepted in the middle of the path."""
    path_tokens = tree.tokens[acceptance.path].tolist()
    for i, token in enumerate(path_tokens):
        if token in eos_ids:
            return Acceptance(path=acceptance.path[:i], next_token=token)
    return acceptance


def speculative_decode(
    parts: Components, prompt_ids: list[int], config: DecodingConfig, processors, stats: GenerationStats
) -> Iterator[list[int]]:
    """Yield the new tokens of each step until EOS or `config.max_new_tokens`."""
    verifier, drafter = parts.verifier, parts.drafter
    # Drafters that draft inside the verifier's forward (TiDAR) add query slots to it.
    slots_for = getattr(drafter, "query_slots", None)
    verifier.prefill(prompt_ids, slots_for(prompt_ids, None) if slots_for is not None else None)
    parts.length_policy.reset()
    generated = 0
    while generated < config.max_new_tokens:
        # The bonus token always comes on top, so never draft past the last allowed token.
        budget = min(parts.length_policy.current(), config.max_new_tokens - generated - 1)
        drafter_forwards = drafter.forward_count
        # 1. draft
        hidden = verifier.last_hidden_at_commit() if verifier.capture_hidden else None
        ctx = DraftContext(list(verifier.committed), budget, hidden, parts.sampling, parts.generator, processors,
                           verifier.slot_logits)
        proposal = drafter.propose(ctx) if budget > 0 else None
        # 2. search
        tree = parts.tree_builder.build(proposal, budget) if proposal is not None else DraftTree.empty()
        # 3. verify: one target forward over the whole tree
        slots = slots_for(verifier.committed, tree) if slots_for is not None else None
        target_logits = apply_per_node(processors, tree, verifier.score(tree, slots), verifier.committed)
        # 4. accept
        acceptance = cut_at_eos(tree, parts.accept(tree, target_logits), config.eos_token_ids)
        if parts.on_step is not None:
            parts.on_step(tree, acceptance)
        # 5. commit
        verifier.commit(acceptance.path, acceptance.next_token)
        new_tokens = acceptance.new_tokens(tree)
        depth = int(tree_depths(tree.parents).max()) + 1 if tree.num_nodes else 0
        stats.record_step(drafted=tree.num_nodes, depth=depth, accepted=len(acceptance.path))
        stats.drafter_forwards += drafter.forward_count - drafter_forwards
        parts.length_policy.update(drafted=depth, accepted=len(acceptance.path),
                                   generated_before_eos=tokens_before_eos(proposal, config.eos_token_ids))
        generated += len(new_tokens)
        stats.new_tokens = generated
        yield new_tokens
        if acceptance.next_token in config.eos_token_ids:
            return
