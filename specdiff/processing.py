"""Context-dependent logits processors, applied per tree node with that node's own path as context.

The processors are transformers' own (`RepetitionPenaltyLogitsProcessor`,
`NoRepeatNGramLogitsProcessor`), so the result equals `generate` with the same settings.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from specdiff.types import DraftTree, path_to


def build_processors(repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=repetition_penalty))
    if no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    return processors


def row_contexts(tree: DraftTree, committed: list[int]) -> list[list[int]]:
    """[1 + N] contexts: row 0 = committed ids, row i + 1 = committed ids + path to node i."""
    tokens = tree.tokens.tolist()
    return [committed] + [committed + [tokens[j] for j in path_to(tree.parents, i)] for i in range(tree.num_nodes)]


def process_rows(processors: LogitsProcessorList | None, contexts: list[list[int]],
                 logits: torch.Tensor) -> torch.Tensor:
    """logits [R, V] -> processed logits, row r with context ids `contexts[r]`."""
    if not processors:
        return logits
    if len(contexts) > 1 and all(contexts) and all(_set_based(p) for p in processors):
        # The penalty only asks which ids occur, so each context can be padded with its own first id
        # and every row goes through in one call.
        width = max(len(context) for context in contexts)
        ids = torch.tensor([context + context[:1] * (width - len(context)) for context in contexts],
                           device=logits.device)
        return processors(ids, logits.clone())
    rows = []
    for context, row in zip(contexts, logits):
        ids = torch.tensor([context], device=logits.device)
        rows.append(processors(ids, row[None].clone())[0])
    return torch.stack(rows)


def _set_based(processor) -> bool:
    """A processor whose result depends only on the set of context ids (not their order or count)."""
    return (type(processor) is RepetitionPenaltyLogitsProcessor
            and getattr(processor, "prompt_ignore_length", None) is None)


def apply_per_node(processors: LogitsProcessorList, tree: DraftTree, logits: torch.Tensor,
                   committed: list[int]) -> torch.Tensor:
    """logits [1 + N, V] -> processed logits, each row with its own root-to-node context."""
    if not processors:
        return logits
    return process_rows(processors, row_contexts(tree, committed), logits)
