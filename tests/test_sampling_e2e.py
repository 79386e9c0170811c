"""End to end at temperature > 0: the first tokens SpecDiff emits follow the target's own sampling law
(computed exactly by enumerating a V = 8 model, and checked against `generate`'s scores), for chain,
tree and lookup drafters; seeded runs repeat; greedy with penalties still equals `generate`."""

import itertools

import pytest
import torch
from transformers import (LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

import tiny
from specdiff import DecodingConfig, ProposalKind, SpecDiff
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter, TiDARDrafter
from test_sampling import P_VALUE, chi_square_pvalue

V = 8
SMALL = dict(vocab_size=V, hidden_size=16, num_hidden_layers=1, intermediate_size=32, num_attention_heads=2,
             num_key_value_heads=1, initializer_range=0.3)  # peaked, distinct laws: drafts get rejected
PROMPT = torch.tensor([[3, 4, 5, 3, 4]])


def small_model(seed: int):
    return tiny.build("llama", "eager", seed=seed, **SMALL)


def reference_processors(options: dict) -> LogitsProcessorList:
    """What `generate(do_sample=True, **options)` applies, built from transformers' classes directly."""
    processors = LogitsProcessorList()
    if options.get("repetition_penalty", 1.0) != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(options["repetition_penalty"]))
    if options.get("no_repeat_ngram_size", 0):
        processors.append(NoRepeatNGramLogitsProcessor(options["no_repeat_ngram_size"]))
    if options["temperature"] != 1.0:
        processors.append(TemperatureLogitsWarper(options["temperature"]))
    if options.get("top_k", 0):
        processors.append(TopKLogitsWarper(options["top_k"]))
    if options.get("top_p", 1.0) < 1.0:
        processors.append(TopPLogitsWarper(options["top_p"]))
    return processors


@torch.no_grad()
def next_token_laws(model, contexts: torch.Tensor, options: dict) -> torch.Tensor:
    """contexts [B, T] -> the target's sampling law of the next token [B, V]."""
    logits = model(contexts).logits[:, -1].float()
    return torch.softmax(reference_processors(options)(contexts, logits), dim=-1)


def exact_law(model, length: int, options: dict) -> torch.Tensor:
    """[V ** length] probability of each sequence of `length` first tokens, by enumeration."""
    law = torch.ones(1)
    for depth in range(length):
        prefixes = torch.tensor(list(itertools.product(range(V), repeat=depth)), dtype=torch.long)
        contexts = torch.cat([PROMPT.expand(V ** depth, -1), prefixes.reshape(V ** depth, depth)], dim=1)
        law = (law[:, None] * next_token_laws(model, contexts, options)).flatten()  # [V ** (depth + 1)]
    return law


def test_exact_law_is_what_generate_samples_from():
    model = small_model(0)
    options = dict(temperature=0.8, top_k=4, top_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2)
    out = model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=3, do_sample=True,
                         output_scores=True, return_dict_in_generate=True, **options)
    for step, scores in enumerate(out.scores):
        context = out.sequences[:, : PROMPT.shape[1] + step]
        assert torch.allclose(torch.softmax(scores.float(), dim=-1), next_token_laws(model, context, options))


def first_tokens_pvalue(spec: SpecDiff, model, length: int, runs: int, options: dict) -> float:
    counts = torch.zeros(V ** length)
    for seed in range(runs):
        tokens = spec.generate(PROMPT, max_new_tokens=length, seed=seed, **options).token_ids
        counts[sum(t * V ** (length - 1 - i) for i, t in enumerate(tokens))] += 1
    return chi_square_pvalue(counts, exact_law(model, length, options))


CASES = {
    # name: (drafter factory, tokens, runs, options)
    "chain": (lambda target: AutoregressiveDrafter(small_model(5), k=2), 3, 300, dict(temperature=1.0, top_k=0)),
    "chain-warped": (lambda target: AutoregressiveDrafter(small_model(5), k=2), 3, 200,
                     dict(temperature=0.7, top_k=4, top_p=0.9, repetition_penalty=1.3)),
    # the chain stops where its sampled tokens' probability falls to <= delta: a length set by the draft
    "chain-cut": (lambda target: AutoregressiveDrafter(small_model(5), k=3, tree_threshold=0.15), 3, 200,
                  dict(temperature=1.0, top_k=0)),
    # a reduced draft vocabulary (FR-Spec): tokens outside it have q = 0, which the residual law covers
    "chain-reduced-vocab": (lambda target: AutoregressiveDrafter(small_model(5), k=2, draft_vocab=[0, 1, 3, 4, 6]),
                            3, 200, dict(temperature=0.8, top_k=0, repetition_penalty=1.2)),
    "tree-reduced-vocab": (lambda target: AutoregressiveDrafter(small_model(5), k=2, top_k=2, draft_vocab=[1, 3, 4, 5]),
                           3, 200, dict(temperature=1.0, top_k=0)),
    "tree": (lambda target: AutoregressiveDrafter(small_model(5), k=2, top_k=3), 3, 200,
             dict(temperature=1.0, top_k=0, no_repeat_ngram_size=2)),
    "lookup": (lambda target: PromptLookupDrafter(ngram=1, k=2, max_branches=2), 2, 150,
               dict(temperature=1.0, top_k=0)),
    # the shape (matches, depth, or none) follows the wall clock; what is accepted must not
    "lookup-measured": (lambda target: PromptLookupDrafter(ngram=1, k=2, max_branches=2, measure_shape=True), 2, 150,
                        dict(temperature=1.0, top_k=0)),
    "self": (lambda target: AutoregressiveDrafter(target, k=2), 3, 150, dict(temperature=0.9, top_k=0)),
    # the model drafts in its own verify forward (deterministic argmax blocks, chain rule)
    "tidar": (lambda target: TiDARDrafter(target, block_size=3, mask_token_id=V - 1), 3, 200,
              dict(temperature=1.0, top_k=0, repetition_penalty=1.2)),
}


