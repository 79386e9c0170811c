"""A small standalone causal LM cut from the target: a few of its decoder layers over its own embedding.

The drafter of the `ar` methods and the `assistant_model` of transformers' assisted generation: it
shares the target's tokenizer and vocabulary, so both draft with it on an equal footing. It starts as
the target with most layers removed (`truncated_copy`) and is distilled on the target's own replies
(`specdiff train small-lm`); the embedding, and with it the tied LM head, stay the target's, frozen:
only the kept layers and the final norm train, and only they are saved (`export_trained`).

Layer names: every Hugging Face decoder keeps its blocks in one ModuleList whose state-dict keys read
`<prefix>.<i>.<rest>` (`model.layers` for Llama/Qwen/Mistral/Gemma, `transformer.h` for GPT-2);
`truncated_copy` finds it from `config.num_hidden_layers` and renumbers the kept ones.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from specdiff.training.cards import InitMismatch, draft_vocab_line, machine_label, read_card, write_card
from specdiff.training.distill import DistillDataset, reply_draft_vocab
from specdiff.training.heads import HELDOUT_SEED, load_target
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps
from specdiff.vocab import write_draft_vocab


def layer_list_name(model) -> str:
    """The dotted name of the ModuleList holding the decoder blocks (the one of num_hidden_layers)."""
    count = model.config.num_hidden_layers
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == count]
    if len(names) != 1:
        raise ValueError(f"cannot tell which ModuleList of {type(model).__name__} holds its {count} decoder layers "
                         f"(candidates: {names or 'none'})")
    return names[0]


def truncated_copy(target, layers: Sequence[int]):
    """A new model of the target's class with only decoder `layers` (in that order), its other weights
    (embeddings, final norm, LM head) copied. Per-layer config lists (layer_types) are cut to match."""
    count = target.config.num_hidden_layers
    layers = [int(layer) for layer in layers]
    if not layers or len(set(layers)) != len(layers) or not all(0 <= layer < count for layer in layers):
        raise ValueError(f"layers must be distinct indices in [0, {count}), got {layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(layers)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[layer] for layer in layers]
    prefix = layer_list_name(target)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    renumber = {source: index for index, source in enumerate(layers)}
    state = {}
    for key, value in target.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[f"{prefix}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    dtype = target.get_output_embeddings().weight.dtype
    small = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = small.load_state_dict(state, strict=False)
    tied = {key for key in missing if key.endswith(".weight") and "lm_head" in key and config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise ValueError(f"could not copy the target's weights: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    small.tie_weights()
    small.config.specdiff_source_layers = layers
    return small.eval()


def shared_parameter_names(model) -> list[str]:
    """The parameters that stay the target's: input and output embeddings (tied or not)."""
    shared = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return [name for name, parameter in model.named_parameters(remove_duplicate=False) if id(parameter) in shared]


def freeze_shared(model) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in shared_parameter_names(model))


def trained_state(model) -> dict[str, torch.Tensor]:
    """The weights that are not the target's (what a small LM ships), as fp16 copies."""
    shared = set(shared_parameter_names(model))
    return {key: value.detach().to(torch.float16).contiguous() for key, value in model.state_dict().items()
            if key not in shared}


# --- distillation on the target's replies ------------------------------------------------------

IGNORE = -100


@dataclass(frozen=True)
class SmallLMRecipe:
    """A small LM cut from `target` (zoo name or directory) at `layers`, distilled on `data` (a
    `specdiff train data` directory): cross-entropy on the target's reply tokens, prompts unlabelled."""

    name: str
    target: str
    data: str
    layers: tuple[int, ...]
    train: TrainConfig
    command: str = ""
    # rows of the reduced draft head written beside it (draft_vocab.json: the most frequent reply
    # tokens; AutoregressiveDrafter drafts over them); 0: none, the whole head
    draft_vocab: int = 8192
    # a small LM exported before (directory or zoo name) whose trained weights this run starts from (a warm start)
    init: str | None = None

    def __post_init__(self):
        if not self.layers:
            raise ValueError("SmallLMRecipe.layers: name at least one of the target's layers to keep")
        if self.draft_vocab < 0:
            raise ValueError(f"SmallLMRecipe.draft_vocab must be >= 0 (0: the whole head), got {self.draft_vocab}")


