"""What `specdiff bench` reports (DESIGN.md §5): the summary table, Spec-Bench answer files, plots.

Per method: tau (new tokens / target forwards, bonus included, step-weighted over the whole run),
accepted draft tokens per step, tokens/s and speedup over `hf-generate` (median and range over
repeats), exact-match rate against `hf-generate`'s outputs, and the outputs' distinct-bigram ratio,
so that a looping model is visible instead of a flattering speedup (DESIGN.md §6).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
import transformers

from specdiff.bench import BASELINE, BenchRun, TurnOutput
from specdiff.metrics import GenerationStats
from specdiff.zoo.corpus import distinct_bigram_ratio

LOOP_THRESHOLD = 0.5  # the zoo's quality gate (DESIGN.md §6): below it, greedy outputs loop
# A divergence from greedy `generate` is a near-tie when the reference's top-1 / top-2 logit gap at the
# first divergent token is within what one-row and multi-row forwards may differ by: fp32 measured
# 1.4e-4 at most on the real target (real-target-notes.md), so 1e-3; bf16 rounds logits of magnitude
# ~16 to 0.125 (8 mantissa bits) and measured up to 2.4 apart, so 0.5 is a conservative line (fp16: 0.1).
# Anything above it is a bug to fix, not rounding.
TIE_TOLERANCE = {"float32": 1e-3, "float64": 1e-6, "bfloat16": 0.5, "float16": 0.1}


@dataclass(frozen=True)
class Divergence:
    """Where an answer first differs from the reference's, and how close the reference's choice was."""

    answer: int  # index over the run's answers (prompt by prompt, turn by turn)
    token: int  # first divergent position in the reply
    gap: float | None  # reference's top-1 minus top-2 logit there; None: not known (see `unknown`)
    near_tie: bool
    unknown: str = ""  # why the gap is not known: "reference stopped" there, or "no scores recorded"

    def as_dict(self) -> dict:
        return dict(answer=self.answer, token=self.token, gap=self.gap, near_tie=self.near_tie, unknown=self.unknown)


def first_divergence(tokens: list[int], reference: TurnOutput) -> int | None:
    """First index where `tokens` and the reference's tokens differ (None: equal)."""
    if tokens == reference.token_ids:
        return None
    shared = min(len(tokens), len(reference.token_ids))
    return next((i for i in range(shared) if tokens[i] != reference.token_ids[i]), shared)


def divergences(answers: list[TurnOutput], reference: list[TurnOutput], tolerance: float) -> list[Divergence]:
    found = []
    for index, (answer, ref) in enumerate(zip(answers, reference)):
        token = first_divergence(answer.token_ids, ref)
        if token is None:
            continue
        if ref.top2_gaps is None:
            found.append(Divergence(index, token, None, False, "no scores recorded"))
        elif token >= len(ref.top2_gaps):
            found.append(Divergence(index, token, None, False, "reference stopped"))
        else:
            gap = ref.top2_gaps[token]
            found.append(Divergence(index, token, gap, gap <= tolerance))
    return found


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(statistics.median(values), min(values), max(values))

    def format(self, suffix: str = "") -> str:
        return f"{self.median:.2f}{suffix} [{self.low:.2f}–{self.high:.2f}]"


