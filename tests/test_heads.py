"""Medusa-style heads (issue 8): the module and its files, the hidden-state offsets, drafting for free
from the verify pass, greedy equality with `generate` over chain / static tree / OPT-Tree, sampled
runs that follow the target's law, training in the shared loop, the method registry and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import tiny
from transformers import AutoModelForCausalLM

from specdiff import DraftTree, SpecDiff, hf_compat, methods
from specdiff.drafters import DrawnChain, HeadsConfig, HeadsDrafter, MedusaHeads
from specdiff.drafters.base import DraftContext
from specdiff.training.diffusion import greedy_continuations
from specdiff.training.heads import (IGNORE, HeadsObjective, HeadsRecipe, export_heads, following_tokens,
                                     head_accuracy, head_labels)
from specdiff.training.loop import TrainConfig, TrainResult, evaluate, train
from specdiff.trees import Chain, OptTree, StaticTree
from specdiff.verifiers import HFVerifier
from test_cli import assert_clean_failure, invoke, tiny_models  # noqa: F401  (session fixture)
from test_eagle import pattern  # noqa: F401  (module fixture: a tiny target that continues a cycle, its features)
from test_sampling import P_VALUE
from test_sampling_e2e import PROMPT as SMALL_PROMPT
from test_sampling_e2e import V as SMALL_V
from test_sampling_e2e import first_tokens_pvalue, small_model

EVERY_THIRD = torch.arange(0, tiny.VOCAB, 3)  # a reduced draft vocabulary for the tiny targets

NEW_TOKENS = 24


def random_heads(target, num_heads: int = 4, conditioned: bool = False, seed: int = 1, std: float = 0.3):
    """Heads whose blocks are random (zero-initialised ones all repeat the target's own next token)."""
    heads = MedusaHeads.for_target(target, num_heads=num_heads, conditioned=conditioned)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in heads.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return heads


def full_hidden(model, ids: list[int]) -> torch.Tensor:
    """[T, H] the LM head's input over a plain forward of `ids`."""
    with torch.no_grad(), hf_compat.capture_last_hidden(model) as hidden:
        model(input_ids=torch.tensor([ids]))
    return hidden.value[0]


# --- the module -----------------------------------------------------------------------------------


@pytest.mark.parametrize("conditioned", [False, True])
def test_shapes_and_zero_init_heads_are_the_lm_head(conditioned):
    model = tiny.build("llama")
    heads = MedusaHeads.for_target(model, num_heads=3, conditioned=conditioned)
    hidden = torch.randn(2, 5, 64)  # [B, S, H]
    tokens = torch.randint(0, tiny.VOCAB, (2, 5, 3)) if conditioned else None
    logits = heads(hidden, tokens)
    assert logits.shape == (3, 2, 5, tiny.VOCAB)
    # W = 0 and b = 0: every head starts as the target's own LM head (Medusa's initialisation)
    expected = model.get_output_embeddings()(hidden)
    for head_logits in logits:
        torch.testing.assert_close(head_logits, expected)
    own = {name for name, _ in heads.named_parameters()}
    assert not any("output" in name or "embeddings" in name for name in own)  # the target's tensors are shared


def test_batched_forward_equals_each_head():
    model = tiny.build("llama")
    heads = random_heads(model, num_heads=3)
    hidden = torch.randn(2, 5, 64)
    expected = torch.stack([heads.head(i, hidden) for i in range(3)])
    torch.testing.assert_close(heads(hidden), expected)


def test_conditioned_heads_use_the_tokens():
    model = tiny.build("llama")
    heads = random_heads(model, num_heads=2, conditioned=True)
    hidden = torch.randn(64)
    first = heads.head(1, hidden, torch.tensor([5, 6]))
    assert not torch.allclose(first, heads.head(1, hidden, torch.tensor([5, 7])))
    with pytest.raises(ValueError, match=r"tokens \[\.\.\., 2\]"):
        heads.head(1, hidden, torch.tensor([5]))


@pytest.mark.parametrize("conditioned", [False, True])
def test_save_load_round_trip(tmp_path, conditioned):
    model = tiny.build("phi")  # an LM head with a bias
    heads = random_heads(model, num_heads=3, conditioned=conditioned)
    with torch.no_grad():  # values fp16 holds, so the stored (fp16) weights are these exactly
        for parameter in heads.parameters():
            parameter.copy_(parameter.half().float())
    heads.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_heads"] == 3 and config["conditioned"] is conditioned
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as stored:
        keys = set(stored.keys())
        assert {stored.get_tensor(key).dtype for key in keys} == {torch.float16}  # trained weights only, fp16
    assert keys == set(heads.state_dict()) and not any("output" in key for key in keys)
    loaded = MedusaHeads.from_pretrained(tmp_path).attach(model)
    assert loaded.config == heads.config
    hidden = torch.randn(4, 64)
    tokens = torch.randint(0, tiny.VOCAB, (4, 3)) if conditioned else None
    torch.testing.assert_close(loaded(hidden, tokens), heads(hidden, tokens))


def test_refuses_a_mismatched_target(tmp_path):
    heads = MedusaHeads.for_target(tiny.build("llama"), num_heads=2)
    with pytest.raises(ValueError, match="hidden size 64.*hidden size 32.*specdiff train heads"):
        heads.attach(tiny.build("llama", hidden_size=32))
    with pytest.raises(ValueError, match="vocabulary 256.*vocabulary 300.*specdiff train heads"):
        HeadsDrafter(heads, tiny.build("llama", vocab_size=300))
    conditioned = MedusaHeads(HeadsConfig(64, 256, 2, conditioned=True, embedding_size=48))
    with pytest.raises(ValueError, match="48-wide token embeddings"):
        conditioned.attach(tiny.build("llama"))
    with pytest.raises(ValueError, match="need embedding_size"):
        HeadsConfig(64, 256, conditioned=True)
    with pytest.raises(FileNotFoundError, match="no heads at"):
        MedusaHeads.from_pretrained(tmp_path / "nothing")
    tiny.build("llama").save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="holds a model, not heads"):
        MedusaHeads.from_pretrained(tmp_path / "lm")


