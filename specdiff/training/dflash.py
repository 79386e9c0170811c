"""Training a DFlash drafter (algorithms.md §9.3) in the shared loop, from the target's cached hidden states.

Data. `TeacherFeatures` holds, for every record of a distillation set (a prompt and the target's own
greedy or sampled reply), the token ids and the target's hidden states at a few layers. The labels are
the target's reply tokens, so the drafter learns what the target itself says (DEER's Stage II
alignment on the target's own outputs). A feature set with more layers than the drafter reads serves
too: `AnchorSampler` selects the drafter's columns by `TeacherFeatures.layers`.

Blocks. Each training row is [context rows | A blocks]: context row j is the fused feature of position
j; a block anchored at p holds [embedding of token p, masks] at positions p .. p + b - 1 and sees the
context rows j < p and itself (bidirectionally), never another block: exactly what the drafter sees at
inference after committing tokens 0..p. Anchors are drawn at random inside the reply (DFlash's random
anchors, better than uniform blocks: Table 9), several per sequence, so one forward trains A blocks.
The anchor may be the prompt's last token: the first draft of a request is made from there.

Loss. Slot k (1-based mask index; slot 0, the anchor, has no loss) weighs w_k = exp(-(k - 1) / gamma):
an early slot decides whether the later ones are ever accepted (DFlash Eq. 4; gamma 7 for blocks of
16, 5 for 10, 4 for 8). The weighted cross-entropy is normalised by the sum of the weights (SpecForge).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from specdiff.hf_compat import base_model_forward
from specdiff.masks import additive_mask
from specdiff.training.features import TeacherFeatures
from specdiff.vocab import to_draft_indices

IGNORE = -100  # cross_entropy's ignore_index


def paper_gamma(block_size: int) -> float:
    """DFlash's gamma for a block size: 7 (16 and more), 5 (10 to 15), 4 (shorter)."""
    return 7.0 if block_size >= 16 else 5.0 if block_size >= 10 else 4.0


def slot_weights(block_size: int, gamma: float | None = None) -> torch.Tensor:
    """[b] w_0 = 0 (the anchor), w_k = exp(-(k - 1) / gamma) for the masks k = 1 .. b - 1."""
    gamma = paper_gamma(block_size) if gamma is None else gamma
    weights = torch.exp(-(torch.arange(block_size, dtype=torch.float32) - 1) / gamma)
    weights[0] = 0.0
    return weights


def feature_columns(features: TeacherFeatures, layers: tuple[int, ...]) -> list[int]:
    """Where each of `layers` is among the feature set's layers; ValueError names what is missing."""
    missing = [layer for layer in layers if layer not in features.layers]
    if missing:
        raise ValueError(f"the teacher features hold hidden_states {list(features.layers)}, not {missing}: build "
                         f"them with layers including {list(layers)} (TeacherFeatures.build(..., layers=...))")
    return [features.layers.index(layer) for layer in layers]


