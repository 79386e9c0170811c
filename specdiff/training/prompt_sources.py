"""Prompts for distillation data that are not benchmarks (issue 15, part 1).

Four sources, each written here or read from files already on the machine:
- `topic`: a seed request ("Write one question a curious user might ask about tides.") that the
  target answers first; its answer becomes the user's message (`Prompt.self_written`);
- `docstring`: a stdlib function's docstring turned into a coding request;
- `document`: a paragraph of local documentation (stdlib, site-packages READMEs and METADATA,
  /usr/share/doc) turned into a summarisation, question, translation or rewrite request;
- `arithmetic`: templated word problems with random numbers.

Benchmark prompts must never leak into training data, or every benchmark number measures
memorisation: no path under a benchmark-looking name or /work/shared/data is read (`is_banned`),
and every file read goes through `_read_text`, so a test can audit it.
`build_prompts(n, seed)` is a pure function of (n, seed) and the files on the machine.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from specdiff.zoo.corpus import stdlib_files, stdlib_root

_BANNED_PARTS = ("spec_bench", "spec-bench", "specbench", "mt_bench", "mt-bench", "mtbench", "humaneval",
                 "human_eval", "human-eval", "gsm8k", "/work/shared/data")
_NOT_PROSE_NAMES = ("license", "licence", "copying", "copyright", "changelog", "changes", "news", "authors",
                    "record", "entry_points", "top_level", "requirements", "wheel", "installer", "sbom")


@dataclass(frozen=True)
class Prompt:
    """One user request and where it came from. `self_written`: `text` is a seed request; the
    target's reply to it is the request that gets answered (its question about the topic)."""

    text: str
    kind: str  # topic | docstring | document | arithmetic
    origin: str  # the topic, or the file (and function) it was drawn from
    template: str
    self_written: bool = False

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"Prompt.kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if not self.text.strip():
            raise ValueError("Prompt.text is empty")

    def as_dict(self) -> dict:
        return asdict(self)


SOURCE_KINDS = ("topic", "docstring", "document", "arithmetic")


@dataclass(frozen=True)
class PromptMix:
    """Share of each source kind in a plan; the shares are normalised."""

    topic: float = 0.35
    docstring: float = 0.25
    document: float = 0.25
    arithmetic: float = 0.15

    def __post_init__(self):
        shares = [getattr(self, kind) for kind in SOURCE_KINDS]
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"PromptMix shares must be >= 0 with a positive sum, got {shares}")

    def counts(self, n: int) -> dict[str, int]:
        """Exactly `n` prompts split by share (largest remainders)."""
        total = sum(getattr(self, kind) for kind in SOURCE_KINDS)
        exact = {kind: n * getattr(self, kind) / total for kind in SOURCE_KINDS}
        counts = {kind: int(share) for kind, share in exact.items()}
        by_remainder = sorted(SOURCE_KINDS, key=lambda kind: counts[kind] - exact[kind])
        for kind in by_remainder[: n - sum(counts.values())]:
            counts[kind] += 1
        return counts


