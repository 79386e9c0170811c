"""Vocabulary pairing between a target and a drafter, checked once at the boundary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

# LM heads are often padded to a multiple of 64/128 (Qwen: 151936 vs 152064 rows for one tokenizer).
_MAX_PADDING_ROWS = 256


def shared_vocab_size(target_vocab: int, drafter_vocab: int, target_tokenizer=None, drafter_tokenizer=None) -> int:
    """Rows both heads share; raises ValueError when the two cannot be speaking the same tokenizer."""
    if target_tokenizer is not None and drafter_tokenizer is not None:
        if target_tokenizer.get_vocab() != drafter_tokenizer.get_vocab():
            differing = len(set(target_tokenizer.get_vocab().items()) ^ set(drafter_tokenizer.get_vocab().items()))
            raise ValueError(
                f"the drafter's tokenizer differs from the target's ({differing} token/id pairs differ); "
                "use a drafter trained with the target's tokenizer"
            )
    shared = min(target_vocab, drafter_vocab)
    if target_tokenizer is not None and len(target_tokenizer) > shared:
        raise ValueError(
            f"the drafter's vocabulary has {drafter_vocab} rows but the target's tokenizer has "
            f"{len(target_tokenizer)} tokens; use a drafter with the target's tokenizer"
        )
    if target_tokenizer is None and abs(target_vocab - drafter_vocab) > _MAX_PADDING_ROWS:
        raise ValueError(
            f"vocabulary mismatch: target has {target_vocab} rows, drafter {drafter_vocab}; that is more "
            "than padding. Use a drafter with the target's tokenizer (pass tokenizer= so the check can "
            "compare tokenizers)"
        )
    return shared


# --- reduced draft vocabularies (FR-Spec; EAGLE-3's draft vocabulary) ----------------------------------

DRAFT_VOCAB_FILE = "draft_vocab.json"


def frequent_tokens(sequences, count: int, vocab_size: int) -> torch.Tensor:
    """[min(count, vocab_size)] the `count` most frequent ids over `sequences` (arrays of token ids; ties
    by id), ascending; never-seen ids fill up when the sequences hold fewer distinct tokens."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for sequence in sequences:
        counts += np.bincount(np.asarray(sequence, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    order = np.argsort(-counts, kind="stable")[:count]
    return torch.from_numpy(np.sort(order)).long()


def to_full_vocab(logits: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    """Logits [..., N] over a draft vocabulary's `ids` [N] -> [..., size], -inf at every other token."""
    full = logits.new_full((*logits.shape[:-1], size), float("-inf"))
    return full.index_copy_(-1, ids, logits)


def to_draft_indices(token_ids: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    """Target ids [...] (in [0, size)) -> indices into a draft vocabulary's `ids` [N], -1 for tokens outside it
    (the inverse of `to_full_vocab`)."""
    index = torch.full((size,), -1, dtype=torch.long, device=token_ids.device)
    index[ids.to(token_ids.device)] = torch.arange(len(ids), device=token_ids.device)
    return index[token_ids]


def write_draft_vocab(directory: str | Path, ids: torch.Tensor, about: dict) -> Path:
    """`draft_vocab.json` in a drafter model's directory: the token ids its reduced LM head keeps, and
    where they came from (`about`: data, count, coverage...)."""
    path = Path(directory) / DRAFT_VOCAB_FILE
    path.write_text(json.dumps({**about, "size": len(ids), "ids": [int(i) for i in ids]}) + "\n")
    return path


def read_draft_vocab(directory: str | Path) -> torch.Tensor | None:
    """The ids of `draft_vocab.json` in `directory`, or None when it has none (or is not a directory)."""
    path = Path(directory) / DRAFT_VOCAB_FILE
    if not path.is_file():
        return None
    ids = json.loads(path.read_text())["ids"]
    return torch.tensor(ids, dtype=torch.long)


def draft_vocab_for(model, draft_vocab="auto") -> torch.Tensor | None:
    """The reduced vocabulary a drafter model drafts over: "auto" reads `draft_vocab.json` from the
    directory it was loaded from (`model.name_or_path`; None when there is none), None keeps the whole
    head, a sequence gives the ids. Returns sorted distinct ids, or None for the whole vocabulary."""
    name = getattr(model, "name_or_path", "") or ""
    return resolve_draft_vocab(draft_vocab, name or None, model.get_output_embeddings().weight.shape[0])


def resolve_draft_vocab(draft_vocab, directory: str | Path | None, size: int) -> torch.Tensor | None:
    """`draft_vocab` ("auto": `draft_vocab.json` in `directory`, if any; None: the whole head; or ids)
    checked against a head of `size` rows: sorted distinct ids, or None for the whole vocabulary."""
    if isinstance(draft_vocab, str):
        if draft_vocab != "auto":
            raise ValueError(f"draft_vocab must be 'auto', None or a sequence of token ids, got {draft_vocab!r}")
        ids = read_draft_vocab(directory) if directory and Path(directory).is_dir() else None
    elif draft_vocab is None:
        return None
    else:
        ids = torch.as_tensor(list(draft_vocab) if not torch.is_tensor(draft_vocab) else draft_vocab, dtype=torch.long)
    if ids is None:
        return None
    ids = ids.unique()  # sorted
    if ids.dim() != 1 or len(ids) == 0 or ids.min() < 0 or ids.max() >= size:
        raise ValueError(f"draft_vocab must be token ids in [0, {size}) (the drafter's LM head rows), got "
                         f"{len(ids)} ids" + (f" in [{int(ids.min())}, {int(ids.max())}]" if len(ids) else ""))
    return None if len(ids) == size else ids
