"""EAGLE drafters (issue 16): the training unroll is the drafting rows, greedy equality with `generate`
(chain and dynamic tree, reduced draft vocabulary), sampled runs that follow the target's law, files,
training on a patterned target to tau near k, exact resume, the method registry and the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import tiny
from specdiff import ProposalKind, SpecDiff, methods
from specdiff.drafters import EagleConfig, EagleDrafter, EagleModel
from specdiff.kv import CachedLM
from specdiff.training import distill
from specdiff.training.data import WindowSampler
from specdiff.training.eagle import EagleObjective, FeatureSampler, chain_acceptance, frequent_tokens, step_labels
from specdiff.training.eagle_recipe import EagleRecipe, export_eagle, kept_vocab, warm_start
from specdiff.training.features import TeacherFeatures
from specdiff.training.loop import TrainConfig, train
from specdiff.training.objectives import CausalLMObjective
from specdiff.trees import Chain, OptTree
from test_cli import assert_clean_failure, invoke, tiny_models  # noqa: F401  (session fixture)
from test_measured import FixedCost
from test_sampling import P_VALUE
from test_sampling_e2e import PROMPT as SMALL_PROMPT
from test_sampling_e2e import V as SMALL_V
from test_sampling_e2e import first_tokens_pvalue, small_model

NEW_TOKENS = 24
EVERY_THIRD = torch.arange(0, tiny.VOCAB, 3)  # a reduced draft vocabulary for the tiny targets


def random_eagle(target, layers=None, vocab=None, seed: int = 1) -> EagleModel:
    torch.manual_seed(seed)
    return EagleModel.for_target(target, layers, vocab)


def target_states(target, ids: torch.Tensor, layers) -> torch.Tensor:
    """[T, n, H] the target's hidden_states at `layers` over a plain forward of ids [T]."""
    with torch.no_grad():
        hidden = target(ids[None], output_hidden_states=True).hidden_states
    return torch.stack([hidden[layer][0] for layer in layers], dim=1)


# --- the model: what training unrolls is what drafting feeds ---------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_unroll_rows_are_the_drafting_rows(model_type):
    target = tiny.build(model_type)
    eagle = random_eagle(target, (1, 2), EVERY_THIRD).eval()
    ids = tiny.repetitive_prompt(14)[0]
    states = target_states(target, ids, (1, 2))  # [T, 2, H]
    with torch.no_grad():
        outputs = eagle(ids[None], states[None], steps=3)  # [3, 1, T, H]
        logits = eagle.head(outputs)  # [3, 1, T, N]
    i = 7  # committed positions 0..7 (their rows read ids 1..8), then drafted rows reading ids 9, 10
    lm = CachedLM(eagle.decoder)
    committed = ids[1 : i + 2]
    with torch.no_grad():
        out = lm.forward(committed, hidden_layers=(-1,),
                         inputs_embeds=eagle.inputs(committed, eagle.fuse_features(states[: i + 1])))
        for step in range(3):
            torch.testing.assert_close(out.logits[-1], logits[step, 0, i], atol=1e-4, rtol=0)
            torch.testing.assert_close(out.hidden[0, -1], outputs[step, 0, i], atol=1e-4, rtol=0)
            token = ids[i + step + 2 : i + step + 3]
            out = lm.forward(token, hidden_layers=(-1,), inputs_embeds=eagle.inputs(token, out.hidden[0, -1:]))


def test_reduced_vocabulary_maps_back_to_target_ids():
    eagle = random_eagle(tiny.build("llama"), vocab=EVERY_THIRD)
    logits = torch.randn(2, len(EVERY_THIRD))
    full = eagle.to_target(logits)  # [2, V]
    assert full.shape == (2, tiny.VOCAB) and torch.isinf(full[:, 1]).all()
    torch.testing.assert_close(full[:, EVERY_THIRD], logits)
    assert eagle.to_draft(torch.tensor([3, 4])).tolist() == [1, -1]
    assert eagle.target_ids(torch.tensor([1, 2])).tolist() == [3, 6]


# --- greedy equality with generate ---------------------------------------------------------------


@pytest.fixture(scope="module", params=["llama", "qwen3", "gpt2"])
def target(request):
    model = tiny.build(request.param)
    prompt = tiny.repetitive_prompt()
    return model, prompt, tiny.reference(model, prompt, NEW_TOKENS)


DRAFTS = {  # name: (feature layers, draft vocabulary, top_k, tree)
    "eagle1-chain": (None, None, 1, None),
    "fused-chain-reduced": ((0, 1, 2), EVERY_THIRD, 1, None),
    "fused-tree-reduced": ((1, 2), EVERY_THIRD, 3, OptTree(node_budget=8)),
}


