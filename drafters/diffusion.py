"""Diffusion drafters (DiffuSpec, DEER): committed context + k mask tokens -> k per-position
distributions in ONE forward, returned as a pruned `TokenLattice` (algorithms.md §1-2).

Two ways to run a diffusion LM, chosen by `block_causal`:

- block diffusion (default for decoders, i.e. models that `generate`, such as the zoo's
  LlamaForCausalLM drafter): attention is causal over the committed context and bidirectional
  inside the masked block (the "context-causal" mask of Fast-dLLM v2 / SDAR). The drafter keeps a
  KV cache of the committed ids like an AR model, feeds the not-yet-cached ids and the k masks in
  one forward, then crops the block off the cache (DESIGN.md §7);
- bidirectional masked LMs (`AutoModelForMaskedLM`, LLaDA, Dream and other remote-code dLLMs):
  the whole context plus the masks is re-encoded every step.

`shift_logits`: Dream was initialised from an AR model and keeps its convention, logits[j]
predict token j + 1, so position i of the block is read from the row before it. Other models
(LLaDA, BERT-style, the zoo drafter) predict each mask in place.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import GenerationMixin

from specdiff import hf_compat
from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.kv import CachedLM
from specdiff.lattice import ContextLattice, LatticePruning, prune_lattice
from specdiff.masks import context_block_visible
from specdiff.processing import process_paths
from specdiff.vocab import shared_vocab_size

# model_type -> why its logits are shifted by one position.
SHIFTED_LOGITS_MODEL_TYPES = {"Dream": "Dream predicts token j + 1 at position j (AR-initialised)"}


def mask_token_id_of(model, tokenizer=None, explicit: int | None = None) -> int:
    """The mask id: explicit, else the tokenizer's, else the model config's or generation config's."""
    sources = (
        explicit,
        getattr(tokenizer, "mask_token_id", None),
        getattr(model.config, "mask_token_id", None),
        getattr(getattr(model, "generation_config", None), "mask_token_id", None),
    )
    for value in sources:
        if value is not None:
            return int(value)
    raise ValueError(
        f"{type(model).__name__} has no mask token: pass mask_token_id=... (LLaDA: 126336, Dream: 151666), "
        "or tokenizer=... with a mask token, or set model.config.mask_token_id"
    )


def _eos_ids(model, tokenizer, explicit: Sequence[int] | int | None) -> tuple[int, ...]:
    if explicit is None:
        generation_config = getattr(model, "generation_config", None)
        explicit = getattr(generation_config, "eos_token_id", None)
        if explicit is None:
            explicit = getattr(model.config, "eos_token_id", None)
        if explicit is None and tokenizer is not None:
            explicit = tokenizer.eos_token_id
    if explicit is None:
        return ()
    return (int(explicit),) if isinstance(explicit, int) else tuple(int(t) for t in explicit)


def block_probs(logits: torch.Tensor, shared_vocab: int, mask_token_id: int, processors=None,
                context: list[int] | None = None) -> torch.Tensor:
    """[k, V'] logits of a mask block -> [k, V] probabilities over the shared vocabulary; the mask
    token is never proposed. The target's processors (repetition penalty...) are applied with the
    committed context at every position, so the drafts lean the way the target's decoding rule does."""
    logits = logits[:, :shared_vocab].float()
    if mask_token_id < shared_vocab:
        logits[:, mask_token_id] = float("-inf")
    if processors:
        logits = process_paths(processors, context, [[]] * logits.shape[0], logits)
    return torch.softmax(logits, dim=-1)


