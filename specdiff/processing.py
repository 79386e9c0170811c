"""Context-dependent logits processors, applied per tree node with that node's own path as context.

The processors are transformers' own (`RepetitionPenaltyLogitsProcessor`,
`NoRepeatNGramLogitsProcessor`), so the result equals `generate` with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from specdiff.types import DraftTree, ancestor_mask, tree_depths


def build_processors(repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=repetition_penalty))
    if no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    return processors


@dataclass(frozen=True)
class RowContexts:
    """Per-row context ids as one tensor: ids [R, L], row r's context is ids[r, :lengths[r]]; past
    its length a row is padded with its own first id (harmless for set-based processors)."""

    ids: torch.Tensor
    lengths: list[int]

    @classmethod
    def from_lists(cls, contexts: list[list[int]]) -> "RowContexts":
        width = max((len(context) for context in contexts), default=0)
        return cls(torch.tensor([context + context[:1] * (width - len(context)) if context else [0] * width
                                 for context in contexts], dtype=torch.long).reshape(len(contexts), width),
                   [len(context) for context in contexts])

    @classmethod
    def for_tree(cls, tree: DraftTree, committed: torch.Tensor) -> "RowContexts":
        """[1 + N] rows: row 0 = committed [T], row i + 1 = committed + the path to node i; built with
        tensor ops (no per-node Python copy of the context)."""
        T, N = len(committed), tree.num_nodes
        depths = tree_depths(tree.parents)  # [N]
        D = int(depths.max()) + 1 if N else 0
        ids = committed[:1].repeat(1 + N, T + D)  # [1 + N, T + D], padded with the first id
        ids[:, :T] = committed
        node, ancestor = ancestor_mask(tree.parents).nonzero(as_tuple=True)  # ancestor is on node's path
        ids[1 + node, T + depths[ancestor]] = tree.tokens.cpu()[ancestor]
        return cls(ids, [T] + (T + depths + 1).tolist())


def process_rows(processors: LogitsProcessorList | None, contexts: RowContexts | list[list[int]],
                 logits: torch.Tensor) -> torch.Tensor:
    """logits [R, V] -> processed logits, row r with context ids `contexts[r]`."""
    if not processors:
        return logits
    if not isinstance(contexts, RowContexts):
        contexts = RowContexts.from_lists(contexts)
    ids = contexts.ids.to(logits.device)
    if len(contexts.lengths) > 1 and min(contexts.lengths) > 0 and all(_set_based(p) for p in processors):
        # The penalty only asks which ids occur, so the padded rows go through in one call.
        return processors(ids, logits.clone())
    return torch.stack([processors(ids[r : r + 1, :length], row[None].clone())[0]
                        for r, (length, row) in enumerate(zip(contexts.lengths, logits))])


def process_paths(processors: LogitsProcessorList | None, committed: list[int] | torch.Tensor,
                  paths: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
    """logits [R, V] -> processed logits, row r after `committed` + paths[r] (a drafter's rows: its
    drafts so far). No processors: no work at all; else the context is one tensor, not R Python copies."""
    if not processors:
        return logits
    base = torch.as_tensor(committed, dtype=torch.long)  # [T]
    T, width = len(base), max((len(path) for path in paths), default=0)
    ids = base[:1].repeat(len(paths), T + width) if T else torch.zeros(len(paths), width, dtype=torch.long)
    ids[:, :T] = base
    for r, path in enumerate(paths):
        ids[r, T : T + len(path)] = torch.as_tensor(path, dtype=torch.long)
    return process_rows(processors, RowContexts(ids, [T + len(path) for path in paths]), logits)


def _set_based(processor) -> bool:
    """A processor whose result depends only on the set of context ids (not their order or count)."""
    return (type(processor) is RepetitionPenaltyLogitsProcessor
            and getattr(processor, "prompt_ignore_length", None) is None)


def apply_per_node(processors: LogitsProcessorList, tree: DraftTree, logits: torch.Tensor,
                   committed: torch.Tensor) -> torch.Tensor:
    """logits [1 + N, V] -> processed logits, each row with its own root-to-node context;
    committed [T] the committed ids."""
    if not processors:
        return logits
    return process_rows(processors, RowContexts.for_tree(tree, committed), logits)