@pytest.mark.parametrize("draft", DRAFTS)
def test_greedy_equals_generate(target, draft):
    model, prompt, expected = target
    layers, vocab, top_k, tree = DRAFTS[draft]
    drafter = EagleDrafter(random_eagle(model, layers, vocab), model, k=4, top_k=top_k)
    result = SpecDiff(model, drafter, tree=tree).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected
    assert drafter.forward_count == result.stats.drafter_forwards > 0


def test_greedy_with_a_repetition_penalty_and_a_one_token_prompt():
    model = tiny.build("llama")
    drafter = EagleDrafter(random_eagle(model, (1, 2), EVERY_THIRD), model, k=3, top_k=2)
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, NEW_TOKENS, repetition_penalty=1.3)
    assert SpecDiff(model, drafter).generate(prompt, max_new_tokens=NEW_TOKENS, repetition_penalty=1.3).token_ids == expected
    one = torch.tensor([[17]])  # nothing prefilled: the first step drafts nothing, the next ones do
    result = SpecDiff(model, drafter).generate(one, max_new_tokens=8)
    assert result.token_ids == tiny.reference(model, one, 8)
    assert result.stats.draft_depths[0] == 0 and min(result.stats.draft_depths[1:-1]) > 0


# --- sampling -------------------------------------------------------------------------------------

SAMPLED = {  # name: (feature layers, draft vocabulary, top_k, tree, options)
    "chain": (None, None, 1, None, dict(temperature=1.0, top_k=0)),
    "chain-reduced-warped": ((0, 1), torch.arange(1, 7), 1, None,
                             dict(temperature=0.8, top_k=5, repetition_penalty=1.2)),
    "tree-reduced": ((0, 1), torch.arange(1, 7), 2, OptTree(node_budget=4), dict(temperature=1.0, top_k=0)),
    # sampled nodes kept or dropped by their drafted probability: fixed candidates from then on
    "chain-measured": (None, None, 1, FixedCost(Chain()), dict(temperature=1.0, top_k=0)),
    "tree-measured": ((0, 1), None, 2, FixedCost(OptTree(node_budget=4)), dict(temperature=1.0, top_k=0)),
}


@pytest.mark.parametrize("case", SAMPLED)
def test_sampled_runs_follow_the_target(case):
    layers, vocab, top_k, tree, options = SAMPLED[case]
    model = small_model(0)
    spec = SpecDiff(model, EagleDrafter(random_eagle(model, layers, vocab, seed=3), model, k=2, top_k=top_k), tree=tree)
    assert first_tokens_pvalue(spec, model, 3, 200, options) > P_VALUE
    accepted = [n for seed in range(20)
                for n in spec.generate(SMALL_PROMPT, max_new_tokens=6, seed=seed, **options).stats.accepted_lengths]
    assert 0 in accepted and max(accepted) >= 1  # drafts both rejected and accepted: the residual path runs


