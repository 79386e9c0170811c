"""The public API: `SpecDiff(model, drafter).generate(prompt)`."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from specdiff.acceptance import greedy_accept
from specdiff.config import DecodingConfig
from specdiff.decoding import Components, speculative_decode
from specdiff.drafters.base import Drafter
from specdiff.metrics import GenerationStats
from specdiff.policies import DraftLengthPolicy, FixedDraftLength
from specdiff.processing import build_processors
from specdiff.sampling import sampled_accept
from specdiff.trees.static import Chain
from specdiff.verifiers.hf import HFVerifier


@dataclass
class GenerationResult:
    token_ids: list[int]  # the new tokens only
    stats: GenerationStats
    text: str | None = None  # when a tokenizer is known


class SpecDiff:
    """Lossless speculative decoding of `model` with `drafter`.

    tree: a builder from `specdiff.trees` (default: chain). draft_length: a policy object the loop
    consults each step (default: fixed, the drafter's own `k` when it has one). on_step: called after
    each step's acceptance with (tree, acceptance), e.g. `specdiff.trees.TreeRecorder(dir)`. compile: the
    target's verify forwards through torch.compile (`specdiff.compiled`: the first one compiles, ~1.5 min for
    a 135M model on two CPU cores; one-row steps stay eager, so greedy output stays `generate`'s).
    """

    def __init__(self, model, drafter, tokenizer=None, tree=None, draft_length: DraftLengthPolicy | int | None = None,
                 on_step=None, compile: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        if not isinstance(drafter, Drafter):
            raise TypeError(f"{type(drafter).__name__} is not a Drafter: it needs `needs` (a DraftNeeds), `k`, "
                            "`forward_count`, `bind`, `propose` and `reset` (see specdiff.drafters.base)")
        if drafter.needs.drafts_with_target and drafter.model is not model:
            raise ValueError(f"{type(drafter).__name__} drafts inside the verifier's own forward: give SpecDiff the "
                             f"model it was built on, SpecDiff(model, {type(drafter).__name__}(model))")
        # Heads drafters read the target's hidden states from the verify pass (DraftContext.hidden_state).
        self.verifier = HFVerifier(model, hidden_layers=drafter.needs.hidden_layers,
                                   hidden_history=drafter.needs.hidden_history, compiled=compile)
        self.drafter = drafter
        drafter.bind(self.verifier.vocab_size, tokenizer)
        self.tree_builder = tree if tree is not None else Chain()
        if draft_length is None or isinstance(draft_length, int):
            draft_length = FixedDraftLength(draft_length if draft_length is not None else drafter.k)
        self.draft_length = draft_length
        self.on_step = on_step
        self.last_stats: GenerationStats | None = None

    # --- boundary checks ---------------------------------------------------------------------

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer: SpecDiff(model, drafter, tokenizer=...)"
                                 " or pass input_ids")
            ids = self.tokenizer(prompt)["input_ids"]
        elif isinstance(prompt, torch.Tensor):
            if prompt.dim() == 2 and prompt.shape[0] != 1:
                raise ValueError(f"batch size must be 1 (got input_ids of shape {tuple(prompt.shape)}); "
                                 "call generate once per prompt")
            if prompt.dim() > 2:
                raise ValueError(f"input_ids must be [T] or [1, T], got shape {tuple(prompt.shape)}")
            ids = prompt.reshape(-1).tolist()
        elif isinstance(prompt, (list, tuple)):
            if prompt and isinstance(prompt[0], (list, tuple)):
                if len(prompt) != 1:
                    raise ValueError(f"batch size must be 1 (got {len(prompt)} sequences); call generate once per prompt")
                prompt = prompt[0]
            ids = [int(t) for t in prompt]
        else:
            raise TypeError(f"prompt must be a str, a list of ids or a tensor, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("the prompt is empty: give at least one token")
        return ids

    def _check_length(self, prompt_len: int, max_new_tokens: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions", None)
        if limit is not None and prompt_len + max_new_tokens > limit:
            raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                             f"model's {limit} positions; shorten the prompt or lower max_new_tokens")

    # --- generation --------------------------------------------------------------------------

    def stream_tokens(
        self, prompt, max_new_tokens: int = 128, *, temperature: float | None = None, top_k: int | None = None,
        top_p: float | None = None, seed: int | None = None, repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None, eos_token_id: int | list[int] | None = None,
    ) -> Iterator[list[int]]:
        """Yield lists of new token ids as they are accepted; stats land in `self.last_stats`.

        Options not given come from the model's generation_config, then transformers' defaults, as in
        `generate` (so sampling uses top_k 50 unless told top_k=0). temperature 0 is greedy; above 0
        the output is a sample of the target's warped distribution (seed: a reproducible run).
        """
        config = DecodingConfig.from_model(
            self.model, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
            eos_token_ids=eos_token_id,
        )
        ids = self._prompt_ids(prompt)
        self._check_length(len(ids), config.max_new_tokens)
        parts = self._components(config)
        processors = build_processors(config.repetition_penalty, config.no_repeat_ngram_size)
        stats = GenerationStats(settings=config.as_dict())
        self.last_stats = stats
        started = time.perf_counter()
        try:
            for new_tokens in speculative_decode(parts, ids, config, processors, stats):
                stats.wall_time = time.perf_counter() - started
                yield new_tokens
        finally:
            stats.wall_time = time.perf_counter() - started

    def _components(self, config: DecodingConfig) -> Components:
        """The loop's parts; at temperature > 0 one generator drives both drafting and acceptance."""
        if config.sampling is None:
            return Components(self.verifier, self.drafter, self.tree_builder, self.draft_length, greedy_accept,
                              on_step=self.on_step)
        generator = torch.Generator(device=self.verifier.device)
        if config.seed is None:
            generator.seed()
        else:
            generator.manual_seed(config.seed)
        accept = functools.partial(sampled_accept, settings=config.sampling, generator=generator)
        return Components(self.verifier, self.drafter, self.tree_builder, self.draft_length, accept,
                          config.sampling, generator, on_step=self.on_step)

    def generate(self, prompt, max_new_tokens: int = 128, **options) -> GenerationResult:
        token_ids = [t for step in self.stream_tokens(prompt, max_new_tokens, **options) for t in step]
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True) if self.tokenizer is not None else None
        return GenerationResult(token_ids=token_ids, stats=self.last_stats, text=text)

    def stream(self, prompt, max_new_tokens: int = 128, **options) -> Iterator[str]:
        """Yield text pieces as tokens are accepted (held back while a multi-byte character is incomplete)."""
        if self.tokenizer is None:
            raise ValueError("stream() yields text and needs a tokenizer; use stream_tokens() for ids")
        token_ids: list[int] = []
        emitted = ""
        for new_tokens in self.stream_tokens(prompt, max_new_tokens, **options):
            token_ids.extend(new_tokens)
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue
            yield text[len(emitted):]
            emitted = text
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if len(text) > len(emitted):
            yield text[len(emitted):]
