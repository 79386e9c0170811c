"""`specdiff train ...`: train the zoo's models in the shared accelerate loop."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import click

from specdiff.training.cards import InitMismatch
from specdiff.training.recipes import DEFAULT_WORK_DIR, RECIPES, SHIPPED_DIR, run_recipe

_work_dir = click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORK_DIR,
                         show_default=True, help="Checkpoints, tokenizer and token caches; runs resume from here.")
_out_dir = click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=SHIPPED_DIR,
                        help="Where the trained model is exported (default: inside the package, the shipped zoo).")
_steps = click.option("--steps", type=click.IntRange(min=1), default=None,
                      help="Override the recipe's step count (e.g. a smoke run).")


@click.group("train")
def train_group():
    """Train the zoo's models (resumable; Ctrl-C saves a checkpoint).

    \b
    Example:
      specdiff train target --steps 4500
      specdiff train ar-drafter
      specdiff train heads
      specdiff train tidar
    """


def _run(name: str, work_dir: Path, steps: int | None, out_dir: Path = SHIPPED_DIR, recipe=None):
    try:
        result = run_recipe(recipe or RECIPES[name], work_dir, steps, out_dir)
    except (FileNotFoundError, InitMismatch) as error:  # a missing input (e.g. Stage I before Stage II), or an
        raise click.UsageError(str(error)) from None    # --init of another shape: the message names the fix
    if result.interrupted:
        click.echo(f"stopped at step {result.step}; run the same command again to resume", err=True)
        raise SystemExit(130)
    click.echo(f"{name}: {result.step} steps, held-out loss {result.eval_loss:.4f}, "
               f"{result.tokens_seen:,} tokens, {result.train_seconds / 60:.1f} min", err=True)


@train_group.command("target")
@_work_dir
@_out_dir
@_steps
def train_target(work_dir, out_dir, steps):
    """Train the zoo target (a Llama on the stdlib) and export it into the package.

    \b
    Example:
      specdiff train target --work-dir /tmp/zoo
    """
    _run("stdlib-target", work_dir, steps, out_dir)


@train_group.command("ar-drafter")
@_work_dir
@_out_dir
@_steps
def train_ar_drafter(work_dir, out_dir, steps):
    """Train the zoo's AR drafter (corpus cross-entropy; the recipe notes the distillation option).

    \b
    Example:
      specdiff train ar-drafter --steps 1500
    """
    _run("stdlib-ar-drafter", work_dir, steps, out_dir)


@train_group.command("diffusion-drafter")
@click.option("--stage", type=click.IntRange(1, 2), required=True,
              help="1: masked diffusion on the stdlib; 2: alignment on the target's greedy continuations "
                   "(starts from the shipped Stage I model and needs the shipped target).")
@click.option("--examples", type=click.IntRange(min=1), default=None,
              help="Stage 2: how many target continuations to generate (the slow data step, cached per size); "
                   "default: the recipe's.")
@_work_dir
@_out_dir
@_steps
def train_diffusion_drafter(stage, examples, work_dir, out_dir, steps):
    """Train the zoo's block-diffusion drafter, one DEER stage at a time.

    \b
    Example:
      specdiff train diffusion-drafter --stage 1
      specdiff train diffusion-drafter --stage 2 --examples 512
    """
    name = "stdlib-dlm-drafter-s1" if stage == 1 else "stdlib-dlm-drafter"
    recipe = RECIPES[name]
    if examples is not None:
        if stage == 1:
            raise click.UsageError("--examples sizes Stage 2's target continuations; Stage 1 trains on the corpus")
        recipe = replace(recipe, diffusion=replace(recipe.diffusion, examples=examples))
    _run(name, work_dir, steps, out_dir, recipe)


@train_group.command("heads")
@click.option("--target", metavar="PATH|NAME", default=None,
              help="The frozen target: a zoo name or a model directory with its tokenizer [default: the "
                   "stdlib-heads recipe's, stdlib-target].")
@click.option("--labels", type=click.Choice(["target", "corpus", "distill"]), default=None,
              help="target: self-distillation on the target's own greedy continuations; corpus: the corpus's "
                   "next tokens; distill: the target's chat replies in --data [default: the recipe's; distill "
                   "with --data].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A `specdiff train data` directory of the target's replies (implies --labels distill).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Rows per step; with --data a step scores batch-size x seq-len random reply positions (a head "
                   "reads one position at a time) [default: the recipe's].")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help="Tokens per row [default: the recipe's].")
@click.option("--num-heads", type=click.IntRange(min=1), default=None, help="Heads to train [default: the recipe's].")
@click.option("--hydra/--no-hydra", default=None,
              help="Hydra-style heads that also see the embeddings of the tokens drafted before them.")
@click.option("--examples", type=click.IntRange(min=1), default=None,
              help="--labels target: how many target continuations to generate (cached per size).")
@_work_dir
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The heads go to OUT_DIR/<name> [default: inside the package for the zoo target; "
                   "required for any other target, whose heads are named <target dir>-heads].")
@_steps
@click.option("--draft-vocab", type=click.IntRange(min=0), default=None,
              help="With --data: tokens of the reduced draft head written beside the heads (draft_vocab.json: the "
                   "most frequent reply tokens; the heads train and draft over them only); 0: none [default: 8192].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate [default: the recipe's, 1e-3].")
@click.option("--mixed-precision", type=click.Choice(["no", "bf16"]), default=None,
              help="The training forward's autocast: bf16 is 2-4x faster on CPUs with AMX / AVX512-BF16 and on GPUs; "
                   "evaluation stays fp32 [default: no].")
@click.option("--init", "init", metavar="DIR|NAME", default=None,
              help="With --data: start from exported heads of the same shape (a directory or zoo name), e.g. to "
                   "train shipped heads on grown data; the draft vocabulary is the data's own.")
def train_heads(target, labels, data_dir, batch_size, seq_len, num_heads, hydra, examples, work_dir, out_dir, steps,
                draft_vocab, lr, mixed_precision, init):
    """Train Medusa-style heads on a frozen target (Medusa-1 loss) and export them with a model card.

    \b
    Example:
      specdiff train heads
      specdiff train heads --target ./my-model --out-dir ./my-heads --labels corpus --steps 500
      specdiff train heads --target smollm2-135m-instruct --data datasets/smollm2-135m-instruct --out-dir ./heads
    """
    recipe = RECIPES["stdlib-heads"]
    if target is not None and target != recipe.target:
        if out_dir is None:
            raise click.UsageError("heads for a target other than the zoo's go to --out-dir DIR, not into the package")
        recipe = replace(recipe, name=f"{Path(target).name}-heads", target=target,
                         description=f"Medusa-style heads for {target}.", command=f"specdiff train heads --target {target}")
    if data_dir is not None:
        labels, data_dir = labels or "distill", str(data_dir)
        recipe = replace(recipe, command=f"{recipe.command} --data {data_dir}")
    sizes = {name: value for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("lr", lr),
                                             ("mixed_precision", mixed_precision)) if value is not None}
    for flag, value in (("--draft-vocab", draft_vocab), ("--batch-size", batch_size), ("--seq-len", seq_len),
                        ("--lr", lr), ("--mixed-precision", mixed_precision), ("--num-heads", num_heads),
                        ("--steps", steps), ("--init", init)):
        if value is not None:
            recipe = replace(recipe, command=f"{recipe.command} {flag} {value}")
    if hydra:
        recipe = replace(recipe, command=f"{recipe.command} --hydra",
                         description=recipe.description.replace("Medusa-style heads", "Hydra-style heads (Medusa "
                                                                 "heads that also see the tokens before the one they draft)"))
    given = dict(labels=labels, data=data_dir, num_heads=num_heads, conditioned=hydra, examples=examples,
                 train=replace(recipe.train, **sizes) if sizes else None, draft_vocab=draft_vocab, init=init)
    try:
        recipe = replace(recipe, **{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    _run(recipe.name, work_dir, steps, out_dir or SHIPPED_DIR, recipe)


@train_group.command("tidar")
@click.option("--block-sizes", default=None, help="Comma-separated block sizes, one drawn per training row "
                                                     "[default: the recipe's, 4,8].")
@click.option("--alpha", type=click.FloatRange(min=0.0), default=None,
              help="Weight of the AR loss in (alpha * L_AR + L_diff) / (1 + alpha) [default: the recipe's, 1].")
@_work_dir
@_out_dir
@_steps
def train_tidar(block_sizes, alpha, work_dir, out_dir, steps):
    """Train the zoo's TiDAR model: stdlib-target's weights, trained further on doubled sequences
    [clean | all masks] so that one forward verifies the last drafts and drafts the next block.

    \b
    Example:
      specdiff train tidar
      specdiff train tidar --steps 200 --block-sizes 4,8,16 --out-dir /tmp/tidar
    """
    recipe = RECIPES["stdlib-tidar"]
    if block_sizes is not None:
        try:
            sizes = tuple(int(x) for x in block_sizes.split(","))
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers like 4,8, got {block_sizes!r}",
                                     param_hint="--block-sizes") from None
        if min(sizes) < 2:
            raise click.BadParameter("block sizes must be >= 2", param_hint="--block-sizes")
        recipe = replace(recipe, block_sizes=sizes, block_size=max(sizes))
    if alpha is not None:
        recipe = replace(recipe, alpha=alpha)
    _run(recipe.name, work_dir, steps, out_dir, recipe)


@train_group.command("data")
@click.option("--target", metavar="NAME|DIR", default="smollm2-135m-instruct", show_default=True,
              help="The model whose replies are the data: a zoo name or a model directory with its tokenizer.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory; a partial run there is resumed (same settings required).")
@click.option("--prompts", type=int, required=True, help="How many prompts to plan (each gives a greedy and a sampled reply).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Dtype the target runs in [default: DistillConfig's, bfloat16].")
@click.option("--max-new-tokens", type=int, default=None, help="Longest reply [default: DistillConfig's, 256].")
@click.option("--batch-size", type=int, default=None,
              help="Prompts per generate call; the call has twice as many rows [default: DistillConfig's, 16].")
@click.option("--seed", type=int, default=None, help="Seed of the prompt plan and the sampling [default: 0].")
@click.option("--mix", "mix_text", default="broad", show_default=True, metavar="PRESET|KIND=SHARE,...",
              help="Shares of the prompt sources: `broad` (every kind but subject), `four-sources` (topic, "
                   "docstring, document, arithmetic: the first SmolLM2 plan), `subjects` (mostly subjects the "
                   "target lists itself, asked about in many ways), or e.g. `passage=2,translation=1,subject=1`.")
@click.option("--extend", is_flag=True,
              help="OUT holds finished data with other settings: add these prompts to it as a new part "
                   "(its records follow the old ones, so cached teacher features are reused).")
def train_data(target, out_dir, prompts, dtype, max_new_tokens, batch_size, seed, mix_text, extend):
    """Distillation data: the target's greedy and sampled replies to non-benchmark prompts, as token ids
    with provenance (resumable; the first Ctrl-C finishes the batch in flight, a second stops at once).

    \b
    Examples:
      specdiff train data --out datasets/smollm2-135m-instruct --prompts 4000
      specdiff train data --out datasets/smollm2-135m-instruct --prompts 800 --seed 1 --extend \\
          --mix passage=0.3,translation=0.2,article=0.2,writing=0.15,roleplay=0.15
      specdiff train data --out datasets/smollm2-135m-instruct --prompts 1600 --seed 2 --extend \
          --mix subjects --batch-size 32
    """
    from specdiff.training import distill
    from specdiff.training.prompt_sources import PromptMix

    try:
        mix = PromptMix.parse(mix_text)
    except (ValueError, TypeError) as error:
        raise click.BadParameter(str(error), param_hint="--mix") from None
    mix = None if mix == PromptMix.FOUR_SOURCES else mix.as_dict()
    given = dict(dtype=dtype, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, mix=mix)
    for flag, value in (("--prompts", prompts), ("--max-new-tokens", max_new_tokens), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise click.BadParameter(f"must be >= 1, got {value}", param_hint=flag)
    if seed is not None and seed < 0:
        raise click.BadParameter(f"must be >= 0, got {seed}", param_hint="--seed")
    try:
        config = distill.DistillConfig(target=target, prompts=prompts,
                                       **{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    from specdiff.cli.common import load_model

    model, tokenizer, _ = load_model(target, target, "--target", config.dtype, "cpu")
    if tokenizer is None:
        raise click.BadParameter(f"{target!r} has no tokenizer next to it", param_hint="--target")
    try:
        result = distill.run(model, tokenizer, out_dir, config, extend=extend)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    manifest = result.manifest
    click.echo(f"{out_dir}: {manifest['records']:,} records, {manifest['tokens']['response']:,} reply tokens "
               f"({manifest['batches']['done']}/{manifest['batches']['planned']} batches, "
               f"{manifest['response_tokens_per_second']} tok/s)", err=True)
    if result.interrupted:
        click.echo("stopped; run the same command again to resume", err=True)
        raise SystemExit(130)


@train_group.command("small-lm")
@click.option("--target", metavar="NAME|DIR", default="smollm2-135m-instruct", show_default=True,
              help="The model to cut the small LM from: a zoo name or a model directory with its tokenizer.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="A `specdiff train data` directory of the target's replies.")
@click.option("--layers", default="0,1,2,29", show_default=True,
              help="Comma-separated indices of the target's decoder layers to keep, in order.")
@click.option("--name", default=None, help="Model name [default: <target>-small].")
@_work_dir
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where the trained weights, config, tokenizer and card go.")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Training steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-4, show_default=True)
@click.option("--draft-vocab", type=click.IntRange(min=0), default=8192, show_default=True,
              help="Tokens of the reduced draft head written beside the model (draft_vocab.json: the most frequent "
                   "reply tokens; the `ar` methods draft over them); 0: none.")
@click.option("--init", "init", metavar="DIR|NAME", default=None,
              help="Start from the trained weights of a small LM exported before (its directory or zoo name; same "
                   "target and --layers), e.g. to train on after the data grew.")
def train_small_lm(target, data_dir, layers, name, work_dir, out_dir, steps, batch_size, seq_len, lr, draft_vocab,
                   init):
    """A small standalone causal LM cut from the target (a few of its layers over its frozen embedding),
    distilled on the target's replies: the `ar` drafter and HF assisted generation's assistant_model.

    \b
    Example:
      specdiff train small-lm --data datasets/smollm2-135m-instruct --out-dir ./smollm2-small
    """
    from specdiff.training.loop import TrainConfig
    from specdiff.training.small_lm import SmallLMRecipe, run_small_lm

    try:
        kept = tuple(int(x) for x in layers.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 0,1,2,29, got {layers!r}",
                                 param_hint="--layers") from None
    name = name or f"{Path(target).name}-small"
    config = TrainConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, warmup_steps=min(20, steps - 1),
                         eval_every=min(50, steps), eval_batches=4, save_every=min(25, steps))
    command = (f"specdiff train small-lm --target {target} --data {data_dir} --layers {layers} --out-dir {out_dir} "
               f"--steps {steps} --batch-size {batch_size} --seq-len {seq_len} --lr {lr} --draft-vocab {draft_vocab}"
               + (f" --init {init}" if init else ""))
    recipe = SmallLMRecipe(name, target, str(data_dir), kept, config, command, draft_vocab, init)
    try:
        result = run_small_lm(recipe, work_dir, out_dir)
    except (ValueError, FileNotFoundError) as error:  # a bad --init or --layers names the fix
        raise click.UsageError(str(error)) from None
    if result.interrupted:
        click.echo(f"stopped at step {result.step}; run the same command again to resume", err=True)
        raise SystemExit(130)
    click.echo(f"{name}: {result.step} steps, held-out loss {result.eval_loss:.4f}, "
               f"{result.tokens_seen:,} tokens, {result.train_seconds / 60:.1f} min -> {out_dir}", err=True)


def _feature_drafter_options(command):
    """--target, --data, --out-dir, --work-dir, --steps, --teacher-dtype, --mixed-precision and --seed of the
    drafters trained on the target's features over its replies (`TeacherFeatures`)."""
    options = [
        click.option("--target", metavar="NAME|DIR", required=True,
                     help="The frozen target: a zoo name or a model directory with its tokenizer."),
        click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
                     help="A `specdiff train data` directory of the target's replies."),
        click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Where the drafter (config.json, model.safetensors) and its model card go."),
        _work_dir,
        _steps,
        click.option("--teacher-dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
                     help="Dtype the target computes its features in (part of their cache key) [default: bfloat16]."),
        click.option("--mixed-precision", type=click.Choice(["no", "bf16"]), default=None,
                     help="The training forward's autocast: bf16 is 2-4x faster on CPUs with AMX / AVX512-BF16 "
                          "and on GPUs; evaluation stays fp32 [default: no]."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Seed of the initialisation and of which windows each step draws; a run continued with "
                          "--init draws other windows with another seed [default: 0]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@train_group.command("eagle")
@_feature_drafter_options
@click.option("--layers", default=None,
              help="Comma-separated hidden_states indices the drafter reads (0: embeddings, i: output of layer i, "
                   "L: the LM head's input, EAGLE-1) [default: EAGLE-3's 2, L//2, L-3].")
@click.option("--draft-vocab", type=click.IntRange(min=1), default=None,
              help="Rows of the reduced LM head: the most frequent reply tokens (>= the vocabulary keeps it whole) "
                   "[default: the recipe's, 8192].")
@click.option("--ttt-steps", type=click.IntRange(min=1), default=None,
              help="Training-time test depth: steps the drafter is unrolled on its own features [default: 3].")
@click.option("--feature-weight", type=click.FloatRange(min=0), default=None,
              help="EAGLE-1 feature regression weight (0: off) [default: 0].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Windows per step [default: 8].")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help="Positions per window; longer records are windowed [default: 384].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate [default: 5e-4].")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Steps between held-out evaluations, each a point of the card's tau curve [default: 250].")
