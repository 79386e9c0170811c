"""Everything that depends on the transformers version lives here (checked on 5.17 and 5.25).

- the forward kwarg is `cache=` from transformers 5.2x (`past_key_values=` is then a deprecated
  alias) and `past_key_values=` before; `cache_kwarg` reads which from the model's signature (a
  cache passed under the wrong name is swallowed by `**kwargs`: the model builds its own and ours
  stays empty),
- `DynamicCache.crop(n)` takes n <= 0 = "remove |n| tokens",
- sliding-window layers keep a `cumulative_length` and need `activate_past_recording()` before a
  tree forward can be compacted once the context is longer than the window; while recording, 5.17
  hands attention every recorded row, 5.2x only the last `window - 1` and the new ones
  (`visible_cache_rows` asks which),
- a 4-D additive float mask is passed to attention as-is; hybrid models take a dict keyed by
  layer type, models with one layer type a single tensor,
- `output_hidden_states=True` returns every layer's states; `capture_last_hidden` takes only the
  LM head's input (the last layer's, after the final norm) with a hook,
- a custom attention function is registered by name through `AttentionInterface` and switched on
  with the model's own `set_attn_implementation`; models whose attention does not go through the
  interface (XGLM; Falcon before transformers 5.25) report it through `_can_set_attn_implementation`.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from specdiff import tree_attention

_REFUSED_MODEL_TYPES = {
    "bloom": "Bloom builds ALiBi biases from a 2-D mask and cannot take a tree mask",
}


class UnsupportedModelError(ValueError):
    pass


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bars from transformers inside the block (they print on every load)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def check_supported(model) -> None:
    model_type = getattr(model.config, "model_type", "")
    if model_type in _REFUSED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{model_type} is not supported: {_REFUSED_MODEL_TYPES[model_type]}. "
            "Use a model with rotary or learned absolute positions (Llama, Qwen, Mistral, GPT-2, ...)."
        )
    if getattr(model.config, "alibi", False):
        raise UnsupportedModelError(
            f"{model_type} with alibi=True is not supported: ALiBi biases use flattened key indices, "
            "not tree depth. Load it with alibi=False (rotary) if the checkpoint allows."
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedModelError("encoder-decoder models are not supported; pass a causal LM")


def output_vocab_size(model) -> int:
    """Rows of the LM head, which may exceed the tokenizer's vocabulary (padded embeddings)."""
    return model.get_output_embeddings().weight.shape[0]


def new_cache(model) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            # Keep tree rows until `compact` crops: without this they fall out of the window first.
            layer.activate_past_recording()
    return cache


@dataclass(frozen=True)
class LayerGroup:
    """Layers that share one attention mask: 'full_attention' or 'sliding_attention' with a window."""

    name: str
    window: int | None
    layer_index: int  # a representative layer, to ask for its visible cache rows


def layer_groups(cache: DynamicCache) -> list[LayerGroup]:
    groups: dict[str, LayerGroup] = {}
    for index, layer in enumerate(cache.layers):
        if getattr(layer, "is_sliding", False):
            groups.setdefault("sliding_attention", LayerGroup("sliding_attention", layer.sliding_window, index))
        else:
            groups.setdefault("full_attention", LayerGroup("full_attention", None, index))
    return list(groups.values())


def full_attention_only(cache: DynamicCache) -> bool:
    """True when no layer slides: the model's own causal mask then covers a chain over the cache."""
    return all(not getattr(layer, "is_sliding", False) for layer in cache.layers)


