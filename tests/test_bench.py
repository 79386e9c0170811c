"""`specdiff bench` and its library: prompt sets, conversations, runners, summaries, the report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdiff import bench, bench_report, methods
from specdiff.config import DecodingConfig
from specdiff.metrics import GenerationStats
from test_cli import invoke, tiny_models  # noqa: F401  (session fixture)

ANSWER_KEYS = {"question_id", "category", "answer_id", "model_id", "choices", "tstamp"}
CHOICE_KEYS = {"index", "turns", "decoding_steps", "new_tokens", "wall_time", "accept_lengths"}


@pytest.fixture(scope="module")
def loaded(tiny_models):  # noqa: F811
    target_dir, drafter_dir = tiny_models
    target = AutoModelForCausalLM.from_pretrained(target_dir).eval()
    drafter = AutoModelForCausalLM.from_pretrained(drafter_dir).eval()
    return target, AutoTokenizer.from_pretrained(target_dir), drafter


def write_questions(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_bench_cli_writes_answers_table_and_plots(tiny_models, tmp_path):  # noqa: F811
    target, drafter = tiny_models
    questions = write_questions(tmp_path / "question.jsonl", [
        {"question_id": 81, "category": "coding", "turns": ["def add(a, b):", "def sub(a, b):"]},
        {"question_id": 82, "category": "writing", "turns": ["import os\nimport sys\nimport os\n"]},
    ])
    out = tmp_path / "out"
    result = invoke("bench", "--target", target, "--drafter", drafter, "--prompts", questions,
                    "--max-new-tokens", 8, "--repeats", 2, "--warmup", 1, "--out", out)
    assert result.exit_code == 0, result.output
    names = bench.default_runner_names(drafter_given=True)
    assert "heads" not in names and {"hf-generate", "ar", "lookup", "dlm"} <= set(names)
    for name in names:
        assert f"| {name} |" in result.stdout
        lines = (out / "answers" / f"{name}.jsonl").read_text().splitlines()
        answers = [json.loads(line) for line in lines]
        assert [a["question_id"] for a in answers] == [81, 82]
        assert set(answers[0]) == ANSWER_KEYS and set(answers[0]["choices"][0]) == CHOICE_KEYS
        choice = answers[0]["choices"][0]
        assert len(choice["turns"]) == len(choice["new_tokens"]) == len(choice["wall_time"]) == 2
        if choice["accept_lengths"]:
            assert sum(choice["accept_lengths"]) == sum(choice["new_tokens"])
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["methods"]] == names
    # Greedy everywhere: every method, HF's included, reproduces hf-generate token for token.
    assert all(m["exact_match"] == 1.0 for m in results["methods"])
    assert results["methods"][0]["tau"] == 1.0
    assert results["info"]["torch"] == torch.__version__ and results["info"]["command"].startswith("specdiff bench")
    table = (out / "table.md").read_text()
    assert "| hf-generate |" in table and "specdiff bench" in table
    for plot in ("accepted_length_histogram.png", "per_position_acceptance.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_heldout_prompts_and_one_method(tiny_models, tmp_path):  # noqa: F811
    target, _ = tiny_models
    out = tmp_path / "out"
    result = invoke("bench", "--target", target, "-m", "lookup", "--num-prompts", 2, "--max-new-tokens", 4,
                    "--repeats", 1, "--warmup", 0, "--out", out)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in (out / "answers" / "lookup.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and answers[0]["category"] == "stdlib-heldout"
    assert sorted(p.name for p in (out / "answers").iterdir()) == ["hf-generate.jsonl", "lookup.jsonl"]


def test_load_prompts_filters_and_validates(tmp_path):
    path = write_questions(tmp_path / "q.jsonl", [
        {"question_id": 1, "category": "math", "turns": ["1 + 1"]},
        {"question_id": 2, "category": "coding", "turns": ["def f():"]},
        {"question_id": 3, "category": "coding", "turns": ["class A:"]},
    ])
    assert [p.question_id for p in bench.load_prompts(path, categories=("coding",))] == [2, 3]
    assert [p.question_id for p in bench.load_prompts(path, num_prompts=1)] == [1]
    with pytest.raises(bench.PromptFileError, match="no prompts in categories rag"):
        bench.load_prompts(path, categories=("rag",))
    path.write_text('{"question_id": 1, "turns": []}\n')
    with pytest.raises(bench.PromptFileError, match=r"q.jsonl:1: .*non-empty list of strings"):
        bench.load_prompts(path)


def test_shipped_question_files_parse():
    from pathlib import Path

    data = Path("/work/shared/data")
    if not data.exists():
        pytest.skip("the shared data folder is not on this machine")
    spec_bench = bench.load_prompts(data / "spec_bench" / "question.jsonl")
    assert len(spec_bench) == 480 and len(spec_bench[0].turns) == 2
    assert len(bench.load_prompts(data / "mt_bench" / "question.jsonl")) == 80


def test_plain_conversation_extends_the_running_ids(loaded):
    _, tokenizer, _ = loaded
    conversation = bench.Conversation(tokenizer)
    assert not conversation.templated
    first = conversation.prompt_ids("def add(a, b):")
    assert first == tokenizer("def add(a, b):")["input_ids"]
    conversation.add_reply(first, [5, 6, 7])
    second = conversation.prompt_ids("def sub(a, b):")
    assert second[: len(first) + 3] == first + [5, 6, 7] and len(second) > len(first) + 3
    assert tokenizer.decode(second).endswith("\ndef sub(a, b):")


def test_chat_template_conversation_extends_the_running_ids(loaded):
    _, tokenizer, _ = loaded
    templated = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    templated.chat_template = ("{% for m in messages %}<|pad|>{{ m['role'] }}:{{ m['content'] }}{{ eos_token }}"
                               "{% endfor %}{% if add_generation_prompt %}<|pad|>assistant:{% endif %}")
    conversation = bench.Conversation(templated)
    first = conversation.prompt_ids("hello")
    assert templated.decode(first) == "<|pad|>user:hello<|endoftext|><|pad|>assistant:"
    reply = templated("x = 1", add_special_tokens=False)["input_ids"]  # stopped by max_new_tokens: no EOS
    conversation.add_reply(first, reply)
    second = conversation.prompt_ids("again")
    assert second[: len(first) + len(reply)] == first + reply  # the KV cache of turn one stays valid
    assert templated.decode(second).endswith("x = 1<|endoftext|><|pad|>user:again<|endoftext|><|pad|>assistant:")
    assert bench.Conversation(templated, use_chat_template=False).templated is False


def test_conversation_drops_the_oldest_tokens(loaded):
    _, tokenizer, _ = loaded
    conversation = bench.Conversation(tokenizer, max_prompt_tokens=5)
    ids = conversation.prompt_ids("def function_with_a_long_name(argument_one, argument_two):")
    full = tokenizer("def function_with_a_long_name(argument_one, argument_two):")["input_ids"]
    assert ids == full[-5:] and conversation.dropped_tokens == len(full) - 5


def test_hf_runners_count_forwards_and_restore_the_assistant_config(loaded):
    target, tokenizer, drafter = loaded
    config = DecodingConfig.from_model(target, max_new_tokens=6)
    before = drafter.generation_config.to_dict()
    runners = bench.make_runners(["hf-assisted", "hf-lookup"], target, tokenizer, {"hf-assisted": drafter}, config)
    assert [r.name for r in runners] == ["hf-generate", "hf-assisted", "hf-lookup"]
    ids = tokenizer("def add(a, b):")["input_ids"]
    plain, assisted, lookup = (runner.run(ids) for runner in runners)
    assert plain.target_forwards == len(plain.token_ids) == 6  # one forward per token, prefill included
    assert assisted.token_ids == lookup.token_ids == plain.token_ids
    assert 1 <= assisted.target_forwards <= 6
    assert drafter.generation_config.to_dict() == before


def test_packed_hf_baselines_run_with_the_engines_kernel_and_only_when_named(loaded):
    from specdiff.packed import packing_available

    target, tokenizer, drafter = loaded
    config = DecodingConfig.from_model(target, max_new_tokens=8)
    assert not set(bench.PACKED_BASELINES) & set(bench.default_runner_names(False))
    assert bench.default_drafter("hf-assisted-packed") == bench.default_drafter("hf-assisted")
    if not packing_available():
        pytest.skip("a torch without oneDNN")
    runners = bench.make_runners(["hf-lookup-packed", "hf-assisted-packed"], target, tokenizer,
                                 {"hf-assisted-packed": drafter}, config)
    ids = tokenizer("def add(a, b):")["input_ids"]
    plain, lookup, assisted = (runner.run(ids) for runner in runners)
    assert lookup.token_ids == assisted.token_ids == plain.token_ids
    assert [len(r.packed) for r in runners] == [0, 1, 2]  # the target's; the target's and the assistant's
    assert runners[1].packed[0].packed_calls > 0 and runners[2].packed[1].packed_calls > 0
    assert all("forward" not in vars(module) for module in target.modules())  # restored after each run
    with pytest.raises(ValueError, match="leave hf-lookup-packed out"):
        bench.make_runners(["hf-lookup-packed"], copy.deepcopy(target).to(torch.bfloat16), tokenizer, {}, config)


def test_make_runners_refuses_unknown_names_and_missing_drafter(loaded):
    target, tokenizer, _ = loaded
    config = DecodingConfig.from_model(target, max_new_tokens=4)
    with pytest.raises(methods.UnknownMethodError, match="known: hf-generate, hf-assisted"):
        bench.make_runners(["nope"], target, tokenizer, {}, config)
    with pytest.raises(ValueError, match="needs a drafter model"):
        bench.make_runners(["ar"], target, tokenizer, {}, config)
    assert [bench.default_drafter(n) for n in ("hf-generate", "hf-assisted", "lookup", "ar-tree")] == [
        None, "stdlib-ar-drafter", None, "stdlib-ar-drafter"]


def _answer(tokens, wall_time, forwards, accepted=None):
    stats = None
    if accepted is not None:
        stats = GenerationStats(new_tokens=len(tokens), draft_time=0.1, verify_time=0.3)
        for a in accepted:
            stats.record_step(drafted=3, depth=3, accepted=a)
    return bench.TurnOutput(tokens, wall_time, forwards, stats)


def test_summarize_hand_built_run():
    config = DecodingConfig(max_new_tokens=6)
    prompts = [bench.BenchPrompt(1, "c", ("p",)), bench.BenchPrompt(2, "c", ("q",))]
    greedy = [1, 2, 3, 4, 5, 6]
    loop = [7, 7, 7, 7, 7, 7]
    outputs = {
        "hf-generate": [[[_answer(greedy, 1.0, 6)], [_answer(loop, 1.0, 6)]],
                        [[_answer(greedy, 2.0, 6)], [_answer(loop, 2.0, 6)]]],
        "ar": [[[_answer(greedy, 0.5, 2, [2, 2])], [_answer([7] * 5 + [8], 0.5, 3, [3, 0, 0])]],
               [[_answer(greedy, 0.5, 2, [2, 2])], [_answer([7] * 5 + [8], 1.0, 3, [3, 0, 0])]]],
    }
    run = bench.BenchRun(prompts, config, bench.BenchSettings(repeats=2), outputs)
    baseline, ar = bench_report.summarize(run)
    assert baseline.tau == 1.0 and baseline.speedup.median == 1.0 and baseline.exact_match == 1.0
    assert ar.tau == pytest.approx(24 / 10)  # step-weighted: all tokens over all forwards
    assert ar.tokens_per_second == bench_report.Spread(10.0, 8.0, 12.0)
    assert ar.speedup.low == 2.0 and ar.speedup.high == pytest.approx(8 / 3)  # repeat by repeat vs hf-generate
    assert ar.exact_match == 0.5
    assert ar.mean_accepted == pytest.approx(14 / 10) and ar.max_accepted == 3
    assert ar.distinct_bigrams == pytest.approx((1.0 + 2 / 5) / 2)
    table = bench_report.markdown_table([baseline, ar])
    # bound = tau x t1 / t_step: t1 = 1 / 4.5 s per token (hf-generate's median speed), t_step = 4 x 0.4 s / 10 steps
    assert ar.bound == pytest.approx(2.4 * (1 / 4.5) / 0.16, abs=1e-3)
    assert ar.efficiency == pytest.approx(10 / 4.5 / ar.bound, abs=1e-3) and baseline.bound is None
    assert ("| ar | 2.40 | 1.40 (3) | 10.00 [8.00–12.00] | 2.33x [2.00–2.67] | 3.33x (0.67) | 50% (1 with no gap: "
            "no scores recorded) | 0.70 |") in table
    looping = bench_report.summarize(bench.BenchRun(prompts[1:], config, bench.BenchSettings(repeats=1),
                                             {"hf-generate": [[[_answer(loop, 1.0, 6)]]]}))
    assert looping[0].loops and "| loops |" in bench_report.markdown_table(looping)


def test_methods_registry():
    assert {"ar", "ar-tree", "lookup"} <= set(methods.names())
    with pytest.raises(methods.UnknownMethodError, match="known methods: ar, ar-tree, .*lookup"):
        methods.get("diffusion-xl")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.PromptLookupMethod("lookup", "again"))
    with pytest.raises(ValueError, match="draft_length must be >= 1"):
        methods.MethodOptions(draft_length=0)


def test_register_a_new_method(loaded):
    target, tokenizer, _ = loaded
    method = methods.register(methods.PromptLookupMethod("lookup-2gram", "2-gram lookup", ngram=2, k=4))
    try:
        spec = methods.build("lookup-2gram", target, tokenizer, options=methods.MethodOptions(draft_length=3))
        assert spec.drafter.ngram == 2 and spec.draft_length.current() == 3
        assert "lookup-2gram" in bench.runner_names()
    finally:
        methods._REGISTRY.pop(method.name)


def test_build_and_generate_options(loaded):
    target, tokenizer, drafter = loaded
    with pytest.raises(ValueError, match="needs a drafter model"):
        methods.build("ar", target, tokenizer)
    spec = methods.build("ar-tree", target, tokenizer, drafter)
    assert spec.drafter.top_k == 3 and spec.draft_length.current() == 5
    assert methods.generate_options(target, DecodingConfig.from_model(target, max_new_tokens=9)) == {}
    penalty = DecodingConfig.from_model(target, repetition_penalty=1.3)
    assert methods.generate_options(target, penalty) == {"repetition_penalty": 1.3}


def test_corpus_ngram_methods_refuse_another_tokenizer():
    from specdiff import zoo

    method = methods.get("dlm-cps")
    assert method._proxy(zoo.load_tokenizer("stdlib-target"), 8192).vocab_size == 8192
    with pytest.raises(ValueError, match="dlm-cps-online"):
        method._proxy(None, 64)
    assert methods.get("dlm-cps-online")._proxy(None, 64) is not None


def test_own_model_method_is_compared_with_its_own_generate(loaded):
    target, tokenizer, drafter = loaded
    tidar = AutoModelForCausalLM.from_config(drafter.config).eval()  # any model with a mask token
    tidar.config.mask_token_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else 3
    config = DecodingConfig.from_model(target, max_new_tokens=8)
    runners = bench.make_runners(["tidar", "tidar-opt-tree"], target, tokenizer,
                                 {"tidar": tidar, "tidar-opt-tree": tidar}, config)
    assert [r.name for r in runners] == ["hf-generate", "hf-generate[tidar]", "tidar", "tidar-opt-tree"]
    assert runners[1].model is tidar and runners[2].reference == runners[3].reference == "hf-generate[tidar]"
    prompts = [bench.BenchPrompt(1, "c", ("def add(a, b):",))]
    run = bench.run_bench(runners, prompts, bench.Conversation(tokenizer, use_chat_template=False), config,
                          bench.BenchSettings(repeats=1, warmup=0), progress=False)
    summaries = {s.name: s for s in bench_report.summarize(run)}
    assert summaries["tidar"].exact_match == summaries["tidar-opt-tree"].exact_match == 1.0  # vs its own generate
    assert summaries["tidar"].reference == "hf-generate[tidar]" and summaries["hf-generate"].reference == "hf-generate"
    table = bench_report.markdown_table(list(summaries.values()))
    assert "(vs hf-generate[tidar])" in table and "decode their own model" in table
    assert "tidar" not in bench.default_runner_names(drafter_given=True)


def test_tie_diagnostic_and_categories_on_a_hand_built_run():
    """A divergence where the reference's top-2 gap was tiny is a near-tie; a wide gap is flagged; a
    reply that runs past the reference's end has no gap. Per-category summaries cut the same run."""
    config = DecodingConfig(max_new_tokens=4)
    prompts = [bench.BenchPrompt(1, "qa", ("p",)), bench.BenchPrompt(2, "qa", ("q",)),
               bench.BenchPrompt(3, "rag", ("r",))]
    reference = [bench.TurnOutput([1, 2, 3, 4], 1.0, 4, top2_gaps=[5.0, 1e-4, 5.0, 5.0]),
                 bench.TurnOutput([1, 2, 3, 4], 1.0, 4, top2_gaps=[5.0, 5.0, 2.5, 5.0]),
                 bench.TurnOutput([1, 2], 1.0, 2, top2_gaps=[5.0, 5.0])]
    method = [_answer([1, 9, 9, 9], 0.5, 2, [1, 1]), _answer([1, 2, 9, 9], 0.5, 2, [2, 0]),
              _answer([1, 2, 3], 0.5, 2, [1, 0])]
    run = bench.BenchRun(prompts, config, bench.BenchSettings(repeats=1),
                         {"hf-generate": [[[r] for r in reference]], "lookup": [[[m] for m in method]]})
    _, lookup = bench_report.summarize(run, tie_tolerance=1e-3)
    assert [(d.answer, d.token, d.near_tie) for d in lookup.divergences] == [(0, 1, True), (1, 2, False), (2, 2, False)]
    assert lookup.divergences[2].unknown == "reference stopped"
    assert lookup.exact_cell() == "0% (1 near-tie; 1 NOT a tie: gap 2.5; 1 with no gap: reference stopped)"
    categories = bench_report.by_category(run)
    assert list(categories) == ["qa", "rag"] and len(categories["qa"].prompts) == 2
    table = bench_report.category_table(run, 1e-3)
    assert "| rag | lookup |" in table and "| qa | hf-generate | 1.00 |" in table