@click.option("--init", "init", metavar="DIR|NAME", default=None,
              help="Start from an exported EAGLE drafter (a directory or zoo name, e.g. the shipped one) instead "
                   "of fresh weights; it must match --layers and --draft-vocab.")
def train_eagle(target, data_dir, out_dir, work_dir, steps, teacher_dtype, mixed_precision, seed, layers, draft_vocab,
                ttt_steps, feature_weight, batch_size, seq_len, lr, eval_every, init):
    """Train an EAGLE drafter on a frozen target's features over its own replies (EAGLE-3's training-time
    test) and export it with a model card (held-out acceptance per draft position).

    \b
    Example:
      specdiff train eagle --target smollm2-135m-instruct --data datasets/smollm2-135m-instruct \\
          --out-dir ./smollm2-eagle --layers 2,15,27 --draft-vocab 8192
    """
    from specdiff.training.eagle_recipe import EagleRecipe, run_eagle

    given = dict(layers=_int_list(layers, "--layers") if layers is not None else None, draft_vocab=draft_vocab,
                 ttt_steps=ttt_steps, feature_weight=feature_weight, teacher_dtype=teacher_dtype, init=init)
    _train_feature_drafter(functools.partial(EagleRecipe, out_dir.name, target, str(data_dir)), run_eagle, out_dir,
                           work_dir, steps, given,
                           dict(batch_size=batch_size, seq_len=seq_len, lr=lr, eval_every=eval_every,
                                mixed_precision=mixed_precision, seed=seed))


