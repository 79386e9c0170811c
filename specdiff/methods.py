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
from typing import TYPE_CHECKING, Protocol

from specdiff.config import DecodingConfig

# The registry is read by the CLI before any model loads (--help, argument checks): the parts a
# method builds from are imported when it builds, so listing methods does not import torch.
if TYPE_CHECKING:
    from specdiff.api import SpecDiff
    from specdiff.drafters import DFlashModel, EagleModel, MedusaHeads
    from specdiff.policies import DraftLengthPolicy
    from specdiff.trees import TreeBuilder


class UnknownMethodError(ValueError):
    pass


@dataclass(frozen=True)
class MethodOptions:
    """What a user may change about any method. None keeps the method's own setting."""

    draft_length: int | None = None  # chain length, or depth limit of a tree
    compile: bool = False  # the target's verify forwards through torch.compile (`SpecDiff(compile=True)`)

    def __post_init__(self):
        if self.draft_length is not None and self.draft_length < 1:
            raise ValueError(f"draft_length must be >= 1 (or None for the method's default), got {self.draft_length}")


@dataclass(frozen=True)
class MethodParts:
    """Everything `SpecDiff` needs besides the target."""

    drafter: object  # specdiff.drafters.Drafter
    tree: TreeBuilder
    draft_length: DraftLengthPolicy
    model: object | None = None  # the model to decode, when the method brings its own (TiDAR); None: the target


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
    node_budget: int | None = None  # set: OPT-Tree keeps the best `node_budget` nodes of the drafter's beam
    threshold: float | None = None  # OPT-Tree's delta: stop once a layer adds <= it to E(A); None: all k
    measured: bool = False  # keep the draft's n most probable nodes, n by measured cost (trees.MeasuredSize)
    lookup: bool = False  # merge prompt lookup's trie into the draft (drafters.HybridDrafter; sized as `measured`)
    default_drafter: str | None = "stdlib-ar-drafter"

    def __post_init__(self):
        if self.k < 1 or self.top_k < 1:
            raise ValueError(f"k and top_k must be >= 1, got k={self.k}, top_k={self.top_k}")

    def draft_length(self, options: MethodOptions) -> int:
        return options.draft_length or self.k

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import AutoregressiveDrafter
        from specdiff.trees import Chain, OptTree

        depth = self.draft_length(options)
        drafter = AutoregressiveDrafter(drafter_model, k=depth, top_k=self.top_k, tree_threshold=self.threshold)
        tree = Chain() if self.node_budget is None else OptTree(node_budget=self.node_budget, max_depth=depth)
        return _parts(target, drafter, tree, depth, self.measured, self.lookup)


@dataclass(frozen=True)
class PromptLookupMethod:
    """Continuations of earlier occurrences of the last n-gram, as a trie (no drafter model)."""

    name: str
    description: str
    ngram: int = 3
    k: int = 10
    max_branches: int = 4
    # None: by the target's dtype. In fp32 back off to 2-grams, not to single tokens: on SmolLM2 (CPU) a
    # 1-gram match is rarely right and still costs 10 more verify rows (min_ngram 2 ran 1.1-1.3x faster).
    # In half precision extra rows cost less (8 rows: 1.06x a 1-row step, against 1.19x in fp32) and
    # 1-grams ran ~5% faster (benchmarks/lookup_variants.py; BENCHMARKS.md).
    min_ngram: int | None = None
    # The draft's shape by measured tokens per second on this machine (drafters.lookup.ShapeChooser):
    # trie or most recent match, how deep, or no draft; extra rows are free on a GPU, cost ~2x for 11
    # rows in fp32 on a CPU and from ~1.3x to ~5x in emulated bf16, by host.
    measure_shape: bool = False
    default_drafter: str | None = None

    def __post_init__(self):
        if self.min_ngram is not None and not 1 <= self.min_ngram <= self.ngram:
            raise ValueError(f"need 1 <= min_ngram <= ngram, got min_ngram={self.min_ngram}, ngram={self.ngram}")
        if min(self.ngram, self.k, self.max_branches) < 1:
            raise ValueError(f"ngram, k and max_branches must be >= 1, got ngram={self.ngram}, k={self.k}, "
                             f"max_branches={self.max_branches}")

    def draft_length(self, options: MethodOptions) -> int:
        return options.draft_length or self.k

    def backoff(self, target) -> int:
        """The shortest n-gram matched: `min_ngram`, or 2 in fp32 and 1 in half precision."""
        if self.min_ngram is not None:
            return self.min_ngram
        return 1 if target.get_output_embeddings().weight.dtype.itemsize == 2 else 2

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import PromptLookupDrafter
        from specdiff.policies import FixedDraftLength
        from specdiff.trees import Chain

        depth = self.draft_length(options)
        drafter = PromptLookupDrafter(ngram=self.ngram, k=depth, max_branches=self.max_branches,
                                      min_ngram=self.backoff(target), measure_shape=self.measure_shape)
        return MethodParts(drafter, Chain(), FixedDraftLength(depth))