def test_per_category_and_max_turns(tmp_path):
    questions = write_questions(tmp_path / "question.jsonl", [
        {"question_id": i, "category": c, "turns": ["a", "b"]} for i, c in enumerate("xxxyyz")])
    prompts = bench.load_prompts(questions, per_category=2, max_turns=1)
    assert [p.question_id for p in prompts] == [0, 3, 5, 1, 4]  # round robin over x, y, z
    assert all(p.turns == ("a",) for p in prompts)
    assert [p.question_id for p in bench.load_prompts(questions, num_prompts=2, per_category=2)] == [0, 3]
    with pytest.raises(ValueError, match="per_category"):
        bench.load_prompts(questions, per_category=0)


def test_greedy_reference_records_top2_gaps(loaded):
    target, tokenizer, _ = loaded
    config = DecodingConfig.from_model(target, max_new_tokens=5)
    runner = bench.HFRunner("hf-generate", target, config)
    ids = tokenizer("def add(a, b):")["input_ids"]
    output = runner.run(ids)
    x = torch.tensor([ids + output.token_ids[:2]])
    logits = target(x).logits[0, len(ids) + 1]  # the scores that chose the third new token
    top2 = logits.topk(2).values
    assert len(output.top2_gaps) == len(output.token_ids)
    assert output.top2_gaps[2] == pytest.approx((top2[0] - top2[1]).item(), abs=1e-4)