def _train_feature_drafter(make_recipe, run, out_dir: Path, work_dir: Path, steps: int | None, given: dict,
                           sizes: dict) -> None:
    """make_recipe(command=..., **the options given) (the recipe's defaults for the rest; `sizes` go into its
    TrainConfig), then run(recipe, work_dir, out_dir, steps) and report; errors become usage errors."""
    from specdiff.cli.common import command_line

    command = "specdiff train" + command_line(click.get_current_context())[len("specdiff"):]
    sizes = {name: value for name, value in sizes.items() if value is not None}
    try:
        recipe = make_recipe(command=command, **{name: value for name, value in given.items() if value is not None})
        if sizes:
            recipe = replace(recipe, train=replace(recipe.train, **sizes))
        result = run(recipe, work_dir, out_dir, steps)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from None
    if result.interrupted:
        click.echo(f"stopped at step {result.step}; run the same command again to resume", err=True)
        raise SystemExit(130)
    click.echo(f"{recipe.name}: {result.step} steps, held-out loss {result.eval_loss:.4f}, "
               f"{result.train_seconds / 60:.1f} min -> {out_dir}", err=True)


def _int_list(value: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 2,15,27, got {value!r}",
                                 param_hint=flag) from None


@train_group.command("dflash")
@_feature_drafter_options
@click.option("--layers", default=None,
              help="Comma-separated hidden_states indices the drafter fuses (0: embeddings, i: output of layer i) "
                   "[default: 2, L//2, L-3].")
