"""The shared accelerate training loop: a few steps, checkpoints, exact resume after Ctrl-C or a stop signal."""

import os
import signal

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specdiff.training.data import WindowSampler
from specdiff.training.loop import TrainConfig, train
from specdiff.training.objectives import CausalLMObjective, DistillationObjective


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)
    return LlamaForCausalLM(config)


@pytest.fixture
def sampler():
    stream = np.random.default_rng(0).integers(0, 64, size=5000).astype(np.uint16)
    return WindowSampler(stream, seq_len=16, batch_size=2, seed=0)


CONFIG = TrainConfig(steps=6, batch_size=2, seq_len=16, lr=1e-2, warmup_steps=1, eval_every=3, eval_batches=2,
                     save_every=2)


def test_interrupted_run_resumes_exactly(sampler, tmp_path):
    # Reference: six uninterrupted steps.
    reference = tiny_llama()
    train(reference, CausalLMObjective(), sampler.batch, sampler.fixed_batches(2), CONFIG, tmp_path / "ref")

    # Same run, Ctrl-C during step 3, then the same command again.
    def interrupting(step):
        if step == 3:
            raise KeyboardInterrupt
        return sampler.batch(step)

    model = tiny_llama()
    first = train(model, CausalLMObjective(), interrupting, sampler.fixed_batches(2), CONFIG, tmp_path / "run")
    assert first.interrupted and first.step == 3
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.json").exists()
    resumed_model = tiny_llama(seed=99)  # fresh weights: everything must come from the checkpoint
    second = train(resumed_model, CausalLMObjective(), sampler.batch, sampler.fixed_batches(2), CONFIG, tmp_path / "run")
    assert not second.interrupted and second.step == 6
    assert second.tokens_seen == 6 * 2 * 16
    for (name, a), (_, b) in zip(reference.named_parameters(), resumed_model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert second.eval_loss < np.log(64)  # it learned something on this stream's windows


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_leaves_a_checkpoint(sampler, tmp_path, signum):
    """kill / a scheduler's SIGTERM, and SIGINT even where it was ignored (a job started in the background)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def signalling(step):
        if step == 2:
            os.kill(os.getpid(), signum)  # delivered before the next bytecode: step 2 never runs
        return sampler.batch(step)

    try:
        result = train(tiny_llama(), CausalLMObjective(), signalling, sampler.fixed_batches(1), CONFIG, tmp_path)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the loop's handlers are gone again
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.interrupted and result.step == 2
    resumed = train(tiny_llama(seed=5), CausalLMObjective(), sampler.batch, sampler.fixed_batches(1), CONFIG, tmp_path)
    assert resumed.step == CONFIG.steps and not resumed.interrupted


def test_distillation_objective_runs(sampler, tmp_path):
    teacher = tiny_llama(seed=5)
    student = tiny_llama(seed=6)
    config = TrainConfig(steps=2, batch_size=2, seq_len=16, warmup_steps=0, eval_every=2, eval_batches=1, save_every=2)
    result = train(student, DistillationObjective(teacher, kl_weight=0.5), sampler.batch, sampler.fixed_batches(1),
                   config, tmp_path)
    assert result.step == 2 and np.isfinite(result.eval_loss)


def test_config_validation():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
