"""The EAGLE recipe: train a drafter on a distillation set's teacher features, measure its held-out chain
acceptance, export it with a model card. `specdiff train eagle` runs it.

Features come from `TeacherFeatures.build` (cached on disk per target, data, layers and dtype). The
set built is `teacher_layers`, by default the drafter's layers plus the LM head's input, so drafters
with different taps can share one build (for SmolLM2: layers (2, 15, 27, 30)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from specdiff.drafters.eagle_model import EagleModel
from specdiff.training.cards import fact_table, machine_label, read_card, refuse_init, write_card
from specdiff.training.eagle import EagleObjective, FeatureSampler, chain_acceptance, frequent_tokens
from specdiff.training.features import TeacherFeatures
from specdiff.training.heads import HELDOUT_SEED, load_target
from specdiff.training.loop import TrainConfig, TrainResult, train, with_steps

# Windows of 384 positions cover ~97% of the SmolLM2 records whole: a drafter trained on short windows
# loses acceptance in longer contexts (measured on the tiny pattern target).
DEFAULT_TRAIN = TrainConfig(steps=3000, batch_size=8, seq_len=384, lr=5e-4, warmup_steps=100, weight_decay=0.0,
                            eval_every=250, eval_batches=8, save_every=250)
DTYPES = ("float32", "bfloat16", "float16")


def eagle3_layers(num_layers: int) -> tuple[int, ...]:
    """EAGLE-3's taps: the residual stream entering layers 2, L // 2 and L - 3 (hidden_states indices)."""
    return tuple(sorted({min(2, num_layers), num_layers // 2, max(num_layers - 3, 0)}))


@dataclass(frozen=True)
class EagleRecipe:
    """How an EAGLE drafter is trained. target: zoo name or model directory; data: a `specdiff train
    data` directory. layers: the drafter's feature layers (hidden_states indices), None for EAGLE-3's
    (2, L // 2, L - 3); (L,) is EAGLE-1's LM-head input. draft_vocab: rows of the reduced LM head (the
    most frequent reply tokens); a count >= the target's vocabulary keeps it whole. ttt_steps: the
    training-time test's unroll depth; feature_weight: EAGLE-1's feature regression (0: off).
    teacher_dtype: the target's dtype while computing features (part of their cache key). eval_k:
    the chain length whose held-out acceptance the card reports. init: an exported drafter directory
    (or zoo name) to start from instead of fresh weights, e.g. to train a shipped drafter further; it
    must have the recipe's layers and draft vocabulary."""

    name: str
    target: str
    data: str
    train: TrainConfig = DEFAULT_TRAIN
    layers: tuple[int, ...] | None = None
    teacher_layers: tuple[int, ...] | None = None
    draft_vocab: int = 8192
    ttt_steps: int = 3
    feature_weight: float = 0.0
    eval_k: int = 5
    teacher_dtype: str = "bfloat16"
    init: str | None = None
    description: str = ""
    command: str = field(default="", compare=False)

    def __post_init__(self):
        for name in ("draft_vocab", "ttt_steps", "eval_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"EagleRecipe.{name} must be >= 1, got {getattr(self, name)}")
        if self.teacher_dtype not in DTYPES:
            raise ValueError(f"teacher_dtype must be one of {', '.join(DTYPES)}, got {self.teacher_dtype!r}")
        given = self.layers is not None and self.teacher_layers is not None
        if given and not set(self.layers) <= set(self.teacher_layers):
            raise ValueError(f"teacher_layers {self.teacher_layers} must contain the drafter's layers {self.layers}")

    def drafter_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(self.layers) if self.layers is not None else eagle3_layers(num_layers)

    def feature_layers(self, num_layers: int) -> tuple[int, ...]:
        """The teacher feature set to build: `teacher_layers`, else the drafter's plus the LM head's input."""
        if self.teacher_layers is not None:
            return tuple(self.teacher_layers)
        return tuple(sorted(set(self.drafter_layers(num_layers)) | {num_layers}))


def run_eagle(recipe: EagleRecipe, work_dir: Path, out_dir: Path, steps: int | None = None,
              cache_dir: Path | None = None) -> TrainResult:
    """Train the recipe's drafter in `work_dir/<name>` (resuming), then export it to `out_dir` with its card."""
    from accelerate import PartialState

    torch.manual_seed(recipe.train.seed)
    target, _ = load_target(recipe.target, recipe.teacher_dtype)
    target.to(PartialState().device)
    L = target.config.num_hidden_layers
    layers, built = recipe.drafter_layers(L), recipe.feature_layers(L)
    features = {split: TeacherFeatures.build(target, recipe.data, built, split, cache_dir=cache_dir)
                for split in ("train", "heldout")}
    V = target.get_output_embeddings().weight.shape[0]
    vocab = frequent_tokens(features["train"], recipe.draft_vocab, V) if recipe.draft_vocab < V else None
    if recipe.init and vocab is not None:
        vocab = kept_vocab(recipe.init, vocab)
    eagle = EagleModel.for_target(target, layers, vocab, name=recipe.target, dtype=torch.float32)
    started_from = warm_start(eagle, recipe.init) if recipe.init else None
    del target  # the drafter holds the embedding and LM head it borrowed
    config = recipe.train if steps is None else with_steps(recipe.train, steps)
    last = L if recipe.feature_weight > 0 else None
    sampler = FeatureSampler(features["train"], layers, config.seq_len, config.batch_size, config.seed, last)
    heldout = FeatureSampler(features["heldout"], layers, config.seq_len, config.batch_size, HELDOUT_SEED, last)
    eval_batches = heldout.fixed_batches(config.eval_batches)
    objective = EagleObjective(recipe.ttt_steps, feature_weight=recipe.feature_weight)
    device = PartialState().device
    on_device = [batch.to(device) for batch in eval_batches]
    result = train(eagle, objective, sampler.batch, eval_batches, config, work_dir / recipe.name,
                   desc=f"training {recipe.name}",
                   metrics=lambda m: {"tau": chain_acceptance(m, on_device, recipe.eval_k)["tau_estimate"]})
    if not result.interrupted:
        acceptance = chain_acceptance(eagle, on_device, recipe.eval_k)
        export_eagle(recipe, eagle, result, acceptance, config, out_dir, features["train"], started_from)
    return result


def kept_vocab(init: str, vocab: torch.Tensor) -> torch.Tensor:
    """The draft vocabulary of a warm start: the init drafter's own ids when it has as many as `vocab` (the
    data's most frequent tokens now): it was trained to draft over those ids (its loss left the others out),
    and data that grew since reorder the frequent tokens a little. Otherwise `vocab` (`warm_start` then
    names the mismatch)."""
    from specdiff import zoo

    before = EagleModel.from_pretrained(zoo.directory(init))
    if before.config.draft_vocab_size == len(vocab):
        return before.draft_vocab.clone()
    return vocab


def warm_start(eagle: EagleModel, init: str) -> dict:
    """Load an exported drafter's weights into `eagle` (fresh, shaped by the recipe); returns what the card
    says of it: its path and the steps it had been trained for."""
    from specdiff import zoo

    directory = zoo.directory(init)
    before = EagleModel.from_pretrained(directory)
    ours, theirs = asdict(eagle.config), asdict(before.config)
    differ = [key for key in ("feature_layers", "draft_vocab_size", "hidden_size", "vocab_size", "num_target_layers")
              if tuple(np.atleast_1d(ours[key] or 0)) != tuple(np.atleast_1d(theirs[key] or 0))]
    same_vocab = eagle.config.draft_vocab_size is None or torch.equal(eagle.draft_vocab, before.draft_vocab)
    if differ or not same_vocab:
        shown = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731
        what = (", ".join(f"{key} {shown(theirs[key])} (recipe: {shown(ours[key])})" for key in differ)
                or "the draft vocabulary's ids")
        raise refuse_init(init, "that drafter", what)
    eagle.load_state_dict(before.state_dict(), strict=True)
    return {"path": str(init), "steps": read_card(directory).get("steps")}


def export_eagle(recipe: EagleRecipe, eagle: EagleModel, result: TrainResult, acceptance: dict,
                 config: TrainConfig, out: Path, features: TeacherFeatures | None = None,
                 started_from: dict | None = None) -> Path:
    """The drafter (config.json + model.safetensors) and its model card (card.json, README.md)."""
    eagle.save_pretrained(out)
    own = {key: value for key, value in asdict(eagle.config).items() if key != "decoder"}
    card = {
        "name": recipe.name,
        "description": recipe.description or f"EAGLE drafter for {recipe.target}.",
        "kind": ("EAGLE: fc([embed(next token); feature]) -> one decoder layer of the target's architecture -> "
                 "the target's LM head (frozen, not stored here)"
                 + ("; EAGLE-3 fused taps" if eagle.config.fused else "; EAGLE-1 feature (LM-head input)")),
        "target": recipe.target,
        "parameters": sum(p.numel() for p in eagle.parameters() if p.requires_grad),
        "eagle": own,
        "data": recipe.data,
        "teacher_features": None if features is None else {"layers": list(features.layers), "records": len(features),
                                                            "tokens": features.num_tokens},
        "ttt_steps": recipe.ttt_steps,
        "feature_weight": recipe.feature_weight,
        "steps": result.step,
        "started_from": started_from,
        "heldout_loss": None if result.eval_loss is None else round(result.eval_loss, 4),
        "heldout_chain": acceptance,
        # the learning curve: held-out tau estimate (greedy chain) against this run's window tokens so far
        "tau_by_training_tokens": [[step * config.batch_size * config.seq_len, entry[0]["tau"]]
                                   for step, _, *entry in result.history if entry],
        "train_seconds": round(result.train_seconds, 1),
        "train_config": asdict(config),
        "machine": machine_label(),
        "command": recipe.command,
    }
    write_card(out, card, eagle_card_markdown(card, out))
    return out


def eagle_card_markdown(card: dict, out: Path) -> str:
    chain, eagle, train_config = card["heldout_chain"], card["eagle"], card["train_config"]
    start = card.get("started_from")
    curve = card.get("tau_by_training_tokens") or []
    curve_text = "" if not curve else (
        "\nHeld-out tau estimate by tokens trained on in this run (window positions; the learning curve):\n\n"
        "| tokens | tau |\n|---|---|\n" + "\n".join(f"| {tokens:,} | {tau} |" for tokens, tau in curve) + "\n")
    rows = "\n".join(f"| {j + 1} | {rate:.3f} | {top1:.3f} | {tried:,} |"
                     for j, (rate, top1, tried) in enumerate(zip(chain["acceptance"], chain["top1"], chain["rows_tried"])))
    facts = fact_table([
        ("kind", card["kind"]),
        ("target", card["target"]),
        ("feature layers", f"{tuple(eagle['feature_layers'])} (hidden_states indices; {eagle['num_target_layers']} = "
                           "the LM head's input)"),
        ("draft vocabulary", f"{eagle['draft_vocab_size'] or eagle['vocab_size']:,} of {eagle['vocab_size']:,} target tokens"),
        ("trained parameters", f"{card['parameters']:,}"),
        ("data", f"{card['data']} (the target's own replies)"),
        ("objective", f"training-time test, {card['ttt_steps']} steps, CE weights 0.8^s; feature regression "
                      f"{card['feature_weight']}"),
        ("steps", f"{card['steps']} (batch {train_config['batch_size']} x {train_config['seq_len']} positions)"
                  + (f", after {start['steps']} steps of {start['path']} (`--init`)" if start else "")),
        ("held-out loss", card["heldout_loss"]),
        ("training time", f"{card['train_seconds'] / 60:.1f} min on {card['machine']}"),
        ("reproduce", f"`{card['command']}`"),
    ])
    return f"""# {card['name']}

{card['description']}

{facts}

Held-out greedy chain, per draft position j: acceptance given positions 1..j-1 were accepted, and
top-1 accuracy with the right tokens before it (labels: the target's reply tokens). Expected accepted
drafts per step {chain['expected_accepted']}, so tau ~ {chain['tau_estimate']} for a chain of
{len(chain['acceptance'])} (bonus token included).

| position | acceptance | top-1 | rows |
|---|---|---|---|
{rows}
{curve_text}
Use it (it attaches to the target's embedding and LM head, which the file does not hold):

```python
from specdiff import SpecDiff, zoo
from specdiff.drafters import EagleDrafter
from specdiff.trees import OptTree

target, tokenizer = zoo.load("{card['target']}")  # or AutoModelForCausalLM.from_pretrained(...)
drafter = EagleDrafter.from_pretrained("{out}", target)             # greedy chain of 5
spec = SpecDiff(target, drafter, tokenizer=tokenizer)
tree = SpecDiff(target, EagleDrafter.from_pretrained("{out}", target, k=6, top_k=4),
                tokenizer=tokenizer, tree=OptTree(node_budget=16))  # EAGLE-2 dynamic tree
```

or `specdiff generate --target {card['target']} --method eagle --drafter {out} "..."` (`--method eagle-tree`
for the tree; `eagle-hw` / `eagle-tree-hw` keep as many nodes as measure fastest on the machine;
`eagle-lookup` / `eagle-tree-lookup` merge prompt lookup's trie into the draft and size the union so).
"""