class RecordingEagleDrafter(EagleDrafter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # DraftTree per step

    def propose(self, ctx):
        tree = super().propose(ctx)
        self.seen.append(tree)
        return tree


def test_sampled_drafts_report_a_distribution_over_the_draft_vocabulary():
    model, vocab = small_model(0), torch.arange(1, 7)
    drafter = RecordingEagleDrafter(random_eagle(model, (0, 1), vocab, seed=3), model, k=3)
    SpecDiff(model, drafter).generate(SMALL_PROMPT, max_new_tokens=10, temperature=1.0, top_k=0, seed=0)
    outside = torch.tensor([t not in vocab.tolist() for t in range(SMALL_V)])
    for tree in (t for t in drafter.seen if t.num_nodes):
        assert tree.kind is ProposalKind.IID
        torch.testing.assert_close(tree.draft_dists.sum(-1), torch.ones(tree.num_nodes))
        assert bool((tree.draft_dists[:, outside] == 0).all()) and set(tree.tokens.tolist()) <= set(vocab.tolist())


# --- files ----------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    model = tiny.build("gpt2")  # learned positions, an LM head tied to the embedding
    eagle = random_eagle(model, (1, 2), EVERY_THIRD)
    eagle.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kind"] == "specdiff-eagle" and config["feature_layers"] == [1, 2] and config["draft_vocab_size"] == 86
    loaded = EagleModel.from_pretrained(tmp_path).attach(model)
    assert loaded.config == eagle.config and torch.equal(loaded.draft_vocab, eagle.draft_vocab)
    for (name, a), (_, b) in zip(eagle.named_parameters(), loaded.named_parameters()):
        torch.testing.assert_close(a.half().float(), b, msg=name)  # weights are stored in fp16
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        stored = set(handle.keys())
    assert "draft_vocab" in stored and not any("wte" in key or "embed" in key or "head" in key for key in stored)
    prompt = tiny.repetitive_prompt()
    result = SpecDiff(model, EagleDrafter.from_pretrained(tmp_path, model, k=3)).generate(prompt, max_new_tokens=12)
    assert result.token_ids == tiny.reference(model, prompt, 12)


def test_refuses_a_mismatched_target(tmp_path):
    eagle = random_eagle(tiny.build("llama"))
    with pytest.raises(ValueError, match="hidden size 64.*hidden size 32.*specdiff train eagle"):
        eagle.attach(tiny.build("llama", hidden_size=32))
    with pytest.raises(ValueError, match="vocabulary 256.*vocabulary 300"):
        EagleDrafter(eagle, tiny.build("llama", vocab_size=300))
    with pytest.raises(ValueError, match="2-layer target, this one has 3 layers"):
        eagle.attach(tiny.build("llama", num_hidden_layers=3))
    with pytest.raises(ValueError, match=r"feature_layers must be .* in \[0, 2\]"):
        EagleConfig(64, 256, 64, 2, (3,), eagle.config.decoder)
    with pytest.raises(ValueError, match="draft_vocab must be distinct"):
        EagleModel.for_target(tiny.build("llama"), draft_vocab=[3, 3])
    with pytest.raises(FileNotFoundError, match="no EAGLE drafter files at"):
        EagleModel.from_pretrained(tmp_path / "nothing")
    tiny.build("llama").save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="not EAGLE drafter files"):
        EagleModel.from_pretrained(tmp_path / "lm")


def test_warm_start_loads_a_matching_drafter_and_names_the_fix_otherwise(tmp_path):
    model = tiny.build("llama")
    shipped = random_eagle(model, (1, 2), EVERY_THIRD, seed=3)
    shipped.save_pretrained(tmp_path / "shipped")
    (tmp_path / "shipped" / "card.json").write_text(json.dumps({"steps": 40}))
    fresh = random_eagle(model, (1, 2), EVERY_THIRD, seed=4)
    assert warm_start(fresh, str(tmp_path / "shipped")) == {"path": str(tmp_path / "shipped"), "steps": 40}
    for (name, a), (_, b) in zip(shipped.named_parameters(), fresh.named_parameters()):
        torch.testing.assert_close(a.half().float(), b, msg=name)  # the stored (fp16) weights, all of them
    with pytest.raises(ValueError, match=r"--init .*feature_layers \[1, 2\] \(recipe: \[2\]\).*without --init"):
        warm_start(random_eagle(model, (2,), EVERY_THIRD), str(tmp_path / "shipped"))
    other_vocab = EVERY_THIRD.clone()
    other_vocab[0] = 1  # as many ids, not the same ones
    with pytest.raises(ValueError, match="draft vocabulary's ids"):
        warm_start(random_eagle(model, (1, 2), other_vocab), str(tmp_path / "shipped"))
    # grown data reorder the frequent tokens: a warm start keeps the drafter's own ids (its head's rows)
    assert torch.equal(kept_vocab(str(tmp_path / "shipped"), other_vocab), EVERY_THIRD)
    assert torch.equal(kept_vocab(str(tmp_path / "shipped"), other_vocab[:5]), other_vocab[:5])  # another size


# --- training on a patterned target ----------------------------------------------------------------

CYCLE = [10, 20, 10, 30, 40, 20, 50]  # the token after 10 or 20 depends on the one before it
STREAM = np.array(CYCLE * 600, dtype=np.uint16)
REPLY, WINDOW = 32, 48  # windows cover whole records: a drafter is trained for the context lengths it meets


def write_distill_dir(directory, prompts: list[list[int]], responses: list[list[int]]):
    """A distillation directory of one shard (what `specdiff train data` writes)."""
    (directory / distill.SHARD_DIR).mkdir(parents=True)
    with gzip.open(directory / distill.PLAN_FILE, "wt") as handle:
        handle.write("{}\n")
    batch = dict(prompt_ids=prompts, response_ids=responses, records=[{} for _ in prompts])
    distill.write_shard(directory, 0, batch, seconds=0.0)
    return directory


