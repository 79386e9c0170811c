"""`specdiff bench`: HF baselines and SpecDiff methods side by side, in one run."""

from __future__ import annotations

from pathlib import Path

import click

from specdiff import bench
from specdiff.cli.common import (command_line, decoding_config, decoding_options, load_models, method_options,
                                 model_options, target_name)


def _check_names(ctx, param, value):
    known = bench.runner_names()
    unknown = [name for name in value if name not in known]
    if unknown:
        raise click.BadParameter(f"unknown method {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return value


@click.command("bench", short_help="Benchmark HF baselines and SpecDiff methods side by side.")
@model_options
@decoding_options
@click.option("--method", "-m", "method_names", multiple=True, callback=_check_names,
              help=f"Repeatable; one of {', '.join(bench.runner_names())}. Default: every one whose drafter "
                   "can be loaded for the target (shipped in the zoo for it, or --drafter). hf-generate always runs "
                   "(the reference).")
@click.option("--prompts", "prompts_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Spec-Bench / MT-Bench style question.jsonl [default: the zoo's held-out stdlib excerpts].")
@click.option("--num-prompts", type=click.IntRange(min=1), default=None,
              help=f"Use the first N prompts [default: {bench.DEFAULT_HELDOUT_PROMPTS} held-out excerpts, "
                   "or the whole file].")
@click.option("--category", "categories", multiple=True, help="Only questions of this category (repeatable).")
@click.option("--per-category", type=click.IntRange(min=1), default=None,
              help="The first N questions of each category, taken in turn across categories.")
@click.option("--max-turns", type=click.IntRange(min=1), default=None,
              help="Keep only each question's first N turns [default: all].")
@click.option("--prompt-seed", type=int, default=0, show_default=True, help="Which held-out excerpts are drawn.")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help=f"Timed runs of every answer [default: {bench.BenchSettings.repeats}].")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help=f"Untimed runs on the first prompt [default: {bench.BenchSettings.warmup}].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"),
              show_default=True, help="Where answers/*.jsonl, results.json, table.md and the plots go.")
@click.option("--model-id", default=None, help="Spec-Bench model_id prefix [default: the target's name].")
@click.pass_context
def bench_command(ctx, method_names, prompts_path, num_prompts, categories, per_category, max_turns, prompt_seed,
                  repeats, warmup, out_dir, model_id, **params):
    """Benchmark HF generate, HF assisted generation, HF prompt lookup and SpecDiff methods on one
    prompt set: tau, accepted lengths, tokens/s, speedup, exact match, distinct bigrams.

    \b
    Prompts go through the target's chat template (the stdlib zoo: plain continuation).

    
    Examples:
      specdiff bench --prompts ../shared/data/spec_bench/question.jsonl --category qa --category rag \\
          --per-category 10 --max-new-tokens 128 -m hf-lookup -m lookup -m lookup-chain
      specdiff bench --prompts ../shared/data/mt_bench/question.jsonl --per-category 2 --num-prompts 10 --dtype bf16
      specdiff bench --target stdlib-target --num-prompts 20 --out bench-results
      specdiff bench --target ./my-model --drafter ./my-drafter --repeats 5 --repetition-penalty 1.3
    """
    from specdiff import bench_report

    try:
        prompts = bench.load_prompts(prompts_path, num_prompts, prompt_seed, tuple(categories), per_category,
                                     max_turns)
        given = dict(repeats=repeats, warmup=warmup)
        settings = bench.BenchSettings(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--prompts") from None
    names = list(method_names) or bench.default_runner_names(drafter_given=params["drafter"] is not None,
                                                             target=target_name(params))
    models = load_models(params, names)
    config = decoding_config(models.target, params)
    try:
        runners = bench.make_runners(names, models.target, models.tokenizer, models.drafters, config,
                                     method_options(params))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    conversation = bench.Conversation(models.tokenizer, bench.max_prompt_tokens(models.target, config.max_new_tokens))
    run = bench.run_bench(runners, prompts, conversation, config, settings)
    tolerance = bench_report.tie_tolerance(models.target)
    summaries = bench_report.summarize(run, tolerance)
    info = dict(bench_report.machine_info(models.target), command=command_line(ctx), target=models.target_name,
                drafters=models.drafter_names, prompts=str(prompts_path or "zoo held-out stdlib excerpts"))
    paths = bench_report.write_report(run, summaries, out_dir, info, model_id or Path(models.target_name).name,
                                      tolerance)
    click.echo(bench_report.markdown_table(summaries))
    if len(bench_report.by_category(run)) > 1:
        click.echo("\n" + bench_report.category_table(run, tolerance))
    click.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)
    for name, error in run.failures.items():
        click.echo(f"warning: {name} failed and was left out ({error}); its traceback is above", err=True)
    if run.interrupted:
        click.echo(f"warning: this run was {run.interrupted}", err=True)
