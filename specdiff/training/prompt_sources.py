"""Prompts for distillation data that are not benchmarks (issue 15, part 1).

Ten sources, each written here, read from files already on the machine, or listed by the target:
- `topic`: a seed request ("Write one question a curious user might ask about tides.") that the
  target answers first; its answer becomes the user's message (`Prompt.self_written`);
- `docstring`: a stdlib function's docstring turned into a coding request;
- `document`: a paragraph of local documentation (stdlib, site-packages READMEs and METADATA,
  /usr/share/doc) turned into a summarisation, question, translation or rewrite request;
- `arithmetic`: templated word problems with random numbers;
- `passage`: a long stretch of one local document (consecutive paragraphs, 1,500-4,000 characters),
  or a few paragraphs of different documents, with a summarisation or a question about a term in it
  (long inputs whose reply copies from them, as in summarisation and retrieval-augmented answers);
- `writing`: a piece of writing of some form (email, blog post, story, speech...) about a topic;
- `roleplay`: a persona and a task in its voice;
- `translation`: the target first translates a local paragraph into German, French or Spanish; that
  text becomes the request to translate back into English (`Prompt.reply_template`);
- `article`: the target first writes a short news article or report; the request summarises it or
  asks about it;
- `subject`: subjects the target lists itself (well-known items of 56 broad domains, then topics
  related to some of them: `distill.list_subjects`), asked about directly, through the target's own
  question, or through a text it writes first (news story, German paragraph, encyclopedia entry).
The first four are the original plan (`PromptMix.FOUR_SOURCES`, the 4,000 prompts of the first
SmolLM2 data set); the others were added when the drafters' acceptance on long-input, translation
and writing prompts stayed at half its held-out value (BENCHMARKS.md), and `subject` when they
still did (the drafters lacked the benchmarks' content: people, places, events, not their format).

Benchmark prompts must never leak into training data, or every benchmark number measures
memorisation: no path under a benchmark-looking name or /work/shared/data is read (`is_banned`),
and every file read goes through `_read_text`, so a test can audit it.
`build_prompts(n, seed)` is a pure function of (n, seed), the files on the machine and the subjects.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from collections.abc import Sequence
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
    target's reply to it is the request that gets answered: its first line cleaned (its question
    about a topic), or, with `reply_template`, the whole reply put into that template's `{reply}`."""

    text: str
    kind: str  # one of SOURCE_KINDS
    origin: str  # the topic, or the file (and function) it was drawn from
    template: str
    self_written: bool = False
    reply_template: str = ""

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"Prompt.kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if not self.text.strip():
            raise ValueError("Prompt.text is empty")
        if self.reply_template and (not self.self_written or "{reply}" not in self.reply_template):
            raise ValueError("Prompt.reply_template needs self_written=True and a {reply} field")

    def as_dict(self) -> dict:
        return asdict(self)


SOURCE_KINDS = ("topic", "docstring", "document", "arithmetic", "passage", "writing", "roleplay", "translation",
                "article", "subject")


@dataclass(frozen=True)
class PromptMix:
    """Share of each source kind in a plan; the shares are normalised. The defaults are the broad
    mix of every kind; `FOUR_SOURCES` is the first plan's (no long inputs, writing or role-play)."""

    topic: float = 0.16
    docstring: float = 0.14
    document: float = 0.1
    arithmetic: float = 0.08
    passage: float = 0.14
    writing: float = 0.1
    roleplay: float = 0.08
    translation: float = 0.1
    article: float = 0.1
    subject: float = 0.0  # needs the target's own list of subjects (`distill.list_subjects`)

    @classmethod
    def parse(cls, text: str) -> "PromptMix":
        """A preset name (`broad`, `four-sources`) or `kind=share,...` (kinds not named get 0)."""
        presets = {"broad": cls(), "four-sources": cls.FOUR_SOURCES, "subjects": cls.SUBJECTS}
        if text in presets:
            return presets[text]
        shares = dict.fromkeys(SOURCE_KINDS, 0.0)
        for item in text.split(","):
            kind, sep, share = item.partition("=")
            kind = kind.strip()
            if not sep or kind not in shares:
                raise ValueError(f"mix item {item!r}: expected kind=share with kind one of {SOURCE_KINDS}, "
                                 f"or a preset ({', '.join(presets)})")
            try:
                shares[kind] = float(share)
            except ValueError:
                raise ValueError(f"mix item {item!r}: the share must be a number") from None
        return cls(**shares)

    def as_dict(self) -> dict[str, float]:
        return {kind: getattr(self, kind) for kind in SOURCE_KINDS}

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


