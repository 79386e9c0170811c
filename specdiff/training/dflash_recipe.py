"""`specdiff train dflash`: a DFlash drafter for a target, from its distillation data, with a model card."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from specdiff.drafters.dflash_model import DFlashModel, default_layers
from specdiff.hf_compat import check_head_of_base
from specdiff.training.cards import fact_table, machine_label, read_card, refuse_init, write_card
from specdiff.training.distill import heldout_coverage, reply_draft_vocab
from specdiff.training.dflash import AnchorSampler, DFlashObjective, heldout_acceptance, paper_gamma
from specdiff.training.features import TeacherFeatures
from specdiff.training.heads import HELDOUT_SEED, load_target
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps
from specdiff.vocab import DRAFT_VOCAB_FILE, write_draft_vocab

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class DFlashRecipe:
    """A DFlash drafter for `target` (zoo name or model directory) trained on `data` (a `specdiff train
    data` directory), exported as `name`. layers: the target's hidden_states indices it fuses (None: `default_layers`).
    anchors: blocks per sequence per step. gamma: slot-weight decay (None: DFlash's for the block size).
    fused_masks: mask rows add the anchor's embedding and the last context row (`drafters.dflash_model`).
    teacher_layers / teacher_dtype: the `TeacherFeatures` set to read, computed with the target in that
    dtype (both name its cache entry); None: the drafter's layers plus the LM head's input, the set the
    EAGLE recipe builds too (SmolLM2: 2, 15, 27, 30), so one build serves both. draft_vocab: rows of the
    reduced LM head it trains and drafts over (the most frequent reply tokens, shipped as draft_vocab.json
    beside it); 0 or >= the target's vocabulary keeps the whole head. init: an exported DFlash drafter
    (directory or zoo name) to start from instead of fresh weights, e.g. to train the shipped one further; it
    must have the recipe's shape (layers, block size, decoder layers, masks) and keeps its own draft vocabulary."""

    name: str
    target: str
    data: str
    # DFlash's optimiser (AdamW, lr 6e-4, cosine, 4% warm-up, clip 1.0); batch and length sized for SmolLM2's
    # replies (~150 tokens after a ~50-token prompt), so a row is usually a whole record.
    train: TrainConfig = TrainConfig(steps=2000, batch_size=8, seq_len=512, lr=6e-4, warmup_steps=80,
                                     eval_every=200, eval_batches=8, save_every=100)
    layers: tuple[int, ...] | None = None
    block_size: int = 16
    num_layers: int = 1
    anchors: int = 16
    gamma: float | None = None
    fused_masks: bool = True
    teacher_layers: tuple[int, ...] | None = None
    teacher_dtype: str = "bfloat16"
    draft_vocab: int = 8192
    init: str | None = None
    command: str = ""

    def __post_init__(self):
        if self.block_size < 2 or self.num_layers < 1 or self.anchors < 1:
            raise ValueError(f"need block_size >= 2, num_layers >= 1 and anchors >= 1, got {self.block_size}, "
                             f"{self.num_layers}, {self.anchors}")
        if self.draft_vocab < 0:
            raise ValueError(f"draft_vocab must be >= 0 (0: the whole LM head), got {self.draft_vocab}")
        if self.teacher_dtype not in DTYPES:
            raise ValueError(f"teacher_dtype must be one of {DTYPES}, got {self.teacher_dtype!r}")
        if self.layers and self.teacher_layers and not set(self.layers) <= set(self.teacher_layers):
            raise ValueError(f"teacher_layers {self.teacher_layers} must include the drafter's layers {self.layers}")


def teacher_features(recipe: DFlashRecipe, target, layers: tuple[int, ...], progress: bool = True):
    """(train, heldout) `TeacherFeatures` of the recipe's data: read from the cache, computed where missing."""
    dtype = getattr(torch, recipe.teacher_dtype)
    teacher = target if target.dtype == dtype else copy.deepcopy(target).to(dtype)
    wanted = recipe.teacher_layers or tuple(sorted({*layers, target.config.num_hidden_layers}))
    return tuple(TeacherFeatures.build(teacher, recipe.data, wanted, split, progress=progress)
                 for split in ("train", "heldout"))


def run_dflash(recipe: DFlashRecipe, work_dir: Path, out_dir: Path, steps: int | None = None) -> TrainResult:
    """Train in `work_dir/<name>` (resuming), then export the drafter, its held-out acceptance and a card
    to `out_dir`."""
    from accelerate import PartialState

    target, _ = load_target(recipe.target)
    target.to(PartialState().device)
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    layers = recipe.layers or default_layers(target.config.num_hidden_layers)
    train_features, heldout_features = teacher_features(recipe, target, layers)
    sampler = AnchorSampler(train_features, layers, config.seq_len, config.batch_size, recipe.anchors, config.seed)
    heldout = AnchorSampler(heldout_features, layers, config.seq_len, config.batch_size, recipe.anchors, HELDOUT_SEED)
    eval_batches = heldout.fixed_batches(config.eval_batches)
    vocab, vocab_about = draft_vocabulary(recipe, target)
    torch.manual_seed(config.seed)
    model = DFlashModel.for_target(target, layers, recipe.block_size, recipe.num_layers, name=recipe.target,
                                   fused_masks=recipe.fused_masks).train()
    started_from = None
    if recipe.init:
        vocab, started_from = warm_start(model, recipe.init, vocab)
        if vocab is not None:
            vocab_about = {"source": f"the draft vocabulary of {recipe.init} (`--init`)",
                           "heldout_coverage": heldout_coverage(recipe.data, vocab)}
    device = PartialState().device
    on_device = [batch.to(device) for batch in eval_batches]
    result = train(model, DFlashObjective(recipe.gamma, vocab), sampler.batch, eval_batches, config,
                   work_dir / recipe.name, desc=f"training {recipe.name}",
                   metrics=lambda m: {"tau": heldout_acceptance(m, on_device, vocab)["tau"]})
    if not result.interrupted:
        acceptance = heldout_acceptance(model, on_device, vocab)
        vocab_card = None if vocab is None else {"size": len(vocab), **vocab_about}
        export_dflash(recipe, model.eval(), result, acceptance, config, out_dir, vocab_card, started_from)
        (out_dir / DRAFT_VOCAB_FILE).unlink(missing_ok=True)  # a whole-head drafter must not keep an old one
        if vocab is not None:
            write_draft_vocab(out_dir, vocab, vocab_about)
    return result


def warm_start(model: DFlashModel, init: str, vocab: torch.Tensor | None) -> tuple[torch.Tensor | None, dict]:
    """Load an exported drafter's weights into `model` (fresh, shaped by the recipe). Returns the draft vocabulary
    to train over, the drafter's own (its head was trained over those rows; grown data reorder the frequent
    tokens a little) when it has as many as `vocab`, and what the card says of the start: its path and steps.
    ValueError names what differs."""
    from specdiff import zoo
    from specdiff.vocab import read_draft_vocab

    directory = zoo.directory(init)
    before = DFlashModel.from_pretrained(directory)
    ours, theirs = model.config, before.config
    differ = [name for name in ("layers", "block_size", "num_layers", "fused_masks", "hidden_size", "vocab_size")
              if getattr(ours, name) != getattr(theirs, name)]
    kept = read_draft_vocab(directory)
    if (kept is None) != (vocab is None) or (kept is not None and len(kept) != len(vocab)):
        differ.append(f"draft vocabulary ({'the whole head' if kept is None else len(kept)} rows; recipe: "
                      f"{'the whole head' if vocab is None else len(vocab)})")
    if differ:
        shown = ", ".join(name if name.startswith("draft") else f"{name} {getattr(theirs, name)} (recipe: "
                          f"{getattr(ours, name)})" for name in differ)
        raise refuse_init(init, "that drafter", shown)
    shared = model.shared_names()
    model.load_state_dict({name: value for name, value in before.state_dict().items() if name not in shared},
                          strict=False)
    return kept, {"path": str(init), "steps": read_card(directory).get("steps")}


def draft_vocabulary(recipe: DFlashRecipe, target) -> tuple[torch.Tensor | None, dict]:
    """The recipe's draft vocabulary [N] and what its file says of it, or (None, {}) for the whole head.
    Refused (ValueError) on a target whose logits are not its LM head's product (soft-capping, scaling)."""
    V = target.get_output_embeddings().weight.shape[0]
    if recipe.draft_vocab == 0 or recipe.draft_vocab >= V:
        return None, {}
    vocab, about = reply_draft_vocab(recipe.data, recipe.draft_vocab, V)
    check_head_of_base(target)
    return vocab, about


def export_dflash(recipe: DFlashRecipe, model: DFlashModel, result: TrainResult, acceptance: dict,
                  config: TrainConfig, out: Path, draft_vocab: dict | None = None,
                  started_from: dict | None = None) -> Path:
    """The drafter (config.json + model.safetensors, trained weights in fp16) and its card (card.json, README.md)."""
    model.save_pretrained(out)
    shared = model.shared_names()
    card = {
        "name": recipe.name,
        "kind": "DFlash drafter: the target's hidden states at a few layers, fused (fc + RMSNorm) into context rows, "
                f"and {recipe.num_layers} decoder layer(s) of the target's architecture drafting a block in one "
                "forward" + ("; each mask row adds the anchor's embedding and the last context row (fused masks)"
                             if model.config.fused_masks else "") +
                "; the target's embedding and LM head are shared (not stored here)",
        "target": recipe.target,
        "layers": list(model.config.layers),
        "block_size": model.config.block_size,
        "num_layers": recipe.num_layers,
        "fused_masks": model.config.fused_masks,
        "draft_vocab": draft_vocab,  # None: the whole LM head
        "parameters_trained": sum(p.numel() for name, p in model.named_parameters() if name not in shared),
        "data": recipe.data,
        "labels": "the target's own reply tokens (its greedy and sampled replies)",
        "anchors_per_sequence": recipe.anchors,
        "gamma": recipe.gamma if recipe.gamma is not None else paper_gamma(model.config.block_size),
        "steps": result.step,
        "started_from": started_from,
        "heldout_loss": round(result.eval_loss, 4),
        "heldout_acceptance": acceptance,
        # the learning curve: held-out tau (argmax chain) against the window tokens trained on so far
        "tau_by_training_tokens": [[step * config.batch_size * config.seq_len, entry[0]["tau"]]
                                   for step, _, *entry in result.history if entry],
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "machine": machine_label(),
        "command": recipe.command,
        "stored_dtype": "float16",
    }
    write_card(out, card, card_markdown(card, out))
    return out


def _target_loading(target: str) -> str:
    from specdiff import zoo

    if target in zoo.available() and not Path(target).exists():
        return f'from specdiff import zoo\ntarget, tokenizer = zoo.load("{target}")'
    return (f'from transformers import AutoModelForCausalLM, AutoTokenizer\n'
            f'target = AutoModelForCausalLM.from_pretrained("{target}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{target}")')


def _location(out: Path) -> tuple[str, str]:
    """How the card's examples name the drafter, in Python and on the command line: by its zoo name when
    it is shipped, else by its directory."""
    from specdiff.zoo import SHIPPED_DIR

    if out.resolve().parent == SHIPPED_DIR.resolve():
        return f'zoo.path("{out.name}")', out.name
    return f'"{out}"', str(out)


def card_markdown(card: dict, out: Path) -> str:
    acceptance, config = card["heldout_acceptance"], card["train_config"]
    facts = fact_table([
        ("target", card["target"]),
        ("fused hidden_states", card["layers"]),
        ("block", f"{card['block_size']} rows: the last committed token, then {card['block_size'] - 1} masks (drafts)"),
        ("parameters", f"{card['parameters_trained']:,} trained (stored, fp16)"),
        ("data", f"`{card['data']}`: {card['labels']}"),
        ("steps", f"{card['steps']} (batch {config['batch_size']} x {card['anchors_per_sequence']} blocks, rows of "
                  f"{config['seq_len']} tokens)" + (f", after {start['steps']} steps of {start['path']} (`--init`)"
                                                    if (start := card.get("started_from")) else "")),
        ("loss", f"slot k weighs exp(-(k - 1) / {card['gamma']})"),
        ("draft vocabulary", "the whole LM head" if not card.get("draft_vocab") else
         f"{card['draft_vocab']['size']:,} most frequent reply tokens (`draft_vocab.json`; "
         f"{card['draft_vocab']['heldout_coverage']} of held-out reply tokens); trained and drafted over them"),
        ("held-out loss", card["heldout_loss"]),
        ("held-out tau (argmax chain, bonus included)", f"{acceptance['tau']} over {acceptance['blocks']:,} blocks"),
        ("held-out tau by training tokens", ", ".join(f"{tau} at {tokens / 1e6:.2f}M" for tokens, tau in
                                                      card.get("tau_by_training_tokens", [])) or "–"),
        ("training time", f"{card['train_seconds'] / 60:.1f} min on {card['machine']}"),
        ("reproduce", f"`{card['command']}`"),
    ])
    rows = "\n".join(f"| {k + 1} | {accuracy:.3f} | {conditional:.3f} |" for k, (accuracy, conditional) in
                     enumerate(zip(acceptance["accuracy_by_position"], acceptance["acceptance_by_position"])))
    return f"""# {card['name']}

{card['kind']}.

{facts}

Held-out acceptance by block position: top-1 accuracy against the target's tokens, and the same
given that every earlier position was right (what a chain verification accepts).

| position | top-1 | given the earlier ones |
|---|---|---|
{rows}

Use it with the target it was trained for (it attaches to the target's embedding and LM head):

```python
from specdiff import SpecDiff
from specdiff.drafters import TargetDiffusionDrafter
{_target_loading(card['target'])}
drafter = TargetDiffusionDrafter.from_pretrained({_location(out)[0]}, target)
spec = SpecDiff(target, drafter, tokenizer=tokenizer)  # a chain; tree=specdiff.trees.OptTree(node_budget=16)
```

or from the command line: `specdiff generate --target {card['target']} --method dflash --drafter {_location(out)[1]} "..."`
(methods dflash, dflash-cut, dflash-hw, dflash-cps, dflash-opt-tree, dflash-opt-tree-hw, dflash-adl, dflash-lookup;
`-hw`: as many nodes as measure fastest on the machine, `specdiff.trees.MeasuredSize`; `dflash-lookup`: prompt
lookup's trie merged into the chain, sized so).
"""