@dataclass(frozen=True)
class DiffusionMethod:
    """A diffusion drafter drafts `k` positions in one forward (a lattice); the search turns it into
    the verified tree: argmax chain, causal-consistency search (CPS) or OPT-Tree; optionally with
    DiffuSpec's adaptive draft length (ADL)."""

    name: str
    description: str
    k: int = 8
    search: str = "chain"  # "chain" | "cps" | "opt-tree"
    proxy: str = "corpus"  # CPS / OPT-Tree rescoring: "corpus" (shipped stdlib 3-gram) | "online" | "none"
    adaptive: bool = False
    node_budget: int = 16
    default_drafter: str | None = "stdlib-dlm-drafter"

    def __post_init__(self):
        if self.search not in ("chain", "cps", "opt-tree"):
            raise ValueError(f"search must be 'chain', 'cps' or 'opt-tree', got {self.search!r}")
        if self.proxy not in ("corpus", "online", "none"):
            raise ValueError(f"proxy must be 'corpus', 'online' or 'none', got {self.proxy!r}")

    @property
    def needs_zoo_tokenizer(self) -> bool:
        return self.search != "chain" and self.proxy == "corpus"

    def _proxy(self, tokenizer, vocab_size: int):
        from specdiff.ngram import NGramModel, OnlineNGram

        if self.proxy == "none":
            return None
        if self.proxy == "online":
            return OnlineNGram(vocab_size)
        from specdiff import zoo

        ngram = NGramModel.load(zoo.ngram_path())
        zoo_vocab = zoo.load_tokenizer("stdlib-target").get_vocab()
        if ngram.vocab_size != vocab_size or (tokenizer is not None and tokenizer.get_vocab() != zoo_vocab):
            raise ValueError(
                f"method {self.name!r} scores paths with the shipped stdlib 3-gram, which speaks the zoo tokenizer; "
                "this target has another one. Use the online n-gram (method 'dlm-cps-online'), or build "
                "SpecDiff yourself with CausalConsistencySearch(NGramModel.fit(your_token_stream, vocab_size))"
            )
        return ngram

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import DiffusionDrafter
        from specdiff.policies import AdaptiveDraftLength, FixedDraftLength
        from specdiff.trees import CausalConsistencySearch, Chain, OptTree

        eos = DecodingConfig.from_model(target).eos_token_ids
        if self.adaptive:
            policy = AdaptiveDraftLength(k_min=max(1, self.k // 2), k_max=options.draft_length or self.k,
                                         delta=max(1, self.k // 4))
        else:
            policy = FixedDraftLength(options.draft_length or self.k)
        drafter = DiffusionDrafter(drafter_model, k=options.draft_length or self.k, tokenizer=tokenizer,
                                   eos_token_ids=eos)
        vocab = len(tokenizer) if tokenizer is not None else drafter_model.config.vocab_size
        proxy = self._proxy(tokenizer, vocab) if self.search != "chain" else None
        if self.search == "cps":
            tree = CausalConsistencySearch(proxy=proxy, eos_token_ids=eos)
        elif self.search == "opt-tree":
            tree = OptTree(node_budget=self.node_budget, proxy=proxy, max_depth=options.draft_length or self.k)
        else:
            tree = Chain()
        return MethodParts(drafter, tree, policy)


@dataclass(frozen=True)
class HeadsMethod:
    """Medusa-style heads on the target's last hidden state draft one lattice row per head, for free
    from the verify pass; the search makes it the argmax chain, a static Medusa tree or an OPT-Tree.

    The drafter is not a causal LM: `load_drafter` reads a heads directory (MedusaHeads.save_pretrained)
    or a zoo name, and `build` attaches the heads to the target's LM head."""

    name: str
    description: str
    search: str = "chain"  # "chain" | "static-tree" (widths per depth) | "opt-tree"
    top_k: int = 4  # candidates per head
    node_budget: int = 16  # opt-tree
    widths: tuple[int, ...] = (4, 2, 2, 1)  # static-tree: Medusa-style choices, every rank path below these
    measured: bool = False  # keep the draft's n most probable nodes, n by measured cost (trees.MeasuredSize)
    lookup: bool = False  # merge prompt lookup's trie into the draft (drafters.HybridDrafter; sized as `measured`)
    default_drafter: str | None = "stdlib-heads"

    def __post_init__(self):
        if self.search not in ("chain", "static-tree", "opt-tree"):
            raise ValueError(f"search must be 'chain', 'static-tree' or 'opt-tree', got {self.search!r}")
        if self.top_k < max(self.widths):
            raise ValueError(f"top_k ({self.top_k}) must cover the widest static-tree level ({max(self.widths)})")

    @staticmethod
    def load_drafter(spec: str, dtype, device) -> MedusaHeads:
        """Heads from a directory, or a zoo name (FileNotFoundError / ValueError name the fix)."""
        from specdiff import zoo
        from specdiff.drafters import MedusaHeads

        return MedusaHeads.from_pretrained(zoo.directory(spec), dtype=dtype, device=device)

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import DrawnChain, HeadsDrafter
        from specdiff.trees import Chain, OptTree, StaticTree

        drafter = HeadsDrafter(drafter_model, target, top_k=self.top_k)
        depth = min(options.draft_length or drafter.k, drafter.k)
        if self.search == "opt-tree":
            tree = OptTree(node_budget=self.node_budget, max_depth=depth)
        elif self.search == "static-tree":
            tree = StaticTree.from_widths(self.widths)
        else:
            tree = Chain()
            if not self.measured:  # sampled, the chain is drawn from the heads' rows (a size cut would fix it)
                drafter = DrawnChain(drafter, path_cut=DRAFT_CUT if self.lookup else 0.0)
        return _parts(target, drafter, tree, depth, self.measured, self.lookup)


# Prompt lookup's part of a hybrid method (drafters.HybridDrafter): `lookup`'s trie of up to 4 matches, 10 deep.
HYBRID_LOOKUP = PromptLookupMethod("hybrid-lookup", "the lookup half of a hybrid method", measure_shape=False)


def _hybrid(target, drafter, model_tree, model_depth: int) -> MethodParts:
    """`drafter`'s tree (`model_tree` of its proposal, `model_depth` deep) merged with prompt lookup's trie, cut to
    the size that measures fastest on this machine (MeasuredSize). Lookup drafts its full depth; the model drafter
    no deeper than the trees kept plus 2 (its forwards cost, lookup's do not)."""
    from specdiff.drafters import HybridDrafter, PromptLookupDrafter
    from specdiff.policies import FixedDraftLength
    from specdiff.trees import Chain, MeasuredDraftLength, MeasuredSize

    lookup = PromptLookupDrafter(ngram=HYBRID_LOOKUP.ngram, k=HYBRID_LOOKUP.k, max_branches=HYBRID_LOOKUP.max_branches,
                                 min_ngram=HYBRID_LOOKUP.backoff(target))
    sized = MeasuredSize(Chain())
    model_cap = MeasuredDraftLength(sized, model_depth).current  # the `-hw` methods' draft length, for the model only
    hybrid = HybridDrafter(drafter, lookup, model_tree, model_depth, model_cap=model_cap)
    return MethodParts(hybrid, sized, FixedDraftLength(hybrid.k))


def _parts(target, drafter, tree, depth: int, measured: bool, lookup: bool, policy=None) -> MethodParts:
    """A model drafter's parts: merged with prompt lookup (`_hybrid`), or `tree` cut to the size that measures
    fastest here with the drafter drafting no deeper than the trees kept plus slack (one forward per depth for
    an autoregressive drafter; a block of fewer rows for a diffusion one), or `tree` as it is under `policy`
    (default: `depth` every step)."""
    from specdiff.policies import FixedDraftLength
    from specdiff.trees import MeasuredDraftLength, MeasuredSize

    if lookup:
        return _hybrid(target, drafter, tree, depth)
    if measured:
        sized = MeasuredSize(tree)
        return MethodParts(drafter, sized, MeasuredDraftLength(sized, depth))
    return MethodParts(drafter, tree, policy or FixedDraftLength(depth))


@dataclass(frozen=True)
class EagleMethod:
    """An EAGLE drafter (one decoder layer over the target's features, autoregressive) drafts a greedy
    chain of `k` (top_k 1) or EAGLE-2's dynamic tree: a `top_k`-wide beam `k` deep, of which OPT-Tree
    keeps the best `node_budget` nodes.

    The drafter is not a causal LM: `load_drafter` reads an EAGLE directory (EagleModel.save_pretrained)
    or a zoo name, and `build` attaches it to the target's embedding and LM head."""

    name: str
    description: str
    k: int = 5
    top_k: int = 1
    node_budget: int | None = None
    threshold: float | None = None  # OPT-Tree's delta (see AutoregressiveMethod)
    measured: bool = False  # keep the draft's n most probable nodes, n by measured cost (trees.MeasuredSize)
    lookup: bool = False  # merge prompt lookup's trie into the draft (drafters.HybridDrafter; sized as `measured`)
    default_drafter: str | None = "smollm2-135m-instruct-eagle"

    def __post_init__(self):
        if self.k < 1 or self.top_k < 1:
            raise ValueError(f"k and top_k must be >= 1, got k={self.k}, top_k={self.top_k}")
        if self.node_budget is not None and self.node_budget < 1:
            raise ValueError(f"node_budget must be >= 1 or None (no OPT-Tree), got {self.node_budget}")

    @staticmethod
    def load_drafter(spec: str, dtype, device) -> EagleModel:
        """An EAGLE drafter from a directory, or a zoo name (FileNotFoundError / ValueError name the fix)."""
        from specdiff import zoo
        from specdiff.drafters import EagleModel

        return EagleModel.from_pretrained(zoo.directory(spec), dtype=dtype, device=device)

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import EagleDrafter
        from specdiff.trees import Chain, OptTree

        depth = options.draft_length or self.k
        drafter = EagleDrafter(drafter_model, target, k=depth, top_k=self.top_k, tree_threshold=self.threshold)
        tree = Chain() if self.node_budget is None else OptTree(node_budget=self.node_budget, max_depth=depth)
        return _parts(target, drafter, tree, depth, self.measured, self.lookup)


@dataclass(frozen=True)
class DFlashMethod:
    """A DFlash drafter (target-conditioned block diffusion) drafts up to block_size - 1 positions in one
    forward from the target's hidden states, as a lattice; the search makes it the argmax chain, CPS
    (scored by the online n-gram of the context: the shipped stdlib 3-gram speaks another tokenizer)
    or an OPT-Tree; optionally DiffuSpec's adaptive draft length. Sampling, the chain methods draw their
    chain from the lattice's rows (`DrawnChain`); the `-hw` ones keep the argmax chain, which they cut.

    The drafter is not a causal LM: `load_drafter` reads a DFlash directory (DFlashModel.save_pretrained)
    or a zoo name, and `build` attaches it to the target's embedding and LM head."""

    name: str
    description: str
    search: str = "chain"  # "chain" | "cps" | "opt-tree"
    adaptive: bool = False
    node_budget: int = 16  # opt-tree
    threshold: float = 0.0  # chain: stop before the first position drafted with probability <= this (0: never)
    measured: bool = False  # keep the draft's n most probable nodes, n by measured cost (trees.MeasuredSize)
    lookup: bool = False  # merge prompt lookup's trie into the draft (drafters.HybridDrafter; sized as `measured`)
    default_drafter: str | None = "smollm2-135m-instruct-dflash"

    def __post_init__(self):
        if self.search not in ("chain", "cps", "opt-tree"):
            raise ValueError(f"search must be 'chain', 'cps' or 'opt-tree', got {self.search!r}")
        if self.node_budget < 1:
            raise ValueError(f"node_budget must be >= 1, got {self.node_budget}")
        if (self.measured or self.lookup) and self.adaptive:
            raise ValueError("measured (or lookup) and adaptive both set the draft length; choose one")

    @staticmethod
    def load_drafter(spec: str, dtype, device) -> DFlashModel:
        """A DFlash drafter from a directory, or a zoo name (FileNotFoundError / ValueError name the fix)."""
        from specdiff import zoo
        from specdiff.drafters import DFlashModel

        return DFlashModel.from_pretrained(zoo.directory(spec), dtype=dtype, device=device)

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import DrawnChain, TargetDiffusionDrafter
        from specdiff.ngram import OnlineNGram
        from specdiff.policies import AdaptiveDraftLength, FixedDraftLength
        from specdiff.trees import CausalConsistencySearch, Chain, OptTree

        eos = DecodingConfig.from_model(target).eos_token_ids
        most = drafter_model.config.block_size - 1  # a block can shrink at inference, not grow
        drafter = TargetDiffusionDrafter(drafter_model, target, k=min(options.draft_length or most, most),
                                         eos_token_ids=eos)
        k = drafter.k
        if self.adaptive:
            policy = AdaptiveDraftLength(k_min=max(1, k // 2), k_max=k, delta=max(1, k // 4))
        else:
            policy = FixedDraftLength(k)
        if self.search == "cps":
            tree = CausalConsistencySearch(proxy=OnlineNGram(drafter_model.config.vocab_size), eos_token_ids=eos)
        elif self.search == "opt-tree":
            tree = OptTree(node_budget=self.node_budget, max_depth=k)
        else:
            tree = Chain(self.threshold)
            if not self.measured:  # sampled, the chain is drawn from the lattice's rows (a size cut would fix it)
                drafter = DrawnChain(drafter, self.threshold, DRAFT_CUT if self.lookup else 0.0)
        return _parts(target, drafter, tree, k, self.measured, self.lookup, policy)  # measured: 16 rows cost ~2x 3


@dataclass(frozen=True)
class TiDARMethod:
    """A TiDAR model drafts its next block inside its own verify forward: it replaces the target
    (`own_model`), and its output is exactly ITS `generate`'s, which is what the bench compares it with.
    draft_length (MethodOptions) = block size - 1; default: the model's `tidar_block_size` - 1."""

    name: str
    description: str
    search: str = "chain"  # "chain" | "opt-tree" (a block per tree node)
    node_budget: int = 16
    max_depth: int = 4
    block_size: int | None = None  # None: the model's tidar_block_size
    max_blocks: int | None = None  # TiDARDrafter.max_blocks: pre-draft after the first rows only
    default_drafter: str | None = "stdlib-tidar"
    own_model: bool = True

    def __post_init__(self):
        if self.search not in ("chain", "opt-tree"):
            raise ValueError(f"search must be 'chain' or 'opt-tree', got {self.search!r}")

    def build(self, target, tokenizer, drafter_model, options: MethodOptions) -> MethodParts:
        from specdiff.drafters import TiDARDrafter
        from specdiff.policies import FixedDraftLength
        from specdiff.trees import Chain, OptTree

        block_size = options.draft_length + 1 if options.draft_length is not None else self.block_size
        drafter = TiDARDrafter(drafter_model, block_size=block_size, tokenizer=tokenizer, max_blocks=self.max_blocks)
        if self.search == "opt-tree":
            depth = min(self.max_depth, drafter.k)
            return MethodParts(drafter, OptTree(node_budget=self.node_budget, max_depth=depth),
                               FixedDraftLength(depth), model=drafter_model)
        return MethodParts(drafter, Chain(), FixedDraftLength(drafter.k), model=drafter_model)


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
    from specdiff.api import SpecDiff

    method = get(name)
    if method.default_drafter is not None and drafter_model is None:
        raise ValueError(f"method {name!r} needs a drafter model; pass one (CLI: --drafter PATH)")
    parts = method.build(target, tokenizer, drafter_model, options)
    return SpecDiff(parts.model if parts.model is not None else target, parts.drafter, tokenizer=tokenizer,
                    tree=parts.tree, draft_length=parts.draft_length, compile=options.compile)


def generate_options(model, config: DecodingConfig) -> dict:
    """The keyword arguments that make `SpecDiff.generate` decode with `config`: only the settings
    that differ from the model's own defaults, which `generate` reads itself (so options a
    SpecDiff version does not know yet are never passed unless asked for)."""
    from specdiff.api import SpecDiff

    defaults = DecodingConfig.from_model(model).as_dict()
    wanted = {f.name: getattr(config, f.name) for f in fields(config)
              if f.name not in ("max_new_tokens", "eos_token_ids") and getattr(config, f.name) != defaults[f.name]}
    accepted = inspect.signature(SpecDiff.stream_tokens).parameters
    unsupported = sorted(set(wanted) - set(accepted))
    if unsupported:
        raise ValueError(f"this SpecDiff version does not support {', '.join(unsupported)} yet "
                         f"(given {', '.join(f'{k}={wanted[k]}' for k in unsupported)}); leave them unset")
    return wanted


# OPT-Tree's delta for the registered AR and EAGLE methods. On SmolLM2 (fp32, CPU) it lifted ar 0.50x -> 0.61x,
# ar-opt-tree 0.37x -> 0.60x and eagle-tree 0.53x -> 0.74x of HF greedy (benchmarks/draft_threshold.py);
# transformers' assisted generation cuts at the same default confidence.
DRAFT_CUT = 0.4

register(AutoregressiveMethod("ar", "AR drafter, greedy chain of up to 5 tokens, cut once its probability is <= 0.4",
                              k=5, top_k=1, threshold=DRAFT_CUT))
register(AutoregressiveMethod("ar-tree", "AR drafter, tree beam keeping the 3 most probable paths per depth, 5 deep",
                              k=5, top_k=3))
register(AutoregressiveMethod("ar-opt-tree", "AR drafter, OPT-Tree: best 16 nodes of a 4-wide beam, up to 6 deep "
                              "(delta 0.4)", k=6, top_k=4, node_budget=16, threshold=DRAFT_CUT))
register(AutoregressiveMethod("ar-hw", "AR drafter, greedy chain as `ar`, cut to the length that measures fastest on "
                              "this machine", k=5, top_k=1, threshold=DRAFT_CUT, measured=True))
register(AutoregressiveMethod("ar-opt-tree-hw", "AR drafter, OPT-Tree beam as `ar-opt-tree`, as many of its 16 nodes "
                              "as measure fastest on this machine", k=6, top_k=4, node_budget=16, threshold=DRAFT_CUT,
                              measured=True))
register(AutoregressiveMethod("ar-lookup", "AR drafter's chain (as `ar`) and prompt lookup's trie (as `lookup`) in one "
                              "tree, as many nodes as measure fastest on this machine", k=5, top_k=1,
                              threshold=DRAFT_CUT, lookup=True))
register(DiffusionMethod("dlm", "diffusion drafter, 8 positions in one forward, argmax chain"))
register(DiffusionMethod("dlm-cps", "diffusion drafter + causal-consistency search (stdlib 3-gram proxy)",
                         search="cps"))
register(DiffusionMethod("dlm-cps-online", "diffusion drafter + CPS, online n-gram of the context as proxy "
                         "(any tokenizer)", search="cps", proxy="online"))
register(DiffusionMethod("dlm-adl", "diffusion drafter, argmax chain, adaptive draft length", k=12, adaptive=True))
register(DiffusionMethod("dlm-cps-adl", "diffusion drafter + CPS + adaptive draft length", k=12, search="cps",
                         adaptive=True))
register(DiffusionMethod("dlm-opt-tree", "diffusion lattice -> OPT-Tree of 16 nodes (no proxy)", search="opt-tree",
                         proxy="none"))
register(HeadsMethod("heads", "Medusa-style heads on the target's hidden state, argmax chain (no drafter forward)"))
register(HeadsMethod("heads-tree", "Medusa-style heads, OPT-Tree of 16 nodes over each head's top-4",
                     search="opt-tree"))
register(HeadsMethod("heads-tree-hw", "Medusa-style heads, OPT-Tree over each head's top-4 as `heads-tree`, as many "
                     "of its 16 nodes as measure fastest on this machine", search="opt-tree", measured=True))
register(HeadsMethod("heads-lookup", "Medusa-style heads' argmax chain and prompt lookup's trie in one tree, as many "
                     "nodes as measure fastest on this machine", lookup=True))
register(EagleMethod("eagle", "EAGLE drafter: one decoder layer over the target's features (EAGLE-3 taps), "
                     "greedy chain of up to 5, cut once its probability is <= 0.4", threshold=DRAFT_CUT))
register(EagleMethod("eagle-tree", "EAGLE-2 dynamic tree: a 4-wide beam of the EAGLE drafter, up to 6 deep (delta 0.4), "
                     "OPT-Tree keeps the best 16 nodes", k=6, top_k=4, node_budget=16, threshold=DRAFT_CUT))
register(EagleMethod("eagle-hw", "EAGLE chain as `eagle`, cut to the length that measures fastest on this machine",
                     threshold=DRAFT_CUT, measured=True))
register(EagleMethod("eagle-tree-hw", "EAGLE-2 dynamic tree as `eagle-tree`, as many of its 16 nodes as measure "
                     "fastest on this machine", k=6, top_k=4, node_budget=16, threshold=DRAFT_CUT, measured=True))
register(DFlashMethod("dflash", "DFlash drafter: the target's hidden states condition a block-diffusion drafter, "
                     "a block (15 drafts with blocks of 16) in one forward, argmax chain"))
register(DFlashMethod("dflash-cut", "DFlash drafter, argmax chain stopped before the first position drafted with "
                     "probability <= 0.4 (where verify rows cost, the unlikely tail is not verified)",
                     threshold=DRAFT_CUT))
register(DFlashMethod("dflash-hw", "DFlash drafter, argmax chain cut to the length that measures fastest on this "
                     "machine (Sequoia's hardware-aware size: verify time by rows, calibrated acceptance)",
                     measured=True))
register(DFlashMethod("dflash-opt-tree-hw", "DFlash lattice -> OPT-Tree of up to 16 nodes, as many as measure fastest "
                     "on this machine", search="opt-tree", measured=True))
register(EagleMethod("eagle-lookup", "EAGLE chain (as `eagle`) and prompt lookup's trie (as `lookup`) in one tree, "
                     "lookup's nodes scored by their measured acceptance; as many nodes as measure fastest on this "
                     "machine", threshold=DRAFT_CUT, lookup=True))
register(EagleMethod("eagle-tree-lookup", "EAGLE-2 dynamic tree (as `eagle-tree`) and prompt lookup's trie in one tree, "
                     "as many nodes as measure fastest on this machine", k=6, top_k=4, node_budget=16,
                     threshold=DRAFT_CUT, lookup=True))
register(DFlashMethod("dflash-lookup", "DFlash chain and prompt lookup's trie in one tree, as many nodes as measure "
                     "fastest on this machine", lookup=True))
register(DFlashMethod("dflash-cps", "DFlash drafter + causal-consistency search (online n-gram of the context)",
                     search="cps"))
register(DFlashMethod("dflash-opt-tree", "DFlash lattice -> OPT-Tree of 16 nodes", search="opt-tree"))
register(DFlashMethod("dflash-adl", "DFlash drafter, argmax chain, adaptive draft length", adaptive=True))
register(TiDARMethod("tidar", "TiDAR model (not the target): verifies its drafts and drafts the next block "
                     "of 8 in one forward; exact w.r.t. its own generate"))
register(TiDARMethod("tidar-opt-tree", "TiDAR model, OPT-Tree of 8 nodes over its block lattice, 4 deep, a block "
                     "per node", search="opt-tree", node_budget=8, max_depth=4))
register(TiDARMethod("tidar-lean", "TiDAR model, blocks of 4, pre-drafted only for 0 or 1 accepted drafts "
                     "(12 query rows instead of 20: for hardware where every row costs)", block_size=4, max_blocks=2))
register(PromptLookupMethod("lookup", "prompt lookup: n-gram matches in the context (3 down to 2 in fp32, to 1 in "
                            "half precision); the draft's shape (up to 4 matches as a trie or the most recent alone, "
                            "1 to 10 deep, or none) by measured tokens per second on this machine", measure_shape=True))
register(PromptLookupMethod("lookup-trie", "prompt lookup as `lookup`, always the trie (10 deep, 4 branches)"))
register(PromptLookupMethod("lookup-chain", "prompt lookup, the most recent match only (3-gram down to 2 in fp32, "
                            "to 1 in half precision): a chain (10 deep), as HF's prompt lookup drafts", max_branches=1))