def test_lookup_backs_off_by_dtype(loaded):
    """fp32: 2-grams at the shortest (a wasted row costs); half precision: down to single tokens."""
    target, tokenizer, _ = loaded
    method = methods.get("lookup-chain")
    assert method.backoff(target) == 2
    assert method.build(target, tokenizer, None, methods.MethodOptions()).drafter.min_ngram == 2
    assert method.backoff(AutoModelForCausalLM.from_config(target.config, dtype=torch.bfloat16)) == 1
    assert methods.PromptLookupMethod("x", "y", min_ngram=3).backoff(target) == 3
    with pytest.raises(ValueError, match="min_ngram"):
        methods.PromptLookupMethod("x", "y", ngram=2, min_ngram=3)


def test_the_loop_counts_only_model_work_as_verifying(monkeypatch):
    """verify_time is the target's forwards (DESIGN.md §5); the loop's own work (here a slow
    acceptance) stays out of it, so the efficiency column can show it."""
    import time

    import tiny
    from specdiff import SpecDiff, acceptance
    from specdiff.drafters import AutoregressiveDrafter

    model = tiny.build("llama")
    spec = SpecDiff(model, AutoregressiveDrafter(model, k=4))
    slow = 0.02
    real_accept = acceptance.greedy_accept

    def slow_accept(tree, logits):
        time.sleep(slow)
        return real_accept(tree, logits)

    monkeypatch.setattr("specdiff.api.greedy_accept", slow_accept)
    before = spec.verifier.forward_seconds
    clock = time.perf_counter()
    result = spec.generate(tiny.repetitive_prompt(), max_new_tokens=12)
    wall = time.perf_counter() - clock
    assert result.token_ids == tiny.reference(model, tiny.repetitive_prompt(), 12)
    stats = result.stats
    assert stats.verify_time == pytest.approx(spec.verifier.forward_seconds - before)
    assert 0 < stats.verify_time and 0 < stats.draft_time
    # every step slept in acceptance; none of that is in the model-work timers
    assert stats.verify_time + stats.draft_time <= wall - slow * len(stats.accepted_lengths)