def random_distill_dir(directory, records: int, seed: int = 0):
    """A distillation directory of random 8-token prompts and 12-token replies (ids 3..299)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, 300, size=8).tolist() for _ in range(records)]
    return write_distill_dir(directory, prompts, [rng.integers(3, 300, size=12).tolist() for _ in prompts])


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    """A tiny target trained to continue CYCLE, its greedy replies to cycle prompts and their features."""
    root = tmp_path_factory.mktemp("eagle-pattern")
    target = tiny.build("llama")
    windows = WindowSampler(STREAM, seq_len=32, batch_size=8, seed=0)
    config = TrainConfig(steps=60, batch_size=8, seq_len=32, lr=1e-2, warmup_steps=5, weight_decay=0.0,
                         eval_every=60, eval_batches=1, save_every=60)
    train(target.train(), CausalLMObjective(), windows.batch, windows.fixed_batches(1), config, root / "target")
    target.eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    starts = [(int(rng.integers(0, 700)), int(rng.integers(6, 14))) for _ in range(64)]
    prompts = [STREAM[s : s + n].astype(np.int64).tolist() for s, n in starts]
    responses = [tiny.reference(target, torch.tensor([p]), REPLY) for p in prompts]
    assert responses[0] == STREAM[sum(starts[0]) : sum(starts[0]) + REPLY].tolist()  # the target follows the cycle
    data = write_distill_dir(root / "data", prompts, responses)
    features = {split: TeacherFeatures.build(target, data, (1, 2), split, target_name="tiny", cache_dir=root / "cache",
                                             progress=False) for split in ("train", "heldout")}
    assert len(features["heldout"]) >= 2
    return target, features, root


def test_batches_and_labels(pattern):
    _, features, _ = pattern
    sampler = FeatureSampler(features["train"], (2,), seq_len=32, batch_size=4, seed=0, last_layer=2)
    batch = sampler.batch(5)
    assert batch.states.shape == (4, 32, 1, 64) and torch.equal(batch.last, batch.states[:, :, 0])
    assert torch.equal(sampler.batch(5).ids, batch.ids) and not torch.equal(sampler.batch(6).ids, batch.ids)
    labels = step_labels(batch, 1)  # row i of unroll step 1 predicts ids[i + 3], where that is a reply token
    assert torch.equal(labels[:, :-3][batch.reply[:, 3:]], batch.ids[:, 3:][batch.reply[:, 3:]])
    assert (labels[:, -3:] == -100).all()
    with pytest.raises(ValueError, match=r"hold layers \[1, 2\], not \[0\]"):
        FeatureSampler(features["train"], (0, 2), 32, 4)
    assert set(frequent_tokens(features["train"], 5, tiny.VOCAB).tolist()) == set(CYCLE)


def test_windows_of_a_long_prompt_hold_reply_positions():
    # One record: a 100-token prompt (a passage to summarise) and a 20-token reply; windows of 32.
    tokens = np.arange(120, dtype=np.int32)
    features = TeacherFeatures(Path("unused"), (1,), np.array([0, 120]), np.array([100]), tokens,
                               np.zeros((120, 1, 4), dtype=np.float16))
    sampler = FeatureSampler(features, (1,), seq_len=32, batch_size=64, seed=0)
    starts = {int(row[0]) for row in sampler.batch(0).ids}  # ids are positions here
    assert starts <= set(range(84, 89)) and len(starts) > 1  # from S/2 before the reply to the last full window
    assert (sampler.batch(0).reply.sum(dim=1) >= 16).all()


def test_training_reaches_tau_near_k(pattern, tmp_path):
    target, features, _ = pattern
    vocab = frequent_tokens(features["train"], 16, tiny.VOCAB)
    eagle = random_eagle(target, (1, 2), vocab, seed=0)
    sampler = FeatureSampler(features["train"], (1, 2), seq_len=WINDOW, batch_size=8, seed=0)
    heldout = FeatureSampler(features["heldout"], (1, 2), seq_len=WINDOW, batch_size=8, seed=1).fixed_batches(2)
    config = TrainConfig(steps=150, batch_size=8, seq_len=WINDOW, lr=1e-2, warmup_steps=10, weight_decay=0.0,
                         eval_every=150, eval_batches=2, save_every=150)
    result = train(eagle, EagleObjective(steps=3), sampler.batch, heldout, config, tmp_path / "run", desc="eagle")
    k = 4
    chain = chain_acceptance(eagle, heldout, k)
    assert min(chain["acceptance"]) > 0.9 and chain["tau_estimate"] > 0.9 * (k + 1)
    prompt = torch.from_numpy(STREAM[3:12].astype(np.int64))[None]
    expected = tiny.reference(target, prompt, REPLY)
    recipe = EagleRecipe("tiny-eagle", "tiny", "data", config, layers=(1, 2), draft_vocab=16)
    out = export_eagle(recipe, eagle, result, chain, config, tmp_path / "tiny-eagle", features["train"])
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 150 and len(card["heldout_chain"]["acceptance"]) == k
    assert "| 4 |" in (out / "README.md").read_text() and "EagleDrafter.from_pretrained" in (out / "README.md").read_text()
    for drafter, tree in ((EagleDrafter.from_pretrained(out, target, k=k), None),
                          (EagleDrafter.from_pretrained(out, target, k=k, top_k=3), OptTree(node_budget=8))):
        result = SpecDiff(target, drafter, tree=tree).generate(prompt, max_new_tokens=REPLY)
        assert result.token_ids == expected
        assert result.stats.tau >= 0.8 * (k + 1)  # k drafts + the bonus token per step, nearly always


def test_training_resumes_exactly(pattern, tmp_path):
    target, features, _ = pattern
    sampler = FeatureSampler(features["train"], (1, 2), seq_len=16, batch_size=2, seed=0, last_layer=2)
    held_out = sampler.fixed_batches(1)
    objective = EagleObjective(steps=2, feature_weight=0.5)
    config = TrainConfig(steps=6, batch_size=2, seq_len=16, lr=1e-2, warmup_steps=1, eval_every=3, eval_batches=1,
                         save_every=2)
    reference = random_eagle(target, (1, 2), EVERY_THIRD)
    train(reference, objective, sampler.batch, held_out, config, tmp_path / "ref")

    def interrupting(step):
        if step == 3:
            raise KeyboardInterrupt
        return sampler.batch(step)

    first = train(random_eagle(target, (1, 2), EVERY_THIRD), objective, interrupting, held_out, config, tmp_path / "run")
    assert first.interrupted and first.step == 3
    resumed = random_eagle(target, (1, 2), EVERY_THIRD, seed=99)  # fresh weights: all must come from the checkpoint
    second = train(resumed, objective, sampler.batch, held_out, config, tmp_path / "run")
    assert not second.interrupted and second.step == 6
    for (name, a), (_, b) in zip(reference.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)


# --- the method registry and the CLI ---------------------------------------------------------------


def test_registered_methods_build_and_stay_exact(tmp_path):
    model = tiny.build("llama")
    random_eagle(model, (1, 2), EVERY_THIRD).save_pretrained(tmp_path / "eagle")
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, NEW_TOKENS)
    for name, depth in (("eagle", 5), ("eagle-tree", 6), ("eagle-hw", 5), ("eagle-tree-hw", 6)):
        method = methods.get(name)
        eagle = method.load_drafter(str(tmp_path / "eagle"), torch.float32, "cpu")
        spec = methods.build(name, model, None, eagle)
        assert spec.verifier.hidden_layers == (1, -1) and spec.verifier.hidden_history
        assert spec.draft_length.current() == depth
        assert spec.generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected
    with pytest.raises(FileNotFoundError, match="not shipped"):
        methods.get("eagle").load_drafter("no-such-eagle", torch.float32, "cpu")


def test_cli_train_eagle_then_generate(tiny_models, tmp_path, monkeypatch):  # noqa: F811
    target_dir, drafter_dir = tiny_models
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the teacher features' cache
    data = random_distill_dir(tmp_path / "data", 60)
    out = tmp_path / "my-eagle"
    result = invoke("train", "eagle", "--target", target_dir, "--data", data, "--out-dir", out, "--work-dir",
                    tmp_path / "work", "--steps", 2, "--layers", "1,2", "--draft-vocab", 64, "--batch-size", 2,
                    "--seq-len", 16, "--teacher-dtype", "float32", "--mixed-precision", "bf16", "--seed", 3)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 2 and card["eagle"]["draft_vocab_size"] == 64
    assert card["train_config"]["mixed_precision"] == "bf16" and card["train_config"]["seed"] == 3
    assert card["teacher_features"]["layers"] == [1, 2] and card["command"].startswith("specdiff train eagle --target")
    for method in ("eagle", "eagle-tree"):
        result = invoke("generate", "def f(x):\n", "--target", target_dir, "--method", method, "--drafter", out,
                        "--max-new-tokens", 6)
        assert result.exit_code == 0, result.output
    result = invoke("generate", "def f(x):\n", "--target", target_dir, "--method", "eagle", "--drafter", drafter_dir)
    assert_clean_failure(result, "not EAGLE drafter files", "--drafter")
    assert_clean_failure(invoke("train", "eagle", "--target", target_dir, "--data", data, "--out-dir", out,
                                "--layers", "1,x"), "comma-separated integers")