PromptMix.FOUR_SOURCES = PromptMix(0.35, 0.25, 0.25, 0.15, 0, 0, 0, 0, 0, 0)
# Broad content: subjects the target lists itself, plus the arithmetic and passages the subjects lack.
PromptMix.SUBJECTS = PromptMix(**dict.fromkeys(SOURCE_KINDS, 0.0) | {"subject": 0.8, "arithmetic": 0.1, "passage": 0.1})


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


# ---- long inputs: passages of local documents --------------------------------------------------

_PASSAGE_TEMPLATES = (
    "Summarise the following text in a short paragraph.\n\n{passage}",
    "{passage}\n\nSummarise the text above in three or four sentences.",
    "Read the following document and list its main points.\n\n{passage}",
    "Here is a document:\n\n{passage}\n\nWhat does it say about {term}? Answer using the document.",
    "{passage}\n\nBased on the text above, explain what {term} is and why it matters here.",
    "Answer the question using only the passage below.\n\nPassage:\n{passage}\n\nQuestion: what is said about {term}?",
    "Write a one-paragraph abstract of this text for a reader in a hurry.\n\n{passage}",
)
_SOURCES_TEMPLATES = (
    "Use the documents below to answer the question.\n\n{passage}\n\nQuestion: what do these documents say about "
    "{term}?",
    "{passage}\n\nUsing the documents above, write a short answer about {term}, and say which document it came from.",
)
_STOPWORDS = frozenset(
    "about above after again against because before being below between both could during each either every "
    "first further having itself might other their there these thing those through under until which while "
    "would should where whose within without using based value values example default returns return".split())


def key_term(text: str, rng: random.Random) -> str:
    """A content word the text uses more than once (falls back to its longest word): the subject of a question."""
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{5,}", text)]
    counts: dict[str, int] = {}
    for word in words:
        if word not in _STOPWORDS:
            counts[word] = counts.get(word, 0) + 1
    if not counts:
        return "its subject"
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:5]
    repeated = [w for w in ranked if counts[w] > 1]
    return rng.choice(repeated) if repeated else max(counts, key=len)


def passages(text: str, min_chars: int = 1500, max_chars: int = 4000) -> list[str]:
    """Runs of consecutive prose paragraphs of one text, joined, between min_chars and max_chars."""
    found, run = [], []
    for paragraph in paragraphs(text, min_chars=120, max_chars=max_chars) + [None]:
        if paragraph is None or sum(map(len, run)) + len(paragraph) > max_chars:
            if sum(map(len, run)) >= min_chars:
                found.append("\n\n".join(run))
            run = []
        if paragraph is not None:
            run.append(paragraph)
    return found


def passage_prompts(n: int, rng: random.Random, files: list[Path]) -> list[Prompt]:
    """Two of three: one long passage of a document; one of three: 2-3 paragraphs of different folders,
    numbered as retrieved documents. Both ask for a summary or about a term the text repeats."""
    long_runs: list[tuple[Path, str]] = []
    short: dict[Path, list[tuple[Path, str]]] = {}
    for path in files:
        text = _read_text(path)
        long_runs += [(path, run) for run in passages(text)]
        for paragraph in paragraphs(text):
            short.setdefault(path.parent, []).append((path, paragraph))
    if not short:
        raise ValueError("no documentation paragraphs found for passage prompts")
    folders = sorted(short)
    prompts = []
    for _ in range(n):
        if long_runs and rng.random() < 2 / 3:
            path, passage = rng.choice(long_runs)
            template, origin = rng.choice(_PASSAGE_TEMPLATES), str(path)
        else:
            picked = [rng.choice(short[folder]) for folder in rng.sample(folders, min(len(folders), rng.randint(2, 3)))]
            passage = "\n\n".join(f"Document [{i + 1}]: {text}" for i, (_, text) in enumerate(picked))
            template, origin = rng.choice(_SOURCES_TEMPLATES), " + ".join(str(path) for path, _ in picked)
        text = template.format(passage=passage, term=key_term(passage, rng))
        prompts.append(Prompt(text, "passage", origin, template))
    return prompts


# ---- writing and role-play -----------------------------------------------------------------------