@functools.cache
def _recording_window_returns_every_row() -> bool:
    """Whether a sliding layer that records its past hands attention every recorded row (transformers
    5.17) rather than the last `window - 1` cached rows plus the new ones (5.2x). Asked of a
    two-row window once: after 3 rows, a 1-row update returns 4 rows or 2."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    layer = DynamicSlidingWindowLayer(sliding_window=2)
    layer.activate_past_recording()
    states = torch.zeros(1, 1, 3, 1)
    layer.update(states, states)
    keys, _ = layer.update(states[:, :, :1], states[:, :, :1])
    return keys.shape[-2] == 4


def visible_cache_rows(cache: DynamicCache, group: LayerGroup) -> int:
    """How many cached keys (committed and pending) a layer of this group hands attention, before the
    next forward's own rows."""
    layer = cache.layers[group.layer_index]
    if not layer.is_initialized:
        return 0
    if group.window is None:
        return layer.get_seq_length()
    if _recording_window_returns_every_row():
        return layer.keys.shape[-2]
    return min(layer.get_seq_length(), group.window - 1)


def pack_masks(masks: dict[str, torch.Tensor]):
    """A single tensor when every layer has the same type (Llama, Mistral), else a dict (Gemma2/3)."""
    if len(masks) == 1:
        return next(iter(masks.values()))
    return masks


@functools.cache
def _cache_kwarg(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_kwarg(model) -> str:
    """The name under which this model's forward takes a cache: `cache` or `past_key_values`."""
    return _cache_kwarg(type(model))


def forward(model, input_ids, cache, attention_mask=None, position_ids=None, output_hidden_states=False,
            inputs_embeds=None):
    """One forward with a cache; returns the model output (logits [1, Q, V]). inputs_embeds [1, Q, E]:
    fed instead of `input_ids`' embeddings (drafters whose input is built from target features)."""
    return model(
        input_ids=None if inputs_embeds is not None else input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        output_hidden_states=output_hidden_states,
        **{cache_kwarg(model): cache},
    )


class RowsHead:
    """The LM head cut to `rows` [N] (token ids): logits [..., N] over those tokens only, computed from
    the base model's output (the LM head's input), so a drafter that proposes only frequent tokens
    skips most of the head's product (FR-Spec; EAGLE-3's draft vocabulary). On SmolLM2's 4-layer
    small LM the 49152-way head is half of a one-row forward. Valid only where `check_head_of_base` holds
    (no soft-capping or scaling after the head)."""

    def __init__(self, model, rows: torch.Tensor):
        head = model.get_output_embeddings()
        self.rows = torch.as_tensor(rows, dtype=torch.long).to(head.weight.device)
        self.weight = head.weight.detach()[self.rows]
        self.bias = None if head.bias is None else head.bias.detach()[self.rows]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.weight, self.bias)


@torch.inference_mode()
def check_head_of_base(model) -> None:
    """Raise ValueError unless a short forward's logits equal the model's LM head applied to its base
    model's output (Gemma2's final soft-capping or Cohere's logit scale would differ): what computing logits
    apart from the decoder (a reduced draft vocabulary, a compiled decoder) relies on."""
    config = model.config
    transformed = (getattr(config, "final_logit_softcapping", None) is not None
                   or getattr(config, "logit_scale", 1.0) not in (None, 1.0)
                   or getattr(config, "logits_scaling", 1.0) not in (None, 1.0))
    head = model.get_output_embeddings()
    ids = torch.arange(3, device=head.weight.device)[None] % model.get_input_embeddings().weight.shape[0]
    full = model(input_ids=ids, use_cache=False).logits[0].float()
    ours = head(base_model_forward(model, ids, None).last_hidden_state[0]).float()
    tolerance = 8 * torch.finfo(head.weight.dtype).eps * float(full.abs().max().clamp(min=1.0))
    if transformed or ours.shape != full.shape or not torch.allclose(ours, full, rtol=0, atol=tolerance):
        raise ValueError(
            f"{type(model).__name__}'s logits are not its LM head applied to its base model's output (it "
            "transforms them after the head, e.g. soft-capping or scaling), so they cannot be computed apart "
            "from the decoder; use the full head (draft_vocab=None) and an uncompiled engine")