@click.option("--block-size", type=click.IntRange(min=2), default=None,
              help="Rows per block: the last committed token and block-size - 1 masks, the most drafted per step "
                   "[default: 16].")
@click.option("--num-layers", type=click.IntRange(min=1), default=None,
              help="Draft decoder layers, of the target's architecture [default: 1].")
@click.option("--anchors", type=click.IntRange(min=1), default=None,
              help="Random blocks per sequence per step [default: 16].")
@click.option("--draft-vocab", type=click.IntRange(min=0), default=None,
              help="Rows of the reduced LM head it trains and drafts over: the most frequent reply tokens, written "
                   "as draft_vocab.json beside it (0: the whole head) [default: 8192].")
@click.option("--fused-masks/--plain-masks", default=None,
              help="Mask rows add the anchor's embedding and the last context row's feature (fused), or are one "
                   "learned vector, as in DFlash (plain) [default: fused].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Sequences per step [default: 8].")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help="Context rows per sequence (longer records are windowed) [default: 512].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate [default: 6e-4].")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Steps between held-out evaluations, each a point of the card's tau-by-training-tokens curve "
                   "[default: 200].")
@click.option("--init", "init", metavar="DIR|NAME", default=None,
              help="Start from an exported DFlash drafter (a directory or zoo name, e.g. the shipped one) instead "
                   "of fresh weights; it must match --layers, --block-size, --num-layers and the masks, and keeps "
                   "its draft vocabulary.")
