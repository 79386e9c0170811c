"""DEER's two training stages for a block-diffusion drafter (algorithms.md §2.2), as `Objective`s.

The drafter is an ordinary causal LM driven with a 4-D mask. Each training sequence is doubled,
[clean x_1..x_S | noisy copy], as in block-diffusion training (BD3-LM, Fast-dLLM v2, TiDAR): the
clean half is causal and plays the committed context; the noisy half is cut into blocks, and a
block attends to the clean tokens before it plus itself, bidirectionally. That is exactly what the
drafter sees at inference (a cached causal context, then one block of masks), and every block of
a sequence is a training example in the same forward. Masked position i predicts token i (no shift).

- Stage I (`MaskedDiffusionObjective`): masked diffusion on the corpus. Per block, t ~ U(min_t, 1),
  each token masked with probability t, cross-entropy on masked tokens weighted 1/t (DEER Eq. 2,
  MDLM). DEER's [SEP] marker is not needed: the block mask marks the boundary.
- Stage II (`TailAlignmentObjective`): on the target's own greedy continuations, blocks of
  R ~ U(1, R_max) fully masked tokens after a clean prefix, weights alpha^(R - i), i = 1 next to the
  prefix (DEER Eq. 3-4, alpha = 1.01). DEER masks one tail per answer; here every block of the
  answer is such a tail, each with its own clean prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from specdiff.masks import additive_mask


def block_diffusion_mask(block_start: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """block_start [B, S] (first position of each position's block) -> additive mask [B, 1, 2S, 2S]
    over [clean | noisy]: clean rows causal; a noisy row sees the clean tokens before its block and
    the noisy tokens of its own block."""
    B, S = block_start.shape
    positions = torch.arange(S, device=block_start.device)
    causal = (positions[None, :] <= positions[:, None]).expand(B, S, S)
    clean_rows = torch.cat([causal, torch.zeros_like(causal)], dim=2)  # [B, S, 2S]
    sees_clean = positions[None, None, :] < block_start[:, :, None]  # [B, S, S]
    same_block = block_start[:, :, None] == block_start[:, None, :]  # [B, S, S]
    noisy_rows = torch.cat([sees_clean, same_block], dim=2)
    allowed = torch.cat([clean_rows, noisy_rows], dim=1)  # [B, 2S, 2S]
    return torch.cat([additive_mask(rows, dtype, block_start.device) for rows in allowed])


def block_logits(model, clean: torch.Tensor, noisy: torch.Tensor, block_start: torch.Tensor) -> torch.Tensor:
    """Logits [B, S, V] of the noisy half: position i's prediction of clean token i."""
    B, S = clean.shape
    dtype = model.get_output_embeddings().weight.dtype
    positions = torch.arange(S, device=clean.device).repeat(2)[None].expand(B, -1)  # [B, 2S]
    out = model(input_ids=torch.cat([clean, noisy], dim=1), attention_mask=block_diffusion_mask(block_start, dtype),
                position_ids=positions, logits_to_keep=S)
    return out.logits.float()


def _generator(batch: torch.Tensor, seed: int) -> torch.Generator:
    # The noise is a pure function of (seed, batch): evaluation is repeatable and resume is exact.
    return torch.Generator().manual_seed(seed * 1_000_003 + int(batch.sum()))


def _weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, count) -> torch.Tensor:
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [B, S]
    return (weights * ce).sum() / max(float(count), 1.0)


