"""Training an EAGLE drafter (algorithms.md §10) in the shared loop, from the target's cached features.

Batches are windows of distillation records (templated prompt + the target's own reply) with the
target's hidden states at the drafter's feature layers (`TeacherFeatures`, which may hold more layers:
the drafter's columns are picked out), a pure function of (seed, step), so a resumed run is exact.

The objective is EAGLE-3's training-time test: `EagleModel.forward` unrolls the drafter `steps` times
on its own outputs, and step s's row i is scored on ids[i + s + 2], the token the s-th draft after
position i must guess: sum_s decay^s CE_s over reply tokens (the target's outputs; tokens outside a
reduced draft vocabulary are left out, EAGLE-3's mask). feature_weight > 0 adds EAGLE-1's feature
regression, SmoothL1 between a row's output and the target's LM-head input at the row's next position.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from specdiff.drafters.eagle_model import EagleModel, shifted
from specdiff.training.features import TeacherFeatures
from specdiff.vocab import frequent_tokens as most_frequent

IGNORE = -100  # cross_entropy's ignore_index


@dataclass(frozen=True)
class FeatureBatch:
    """ids [B, S] (S <= the sampler's seq_len: padding no row reaches is cut); states [B, S, n, H] at the
    drafter's feature layers; reply [B, S] bool: the token at that position is a reply token (worth a
    label); last [B, S, H]: the target's LM-head input, for feature regression (None without)."""

    ids: torch.Tensor
    states: torch.Tensor
    reply: torch.Tensor
    last: torch.Tensor | None = None

    def to(self, device) -> "FeatureBatch":
        return FeatureBatch(*(None if t is None else t.to(device) for t in (getattr(self, f.name) for f in fields(self))))