def train_dflash(target, data_dir, out_dir, work_dir, steps, teacher_dtype, mixed_precision, seed, layers, block_size,
                 num_layers, anchors, draft_vocab, fused_masks, batch_size, seq_len, lr, eval_every, init):
    """Train a DFlash drafter (block diffusion conditioned on the target's hidden states) on a frozen
    target's own replies, and export it with a model card (held-out acceptance per block position).

    \b
    Example:
      specdiff train dflash --target smollm2-135m-instruct --data datasets/smollm2-135m-instruct \\
          --out-dir ./smollm2-dflash --layers 2,15,27 --block-size 16 --num-layers 1
    """
    from specdiff.training.dflash_recipe import DFlashRecipe, run_dflash

    given = dict(layers=_int_list(layers, "--layers") if layers is not None else None, block_size=block_size,
                 num_layers=num_layers, anchors=anchors, fused_masks=fused_masks, teacher_dtype=teacher_dtype,
                 draft_vocab=draft_vocab, init=init)
    _train_feature_drafter(functools.partial(DFlashRecipe, out_dir.name, target, str(data_dir)), run_dflash, out_dir,
                           work_dir, steps, given,
                           dict(batch_size=batch_size, seq_len=seq_len, lr=lr, eval_every=eval_every,
                                mixed_precision=mixed_precision, seed=seed))
