"""One training loop for every zoo model, built on accelerate.

The same code runs on this CPU and under `accelerate launch` on several GPUs. What is learned is
an `Objective`; the loop owns batching, the schedule, evaluation, checkpoints and resume.
A checkpoint is written every `save_every` steps, on Ctrl-C, SIGTERM and a crash, and `train` picks up
from the newest one in `out_dir` (batches are a pure function of (seed, step), so resume is exact).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

STATE_FILE = "trainer_state.json"
MIXED_PRECISION = ("no", "bf16")


class Objective(Protocol):
    """What a training run minimises. `batch` is [B, S] token ids from the sampler."""

    def loss(self, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batches: int = 8
    save_every: int = 200
    seed: int = 0
    # The training forward's precision: "no" (fp32) or "bf16" (torch.autocast; on CPUs with AMX or
    # AVX512-BF16 a step runs 2-4x faster, and bf16 needs no loss scaling). Evaluation stays in fp32.
    mixed_precision: str = "no"

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainConfig.mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to `min_lr_ratio` at the last step."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine


@dataclass
class TrainResult:
    step: int
    eval_loss: float | None
    tokens_seen: int
    train_seconds: float
    interrupted: bool = False
    # [step, held-out loss] at every evaluation, or [step, loss, metrics] with `train(metrics=...)`
    history: list = field(default_factory=list)


def _load_state(out_dir: Path) -> dict:
    state_path = out_dir / "checkpoint" / STATE_FILE
    if state_path.exists():
        return json.loads(state_path.read_text())
    return {"step": 0, "train_seconds": 0.0, "eval_loss": None, "history": []}


def _save_checkpoint(accelerator: Accelerator, out_dir: Path, state: dict, config: TrainConfig):
    checkpoint = out_dir / "checkpoint"
    accelerator.save_state(str(checkpoint))
    if accelerator.is_main_process:
        (checkpoint / STATE_FILE).write_text(json.dumps({**state, "config": asdict(config)}, indent=1))


@contextmanager
def stop_signals_interrupt():
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block, so the loop checkpoints before it stops:
    Ctrl-C, `kill`, a job scheduler's or `timeout`'s SIGTERM, and SIGINT to a job started in the background
    (which a shell starts with SIGINT ignored) all leave a checkpoint to resume from."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@torch.no_grad()
def evaluate(model, objective: Objective, batches: list[torch.Tensor], device) -> float:
    model.eval()
    losses = [objective.loss(model, batch.to(device)).item() for batch in batches]
    model.train()
    return sum(losses) / len(losses)


def train(
    model: torch.nn.Module,
    objective: Objective,
    sample_batch: Callable[[int], torch.Tensor],
    eval_batches: list[torch.Tensor],
    config: TrainConfig,
    out_dir: Path,
    desc: str = "training",
    metrics: Callable[[torch.nn.Module], dict] | None = None,
) -> TrainResult:
    """Train `model` in place for `config.steps` steps, resuming from `out_dir/checkpoint`.
    metrics(model): extra held-out measurements (e.g. a drafter's acceptance) taken at every evaluation
    and kept in the history, so a card can show how they grew with training."""
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    accelerator = Accelerator()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = _load_state(out_dir)
    if state["step"] > 0:
        accelerator.load_state(str(out_dir / "checkpoint"))
    tokens_per_step = config.batch_size * config.seq_len * accelerator.num_processes
    progress = tqdm(
        total=config.steps, initial=state["step"], desc=desc, unit="step",
        disable=not accelerator.is_local_main_process,
    )
    model.train()
    started = time.perf_counter() - state["train_seconds"]
    interrupted = False
    # Our own autocast, not Accelerator(mixed_precision=...): objectives call the model's parts (not only
    # the forward accelerate wraps), and accelerate allows one precision per process.
    bf16 = config.mixed_precision == "bf16"
    try:
        with stop_signals_interrupt():
            while state["step"] < config.steps:
                step = state["step"]
                # Each process takes its own slice of the global batch stream.
                batch = sample_batch(step * accelerator.num_processes + accelerator.process_index)
                with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=bf16):
                    loss = objective.loss(model, batch.to(accelerator.device))
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] = step + 1
                state["train_seconds"] = time.perf_counter() - started
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if state["step"] % config.eval_every == 0 or state["step"] == config.steps:
                    _evaluate_into(state, model, objective, eval_batches, accelerator, metrics, progress)
                if state["step"] % config.save_every == 0 or state["step"] == config.steps:
                    _save_checkpoint(accelerator, out_dir, state, config)
    except KeyboardInterrupt:
        interrupted = True
        progress.write(f"interrupted at step {state['step']}: saving a checkpoint to resume from")
        _save_checkpoint(accelerator, out_dir, state, config)
    except Exception:
        _save_checkpoint(accelerator, out_dir, state, config)
        raise
    finally:
        progress.close()
    return TrainResult(
        step=state["step"],
        eval_loss=state["eval_loss"],
        tokens_seen=state["step"] * tokens_per_step,
        train_seconds=state["train_seconds"],
        interrupted=interrupted,
        history=list(state["history"]),
    )


def _evaluate_into(state: dict, model, objective: Objective, eval_batches, accelerator: Accelerator,
                   metrics: Callable[[torch.nn.Module], dict] | None, progress) -> None:
    """Held-out loss (and `metrics`) now: into state["eval_loss"] and state["history"], and printed."""
    state["eval_loss"] = evaluate(model, objective, eval_batches, accelerator.device)
    entry = [state["step"], round(state["eval_loss"], 4)]
    if metrics is not None:
        entry.append(_measure(metrics, accelerator.unwrap_model(model)))
    state["history"].append(entry)
    extra = "".join(f", {key} {value}" for key, value in (entry[2] if metrics else {}).items())
    progress.write(f"step {state['step']}: held-out loss {state['eval_loss']:.4f}{extra}")


@torch.no_grad()
def _measure(metrics: Callable[[torch.nn.Module], dict], model: torch.nn.Module) -> dict:
    was_training = model.training
    model.eval()
    try:
        return metrics(model)
    finally:
        model.train(was_training)


def with_steps(config: TrainConfig, steps: int) -> TrainConfig:
    """`config` shortened (or lengthened) to `steps`, warm-up and intervals kept within it."""
    values = asdict(config)
    values.update(steps=steps, warmup_steps=min(config.warmup_steps, steps - 1),
                  eval_every=min(config.eval_every, steps), save_every=min(config.save_every, steps))
    return TrainConfig(**values)