def base_model_forward(model, input_ids, cache, attention_mask=None, position_ids=None, output_hidden_states=False,
                       inputs_embeds=None, base=None):
    """`forward` through the model's base (`model.base_model`: the decoder without the LM head); returns
    its output, `last_hidden_state` [1, Q, H] being what the head would turn into logits. base: a callable
    run in its place (the decoder compiled)."""
    kwargs = {} if cache is None else {cache_kwarg(model.base_model): cache}
    base = model.base_model if base is None else base
    return base(
        input_ids=None if inputs_embeds is not None else input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=cache is not None,
        output_hidden_states=output_hidden_states,
        **kwargs,
    )


class LastHidden:
    """Filled by `capture_last_hidden`: the LM head's input in the latest forward, [B, Q, H]."""

    value: torch.Tensor | None = None


@contextmanager
def capture_last_hidden(model, enabled: bool = True) -> Iterator[LastHidden]:
    """Inside the block, each forward of `model` leaves its last-layer hidden states in the yielded
    `LastHidden`: a pre-hook on the output embeddings reads their input, so the state is exactly
    what the LM head turned into logits (after the final norm, whatever the architecture names it),
    and no other layer is kept. enabled False: no hook, `value` stays None."""
    captured = LastHidden()
    if not enabled:
        yield captured
        return
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: setattr(captured, "value", args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def cache_length(cache: DynamicCache) -> int:
    return cache.get_seq_length()


@torch.inference_mode()
def compact(cache: DynamicCache, keep: list[int], num_new: int) -> None:
    """Keep rows `keep` (indices into the last `num_new` rows) and drop the other new rows.

    Accepted rows are copied into the first slots of the new block, then `crop` removes the tail;
    crop also keeps sliding layers' bookkeeping right and trims them back to their window.
    """
    keep_index = torch.tensor(keep, dtype=torch.long)
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        base = layer.keys.shape[-2] - num_new
        src = (keep_index + base).to(layer.keys.device)
        layer.keys[..., base : base + len(keep), :] = layer.keys[..., src, :]
        layer.values[..., base : base + len(keep), :] = layer.values[..., src, :]
    _crop(cache, num_new - len(keep))


def _crop(cache: DynamicCache, num_tokens: int) -> None:
    """Remove the last `num_tokens` rows of every layer (5.x: crop takes a count <= 0). Sliding
    layers also trim back to their window, even for 0. Uninitialised layers (a 1-token prompt's
    empty prefill) are skipped: crop fails on them."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.crop(-num_tokens)


def trim_to_window(cache: DynamicCache) -> None:
    """After a forward that kept past rows (prefill), restore sliding layers to their window."""
    _crop(cache, 0)


def drop_last(cache: DynamicCache, num_tokens: int) -> None:
    if num_tokens > 0:
        _crop(cache, num_tokens)


def softcapped(model) -> bool:
    """Attention logit soft-capping (Gemma2): the tree attention does not do it."""
    return getattr(model.config, "attn_logit_softcapping", None) is not None


def tree_attention_supported(model) -> bool:
    """Whether `tree_attention_enabled(model)` reaches every attention layer of `model`: its attention
    goes through `AttentionInterface` and every submodule reads the model's one config object."""
    configs = {id(module.config) for module in model.modules() if isinstance(getattr(module, "config", None),
                                                                              type(model.config))}
    return (model.config._attn_implementation in ("sdpa", "eager") and type(model)._can_set_attn_implementation()
            and configs == {id(model.config)} and not softcapped(model))


@contextmanager
def tree_attention_enabled(model) -> Iterator[None]:
    """Inside the block, `model` runs its attention with `tree_attention.tree_attention_forward`.
    Registering a name is transformers' own extension point; sdpa's mask function is registered
    with it, so a forward that leaves its mask to transformers still gets a correct one. The switch
    is the config's own `_attn_implementation` setter (what `set_attn_implementation` ends in,
    without its walk over every module: ~1 ms a forward on a 30-layer model)."""
    name = tree_attention.NAME
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, tree_attention.tree_attention_forward)
        AttentionMaskInterface.register(name, sdpa_mask)
    previous = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = previous