class FeatureSampler:
    """Windows of `seq_len` positions from random records of `features`, `batch_size` per batch.
    layers: the drafter's feature layers (a subset of `features.layers`, in the drafter's order);
    last_layer: also hand over that layer (the LM head's input) for feature regression."""

    def __init__(self, features: TeacherFeatures, layers: tuple[int, ...], seq_len: int, batch_size: int,
                 seed: int = 0, last_layer: int | None = None):
        wanted = tuple(layers) + (() if last_layer is None else (last_layer,))
        missing = [layer for layer in wanted if layer not in features.layers]
        if missing:
            raise ValueError(f"the teacher features hold layers {list(features.layers)}, not {missing}; build them with "
                             f"TeacherFeatures.build(target, data_dir, layers=({', '.join(map(str, wanted))},))")
        if not len(features):
            raise ValueError(f"no records in the teacher features at {features.directory}")
        self.features, self.seq_len, self.batch_size, self.seed = features, seq_len, batch_size, seed
        self.columns = [features.layers.index(layer) for layer in wanted]  # the drafter's, then the LM head's input
        self.regression = last_layer is not None

    def batch(self, step: int) -> FeatureBatch:
        rng = np.random.default_rng((self.seed, step))
        S, H = self.seq_len, self.features.hidden_size
        ids = torch.zeros(self.batch_size, S, dtype=torch.long)
        states = torch.zeros(self.batch_size, S, len(self.columns), H)
        reply = torch.zeros(self.batch_size, S, dtype=torch.bool)
        lengths = torch.zeros(self.batch_size, dtype=torch.long)
        for row, record in enumerate(rng.integers(len(self.features), size=self.batch_size).tolist()):
            record_ids = self.features.ids(record)
            # Loss is on reply positions only: a window starts at most S/2 before the reply (when the
            # record allows), so a long prompt (a passage to summarise) does not fill windows with no target.
            last = max(0, len(record_ids) - S)
            first = min(max(0, self.features.response_start(record) - S // 2), last)
            start = int(rng.integers(first, last + 1))
            window = slice(start, start + S)
            length = lengths[row] = len(record_ids[window])
            ids[row, :length] = torch.from_numpy(record_ids[window])
            states[row, :length] = self.features.hidden(record)[window][:, self.columns].float()
            reply[row, :length] = torch.arange(start, start + length) >= self.features.response_start(record)
        width = int(lengths.max())  # trailing padding that no row reaches is cut off
        ids, states, reply = ids[:, :width], states[:, :width], reply[:, :width]
        if self.regression:
            return FeatureBatch(ids, states[:, :, :-1], reply, states[:, :, -1])
        return FeatureBatch(ids, states, reply)

    def fixed_batches(self, count: int) -> list[FeatureBatch]:
        return [self.batch(step) for step in range(count)]


def step_labels(batch: FeatureBatch, step: int) -> torch.Tensor:
    """[B, S] target ids row i of unroll step `step` must predict, ids[i + step + 2]; IGNORE where that
    is no reply token (the prompt, padding, past the window)."""
    labels = shifted(batch.ids, step + 2, fill=IGNORE)
    return labels.masked_fill(~shifted(batch.reply, step + 2, fill=False), IGNORE)


@dataclass
class EagleObjective:
    """sum_s decay^s CE_s over `steps` unroll steps (EAGLE-3), + feature_weight x SmoothL1 (EAGLE-1)."""

    steps: int = 3
    decay: float = 0.8
    feature_weight: float = 0.0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps (training-time test depth) must be >= 1, got {self.steps}")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay (weight decay^s of unroll step s) must be in (0, 1], got {self.decay}")
        if self.feature_weight < 0:
            raise ValueError(f"feature_weight must be >= 0, got {self.feature_weight}")

    def loss(self, model, batch: FeatureBatch) -> torch.Tensor:
        eagle: EagleModel = getattr(model, "module", model)  # the model may come wrapped for DDP
        outputs = model(batch.ids, batch.states, self.steps)  # [steps, B, S, H]
        total = outputs.new_zeros((), dtype=torch.float32)
        for step in range(self.steps):
            labels = step_labels(batch, step)  # [B, S] target ids
            draft_labels = eagle.to_draft(labels.clamp(min=0))  # -1 outside the draft vocabulary
            scored = (labels != IGNORE) & (draft_labels >= 0)  # [B, S]
            logits = eagle.head(outputs[step][scored]).float()  # [R, N], only the rows with a label
            ce = F.cross_entropy(logits, draft_labels[scored], reduction="sum") / scored.sum().clamp(min=1)
            total = total + self.decay ** step * ce
            if self.feature_weight > 0:
                total = total + self.decay ** step * self.feature_weight * self._regression(outputs[step], batch, step)
        return total

    @staticmethod
    def _regression(outputs: torch.Tensor, batch: FeatureBatch, step: int) -> torch.Tensor:
        """SmoothL1 of row i's output [B, S, H] against the target's LM-head input at i + step + 1."""
        if batch.last is None:
            raise ValueError("feature regression needs the target's LM-head input in the batch: "
                             "FeatureSampler(..., last_layer=<the target's layer count>)")
        valid = step_labels(batch, step) != IGNORE  # [B, S]
        wanted = F.pad(batch.last[:, step + 1 :], (0, 0, 0, step + 1))  # [B, S, H]
        return F.smooth_l1_loss(outputs[valid].float(), wanted[valid].float()) if valid.any() else outputs.sum() * 0


@torch.no_grad()
def chain_acceptance(model: EagleModel, batches: list[FeatureBatch], k: int) -> dict:
    """Held-out acceptance of the greedy chain of `k`, per draft position. While every earlier draft
    was right the chain reads exactly the teacher-forced tokens of the unroll, so position j's
    conditional acceptance is P(right at j | right at 1..j-1) over the unroll's rows (labels: the
    target's reply tokens; one outside the draft vocabulary is a miss). top1: P(right at j) with
    teacher forcing. expected_accepted: sum_j prod_{i <= j} acceptance_i; tau adds the bonus token."""
    was_training = model.training
    model.eval()
    tried, hits, valid_counts, right_counts = (torch.zeros(k) for _ in range(4))
    for batch in batches:
        batch = batch.to(model.fc.weight.device)
        outputs = model(batch.ids, batch.states, k)  # [k, B, S, H]
        alive = torch.ones_like(batch.reply)  # [B, S] rows whose chain is right so far
        for step in range(k):
            labels = step_labels(batch, step)
            valid = labels != IGNORE
            right = torch.zeros_like(valid)
            right[valid] = model.target_ids(model.head(outputs[step][valid]).argmax(-1)) == labels[valid]
            tried[step] += (alive & valid).sum().item()
            hits[step] += (alive & right).sum().item()
            valid_counts[step] += valid.sum().item()
            right_counts[step] += right.sum().item()
            alive = alive & right
    model.train(was_training)
    acceptance = (hits / tried.clamp(min=1)).tolist()
    expected = float(torch.tensor(acceptance).cumprod(0).sum())
    return {"acceptance": [round(x, 4) for x in acceptance],
            "top1": [round(x, 4) for x in (right_counts / valid_counts.clamp(min=1)).tolist()],
            "rows_tried": [int(x) for x in tried.tolist()],
            "expected_accepted": round(expected, 3), "tau_estimate": round(1 + expected, 3)}


def frequent_tokens(features: TeacherFeatures, count: int, vocab_size: int) -> torch.Tensor:
    """[min(count, vocab_size)] the `count` most frequent reply tokens of `features` (EAGLE-3's draft
    vocabulary; ties by id), ascending; never-seen ids fill up when the replies have fewer distinct tokens."""
    return most_frequent([features.ids(i)[features.response_start(i):] for i in range(len(features))], count,
                         vocab_size)