@dataclass(frozen=True)
class AnchorBatch:
    """ids [B, S] (0-padded), features [B, S, layers, H] fp16, start [B] (the window's first absolute
    position), length [B] (real rows), anchors [B, A] (window indices of block anchors; -1: padding)."""

    ids: torch.Tensor
    features: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    anchors: torch.Tensor

    def to(self, device) -> "AnchorBatch":
        return AnchorBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class AnchorSampler:
    """Batches of records with random block anchors, a pure function of (seed, step) (exact resume).

    A record longer than seq_len is cut to a random window that starts at or before its reply's first
    token (`ReplyWindows`' rule) and at most seq_len / 2 before it where the record allows. Anchors: up to `anchors` distinct positions p of the reply, or the
    prompt's last token, with at least one label (p + 1) inside the window."""

    def __init__(self, features: TeacherFeatures, layers: tuple[int, ...], seq_len: int, batch_size: int,
                 anchors: int, seed: int):
        if not len(features):
            raise ValueError("no records to train on: the teacher features are empty")
        if min(seq_len, batch_size, anchors) < 1:
            raise ValueError(f"seq_len, batch_size and anchors must be >= 1, got {seq_len}, {batch_size}, {anchors}")
        self.features, self.columns = features, feature_columns(features, layers)
        self.seq_len, self.batch_size, self.anchors, self.seed = seq_len, batch_size, anchors, seed

    def batch(self, step: int) -> AnchorBatch:
        rng = np.random.default_rng([self.seed, step])
        B, S, A = self.batch_size, self.seq_len, self.anchors
        H = self.features.hidden_size
        ids = torch.zeros(B, S, dtype=torch.long)
        features = torch.zeros(B, S, len(self.columns), H, dtype=torch.float16)
        start, length = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)
        anchors = torch.full((B, A), -1, dtype=torch.long)
        for row, index in enumerate(rng.integers(len(self.features), size=B)):
            record_ids, reply = self.features.ids(int(index)), self.features.response_start(int(index))
            T = len(record_ids)
            # At or before the reply's first token, and at most S/2 before it when the record allows:
            # a long prompt (a passage to summarise) would otherwise leave windows with no anchor.
            last = min(max(0, T - S), max(0, reply - 1))
            first = int(rng.integers(min(max(0, reply - S // 2), last), last + 1))
            n = min(S, T - first)
            ids[row, :n] = torch.from_numpy(record_ids[first : first + n])
            offset = int(self.features.offsets[index]) + first
            features[row, :n] = torch.from_numpy(self.features.states[offset : offset + n][:, self.columns])
            start[row], length[row] = first, n
            candidates = np.arange(max(reply - 1 - first, 0), n - 1)  # window indices with a label after them
            chosen = np.sort(rng.choice(candidates, size=min(A, len(candidates)), replace=False))
            anchors[row, : len(chosen)] = torch.from_numpy(chosen)
        return AnchorBatch(ids, features, start, length, anchors)

    def fixed_batches(self, count: int) -> list[AnchorBatch]:
        return [self.batch(step) for step in range(count)]


def anchor_block_mask(anchors: torch.Tensor, seq_len: int, block_size: int) -> torch.Tensor:
    """anchors [B, A] -> bool [B, S + A*b, S + A*b] over [context rows | blocks]: context rows causal; a
    block row sees the context rows before its anchor and its own block (padding anchors: only the block)."""
    B, A = anchors.shape
    device = anchors.device
    context = torch.arange(seq_len, device=device)
    block_of_row = torch.arange(A * block_size, device=device) // block_size  # [A*b]
    causal = (context[None, :] <= context[:, None]).expand(B, -1, -1)  # [B, S, S]
    top = torch.cat([causal, torch.zeros(B, seq_len, A * block_size, dtype=torch.bool, device=device)], dim=2)
    sees_context = context[None, None, :] < anchors[:, block_of_row, None]  # [B, A*b, S]
    same_block = (block_of_row[:, None] == block_of_row[None, :]).expand(B, -1, -1)  # [B, A*b, A*b]
    return torch.cat([top, torch.cat([sees_context, same_block], dim=2)], dim=1)


def block_labels(batch: AnchorBatch, block_size: int) -> torch.Tensor:
    """[B, A, b]: slot k of the block anchored at p is labelled ids[p + k]; IGNORE for the anchor slot,
    padding anchors and slots past the window's real rows."""
    B, S = batch.ids.shape
    slots = torch.arange(block_size, device=batch.ids.device)
    index = batch.anchors[:, :, None] + slots  # [B, A, b]
    valid = (batch.anchors[:, :, None] >= 0) & (slots > 0) & (index < batch.length[:, None, None])
    labels = batch.ids.gather(1, index.clamp(0, S - 1).flatten(1)).view(index.shape)
    return labels.masked_fill(~valid, IGNORE)


def anchor_block_logits(model, batch: AnchorBatch, vocab: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, A, b, V] of every block slot, from one decoder forward over [context rows | blocks];
    with `vocab` [N] (a reduced draft vocabulary, FR-Spec) only those LM-head rows: [B, A, b, N]. The
    head is most of a training step's work at 49152 rows (1024 block rows x V x H), so training over
    the rows the drafter will draft from is ~5x cheaper, and the loss is the one inference uses."""
    model = getattr(model, "module", model)  # unwrapped under DDP: the drafter's own helpers are needed
    b = model.config.block_size
    (B, S), A = batch.ids.shape, batch.anchors.shape[1]
    anchor_ids = batch.ids.gather(1, batch.anchors.clamp(min=0))  # [B, A]
    context = model.context_embeds(batch.features)  # [B, S, H]
    last_context = None
    if model.config.fused_masks:  # the context row before each anchor (zeros for an anchor at a window's start)
        before = (batch.anchors - 1).clamp(min=0)[:, :, None].expand(-1, -1, context.shape[-1])
        last_context = context.gather(1, before) * (batch.anchors >= 1)[:, :, None].to(context.dtype)  # [B, A, H]
    rows = torch.cat([context, model.block_embeds(anchor_ids, b, last_context).flatten(1, 2)], dim=1)  # [B, S + A*b, H]
    slots = torch.arange(b, device=batch.ids.device)
    block_positions = (batch.start[:, None] + batch.anchors.clamp(min=0))[:, :, None] + slots  # [B, A, b]
    positions = torch.cat([batch.start[:, None] + torch.arange(S, device=batch.ids.device),
                           block_positions.flatten(1)], dim=1)  # [B, S + A*b]
    allowed = anchor_block_mask(batch.anchors, S, b)
    mask = torch.cat([additive_mask(rows_allowed, rows.dtype, rows.device) for rows_allowed in allowed])
    if vocab is None:
        out = model.decoder(inputs_embeds=rows, attention_mask=mask, position_ids=positions, logits_to_keep=A * b)
        return out.logits.view(B, A, b, -1)
    hidden = base_model_forward(model.decoder, None, None, attention_mask=mask, position_ids=positions,
                                inputs_embeds=rows).last_hidden_state[:, S:]  # [B, A*b, H]
    head = model.decoder.get_output_embeddings()
    return F.linear(hidden, head.weight[vocab]).view(B, A, b, -1)


def to_draft_labels(labels: torch.Tensor, vocab: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Target-id labels -> indices into the draft vocabulary `vocab` [N]; a label outside it is IGNORE
    (EAGLE-3's mask: the drafter could never propose it, so it teaches nothing)."""
    if vocab is None:
        return labels
    draft = to_draft_indices(labels.clamp(min=0), vocab, vocab_size)
    return torch.where((labels == IGNORE) | (draft < 0), IGNORE, draft)


@dataclass
class DFlashObjective:
    """DFlash's loss: slot-decayed cross-entropy over every block of the batch (gamma: see `paper_gamma`),
    over the draft vocabulary `vocab` [N] when given (labels outside it are left out)."""

    gamma: float | None = None
    vocab: torch.Tensor | None = None

    def __post_init__(self):
        if self.gamma is not None and self.gamma <= 0:
            raise ValueError(f"gamma (the slot-weight decay, DFlash: 7 for blocks of 16) must be > 0, got {self.gamma}")

    def loss(self, model, batch: AnchorBatch) -> torch.Tensor:
        vocab = None if self.vocab is None else self.vocab.to(batch.ids.device)
        logits = anchor_block_logits(model, batch, vocab).float()  # [B, A, b, V or N]
        B, A, b, V = logits.shape
        target_vocab = getattr(model, "module", model).config.vocab_size
        labels = to_draft_labels(block_labels(batch, b), vocab, target_vocab)
        ce = F.cross_entropy(logits.view(-1, V), labels.flatten(), ignore_index=IGNORE, reduction="none")
        weights = slot_weights(b, self.gamma).to(logits.device) * (labels != IGNORE)  # [B, A, b]
        return (weights.flatten() * ce).sum() / weights.sum().clamp(min=1e-6)


@torch.no_grad()
def heldout_acceptance(model, batches: list[AnchorBatch], vocab: torch.Tensor | None = None) -> dict:
    """Top-1 accuracy of each mask slot against the target's tokens, and the argmax chain's expected
    accepted length tau (bonus included: 1 + leading correct slots), over blocks whose every slot is
    labelled. With a draft vocabulary `vocab` [N] the argmax is over it (a token outside it is a miss)."""
    was_training = model.training
    model.eval()
    b = getattr(model, "module", model).config.block_size
    hits, counts = torch.zeros(b - 1), torch.zeros(b - 1)
    accepted, blocks = torch.zeros(b), 0  # accepted[k]: full blocks whose first k slots were all right
    for batch in batches:
        labels = block_labels(batch, b)[:, :, 1:]  # [B, A, b - 1]
        guess = anchor_block_logits(model, batch, vocab)[:, :, 1:].argmax(-1)  # [B, A, b - 1]
        correct = (guess if vocab is None else vocab.to(guess.device)[guess]) == labels
        valid = labels != IGNORE
        hits += (correct & valid).sum((0, 1)).float().cpu()
        counts += valid.sum((0, 1)).float().cpu()
        full = valid.all(-1)  # [B, A]
        leading = correct[full].long().cumprod(-1)  # [blocks, b - 1]
        accepted += torch.cat([torch.full((1,), float(len(leading))), leading.sum(0).float().cpu()])
        blocks += len(leading)
    model.train(was_training)
    accuracy = (hits / counts.clamp(min=1)).tolist()
    conditional = (accepted[1:] / accepted[:-1].clamp(min=1)).tolist()  # slot k right given slots < k were
    tau = 1 + float(accepted[1:].sum()) / blocks if blocks else None
    return {"block_size": b, "blocks": blocks, "labels": int(counts.sum()),
            "accuracy_by_position": [round(x, 4) for x in accuracy],
            "acceptance_by_position": [round(x, 4) for x in conditional],
            "tau": None if tau is None else round(tau, 3)}