# --- the hidden state the verifier hands over -------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen3"])
def test_captured_state_is_the_one_that_produced_the_last_committed_token(model_type):
    model = tiny.build(model_type)
    prompt = tiny.repetitive_prompt(12)[0].tolist()
    verifier = HFVerifier(model, hidden_layers=(-1,))
    prefilled = verifier.prefill(prompt)  # the cache holds prompt[:-1]: its last row predicts prompt[-1]
    torch.testing.assert_close(prefilled.hidden_at(-1)[0], full_hidden(model, prompt)[-2], atol=1e-5, rtol=0)
    scored = verifier.score(DraftTree.chain([7, 8, 9]))
    with torch.no_grad():  # it is the LM head's input
        torch.testing.assert_close(model.get_output_embeddings()(scored.hidden[0]), scored.logits, atol=1e-4, rtol=0)
    verifier.commit([0, 1], next_token=11)  # nodes 7, 8 accepted, 11 the bonus
    committed = prompt + [7, 8, 11]
    assert verifier.committed == committed
    torch.testing.assert_close(scored.hidden_at(2)[0], full_hidden(model, committed)[-2], atol=1e-4, rtol=0)
    again = verifier.prefill(committed)  # nothing new to cache: one row is re-fed for its state
    torch.testing.assert_close(again.hidden_at(-1)[0], full_hidden(model, committed)[-2], atol=1e-4, rtol=0)
    assert again.hidden.shape[1] == 1 and again.hidden_start == len(committed) - 2
    assert verifier.prefill([5]).hidden is None  # a new one-token prompt: nothing was run


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_hidden_history_covers_every_committed_position(model_type):
    """With `hidden_history` the prefill hands over every prompt row (a cached prefix is re-fed) and
    each step the rows it committed: together, the target's states at positions 0 .. T - 2."""
    model = tiny.build(model_type)
    prompt = tiny.repetitive_prompt(12)[0].tolist()
    verifier = HFVerifier(model, hidden_layers=(1, -1), hidden_history=True)
    verifier.prefill(prompt)
    verifier.score(DraftTree.chain([7])), verifier.commit([0], next_token=8)
    prefilled = verifier.prefill(prompt + [7, 8])  # a chat turn: the cached prefix is fed again
    assert prefilled.hidden_start == 0 and prefilled.hidden.shape[:2] == (2, len(prompt) + 1)
    full = full_hidden(model, prompt + [7, 8])
    torch.testing.assert_close(prefilled.hidden[1], full[:-1], atol=1e-4, rtol=0)
    scored = verifier.score(DraftTree.chain([3, 4, 5]))
    verifier.commit([0], next_token=6)
    assert scored.hidden_start == len(prompt) + 1
    committed = prompt + [7, 8, 3, 6]
    torch.testing.assert_close(scored.hidden_rows([0, 1])[1], full_hidden(model, committed)[-3:-1], atol=1e-4, rtol=0)


