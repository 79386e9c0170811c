"""The distillation data pipeline: prompt sources, the resumable store, the loader, hidden states."""

import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import tiny
from click.testing import CliRunner

from specdiff import zoo
from specdiff.training import distill, prompt_sources
from specdiff.training.prompt_sources import build_prompts
from specdiff.zoo.corpus import stdlib_root

CHAT = "{% for m in messages %}<|pad|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}<|pad|>assistant: "
PROSE = ("The lighthouse keeper climbed the stairs every evening to light the lamp. Ships far out at sea "
         "watched for its beam and steered away from the rocks that lay hidden under the waves near the shore. "
         "In winter the storms were long, and he kept a log of every ship that passed.")


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = zoo.load_tokenizer("stdlib-target")
    tokenizer.chat_template = CHAT
    return tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny.build("llama", eos=True, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    docs = tmp_path_factory.mktemp("docs") / "guide.md"
    docs.write_text("\n\n".join(f"{PROSE} Part {word} of the story." for word in ("one", "two", "three")))
    stdlib = [stdlib_root() / name for name in ("textwrap.py", "shlex.py", "json/__init__.py")]
    return dict(stdlib_sources=stdlib, docs=[docs])


def test_prompt_sources_are_deterministic_mixed_and_never_read_benchmarks(sources, monkeypatch, tmp_path):
    read = []
    original = prompt_sources._read_text
    monkeypatch.setattr(prompt_sources, "_read_text", lambda path: read.append(str(path)) or original(path))
    prompts = build_prompts(40, seed=3, **sources)
    assert prompts == build_prompts(40, seed=3, **sources)
    assert prompts != build_prompts(40, seed=4, **sources)
    assert {p.kind for p in prompts} == set(prompt_sources.SOURCE_KINDS) - {"subject"}  # the broad mix
    assert all(p.origin and p.template for p in prompts)
    assert all(p.self_written == (p.kind in ("topic", "translation", "article")) for p in prompts)
    assert all(bool(p.reply_template) == (p.kind in ("translation", "article")) for p in prompts)
    four = build_prompts(40, seed=3, mix=prompt_sources.PromptMix.FOUR_SOURCES, **sources)
    assert {p.kind for p in four} == {"topic", "docstring", "document", "arithmetic"}
    assert read and not any(prompt_sources.is_banned(path) for path in read)
    # A benchmark file is refused even when asked for by name.
    bench = tmp_path / "spec_bench" / "question.md"
    bench.parent.mkdir()
    bench.write_text(PROSE)
    assert not prompt_sources._is_prose_file(bench)
    with pytest.raises(ValueError, match="benchmark"):
        build_prompts(10, docs=[bench], stdlib_sources=sources["stdlib_sources"])
    assert prompt_sources.is_banned("/work/shared/data/anything.jsonl")


def test_subjects_the_target_lists_become_requests_of_every_style(model, tokenizer, monkeypatch, tmp_path):
    assert prompt_sources.parse_list("1. Paris\n2. Rome (Italy)\n3. London - its capital\n- Berlin\n* paris\n"
                                     "Here is a sentence with far too many words to be a name.") == \
        ["Paris", "Rome", "London", "Berlin"]
    assert prompt_sources.parse_list("Marie Curie, Isaac Newton, {Ada} Lovelace") == ["Marie Curie", "Isaac Newton",
                                                                                     "Ada Lovelace"]
    # fragments of a sentence the target broke into list lines are not subjects; a name's own comma stays
    assert prompt_sources.parse_list("1. They are kings and queens,\n2. which stands for John Cameron\n"
                                     "3. Queen Victoria,\n4. Washington, D.C.\n5. The Who") == \
        ["Queen Victoria", "Washington, D.C", "The Who"]
    lists = {"List 15 well-known rivers.": "1. Nile\n2. Danube\n3. Amazon", "List 15 well-known tools.": "Hammer, Saw, Drill"}
    asked = []

    def fake_rows(model, tokenizer, prompts, greedy, temperature, top_p, max_new_tokens, seed):
        texts = [tokenizer.decode(ids) for ids in prompts]
        asked.append(texts)
        replies = []
        for text in texts:
            reply = next((v for k, v in lists.items() if k[:-1] in text), "1. Delta\n2. Estuary")
            replies.append(tokenizer(reply, add_special_tokens=False)["input_ids"])
        return replies

    monkeypatch.setattr(distill, "generate_rows", fake_rows)
    monkeypatch.setattr(distill, "LIST_REQUEST", "List 15 well-known {domain}.")
    subjects = distill.list_subjects(model, tokenizer, _config(), domains=("rivers", "tools"), related=1)
    assert len(asked) == 2 and len(asked[0]) == 4  # each domain twice, then one item of each
    assert sum("closely related to" in text for text in asked[1]) == 2
    assert subjects[:6] == [("rivers", "Nile"), ("rivers", "Danube"), ("rivers", "Amazon"), ("tools", "Hammer"),
                            ("tools", "Saw"), ("tools", "Drill")]
    assert subjects[6:] == [("rivers", "Delta"), ("rivers", "Estuary")]  # duplicates across rounds are dropped
    mix = prompt_sources.PromptMix.parse("subject=1")
    prompts = build_prompts(60, seed=2, mix=mix, subjects=subjects)
    assert {p.kind for p in prompts} == {"subject"} and prompts == build_prompts(60, seed=2, mix=mix, subjects=subjects)
    assert {p.origin.split(" / ")[1] for p in prompts} <= {s for _, s in subjects}
    plain = [p for p in prompts if not p.self_written]
    written = [p for p in prompts if p.reply_template]
    assert plain and written and any(p.self_written and not p.reply_template for p in prompts)
    assert any("German" in p.text for p in written) and all("{subject}" not in p.reply_template for p in written)
    with pytest.raises(ValueError, match="list_subjects"):
        build_prompts(10, mix=mix)
    lists.clear()  # a target that writes no list: the run says to pick another mix, and plans nothing
    monkeypatch.setattr(distill, "generate_rows", lambda *args, **kwargs: [[] for _ in args[2]])
    with pytest.raises(ValueError, match="--mix broad"):
        distill.run(model, tokenizer, tmp_path, _config(mix=mix.as_dict()), progress=False)
    assert not list(tmp_path.iterdir())


def test_prompt_mix_counts_exactly_and_parses():
    counts = prompt_sources.PromptMix().counts(7)
    assert sum(counts.values()) == 7
    with pytest.raises(ValueError, match="shares"):
        prompt_sources.PromptMix(topic=-1)
    mix = prompt_sources.PromptMix.parse("passage=2, writing=1")
    assert mix.counts(9) == {**dict.fromkeys(prompt_sources.SOURCE_KINDS, 0), "passage": 6, "writing": 3}
    assert prompt_sources.PromptMix.parse("four-sources") == prompt_sources.PromptMix.FOUR_SOURCES
    assert prompt_sources.PromptMix.parse("broad") == prompt_sources.PromptMix()
    for bad, message in (("essay=1", "kind=share"), ("passage", "kind=share"), ("passage=lots", "number")):
        with pytest.raises(ValueError, match=message):
            prompt_sources.PromptMix.parse(bad)


def test_passages_join_consecutive_paragraphs_and_questions_name_a_repeated_term():
    text = "\n\n".join(f"{PROSE} Part {i} tells of the lighthouse." for i in range(12))
    runs = prompt_sources.passages(text, min_chars=1000, max_chars=2000)
    assert runs and all(1000 <= len(run) <= 2000 for run in runs)
    assert all(run.count("\n\n") >= 2 and run.split("\n\n")[0] in text for run in runs)
    rng = __import__("random").Random(0)
    assert prompt_sources.key_term(PROSE + " The lighthouse stood.", rng) == "lighthouse"
    assert prompt_sources.key_term("Tiny.", rng) == "its subject"
    with pytest.raises(ValueError, match="reply_template"):
        prompt_sources.Prompt("x", "article", "o", "t", self_written=False, reply_template="{reply}")


def test_greedy_rows_decode_like_generate_inside_a_sampled_batch(model, tokenizer):
    # Prompts of different lengths (left padding) and rows that leave the batch at EOS.
    prompts = [distill.chat_ids(tokenizer, text) for text in ("Write a haiku about tides.", "Why?")]
    eos = tokenizer.eos_token_id
    rows = distill.generate_rows(model, tokenizer, prompts + prompts, [True, True, False, False], 0.7, 0.95, 12, 0)
    for prompt, row in zip(prompts, rows):
        expected = tiny.reference(model, torch.tensor([prompt]), 12, eos_token_id=eos,
                                  pad_token_id=tokenizer.pad_token_id)
        assert row == (expected[: expected.index(eos) + 1] if eos in expected else expected)
    assert rows == distill.generate_rows(model, tokenizer, prompts + prompts, [True, True, False, False],
                                         0.7, 0.95, 12, 0)


def test_nucleus_of_the_best_tokens_is_transformers_top_p_law():
    from specdiff.sampling import SamplingSettings

    settings = SamplingSettings(temperature=0.7, top_p=0.95)
    torch.manual_seed(0)
    logits = torch.randn(6, 3000) * torch.tensor([[1.4], [1.5], [2.0], [2.5], [3.0], [4.0]])  # wide to peaked
    ids, probs = distill.nucleus(logits, settings, k=1000)
    sparse = torch.zeros_like(logits).scatter(1, ids, probs)
    full = settings.probs(logits)
    assert torch.allclose(sparse / sparse.sum(-1, keepdim=True), full, atol=1e-6)
    assert ((full > 0).sum(-1) > 1).all() and ((full > 0).sum(-1) < 1000).all()  # real nuclei, inside the k
    assert distill.nucleus(logits, settings, k=10) is None  # the wide rows' nuclei hold more than 10 tokens
    assert distill.nucleus(logits, SamplingSettings(temperature=0.7), k=1000) is None  # top_p off: the full warp


def test_rows_leaving_the_batch_at_eos_leave_the_others_unchanged(model, tokenizer):
    # A bias on EOS makes the greedy replies end at different steps.
    eos = tokenizer.eos_token_id
    texts = ["a", "Say nothing at all.", "Why?", "Write a poem", "x y z", "def f():", "Tell me", "Hello there friend"]
    prompts = [distill.chat_ids(tokenizer, text) for text in texts]
    bias = torch.zeros(len(tokenizer))
    bias[eos] = 1.3
    model.lm_head.bias = torch.nn.Parameter(bias)
    try:
        rows = distill.generate_rows(model, tokenizer, prompts, [True] * len(prompts), 1.0, 1.0, 20, 0)
        expected = [tiny.reference(model, torch.tensor([p]), 20, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
                    for p in prompts]
    finally:
        model.lm_head.bias = None
    assert len({len(row) for row in rows}) > 2 and min(len(row) for row in rows) < 20
    assert rows == [row[: row.index(eos) + 1] if eos in row else row for row in expected]


def _config(**overrides):
    return distill.DistillConfig(**{**dict(target="tiny", prompts=6, dtype="float32", max_new_tokens=8, batch_size=2,
                                           question_max_new_tokens=6, seed=1), **overrides})


def _records(path):
    return [(r.prompt_ids.tolist(), r.response_ids.tolist(), r.meta) for r in distill.DistillDataset(path)]


def test_interrupted_run_resumes_to_the_same_records(model, tokenizer, sources, tmp_path, monkeypatch):
    build = lambda: build_prompts(6, 1, **sources)  # noqa: E731
    whole = distill.run(model, tokenizer, tmp_path / "whole", _config(), build, progress=False)
    assert not whole.interrupted and whole.manifest["records"] == 12
    assert whole.manifest["records_by_mode"] == {"greedy": 6, "sampled": 6}

    # Stop after one batch, the way Ctrl-C does: the batch in flight is finished and written.
    write_shard = distill.write_shard
    def write_then_signal(*args):
        write_shard(*args)
        os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(distill, "write_shard", write_then_signal)
    part = distill.run(model, tokenizer, tmp_path / "part", _config(), build, progress=False)
    assert part.interrupted and part.batches_this_run == 1 and len(distill.DistillDataset(tmp_path / "part")) == 4
    monkeypatch.setattr(distill, "write_shard", write_shard)
    (tmp_path / "part" / "shards" / "batch-00001.npz.tmp").write_bytes(b"half a shard")
    distill.run(model, tokenizer, tmp_path / "part", _config(), build, max_batches=1, progress=False)
    rest = distill.run(model, tokenizer, tmp_path / "part", _config(), build, progress=False)
    assert rest.batches_this_run == 1 and not list((tmp_path / "part" / "shards").glob("*.tmp"))
    assert _records(tmp_path / "part") == _records(tmp_path / "whole")
    assert rest.manifest["tokens"] == whole.manifest["tokens"]

    with pytest.raises(ValueError, match="other settings"):
        distill.run(model, tokenizer, tmp_path / "part", _config(temperature=0.9), build, progress=False)


def test_records_carry_provenance_and_round_trip_ids(model, tokenizer, sources, tmp_path):
    distill.run(model, tokenizer, tmp_path, _config(prompts=3, batch_size=3), lambda: build_prompts(3, 2, **sources),
                progress=False)
    records = distill.DistillDataset(tmp_path)
    for record in records:
        meta = record.meta
        assert {"kind", "origin", "template", "request", "mode", "dtype", "prompt_index"} <= meta.keys()
        assert record.prompt_ids.dtype == np.uint16
        assert record.prompt_ids.tolist() == distill.chat_ids(tokenizer, meta["request"])
        assert 1 <= len(record.response_ids) <= 8
        assert (meta["mode"] == "sampled") == ("temperature" in meta)

    batch = {"prompt_ids": [[0, 65535], [7]], "response_ids": [[], [1, 2, 3]], "records": [{"a": 1}, {"b": 2}]}
    distill.write_shard(tmp_path, 99, batch, 1.0)
    prompts, responses, meta = distill.read_shard(distill.shard_path(tmp_path, 99))
    assert [p.tolist() for p in prompts] == batch["prompt_ids"] and [r.tolist() for r in responses] == batch["response_ids"]
    assert meta["records"] == batch["records"]
    with pytest.raises(ValueError, match="uint16"):
        distill.write_shard(tmp_path, 100, {**batch, "prompt_ids": [[70000], [1]]}, 1.0)


def test_heldout_split_is_stable_and_keeps_a_prompt_on_one_side(model, tokenizer, sources, tmp_path):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 49152, size=rng.integers(5, 50)).astype(np.uint16) for _ in range(3000)]
    flags = [distill.is_heldout(p) for p in prompts]
    assert flags == [distill.is_heldout(p.copy()) for p in prompts]
    assert 0.03 < sum(flags) / len(flags) < 0.07
    distill.run(model, tokenizer, tmp_path, _config(prompts=4, batch_size=4), lambda: build_prompts(4, 0, **sources),
                progress=False)
    train, heldout = distill.DistillDataset(tmp_path, "train"), distill.DistillDataset(tmp_path, "heldout")
    assert len(train) + len(heldout) == len(distill.DistillDataset(tmp_path))
    train_prompts = {r.prompt_ids.tobytes() for r in train}
    assert not train_prompts & {r.prompt_ids.tobytes() for r in heldout}
    with pytest.raises(ValueError, match="split"):
        distill.DistillDataset(tmp_path, "test")