_WRITING_FORMS = (
    "a short blog post", "a persuasive essay of about 200 words", "a short story", "a poem", "a limerick",
    "a product description for an online shop", "a formal email to a colleague", "a friendly letter to a friend",
    "a two-minute speech", "a short newsletter item", "a motivational message", "a social media post",
    "a short dialogue between two friends", "a review", "a set of instructions for a beginner",
    "a travel itinerary for a weekend", "an advertisement", "a short opinion piece",
)
_WRITING_TEMPLATES = (
    "Write {form} about {topic}.",
    "Compose {form} about {topic}. Keep it engaging.",
    "Please write {form} on the subject of {topic}, in a warm and clear tone.",
    "Draft {form} about {topic} for a general audience.",
    "Write {form} about {topic}, then give it a title.",
    "Can you help me write {form} about {topic}? Make it concise.",
)
_PERSONAS = (
    "a pirate captain", "a museum tour guide", "a detective in 1920s London", "a friendly chef", "a personal trainer",
    "a medieval knight", "a patient math tutor", "a travel agent", "a space station commander", "a librarian",
    "a customer support agent", "a sports commentator", "a wise old farmer", "a doctor explaining to a patient",
    "a career coach", "a park ranger", "a famous scientist from history", "a startup founder pitching investors",
    "a news anchor", "a kindergarten teacher", "a stand-up comedian", "a ship's navigator", "a job interviewer",
    "an art critic",
)
_ROLEPLAY_TEMPLATES = (
    "Pretend you are {persona}. Explain {topic} to me in your own style.",
    "Act as {persona}. A visitor asks you about {topic}. What do you say?",
    "You are {persona}. Give me three pieces of advice about {topic}, staying in character.",
    "Imagine you are {persona} and describe a typical day that involves {topic}.",
    "Role-play as {persona}. I will be your guest. Start by greeting me and telling me about {topic}.",
    "Take on the role of {persona} and answer this: what is the most common mistake people make with {topic}?",
)


def writing_prompts(n: int, rng: random.Random) -> list[Prompt]:
    prompts = []
    for _ in range(n):
        template, topic, form = rng.choice(_WRITING_TEMPLATES), rng.choice(TOPICS), rng.choice(_WRITING_FORMS)
        prompts.append(Prompt(template.format(form=form, topic=topic), "writing", f"{form} / {topic}", template))
    return prompts


def roleplay_prompts(n: int, rng: random.Random) -> list[Prompt]:
    prompts = []
    for _ in range(n):
        template, topic, persona = rng.choice(_ROLEPLAY_TEMPLATES), rng.choice(TOPICS), rng.choice(_PERSONAS)
        prompts.append(Prompt(template.format(persona=persona, topic=topic), "roleplay", f"{persona} / {topic}",
                              template))
    return prompts


# ---- texts the target writes first: translations into English, articles to summarise ------------

_LANGUAGES = ("German", "French", "Spanish")
_TRANSLATE_SEED = "Translate the following paragraph into {language}. Reply with the translation only.\n\n{paragraph}"
_TRANSLATE_BACK = (
    "Translate the following {language} text into English.\n\n{{reply}}",
    "Translate this from {language} to English:\n\n{{reply}}",
    "{{reply}}\n\nTranslate the {language} text above into English.",
    "Please translate into English:\n\n{{reply}}",
)
_ARTICLE_SEED = (
    "Write a short news article of about 200 words about {topic}. Reply with the article only.",
    "Write a short magazine report about a recent development in {topic}. Reply with the report only.",
    "Write a short local newspaper story about an event related to {topic}. Reply with the story only.",
)
_ARTICLE_REQUESTS = (
    "Summarise the following article in two or three sentences.\n\n{reply}",
    "{reply}\n\nWrite a one-sentence headline and a short summary of the article above.",
    "Read this article and list its three most important facts.\n\n{reply}",
    "{reply}\n\nWho is this article about, and what happened? Answer briefly.",
)


def translation_prompts(n: int, rng: random.Random, files: list[Path]) -> list[Prompt]:
    pool = [(path, paragraph) for path in files for paragraph in paragraphs(_read_text(path), max_chars=800)]
    if not pool:
        raise ValueError("no documentation paragraphs found for translation prompts")
    prompts = []
    for _ in range(n):
        path, paragraph = rng.choice(pool)
        language = rng.choice(_LANGUAGES)
        back = rng.choice(_TRANSLATE_BACK)
        prompts.append(Prompt(_TRANSLATE_SEED.format(language=language, paragraph=paragraph), "translation", str(path),
                              _TRANSLATE_SEED, self_written=True, reply_template=back.format(language=language)))
    return prompts


