"""Tiny random models built from configs in code (no downloads), shared by the tests."""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 256
# benchmarks/device_check.sh runs the lossless tests on a GPU with SPECDIFF_TEST_DEVICE=cuda.
DEVICE = os.environ.get("SPECDIFF_TEST_DEVICE", "cpu")

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, initializer_range=0.08, max_position_embeddings=512,
               bos_token_id=1, eos_token_id=2, pad_token_id=0)

# model_type -> extra config kwargs (GQA where the family has it)
ARCHITECTURES = {
    "llama": dict(num_key_value_heads=2),
    "qwen2": dict(num_key_value_heads=2),
    "qwen3": dict(num_key_value_heads=2, head_dim=16),
    "mistral": dict(num_key_value_heads=2, sliding_window=4096),
    "phi3": dict(num_key_value_heads=2),
    "phi": dict(),
    "gemma": dict(num_key_value_heads=2, head_dim=16),
    "gemma3_text": dict(num_key_value_heads=2, head_dim=16, sliding_window=4096),
    "gpt2": dict(n_positions=512),
    "gpt_neox": dict(),
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64),
    "falcon": dict(new_decoder_architecture=False, multi_query=True, alibi=False),
    "gpt_bigcode": dict(n_positions=512),
    "olmo2": dict(num_key_value_heads=2),
    "stablelm": dict(num_key_value_heads=2),
    "granite": dict(num_key_value_heads=2),
}

# Gemma2 refuses sdpa (attention soft-capping).
EAGER_ONLY = {"gemma2": dict(num_key_value_heads=2, head_dim=16, sliding_window=4096)}


def build(model_type: str, attn: str = "sdpa", seed: int = 0, eos: bool = False, **overrides):
    kwargs = {**_COMMON, **ARCHITECTURES.get(model_type, EAGER_ONLY.get(model_type, {})), **overrides}
    config = AutoConfig.for_model(model_type, **kwargs)
    if not eos:
        config.eos_token_id = None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).to(DEVICE).eval()
    if not eos:
        model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def reference(model, prompt_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> list[int]:
    """Plain greedy `generate`, the ground truth for every lossless test."""
    prompt_ids = prompt_ids.to(model.device)
    out = model.generate(prompt_ids, max_new_tokens=max_new_tokens, do_sample=False,
                         attention_mask=torch.ones_like(prompt_ids), **kwargs)
    return out[0, prompt_ids.shape[1]:].tolist()


def repetitive_prompt(length: int = 24, seed: int = 0) -> torch.Tensor:
    """A prompt with repeated n-grams, so prompt lookup finds matches."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(3, VOCAB, (length // 3,), generator=g)
    return torch.cat([base, base, base])[:length][None]
