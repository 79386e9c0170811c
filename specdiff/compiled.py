"""CompiledBase: a model's decoder (`model.base_model`) through torch.compile, for the verifier's tree forwards.

On a CPU a verify forward of a few rows is no longer bound by arithmetic once the weights are packed
(`specdiff.packed`): in SmolLM2-135M's 8-row forward over 600 cached rows (53 ms, two threads) the linears
take ~30 ms, the other operators ~12 and Python ~11. Inductor with freezing runs the same linears over
weights it packs for oneDNN itself, fuses the small operators and leaves no Python between them: 45 ms
(`benchmarks/compile_probe.py`; BENCHMARKS.md, thirteenth session).

What is compiled, and what is not:
- only forwards of two or more pending rows on the tree path (a tree, a block, a padded chain: the
  verifier's every step). One-row steps keep eager torch, bit for bit `generate`'s; prefills stay eager
  (one per reply, on transformers' causal path: another graph, for little time);
- the decoder only: the LM head runs after it, eager, over packed weights where the engine packs,
  so a reduced head (`CachedLM(head_rows=...)`) and the full head share one graph. `applies` checks once
  that the model's logits are its head applied to the decoder's output (no soft-capping or scaling);
- dynamic shapes (rows and cache length symbolic), compiled once per model and shared by every engine
  over it (`of`), so the methods of a `specdiff bench` run compile once. Dynamo still makes a few graphs: a
  contiguous and a cropped cache (strides are in its guards), with and without intermediate hidden states;
  ~1.5 min each for SmolLM2-135M on two CPU cores. Inductor's on-disk cache makes later processes faster.

Freezing bakes the weights into the graph as constants: a model whose weights change after its first
compiled forward (training) must not use it; `CachedLM(compiled=True)` is for inference.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
import torch._inductor.config as inductor_config

from specdiff import hf_compat


class CompiledBase:
    """`model.base_model` compiled once (Inductor, freezing, dynamic shapes): `base`, run inside `active()` in
    place of the decoder (`hf_compat.base_model_forward(..., base=...)`)."""

    _shared: "weakref.WeakKeyDictionary[torch.nn.Module, CompiledBase]" = weakref.WeakKeyDictionary()

    def __init__(self, model: torch.nn.Module):
        self.base = torch.compile(model.base_model, dynamic=True)
        self.calls = 0

    @classmethod
    def of(cls, model: torch.nn.Module) -> "CompiledBase":
        """`model`'s shared CompiledBase (compiled at its first call)."""
        compiled = cls._shared.get(model)
        if compiled is None:
            compiled = cls._shared[model] = cls(model)
        return compiled

    @staticmethod
    def applies(model: torch.nn.Module) -> bool:
        """Whether the model's logits can be computed from its decoder's output by its LM head."""
        try:
            hf_compat.check_head_of_base(model)
        except ValueError:
            return False
        return True

    @contextmanager
    def active(self) -> Iterator[None]:
        """Around a call of `base`: Inductor's freezing on (weights become constants it packs for oneDNN; a CPU
        linear over weights passed as inputs repacks them on every call, the cost `specdiff.packed` avoids)."""
        self.calls += 1
        with inductor_config.patch(freezing=True):
            yield