TOPICS = (
    # everyday life
    "cooking pasta", "baking bread", "houseplants", "budgeting a monthly salary", "saving for retirement",
    "learning to ride a bicycle", "training a puppy", "caring for a cat", "running a first marathon",
    "getting better sleep", "packing for a trip", "planning a birthday party", "writing a cover letter",
    "preparing for a job interview", "renting an apartment", "fixing a leaking tap", "composting",
    "recycling plastics", "buying a used car", "learning a second language", "time management",
    "making coffee", "growing tomatoes", "public speaking", "first aid for burns", "choosing running shoes",
    "meal planning for a week", "hiking safety", "camping in the rain", "moving to a new city",
    # science and nature
    "black holes", "photosynthesis", "plate tectonics", "the water cycle", "vaccines", "the immune system",
    "DNA replication", "climate change", "volcanoes", "ocean tides", "the phases of the moon", "rainbows",
    "electric circuits", "magnets", "nuclear fusion", "the speed of light", "evolution by natural selection",
    "honeybees", "coral reefs", "dinosaurs", "the periodic table", "chemical bonds", "antibiotics",
    "the human heart", "how the brain stores memories", "solar panels", "wind turbines", "earthquakes",
    "the greenhouse effect", "Mars exploration", "gravity", "sound waves", "batteries", "bird migration",
    # history, society and the arts
    "the Roman Empire", "the printing press", "the Industrial Revolution", "ancient Egypt", "the Silk Road",
    "democracy", "inflation", "supply and demand", "the stock market", "impressionist painting",
    "writing a short story", "writing a haiku", "poetry forms", "film editing", "jazz music",
    "learning the guitar", "chess openings", "the Olympic Games", "world religions", "map projections",
    # computing and coding
    "Python lists and dictionaries", "recursion", "sorting algorithms", "binary search", "hash tables",
    "regular expressions", "unit testing", "Git branches", "SQL joins", "REST APIs", "JSON parsing",
    "object-oriented programming", "Python decorators", "Python generators", "asynchronous programming",
    "reading CSV files in Python", "command-line tools", "debugging a program", "memory leaks",
    "computer networks", "encryption", "passwords and security", "operating systems", "compilers",
    "machine learning", "linked lists", "graph algorithms", "dynamic programming", "Linux shell scripting",
    "web page layout with CSS", "JavaScript promises", "writing clean code", "code review", "Big-O notation",
    # mathematics
    "prime numbers", "fractions", "percentages", "probability", "the Pythagorean theorem", "compound interest",
    "linear equations", "quadratic equations", "statistics and averages", "geometry of circles",
    "logarithms", "derivatives", "integrals", "matrices", "number bases", "unit conversion",
)

_TOPIC_TEMPLATES = (
    "Write one question a curious user might ask about {topic}. Reply with the question only.",
    "Write one request that a student might send to an AI assistant about {topic}. Reply with the request only.",
    "Write one practical task a user might ask an assistant to help with, involving {topic}. "
    "Reply with the task only.",
    "Write one question a beginner might ask about {topic}. Reply with the question only.",
    "Write one instruction asking an assistant to explain something specific about {topic}. "
    "Reply with the instruction only.",
)


def is_banned(path: str | Path) -> bool:
    """True for anything that could be a benchmark's file: never read, never a prompt source."""
    text = str(path).lower()
    return any(part in text for part in _BANNED_PARTS)


def _read_text(path: Path) -> str:
    """The one place this module reads a file (tests audit it)."""
    if is_banned(path):
        raise ValueError(f"refusing to read {path}: benchmark data must not become training prompts")
    return path.read_text(encoding="utf-8", errors="replace")


def topic_prompts(n: int, rng: random.Random) -> list[Prompt]:
    pairs = [(topic, template) for topic in TOPICS for template in _TOPIC_TEMPLATES]
    rng.shuffle(pairs)
    # More prompts than pairs: the same seed request again, answered by a new sample of the target.
    chosen = [pairs[i % len(pairs)] for i in range(n)]
    return [Prompt(template.format(topic=topic), "topic", topic, template, self_written=True)
            for topic, template in chosen]


_DOCSTRING_TEMPLATES = (
    "Write a Python function `{name}` that does the following: {sentence}",
    "Implement `{name}` in Python. Its docstring says: \"{sentence}\" Include a short example of its use.",
    "Write a Python function named {name}. Here is what it should do: {sentence} Explain your code briefly.",
)
_FIRST_SENTENCE = re.compile(r"^(.{20,220}?[.!?])(\s|$)", re.S)


