"""Options and model loading shared by `chat`, `generate` and `bench`.

Decoding options default to None and map onto `DecodingConfig.from_model`, so the defaults are the
library's (the model's generation_config); the CLI adds none of its own.
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from click.core import ParameterSource
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdiff import bench, methods, zoo
from specdiff.config import DecodingConfig
from specdiff.vocab import shared_vocab_size

DEFAULT_TARGET = "stdlib-target"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_method(ctx, param, value):
    try:
        methods.get(value)
    except methods.UnknownMethodError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _check_device(ctx, param, value):
    try:
        device = torch.device(value)
    except RuntimeError as error:
        raise click.BadParameter(str(error)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine; use --device cpu")
    return value


def _apply(command, options):
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def model_options(command):
    """--target, --drafter, --draft-length, --dtype, --device."""
    return _apply(command, [
        click.option("--target", metavar="PATH|NAME",
                     help="Target model: a local directory, a zoo name or a cached hub id "
                          f"[default: zoo {DEFAULT_TARGET}]."),
        click.option("--drafter", metavar="PATH|NAME",
                     help="Drafter model for the methods that draft with one [default: each method's zoo drafter, "
                          f"e.g. {methods.get('ar').default_drafter}]."),
        click.option("--draft-length", type=click.IntRange(min=1), default=None,
                     help="Draft length (tree depth) instead of each method's own."),
        click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True),
        click.option("--device", default="cpu", show_default=True, callback=_check_device,
                     help="torch device, e.g. cpu or cuda."),
    ])


def method_option(command):
    return click.option("--method", default="ar", show_default=True, callback=_check_method,
                        help=f"Drafter/search combination: {', '.join(methods.names())}.")(command)


def decoding_options(command):
    """Decoding settings; unset ones come from the target's generation_config."""
    return _apply(command, [
        click.option("--max-new-tokens", type=int, default=None,
                     help=f"New tokens per reply [default: {DecodingConfig.max_new_tokens}]."),
        click.option("--repetition-penalty", type=float, default=None, help="As in `generate` (1.0 = off)."),
        click.option("--no-repeat-ngram-size", type=int, default=None, help="As in `generate` (0 = off)."),
        click.option("--temperature", type=float, default=None, help="0 = greedy; > 0 samples."),
        click.option("--top-k", type=int, default=None, help="Sampling: keep the k most likely tokens."),
        click.option("--top-p", type=float, default=None, help="Sampling: nucleus mass."),
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


def load_model(spec: str | None, default: str, option: str, dtype: str, device: str):
    """(model, tokenizer or None, name) from a local directory, a zoo name or a cached hub id."""
    name = spec or default
    if spec is None or (name in zoo.available() and not Path(name).exists()):
        try:
            model, tokenizer = zoo.load(name, dtype=DTYPES[dtype], device=device)
        except FileNotFoundError as error:
            raise click.UsageError(f"{error}; or pass {option} with a local model directory") from None
        return model, tokenizer, f"zoo:{name}"
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not (path / "config.json").exists():
        shipped = ", ".join(zoo.available()) or "none shipped"
        raise click.BadParameter(f"no model at {name!r} (need a directory with config.json, a zoo name "
                                 f"({shipped}) or a cached hub id)", param_hint=option)
    source = str(path) if looks_local else name
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], local_files_only=True).to(device)
    except (OSError, ValueError) as error:
        raise click.BadParameter(f"cannot load a causal LM from {name!r}: {error}", param_hint=option) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model.eval(), tokenizer, name


def load_models(params: dict, runner_names: list[str]) -> Models:
    """The target, and for each runner that drafts with a model, `--drafter` or its own zoo default."""
    target, tokenizer, target_name = load_model(params["target"], DEFAULT_TARGET, "--target", params["dtype"],
                                                params["device"])
    if tokenizer is None:
        raise click.BadParameter(f"{target_name!r} has no tokenizer; save one next to the model "
                                 "(tokenizer.save_pretrained)", param_hint="--target")
    loaded: dict[tuple, tuple] = {}  # one load per distinct drafter and loader
    drafters, names = {}, {}
    for runner in runner_names:
        default = bench.default_drafter(runner)
        if default is None:
            continue
        own_loader = _own_drafter_loader(runner)
        key = (own_loader, params["drafter"] or default)
        if key not in loaded and own_loader is not None:
            loaded[key] = _load_own_drafter(own_loader, key[1], params["dtype"], params["device"])
        elif key not in loaded:
            loaded[key] = load_model(params["drafter"], default, "--drafter", params["dtype"], params["device"])
            _check_pairing(target, tokenizer, *loaded[key][:2])
        drafters[runner], _, names[runner] = loaded[key]
    return Models(target, tokenizer, target_name, drafters, names)


def _own_drafter_loader(runner: str):
    """A method's `load_drafter(spec, dtype, device)`, for drafters that are not causal LMs (heads); else None."""
    return getattr(methods.get(runner), "load_drafter", None) if runner in methods.names() else None


def _load_own_drafter(load, spec: str, dtype: str, device: str) -> tuple:
    """(drafter, None, name) as `load_model` returns; the method checks the pairing when it builds."""
    try:
        return load(spec, DTYPES[dtype], device), None, spec
    except (OSError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--drafter") from None


def _check_pairing(target, tokenizer, drafter, drafter_tokenizer) -> None:
    try:
        shared_vocab_size(target.get_output_embeddings().weight.shape[0],
                          drafter.get_output_embeddings().weight.shape[0], tokenizer, drafter_tokenizer)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--drafter") from None


def build_specdiff(models: Models, params: dict):
    try:
        spec = methods.build(params["method"], models.target, models.tokenizer, models.drafters.get(params["method"]),
                             methods.MethodOptions(draft_length=params["draft_length"]))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
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