@dataclass
class MaskedDiffusionObjective:
    """Stage I: blocks of U{min_block, max_block} tokens at a random offset; t ~ U(min_t, 1) per block."""

    mask_token_id: int
    max_block: int = 16
    min_block: int = 1
    min_t: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.min_block <= self.max_block:
            raise ValueError(f"need 1 <= min_block <= max_block, got {self.min_block}, {self.max_block}")
        if not 0.0 < self.min_t <= 1.0:
            raise ValueError(f"min_t (smallest masking rate) must be in (0, 1], got {self.min_t}")

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        B, S = batch.shape
        g = _generator(batch, self.seed)
        sizes = torch.randint(self.min_block, self.max_block + 1, (B, 1), generator=g)
        offsets = (torch.rand(B, 1, generator=g) * sizes).long()
        block_index = (torch.arange(S)[None] + offsets) // sizes  # [B, S]
        block_start = (block_index * sizes - offsets).clamp(min=0)
        t_per_block = self.min_t + (1 - self.min_t) * torch.rand(B, S + 1, generator=g)
        t = t_per_block.gather(1, block_index)  # [B, S]
        masked = torch.rand(B, S, generator=g) < t
        device = batch.device
        noisy = torch.where(masked.to(device), self.mask_token_id, batch)
        logits = block_logits(model, batch, noisy, block_start.to(device))
        return _weighted_ce(logits, batch, (masked / t).to(device), B * S)


