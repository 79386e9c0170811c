"""DiffusionDrafter: block logits equal a full forward with the block mask, Dream's shifted logits,
masked LMs re-encoded, boundary errors, greedy equality with `generate`; and DEER's two training
stages on tiny models."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

import tiny
from specdiff import AdaptiveDraftLength, SpecDiff
from specdiff.drafters import DiffusionDrafter
from specdiff.drafters.base import DraftContext
from specdiff.lattice import LatticePruning
from specdiff.ngram import OnlineNGram
from specdiff.training.data import WindowSampler
from specdiff.training.diffusion import (DiffusionStage, MaskedDiffusionObjective, RowSampler, TailAlignmentObjective,
                                         block_logits, greedy_continuations, heldout_block_accuracy, tail_blocks)
from specdiff.training.loop import TrainConfig, evaluate, train
from specdiff.trees import CausalConsistencySearch

MASK = 3
NEW_TOKENS = 24


def _context(length: int, seed: int = 0) -> list[int]:
    return torch.randint(4, tiny.VOCAB, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _reference_block_probs(model, context, k, window=None, shift=False):
    """One full forward (no cache) of context + k masks with the block mask built by hand."""
    T, Q = len(context), len(context) + k
    positions = torch.arange(Q)
    allowed = positions[None, :] <= positions[:, None]  # causal
    allowed[T:, T:] = True  # bidirectional inside the block
    if window is not None:
        allowed &= (positions[:, None] - positions[None, :]) < window
    mask = torch.zeros(Q, Q).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + [MASK] * k]), attention_mask=mask,
                       position_ids=positions[None]).logits[0]
    first = T - 1 if shift else T
    logits = logits[first : first + k, : tiny.VOCAB].clone()
    logits[:, MASK] = float("-inf")
    return torch.softmax(logits, dim=-1)


BLOCK_CASES = [("llama", "sdpa", {}), ("llama", "eager", {}), ("qwen2", "eager", {}), ("gpt2", "sdpa", {}),
               ("mistral", "sdpa", {"sliding_window": 8})]


@pytest.mark.parametrize("model_type, attn, overrides", BLOCK_CASES, ids=[c[0] + "-" + c[1] for c in BLOCK_CASES])
def test_cached_block_equals_full_forward_with_mask(model_type, attn, overrides):
    model = tiny.build(model_type, attn, seed=3, **overrides)
    drafter = DiffusionDrafter(model, mask_token_id=MASK, k=5)
    context = _context(20)
    for length in (9, 15, 20):  # the cache grows with the committed ids, the block is cropped each time
        lattice = drafter.propose(DraftContext(context[:length], budget=5))
    assert drafter.forward_count == 3
    window = overrides.get("sliding_window")
    assert torch.allclose(lattice.dists, _reference_block_probs(model, context, 5, window), atol=1e-5)
    assert lattice.context == tuple(context)
    other = context[:16] + _context(6, seed=1)  # another request sharing a prefix: the cache is cropped to it
    lattice = drafter.propose(DraftContext(other, budget=5))
    assert torch.allclose(lattice.dists, _reference_block_probs(model, other, 5, window), atol=1e-5)


@pytest.mark.parametrize("model_type, window", [("llama", None), ("mistral", 8)])
def test_shifted_block_reads_the_row_before_each_position(model_type, window):
    model = tiny.build(model_type, seed=3, **({"sliding_window": window} if window else {}))
    drafter = DiffusionDrafter(model, mask_token_id=MASK, k=4, shift_logits=True)
    context = _context(12)
    drafter.propose(DraftContext(context[:7], budget=4))
    lattice = drafter.propose(DraftContext(context, budget=4))
    expected = _reference_block_probs(model, context, 4, window, shift=True)
    assert torch.allclose(lattice.dists, expected, atol=1e-5)
    # the same context twice: the last id is re-fed, since its row predicts the first position
    again = drafter.propose(DraftContext(context, budget=4))
    assert torch.allclose(again.dists, expected, atol=1e-5)


class ModelInCode(torch.nn.Module):
    """What DiffusionDrafter needs of a remote-code dLLM: config, an output embedding, device, forward."""

    def __init__(self, config: SimpleNamespace, vocab: int):
        super().__init__()
        self.config = config
        self.head = torch.nn.Linear(1, vocab)  # stands for the LM head: its rows are the vocabulary

    @property
    def device(self):
        return self.head.weight.device

    def get_output_embeddings(self):
        return self.head


class DreamStyleEcho(ModelInCode):
    """A model with Dream's conventions, built in code: model_type "Dream", bidirectional (not a
    `generate` model), logits[j] predict the token at j + 1. In its toy language the token at
    position p is p % V, so the right draft after T tokens is T, T + 1, ...
    `mask_logit` makes the mask token the model's favourite, to check it is never proposed."""

    def __init__(self, vocab: int = 64, mask_id: int = 63, mask_logit: float = -10.0):
        super().__init__(SimpleNamespace(model_type="Dream", mask_token_id=mask_id), vocab)
        self.mask_id, self.mask_logit = mask_id, mask_logit

    def forward(self, input_ids):
        Q, V = input_ids.shape[1], self.head.weight.shape[0]
        logits = torch.full((1, Q, V), -10.0)
        logits[0, torch.arange(Q), (torch.arange(Q) + 1) % V] = 10.0
        logits[0, :, self.mask_id] = self.mask_logit
        return SimpleNamespace(logits=logits)