@pytest.mark.parametrize("case", CASES)
def test_first_tokens_follow_the_target(case):
    make_drafter, length, runs, options = CASES[case]
    model = small_model(0)
    spec = SpecDiff(model, make_drafter(model))
    assert first_tokens_pvalue(spec, model, length, runs, options) > P_VALUE


def test_drafts_are_both_accepted_and_rejected():
    # the distribution check above is only worth something if the residual path really runs
    model = small_model(0)
    spec = SpecDiff(model, AutoregressiveDrafter(small_model(5), k=2))
    accepted = [n for seed in range(30)
                for n in spec.generate(PROMPT, max_new_tokens=6, temperature=1.0, seed=seed).stats.accepted_lengths]
    assert 0 in accepted and max(accepted) == 2


def test_tidar_drafts_are_both_accepted_and_rejected():
    model = small_model(0)
    spec = SpecDiff(model, TiDARDrafter(model, block_size=3, mask_token_id=V - 1))
    accepted = [n for seed in range(30)
                for n in spec.generate(PROMPT, max_new_tokens=6, temperature=1.0, seed=seed).stats.accepted_lengths]
    assert 0 in accepted and max(accepted) >= 1


def test_self_drafter_is_always_accepted():
    model = small_model(0)
    spec = SpecDiff(model, AutoregressiveDrafter(model, k=3))
    result = spec.generate(PROMPT, max_new_tokens=13, temperature=0.8, top_p=0.9, seed=0)
    assert result.stats.accepted_lengths[:-1] == [3] * (len(result.stats.accepted_lengths) - 1)


class RecordingDrafter(AutoregressiveDrafter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # (DraftContext, DraftTree) per step

    def propose(self, ctx):
        tree = super().propose(ctx)
        self.seen.append((ctx, tree))
        return tree


def test_the_drafter_samples_what_it_reports():
    drafter = RecordingDrafter(small_model(5), k=3)
    SpecDiff(small_model(0), drafter).generate(PROMPT, max_new_tokens=8, temperature=0.7, top_k=5, seed=0)
    assert drafter.seen
    for ctx, tree in drafter.seen:
        assert tree.kind is ProposalKind.IID and ctx.generator is not None
        assert (ctx.sampling.temperature, ctx.sampling.top_k) == (0.7, 5)
        assert bool((tree.draft_dists[torch.arange(len(tree)), tree.tokens] > 0).all())
        assert int((tree.draft_dists > 0).sum(-1).max()) <= 5  # the target's top-k warp, applied to q too


def test_seeded_runs_repeat():
    model = small_model(0)
    for drafter in (AutoregressiveDrafter(small_model(5), k=3), AutoregressiveDrafter(small_model(5), k=2, top_k=2)):
        spec = SpecDiff(model, drafter)
        runs = [spec.generate(PROMPT, max_new_tokens=12, temperature=1.0, seed=seed).token_ids for seed in (1, 1, 2)]
        assert runs[0] == runs[1]
        assert len({tuple(spec.generate(PROMPT, max_new_tokens=12, temperature=1.0, seed=s).token_ids)
                    for s in range(5)}) > 1


def test_settings_come_from_the_generation_config():
    model = small_model(0)
    assert DecodingConfig.from_model(model).greedy
    assert DecodingConfig.from_model(model, temperature=0.7).sampling.top_k == 50  # generate's default
    model.generation_config.do_sample, model.generation_config.temperature = True, 0.6
    model.generation_config.top_p, model.generation_config.repetition_penalty = 0.8, 1.2
    config = DecodingConfig.from_model(model, top_k=0)
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty) == (0.6, 0, 0.8, 1.2)
    assert DecodingConfig.from_model(model, temperature=0).greedy
    result = SpecDiff(model, PromptLookupDrafter(ngram=1)).generate(PROMPT, max_new_tokens=4, seed=0)
    assert result.stats.settings["temperature"] == 0.6 and result.stats.settings["seed"] == 0


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_greedy_with_penalties_equals_generate_on_branching_trees(model_type):
    model = tiny.build(model_type, "eager")
    prompt = tiny.repetitive_prompt()
    penalties = dict(repetition_penalty=1.3, no_repeat_ngram_size=3)
    expected = tiny.reference(model, prompt, 24, **penalties)
    drafters = (AutoregressiveDrafter(tiny.build("llama", "eager", seed=7), k=3, top_k=3),
                AutoregressiveDrafter(model, k=3, top_k=2), PromptLookupDrafter(ngram=1, k=5, max_branches=4))
    for drafter in drafters:
        assert SpecDiff(model, drafter).generate(prompt, max_new_tokens=24, temperature=0, **penalties).token_ids == expected
