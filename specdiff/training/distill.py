"""Distillation data: the target's own replies to non-benchmark prompts, stored as token ids.

Every prompt (`prompt_sources.build_prompts`) is answered twice through the target's chat template:
greedy, and sampled at `temperature` / `top_p`. Both rows decode in one batch (left padding, a row
leaving the batch at its EOS: `generate_rows`).

Layout of an output directory (append-only, resumable):
    plan.jsonl.gz          line 1: the DistillConfig; then one prompt per line (fixed at the first run)
    plan-K.jsonl.gz        a part added later (`run(..., extend=True)`): line 1 its config and where
                           its batches start; its batches follow every earlier part's
    shards/batch-NNNNN.npz one per batch of prompts, written atomically (temp file + os.replace)
    manifest.json          counts, tokens, sources, versions, throughput; rewritten after each shard
A shard holds uint16 token ids (vocabularies up to 65,536) and a JSON list of per-record metadata.
A rerun with the same settings skips the batches whose shard exists, so an interrupted run loses
at most the batch in flight. Hidden states are not stored: `teacher_hidden_states` recomputes them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from specdiff import hf_compat
from specdiff.sampling import SamplingSettings
from specdiff.training.prompt_sources import (LIST_REQUEST, RELATED_REQUEST, SOURCE_KINDS, SUBJECT_DOMAINS, Prompt,
                                              PromptMix, build_prompts, parse_list)
from specdiff.vocab import frequent_tokens

PLAN_FILE = "plan.jsonl.gz"
MANIFEST_FILE = "manifest.json"
SHARD_DIR = "shards"
HELDOUT_PERCENT = 5
_DTYPES = ("float32", "bfloat16", "float16")
# Names the decoding loop in each record. Records without it (the first shards of the smollm2 run)
# came from `model.generate` with the greedy rows pinned to their argmax: the same distribution.
# Records of "... at EOS)" drew a token for every row (greedy rows then took their argmax) from the
# full-vocabulary warp: the same law, other random draws than the nucleus sampler that came after it.
DECODER = "distill.generate_rows (rows leave the batch at EOS; top-p nucleus of the 1024 best)"


@dataclass(frozen=True)
class DistillConfig:
    """One data run. Every field is fixed by the first run in a directory; a resume must match it."""

    target: str
    prompts: int
    dtype: str = "bfloat16"
    max_new_tokens: int = 256
    batch_size: int = 16  # prompts per batch; each gives a greedy and a sampled row
    temperature: float = 0.7
    top_p: float = 0.95
    question_temperature: float = 0.8  # the target writing its own question about a topic
    question_max_new_tokens: int = 64
    seed: int = 0
    # Shares of each prompt source (PromptMix fields); None: PromptMix.FOUR_SOURCES, the first plan's.
    mix: dict | None = None
    passage_max_new_tokens: int = 320  # a text the target writes first (to translate, to summarise)

    def __post_init__(self):
        if self.mix is not None:  # every kind spelled out (0 where not named); unknown kinds or bad shares fail
            object.__setattr__(self, "mix", PromptMix(**{**dict.fromkeys(SOURCE_KINDS, 0.0), **self.mix}).as_dict())
        for name in ("prompts", "max_new_tokens", "batch_size", "question_max_new_tokens", "passage_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"DistillConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"DistillConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        for name in ("temperature", "question_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DistillConfig.{name} must be > 0 (greedy rows are always written too)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"DistillConfig.top_p must be in (0, 1], got {self.top_p}")

    @property
    def num_batches(self) -> int:
        return -(-self.prompts // self.batch_size)

    @property
    def prompt_mix(self) -> PromptMix:
        return PromptMix.FOUR_SOURCES if self.mix is None else PromptMix(**self.mix)

    def batch_seed(self, batch_index: int) -> int:
        """The torch seed of one batch: sampling is a pure function of (seed, batch), so resume is exact."""
        return self.seed * 1_000_003 + batch_index


def chat_ids(tokenizer, request: str) -> list[int]:
    """The user's request through the tokenizer's chat template, ending with the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the target's tokenizer has no chat_template; distillation prompts go through it "
                         "(set tokenizer.chat_template to the model's chat format)")
    text = tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def nucleus(logits: torch.Tensor, settings: SamplingSettings,
            k: int = 1024) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The top-p nucleus of each row of logits [N, V] from its k best tokens: (ids [N, k], probs [N, k]),
    probs zero outside the nucleus and not renormalised. The same law as `settings.probs` (transformers'
    TopPLogitsWarper keeps a token while the mass before it is below top_p) without sorting the whole
    vocabulary: a third of the data run's time went to that sort. None when top_p is off or some row's
    nucleus reaches past its k best tokens (the caller then warps the full rows)."""
    if settings.top_p >= 1.0 or settings.top_k:
        return None
    scores = logits.float() / settings.temperature  # [N, V]
    top, ids = scores.topk(min(k, scores.shape[-1]), dim=-1)  # [N, k] descending
    probs = torch.exp(top - torch.logsumexp(scores, dim=-1, keepdim=True))  # [N, k]
    if not bool((probs.sum(dim=-1) >= settings.top_p).all()):
        return None
    before = probs.cumsum(dim=-1) - probs  # [N, k] mass of the better tokens
    return ids, probs.masked_fill(before >= settings.top_p, 0.0)


def _next_tokens(logits: torch.Tensor, greedy: torch.Tensor, settings: SamplingSettings,
                 generator: torch.Generator) -> torch.Tensor:
    """logits [N, V], greedy [N] bool -> the next token of each row [N]: argmax, or a warped draw for
    the sampled rows only."""
    tokens = logits.argmax(dim=-1)  # [N]
    drawn = (~greedy).nonzero().squeeze(1)  # [D]
    if len(drawn):
        rows = logits[drawn]  # [D, V]
        found = nucleus(rows, settings)
        if found is None:
            tokens[drawn] = torch.multinomial(settings.probs(rows), 1, generator=generator).squeeze(1)
        else:
            ids, probs = found
            tokens[drawn] = ids.gather(1, torch.multinomial(probs, 1, generator=generator)).squeeze(1)
    return tokens


@torch.no_grad()
def generate_rows(model, tokenizer, prompts: list[list[int]], greedy: list[bool], temperature: float,
                  top_p: float, max_new_tokens: int, seed: int) -> list[list[int]]:
    """Batched decoding of left-padded prompts; each reply ends with its first EOS.

    Not `model.generate`: that keeps a finished row in the batch until the longest reply ends, and
    at one CPU thread a forward costs about linearly in rows (measured: 68 vs 63 tokens/s with 32 vs
    64 rows). SmolLM2's replies average ~148 of 256 tokens, so ~40% of generate's row-steps were
    finished rows; here a row leaves the batch and its cache (`batch_select_indices`) at its EOS
    (measured: 30 -> 40-60 tokens/s on the same shared machine). Greedy rows take the raw argmax; sampled
    rows draw from `nucleus` (a batch of 16 topic prompts: 28 -> 17 s, 2 threads, bf16)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    width = max(len(ids) for ids in prompts)
    device = model.device
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)  # [B, P]
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]: left padding shifts each row
    settings = SamplingSettings(temperature=temperature, top_p=top_p)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    cache = hf_compat.new_cache(model)
    live = torch.arange(len(prompts))  # [N] the prompt of each row still decoding
    is_greedy = torch.tensor(greedy)
    replies: list[list[int]] = [[] for _ in prompts]
    logits = hf_compat.forward(model, input_ids, cache, attention_mask, positions).logits[:, -1]  # [B, V]
    next_position = positions[:, -1:] + 1  # [B, 1]
    for step in range(max_new_tokens):
        tokens = _next_tokens(logits.float().cpu(), is_greedy[live], settings, generator)  # [N]
        for row, token in zip(live.tolist(), tokens.tolist()):
            replies[row].append(token)
        going = tokens != eos
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)  # [N']
            cache.batch_select_indices(keep.to(device))
            live, tokens = live[keep], tokens[keep]
            attention_mask, next_position = attention_mask[keep.to(device)], next_position[keep.to(device)]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(live), 1)], dim=1)  # [N, P + t]
        logits = hf_compat.forward(model, tokens[:, None].to(device), cache, attention_mask,
                                   next_position).logits[:, -1]  # [N, V]
        next_position = next_position + 1
    return replies