def article_prompts(n: int, rng: random.Random) -> list[Prompt]:
    prompts = []
    for _ in range(n):
        seed, topic = rng.choice(_ARTICLE_SEED), rng.choice(TOPICS)
        prompts.append(Prompt(seed.format(topic=topic), "article", topic, seed, self_written=True,
                              reply_template=rng.choice(_ARTICLE_REQUESTS)))
    return prompts


# ---- subjects the target lists itself ------------------------------------------------------------
# The seed topics and local documents give the drafters a narrow world (134 topics, software docs);
# the target knows far more. It lists well-known items of broad domains, then topics related to some
# of them (`distill.list_subjects`); the requests below ask about them the ways users do: questions,
# news stories to summarise, documents to answer from, German text to translate.

SUBJECT_DOMAINS = (
    "countries", "European cities", "Asian cities", "American cities", "rivers and lakes", "mountains and volcanoes",
    "islands", "famous scientists", "famous writers", "painters and artists", "composers and musicians",
    "pop singers and bands", "film directors", "actors and actresses", "athletes", "football clubs",
    "sports and games", "world leaders in history", "kings, queens and emperors", "wars and battles",
    "historical events", "ancient civilisations", "revolutions and independence movements", "companies and brands",
    "inventions", "technologies", "websites and apps", "diseases and medical conditions", "medicines and treatments",
    "foods and dishes", "drinks", "animals", "plants and trees", "chemical elements", "physics concepts",
    "biology concepts", "astronomy topics", "space missions", "economics terms", "political systems and ideas",
    "international organisations", "laws and legal terms", "religions and festivals", "languages", "novels", "films",
    "television series", "musical instruments", "jobs and professions", "news topics of the past decade",
    "natural disasters", "environmental problems", "universities", "famous buildings and monuments",
    "holidays and traditions", "crimes and court cases",
)
LIST_REQUEST = "List 15 well-known {domain}. Write one per line, names only."
RELATED_REQUEST = "List 10 topics closely related to {subject}. Write one per line, names only."
# First words that make an item a piece of a sentence, not a name (seen in part 3's lists: "They are ...").
_NOT_A_NAME = frozenset("i it he she they we you this that these those there here which who whose where".split())
_LIST_ITEM = re.compile(r"^\s*(?:\d+\s*[.)]|[-*\u2022])?\s*(.+?)\s*$")


