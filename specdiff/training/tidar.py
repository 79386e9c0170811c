"""TiDAR's training objective (algorithms.md §3.2): one model, two modes in one forward.

Each sequence is doubled, [x_1..x_S | M..M]: the clean half is causal and trained with the
next-token loss (AR mode); the second half is *fully* masked and cut into blocks of b, a block
seeing the clean tokens before it and its own block bidirectionally (diffusion mode), each mask
predicting its own position's token (labels aligned, not shifted). The loss is
(alpha * L_AR + L_diff) / (1 + alpha), each term a mean over its half (alpha = 1 in the paper).

At inference the same model verifies its last drafts causally and pre-drafts the next block from
mask slots in one forward (`specdiff.drafters.TiDARDrafter`); the 4-D mask here is the one those
slots see: the committed prefix, then their own block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specdiff.training.diffusion import _generator, block_diffusion_mask
from specdiff.training.loop import TrainConfig


def doubled_logits(model, batch: torch.Tensor, mask_token_id: int, block_start: torch.Tensor) -> torch.Tensor:
    """Logits [B, 2S, V] of one forward over [clean | all masks]; block_start [B, S] per mask position."""
    B, S = batch.shape
    dtype = model.get_output_embeddings().weight.dtype
    positions = torch.arange(S, device=batch.device).repeat(2)[None].expand(B, -1)
    masks = torch.full_like(batch, mask_token_id)
    out = model(input_ids=torch.cat([batch, masks], dim=1), attention_mask=block_diffusion_mask(block_start, dtype),
                position_ids=positions)
    return out.logits.float()


@dataclass
class TiDARObjective:
    """block_sizes: one is drawn per row (the paper trains its 1.5B model on 4, 8 and 16 together).
    Masks of a row's first block see no clean token; they are left out of L_diff (the paper's sum
    also starts at i = 1). offset: blocks start at a random phase per row, so the model sees every
    prefix length next to a block boundary (at inference a block starts wherever the text is)."""

    mask_token_id: int
    block_sizes: tuple[int, ...] = (4, 8)
    alpha: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not self.block_sizes or min(self.block_sizes) < 1:
            raise ValueError(f"block_sizes must be a non-empty tuple of sizes >= 1, got {self.block_sizes}")
        if self.alpha < 0:
            raise ValueError(f"alpha (the AR loss weight) must be >= 0, got {self.alpha}")

    def layout(self, batch: torch.Tensor) -> torch.Tensor:
        """block_start [B, S]: the first position of each mask position's block."""
        B, S = batch.shape
        g = _generator(batch, self.seed)
        choice = torch.randint(len(self.block_sizes), (B, 1), generator=g)
        sizes = torch.tensor(self.block_sizes)[choice]  # [B, 1]
        offsets = (torch.rand(B, 1, generator=g) * sizes).long()
        block_index = (torch.arange(S)[None] + offsets) // sizes
        return (block_index * sizes - offsets).clamp(min=0)

    def losses(self, model, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_AR, L_diff), each the mean cross-entropy over its half."""
        B, S = batch.shape
        block_start = self.layout(batch).to(batch.device)
        logits = doubled_logits(model, batch, self.mask_token_id, block_start)
        ar = F.cross_entropy(logits[:, : S - 1].transpose(1, 2), batch[:, 1:])
        has_prefix = block_start > 0  # [B, S]
        diff_ce = F.cross_entropy(logits[:, S:].transpose(1, 2), batch, reduction="none")
        diff = (diff_ce * has_prefix).sum() / has_prefix.sum().clamp(min=1)
        return ar, diff

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        ar, diff = self.losses(model, batch)
        return (self.alpha * ar + diff) / (1 + self.alpha)


@dataclass(frozen=True)
class TiDARRecipe:
    """A TiDAR model made by continued training of an AR model (`init_from`, a zoo name) with
    `TiDARObjective` on corpus windows of train.seq_len. block_size: the block the card measures
    and the drafter defaults to (stored in the config as `tidar_block_size`)."""

    name: str
    description: str
    init_from: str
    train: TrainConfig
    block_sizes: tuple[int, ...] = (4, 8)
    block_size: int = 8
    alpha: float = 1.0
    command: str = ""

    def __post_init__(self):
        TiDARObjective(0, self.block_sizes, self.alpha)  # same checks
        if self.block_size < 2:
            raise ValueError(f"block_size must be >= 2 (one committed token and a draft), got {self.block_size}")