def tail_blocks(S: int, prompt_length: int, tail: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage II layout for rows of S tokens, tail [B, 1] = R per row: (block_start [B, S], weights [B, S]).

    Positions from `prompt_length` on are cut into blocks of R (the last may be shorter); position
    i = 1..R of a block weighs alpha^(R - i), so the token next to the clean prefix weighs most.
    Prompt positions are singleton blocks with weight 0.
    """
    positions = torch.arange(S)[None]  # [1, S]
    relative = positions - prompt_length
    block_index = relative.clamp(min=0) // tail  # [B, S]
    first = prompt_length + block_index * tail
    in_answer = relative >= 0
    block_start = torch.where(in_answer, first, positions)
    block_length = torch.minimum(tail, S - first)
    i = relative - block_index * tail + 1  # 1-based position in the block
    weights = torch.where(in_answer, alpha ** (block_length - i).double(), 0.0).float()
    return block_start, weights


@dataclass
class TailAlignmentObjective:
    """Stage II on rows [prompt (prompt_length) | target continuation]: the continuation is cut into
    fully masked blocks of R ~ U(1, max_tail) tokens, weights alpha^(R - i). Positions holding
    `ignore_token_id` (padding after an early EOS) carry no loss. DEER: R_max 96, alpha 1.01."""

    mask_token_id: int
    prompt_length: int
    max_tail: int = 16
    alpha: float = 1.01
    ignore_token_id: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.prompt_length < 1 or self.max_tail < 1:
            raise ValueError(f"prompt_length and max_tail must be >= 1, got {self.prompt_length}, {self.max_tail}")
        if self.alpha < 1.0:
            raise ValueError(f"alpha must be >= 1 (DEER: 1.01; 1.05 diverges), got {self.alpha}")

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        B, S = batch.shape
        if S <= self.prompt_length:
            raise ValueError(f"rows of {S} tokens leave no continuation after prompt_length {self.prompt_length}")
        g = _generator(batch, self.seed)
        tail = torch.randint(1, self.max_tail + 1, (B, 1), generator=g)  # R per row
        block_start, weights = tail_blocks(S, self.prompt_length, tail, self.alpha)
        in_answer = torch.arange(S)[None].expand(B, S) >= self.prompt_length
        device = batch.device
        if self.ignore_token_id is not None:
            weights = weights * (batch != self.ignore_token_id).cpu()
        noisy = torch.where(in_answer.to(device), self.mask_token_id, batch)
        logits = block_logits(model, batch, noisy, block_start.to(device))
        return _weighted_ce(logits, batch, weights.to(device), (weights > 0).sum())


@torch.no_grad()
def heldout_block_accuracy(model, batches: list[torch.Tensor], mask_token_id: int, block: int) -> dict:
    """One-step drafting quality: every block of `block` tokens fully masked after its clean prefix.
    Returns the mean cross-entropy and the top-1 accuracy at each block position (1-based)."""
    model.eval()
    ce_sum, count = 0.0, 0
    hits = torch.zeros(block)
    totals = torch.zeros(block)
    for batch in batches:
        B, S = batch.shape
        offset = torch.arange(S)[None].expand(B, S) % block
        block_start = (torch.arange(S)[None] - offset).to(batch.device)
        logits = block_logits(model, batch, torch.full_like(batch, mask_token_id), block_start)
        ce_sum += F.cross_entropy(logits.transpose(1, 2), batch, reduction="sum").item()
        count += B * S
        correct = (logits.argmax(dim=-1) == batch).float().cpu()
        hits += torch.zeros(block).index_add_(0, offset.flatten(), correct.flatten())
        totals += torch.bincount(offset.flatten(), minlength=block).float()
    return {"block_ce": round(ce_sum / count, 4), "block": block,
            "accuracy_by_position": [round(x, 4) for x in (hits / totals).tolist()]}


@torch.no_grad()
def greedy_continuations(target, prompts: torch.Tensor, new_tokens: int, batch_size: int = 16,
                         cache_path: Path | None = None) -> np.ndarray:
    """Rows [N, P + new_tokens] of prompt + the target's greedy continuation, as `generate` gives
    it with the target's own generation_config (repetition penalty included). Rows that end early
    are padded with the pad id. Slow (N x new_tokens target steps): cached at `cache_path`."""
    N, P = prompts.shape
    if cache_path is not None and cache_path.exists():
        rows = np.load(cache_path)
        if rows.shape == (N, P + new_tokens):
            return rows
    pad_id = target.generation_config.pad_token_id
    if pad_id is None:
        raise ValueError("the target's generation_config has no pad_token_id; set one so that rows which "
                         "end early can be padded")
    target.eval()
    pieces = []
    for chunk in tqdm(prompts.split(batch_size), desc="target continuations", unit="batch", leave=False):
        out = target.generate(chunk, attention_mask=torch.ones_like(chunk), max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=pad_id)
        pieces.append(F.pad(out, (0, P + new_tokens - out.shape[1]), value=pad_id))
    rows = torch.cat(pieces).numpy().astype(np.uint16 if target.config.vocab_size <= 65535 else np.int64)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, rows)
    return rows


@dataclass(frozen=True)
class RowSampler:
    """Random rows of a fixed table; batch `step` is a pure function of (seed, step), as WindowSampler."""

    rows: np.ndarray
    batch_size: int
    seed: int

    def batch(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, abs(step), int(step < 0)])
        picked = rng.integers(0, len(self.rows), size=self.batch_size)
        return torch.from_numpy(self.rows[picked].astype(np.int64))  # [B, S]

    def fixed_batches(self, count: int) -> list[torch.Tensor]:
        return [self.batch(-1 - i) for i in range(count)]


@dataclass(frozen=True)
class DiffusionStage:
    """What a diffusion-drafter recipe trains: DEER Stage I or II, and the data Stage II needs.

    max_block: Stage I block sizes U{1, max_block}; max_tail: Stage II R_max (DEER: 96, scaled to
    our draft lengths); alpha: Stage II weight base (DEER: 1.01). init_from: zoo model Stage II
    starts from. Stage II rows: `prompt_tokens` of corpus + `continuation_tokens` of the target's
    greedy continuation; `examples` training rows (the slow part: one target generate each) and
    `heldout_examples` from held-out files. eval_block: block length of the card's one-step metrics.
    """

    stage: int
    max_block: int = 16
    max_tail: int = 16
    alpha: float = 1.01
    init_from: str | None = None
    prompt_tokens: int = 64
    continuation_tokens: int = 64
    examples: int = 2048
    heldout_examples: int = 64
    eval_block: int = 8

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 (masked diffusion) or 2 (alignment), got {self.stage}")
        if self.stage == 2 and self.init_from is None:
            raise ValueError("stage 2 starts from a Stage I model: set init_from to its zoo name")
        for name in ("max_block", "max_tail", "prompt_tokens", "continuation_tokens", "examples",
                     "heldout_examples", "eval_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiffusionStage.{name} must be >= 1, got {getattr(self, name)}")

    def objective(self, mask_token_id: int, pad_token_id: int | None, seed: int):
        if self.stage == 1:
            return MaskedDiffusionObjective(mask_token_id, max_block=self.max_block, seed=seed)
        return TailAlignmentObjective(mask_token_id, self.prompt_tokens, self.max_tail, self.alpha,
                                      ignore_token_id=pad_token_id, seed=seed)