class _Scripted:
    """A runner that answers [7, 8], or raises `error` on its `fail_at`-th call (1-based)."""

    def __init__(self, name, fail_at=None, error=RuntimeError("device-side assert")):
        self.name, self.fail_at, self.error, self.calls = name, fail_at, error, 0

    def run(self, prompt_ids):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return bench.TurnOutput([7, 8], 0.01, 2)


def _prompts(n):
    return [bench.BenchPrompt(i, "c", (f"prompt {i}",)) for i in range(n)]


def test_a_failing_method_is_left_out_and_the_others_finish(loaded):
    _, tokenizer, _ = loaded
    conversation = bench.Conversation(tokenizer, use_chat_template=False)
    runners = [_Scripted("hf-generate"), _Scripted("lookup", fail_at=3), _Scripted("ar")]
    run = bench.run_bench(runners, _prompts(4), conversation, DecodingConfig(max_new_tokens=2),
                          bench.BenchSettings(repeats=1, warmup=1), progress=False)
    assert list(run.outputs) == ["hf-generate", "ar"] and len(run.outputs["ar"][0]) == 4
    assert run.failures == {"lookup": "RuntimeError: device-side assert"} and run.interrupted is None
    text = bench_report.report_markdown(run, bench_report.summarize(run), dict(cpu="x", torch_threads=1, device="cpu",
                                        torch="t", transformers="t", time="now"))
    assert "Left out: `lookup` failed (RuntimeError: device-side assert)." in text
    with pytest.raises(RuntimeError):  # without the reference nothing can be compared
        bench.run_bench([_Scripted("hf-generate", fail_at=2), _Scripted("ar")], _prompts(2), conversation,
                        DecodingConfig(max_new_tokens=2), bench.BenchSettings(repeats=1, warmup=0), progress=False)