class RecordingHeadsDrafter(HeadsDrafter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # (committed ids, lattice) per step

    def propose(self, ctx):
        lattice = super().propose(ctx)
        self.seen.append((list(ctx.token_ids), lattice))
        return lattice


def test_head_offsets_follow_the_last_committed_token():
    # Zero-initialised heads are the target's LM head on the captured state, so every row's top token
    # is what that state predicted: after a greedy step, the bonus token just committed; after the
    # prefill, the target's guess for the prompt's last token. An off-by-one would make them predict
    # the target's next token instead, and be accepted every time.
    model = tiny.build("llama")
    prompt = tiny.repetitive_prompt()
    drafter = RecordingHeadsDrafter(MedusaHeads.for_target(model, num_heads=3), model, top_k=2)
    SpecDiff(model, drafter).generate(prompt, max_new_tokens=16)
    assert len(drafter.seen) > 3
    with torch.no_grad():
        guess = int(model(prompt).logits[0, -2].argmax())
    for step, (committed, lattice) in enumerate(drafter.seen):
        expected = guess if step == 0 else committed[-1]
        assert lattice.candidates[:, 0].tolist() == [expected] * lattice.length


def test_drafting_costs_no_target_forward():
    model = tiny.build("llama")
    drafter = HeadsDrafter(random_heads(model), model)
    spec = SpecDiff(model, drafter, tree=OptTree(node_budget=8))
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = spec.generate(tiny.repetitive_prompt(), max_new_tokens=NEW_TOKENS)
    finally:
        handle.remove()
    steps = len(result.stats.accepted_lengths)
    assert result.stats.target_forwards == steps == spec.verifier.forward_count
    assert len(calls) == 1 + steps  # the prefill, then one verify forward per step: nothing for drafting
    drafted = sum(1 for depth in result.stats.draft_depths if depth > 0)  # the last step may have no budget left
    assert drafter.forward_count == result.stats.drafter_forwards == drafted >= steps - 1


def test_a_one_token_prompt_starts_without_a_draft():
    model = tiny.build("llama")
    drafter = RecordingHeadsDrafter(random_heads(model), model)
    prompt = torch.tensor([[17]])
    result = SpecDiff(model, drafter).generate(prompt, max_new_tokens=8)
    assert result.token_ids == tiny.reference(model, prompt, 8)
    assert drafter.seen[0][1].length == 0 and all(lattice.length > 0 for _, lattice in drafter.seen[1:])


# --- greedy equality with generate -----------------------------------------------------------------

TREES = {"chain": Chain(), "static": StaticTree.from_widths((3, 2, 2, 1)), "opt-tree": OptTree(node_budget=10)}


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen3", "opt", "phi"])
def target(request):
    model = tiny.build(request.param)
    prompt = tiny.repetitive_prompt()
    return model, prompt, tiny.reference(model, prompt, NEW_TOKENS)


@pytest.mark.parametrize("tree", TREES)
def test_greedy_equals_generate(target, tree):
    model, prompt, expected = target
    for heads, vocab in ((MedusaHeads.for_target(model), None), (random_heads(model), None),
                         (random_heads(model, conditioned=True), None), (random_heads(model), EVERY_THIRD),
                         (random_heads(model, conditioned=True), EVERY_THIRD)):
        result = SpecDiff(model, HeadsDrafter(heads, model, top_k=3, draft_vocab=vocab), tree=TREES[tree]).generate(
            prompt, max_new_tokens=NEW_TOKENS)
        assert result.token_ids == expected


@pytest.mark.parametrize("conditioned", [False, True])
def test_a_reduced_draft_vocabulary_projects_onto_its_rows_only(conditioned):
    model = tiny.build("qwen3")
    heads = random_heads(model, conditioned=conditioned)
    drafter = HeadsDrafter(heads, model, top_k=3, draft_vocab=EVERY_THIRD)
    hidden = torch.randn(64)
    tokens = torch.tensor([5, 6, 7, 8])
    with torch.no_grad():
        full = heads(hidden, tokens if conditioned else None)  # [k, V]
        reduced = heads(hidden, tokens if conditioned else None, rows=drafter._rows)  # [k, N]
        scattered = drafter._full(reduced)
    torch.testing.assert_close(reduced, full[:, EVERY_THIRD])  # the same columns of the same product
    outside = torch.ones(tiny.VOCAB, dtype=torch.bool)
    outside[EVERY_THIRD] = False
    assert bool(torch.isinf(scattered[:, outside]).all()) and torch.equal(scattered[:, EVERY_THIRD], reduced)
    seen = []
    propose = drafter.propose
    drafter.propose = lambda ctx: seen.append(propose(ctx)) or seen[-1]
    prompt = tiny.repetitive_prompt()
    result = SpecDiff(model, drafter, tree=OptTree(node_budget=8)).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == tiny.reference(model, prompt, NEW_TOKENS)
    lattices = [lattice for lattice in seen if lattice.candidates.numel()]
    assert lattices and all(set(lattice.candidates.flatten().tolist()) <= set(EVERY_THIRD.tolist())
                            for lattice in lattices)
    assert all(lattice.dists is None for lattice in lattices)  # greedy, no processors: ranked inside the rows
    # with a processor to apply the rows are widened to the whole vocabulary: the same candidates, q = 0 outside
    from transformers import LogitsProcessor, LogitsProcessorList

    class Identity(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores

    state = torch.randn(1, 64)
    narrow = drafter.propose(DraftContext([5, 6, 7], 4, state))
    wide = drafter.propose(DraftContext([5, 6, 7], 4, state, processors=LogitsProcessorList([Identity()])))
    assert torch.equal(narrow.candidates, wide.candidates) and float(wide.dists[:, outside].sum()) == 0
    torch.testing.assert_close(narrow.probs, wide.probs)
    with pytest.raises(ValueError, match=r"token ids in \[0, 256\)"):
        HeadsDrafter(heads, model, draft_vocab=[0, 300])


def test_greedy_with_a_repetition_penalty_equals_generate():
    model = tiny.build("llama")
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, NEW_TOKENS, repetition_penalty=1.3)
    for tree in TREES.values():
        spec = SpecDiff(model, HeadsDrafter(MedusaHeads.for_target(model), model), tree=tree)
        assert spec.generate(prompt, max_new_tokens=NEW_TOKENS, repetition_penalty=1.3).token_ids == expected


def test_drafts_are_accepted_somewhere():
    # The equality above means something only if some drafts pass: on a looping target the
    # zero-initialised heads (which repeat the last token) are right.
    model = tiny.build("opt")
    prompt = tiny.repetitive_prompt()
    result = SpecDiff(model, HeadsDrafter(MedusaHeads.for_target(model), model)).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == tiny.reference(model, prompt, NEW_TOKENS)
    assert result.stats.tau > 1.5


# --- sampling -------------------------------------------------------------------------------------

SAMPLED = {
    "chain": (Chain(), False, dict(temperature=1.0, top_k=0)),
    "opt-tree-warped": (OptTree(node_budget=4), False, dict(temperature=0.8, top_k=5, repetition_penalty=1.2)),
    "static-hydra": (StaticTree.from_widths((2, 2)), True, dict(temperature=1.0, top_k=0)),
    "opt-tree-reduced-vocab": (OptTree(node_budget=4), False, dict(temperature=1.0, top_k=0)),
    # the `heads` method's sampled chain: drawn from the heads' rows (DrawnChain), an IID tree
    "drawn-chain-reduced-vocab": (Chain(), False, dict(temperature=0.8, top_k=5, repetition_penalty=1.2)),
    "drawn-hydra-chain": (Chain(), True, dict(temperature=1.0, top_k=0)),
    # the hybrids' drawn chain stops after a draw whose path probability is <= 0.4 (`heads-lookup`)
    "drawn-chain-cut": (Chain(), False, dict(temperature=1.0, top_k=0)),
}
REDUCED = [i for i in range(SMALL_V) if i % 3]  # the sampled case's draft vocabulary: 2 of every 3 tokens


@pytest.mark.parametrize("case", SAMPLED)
def test_sampled_runs_follow_the_target(case):
    tree, conditioned, options = SAMPLED[case]
    model = small_model(0)
    heads = random_heads(model, num_heads=2, conditioned=conditioned, std=1.0)
    vocab = REDUCED if case.endswith("reduced-vocab") else None
    drafter = HeadsDrafter(heads, model, top_k=2, draft_vocab=vocab)
    path_cut = 0.4 if case.endswith("-cut") else 0.0
    spec = SpecDiff(model, DrawnChain(drafter, path_cut=path_cut) if case.startswith("drawn") else drafter, tree=tree)
    assert first_tokens_pvalue(spec, model, 3, 200, options) > P_VALUE
    accepted = [n for seed in range(20)
                for n in spec.generate(SMALL_PROMPT, max_new_tokens=6, seed=seed, **options).stats.accepted_lengths]
    assert 0 in accepted and max(accepted) >= 1  # drafts both rejected and accepted: the residual path runs


# --- training -------------------------------------------------------------------------------------


def test_labels_and_teacher_forced_tokens_by_hand():
    batch = torch.tensor([[10, 11, 12, 13, 14, 0]])
    assert head_labels(batch, 0).tolist() == [[12, 13, 14, 0, IGNORE, IGNORE]]
    # head 1 at j labels batch[j + 3]: j = 0 lies in the prompt (< 4), j = 2 is padding
    assert head_labels(batch, 1, label_start=4, ignore_token_id=0).tolist() == [[IGNORE, 14] + [IGNORE] * 4]
    assert following_tokens(batch, 2).tolist() == [[[11, 12], [12, 13], [13, 14], [14, 0], [0, 0], [0, 0]]]


def periodic_stream(length: int = 4000, period: int = 7) -> torch.Tensor:
    cycle = torch.randperm(tiny.VOCAB - 3, generator=torch.Generator().manual_seed(0))[:period] + 3
    return cycle.repeat(length // period + 1)[:length]


@pytest.mark.parametrize("conditioned", [False, True])
def test_training_lowers_the_loss(tmp_path, conditioned):
    target = tiny.build("llama")
    stream = periodic_stream()
    windows = stream.unfold(0, 32, 3)  # [W, 32]

    def sample(step: int) -> torch.Tensor:
        return windows[torch.randint(len(windows), (4,), generator=torch.Generator().manual_seed(step))]

    heads = MedusaHeads.for_target(target, num_heads=3, conditioned=conditioned)
    objective = HeadsObjective(target)
    held_out = [sample(-1), sample(-2)]
    before = evaluate(heads, objective, held_out, "cpu")
    config = TrainConfig(steps=40, batch_size=4, seq_len=32, lr=1e-2, warmup_steps=0, weight_decay=0.0,
                         eval_every=40, save_every=40)
    result = train(heads, objective, sample, held_out, config, tmp_path / "run", desc="heads smoke")
    assert result.step == 40 and result.eval_loss < 0.5 * before
    assert all(not p.requires_grad for p in target.parameters())
    accuracy = head_accuracy(heads, objective, held_out)
    assert len(accuracy["top1"]) == 3 and min(accuracy["top5"]) > 0.5


def test_self_distillation_rows_and_the_model_card(tmp_path):
    target = tiny.build("llama")
    prompts = periodic_stream(64).reshape(8, 8)  # [8, P=8]
    rows = torch.from_numpy(greedy_continuations(target, prompts, 8).astype("int64"))  # [8, 16]
    objective = HeadsObjective(target, label_start=8, ignore_token_id=target.generation_config.pad_token_id)
    heads = MedusaHeads.for_target(target, num_heads=2)
    config = TrainConfig(steps=30, batch_size=8, seq_len=16, lr=1e-2, warmup_steps=0, weight_decay=0.0,
                         eval_every=30, save_every=30)
    before = evaluate(heads, objective, [rows], "cpu")
    result = train(heads, objective, lambda step: rows, [rows], config, tmp_path / "run", desc="heads smoke")
    assert result.eval_loss < before
    recipe = HeadsRecipe("tiny-heads", "heads for a tiny target", "tiny", config, num_heads=2, prompt_tokens=8,
                         continuation_tokens=8, examples=8, command="pytest")
    out = export_heads(recipe, heads, result, head_accuracy(heads, objective, [rows]), config, tmp_path / "tiny-heads")
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 30 and len(card["head_accuracy"]["top1"]) == 2 and card["labels"] == "target"
    assert "| 1 | 3 |" in (out / "README.md").read_text()  # head 1 predicts 3 positions after its state's token
    assert MedusaHeads.from_pretrained(out).config == heads.config


def test_distilled_heads_ship_a_reduced_draft_head(tmp_path):
    from test_eagle import write_distill_dir

    target = tiny.build("llama")
    prompts = periodic_stream(96).reshape(12, 8).tolist()
    responses = [tiny.reference(target, torch.tensor([p]), 8) for p in prompts]
    data = write_distill_dir(tmp_path / "data", prompts, responses)
    heads = random_heads(target, num_heads=2)
    config = TrainConfig(steps=1, batch_size=2, seq_len=16, warmup_steps=0)
    recipe = HeadsRecipe("tiny-heads", "heads for a tiny target", "tiny", config, num_heads=2, labels="distill",
                         data=str(data), draft_vocab=16, command="pytest")
    result = TrainResult(step=1, eval_loss=1.0, tokens_seen=32, train_seconds=0.1)
    accuracy = {"labels_per_head": 1, "top1": [0.5, 0.5], "top5": [0.5, 0.5]}
    out = export_heads(recipe, heads, result, accuracy, config, tmp_path / "tiny-heads")
    card = json.loads((out / "card.json").read_text())
    replies = {token for response in responses for token in response}
    ids = json.loads((out / "draft_vocab.json").read_text())["ids"]
    assert card["draft_vocab"]["size"] == len(ids) == 16 and len(replies) <= 16 and replies <= set(ids)
    assert "`draft_vocab.json`: 16 tokens" in (out / "README.md").read_text()
    drafter = HeadsDrafter.from_pretrained(out, target)  # "auto": the file beside the heads
    assert drafter.draft_vocab.tolist() == ids
    assert HeadsDrafter.from_pretrained(out, target, draft_vocab=None).draft_vocab is None
    prompt = tiny.repetitive_prompt()
    assert SpecDiff(target, drafter).generate(prompt, NEW_TOKENS).token_ids == tiny.reference(target, prompt, NEW_TOKENS)
    with pytest.raises(ValueError, match="draft_vocab must be >= 0"):
        HeadsRecipe("x", "", "t", config, labels="distill", data=str(data), draft_vocab=-1)


def test_recipe_validation():
    config = TrainConfig(steps=10, seq_len=128, warmup_steps=0)
    with pytest.raises(ValueError, match="labels must be one of target, corpus"):
        HeadsRecipe("x", "", "t", config, labels="gold")
    with pytest.raises(ValueError, match="seq_len to 96"):
        HeadsRecipe("x", "", "t", config, prompt_tokens=64, continuation_tokens=32)
    HeadsRecipe("x", "", "t", config, labels="corpus", prompt_tokens=64, continuation_tokens=32)
    with pytest.raises(ValueError, match="--data"):
        HeadsRecipe("x", "", "t", config, labels="corpus", prompt_tokens=64, continuation_tokens=32, init="heads")


# --- the method registry and the CLI ---------------------------------------------------------------


def test_registered_methods_build_and_stay_exact(tmp_path):
    model = tiny.build("llama")
    random_heads(model, num_heads=3).save_pretrained(tmp_path / "heads")
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, NEW_TOKENS)
    for name in ("heads", "heads-tree"):
        method = methods.get(name)
        heads = method.load_drafter(str(tmp_path / "heads"), torch.float32, "cpu")
        spec = methods.build(name, model, None, heads)
        assert spec.verifier.hidden_layers == (-1,) and spec.draft_length.current() == 3
        assert spec.generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected
    with pytest.raises(FileNotFoundError, match="not shipped"):
        methods.get("heads").load_drafter("no-such-heads", torch.float32, "cpu")


def test_cli_generate_with_heads(tiny_models, tmp_path):  # noqa: F811
    target_dir, drafter_dir = tiny_models
    target = AutoModelForCausalLM.from_pretrained(target_dir)
    MedusaHeads.for_target(target, num_heads=3).save_pretrained(tmp_path / "heads")
    for method in ("heads", "heads-tree"):
        result = invoke("generate", "def f(x):\n", "--target", target_dir, "--method", method,
                        "--drafter", tmp_path / "heads", "--max-new-tokens", 6)
        assert result.exit_code == 0, result.output
    result = invoke("generate", "def f(x):\n", "--target", target_dir, "--method", "heads", "--drafter", drafter_dir)
    assert_clean_failure(result, "holds a model, not heads", "--drafter")


def test_cli_train_heads_needs_an_out_dir_for_other_targets(tiny_models):  # noqa: F811
    target_dir, _ = tiny_models
    assert_clean_failure(invoke("train", "heads", "--target", target_dir), "--out-dir")


@pytest.fixture
def few_corpus_files(monkeypatch):
    """The stdlib split cut to a few files, so a recipe run encodes its corpus in a moment."""
    from specdiff.zoo import corpus

    root = corpus.stdlib_root()
    split = corpus.CorpusSplit(train=[root / "bisect.py", root / "heapq.py"], heldout=[root / "colorsys.py"])
    monkeypatch.setattr(corpus, "split_files", lambda: split)


def test_cli_train_heads_on_a_local_target(tiny_models, few_corpus_files, tmp_path):  # noqa: F811
    target_dir, _ = tiny_models
    result = invoke("train", "heads", "--target", target_dir, "--labels", "corpus", "--num-heads", "2", "--steps", 2,
                    "--work-dir", tmp_path / "work", "--out-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "target-heads"
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 2 and card["labels"] == "corpus" and len(card["head_accuracy"]["top1"]) == 2
    heads = MedusaHeads.from_pretrained(out)
    assert heads.config.target == str(target_dir) and heads.num_heads == 2


def test_self_distillation_recipe_runs_end_to_end(tiny_models, few_corpus_files, tmp_path):  # noqa: F811
    from dataclasses import replace

    from specdiff.training.heads import run_heads_recipe
    from specdiff.training.recipes import RECIPES

    target_dir, _ = tiny_models
    config = TrainConfig(steps=2, batch_size=4, seq_len=16, warmup_steps=0, eval_every=2, eval_batches=1, save_every=2)
    recipe = replace(RECIPES["stdlib-heads"], name="tiny-heads", target=str(target_dir), train=config, num_heads=2,
                     prompt_tokens=8, continuation_tokens=8, examples=8, heldout_examples=4)
    result = run_heads_recipe(recipe, tmp_path / "work", None, tmp_path / "out")
    assert result.step == 2
    card = json.loads((tmp_path / "out" / "tiny-heads" / "card.json").read_text())
    assert card["labels"] == "target" and card["head_accuracy"]["labels_per_head"] > 0
    assert list((tmp_path / "work" / "tiny-heads").glob("train-continuations-8x8+8-seed0.npy"))


# --- distilled heads: trained from the target's cached LM-head inputs -------------------------------


def test_position_batches_by_hand(tmp_path):
    from test_eagle import write_distill_dir

    from specdiff.training.features import TeacherFeatures
    from specdiff.training.heads import PositionSampler

    target = tiny.build("llama")
    records = [([5, 6, 7], [8, 9, 10, 11]), ([12, 13], [14, 15, 16])]
    data = write_distill_dir(tmp_path / "data", [p for p, _ in records], [r for _, r in records])
    features = TeacherFeatures.build(target, data, (1, 2), "all", target_name="tiny", cache_dir=tmp_path / "cache",
                                     progress=False)
    sampler = PositionSampler(features, 2, num_heads=2, count=64, seed=0)
    # head 0's label (2 ahead) must be a reply token: positions 1..4 of the first record, 0..2 of the second
    # (flat positions 7..9: the second record starts at token 7)
    assert sampler.positions.tolist() == [1, 2, 3, 4, 7, 8, 9] and sampler.ends.tolist() == [7] * 4 + [12] * 3
    batch = sampler.batch(3)
    assert batch.states.shape == (64, 64) and batch.tokens.shape == batch.labels.shape == (64, 2)
    hidden = [full_hidden(target, p + r) for p, r in records]  # [T, H] per record
    seen = set()
    for state, tokens, labels in zip(batch.states, batch.tokens, batch.labels):
        # which position it is: the record row its state is (fp16 rounding apart)
        r, t = min(((r, t) for r in range(2) for t in range(len(hidden[r]))),
                   key=lambda rt: (hidden[rt[0]][rt[1]] - state).abs().max().item())
        torch.testing.assert_close(state, hidden[r][t], atol=1e-2, rtol=1e-2)
        ids = records[r][0] + records[r][1]
        assert t + 2 >= len(records[r][0])  # its first label is a reply token
        assert tokens.tolist() == [ids[t + 1 + m] if t + 1 + m < len(ids) else 0 for m in range(2)]
        assert labels.tolist() == [ids[t + 2 + i] if t + 2 + i < len(ids) else IGNORE for i in range(2)]
        seen.add((r, t))
    assert len(seen) == 7  # every trainable position drawn
    assert torch.equal(sampler.batch(3).labels, batch.labels) and torch.equal(sampler.batch(3).states, batch.states)
    with pytest.raises(ValueError, match=r"hold layers \[1, 2\], not the LM head's input 3"):
        PositionSampler(features, 3, 2, 8)


@pytest.mark.parametrize("conditioned", [False, True])
def test_heads_learn_a_pattern_from_features(pattern, conditioned, tmp_path):  # noqa: F811
    """A tiny target that continues a cycle, its replies' features: heads trained on them draft the cycle
    (every head right, tau near k + 1), over a reduced draft head, and stay exact."""
    import numpy as np

    from specdiff.training.heads import FeatureHeadsObjective, PositionSampler
    from specdiff.vocab import frequent_tokens, write_draft_vocab
    from test_eagle import REPLY, STREAM

    target, features, _ = pattern
    k = 3
    draft_ids = frequent_tokens([features["train"].ids(i) for i in range(len(features["train"]))], 16, tiny.VOCAB)
    heads = MedusaHeads.for_target(target, num_heads=k, conditioned=conditioned)
    objective = FeatureHeadsObjective(draft_ids)
    sampler = PositionSampler(features["train"], 2, k, count=256, seed=0)
    heldout = PositionSampler(features["heldout"], 2, k, count=256, seed=1).fixed_batches(2)
    config = TrainConfig(steps=80, batch_size=8, seq_len=32, lr=1e-2, warmup_steps=5, weight_decay=0.0,
                         eval_every=80, eval_batches=2, save_every=80)
    before = evaluate(heads, objective, heldout, "cpu")
    result = train(heads, objective, sampler.batch, heldout, config, tmp_path / "run", desc="heads")
    assert result.eval_loss < 0.1 * before
    accuracy = objective.accuracy(heads, heldout)
    assert min(accuracy["top1"]) > 0.95, accuracy
    heads.save_pretrained(tmp_path / "heads")
    write_draft_vocab(tmp_path / "heads", draft_ids, {"source": "test"})
    drafter = HeadsDrafter.from_pretrained(tmp_path / "heads", target)
    assert drafter.draft_vocab.tolist() == draft_ids.tolist()
    prompt = torch.from_numpy(STREAM[3:12].astype(np.int64))[None]
    run = SpecDiff(target, drafter).generate(prompt, max_new_tokens=REPLY)
    assert run.token_ids == tiny.reference(target, prompt, REPLY)
    assert run.stats.tau >= 0.8 * (k + 1)


def test_cli_train_distilled_heads_from_features_then_generate(tiny_models, tmp_path, monkeypatch):  # noqa: F811
    from test_eagle import random_distill_dir

    target_dir, _ = tiny_models
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the teacher features' cache
    data = random_distill_dir(tmp_path / "data", 40)
    result = invoke("train", "heads", "--target", target_dir, "--data", data, "--out-dir", tmp_path / "out",
                    "--work-dir", tmp_path / "work", "--steps", 3, "--num-heads", 2, "--draft-vocab", 64,
                    "--batch-size", 2, "--seq-len", 16, "--lr", 0.01, "--mixed-precision", "bf16")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "target-heads"
    card = json.loads((out / "card.json").read_text())
    assert card["labels"] == "distill" and card["steps"] == 3 and card["draft_vocab"]["size"] == 64
    assert card["train_config"]["mixed_precision"] == "bf16" and card["train_config"]["lr"] == 0.01
    assert card["head_accuracy"]["labels_per_head"] > 0 and card["teacher_features"]["layers"] == [0, 1, 2]
    assert "32 random reply positions a step" in (out / "README.md").read_text()
    assert "--mixed-precision bf16" in card["command"] and "--batch-size 2 --seq-len 16" in card["command"]
    # the one feature build EAGLE's default would make too (its taps and the LM head's input), both splits
    built = sorted(path.name for path in (tmp_path / "cache" / "specdiff" / "features").iterdir())
    assert len(built) == 2 and all(name.endswith("-l0-1-2-bfloat16") for name in built), built
    for method in ("heads", "heads-tree"):
        result = invoke("generate", "def f(x):\n", "--target", target_dir, "--method", method, "--drafter", out,
                        "--max-new-tokens", 6)
        assert result.exit_code == 0, result.output

    # A warm start: the exported heads' weights, then more steps; the card says where it started.
    from specdiff.drafters.heads import MedusaHeads
    from specdiff.training.heads import warm_start_heads

    before = MedusaHeads.from_pretrained(out)
    fresh = MedusaHeads(before.config)
    assert warm_start_heads(fresh, str(out)) == {"path": str(out), "steps": 3}
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), before.state_dict().values()))
    result = invoke("train", "heads", "--target", target_dir, "--data", data, "--out-dir", tmp_path / "more",
                    "--work-dir", tmp_path / "work2", "--steps", 2, "--num-heads", 2, "--draft-vocab", 64,
                    "--batch-size", 2, "--seq-len", 16, "--init", out)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "more" / "target-heads" / "card.json").read_text())
    assert card["started_from"] == {"path": str(out), "steps": 3} and f"--init {out}" in card["command"]
    assert f"after 3 steps of {out}" in (tmp_path / "more" / "target-heads" / "README.md").read_text()
    # Other shapes are refused with the fix named.
    result = invoke("train", "heads", "--target", target_dir, "--data", data, "--out-dir", tmp_path / "other",
                    "--work-dir", tmp_path / "work3", "--steps", 2, "--num-heads", 3, "--init", out)
    assert_clean_failure(result, "num_heads 2 (recipe: 3)")


def test_control_a_chain_not_drawn_from_the_rows_it_reports_fails(monkeypatch):
    """The chi-square above can tell: reporting the rows as q but taking their argmax (an IID claim that is false)
    skews the first tokens."""
    import specdiff.drafters.drawn as drawn

    monkeypatch.setattr(drawn, "sample_token", lambda row, generator: int(row.argmax()))
    model = small_model(0)
    heads = random_heads(model, num_heads=2, std=1.0)
    spec = SpecDiff(model, DrawnChain(HeadsDrafter(heads, model, top_k=2)), tree=Chain())
    assert first_tokens_pvalue(spec, model, 3, 200, dict(temperature=1.0, top_k=0)) < P_VALUE