@dataclass(frozen=True)
class MethodSummary:
    name: str
    tau: float  # new tokens / target forwards over every answer of every repeat
    mean_accepted: float | None  # draft tokens accepted per step (SpecDiff methods)
    max_accepted: int | None
    tokens_per_second: Spread  # over repeats
    speedup: Spread  # tokens/s over hf-generate's, repeat by repeat
    exact_match: float | None  # share of answers equal to hf-generate's (greedy only)
    distinct_bigrams: float  # mean over answers
    new_tokens: int  # per repeat
    stats: GenerationStats | None  # merged over every answer (SpecDiff methods)
    reference: str = BASELINE  # the runner speedup and exact match are measured against
    divergences: tuple[Divergence, ...] = ()  # greedy: every answer that differs from the reference's
    # DESIGN.md §5: speedup <= tau x t1 / (t_verify + t_draft), t1 the reference's time per token (one
    # 1-token forward and `generate`'s own step), t_verify the target's forwards of a step (the
    # verifier's `CachedLM.forward`, the prefill included; processors, acceptance and the cache's
    # commit are not in it) and t_draft the drafter's proposal and tree search
    # (`GenerationStats.verify_time` and `draft_time`). Efficiency = speedup / bound: the share of the
    # run spent in that model work, the rest being the loop's own Python.
    bound: float | None = None
    efficiency: float | None = None

    def exact_cell(self) -> str:
        """"100%", or "93% (3 near-ties)", or "93% (1 near-tie; 2 NOT ties: gaps 3.1, 0.9)"."""
        if self.exact_match is None:
            return "–"
        cell = f"{self.exact_match:.0%}"
        if not self.divergences:
            return cell
        ties = sum(d.near_tie for d in self.divergences)
        known = [d for d in self.divergences if not d.near_tie and not d.unknown]
        unknown = [d for d in self.divergences if d.unknown]
        notes = [f"{ties} near-tie{'s' * (ties != 1)}"] if ties else []
        if known:
            notes.append(f"{len(known)} NOT a tie: gap {', '.join(f'{d.gap:.3g}' for d in known)}")
        if unknown:
            notes.append(f"{len(unknown)} with no gap: {', '.join(sorted({d.unknown for d in unknown}))}")
        return f"{cell} ({'; '.join(notes)})"

    @property
    def loops(self) -> bool:
        return self.distinct_bigrams < LOOP_THRESHOLD

    def as_dict(self) -> dict:
        return dict(name=self.name, tau=round(self.tau, 4), mean_accepted=self.mean_accepted,
                    max_accepted=self.max_accepted, tokens_per_second=vars(self.tokens_per_second),
                    speedup=vars(self.speedup), exact_match=self.exact_match,
                    distinct_bigrams=round(self.distinct_bigrams, 4), loops=self.loops, new_tokens=self.new_tokens,
                    reference=self.reference, divergences=[d.as_dict() for d in self.divergences],
                    bound=self.bound, efficiency=self.efficiency,
                    stats=None if self.stats is None else self.stats.as_dict())


def _answers(repeat: list[list[TurnOutput]]) -> list[TurnOutput]:
    return [turn for prompt in repeat for turn in prompt]


def _tokens_per_second(repeat: list[list[TurnOutput]]) -> float:
    answers = _answers(repeat)
    return sum(len(a.token_ids) for a in answers) / sum(a.wall_time for a in answers)


def summarize(run: BenchRun, tie_tolerance: float = TIE_TOLERANCE["float32"]) -> list[MethodSummary]:
    """Speedup and exact match are against each runner's reference: hf-generate, or for a method
    that decodes its own model (TiDAR) that model's plain generate, `hf-generate[<method>]`.
    tie_tolerance: the largest reference top-2 gap a divergence may have to count as a near-tie
    (`TIE_TOLERANCE[dtype]`)."""
    summaries = []
    for name, repeats in run.outputs.items():
        reference_name = run.references.get(name, BASELINE)
        reference = run.outputs[reference_name]
        baseline_speed = [_tokens_per_second(repeat) for repeat in reference]
        summaries.append(_summary(name, repeats, baseline_speed, _answers(reference[0]), run.config.greedy,
                                  reference_name, tie_tolerance))
    return summaries


def by_category(run: BenchRun) -> dict[str, BenchRun]:
    """The run cut into one sub-run per prompt category (in order of first appearance)."""
    indices: dict[str, list[int]] = {}
    for index, prompt in enumerate(run.prompts):
        indices.setdefault(prompt.category, []).append(index)
    return {category: BenchRun([run.prompts[i] for i in chosen], run.config, run.settings,
                               {name: [[repeat[i] for i in chosen] for repeat in repeats]
                                for name, repeats in run.outputs.items()}, run.references)
            for category, chosen in indices.items()}