def _argmax_tokens(lattice):
    return lattice.candidates[torch.arange(lattice.length), lattice.probs.argmax(-1)].tolist()


def test_dream_shifted_logits_convention():
    context = list(range(10))
    drafter = DiffusionDrafter(DreamStyleEcho(), k=6)
    assert (drafter.block_causal, drafter.shift_logits, drafter.mask_token_id) == (False, True, 63)
    assert _argmax_tokens(drafter.propose(DraftContext(context, budget=6))) == [10, 11, 12, 13, 14, 15]
    unshifted = DiffusionDrafter(DreamStyleEcho(), k=6, shift_logits=False)
    assert _argmax_tokens(unshifted.propose(DraftContext(context, budget=6))) == [11, 12, 13, 14, 15, 16]
    # a drafter whose vocabulary is the mask's favourite still never proposes the mask
    favourite = DiffusionDrafter(DreamStyleEcho(mask_logit=20.0), k=3).propose(DraftContext(context, budget=3))
    assert (favourite.dists[:, 63] == 0).all() and 63 not in favourite.candidates[favourite.probs > 0].tolist()


def _bert(seed: int = 0, vocab: int = tiny.VOCAB):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, initializer_range=0.08)
    return BertForMaskedLM(config).eval()


def test_masked_lm_is_re_encoded_each_step():
    model = _bert()
    drafter = DiffusionDrafter(model, mask_token_id=MASK, k=5, max_context=12)
    assert not drafter.block_causal and not drafter.shift_logits
    context = _context(20)
    lattice = drafter.propose(DraftContext(context, budget=3))  # the budget caps the block
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context[-12:] + [MASK] * 3])).logits[0, 12:]
    logits[:, MASK] = float("-inf")
    assert torch.allclose(lattice.dists, torch.softmax(logits, -1), atol=1e-5)


def test_boundary_errors_name_the_fix():
    with pytest.raises(ValueError, match="mask_token_id"):
        DiffusionDrafter(tiny.build("llama"))
    with pytest.raises(ValueError, match="k"):
        DiffusionDrafter(tiny.build("llama"), mask_token_id=MASK, k=0)
    target = tiny.build("llama")
    with pytest.raises(ValueError, match="vocabulary"):
        SpecDiff(target, DiffusionDrafter(tiny.build("llama", vocab_size=1024), mask_token_id=MASK))
    padded = DiffusionDrafter(tiny.build("llama", vocab_size=tiny.VOCAB + 64), mask_token_id=MASK, k=3)
    SpecDiff(target, padded)  # padded LM-head rows are trimmed
    assert padded.propose(DraftContext(_context(5), budget=3)).dists.shape == (3, tiny.VOCAB)


class OracleDLM(ModelInCode):
    """An always-right diffusion drafter: fills the trailing masks with the target's own greedy
    continuation. Its mask id is outside the target's vocabulary (one padded row), as LLaDA's and
    Dream's can be."""

    def __init__(self, target):
        super().__init__(SimpleNamespace(model_type="oracle", mask_token_id=tiny.VOCAB), tiny.VOCAB + 1)
        self.target = target

    def forward(self, input_ids):
        k = int((input_ids[0] == tiny.VOCAB).sum())
        T = input_ids.shape[1] - k
        continuation = tiny.reference(self.target, input_ids[:, :T], k)
        logits = torch.full((1, T + k, tiny.VOCAB + 1), -10.0)
        logits[0, T + torch.arange(len(continuation)), continuation] = 10.0
        return SimpleNamespace(logits=logits)


TARGETS = [("llama", "sdpa"), ("gpt2", "eager"), ("qwen2", "sdpa")]


@pytest.fixture(scope="module", params=TARGETS, ids=[f"{t}-{a}" for t, a in TARGETS])
def target(request):
    model = tiny.build(*request.param)
    prompt = tiny.repetitive_prompt()
    return model, prompt, tiny.reference(model, prompt, NEW_TOKENS)


def _drafters(model):
    block = tiny.build("llama", seed=11, vocab_size=tiny.VOCAB + 64)
    return {
        "masked-lm": DiffusionDrafter(_bert(seed=5), mask_token_id=MASK, k=6),
        "block-diffusion": DiffusionDrafter(block, mask_token_id=MASK, k=6),
        "oracle": DiffusionDrafter(OracleDLM(model), k=6),
    }


@pytest.mark.parametrize("search", ["chain", "cps+adl"])
def test_greedy_equals_generate(target, search):
    model, prompt, expected = target
    for name, drafter in _drafters(model).items():
        if search == "chain":
            spec = SpecDiff(model, drafter)
        else:
            spec = SpecDiff(model, drafter, tree=CausalConsistencySearch(OnlineNGram(tiny.VOCAB)),
                            draft_length=AdaptiveDraftLength(k_min=2, k_max=6, delta=2))
        result = spec.generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.token_ids == expected, name
        if name == "oracle":
            assert result.stats.tau > 3.0  # the whole block is accepted at almost every step