def test_an_interrupted_run_keeps_what_every_method_finished(loaded):
    _, tokenizer, _ = loaded
    conversation = bench.Conversation(tokenizer, use_chat_template=False)
    config = DecodingConfig(max_new_tokens=2)
    # Ctrl-C while `ar` answers the third prompt: two prompts are complete for both methods.
    runners = [_Scripted("hf-generate"), _Scripted("ar", fail_at=4, error=KeyboardInterrupt())]
    run = bench.run_bench(runners, _prompts(5), conversation, config, bench.BenchSettings(repeats=2, warmup=1),
                          progress=False)
    assert [p.question_id for p in run.prompts] == [0, 1] and run.settings.repeats == 1
    assert all(len(repeats) == 1 and len(repeats[0]) == 2 for repeats in run.outputs.values())
    assert run.interrupted == "interrupted after 2 of 5 prompts: kept those"
    # In the second repeat: the first repeat is kept whole.
    runners = [_Scripted("hf-generate", fail_at=5, error=KeyboardInterrupt()), _Scripted("ar")]
    run = bench.run_bench(runners, _prompts(3), conversation, config, bench.BenchSettings(repeats=2, warmup=0),
                          progress=False)
    assert len(run.prompts) == 3 and run.settings.repeats == 1 and len(run.outputs["ar"]) == 1
    assert bench_report.summarize(run)[1].exact_match == 1.0
    with pytest.raises(KeyboardInterrupt):  # nothing complete: the interruption is the user's answer
        bench.run_bench([_Scripted("hf-generate", fail_at=1, error=KeyboardInterrupt())], _prompts(2), conversation,
                        config, bench.BenchSettings(repeats=1, warmup=0), progress=False)