_QUOTED = re.compile(r'"([^"]{12,})"?')
_LABEL = re.compile(r"^(question|request|task|instruction)\s*\d*\s*[:.)-]\s*", re.I)


def _clean_question(text: str) -> str:
    """The target's question about a topic, without a preamble ('The user will ask, "...'), quotes or label."""
    quoted = _QUOTED.search(text)
    if quoted is not None and quoted.start() < 60:
        text = quoted.group(1)
    lines = [_LABEL.sub("", line.strip()).strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return lines[0] if lines else ""


def _clean_passage(text: str) -> str:
    """A text the target wrote to be worked on, without a label line ('Here is the translation:')."""
    lines = text.strip().splitlines()
    if len(lines) > 1 and lines[0].rstrip().endswith(":") and len(lines[0]) < 80:
        lines = lines[1:]
    return "\n".join(lines).strip()


def write_requests(model, tokenizer, prompts: list[Prompt], config: DistillConfig, seed: int) -> list[str]:
    """The user messages of a batch. A self-written prompt's seed request is answered first (sampled):
    a question (first line of a short reply) or, with `reply_template`, a whole text put into it."""
    requests = [prompt.text for prompt in prompts]
    for written, budget in ((False, config.question_max_new_tokens), (True, config.passage_max_new_tokens)):
        asked = [i for i, prompt in enumerate(prompts) if prompt.self_written and bool(prompt.reply_template) == written]
        if not asked:
            continue
        seeds = [chat_ids(tokenizer, prompts[i].text) for i in asked]
        replies = generate_rows(model, tokenizer, seeds, [False] * len(asked), config.question_temperature,
                                config.top_p, budget, seed ^ (written << 40))
        for i, reply in zip(asked, replies):
            text = tokenizer.decode(reply, skip_special_tokens=True)
            if written:
                passage = _clean_passage(text)
                requests[i] = prompts[i].reply_template.format(reply=passage) if passage else prompts[i].text
            else:
                requests[i] = _clean_question(text) or prompts[i].text
    return requests


def list_subjects(model, tokenizer, config: DistillConfig, domains: Sequence[str] = SUBJECT_DOMAINS,
                  related: int = 2, max_new_tokens: int = 160) -> list[tuple[str, str]]:
    """(domain, subject) pairs the target lists itself, sampled at `question_temperature`: each domain
    is asked twice for well-known items (`LIST_REQUEST`), then for topics related to `related` of each
    domain's items (`RELATED_REQUEST`). Deterministic for a config's seed on one machine; the plan
    keeps the prompts made from them, so a resume never lists again."""
    seed = config.seed * 1_000_003 - 1  # batch seeds are seed * 1_000_003 + batch >= 0: never this one
    found: dict[str, tuple[str, str]] = {}

    def ask(requests: list[tuple[str, str]], round_seed: int) -> None:
        rows = generate_rows(model, tokenizer, [chat_ids(tokenizer, text) for _, text in requests],
                             [False] * len(requests), config.question_temperature, config.top_p, max_new_tokens,
                             round_seed)
        for (domain, _), row in zip(requests, rows):
            for item in parse_list(tokenizer.decode(row, skip_special_tokens=True)):
                if item.casefold() not in found and item.casefold() != domain.casefold():
                    found[item.casefold()] = (domain, item)

    ask([(domain, LIST_REQUEST.format(domain=domain)) for domain in domains for _ in range(2)], seed)
    rng = random.Random(seed)
    by_domain: dict[str, list[str]] = {domain: [] for domain in domains}
    for domain, item in found.values():
        by_domain[domain].append(item)
    picks = [(domain, item) for domain, items in by_domain.items()
             for item in rng.sample(items, min(related, len(items)))]
    ask([(domain, RELATED_REQUEST.format(subject=item)) for domain, item in picks], seed - 1)
    return list(found.values())


def distill_batch(model, tokenizer, prompts: list[Prompt], first_index: int, batch_index: int,
                  config: DistillConfig) -> dict:
    """Greedy and sampled replies to one batch of prompts: {"prompt_ids", "response_ids", "records"}."""
    seed = config.batch_seed(batch_index)
    requests = write_requests(model, tokenizer, prompts, config, seed)
    prompt_ids = [chat_ids(tokenizer, request) for request in requests]
    rows = prompt_ids + prompt_ids
    greedy = [True] * len(prompts) + [False] * len(prompts)
    replies = generate_rows(model, tokenizer, rows, greedy, config.temperature, config.top_p,
                            config.max_new_tokens, seed)
    records = []
    for row, is_greedy in enumerate(greedy):
        prompt = prompts[row % len(prompts)]
        mode = {"mode": "greedy"} if is_greedy else {
            "mode": "sampled", "temperature": config.temperature, "top_p": config.top_p, "seed": seed}
        records.append({
            "prompt_index": first_index + row % len(prompts), **prompt.as_dict(),
            "request": requests[row % len(prompts)], **mode, "dtype": config.dtype, "decoder": DECODER,
            "finished": bool(replies[row]) and replies[row][-1] == tokenizer.eos_token_id,
        })
    return {"prompt_ids": rows, "response_ids": replies, "records": records}


# ---- storage ---------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable) -> None:
    """Write through a temp file and os.replace, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _concat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(row) for row in rows], dtype=np.int32)
    flat = np.fromiter((t for row in rows for t in row), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and flat.max() > np.iinfo(np.uint16).max:
        raise ValueError("token id above 65535: this store keeps uint16 ids")
    return flat.astype(np.uint16), lengths


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def shard_path(out_dir: Path, batch_index: int) -> Path:
    return out_dir / SHARD_DIR / f"batch-{batch_index:05d}.npz"


def write_shard(out_dir: Path, batch_index: int, batch: dict, seconds: float) -> None:
    prompt_flat, prompt_lengths = _concat(batch["prompt_ids"])
    response_flat, response_lengths = _concat(batch["response_ids"])
    meta = json.dumps({"batch": batch_index, "seconds": round(seconds, 3), "records": batch["records"]})
    arrays = dict(prompt_ids=prompt_flat, prompt_lengths=prompt_lengths, response_ids=response_flat,
                  response_lengths=response_lengths, meta=np.array(meta))
    _atomic_write(shard_path(out_dir, batch_index), lambda handle: np.savez_compressed(handle, **arrays))


def read_shard(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """(prompt ids, response ids, shard meta) of one shard; ids are uint16 arrays."""
    with np.load(path) as shard:
        prompts = _split(shard["prompt_ids"], shard["prompt_lengths"])
        responses = _split(shard["response_ids"], shard["response_lengths"])
        return prompts, responses, json.loads(str(shard["meta"]))


def completed_batches(out_dir: Path) -> list[int]:
    return sorted(int(path.stem.split("-")[1]) for path in (out_dir / SHARD_DIR).glob("batch-*.npz"))


@dataclass(frozen=True)
class PlanPart:
    """One `specdiff train data` plan in a directory: its config, prompts and where its batches start.
    Part 0 is `plan.jsonl.gz`; a part added later (`extend`) numbers its batches after every earlier one's."""

    index: int
    config: DistillConfig
    prompts: list
    first_batch: int = 0
    first_prompt: int = 0

    @property
    def path_name(self) -> str:
        return plan_file(self.index)

    @property
    def batches(self) -> range:
        return range(self.first_batch, self.first_batch + self.config.num_batches)


def plan_file(part: int) -> str:
    return PLAN_FILE if part == 0 else f"plan-{part}.jsonl.gz"


def _saved_config(saved: dict) -> DistillConfig:
    """A config as a plan stored it; fields added since take their defaults (the run used them)."""
    defaults = {f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING}
    return DistillConfig(**{**defaults, **saved})


def read_plan(out_dir: Path) -> list[PlanPart]:
    """Every part of the directory's plan, in order (empty when there is none yet)."""
    parts = []
    while True:
        index = len(parts)
        path = out_dir / plan_file(index)
        if not path.exists():
            return parts
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            head = json.loads(handle.readline())
            prompts = [Prompt(**json.loads(line)) for line in handle]
        parts.append(PlanPart(index, _saved_config(head["config"]), prompts, head.get("first_batch", 0),
                              head.get("first_prompt", 0)))


def open_plan(out_dir: Path, config: DistillConfig, build: Callable[[], list[Prompt]],
              extend: bool = False) -> PlanPart:
    """The part of the plan that `config` runs: the saved one with these settings (a resume), the
    first one (a new directory), or, with `extend`, a new part after the others (when they are done)."""
    parts = read_plan(out_dir)
    for part in parts:
        if part.config == config:
            return part
    if parts and not extend:
        saved = asdict(parts[-1].config)
        changed = {k: f"{saved.get(k)!r} -> {v!r}" for k, v in asdict(config).items() if saved.get(k) != v}
        raise ValueError(f"{out_dir} holds a run with other settings ({changed}); rerun with the saved settings "
                         "to resume, pick another output directory, or add these prompts to it as a new part "
                         "(--extend)")
    done = set(completed_batches(out_dir)) if parts else set()
    unfinished = [part.index for part in parts if not set(part.batches) <= done]
    if unfinished:
        raise ValueError(f"{out_dir}: part {unfinished[0]} of the plan is not finished; resume it (its own "
                         "settings) before adding a part, so that records stay in the order they were planned")
    last = parts[-1] if parts else None
    part = PlanPart(len(parts), config, build(), last.batches.stop if last else 0,
                    last.first_prompt + last.config.prompts if last else 0)
    head = {"config": asdict(config)} | ({"first_batch": part.first_batch, "first_prompt": part.first_prompt}
                                         if part.index else {})
    lines = [json.dumps(head)] + [json.dumps(p.as_dict()) for p in part.prompts]
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / part.path_name,
                  lambda handle: handle.write(gzip.compress(("\n".join(lines) + "\n").encode())))
    return part