def parse_list(text: str, max_words: int = 6) -> list[str]:
    """The items of a list the target wrote (numbered, bulleted, or comma-separated on one line),
    descriptions after ':' / ' - ' / '(' cut, sentences, fragments of one (an item that starts with a pronoun:
    "They are kings and queens,", "which stands for ...") and duplicates dropped."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].count(",") >= 2:
        lines = lines[0].split(",")
    items, seen = [], set()
    for line in lines:
        match = _LIST_ITEM.match(line)
        if match is None:  # an empty piece between two commas
            continue
        item = re.split(r":| - | \u2013 |\(", match.group(1))[0]
        item = item.strip(" .,;*\"'")
        item = item.replace("{", "").replace("}", "")
        if not 3 <= len(item) <= 50 or len(item.split()) > max_words or not item[0].isalnum():
            continue
        if item.split()[0].casefold() in _NOT_A_NAME:
            continue
        if item.casefold() not in seen:
            seen.add(item.casefold())
            items.append(item)
    return items


_SUBJECT_QUESTIONS = (
    "What is {subject}?", "Tell me about {subject}.", "Who or what is {subject}? Answer in a short paragraph.",
    "Give me five interesting facts about {subject}.", "Explain {subject} to a high-school student.",
    "Write a short encyclopedia entry about {subject}.", "What is the history of {subject}?",
    "Why is {subject} important? Explain briefly.", "What should everyone know about {subject}?",
    "Compare {subject} and {other}. How are they alike and how do they differ?",
)
_SUBJECT_ASK = ("Write one question that a curious reader might ask about {subject} ({domain}). "
                "Reply with the question only.")
# style: (seed requests the target answers first, requests its text is put into).
_SUBJECT_TEXTS = {
    "news": (("Write a short news report with a headline about {subject}. Reply with the report only.",
      "Write a short newspaper article about a recent event involving {subject}. Reply with the article only."),
     ("Summarize the following news story in a few sentences.\n\n{reply}",
      "{reply}\n\nWrite a one-sentence summary of the article above.",
      "Read this article and list its three most important facts.\n\n{reply}",
      "{reply}\n\nWho is this article about, and what happened? Answer briefly.")),
    "german": (("Write a short paragraph in German about {subject}. Reply in German only.",),
     ("Translate the following German text into English.\n\n{reply}", "Translate to English:\n\n{reply}",
      "{reply}\n\nTranslate the German text above into English.")),
    "document": (("Write an encyclopedia paragraph about {subject}. Reply with the paragraph only.",),
     ("Document:\n{reply}\n\nUsing the document above, answer: what is {subject} known for?",
      "Read the text and answer: what are the most important facts about {subject}?\n\n{reply}",
      "{reply}\n\nBased only on the text above, ask three questions about {subject} and answer them.")),
}
_SUBJECT_STYLES = ("question", "ask", "news", "german", "document")
_SUBJECT_STYLE_WEIGHTS = (0.35, 0.15, 0.2, 0.1, 0.2)


def subject_prompts(n: int, rng: random.Random, subjects: Sequence[tuple[str, str]]) -> list[Prompt]:
    """`n` requests about (domain, subject) pairs: questions, the target's own question, and texts it
    writes first (a news story, German, an encyclopedia paragraph) to summarise, translate or answer from."""
    if n and not subjects:
        raise ValueError("subject prompts need the target's list of subjects (distill.list_subjects)")
    prompts = []
    for _ in range(n):
        domain, subject = rng.choice(subjects)
        origin = f"{domain} / {subject}"
        style = rng.choices(_SUBJECT_STYLES, _SUBJECT_STYLE_WEIGHTS)[0]
        if style == "question":
            template = rng.choice(_SUBJECT_QUESTIONS)
            other = rng.choice([s for d, s in subjects if d == domain and s != subject] or [domain])
            prompts.append(Prompt(template.format(subject=subject, other=other), "subject", origin, template))
        elif style == "ask":
            prompts.append(Prompt(_SUBJECT_ASK.format(subject=subject, domain=domain), "subject", origin,
                                  _SUBJECT_ASK, self_written=True))
        else:
            seeds, requests = _SUBJECT_TEXTS[style]
            seed = rng.choice(seeds)
            reply_template = rng.choice(requests).replace("{subject}", subject)
            prompts.append(Prompt(seed.format(subject=subject), "subject", origin, seed, self_written=True,
                                  reply_template=reply_template))
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
                  stdlib_sources: list[Path] | None = None, docs: list[Path] | None = None,
                  subjects: Sequence[tuple[str, str]] | None = None) -> list[Prompt]:
    """`n` prompts from the sources in `mix`, shuffled so that any prefix mixes every source.

    `stdlib_sources` / `docs` override the files read (tests use a few); default: the whole machine.
    `subjects`: (domain, subject) pairs the target listed (`distill.list_subjects`), for the subject kind.
    The draws run in the order of the first plan's four sources, then the new ones, so that
    `PromptMix.FOUR_SOURCES` gives the prompts it always gave for a seed.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts = mix.counts(n)
    rng = random.Random(seed)
    prompts = topic_prompts(counts["topic"], rng) + arithmetic_prompts(counts["arithmetic"], rng)
    if counts["docstring"]:
        prompts += docstring_prompts(counts["docstring"], rng, docstring_candidates(stdlib_sources))
    needs_docs = counts["document"] or counts["passage"] or counts["translation"]
    files = (docs if docs is not None else document_files()) if needs_docs else []
    if counts["document"]:
        prompts += document_prompts(counts["document"], rng, files)
    if counts["passage"]:
        prompts += passage_prompts(counts["passage"], rng, files)
    prompts += writing_prompts(counts["writing"], rng) + roleplay_prompts(counts["roleplay"], rng)
    if counts["translation"]:
        prompts += translation_prompts(counts["translation"], rng, files)
    prompts += article_prompts(counts["article"], rng)
    prompts += subject_prompts(counts["subject"], rng, subjects or ())
    rng.shuffle(prompts)
    return prompts


def _relative(path: Path) -> str:
    try:
        return path.relative_to(stdlib_root()).as_posix()
    except ValueError:
        return str(path)