def test_cps_tree_of_beams_is_lossless(target):
    model, prompt, expected = target
    drafter = DiffusionDrafter(tiny.build("llama", seed=11), mask_token_id=MASK, k=5)
    tree = CausalConsistencySearch(OnlineNGram(tiny.VOCAB), num_paths=3)
    assert SpecDiff(model, drafter, tree=tree).generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected


# --- training (DEER Stage I and II) ---------------------------------------------------------------


def test_training_forward_matches_drafter_inference():
    model = tiny.build("llama", seed=4)
    context, k = _context(14), 5
    clean = torch.tensor([context + _context(k, seed=9)])  # the clean future is never visible to the block
    noisy = torch.tensor([context + [MASK] * k])
    block_start = torch.tensor([list(range(14)) + [14] * k])
    with torch.no_grad():
        logits = block_logits(model, clean, noisy, block_start)[0, 14:]
    logits[:, MASK] = float("-inf")
    lattice = DiffusionDrafter(model, mask_token_id=MASK, k=k).propose(DraftContext(context, budget=k))
    assert torch.allclose(lattice.dists, torch.softmax(logits, -1), atol=1e-5)


def test_tail_blocks_layout_and_weights():
    alpha = 1.5
    block_start, weights = tail_blocks(9, prompt_length=4, tail=torch.tensor([[3]]), alpha=alpha)
    assert block_start.tolist() == [[0, 1, 2, 3, 4, 4, 4, 7, 7]]
    expected = [0, 0, 0, 0, alpha**2, alpha, 1, alpha, 1]  # the last block is cut to 2 tokens
    assert torch.allclose(weights, torch.tensor([expected]))


def _periodic_stream(length: int = 4000) -> np.ndarray:
    return np.tile(np.arange(10, 30), length // 20)


def test_stage_one_smoke_lowers_the_loss(tmp_path):
    model = tiny.build("llama", seed=2, hidden_size=32, intermediate_size=64).train()
    objective = MaskedDiffusionObjective(MASK, max_block=6)
    sampler = WindowSampler(_periodic_stream(), seq_len=24, batch_size=4, seed=0)
    eval_batches = sampler.fixed_batches(2)
    before = evaluate(model, objective, eval_batches, "cpu")
    config = TrainConfig(steps=40, batch_size=4, seq_len=24, lr=1e-2, warmup_steps=2, eval_every=40,
                         eval_batches=2, save_every=40)
    result = train(model, objective, sampler.batch, eval_batches, config, tmp_path, desc="stage 1 smoke")
    assert result.step == 40 and (tmp_path / "checkpoint").exists()
    assert result.eval_loss < before - 1.0
    assert objective.loss(model.eval(), eval_batches[0]).item() == pytest.approx(
        objective.loss(model, eval_batches[0]).item())  # the noise is a pure function of the batch
    metrics = heldout_block_accuracy(model, eval_batches, MASK, block=4)
    assert len(metrics["accuracy_by_position"]) == 4 and metrics["block_ce"] > 0


def test_stage_two_smoke(tmp_path, monkeypatch):
    target = tiny.build("llama", seed=0)
    prompts = WindowSampler(_periodic_stream(), seq_len=8, batch_size=6, seed=1).batch(0)  # [6, 8]
    rows = greedy_continuations(target, prompts, new_tokens=8, batch_size=4, cache_path=tmp_path / "rows.npy")
    assert rows.shape == (6, 16) and (rows[:, :8] == prompts.numpy()).all()
    assert rows[0, 8:].tolist() == tiny.reference(target, prompts[:1], 8)
    monkeypatch.setattr(target, "generate", lambda *a, **k: pytest.fail("the cached rows must be reused"))
    assert (greedy_continuations(target, prompts, 8, cache_path=tmp_path / "rows.npy") == rows).all()

    drafter = tiny.build("llama", seed=2, hidden_size=32, intermediate_size=64).train()
    objective = TailAlignmentObjective(MASK, prompt_length=8, max_tail=4, ignore_token_id=0)
    sampler = RowSampler(rows, batch_size=4, seed=0)
    config = TrainConfig(steps=3, batch_size=4, seq_len=16, lr=1e-3, warmup_steps=1, eval_every=3,
                         eval_batches=1, save_every=3)
    result = train(drafter, objective, sampler.batch, sampler.fixed_batches(1), config, tmp_path / "run",
                   desc="stage 2 smoke")
    assert result.step == 3 and np.isfinite(result.eval_loss)


def test_stage_config_is_validated():
    with pytest.raises(ValueError, match="stage"):
        DiffusionStage(stage=3)
    with pytest.raises(ValueError, match="init_from"):
        DiffusionStage(stage=2)
    assert isinstance(DiffusionStage(stage=1).objective(MASK, 0, seed=0), MaskedDiffusionObjective)
    assert isinstance(DiffusionStage(stage=2, init_from="s1").objective(MASK, 0, seed=0), TailAlignmentObjective)