def _summary(name, repeats, baseline_speed, reference, greedy, reference_name=BASELINE,
             tie_tolerance: float = TIE_TOLERANCE["float32"]) -> MethodSummary:
    every = [answer for repeat in repeats for answer in _answers(repeat)]
    first = _answers(repeats[0])
    speed = [_tokens_per_second(repeat) for repeat in repeats]
    stats = None
    if all(a.stats is not None for a in every):
        stats = GenerationStats()
        for answer in every:
            stats = stats.merge(answer.stats)
    steps = len(stats.accepted_lengths) if stats is not None else 0
    return MethodSummary(
        name=name,
        tau=sum(len(a.token_ids) for a in every) / max(1, sum(a.target_forwards for a in every)),
        mean_accepted=round(stats.accepted_tokens / steps, 4) if steps else None,
        max_accepted=max(stats.accepted_lengths) if steps else None,
        tokens_per_second=Spread.of(speed),
        speedup=Spread.of([s / b for s, b in zip(speed, baseline_speed)]),
        exact_match=statistics.mean(a.token_ids == r.token_ids for a, r in zip(first, reference)) if greedy else None,
        distinct_bigrams=statistics.mean(distinct_bigram_ratio(a.token_ids) for a in first),
        new_tokens=sum(len(a.token_ids) for a in first),
        stats=stats,
        reference=reference_name,
        divergences=tuple(divergences(first, reference, tie_tolerance)) if greedy else (),
        **_efficiency(stats, speed, baseline_speed),
    )


def _efficiency(stats: GenerationStats | None, speed: list[float], baseline_speed: list[float]) -> dict:
    """{bound, efficiency} (DESIGN.md §5) from the merged stats and median speeds; {} without timings."""
    if stats is None or not stats.accepted_lengths or stats.draft_time + stats.verify_time <= 0:
        return {}
    steps = len(stats.accepted_lengths)
    t1 = 1 / statistics.median(baseline_speed)  # the reference's seconds per token
    t_step = (stats.draft_time + stats.verify_time) / steps
    bound = stats.tau * t1 / t_step
    return dict(bound=round(bound, 4), efficiency=round(statistics.median(speed) * t1 / bound, 4))


