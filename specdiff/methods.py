"""Named SpecDiff methods: which drafter, tree builder and draft-length policy a name stands for.

The CLI's `--method` and `specdiff bench` read this registry. A new drafter joins by registering a
small frozen dataclass with a `build` method:

    @dataclass(frozen=True)
    class DiffusionMethod:
        name: str = "diffusion"
        description: str = "block-diffusion drafter, causal-consistency path search"
        default_drafter: str | None = "stdlib-diffusion-drafter"  # zoo name; None: no drafter model

        def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
            ...

    register(DiffusionMethod())
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Protocol

from specdiff.api import SpecDiff
from specdiff.config import DecodingConfig
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.policies import DraftLengthPolicy, FixedDraftLength
from specdiff.trees import Chain, TreeBuilder


class UnknownMethodError(ValueError):
    pass


@dataclass(frozen=True)
class MethodOptions:
    """What a user may change about any method. None keeps the method's own setting."""

    draft_length: int | None = None  # chain length, or depth limit of a tree

    def __post_init__(self):
        if self.draft_length is not None and self.draft_length < 1:
            raise ValueError(f"draft_length must be >= 1 (or None for the method's default), got {self.draft_length}")


@dataclass(frozen=True)
class MethodParts:
    """Everything `SpecDiff` needs besides the target."""

    drafter: object  # specdiff.drafters.Drafter
    tree: TreeBuilder
    draft_length: DraftLengthPolicy


class Method(Protocol):
    name: str
    description: str
    # The zoo model this method drafts with unless the user passes one; None: it needs no drafter model.
    default_drafter: str | None

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts: ...


@dataclass(frozen=True)
class AutoregressiveMethod:
    """A small causal LM drafts a greedy chain (top_k=1) or a tree beam of `top_k` paths, `k` tokens deep."""

    name: str
    description: str
    k: int = 5
    top_k: int = 1
    default_drafter: str | None = "stdlib-ar-drafter"

    def __post_init__(self):
        if self.k < 1 or self.top_k < 1:
            raise ValueError(f"k and top_k must be >= 1, got k={self.k}, top_k={self.top_k}")

    def draft_length(self, options: MethodOptions) -> int:
        return options.draft_length or self.k

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        depth = self.draft_length(options)
        drafter = AutoregressiveDrafter(drafter_model, k=depth, top_k=self.top_k)
        return MethodParts(drafter, Chain(), FixedDraftLength(depth))


@dataclass(frozen=True)
class PromptLookupMethod:
    """Continuations of earlier occurrences of the last n-gram, as a trie (no drafter model)."""

    name: str
    description: str
    ngram: int = 3
    k: int = 10
    max_branches: int = 4
    default_drafter: str | None = None

    def __post_init__(self):
        if min(self.ngram, self.k, self.max_branches) < 1:
            raise ValueError(f"ngram, k and max_branches must be >= 1, got ngram={self.ngram}, k={self.k}, "
                             f"max_branches={self.max_branches}")

    def draft_length(self, options: MethodOptions) -> int:
        return options.draft_length or self.k

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        depth = self.draft_length(options)
        drafter = PromptLookupDrafter(ngram=self.ngram, k=depth, max_branches=self.max_branches)
        return MethodParts(drafter, Chain(), FixedDraftLength(depth))


_REGISTRY: dict[str, Method] = {}


def register(method: Method, replace: bool = False) -> Method:
    """Add `method` under `method.name`; refuses to shadow a registered name unless `replace`."""
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered; pass replace=True to override it")
    _REGISTRY[method.name] = method
    return method


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; known methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def needs_drafter(name: str) -> bool:
    return get(name).default_drafter is not None


def build(name: str, target, tokenizer, drafter_model=None, options: MethodOptions = MethodOptions()) -> SpecDiff:
    """A ready `SpecDiff` for the named method."""
    method = get(name)
    if method.default_drafter is not None and drafter_model is None:
        raise ValueError(f"method {name!r} needs a drafter model; pass one (CLI: --drafter PATH)")
    parts = method.build(target, tokenizer, drafter_model, options)
    return SpecDiff(target, parts.drafter, tokenizer=tokenizer, tree=parts.tree, draft_length=parts.draft_length)


def generate_options(model, config: DecodingConfig) -> dict:
    """The keyword arguments that make `SpecDiff.generate` decode with `config`: only the settings
    that differ from the model's own defaults, which `generate` reads itself (so options a
    SpecDiff version does not know yet are never passed unless asked for)."""
    defaults = DecodingConfig.from_model(model).as_dict()
    wanted = {f.name: getattr(config, f.name) for f in fields(config)
              if f.name not in ("max_new_tokens", "eos_token_ids") and getattr(config, f.name) != defaults[f.name]}
    accepted = inspect.signature(SpecDiff.stream_tokens).parameters
    unsupported = sorted(set(wanted) - set(accepted))
    if unsupported:
        raise ValueError(f"this SpecDiff version does not support {', '.join(unsupported)} yet "
                         f"(given {', '.join(f'{k}={wanted[k]}' for k in unsupported)}); leave them unset")
    return wanted


register(AutoregressiveMethod("ar", "AR drafter, greedy chain of 5 tokens", k=5, top_k=1))
register(AutoregressiveMethod("ar-tree", "AR drafter, tree beam keeping the 3 most probable paths per depth, 5 deep",
                              k=5, top_k=3))
register(PromptLookupMethod("lookup", "prompt lookup: n-gram matches in the context (3-gram, 10 deep, 4 branches)"))
