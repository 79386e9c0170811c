"""PackedLinears: a model's fp32 linear layers with weights prepacked for oneDNN, for multi-row forwards on a CPU.

torch's fp32 CPU linear repacks its weight on every call. A one-row decoding step takes a matrix-vector
path that reads the weight once; from two rows on the repacking costs more than the arithmetic, so a
verify forward of 2-16 rows costs 1.6-2.5 one-row steps (SmolLM2-135M, one core of an AMD EPYC: 61 ms
for 1 row, 143 ms for 3, 147 ms for 8). oneDNN's linear over a weight reordered once into its blocked
layout (`torch.ops.mkldnn._reorder_linear_weight` and `_linear_pointwise`, the ops Inductor's freezing
pass emits for CPU linears) does the same 3 rows in 61 ms and 8 in ~78 ms: speculation's verify rows
become nearly free, as on a GPU. Measured in `benchmarks/packed_weights.py`.

The packed copies take as much memory again as the linear weights (SmolLM2-135M: 0.5 GB in fp32); "auto"
packs only while they fit in half of the memory available.

Forwards of one row keep torch's own kernel, so a decoding step computes bit for bit what `generate`
computes; multi-row forwards differ from it by float rounding (~1e-4 in the logits), as every multi-row
kernel already does. A drafter's numbers need not match anything bit for bit, and oneDNN's packed kernel
also wins at one row (SmolLM2's linears, weights streamed from memory, two threads: 26 ms against torch's
45), so drafters pack their one-row forwards too (`active(min_rows=1)`). Used by `CachedLM`
(packed_weights="auto": fp32 on a CPU with oneDNN), only inside its forwards (`active()`), never with
autograd on.
"""

from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager
from typing import Iterator

import psutil
import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

# GPT-2's Conv1D is a linear layer whose weight is stored [in, out].
LINEAR_TYPES = (nn.Linear, Conv1D)

# The row count oneDNN lays the packed weight out for; measured best for 2-300 rows on SmolLM2 (fp32).
PACK_ROWS = 8


def packs_as_linear(layer: nn.Module) -> bool:
    """Whether PackedLinears may run `layer`: an nn.Linear or Conv1D, or a module that declares
    `packs_as_linear` True because its forward is F.linear(x, layer.weight, layer.bias) (the LM head an
    EAGLE drafter borrows from its target)."""
    return type(layer) in LINEAR_TYPES or getattr(layer, "packs_as_linear", False) is True


def packing_available() -> bool:
    """Whether this torch build has oneDNN and the prepacked-linear ops."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


class PackedLinears:
    """The plain `nn.Linear` (and Conv1D) layers of `model`, and modules that declare `packs_as_linear`, each
    with a oneDNN-packed copy of its weight (made at first use, remade when the weight changes), used for
    inputs of `min_rows` rows or more while `active()`; `linear` does the same for a weight outside the
    model (a reduced LM head's rows).

    Layers whose `forward` something else already replaced (accelerate's offloading hooks) are left alone.
    Engines get theirs from `of(model)`: one per model, so the verifiers of several methods over one target
    (a `specdiff bench` run) hold one packed copy, packed once."""

    _shared: "weakref.WeakKeyDictionary[nn.Module, PackedLinears]" = weakref.WeakKeyDictionary()

    def __init__(self, model: nn.Module, min_rows: int = 2):
        if min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {min_rows}")
        self.min_rows = min_rows
        self.layers = [layer for layer in model.modules()
                       if packs_as_linear(layer) and "forward" not in vars(layer)]
        # id(stored weight) -> (a weak reference to it, its identity when packed, the packed copy)
        self._packs: dict[int, tuple[weakref.ref, tuple, torch.Tensor]] = {}
        self.packed_calls = 0

    @staticmethod
    def applies(model: nn.Module) -> bool:
        """fp32 weights on a CPU and a torch with the ops: where packing pays (in bf16 torch already calls
        oneDNN, whose cost measured flat in the row count)."""
        weight = next(model.parameters(), None)
        return (weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
                and packing_available())

    @classmethod
    def of(cls, model: nn.Module) -> "PackedLinears":
        """`model`'s shared PackedLinears (made at the first call; it lives as long as the model)."""
        packed = cls._shared.get(model)
        if packed is None:
            packed = cls._shared[model] = cls(model)
        return packed

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        """Whether `model` is packed already, or a packed copy of its linear weights takes at most half of
        the memory available now."""
        if model in cls._shared:
            return True
        weights = {id(layer.weight): layer.weight for layer in model.modules()
                   if packs_as_linear(layer) and layer.weight is not None}
        size = sum(weight.numel() * weight.element_size() for weight in weights.values())
        return 2 * size <= psutil.virtual_memory().available

    @contextmanager
    def active(self, min_rows: int | None = None) -> Iterator[None]:
        """Route the layers' forwards through `_forward` until the block ends; inputs of `min_rows` rows or
        more (default: the instance's) go through the packed copies."""
        min_rows = self.min_rows if min_rows is None else min_rows
        for layer in self.layers:
            layer.forward = functools.partial(self._forward, layer, min_rows)
        try:
            yield
        finally:
            for layer in self.layers:
                vars(layer).pop("forward", None)

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               min_rows: int | None = None) -> torch.Tensor:
        """F.linear(x, weight [out, in], bias) [..., out], over the packed copy where it applies."""
        if not self._packs_input(x, weight, self.min_rows if min_rows is None else min_rows):
            return F.linear(x, weight, bias)
        return self._packed_linear(x, weight, bias, transposed=False)

    def _forward(self, layer: nn.Module, min_rows: int, x: torch.Tensor) -> torch.Tensor:
        if layer.weight is None or not self._packs_input(x, layer.weight, min_rows):  # None: a borrowed head
            return type(layer).forward(layer, x)
        return self._packed_linear(x, layer.weight, layer.bias, transposed=type(layer) is Conv1D)

    @staticmethod
    def _packs_input(x: torch.Tensor, weight: torch.Tensor, min_rows: int) -> bool:
        rows = x.numel() // max(x.shape[-1], 1)
        return (rows >= min_rows and x.dtype == weight.dtype == torch.float32 and x.device.type == "cpu"
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))

    def _packed_linear(self, x, weight, bias, transposed: bool) -> torch.Tensor:
        *lead, in_features = x.shape
        self.packed_calls += 1
        flat = x.reshape(-1, in_features).contiguous()  # [rows, in]
        out = torch.ops.mkldnn._linear_pointwise(flat, self._packed(weight, transposed), bias, "none", [None], "")
        return out.reshape(*lead, out.shape[-1])  # [..., out]

    def _packed(self, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
        """The packed copy of `weight` ([in, out] when `transposed`: Conv1D), remade when it changed."""
        identity = (weight.data_ptr(), weight._version, tuple(weight.shape))  # an in-place update bumps _version
        entry = self._packs.get(id(weight))
        if entry is None or entry[0]() is not weight or entry[1] != identity:
            dense = (weight.t() if transposed else weight).detach().contiguous()  # [out, in]
            entry = (weakref.ref(weight), identity, torch.ops.mkldnn._reorder_linear_weight(dense, PACK_ROWS))
            self._packs[id(weight)] = entry
        return entry[2]
