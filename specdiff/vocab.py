"""Vocabulary pairing between a target and a drafter, checked once at the boundary."""

from __future__ import annotations

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