class DiffusionDrafter:
    """Drafts `min(k, budget)` positions per step as a `ContextLattice` (DiffuSpec Eq. 7 pruning).

    model: any Hugging Face diffusion or masked LM. mask_token_id: explicit, or found on the
    tokenizer / config. k: the longest block; the loop's budget cuts it, so with
    `AdaptiveDraftLength` set k >= its k_max. block_causal: None = True for decoders (transformers `GenerationMixin`),
    False otherwise. shift_logits: None = True for the model types in SHIFTED_LOGITS_MODEL_TYPES.
    eos_token_ids: the lattice ends at the first position whose argmax is one of them (default:
    the model's). max_context: re-encoding mode only, keep the last this many context tokens (for
    models with short absolute position tables, e.g. BERT's 512).
    """

    needs = DraftNeeds()

    def __init__(self, model, mask_token_id: int | None = None, k: int = 8, *, tokenizer=None,
                 block_causal: bool | None = None, shift_logits: bool | None = None,
                 pruning: LatticePruning = LatticePruning(), eos_token_ids: Sequence[int] | int | None = None,
                 max_context: int | None = None):
        if k < 1:
            raise ValueError(f"k (draft block length) must be >= 1, got {k}")
        if max_context is not None and max_context < 1:
            raise ValueError(f"max_context must be >= 1 or None (whole context), got {max_context}")
        self.block_causal = isinstance(model, GenerationMixin) if block_causal is None else block_causal
        self.lm = CachedLM(model, pack_one_row=True) if self.block_causal else None  # block mode: the KV cache
        model_type = getattr(model.config, "model_type", "")
        self.shift_logits = model_type in SHIFTED_LOGITS_MODEL_TYPES if shift_logits is None else shift_logits
        self.model, self.k, self.tokenizer, self.pruning = model.eval(), k, tokenizer, pruning
        self.mask_token_id = mask_token_id_of(model, tokenizer, mask_token_id)
        self.eos_token_ids = _eos_ids(model, tokenizer, eos_token_ids)
        self.max_context = max_context
        self.vocab_size = hf_compat.output_vocab_size(model)
        self.shared_vocab = self.vocab_size
        self._reencoded_forwards = 0
        self.reset()

    @property
    def forward_count(self) -> int:
        return self._reencoded_forwards + (self.lm.forward_count if self.lm is not None else 0)

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        self.shared_vocab = shared_vocab_size(target_vocab_size, self.vocab_size, tokenizer, self.tokenizer)

    def reset(self) -> None:
        if self.lm is not None:
            self.lm.reset()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> ContextLattice:
        k = min(self.k, ctx.budget)
        if self.block_causal:
            logits = self._block_logits(ctx.token_ids, k)
        else:
            logits = self._reencoded_logits(ctx.token_ids, k)
        probs = self._probs(logits, ctx.processors, ctx.token_ids)
        return prune_lattice(probs, self.eos_token_ids, self.pruning, context=ctx.token_ids)

    def _probs(self, logits: torch.Tensor, processors=None, context: list[int] | None = None) -> torch.Tensor:
        return block_probs(logits, self.shared_vocab, self.mask_token_id, processors, context)

    def _block_logits(self, token_ids: list[int], k: int) -> torch.Tensor:
        """One forward of [uncached committed ids, k masks]; the cache keeps only the committed rows."""
        # Shifted logits read the block's first position from the row before it: re-feed the last id.
        cached = self.lm.sync(token_ids[:-1] if self.shift_logits else token_ids)
        new_ids = token_ids[cached:]
        n = len(new_ids)
        out = self.lm.forward(new_ids + [self.mask_token_id] * k, torch.arange(cached, cached + n + k),
                              context_block_visible(n, k))
        self.lm.compact(list(range(n)), new_ids)  # the mask block goes
        first = n - 1 if self.shift_logits else n
        return out.logits[first : first + k]  # [k, V]

    def _reencoded_logits(self, token_ids: list[int], k: int) -> torch.Tensor:
        context = token_ids[-self.max_context :] if self.max_context is not None else token_ids
        ids = torch.tensor([list(context) + [self.mask_token_id] * k], device=self.device)
        logits = self.model(input_ids=ids).logits[0]  # [T + k, V]
        self._reencoded_forwards += 1
        first = len(context) - 1 if self.shift_logits else len(context)
        return logits[first : first + k]  # [k, V]