def test_teacher_hidden_states_match_an_unpadded_forward(model):
    ids = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    states = distill.teacher_hidden_states(model, ids, layers=[1, 2], batch_size=2)
    assert [s.shape for s in states] == [(5, 2, 64), (2, 2, 64), (3, 2, 64)]
    with torch.no_grad():
        single = model(torch.tensor([ids[0]]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(states[0][:, 0], single[1][0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="layers"):
        distill.teacher_hidden_states(model, ids, layers=[3])


def test_config_and_cli_reject_bad_values():
    with pytest.raises(ValueError, match="top_p"):
        _config(top_p=0)
    with pytest.raises(ValueError, match="dtype"):
        replace(_config(), dtype="int8")
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from specdiff.cli.main import cli

    for flag, value in (("--batch-size", "0"), ("--prompts", "-3"), ("--max-new-tokens", "0")):
        args = ["train", "data", "--out", "/nonexistent/never-written", "--prompts", "5", flag, value]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and flag in result.output, result.output
    result = CliRunner().invoke(cli, ["train", "data", "--out", "/nonexistent/never-written", "--prompts", "5",
                                      "--mix", "essay=1"])
    assert result.exit_code == 2 and "--mix" in result.output and "passage" in result.output, result.output


def _growing_data_set(tmp_path, seed):
    """A tiny target and an empty distillation set; add_shard(index, records) appends random records to it."""
    data = tmp_path / "data"
    distill.open_plan(data, distill.DistillConfig(target="tiny", prompts=60), lambda: [])
    (data / distill.SHARD_DIR).mkdir()
    g = np.random.default_rng(seed)

    def add_shard(index, records):
        batch = {"prompt_ids": [g.integers(3, 200, 5).tolist() for _ in range(records)],
                 "response_ids": [g.integers(3, 200, int(g.integers(4, 12))).tolist() for _ in range(records)],
                 "records": [{}] * records}
        distill.write_shard(data, index, batch, 0.0)

    return tiny.build("llama"), data, add_shard


def test_features_of_a_grown_data_set_compute_only_the_new_records(tmp_path, monkeypatch):
    """`specdiff train data` appends records: a build starts from the finished build of the first ones."""
    from specdiff.training import features as features_module
    from specdiff.training.features import TeacherFeatures

    target, data, add_shard = _growing_data_set(tmp_path, seed=0)
    add_shard(0, 40)
    first = TeacherFeatures.build(target, data, (1, 2), target_name="tiny", cache_dir=tmp_path / "cache", progress=False)
    add_shard(1, 20)
    computed = []
    original = features_module.teacher_hidden_states

    def counting(model, ids, layers, batch_size=8):
        computed.extend(ids)
        return original(model, ids, layers, batch_size)

    monkeypatch.setattr(features_module, "teacher_hidden_states", counting)
    grown = TeacherFeatures.build(target, data, (1, 2), target_name="tiny", cache_dir=tmp_path / "cache", progress=False)
    assert len(computed) == len(grown) - len(first) > 0  # only the new records went through the target
    assert not first.directory.exists() and grown.directory.exists()  # the superseded build is gone
    fresh = TeacherFeatures.build(target, data, (1, 2), target_name="tiny", cache_dir=tmp_path / "other",
                                  progress=False)
    # equal up to fp16 rounding: records are batched (and padded) with other neighbours in another build
    np.testing.assert_allclose(np.asarray(grown.states, np.float32), np.asarray(fresh.states, np.float32),
                               rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(grown.token_ids, fresh.token_ids)
    # another layer set (or target, split, dtype) is never a prefix: nothing is copied
    computed.clear()
    TeacherFeatures.build(target, data, (2,), target_name="tiny", cache_dir=tmp_path / "cache", progress=False)
    assert len(computed) == len(grown)


def test_features_start_from_an_interrupted_build_of_fewer_records(tmp_path, monkeypatch):
    """A build stopped part-way (Ctrl-C) on a smaller data set still gives its finished records to the next build."""
    from specdiff.training import features as features_module
    from specdiff.training.features import TeacherFeatures

    target, data, add_shard = _growing_data_set(tmp_path, seed=1)
    add_shard(0, 40)
    monkeypatch.setattr(features_module, "GROUP", 16)
    original, computed = features_module.teacher_hidden_states, []

    def stopped_at_the_second_group(model, ids, layers, batch_size=8):
        if computed:
            raise KeyboardInterrupt
        computed.extend(ids)
        return original(model, ids, layers, batch_size)

    monkeypatch.setattr(features_module, "teacher_hidden_states", stopped_at_the_second_group)
    with pytest.raises(KeyboardInterrupt):
        TeacherFeatures.build(target, data, (1, 2), target_name="tiny", cache_dir=tmp_path / "cache", progress=False)
    (interrupted,) = (tmp_path / "cache").iterdir()
    assert json.loads((interrupted / "progress.json").read_text()) == {"records_done": 16}

    def counting(model, ids, layers, batch_size=8):
        computed.extend(ids)
        return original(model, ids, layers, batch_size)

    add_shard(1, 20)
    computed.clear()
    monkeypatch.setattr(features_module, "teacher_hidden_states", counting)
    grown = TeacherFeatures.build(target, data, (1, 2), target_name="tiny", cache_dir=tmp_path / "cache", progress=False)
    assert len(computed) == len(grown) - 16  # the interrupted build's 16 finished records were copied
    assert not interrupted.exists()
    fresh = TeacherFeatures.build(target, data, (1, 2), target_name="tiny", cache_dir=tmp_path / "other",
                                  progress=False)
    np.testing.assert_allclose(np.asarray(grown.states, np.float32), np.asarray(fresh.states, np.float32),
                               rtol=1e-2, atol=1e-3)


def test_a_text_the_target_writes_first_becomes_the_request(model, tokenizer):
    prompt = prompt_sources.Prompt("Write a news story about tides.", "article", "tides", "seed", self_written=True,
                                   reply_template="Summarise this:\n\n{reply}")
    question = prompt_sources.Prompt("Write one question about tides.", "topic", "tides", "seed", self_written=True)
    config = _config(passage_max_new_tokens=10)
    requests = distill.write_requests(model, tokenizer, [question, prompt], config, seed=5)
    reply = distill.generate_rows(model, tokenizer, [distill.chat_ids(tokenizer, prompt.text)], [False],
                                  config.question_temperature, config.top_p, 10, 5 ^ (1 << 40))[0]
    passage = distill._clean_passage(tokenizer.decode(reply, skip_special_tokens=True))
    assert requests[1] == (f"Summarise this:\n\n{passage}" if passage else prompt.text)
    assert distill._clean_passage("Here is the translation:\nHallo Welt.\nZweite Zeile.") == "Hallo Welt.\nZweite Zeile."


def test_a_new_part_extends_finished_data_and_resumes_on_its_own(model, tokenizer, sources, tmp_path):
    first = _config(prompts=4, batch_size=2)
    distill.run(model, tokenizer, tmp_path, first, lambda: build_prompts(4, 0, **sources), progress=False)
    before = _records(tmp_path)
    second = _config(prompts=3, batch_size=2, seed=7, mix={"writing": 1.0, "passage": 1.0})
    with pytest.raises(ValueError, match="--extend"):
        distill.run(model, tokenizer, tmp_path, second, progress=False)
    build = lambda: build_prompts(3, 7, second.prompt_mix, **sources)  # noqa: E731
    part = distill.run(model, tokenizer, tmp_path, second, build, max_batches=1, progress=False, extend=True)
    assert part.batches_this_run == 1 and distill.completed_batches(tmp_path) == [0, 1, 2]
    # Resuming the new part needs no --extend; the first part's records stay first and unchanged.
    rest = distill.run(model, tokenizer, tmp_path, second, progress=False)
    records = _records(tmp_path)
    assert records[: len(before)] == before and len(records) == len(before) + 6
    assert [meta["prompt_index"] for _, _, meta in records[len(before):]] == [4, 5, 4, 5, 6, 6]
    assert {meta["kind"] for _, _, meta in records[len(before):]} <= {"writing", "passage"}
    assert rest.manifest["batches"] == {"done": 4, "planned": 4}
    assert [p["batches"] for p in rest.manifest["parts"]] == [[0, 2], [2, 4]]
    # Resuming the first part with its own settings finds nothing to do.
    assert distill.run(model, tokenizer, tmp_path, first, progress=False).batches_this_run == 0

    # A part is added only after every earlier one is finished.
    distill.run(model, tokenizer, tmp_path / "half", first, lambda: build_prompts(4, 0, **sources), max_batches=1,
                progress=False)
    with pytest.raises(ValueError, match="not finished"):
        distill.run(model, tokenizer, tmp_path / "half", second, build, progress=False, extend=True)
