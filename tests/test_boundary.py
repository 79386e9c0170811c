"""Bad input is refused at the public boundary with a message that names the fix; EOS and
max_new_tokens stop exactly."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import tiny
from specdiff import SpecDiff
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.hf_compat import UnsupportedModelError


@pytest.fixture(scope="module")
def model():
    return tiny.build("llama")


def test_batch_size_other_than_one(model):
    spec = SpecDiff(model, PromptLookupDrafter())
    with pytest.raises(ValueError, match="batch size must be 1"):
        spec.generate(torch.ones(2, 5, dtype=torch.long), max_new_tokens=4)
    with pytest.raises(ValueError, match="batch size must be 1"):
        spec.generate([[1, 2], [3, 4]], max_new_tokens=4)


def test_empty_prompt_and_bad_lengths(model):
    spec = SpecDiff(model, PromptLookupDrafter())
    with pytest.raises(ValueError, match="empty"):
        spec.generate([], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        spec.generate([1, 2, 3], max_new_tokens=0)
    with pytest.raises(ValueError, match="positions"):
        spec.generate([1, 2, 3], max_new_tokens=10_000)


def test_text_prompt_needs_a_tokenizer(model):
    with pytest.raises(ValueError, match="tokenizer"):
        SpecDiff(model, PromptLookupDrafter()).generate("def f():", max_new_tokens=4)


def test_padded_drafter_vocabulary_is_trimmed(model):
    # Same tokenizer, LM head padded by 64 rows (like Qwen's 151936 vs 152064).
    drafter_model = tiny.build("llama", seed=3, vocab_size=tiny.VOCAB + 64)
    prompt = tiny.repetitive_prompt()
    result = SpecDiff(model, AutoregressiveDrafter(drafter_model, k=4)).generate(prompt, max_new_tokens=16)
    assert result.token_ids == tiny.reference(model, prompt, 16)


def test_real_vocabulary_mismatch_is_an_error(model):
    drafter_model = tiny.build("llama", seed=3, vocab_size=4 * tiny.VOCAB)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        SpecDiff(model, AutoregressiveDrafter(drafter_model, k=4))


def test_bad_drafter_options():
    with pytest.raises(ValueError, match="k"):
        PromptLookupDrafter(k=0)
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDrafter(ngram=2, min_ngram=3)


def test_bloom_is_refused_with_a_reason():
    config = AutoConfig.for_model("bloom", vocab_size=64, hidden_size=32, n_layer=1, n_head=2)
    bloom = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedModelError, match="ALiBi"):
        SpecDiff(bloom, PromptLookupDrafter())


def test_eos_accepted_mid_block_stops_there():
    model = tiny.build("llama")
    prompt = tiny.repetitive_prompt()
    free_run = tiny.reference(model, prompt, 30)
    eos = free_run[9]  # a token the model emits in the middle: make it the EOS
    first = free_run.index(eos)
    model.generation_config.eos_token_id = eos
    expected = tiny.reference(model, prompt, 30)
    assert expected == free_run[: first + 1]
    result = SpecDiff(model, AutoregressiveDrafter(model, k=6)).generate(prompt, max_new_tokens=30)
    assert result.token_ids == expected
    # the self-drafter proposed past the EOS inside one block; nothing after it is emitted
    assert result.stats.new_tokens == len(expected)


def test_stops_exactly_at_max_new_tokens(model):
    prompt = tiny.repetitive_prompt()
    for n in (1, 2, 5, 7):
        result = SpecDiff(model, AutoregressiveDrafter(model, k=4)).generate(prompt, max_new_tokens=n)
        assert result.token_ids == tiny.reference(model, prompt, n)
