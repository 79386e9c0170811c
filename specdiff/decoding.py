"""The speculative decoding loop (DESIGN.md §1): draft, search, verify, accept, commit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from specdiff.acceptance import Acceptance
from specdiff.config import DecodingConfig
from specdiff.drafters.base import DraftContext, Drafter
from specdiff.lattice import tokens_before_eos
from specdiff.metrics import GenerationStats
from specdiff.policies import DraftLengthPolicy
from specdiff.processing import apply_per_node
from specdiff.sampling import SamplingSettings
from specdiff.trees.base import MeasuringTreeBuilder, TreeBuilder
from specdiff.types import DraftTree, tree_depths
from specdiff.verifiers.hf import HFVerifier, VerifyOutput


@dataclass
class Components:
    verifier: HFVerifier
    drafter: Drafter
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
    slots_for = drafter.query_slots if drafter.needs.query_slots else None  # TiDAR drafts inside the forward
    # verify_time counts the target's forwards only (DESIGN.md §5): processors, acceptance and the
    # cache's commit are the loop's own work, what the efficiency column shows.
    forward_clock = verifier.forward_seconds
    scored = verifier.prefill(prompt_ids, slots_for(prompt_ids, None) if slots_for else None)
    stats.verify_time += verifier.forward_seconds - forward_clock  # the prefill: a target forward, no step's
    forward_clock = verifier.forward_seconds
    # The rows of `scored` whose tokens are committed; the last one predicted the last committed token.
    rows = list(range(scored.hidden.shape[1])) if scored.hidden is not None else []
    parts.length_policy.reset()
    generated = 0
    while generated < config.max_new_tokens:
        # The bonus token always comes on top, so never draft past the last allowed token.
        budget = min(parts.length_policy.current(), config.max_new_tokens - generated - 1)
        drafter_forwards = drafter.forward_count
        clock = time.perf_counter()
        # 1. draft (the context is the verifier's own list, not a copy: drafters only read it)
        ctx = next_context(parts, verifier.committed, budget, scored, rows, processors)
        proposal = drafter.propose(ctx) if budget > 0 else None
        # 2. search
        tree = parts.tree_builder.build(proposal, budget) if proposal is not None else DraftTree.empty()
        stats.draft_time += time.perf_counter() - clock
        # 3. verify: one target forward over the whole tree
        scored = verifier.score(tree, slots_for(verifier.committed, tree) if slots_for else None)
        target_logits = apply_per_node(processors, tree, scored.logits, verifier.committed_ids)
        # 4. accept (the one host sync of the step: the accepted path)
        acceptance = cut_at_eos(tree, parts.accept(tree, target_logits), config.eos_token_ids)
        if parts.on_step is not None:
            parts.on_step(tree, acceptance)
        # 5. commit
        verifier.commit(acceptance.path, acceptance.next_token)
        verify_seconds = verifier.forward_seconds - forward_clock
        stats.verify_time += verify_seconds
        forward_clock = verifier.forward_seconds
        if isinstance(parts.tree_builder, MeasuringTreeBuilder):  # sizes its trees by what steps cost here
            parts.tree_builder.observe(tree, acceptance.path, verify_seconds, time.perf_counter() - clock)
        rows = [0] + [1 + node for node in acceptance.path]
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


def next_context(parts: Components, committed: list[int], budget: int, scored: VerifyOutput, rows: list[int],
                 processors) -> DraftContext:
    """The drafter's view after a verifier forward: its hidden states at the last committed row `rows[-1]`
    (and at every one of `rows`, for a drafter that keeps a history) and its slots' logits."""
    last = scored.hidden_at(rows[-1]) if rows else None
    history = scored.hidden_rows(rows) if parts.drafter.needs.hidden_history and rows else None
    return DraftContext(committed, budget, last, parts.sampling, parts.generator, processors,
                        scored.slot_logits, history, scored.hidden_start)