def _docstring_sentence(node: ast.AST) -> str | None:
    """First sentence of a public function's docstring, if it reads as prose."""
    doc = ast.get_docstring(node, clean=True)
    if not doc:
        return None
    match = _FIRST_SENTENCE.match(" ".join(doc.split("\n\n")[0].split()))
    if match is None:
        return None
    sentence = match.group(1)
    # Skip signatures ("f(x) -> y"), doctests and markup-heavy text.
    if sentence[0].islower() or ">>>" in sentence or "->" in sentence or sum(c in "`:*|=" for c in sentence) > 4:
        return None
    return sentence


def docstring_candidates(files: list[Path] | None = None) -> list[tuple[str, str]]:
    """(origin "file::function", first sentence) for public stdlib functions with prose docstrings."""
    root = stdlib_root()
    files = files if files is not None else [f for f in stdlib_files() if "test" not in f.relative_to(root).parts[0]]
    found = []
    for path in files:
        try:
            tree = ast.parse(_read_text(path))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                sentence = _docstring_sentence(node)
                if sentence is not None:
                    found.append((f"{_relative(path)}::{node.name}", sentence))
    return found


def docstring_prompts(n: int, rng: random.Random, candidates: list[tuple[str, str]]) -> list[Prompt]:
    if not candidates:
        raise ValueError("no stdlib docstrings found for docstring prompts")
    chosen = rng.sample(candidates, n) if n <= len(candidates) else [rng.choice(candidates) for _ in range(n)]
    prompts = []
    for origin, sentence in chosen:
        template = rng.choice(_DOCSTRING_TEMPLATES)
        name = origin.rsplit("::", 1)[1]
        prompts.append(Prompt(template.format(name=name, sentence=sentence), "docstring", origin, template))
    return prompts


_DOCUMENT_TEMPLATES = (
    "Summarise the following paragraph in two or three sentences.\n\n{paragraph}",
    "Read this paragraph and answer: what is its main point, and who would find it useful?\n\n{paragraph}",
    "Here is a paragraph from some documentation:\n\n{paragraph}\n\nWhich terms in it would a beginner need "
    "explained? Explain each in one sentence.",
    "{paragraph}\n\nWrite three questions that this paragraph answers, each followed by its answer.",
    "Translate the following paragraph into French.\n\n{paragraph}",
    "Translate the following paragraph into Spanish.\n\n{paragraph}",
    "Translate the following paragraph into German.\n\n{paragraph}",
    "Rewrite the following paragraph in plain language for someone new to the subject.\n\n{paragraph}",
    "Rewrite the following paragraph as a short bulleted list of its key points.\n\n{paragraph}",
)


def document_files() -> list[Path]:
    """Local prose: stdlib and site-packages .rst/.txt/.md and METADATA files, and /usr/share/doc."""
    roots = sorted({Path(sysconfig.get_paths()[key]) for key in ("stdlib", "purelib")} | {Path("/usr/share/doc")})
    files = set()
    for root in roots:
        if not root.is_dir():
            continue
        for pattern in ("*.rst", "*.txt", "*.md", "METADATA"):
            files.update(path for path in root.rglob(pattern) if _is_prose_file(path))
    return sorted(files)


def _is_prose_file(path: Path) -> bool:
    name = path.name.lower()
    if is_banned(path) or any(word in name for word in _NOT_PROSE_NAMES) or "test" in path.parts[-2].lower():
        return False
    try:
        return 500 < path.stat().st_size < 2_000_000
    except OSError:
        return False


def paragraphs(text: str, min_chars: int = 240, max_chars: int = 1200) -> list[str]:
    """Blank-line separated blocks that read as prose: mostly letters, no code or markup lines."""
    found = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or any(line.startswith(("..", ">>>", "$ ", "|", "+-", "#", "```", "    ", ":")) for line in lines):
            continue
        paragraph = " ".join(lines)
        if not min_chars <= len(paragraph) <= max_chars or "http" in paragraph:
            continue
        letters = sum(c.isalpha() or c.isspace() for c in paragraph)
        if letters / len(paragraph) > 0.9 and paragraph.count(". ") >= 1:
            found.append(paragraph)
    return found