def markdown_table(summaries: list[MethodSummary]) -> str:
    lines = [f"| method | tau | accepted/step mean (max) | tokens/s median [range] | speedup vs {BASELINE} "
             "| bound (efficiency) | exact match | distinct bigrams |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        accepted = "–" if s.mean_accepted is None else f"{s.mean_accepted:.2f} ({s.max_accepted})"
        speedup = "loops" if s.loops else s.speedup.format("x")
        exact = s.exact_cell()
        if s.reference not in (BASELINE, s.name):
            speedup += f" (vs {s.reference})"
        bound = "–" if s.bound is None else f"{s.bound:.2f}x ({s.efficiency:.2f})"
        lines.append(f"| {s.name} | {s.tau:.2f} | {accepted} | {s.tokens_per_second.format()} | {speedup} "
                     f"| {bound} | {exact} | {s.distinct_bigrams:.2f} |")
    own = sorted({s.reference for s in summaries if s.reference != BASELINE})
    if own:
        lines.append("")
        lines.append(f"Rows marked (vs {', '.join(own)}) decode their own model, not the target: their speedup and "
                     f"exact match are against that model's plain generate; tau is its tokens per forward (T/NFE).")
    return "\n".join(lines)


def category_table(run: BenchRun, tie_tolerance: float = TIE_TOLERANCE["float32"]) -> str:
    """One row per (category, method): tau, tokens/s, speedup, exact match with ties, distinct bigrams."""
    lines = [f"| category | method | tau | tokens/s | speedup vs {BASELINE} | exact match | distinct bigrams |",
             "|---|---|---|---|---|---|---|"]
    for category, sub_run in by_category(run).items():
        for s in summarize(sub_run, tie_tolerance):
            speedup = "loops" if s.loops else f"{s.speedup.median:.2f}x"
            lines.append(f"| {category} | {s.name} | {s.tau:.2f} | {s.tokens_per_second.median:.1f} | {speedup} "
                         f"| {s.exact_cell()} | {s.distinct_bigrams:.2f} |")
    return "\n".join(lines)


def tie_tolerance(model) -> float:
    dtype = str(model.get_output_embeddings().weight.dtype).removeprefix("torch.")
    return TIE_TOLERANCE.get(dtype, TIE_TOLERANCE["bfloat16"])


# --- the report ----------------------------------------------------------------------------------

def machine_info(model) -> dict:
    device = model.get_output_embeddings().weight.device
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return dict(
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"), platform=platform.platform(),
        python=platform.python_version(), cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
        load_average_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        dtype=str(model.get_output_embeddings().weight.dtype), torch=torch.__version__,
        transformers=transformers.__version__, specdiff=version("specdiff"),
    )


def _step_lengths(answer: TurnOutput) -> list[int]:
    """Tokens per target forward (Spec-Bench's `accept_lengths`); unknown inside HF assisted runs."""
    if answer.stats is not None:
        return [accepted + 1 for accepted in answer.stats.accepted_lengths]
    if answer.target_forwards == len(answer.token_ids):  # every forward produced exactly one token
        return [1] * answer.target_forwards
    return []


def write_answers(run: BenchRun, directory: Path, model_id: str) -> list[Path]:
    """One Spec-Bench answer file per method; wall times are medians over the repeats."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, repeats in run.outputs.items():
        lines = []
        for index, prompt in enumerate(run.prompts):
            turns = repeats[0][index]
            choice = dict(
                index=0, turns=[t.text for t in turns], decoding_steps=[t.target_forwards for t in turns],
                new_tokens=[len(t.token_ids) for t in turns],
                wall_time=[statistics.median(r[index][i].wall_time for r in repeats) for i in range(len(turns))],
                accept_lengths=[n for t in turns for n in _step_lengths(t)],
            )
            lines.append(json.dumps(dict(question_id=prompt.question_id, category=prompt.category,
                                         answer_id=uuid.uuid4().hex[:22], model_id=f"{model_id}-{name}",
                                         choices=[choice], tstamp=time.time())))
        path = directory / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def plot_acceptance(summaries: list[MethodSummary], directory: Path) -> list[Path]:
    """accepted_length_histogram.png and per_position_acceptance.png, one series per SpecDiff method."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    shown = [s for s in summaries if s.stats is not None and s.stats.accepted_lengths]
    if not shown:
        return []
    histogram, positions = Figure(figsize=(7, 4)), Figure(figsize=(7, 4))
    hist_axes, pos_axes = histogram.subplots(), positions.subplots()
    width = 0.8 / len(shown)
    for i, s in enumerate(shown):
        counts = s.stats.acceptance_histogram
        steps = sum(counts.values())
        hist_axes.bar([k - 0.4 + (i + 0.5) * width for k in counts], [c / steps for c in counts.values()],
                      width, label=f"{s.name} (tau {s.tau:.2f})")
        # Positions no step reached read 0.0 in the stats; they form a suffix, so cut it.
        reached = max(min(depth, accepted + 1)
                      for accepted, depth in zip(s.stats.accepted_lengths, s.stats.draft_depths))
        rates = s.stats.per_position_acceptance[:reached]
        pos_axes.plot(range(1, len(rates) + 1), rates, marker="o", label=s.name)
    hist_axes.set(xlabel="draft tokens accepted in a step", ylabel="share of steps", title="Accepted-length histogram")
    pos_axes.set(xlabel="draft position", ylabel="P(accepted | previous accepted)", ylim=(0, 1.05),
                 title="Per-position acceptance")
    paths = []
    for figure, axes, name in ((histogram, hist_axes, "accepted_length_histogram.png"),
                               (positions, pos_axes, "per_position_acceptance.png")):
        axes.legend()
        figure.savefig(directory / name, dpi=120, bbox_inches="tight")
        paths.append(directory / name)
    return paths


def _drafters(names: dict[str, str]) -> str:
    """{runner: drafter} -> "`zoo:x` (ar, ar-tree)", one entry per distinct drafter."""
    by_drafter: dict[str, list[str]] = {}
    for runner, drafter in names.items():
        by_drafter.setdefault(drafter, []).append(runner)
    return ", ".join(f"`{d}` ({', '.join(r)})" for d, r in by_drafter.items()) or "none"


def report_markdown(run: BenchRun, summaries: list[MethodSummary], info: dict,
                    tolerance: float = TIE_TOLERANCE["float32"]) -> str:
    config, settings = run.config, run.settings
    decoding = "greedy" if config.greedy else (f"sampled (temperature {config.temperature}, top_k {config.top_k}, "
                                               f"top_p {config.top_p}, seed {config.seed})")
    if config.repetition_penalty != 1.0:
        decoding += f", repetition_penalty {config.repetition_penalty}"
    if config.no_repeat_ngram_size:
        decoding += f", no_repeat_ngram_size {config.no_repeat_ngram_size}"
    return "\n".join([
        f"`{info.get('command', 'specdiff bench')}`",
        "",
        f"Target `{info.get('target')}`, drafters {_drafters(info.get('drafters') or {})}; {len(run.prompts)} prompts "
        f"({info.get('prompts')}), {config.max_new_tokens} new tokens, {decoding}; {settings.repeats} repeats "
        f"after {settings.warmup} warm-up; {info['cpu']}, {info['torch_threads']} torch threads, "
        f"{info['device']}, torch {info['torch']}, transformers {info['transformers']}, {info['time']}.",
        "",
        markdown_table(summaries),
        "",
        *([f"Left out: {'; '.join(f'`{name}` failed ({error})' for name, error in run.failures.items())}.", ""]
          if run.failures else []),
        *([f"This run was {run.interrupted}.", ""] if run.interrupted else []),
        "tau = new tokens / target forwards (bonus token included; plain decoding = 1.00), over all answers. "
        f"A row whose outputs loop (distinct-bigram ratio < {LOOP_THRESHOLD}) shows `loops` instead of a speedup. "
        f"Exact match is against {BASELINE} in {str(info.get('dtype', '?')).removeprefix('torch.')}; a divergence is a near-tie when "
        f"{BASELINE}'s top-1 / top-2 logit gap at the first divergent token is <= {tolerance:g}. "
        f"Bound (DESIGN.md §5) = tau x t1 / (t_verify + t_draft), t1 = {BASELINE}'s time per token, t_verify + t_draft "
        "= the model work of a step (the drafter's proposal and tree search, the target's prefill and verify "
        "forwards); efficiency = speedup / bound, the share of the run spent in that work (the rest: processors, "
        "acceptance, the cache's commit, the loop's Python).",
        "",
        *(["Per category:", "", category_table(run, tolerance), ""] if len(by_category(run)) > 1 else []),
    ])


def write_report(run: BenchRun, summaries: list[MethodSummary], directory: Path, info: dict,
                 model_id: str = "specdiff", tolerance: float = TIE_TOLERANCE["float32"]) -> list[Path]:
    """answers/<method>.jsonl (Spec-Bench format), results.json, table.md and the two plots."""
    directory.mkdir(parents=True, exist_ok=True)
    results = directory / "results.json"
    categories = {category: [s.as_dict() for s in summarize(sub_run, tolerance)]
                  for category, sub_run in by_category(run).items()}
    results.write_text(json.dumps(dict(info=info, config=run.config.as_dict(), settings=vars(run.settings),
                                       tie_tolerance=tolerance, methods=[s.as_dict() for s in summaries],
                                       categories=categories, failures=run.failures,
                                       interrupted=run.interrupted), indent=1))
    table = directory / "table.md"
    table.write_text(report_markdown(run, summaries, info, tolerance))
    answers = write_answers(run, directory / "answers", model_id)
    return [*answers, results, table, *plot_acceptance(summaries, directory)]
