"""Training objectives for the shared loop. Each is a small object with `loss(model, batch)`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CausalLMObjective:
    """Next-token cross-entropy on the corpus."""

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        return model(input_ids=batch, labels=batch).loss


@dataclass
class DistillationObjective:
    """Forward KL to a frozen teacher's next-token distribution, mixed with corpus cross-entropy.

    Used for the AR drafter: matching the target's distribution is what raises acceptance.
    """

    teacher: torch.nn.Module
    kl_weight: float = 0.5
    temperature: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.kl_weight <= 1.0:
            raise ValueError(f"kl_weight must be in [0, 1], got {self.kl_weight}")
        self.teacher.requires_grad_(False).eval()

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=batch, labels=batch)
        if self.kl_weight == 0.0:
            return out.loss
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=batch).logits.float()  # [B, S, V]
        V = out.logits.shape[-1]
        teacher_logprobs = F.log_softmax(teacher_logits[..., :V] / self.temperature, dim=-1)
        student_logprobs = F.log_softmax(out.logits.float() / self.temperature, dim=-1)
        kl = F.kl_div(student_logprobs, teacher_logprobs, log_target=True, reduction="none").sum(-1).mean()
        return (1 - self.kl_weight) * out.loss + self.kl_weight * kl
