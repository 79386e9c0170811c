"""HFVerifier: one tree forward equals per-path sequential decoding; compaction keeps the cache exact."""

import pytest
import torch

import tiny
from specdiff import SpecDiff
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.types import DraftTree, path_to
from specdiff.verifiers import HFVerifier

TREE = DraftTree(torch.tensor([5, 9, 17, 33, 65, 129, 7, 11, 13, 40, 41, 42]),
                 torch.tensor([-1, -1, 0, 0, 1, 2, 2, 3, 4, 5, 7, -1]))
ARCHS = [("llama", "eager"), ("llama", "sdpa"), ("gpt2", "sdpa"), ("opt", "eager"), ("qwen3", "sdpa"),
         ("gemma3_text", "sdpa"), ("falcon", "sdpa"), ("gpt_bigcode", "eager")]


def sequential_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


@pytest.mark.parametrize("model_type,attn", ARCHS)
def test_tree_logits_equal_sequential(model_type, attn):
    model = tiny.build(model_type, attn)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    verifier = HFVerifier(model)
    verifier.prefill(prefix)
    logits = verifier.score(TREE).logits
    assert logits.shape == (1 + TREE.num_nodes, model.config.vocab_size)
    torch.testing.assert_close(logits[0], sequential_logits(model, prefix), atol=1e-4, rtol=0)
    for node in range(TREE.num_nodes):
        path_tokens = TREE.tokens[path_to(TREE.parents, node)].tolist()
        torch.testing.assert_close(logits[node + 1], sequential_logits(model, prefix + path_tokens), atol=1e-4, rtol=0)


@pytest.mark.parametrize("model_type,attn", ARCHS[:3])
def test_commit_compacts_cache_to_accepted_path(model_type, attn):
    model = tiny.build(model_type, attn)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    verifier = HFVerifier(model)
    verifier.prefill(prefix)
    verifier.score(TREE)
    path = [0, 2, 5, 9]  # not contiguous in the flattened tree
    verifier.commit(path, next_token=3)
    committed = prefix + TREE.tokens[path].tolist() + [3]
    assert verifier.committed == committed
    assert verifier.cache.get_seq_length() == len(committed) - 1
    # the next forward continues exactly as sequential decoding of the committed ids
    logits = verifier.score(DraftTree.chain([8])).logits
    torch.testing.assert_close(logits[0], sequential_logits(model, committed), atol=1e-4, rtol=0)
    torch.testing.assert_close(logits[1], sequential_logits(model, committed + [8]), atol=1e-4, rtol=0)


SLIDING = [("mistral", "eager"), ("mistral", "sdpa"), ("gemma2", "eager"), ("gemma3_text", "eager"),
           ("gemma3_text", "sdpa"), ("qwen2", "sdpa")]


@pytest.mark.parametrize("model_type,attn", SLIDING)
def test_generation_longer_than_sliding_window(model_type, attn):
    extra = dict(sliding_window=8)
    if model_type == "qwen2":
        extra.update(use_sliding_window=True, max_window_layers=1)  # layer 0 full, layer 1 sliding
    if model_type == "gemma3_text":
        extra.update(layer_types=["sliding_attention", "full_attention"])
    if model_type == "gemma2":
        extra.update(layer_types=["sliding_attention", "full_attention"])
    model = tiny.build(model_type, attn, **extra)
    prompt = tiny.repetitive_prompt(20)
    expected = tiny.reference(model, prompt, 40)
    for drafter in (AutoregressiveDrafter(model, k=4), AutoregressiveDrafter(model, k=3, top_k=2),
                    PromptLookupDrafter(ngram=1, k=5, max_branches=3)):
        result = SpecDiff(model, drafter).generate(prompt, max_new_tokens=40)
        assert result.token_ids == expected, type(drafter).__name__


def test_prefill_reuses_cache_when_the_prompt_extends_the_committed_ids():
    model = tiny.build("llama")
    spec = SpecDiff(model, AutoregressiveDrafter(model, k=3))
    prompt = tiny.repetitive_prompt(12)[0].tolist()
    first = spec.generate(prompt, max_new_tokens=10).token_ids
    cache_before = spec.verifier.cache
    follow_up = prompt + first + [7, 8, 9]
    second = spec.generate(follow_up, max_new_tokens=10).token_ids
    assert spec.verifier.cache is cache_before  # reused, not rebuilt
    assert second == tiny.reference(model, torch.tensor([follow_up]), 10)


def test_one_token_prompt():
    model = tiny.build("llama")
    prompt = torch.tensor([[5]])
    result = SpecDiff(model, AutoregressiveDrafter(model, k=3)).generate(prompt, max_new_tokens=12)
    assert result.token_ids == tiny.reference(model, prompt, 12)
