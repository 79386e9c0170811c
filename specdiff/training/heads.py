"""Training Medusa-style heads on a frozen target (Medusa-1; algorithms.md §5.2), in the shared loop.

The target only supplies hidden states: its weights never change and the heads reuse its LM head.
Loss: sum_i 0.8^(i+1) CE_i, head i (0-based, Medusa's head k = i + 1) at position j predicting the
token at j + 2 + i, the same offsets `HeadsDrafter` drafts with. Labels, a choice:

- "target" (self-distillation, Medusa §3.3.1): rows of corpus prompt + the target's own greedy
  continuation (with its generation_config, repetition penalty included), loss on continuation
  tokens only. These are exactly the tokens the verifier will accept, so this is the default.
- "corpus": random windows of the corpus, every next token a label. No generation step, but the
  heads then learn the corpus, not the target.
- "distill": the target's replies in a `specdiff train data` directory (`data`): chat prompts and the
  target's greedy and sampled replies, loss on reply tokens. The labels for a real chat target.
  These train from the target's cached hidden states (`TeacherFeatures`, the build EAGLE and DFlash
  share), not a target forward per batch: a head reads one position at a time, so a step scores
  `batch_size x seq_len` random reply positions of the whole set, over the reduced draft head's rows
  (`draft_vocab`) the heads will draft with. On SmolLM2 a step of 2,048 positions costs ~1.1 s on a
  CPU thread in bf16 autocast, where a forward-and-score step over 1,024 window positions cost ~14 s.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from specdiff.training.cards import draft_vocab_line, machine_label, read_card, refuse_init, write_card
from specdiff import hf_compat
from specdiff.drafters.heads import MedusaHeads
from specdiff.training.data import WindowSampler, encode_files
from specdiff.training.diffusion import RowSampler, greedy_continuations
from specdiff.training.distill import reply_draft_vocab
from specdiff.training.features import TeacherFeatures
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps
from specdiff.vocab import to_draft_indices, write_draft_vocab

IGNORE = -100  # cross_entropy's ignore_index
HELDOUT_SEED = 12345
LABELS = ("target", "corpus", "distill")


@torch.no_grad()
def target_hidden(target, batch: torch.Tensor) -> torch.Tensor:
    """The frozen target's last hidden states [B, S, H]: the LM head's input at every position."""
    with hf_compat.capture_last_hidden(target) as hidden:
        target(input_ids=batch)
    return hidden.value


def following_tokens(batch: torch.Tensor, count: int, pad_id: int = 0) -> torch.Tensor:
    """[B, S, count]: entry [b, j, m] is batch[b, j + 1 + m] (pad_id past the end), what a
    conditioned head at position j is teacher-forced with."""
    padded = F.pad(batch[:, 1:], (0, count), value=pad_id)  # [B, S - 1 + count]
    return padded.unfold(1, count, 1)[:, : batch.shape[1]]


def head_labels(batch: torch.Tensor, head: int, label_start: int = 0, ignore_token_id: int | None = None) -> torch.Tensor:
    """[B, S] labels of head `head`: position j's is batch[j + 2 + head]; IGNORE where that runs past
    the row, lies before `label_start` (the prompt of a self-distillation row) or is padding."""
    B, S = batch.shape
    shift = 2 + head
    labels = F.pad(batch[:, shift:], (0, shift), value=IGNORE)  # [B, S]
    label_positions = torch.arange(S, device=batch.device) + shift
    labels = labels.masked_fill((label_positions < label_start)[None], IGNORE)
    if ignore_token_id is not None:
        labels = labels.masked_fill(labels == ignore_token_id, IGNORE)
    return labels


@dataclass
class HeadsObjective:
    """Medusa-1: sum_i decay^(i + 1) CE_i over the heads, the target frozen (its hidden states are
    computed without gradients). label_start / ignore_token_id: see `head_labels`."""

    target: torch.nn.Module
    decay: float = 0.8
    label_start: int = 0
    ignore_token_id: int | None = None

    def __post_init__(self):
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay (Medusa's lambda_k = decay^k) must be in (0, 1], got {self.decay}")
        self.target.requires_grad_(False).eval()

    def head_logits(self, heads, batch: torch.Tensor) -> torch.Tensor:
        """[k, B, S, V] every head's logits at every position of `batch` [B, S]."""
        hidden = target_hidden(self.target, batch)
        config = getattr(heads, "module", heads).config  # heads may come wrapped for DDP
        tokens = following_tokens(batch, config.num_heads) if config.conditioned else None
        return heads(hidden, tokens)

    def loss(self, heads, batch: torch.Tensor) -> torch.Tensor:
        logits = self.head_logits(heads, batch).float()  # [k, B, S, V]
        total = logits.new_zeros(())
        for i, head_logits in enumerate(logits):
            labels = head_labels(batch, i, self.label_start, self.ignore_token_id)  # [B, S]
            ce_sum = F.cross_entropy(head_logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
            total = total + self.decay ** (i + 1) * ce_sum / (labels != IGNORE).sum().clamp(min=1)
        return total


@torch.no_grad()
def head_accuracy(heads, objective: HeadsObjective, batches: list[torch.Tensor], top: int = 5) -> dict:
    """Per head on `batches`: top-1 and top-`top` accuracy against its labels, and how many labels."""
    hits1 = torch.zeros(heads.num_heads)
    hits_top = torch.zeros(heads.num_heads)
    counts = torch.zeros(heads.num_heads)
    for batch in batches:
        logits = objective.head_logits(heads, batch)  # [k, B, S, V]
        for i in range(heads.num_heads):
            labels = head_labels(batch, i, objective.label_start, objective.ignore_token_id)  # [B, S]
            valid = labels != IGNORE
            best = logits[i].topk(top, dim=-1).indices  # [B, S, top]
            hits1[i] += (best[..., 0] == labels)[valid].sum().item()
            hits_top[i] += (best == labels[..., None]).any(dim=-1)[valid].sum().item()
            counts[i] += valid.sum().item()
    counts = counts.clamp(min=1)
    return {"top1": [round(x, 4) for x in (hits1 / counts).tolist()],
            f"top{top}": [round(x, 4) for x in (hits_top / counts).tolist()],
            "labels_per_head": int(counts[0])}


@dataclass(frozen=True)
class HeadsRecipe:
    """How a set of heads is trained. target: zoo name or model directory. labels: "target"
    (self-distillation rows of prompt_tokens + the target's continuation_tokens, `examples` of
    them) or "corpus" (windows of train.seq_len). The card reports each head's held-out accuracy."""

    name: str
    description: str
    target: str
    train: TrainConfig
    num_heads: int = 4
    num_layers: int = 1
    conditioned: bool = False
    labels: str = "target"
    prompt_tokens: int = 64
    continuation_tokens: int = 64
    examples: int = 2048
    heldout_examples: int = 64
    data: str | None = None  # labels "distill": the `specdiff train data` directory
    teacher_dtype: str = "bfloat16"  # labels "distill": the target's dtype while computing its features (cache key)
    command: str = ""
    # labels "distill": rows of the reduced draft head written beside the heads (draft_vocab.json: the
    # most frequent reply tokens; HeadsDrafter projects onto them only); 0: none, the whole head
    draft_vocab: int = 8192
    init: str | None = None  # labels "distill": exported heads (directory or zoo name) to start from

    def __post_init__(self):
        if self.init is not None and self.labels != "distill":
            raise ValueError("HeadsRecipe.init (warm start) is for heads trained on --data (labels 'distill')")
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {', '.join(LABELS)}, got {self.labels!r}")
        if self.draft_vocab < 0:
            raise ValueError(f"HeadsRecipe.draft_vocab must be >= 0 (0: the whole head), got {self.draft_vocab}")
        for name in ("num_heads", "num_layers", "prompt_tokens", "continuation_tokens", "examples", "heldout_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeadsRecipe.{name} must be >= 1, got {getattr(self, name)}")
        if (self.labels == "distill") != (self.data is not None):
            raise ValueError("labels 'distill' and a data directory go together: pass both (CLI: --data DIR) "
                             f"or neither; got labels={self.labels!r}, data={self.data!r}")
        row = self.prompt_tokens + self.continuation_tokens
        if self.labels == "target" and self.train.seq_len != row:
            raise ValueError(f"self-distillation rows are prompt_tokens + continuation_tokens = {row} tokens; "
                             f"set the recipe's TrainConfig.seq_len to {row} (got {self.train.seq_len})")


def load_target(spec: str, dtype: str | None = None):
    """(model, tokenizer) from a zoo name or a local model directory, frozen in eval mode (dtype: a
    name as `zoo.torch_dtype` reads it; None: fp32 on the CPU)."""
    from specdiff import zoo

    if spec in zoo.available() and not Path(spec).exists():
        model, tokenizer = zoo.load(spec, dtype=dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(spec, local_files_only=True, dtype=zoo.torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    return model.requires_grad_(False).eval(), tokenizer


def _data(recipe: HeadsRecipe, target, tokenizer, run_dir: Path, config: TrainConfig):
    """(sample_batch, held-out batches, label_start, ignore_token_id) for labels "target" and "corpus"."""
    from specdiff.zoo.corpus import split_files

    split = split_files()
    train_stream = encode_files(tokenizer, split.train, run_dir / "train_tokens.npy")
    heldout_stream = encode_files(tokenizer, split.heldout, run_dir / "heldout_tokens.npy")
    if recipe.labels == "corpus":
        sampler = WindowSampler(train_stream, config.seq_len, config.batch_size, config.seed)
        heldout = WindowSampler(heldout_stream, config.seq_len, config.batch_size, seed=HELDOUT_SEED)
        return sampler.batch, heldout.fixed_batches(config.eval_batches), 0, None
    rows = _continuations(target, train_stream, recipe, recipe.examples, config.seed, run_dir / "train")
    heldout_rows = _continuations(target, heldout_stream, recipe, recipe.heldout_examples, HELDOUT_SEED,
                                  run_dir / "heldout")
    heldout = RowSampler(heldout_rows, config.batch_size, seed=HELDOUT_SEED)
    return (RowSampler(rows, config.batch_size, config.seed).batch, heldout.fixed_batches(config.eval_batches),
            recipe.prompt_tokens, target.generation_config.pad_token_id)


def _continuations(target, stream, recipe: HeadsRecipe, count: int, seed: int, cache_stem: Path):
    prompts = WindowSampler(stream, recipe.prompt_tokens, count, seed).batch(0)  # [count, P]
    cache = cache_stem.with_name(f"{cache_stem.name}-continuations-{count}x{recipe.prompt_tokens}+"
                                 f"{recipe.continuation_tokens}-seed{seed}.npy")
    return greedy_continuations(target, prompts, recipe.continuation_tokens, cache_path=cache)


@dataclass(frozen=True)
class PositionBatch:
    """N positions of distillation records, each on its own: states [N, H] the target's LM-head input there;
    tokens [N, k] the ids 1..k positions after it (what conditioned heads are teacher-forced with; 0 past
    the record); labels [N, k] head i's label, the id i + 2 positions after it, IGNORE past the record."""

    states: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> "PositionBatch":
        return PositionBatch(self.states.to(device), self.tokens.to(device), self.labels.to(device))


class PositionSampler:
    """`count` random positions per batch among those whose head-0 label is a reply token, from
    `features` at `layer` (the LM head's input); a pure function of (seed, step), so resume is exact."""

    def __init__(self, features: TeacherFeatures, layer: int, num_heads: int, count: int, seed: int = 0):
        if layer not in features.layers:
            raise ValueError(f"the teacher features hold layers {list(features.layers)}, not the LM head's input "
                             f"{layer}; build them with TeacherFeatures.build(target, data_dir, layers=(..., {layer}))")
        starts = features.offsets[:-1] + np.maximum(features.prompt_lengths - 2, 0)  # head 0's label in the reply
        ends = features.offsets[1:]
        lengths = np.maximum(ends - 2 - starts, 0)
        if not lengths.sum():
            raise ValueError(f"no reply positions to train on in the teacher features at {features.directory}")
        self.positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        self.ends = np.repeat(ends, lengths)  # each position's record end
        self.features, self.column = features, features.layers.index(layer)
        self.k, self.count, self.seed = num_heads, count, seed

    def batch(self, step: int) -> PositionBatch:
        rng = np.random.default_rng((self.seed, step))
        chosen = np.sort(rng.integers(len(self.positions), size=self.count))  # sorted: reads in file order
        at, end = self.positions[chosen], self.ends[chosen]
        states = torch.from_numpy(np.asarray(self.features.states[at, self.column], dtype=np.float32))
        after = at[:, None] + 1 + np.arange(self.k + 1)  # [N, k + 1]: the k tokens after, then the last label
        inside = after < end[:, None]
        ids = np.where(inside, self.features.token_ids[np.minimum(after, len(self.features.token_ids) - 1)], -1)
        tokens = torch.from_numpy(np.where(inside[:, :-1], ids[:, :-1], 0).astype(np.int64))
        labels = torch.from_numpy(np.where(inside[:, 1:], ids[:, 1:], IGNORE).astype(np.int64))
        return PositionBatch(states, tokens, labels)

    def fixed_batches(self, count: int) -> list[PositionBatch]:
        return [self.batch(step) for step in range(count)]


@dataclass
class FeatureHeadsObjective:
    """Medusa-1's loss on `PositionBatch`es, over the rows `draft_ids` of the LM head (None: all of it);
    a label outside them is left out (the heads cannot draft it)."""

    draft_ids: torch.Tensor | None = None
    decay: float = 0.8

    def __post_init__(self):
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay (Medusa's lambda_k = decay^k) must be in (0, 1], got {self.decay}")

    def logits(self, model, batch: PositionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """([k, N, rows] every head's logits over the drafted rows, [N, k] labels as indices into those rows)."""
        heads: MedusaHeads = getattr(model, "module", model)  # the heads may come wrapped for DDP
        tokens = batch.tokens if heads.config.conditioned else None
        if self.draft_ids is None:
            return model(batch.states, tokens), batch.labels
        ids = self.draft_ids.to(heads.output_weight.device)
        bias = heads.output_bias
        rows = (heads.output_weight[ids], None if bias is None else bias[ids])
        inside = to_draft_indices(batch.labels.clamp(min=0), ids, heads.config.vocab_size)
        return model(batch.states, tokens, rows), inside.masked_fill(batch.labels == IGNORE, -1)

    def loss(self, model, batch: PositionBatch) -> torch.Tensor:
        logits, labels = self.logits(model, batch)
        labels = labels.masked_fill(labels < 0, IGNORE)
        total = logits.new_zeros((), dtype=torch.float32)
        for i, head_logits in enumerate(logits.float()):
            scored = (labels[:, i] != IGNORE).sum().clamp(min=1)
            total = total + self.decay ** (i + 1) * F.cross_entropy(head_logits, labels[:, i], ignore_index=IGNORE,
                                                                    reduction="sum") / scored
        return total

    @torch.no_grad()
    def accuracy(self, heads, batches: list[PositionBatch], top: int = 5) -> dict:
        """As `head_accuracy`: per head, top-1 and top-`top` against its labels (one outside the drafted rows
        is a miss), and how many labels."""
        hits1, hits_top, counts = (torch.zeros(heads.num_heads) for _ in range(3))
        for batch in batches:
            logits, labels = self.logits(heads, batch.to(heads.output_weight.device))
            valid = batch.labels != IGNORE  # [N, k]
            best = logits.topk(top, dim=-1).indices  # [k, N, top]
            for i in range(heads.num_heads):
                right = (best[i] == labels[:, i, None]) & (labels[:, i, None] >= 0)  # [N, top]
                hits1[i] += right[:, 0][valid[:, i]].sum().item()
                hits_top[i] += right.any(dim=-1)[valid[:, i]].sum().item()
                counts[i] += valid[:, i].sum().item()
        counts = counts.clamp(min=1)
        return {"top1": [round(x, 4) for x in (hits1 / counts).tolist()],
                f"top{top}": [round(x, 4) for x in (hits_top / counts).tolist()],
                "labels_per_head": int(counts[0])}


def feature_layers(num_layers: int) -> tuple[int, ...]:
    """The teacher feature set distilled heads train from: EAGLE's default build (its EAGLE-3 taps plus the
    LM head's input `num_layers`), so heads, EAGLE and DFlash share one cached build; heads read the last."""
    from specdiff.training.eagle_recipe import eagle3_layers

    return tuple(sorted(set(eagle3_layers(num_layers)) | {num_layers}))


def run_heads_on_features(recipe: HeadsRecipe, work_dir: Path, steps: int | None, out_root: Path,
                          cache_dir: Path | None = None) -> TrainResult:
    """labels "distill": train on the target's cached LM-head inputs (built once, resumable), then export."""
    from accelerate import PartialState

    torch.manual_seed(recipe.train.seed)
    target, _ = load_target(recipe.target)  # fp32: the heads train on the LM head they will draft with
    device = PartialState().device
    target.to(device)
    L = target.config.num_hidden_layers
    dtype = getattr(torch, recipe.teacher_dtype)
    teacher = target if dtype == torch.float32 else copy.deepcopy(target).to(dtype)  # its dtype keys the cache
    features = {split: TeacherFeatures.build(teacher, recipe.data, feature_layers(L), split, cache_dir=cache_dir)
                for split in ("train", "heldout")}
    del teacher
    V = target.get_output_embeddings().weight.shape[0]
    draft_ids = reply_draft_vocab(recipe.data, recipe.draft_vocab, V)[0] if 0 < recipe.draft_vocab < V else None
    heads = MedusaHeads.for_target(target, recipe.num_heads, recipe.num_layers, recipe.conditioned, recipe.target)
    started_from = warm_start_heads(heads, recipe.init) if recipe.init else None
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    count = config.batch_size * config.seq_len
    sampler = PositionSampler(features["train"], L, recipe.num_heads, count, config.seed)
    eval_batches = PositionSampler(features["heldout"], L, recipe.num_heads, count, HELDOUT_SEED) \
        .fixed_batches(config.eval_batches)
    objective = FeatureHeadsObjective(draft_ids)
    result = train(heads, objective, sampler.batch, eval_batches, config, work_dir / recipe.name,
                   desc=f"training {recipe.name}")
    if not result.interrupted:
        accuracy = objective.accuracy(heads, eval_batches)
        export_heads(recipe, heads, result, accuracy, config, out_root / recipe.name, features["train"], started_from)
    return result


def warm_start_heads(heads: MedusaHeads, init: str) -> dict:
    """Load exported heads' weights into `heads` (fresh, shaped by the recipe); returns what the card says
    of them. The draft vocabulary is not carried over: a head's weights do not depend on it (it picks
    rows of the shared LM head), so the data's current most frequent reply tokens are used."""
    from specdiff import zoo

    directory = zoo.directory(init)
    before = MedusaHeads.from_pretrained(directory)
    ours, theirs = asdict(heads.config), asdict(before.config)
    differ = [key for key in ours if key != "target" and ours[key] != theirs.get(key)]
    if differ:
        what = ", ".join(f"{key} {theirs.get(key)} (recipe: {ours[key]})" for key in differ)
        raise refuse_init(init, "that set of heads", what)
    heads.load_state_dict(before.state_dict(), strict=True)
    return {"path": str(init), "steps": read_card(directory).get("steps")}


def run_heads_recipe(recipe: HeadsRecipe, work_dir: Path, steps: int | None, out_root: Path) -> TrainResult:
    """Train the recipe's heads in `work_dir/<name>` (resuming), then export them to `out_root/<name>`."""
    from accelerate import PartialState

    if recipe.labels == "distill":
        return run_heads_on_features(recipe, work_dir, steps, out_root)

    torch.manual_seed(recipe.train.seed)
    target, tokenizer = load_target(recipe.target)
    target.to(PartialState().device)
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    run_dir = work_dir / recipe.name
    sample, eval_batches, label_start, ignore = _data(recipe, target, tokenizer, run_dir, config)
    heads = MedusaHeads.for_target(target, recipe.num_heads, recipe.num_layers, recipe.conditioned, recipe.target)
    objective = HeadsObjective(target, label_start=label_start, ignore_token_id=ignore)
    result = train(heads, objective, sample, eval_batches, config, run_dir, desc=f"training {recipe.name}")
    if not result.interrupted:
        eval_batches = [batch.to(PartialState().device) for batch in eval_batches]
        export_heads(recipe, heads, result, head_accuracy(heads, objective, eval_batches), config, out_root / recipe.name)
    return result


def export_heads(recipe: HeadsRecipe, heads: MedusaHeads, result: TrainResult, accuracy: dict,
                 config: TrainConfig, out: Path, features: TeacherFeatures | None = None,
                 started_from: dict | None = None) -> Path:
    """The heads (config.json + model.safetensors), with distilled data the reduced draft head
    (draft_vocab.json), and their model card (card.json, README.md). features: the teacher features
    distilled heads were trained from."""
    heads.save_pretrained(out)
    draft_vocab = None
    if recipe.labels == "distill" and 0 < recipe.draft_vocab < heads.config.vocab_size:
        ids, draft_vocab = reply_draft_vocab(recipe.data, recipe.draft_vocab, heads.config.vocab_size)
        write_draft_vocab(out, ids, draft_vocab)
        draft_vocab = {"size": len(ids), **draft_vocab}
    card = {
        "name": recipe.name,
        "description": recipe.description,
        "kind": "Medusa-style heads: x + SiLU(W x + b) per head on the target's last hidden state, the target's "
                "LM head shared (not stored here)" + ("; Hydra-style token conditioning" if recipe.conditioned else ""),
        "target": recipe.target,
        "parameters": sum(p.numel() for p in heads.parameters()),
        "heads": asdict(heads.config),
        "labels": recipe.labels,
        "data": (f"{recipe.examples} greedy continuations of {recipe.target} ({recipe.prompt_tokens}-token stdlib "
                 f"prompts + {recipe.continuation_tokens} tokens)" if recipe.labels == "target"
                 else f"{recipe.target}'s greedy and sampled chat replies in {recipe.data} (train split)"
                 if recipe.labels == "distill" else "Python stdlib .py files (train split), next tokens of the corpus"),
        "teacher_features": None if features is None else {"layers": list(features.layers), "records": len(features),
                                                            "tokens": features.num_tokens},
        "steps": result.step,
        "started_from": started_from,
        "tokens_seen": result.tokens_seen,
        "heldout_loss": round(result.eval_loss, 4),
        "head_accuracy": accuracy,
        "draft_vocab": draft_vocab,
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "machine": machine_label(),
        "command": recipe.command,
    }
    write_card(out, card, heads_card_markdown(card, _loading_code(recipe.target, out)))
    return out


def _loading_code(target: str, out: Path) -> str:
    """How a user loads the target and these heads: through the zoo when both are shipped."""
    from specdiff import zoo

    if out.resolve().parent == zoo.SHIPPED_DIR.resolve() and target in zoo.available():
        return (f'target, tokenizer = zoo.load("{target}")\n'
                f'drafter = HeadsDrafter.from_pretrained(zoo.path("{out.name}"), target)')
    return (f'target = AutoModelForCausalLM.from_pretrained("{target}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{target}")\n'
            f'drafter = HeadsDrafter.from_pretrained("{out}", target)')


def _after(start: dict | None) -> str:
    return "" if not start else f", after {start['steps'] or '?'} steps of {start['path']} (`--init`)"


def heads_card_markdown(card: dict, loading_code: str) -> str:
    accuracy = card["head_accuracy"]
    top_name = next(key for key in accuracy if key.startswith("top") and key != "top1")
    config, features = card["train_config"], card.get("teacher_features")
    steps_unit = (f"{config['batch_size'] * config['seq_len']:,} random reply positions a step, read from the target's "
                  f"cached LM-head inputs over {features['tokens']:,} tokens" if features
                  else f"batch {config['batch_size']} x {config['seq_len']} tokens")
    rows = "\n".join(f"| {i} | {i + 2} | {top1:.3f} | {top_k:.3f} |"
                     for i, (top1, top_k) in enumerate(zip(accuracy["top1"], accuracy[top_name])))
    return f"""# {card['name']}

{card['description']}

| | |
|---|---|
| kind | {card['kind']} |
| target | {card['target']} |
| parameters | {card['parameters']:,} |
| heads | {card['heads']['num_heads']} heads x {card['heads']['num_layers']} residual block(s) |
| labels | {card['labels']}: {card['data']} |
| steps | {card['steps']} ({steps_unit}){_after(card.get('started_from'))} |
| held-out loss (sum of 0.8^k-weighted head cross-entropies) | {card['heldout_loss']} |
| reduced draft head | {draft_vocab_line(card.get('draft_vocab'), 'HeadsDrafter')} |
| training time | {card['train_seconds'] / 60:.1f} min on {card['machine']} |
| reproduce | `{card['command']}` |

Held-out accuracy of each head ({accuracy['labels_per_head']:,} labels per head). Offset: how many
positions after the hidden state's own token the head predicts (the target's LM head is offset 1;
head 0 drafts the token right after the bonus token).

| head | offset | top-1 | {top_name} |
|---|---|---|---|
{rows}

Use them (they attach to the target's LM head, which the file does not hold):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from specdiff import SpecDiff, zoo
from specdiff.drafters import HeadsDrafter
from specdiff.trees import OptTree
{loading_code}
spec = SpecDiff(target, drafter, tokenizer=tokenizer, tree=OptTree(node_budget=16))
```
"""