class ReplyWindows:
    """Batches [B, 2, S] (token ids, labels) of prompt + reply rows, a pure function of (seed, step):
    a row longer than S is cut to a random window that starts at or before its reply."""

    def __init__(self, dataset: DistillDataset, seq_len: int, batch_size: int, seed: int, pad_id: int):
        self.rows = [(np.concatenate([r.prompt_ids, r.response_ids]).astype(np.int64), len(r.prompt_ids))
                     for r in dataset.records]
        if not self.rows:
            raise ValueError("no records to train on: run `specdiff train data` first")
        self.seq_len, self.batch_size, self.seed, self.pad_id = seq_len, batch_size, seed, pad_id

    def batch(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        out = torch.full((self.batch_size, 2, self.seq_len), IGNORE, dtype=torch.long)  # [B, 2, S]
        out[:, 0] = self.pad_id
        for row, index in enumerate(rng.integers(len(self.rows), size=self.batch_size)):
            ids, reply_start = self.rows[index]
            latest = min(max(0, len(ids) - self.seq_len), max(0, reply_start - 1))
            start = int(rng.integers(latest + 1))
            window = ids[start : start + self.seq_len]
            labels = window.copy()
            labels[: max(0, reply_start - start)] = IGNORE  # prompt tokens are not the target's output
            out[row, 0, : len(window)] = torch.from_numpy(window)
            out[row, 1, : len(window) - 1] = torch.from_numpy(labels[1:])  # label at t: the token after t
        return out

    def fixed_batches(self, count: int) -> list[torch.Tensor]:
        return [self.batch(step) for step in range(count)]


class NextTokenObjective:
    """Mean cross-entropy of the small LM's next-token logits against the labelled positions."""

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        ids, labels = batch[:, 0], batch[:, 1]  # [B, S] each
        logits = model(input_ids=ids).logits  # [B, S, V]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def agreement(model, batches: list[torch.Tensor]) -> float:
    """Top-1 agreement with the target's reply tokens over the labelled positions of `batches`."""
    hits = total = 0
    for batch in batches:
        ids, labels = batch[:, 0], batch[:, 1]
        predicted = model(input_ids=ids.to(model.device)).logits.argmax(-1).cpu()
        labelled = labels != IGNORE
        hits += int((predicted[labelled] == labels[labelled]).sum())
        total += int(labelled.sum())
    return hits / max(1, total)


def run_small_lm(recipe: SmallLMRecipe, work_dir: Path, out_dir: Path, steps: int | None = None) -> TrainResult:
    """Train in `work_dir/<name>` (resuming), then export the trained weights and a card to `out_dir`."""
    target, tokenizer = load_target(recipe.target)
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_rows = ReplyWindows(DistillDataset(recipe.data, "train"), config.seq_len, config.batch_size, config.seed, pad)
    heldout = ReplyWindows(DistillDataset(recipe.data, "heldout"), config.seq_len, config.batch_size, HELDOUT_SEED, pad)
    eval_batches = heldout.fixed_batches(config.eval_batches)
    model = truncated_copy(target.float(), recipe.layers)
    del target
    started_from = warm_start(model, recipe.init) if recipe.init else None
    freeze_shared(model)
    result = train(model, NextTokenObjective(), train_rows.batch, eval_batches, config, work_dir / recipe.name,
                   desc=f"training {recipe.name}")
    if not result.interrupted:
        export_trained(recipe, model.eval(), result, agreement(model, eval_batches), config, out_dir, started_from)
    return result


def warm_start(model, init: str) -> dict:
    """Load the trained weights of an exported small LM (`export_trained`'s directory, or a zoo name) into `model`,
    freshly cut with the same layers; returns what the card says of it: its path and the steps it was trained for."""
    from safetensors.torch import load_file

    from specdiff import zoo

    directory = zoo.directory(init)
    card = read_card(directory)
    wanted, theirs = model.config.specdiff_source_layers, card.get("kept_layers")
    if theirs is not None and list(theirs) != list(wanted):
        raise InitMismatch(f"--init {init}: that small LM keeps layers {theirs}, this run {wanted}; pass "
                           f"--layers {','.join(map(str, theirs))} or start fresh without --init")
    weights = load_file(str(directory / "model.safetensors"))  # trained weights only, or a complete model (the zoo's)
    ours = trained_state(model)
    if not set(ours) <= set(weights) or any(weights[key].shape != ours[key].shape for key in ours):
        raise InitMismatch(f"--init {init}: its weights do not match this run's model (different target or layers); "
                           "start fresh without --init")
    model.load_state_dict({key: weights[key].float() for key in ours}, strict=False)
    return {"path": str(init), "steps": card.get("steps")}


def export_trained(recipe: SmallLMRecipe, model, result: TrainResult, heldout_agreement: float,
                   config: TrainConfig, out: Path, started_from: dict | None = None) -> Path:
    """config.json + the trained weights only (fp16) + `derived.json` naming the base whose
    embedding and tokenizer complete them (`specdiff.zoo.derived.materialize`), card."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_file(trained_state(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "derived.json").write_text(json.dumps({"base": recipe.target, "shared": shared_parameter_names(model)},
                                                 indent=1))
    draft_vocab = None
    vocab_size = model.get_output_embeddings().weight.shape[0]
    if 0 < recipe.draft_vocab < vocab_size:
        ids, draft_vocab = reply_draft_vocab(recipe.data, recipe.draft_vocab, vocab_size)
        write_draft_vocab(out, ids, draft_vocab)
        draft_vocab = {"size": len(ids), **draft_vocab}
    card = {
        "name": recipe.name,
        "description": f"Small causal LM for {recipe.target}: its decoder layers {list(recipe.layers)} over its "
                       "frozen embedding and LM head, distilled on its own replies. The `ar` methods' drafter and "
                       "HF assisted generation's assistant_model.",
        "base": recipe.target,
        "kept_layers": list(recipe.layers),
        "parameters": sum(v.numel() for v in trained_state(model).values()),  # stored (trained)
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "data": recipe.data,
        "steps": result.step,
        "started_from": started_from,
        "tokens_seen": result.tokens_seen,
        "heldout_loss": round(result.eval_loss, 4),
        "heldout_top1_agreement": round(heldout_agreement, 4),
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "machine": machine_label(),
        "command": recipe.command,
        "draft_vocab": draft_vocab,
        "default_method": "ar",
        "stored_dtype": "float16",
        "source": f"cut from {recipe.target} and distilled here on its replies (`specdiff train small-lm`)",
    }
    write_card(out, card, _card_markdown(card))
    return out


def _started(card: dict) -> str:
    start = card.get("started_from")
    return f", after {start['steps']} steps of {start['path']} (`--init`)" if start else ""


def _card_markdown(card: dict) -> str:
    return f"""# {card['name']}

{card['description']}

| | |
|---|---|
| base (embedding, LM head, tokenizer) | {card['base']} |
| kept layers | {card['kept_layers']} |
| parameters | {card['parameters']:,} trained (stored, fp16) of {card['parameters_total']:,} |
| data | the base's greedy and sampled replies in `{card['data']}` (train split) |
| steps | {card['steps']} (batch {card['train_config']['batch_size']} x {card['train_config']['seq_len']} tokens){_started(card)} |
| held-out loss (reply tokens) | {card['heldout_loss']} |
| held-out top-1 agreement with the base's reply tokens | {card['heldout_top1_agreement']} |
| training time | {card['train_seconds'] / 60:.1f} min on {card['machine']} |
| reduced draft head | {draft_vocab_line(card.get('draft_vocab'), 'AutoregressiveDrafter', 'HF assisted generation ignores the file')} |
| reproduce | `{card['command']}` |

Only the trained weights are stored; the zoo completes them with the base's embedding on first use:

```python
from transformers import AutoModelForCausalLM
from specdiff import SpecDiff, zoo
from specdiff.drafters import AutoregressiveDrafter
target, tokenizer = zoo.load("{card['base']}")
small = AutoModelForCausalLM.from_pretrained(zoo.path("{card['name']}"))  # a complete HF model directory
spec = SpecDiff(target, AutoregressiveDrafter(small, k=5), tokenizer=tokenizer)
# or transformers' assisted generation with the same model:
target.generate(**tokenizer("Hello", return_tensors="pt"), assistant_model=small, do_sample=False)
```
"""