def document_prompts(n: int, rng: random.Random, files: list[Path]) -> list[Prompt]:
    # Draw a folder, then a paragraph in it: one package's hundreds of release notes would
    # otherwise be most of the pool.
    by_folder: dict[Path, list[tuple[Path, str]]] = {}
    for path in files:
        for paragraph in paragraphs(_read_text(path)):
            by_folder.setdefault(path.parent, []).append((path, paragraph))
    if not by_folder:
        raise ValueError("no documentation paragraphs found for document prompts")
    folders = sorted(by_folder)
    prompts, used = [], set()
    for _ in range(n):
        for _attempt in range(20):  # prefer an unused paragraph; a small pool repeats some
            path, paragraph = rng.choice(by_folder[rng.choice(folders)])
            if paragraph not in used:
                break
        used.add(paragraph)
        template = rng.choice(_DOCUMENT_TEMPLATES)
        prompts.append(Prompt(template.format(paragraph=paragraph), "document", str(path), template))
    return prompts


_ARITHMETIC_TEMPLATES = (
    "A shop sells notebooks at {a} dollars each. Sam buys {b} notebooks and pays with a {c}-dollar bill. "
    "How much change does Sam get? Explain step by step.",
    "A train travels at {a} km per hour for {b} hours, then at {c} km per hour for 2 hours. "
    "How far does it travel in total? Show your reasoning.",
    "Lena has {c} stickers. She gives {a} to her brother and then buys {b} packs of 5 stickers. "
    "How many stickers does she have now? Think step by step.",
    "A recipe needs {a} grams of flour for {b} cookies. How much flour is needed for {c} cookies? "
    "Work it out step by step.",
    "A garden is {a} metres long and {b} metres wide. A path 1 metre wide runs around the outside. "
    "What is the area of the path? Explain your steps.",
    "A jacket costs {c} dollars. It is discounted by {a} percent, and then a tax of {b} percent is added "
    "to the discounted price. What is the final price? Show the calculation.",
    "There are {c} students in a school. {a} percent of them walk to school and {b} of the rest take the bus. "
    "How many students neither walk nor take the bus? Reason step by step.",
    "Tom reads {a} pages a day. His book has {c} pages and he has already read {b} pages. "
    "How many more days does he need to finish it? Explain.",
)


def arithmetic_prompts(n: int, rng: random.Random) -> list[Prompt]:
    prompts = []
    for _ in range(n):
        template = rng.choice(_ARITHMETIC_TEMPLATES)
        a, b = rng.randint(2, 30), rng.randint(2, 12)
        c = rng.randint(max(a * b, 40), 400)
        prompts.append(Prompt(template.format(a=a, b=b, c=c), "arithmetic", f"template-{_ARITHMETIC_TEMPLATES.index(template)}",
                              template))
    return prompts


def build_prompts(n: int, seed: int = 0, mix: PromptMix = PromptMix(),
                  stdlib_sources: list[Path] | None = None, docs: list[Path] | None = None) -> list[Prompt]:
    """`n` prompts from the four sources in `mix`, shuffled so that any prefix mixes every source.

    `stdlib_sources` / `docs` override the files read (tests use a few); default: the whole machine.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts = mix.counts(n)
    rng = random.Random(seed)
    prompts = topic_prompts(counts["topic"], rng) + arithmetic_prompts(counts["arithmetic"], rng)
    if counts["docstring"]:
        prompts += docstring_prompts(counts["docstring"], rng, docstring_candidates(stdlib_sources))
    if counts["document"]:
        prompts += document_prompts(counts["document"], rng, docs if docs is not None else document_files())
    rng.shuffle(prompts)
    return prompts


def _relative(path: Path) -> str:
    try:
        return path.relative_to(stdlib_root()).as_posix()
    except ValueError:
        return str(path)