def summarize(out_dir: Path) -> dict:
    """The manifest: everything in it is recomputed from the shards and the plan, so it can never drift."""
    import transformers

    parts = read_plan(out_dir)
    records = tokens_prompt = tokens_response = 0
    seconds = 0.0
    by_kind: dict[str, dict[str, int]] = {}
    by_mode: dict[str, int] = {}
    finished = 0
    done = completed_batches(out_dir)
    for batch_index in done:
        prompts, responses, meta = read_shard(shard_path(out_dir, batch_index))
        seconds += meta["seconds"]
        for prompt, response, record in zip(prompts, responses, meta["records"]):
            records += 1
            tokens_prompt += len(prompt)
            tokens_response += len(response)
            kind = by_kind.setdefault(record["kind"], {"records": 0, "response_tokens": 0})
            kind["records"] += 1
            kind["response_tokens"] += len(response)
            by_mode[record["mode"]] = by_mode.get(record["mode"], 0) + 1
            finished += record["finished"]
    first = parts[0].config
    return {
        "format": "specdiff distillation data v1 (see specdiff/training/distill.py)",
        "target": first.target, "dtype": first.dtype, "config": asdict(first),
        "parts": [{"config": asdict(part.config), "batches": [part.batches.start, part.batches.stop],
                   "done": len(set(part.batches) & set(done)), "mix": part.config.prompt_mix.as_dict()}
                  for part in parts],
        "transformers": transformers.__version__, "torch": torch.__version__,
        "batches": {"done": len(done), "planned": sum(part.config.num_batches for part in parts)},
        "records": records, "records_by_mode": by_mode, "sources": by_kind,
        "tokens": {"prompt": tokens_prompt, "response": tokens_response},
        "finished_with_eos": finished,
        "generation_seconds": round(seconds, 1),
        "response_tokens_per_second": round(tokens_response / seconds, 1) if seconds else None,
        "heldout": f"md5 of the prompt ids < {HELDOUT_PERCENT}% (DistillDataset(split='heldout'))",
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_manifest(out_dir: Path) -> dict:
    manifest = summarize(out_dir)
    _atomic_write(out_dir / MANIFEST_FILE, lambda handle: handle.write(json.dumps(manifest, indent=1).encode()))
    return manifest


# ---- the run ---------------------------------------------------------------------------------


class StopRequest:
    """Set by the first SIGINT / SIGTERM: the batch in flight finishes and is written, then the run stops."""

    requested = False


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """First signal: finish the current shard, then stop. A second one interrupts at once."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        tqdm.write(f"signal {signum}: finishing the current batch, then stopping (again to stop now)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class RunResult:
    manifest: dict
    batches_this_run: int
    interrupted: bool


def run(model, tokenizer, out_dir: Path, config: DistillConfig, build: Callable[[], list[Prompt]] | None = None,
        max_batches: int | None = None, progress: bool = True, extend: bool = False) -> RunResult:
    """Generate the missing batches of `config`'s part of `out_dir` (all of them on a first run);
    `max_batches` caps this call. `extend`: settings no part has make a new part (see `open_plan`).

    `build` makes the prompt plan of a new part (default: `build_prompts(config.prompts, config.seed,
    config.prompt_mix)`, with the subjects the target lists when the mix has the subject kind)."""
    out_dir = Path(out_dir)

    def default_build() -> list[Prompt]:
        subjects = None
        if config.prompt_mix.subject:
            tqdm.write("listing subjects: the target names well-known items of "
                       f"{len(SUBJECT_DOMAINS)} domains, then related topics")
            subjects = list_subjects(model, tokenizer, config)
            if not subjects:
                raise ValueError(f"{config.target} listed no subjects (its replies to \"{LIST_REQUEST}\" held no "
                                 "list); choose a mix without the subject kind, e.g. --mix broad")
            tqdm.write(f"{len(subjects)} subjects")
        return build_prompts(config.prompts, config.seed, config.prompt_mix, subjects=subjects)

    part = open_plan(out_dir, config, build or default_build, extend)
    prompts = part.prompts
    if len(prompts) != config.prompts:
        raise ValueError(f"the plan has {len(prompts)} prompts, the config asks for {config.prompts}")
    (out_dir / SHARD_DIR).mkdir(exist_ok=True)
    for stale in (out_dir / SHARD_DIR).glob("*.tmp"):  # a shard that was being written when killed
        stale.unlink()
    done = set(completed_batches(out_dir)) & set(part.batches)
    todo = [b for b in part.batches if b not in done][:max_batches]
    bar = tqdm(total=config.prompts, initial=min(config.prompts, len(done) * config.batch_size), unit="prompt",
               desc="distilling", disable=not progress, mininterval=10)
    started, new_tokens, finished_batches, interrupted = time.perf_counter(), 0, 0, False
    with graceful_stop() as stop:
        try:
            for batch_index in todo:
                if stop.requested:
                    interrupted = True
                    break
                first = (batch_index - part.first_batch) * config.batch_size
                batch_prompts = prompts[first : first + config.batch_size]
                batch_started = time.perf_counter()
                batch = distill_batch(model, tokenizer, batch_prompts, part.first_prompt + first, batch_index, config)
                seconds = time.perf_counter() - batch_started
                write_shard(out_dir, batch_index, batch, seconds)
                write_manifest(out_dir)
                finished_batches += 1
                tokens = sum(len(reply) for reply in batch["response_ids"])
                new_tokens += tokens
                bar.update(len(batch_prompts))
                rate = new_tokens / (time.perf_counter() - started)
                bar.set_postfix(tok_s=f"{rate:.0f}", new_tokens=new_tokens)
                bar.write(f"batch {batch_index}: {len(batch['records'])} records, {tokens} tokens in {seconds:.1f} s "
                          f"({tokens / seconds:.0f} tok/s)")
            interrupted = interrupted or stop.requested and finished_batches < len(todo)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
    return RunResult(write_manifest(out_dir), finished_batches, interrupted)


# ---- loading for training --------------------------------------------------------------------


def is_heldout(prompt_ids: np.ndarray) -> bool:
    """Deterministic ~5% split by the md5 of the prompt's ids: a prompt's greedy and sampled replies
    always land on the same side."""
    digest = hashlib.md5(np.asarray(prompt_ids, dtype=np.uint16).tobytes()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELDOUT_PERCENT


@dataclass(frozen=True)
class DistillRecord:
    prompt_ids: np.ndarray  # [P] uint16, the templated prompt
    response_ids: np.ndarray  # [R] uint16, the target's reply (ends with EOS when `meta["finished"]`)
    meta: dict  # provenance (kind, origin, template, request), mode, temperature, seed, dtype


class DistillDataset(Sequence):
    """The records of a distillation directory, shard by shard; `split`: "all", "train" or "heldout".

    Reads only complete shards, so it is safe while a run is still writing."""

    SPLITS = ("all", "train", "heldout")

    def __init__(self, path: str | Path, split: str = "all"):
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        self.path = Path(path)
        if not (self.path / PLAN_FILE).exists():
            raise FileNotFoundError(f"{self.path} is not a distillation directory (no {PLAN_FILE}); "
                                    "`specdiff train data` makes one")
        self.manifest = json.loads((self.path / MANIFEST_FILE).read_text()) if (self.path / MANIFEST_FILE).exists() else {}
        self.records: list[DistillRecord] = []
        for batch_index in completed_batches(self.path):
            prompts, responses, meta = read_shard(shard_path(self.path, batch_index))
            for prompt, response, record in zip(prompts, responses, meta["records"]):
                if split == "all" or is_heldout(prompt) == (split == "heldout"):
                    self.records.append(DistillRecord(prompt, response, record))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]


@torch.no_grad()
def teacher_hidden_states(model, ids: Sequence[Sequence[int]], layers: Sequence[int],
                          batch_size: int = 8) -> list[torch.Tensor]:
    """The target's hidden states at `layers` for each sequence: a list of [T_i, len(layers), H] tensors
    on the CPU, in the model's dtype. Not stored with the data (30 layers x 576 per token is ~35 kB);
    recompute them for the layers a drafter fuses.

    `layers` index `output_hidden_states`: 0 is the embeddings, i the output of decoder layer i (for
    Llama the last entry is after the final norm). Sequences are batched by length with right
    padding; the causal mask keeps real positions from seeing the pads."""
    num_states = model.config.num_hidden_layers + 1
    if not layers or any(not 0 <= layer < num_states for layer in layers):
        raise ValueError(f"layers must be in [0, {num_states}), got {list(layers)}")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    result: list[torch.Tensor | None] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros(len(chunk), width, dtype=torch.long)  # [B, T]
        for row, i in enumerate(chunk):
            input_ids[row, : len(ids[i])] = torch.as_tensor(np.asarray(ids[i], dtype=np.int64))
            attention_mask[row, : len(ids[i])] = 1
        out = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
                    output_hidden_states=True)
        stacked = torch.stack([out.hidden_states[layer] for layer in layers], dim=2)  # [B, T, L, H]
        for row, i in enumerate(chunk):
            result[i] = stacked[row, : len(ids[i])].cpu()
    return result


def reply_draft_vocab(data: str | Path, count: int, vocab_size: int) -> tuple[torch.Tensor, dict]:
    """The `count` most frequent reply tokens of `data`'s train split, and what a card says of them:
    their share of the held-out replies' tokens (an upper bound on what drafting only them keeps)."""
    train_replies = [record.response_ids for record in DistillDataset(data, "train").records]
    ids = frequent_tokens(train_replies, count, vocab_size)
    return ids, {"source": f"the {len(ids)} most frequent reply tokens of {data} (train split)",
                 "heldout_coverage": heldout_coverage(data, ids)}


def heldout_coverage(data: str | Path, ids: torch.Tensor) -> float | None:
    """The share of `data`'s held-out reply tokens among `ids` (None without held-out records)."""
    heldout = [record.response_ids for record in DistillDataset(data, "heldout").records]
    if not heldout:  # a tiny data set
        return None
    return round(float(np.isin(np.concatenate(heldout), ids.numpy()).mean()), 4)
