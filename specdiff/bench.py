"""`specdiff bench` as a library: HF baselines and SpecDiff methods side by side on one prompt set.

Every method answers every prompt `repeats` times, interleaved (prompt by prompt, method by method),
after a warm-up; `specdiff.bench_report` turns the run into the table, answer files and plots.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from specdiff import methods
from specdiff.config import DecodingConfig
from specdiff.conversation import Conversation, max_prompt_tokens  # noqa: F401 (bench.Conversation)
from specdiff.metrics import GenerationStats
from specdiff.zoo.corpus import heldout_prompts

BASELINE = "hf-generate"
HF_BASELINES = ("hf-generate", "hf-assisted", "hf-lookup")
# The same baselines with the target's (and the assistant's) linears prepacked as SpecDiff's engine packs
# them in fp32 on a CPU (`specdiff.packed`): how much of a method's lead is the kernel. Only when named.
PACKED_BASELINES = ("hf-assisted-packed", "hf-lookup-packed")
DEFAULT_HELDOUT_PROMPTS = 20


# --- prompt sets ---------------------------------------------------------------------------------

class PromptFileError(ValueError):
    pass


@dataclass(frozen=True)
class BenchPrompt:
    question_id: int | str
    category: str
    turns: tuple[str, ...]


def load_prompts(path: Path | None = None, num_prompts: int | None = None, seed: int = 0,
                 categories: tuple[str, ...] = (), per_category: int | None = None,
                 max_turns: int | None = None) -> list[BenchPrompt]:
    """The zoo's held-out stdlib excerpts (path None), or a Spec-Bench / MT-Bench style jsonl:
    one `{"question_id", "category", "turns": [str, ...]}` object per line.

    per_category: the first N questions of each category, taken in turn (category 1's first, category 2's
    first, ..., then the seconds), so that `num_prompts` then cuts across categories; max_turns: keep
    each question's first turns only."""
    for name, value in (("num_prompts", num_prompts), ("per_category", per_category), ("max_turns", max_turns)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if path is None:
        texts = heldout_prompts(num_prompts or DEFAULT_HELDOUT_PROMPTS, seed=seed)
        return [BenchPrompt(i, "stdlib-heldout", (text,)) for i, text in enumerate(texts)]
    prompts = [p for p in _read_jsonl(Path(path)) if not categories or p.category in categories]
    if not prompts:
        raise PromptFileError(f"{path}: no prompts" + (f" in categories {', '.join(categories)}" if categories else ""))
    if per_category is not None:
        by_category: dict[str, list[BenchPrompt]] = {}
        for prompt in prompts:
            by_category.setdefault(prompt.category, []).append(prompt)
        prompts = [group[rank] for rank in range(per_category) for group in by_category.values() if rank < len(group)]
    if max_turns is not None:
        prompts = [BenchPrompt(p.question_id, p.category, p.turns[:max_turns]) for p in prompts]
    return prompts[:num_prompts]


def _read_jsonl(path: Path) -> list[BenchPrompt]:
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
        turns = record.get("turns") if isinstance(record, dict) else None
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise PromptFileError(f"{path}:{number}: expected an object with \"turns\": a non-empty list of strings "
                                  "(Spec-Bench / MT-Bench question format)")
        prompts.append(BenchPrompt(record.get("question_id", number), str(record.get("category", "")), tuple(turns)))
    return prompts


# --- runners -------------------------------------------------------------------------------------

@dataclass
class TurnOutput:
    token_ids: list[int]
    wall_time: float
    target_forwards: int  # forwards that produced tokens (SpecDiff's prefill is not one)
    stats: GenerationStats | None = None  # SpecDiff methods only
    text: str = ""
    # Greedy reference runs: the top-1 minus top-2 processed logit at each step, for the tie diagnostic
    # of any method that diverges from this answer (bench_report.first_divergence).
    top2_gaps: list[float] | None = None


class Runner(Protocol):
    name: str

    def run(self, prompt_ids: list[int]) -> TurnOutput: ...


@contextmanager
def count_forwards(model):
    """Count `model(...)` calls inside the block: yields a one-element list."""
    count = [0]
    handle = model.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()


@contextmanager
def assistant_settings(assistant, num_tokens: int):
    """Assisted generation reads its draft length from the assistant's generation_config, not from
    `generate`'s arguments (hf-transformers-notes.md Q3); set it for the block, then restore.

    The confidence cut stays at transformers' own default, 0.4: the assistant stops drafting once a
    token's probability is below it (with scikit-learn installed, transformers then retunes the cut from
    the matches it sees; the benchmarks here ran without it, a fixed 0.4). Our `ar`/`eagle` methods cut
    at the same value on the chain's probability (`methods.DRAFT_CUT`), so the baseline runs as its
    users run it, on an equal footing."""
    config = assistant.generation_config
    wanted = dict(num_assistant_tokens=num_tokens, num_assistant_tokens_schedule="constant",
                  assistant_confidence_threshold=0.4)
    saved = {name: getattr(config, name, None) for name in wanted}
    for name, value in wanted.items():
        setattr(config, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


def hf_generate_options(config: DecodingConfig, pad_token_id: int) -> dict:
    """`model.generate` keyword arguments for the same decoding settings."""
    options = dict(max_new_tokens=config.max_new_tokens, do_sample=not config.greedy,
                   repetition_penalty=config.repetition_penalty, no_repeat_ngram_size=config.no_repeat_ngram_size,
                   eos_token_id=list(config.eos_token_ids) or None, pad_token_id=pad_token_id)
    if not config.greedy:
        options.update(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
    return options


@dataclass
class HFRunner:
    """Plain `generate`, assisted generation (`assistant` set) or prompt lookup (`lookup` set)."""

    name: str
    model: object
    config: DecodingConfig
    assistant: object | None = None
    assistant_tokens: int = 0
    lookup: dict = field(default_factory=dict)  # prompt_lookup_num_tokens, max_matching_ngram_size
    reference: str = BASELINE  # whose outputs and speed this runner is compared with
    packed: tuple = ()  # PackedLinears of the target (and assistant) active while it generates

    @property
    def records_gaps(self) -> bool:
        """Plain greedy `generate` keeps each step's scores: the reference of the tie diagnostic."""
        return self.config.greedy and self.assistant is None and not self.lookup

    def run(self, prompt_ids: list[int]) -> TurnOutput:
        with ExitStack() as packing:
            for packed in self.packed:
                packing.enter_context(packed.active())
            return self._run(prompt_ids)

    def _run(self, prompt_ids: list[int]) -> TurnOutput:
        import torch

        device = self.model.get_output_embeddings().weight.device
        ids = torch.tensor([prompt_ids], device=device)  # [1, T]
        pad = self.model.generation_config.pad_token_id
        options = hf_generate_options(self.config, pad if pad is not None else (self.config.eos_token_ids or (0,))[0])
        if self.assistant is not None:
            options["assistant_model"] = self.assistant
        if self.records_gaps:
            options.update(output_scores=True, return_dict_in_generate=True)
        with count_forwards(self.model) as forwards, self._assisted():
            if self.config.seed is not None:
                torch.manual_seed(self.config.seed)
            synchronize(device)
            started = time.perf_counter()
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **options, **self.lookup)
            synchronize(device)
            wall_time = time.perf_counter() - started
        sequences = out.sequences if self.records_gaps else out
        gaps = None
        if self.records_gaps:
            top2 = torch.stack(out.scores)[:, 0].float().topk(2, dim=-1).values  # [new tokens, 2]
            gaps = (top2[:, 0] - top2[:, 1]).tolist()
        return TurnOutput(sequences[0, len(prompt_ids):].tolist(), wall_time, forwards[0], top2_gaps=gaps)

    def _assisted(self):
        if self.assistant is None:
            return nullcontext()
        return assistant_settings(self.assistant, self.assistant_tokens)


@dataclass
class SpecDiffRunner:
    name: str
    spec: object  # specdiff.SpecDiff
    config: DecodingConfig
    options: dict  # methods.generate_options(target, config)
    reference: str = BASELINE  # a method with its own model (TiDAR): that model's plain generate

    def run(self, prompt_ids: list[int]) -> TurnOutput:
        # Every run starts cold, as `generate` does: no cache carried over from the last prompt.
        self.spec.verifier.reset()
        self.spec.drafter.reset()
        synchronize(self.spec.verifier.device)
        started = time.perf_counter()
        result = self.spec.generate(prompt_ids, self.config.max_new_tokens, **self.options)
        synchronize(self.spec.verifier.device)
        wall_time = time.perf_counter() - started
        return TurnOutput(result.token_ids, wall_time, result.stats.target_forwards, result.stats)


def synchronize(device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it (CUDA runs asynchronously)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def runner_names() -> list[str]:
    return [*HF_BASELINES, *PACKED_BASELINES, *methods.names()]


def default_runner_names(drafter_given: bool, target: str | None = None) -> list[str]:
    """What `specdiff bench` runs when no method is named: every runner it can load a drafter for.
    With one `--drafter` (a causal LM) that excludes methods that load their own kind (heads) and
    those whose search needs the zoo tokenizer (the shipped corpus n-gram); without, it excludes
    methods whose zoo drafter is not shipped, or not trained for `target` (zoo.drafter_for picks the
    one trained for it; None: the stdlib target)."""
    from specdiff import zoo

    shipped = set(zoo.shipped())
    target = target or zoo.STDLIB_TARGET

    def usable(name: str) -> bool:
        drafter = default_drafter(name)
        if drafter is None:
            return True
        if drafter_given:  # the user's own models: skip heads and the zoo-tokenizer n-gram searches
            method = methods.get("ar" if name in HF_BASELINES else name)
            return not (hasattr(method, "load_drafter") or getattr(method, "needs_zoo_tokenizer", False)
                        or getattr(method, "own_model", False))
        drafter = zoo.drafter_for(target, drafter)
        trained = zoo.trained_for(drafter)
        return drafter in shipped and (trained == target or (trained is None and target in shipped))

    return [name for name in runner_names() if name not in PACKED_BASELINES and usable(name)]


def default_drafter(name: str) -> str | None:
    """The zoo drafter a runner uses unless told otherwise (hf-assisted: the `ar` method's)."""
    if name in HF_BASELINES or name in PACKED_BASELINES:
        return methods.get("ar").default_drafter if name.startswith("hf-assisted") else None
    return methods.get(name).default_drafter


def packed_linears(name: str, *models) -> tuple:
    """For a `-packed` baseline: each model's PackedLinears (ValueError where packing does not apply)."""
    if name not in PACKED_BASELINES:
        return ()
    from specdiff.packed import PackedLinears

    if not all(PackedLinears.applies(model) for model in models):
        raise ValueError(f"{name} runs the HF baseline with fp32 linears prepacked for oneDNN on a CPU; this "
                         f"target runs in another dtype or device: leave {name} out (--dtype float32 on a CPU has it)")
    return tuple(PackedLinears.of(model) for model in models)


def make_runners(names: list[str] | None, target, tokenizer, drafters: dict, config: DecodingConfig,
                 options: methods.MethodOptions = methods.MethodOptions()) -> list[Runner]:
    """`hf-generate` (always, first: the speedup reference), then the requested baselines and methods
    (all when `names` is None). `drafters` maps a runner's name to its drafter model, for those that
    draft with one. HF baselines draft as far as the `ar` and `lookup` methods do. A method that
    decodes its own model (TiDAR) is compared with that model's plain `generate`, which runs as
    `hf-generate[<method>]` (once per model)."""
    known = runner_names()
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise methods.UnknownMethodError(f"unknown method {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    wanted = [BASELINE] + [n for n in (names or [k for k in known if k not in PACKED_BASELINES]) if n != BASELINE]
    runners: list[Runner] = []
    own_references: dict[int, str] = {}  # id(model) -> the name of its plain-generate runner
    for name in dict.fromkeys(wanted):
        if name == "hf-generate":
            runners.append(HFRunner(name, target, config))
        elif name.startswith("hf-assisted"):
            if drafters.get(name) is None:
                raise ValueError(f"{name} needs a drafter model (CLI: --drafter PATH)")
            runners.append(HFRunner(name, target, config, drafters[name], methods.get("ar").draft_length(options),
                                    packed=packed_linears(name, target, drafters[name])))
        elif name.startswith("hf-lookup"):
            lookup = methods.get("lookup")
            runners.append(HFRunner(name, target, config, lookup=dict(
                prompt_lookup_num_tokens=lookup.draft_length(options), max_matching_ngram_size=lookup.ngram),
                packed=packed_linears(name, target)))
        else:
            spec = methods.build(name, target, tokenizer, drafters.get(name), options)
            reference = BASELINE
            if spec.model is not target:
                reference = own_references.get(id(spec.model))
                if reference is None:
                    reference = own_references[id(spec.model)] = f"{BASELINE}[{name}]"
                    runners.append(HFRunner(reference, spec.model, config, reference=reference))
            runners.append(SpecDiffRunner(name, spec, config, methods.generate_options(spec.model, config), reference))
    return runners


# --- the run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchSettings:
    repeats: int = 3
    warmup: int = 1  # untimed runs of every method on the first prompt

    def __post_init__(self):
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass
class BenchRun:
    """outputs[method][repeat][prompt] = one TurnOutput per turn."""

    prompts: list[BenchPrompt]
    config: DecodingConfig
    settings: BenchSettings
    outputs: dict[str, list[list[list[TurnOutput]]]]
    references: dict[str, str] = field(default_factory=dict)  # runner -> its reference runner (default hf-generate)
    failures: dict[str, str] = field(default_factory=dict)  # runner -> the error that left it out of the run
    interrupted: str | None = None  # what an interruption (Ctrl-C, `timeout -s INT`) cut, when one did


def converse(runner: Runner, prompt: BenchPrompt, conversation: Conversation) -> list[TurnOutput]:
    conversation.reset()
    outputs = []
    for turn in prompt.turns:
        ids = conversation.prompt_ids(turn)
        output = runner.run(ids)
        output.text = conversation.add_reply(ids, output.token_ids)
        outputs.append(output)
    return outputs


def run_bench(runners: list[Runner], prompts: list[BenchPrompt], conversation: Conversation,
              config: DecodingConfig, settings: BenchSettings = BenchSettings(), progress: bool = True) -> BenchRun:
    """Every runner answers every prompt, `settings.repeats` times, after the warm-up.

    One method that raises is left out (its error in `failures`, the traceback on stderr) and the others
    go on; a reference runner that raises ends the run, since nothing can be compared without it. An
    interruption (KeyboardInterrupt) keeps what is complete: the finished repeats, or in the first repeat
    the prompts every method has answered; with nothing complete it propagates."""
    live = list(runners)
    outputs = {runner.name: [[] for _ in range(settings.repeats)] for runner in runners}
    references = {runner.name: getattr(runner, "reference", BASELINE) for runner in runners}
    failures: dict[str, str] = {}

    def answer(runner: Runner, prompt: BenchPrompt) -> list[TurnOutput] | None:
        try:
            return converse(runner, prompt, conversation)
        except Exception as error:  # noqa: BLE001 (one method's bug must not cost the others' numbers)
            if runner.name in references.values():
                raise
            failures[runner.name] = f"{type(error).__name__}: {error}"
            tqdm.write(f"{runner.name} failed and is left out of this run:\n{traceback.format_exc()}", file=sys.stderr)
            live.remove(runner)
            del outputs[runner.name]
            return None

    total = len(runners) * (settings.warmup + settings.repeats * len(prompts))
    repeat = done = 0  # done: prompts of the current repeat answered by every live runner
    with tqdm(total=total, desc="bench", unit="answer", disable=not progress) as bar:
        try:
            for _ in range(settings.warmup):
                for runner in list(live):
                    answer(runner, prompts[0])
                    bar.update()
            for repeat in range(settings.repeats):
                for done, prompt in enumerate(prompts):
                    for runner in list(live):
                        bar.set_postfix_str(f"repeat {repeat + 1}/{settings.repeats} {runner.name}")
                        reply = answer(runner, prompt)
                        if reply is not None:
                            outputs[runner.name][repeat].append(reply)
                        bar.update()
                done = 0
        except KeyboardInterrupt:
            if repeat == 0 and done == 0:
                raise
            if repeat > 0:  # keep the finished repeats
                cut = f"interrupted in repeat {repeat + 1}: kept the {repeat} finished"
                outputs = {name: runs[:repeat] for name, runs in outputs.items()}
            else:  # keep the prompts every method answered
                cut = f"interrupted after {done} of {len(prompts)} prompts: kept those"
                prompts = prompts[:done]
                outputs = {name: [runs[0][:done]] for name, runs in outputs.items()}
            settings = dataclasses.replace(settings, repeats=max(repeat, 1))
            tqdm.write(f"bench {cut}", file=sys.stderr)
            return BenchRun(prompts, config, settings, outputs, {n: references[n] for n in outputs}, failures, cut)
    return BenchRun(prompts, config, settings, outputs, {n: references[n] for n in outputs}, failures)
