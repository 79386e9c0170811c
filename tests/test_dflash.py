"""DFlash, target-conditioned block diffusion (issue 15): the drafter's one forward and the training
block mask by hand, training and inference seeing the same blocks, greedy equality with `generate` for
every dflash method on several architectures, a pattern only the target's hidden states reveal (and
that features one position off lose), sampling that follows the target's law, exact resume, files, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import tiny
from specdiff import ProposalKind, SpecDiff, methods
from specdiff.drafters import DFlashModel, DrawnChain, TargetDiffusionDrafter
from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.lattice import prune_lattice
from specdiff.types import TokenLattice
from specdiff.training import distill
from specdiff.trees import MeasuredDraftLength, MeasuredSize
from specdiff.training.dflash import (IGNORE, AnchorBatch, AnchorSampler, DFlashObjective, anchor_block_logits,
                                      anchor_block_mask, block_labels, heldout_acceptance, slot_weights,
                                      to_draft_labels)
from specdiff.training.distill import teacher_hidden_states
from specdiff.training.features import TeacherFeatures
from specdiff.vocab import to_full_vocab
from specdiff.training.loop import TrainConfig, train
from test_cli import assert_clean_failure, invoke, tiny_models  # noqa: F401  (session fixture)
from test_measured import FixedCost
from test_sampling import P_VALUE
from test_sampling_e2e import first_tokens_pvalue, small_model

NEW_TOKENS = 20
METHODS = ["dflash", "dflash-cut", "dflash-hw", "dflash-cps", "dflash-opt-tree", "dflash-opt-tree-hw", "dflash-adl",
           "dflash-lookup"]


def untrained(target, block_size: int = 5, seed: int = 1, fused_masks: bool = False) -> DFlashModel:
    torch.manual_seed(seed)
    return DFlashModel.for_target(target, block_size=block_size, fused_masks=fused_masks)


def target_features(target, ids: list[int], layers) -> torch.Tensor:
    """[T, layers, H] the target's hidden states over a plain forward of `ids`."""
    return teacher_hidden_states(target, [ids], layers)[0]


# --- the masks, by hand ------------------------------------------------------------------------


def test_one_forward_per_step_context_causal_block_bidirectional():
    target = tiny.build("llama")
    drafter = TargetDiffusionDrafter(untrained(target, block_size=4), target)
    calls = []
    forward = drafter.lm.forward
    drafter.lm.forward = lambda ids, positions, visible, **kw: calls.append((positions, visible)) or forward(
        ids, positions, visible, **kw)
    prompt = [5, 6, 7, 8]
    states = target_features(target, prompt, drafter.needs.hidden_layers).transpose(0, 1)  # [layers, T, H]
    lattice = drafter.propose(DraftContext(prompt, budget=3, new_hidden=states[:, :3], new_hidden_start=0))
    assert lattice.length == 3 and len(calls) == 1
    positions, visible = calls[0]
    # context rows 0..2 (states of tokens 5, 6, 7), anchor 8 at 3, masks at 4..6
    assert positions.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert visible.int().tolist() == [[1, 0, 0, 0, 0, 0, 0],
                                      [1, 1, 0, 0, 0, 0, 0],
                                      [1, 1, 1, 0, 0, 0, 0],
                                      [1, 1, 1, 1, 1, 1, 1],
                                      [1, 1, 1, 1, 1, 1, 1],
                                      [1, 1, 1, 1, 1, 1, 1],
                                      [1, 1, 1, 1, 1, 1, 1]]
    assert drafter.lm.ids == [5, 6, 7] and drafter.lm.pending == 0  # the block is dropped
    # next step: tokens 9, 10 committed, the verifier hands over the states at positions 3 and 4
    committed = prompt + [9, 10]
    states = target_features(target, committed, drafter.needs.hidden_layers).transpose(0, 1)
    drafter.propose(DraftContext(committed, budget=2, new_hidden=states[:, 3:5], new_hidden_start=3))
    positions, visible = calls[1]
    assert positions.tolist() == [3, 4, 5, 6, 7] and visible.shape == (5, 5)  # 2 context rows, anchor, 2 masks
    assert visible[:2, :2].tolist() == [[True, False], [True, True]] and bool(visible[2:].all())
    assert drafter.lm.ids == committed[:-1]
    with pytest.raises(RuntimeError, match="not handed over"):  # a step's states went missing
        drafter.propose(DraftContext(committed + [3, 4, 5], budget=2, new_hidden=states[:, :1], new_hidden_start=7))


def test_training_block_mask_by_hand():
    # 4 context rows; a block of 2 anchored at 2 and a padding block
    allowed = anchor_block_mask(torch.tensor([[2, -1]]), seq_len=4, block_size=2)[0]
    assert allowed.int().tolist() == [[1, 0, 0, 0, 0, 0, 0, 0],
                                      [1, 1, 0, 0, 0, 0, 0, 0],
                                      [1, 1, 1, 0, 0, 0, 0, 0],
                                      [1, 1, 1, 1, 0, 0, 0, 0],
                                      [1, 1, 0, 0, 1, 1, 0, 0],  # sees the context before its anchor, its block
                                      [1, 1, 0, 0, 1, 1, 0, 0],
                                      [0, 0, 0, 0, 0, 0, 1, 1],  # padding: only itself
                                      [0, 0, 0, 0, 0, 0, 1, 1]]
    batch = AnchorBatch(torch.tensor([[4, 5, 6, 7]]), torch.zeros(1, 4, 1, 2), torch.tensor([0]),
                        torch.tensor([4]), torch.tensor([[2, -1]]))
    assert block_labels(batch, 3).tolist() == [[[IGNORE, 7, IGNORE], [IGNORE] * 3]]  # slot 2 runs past the row
    assert slot_weights(4, gamma=2.0).tolist() == pytest.approx([0.0, 1.0, np.exp(-0.5), np.exp(-1.0)])


@pytest.mark.parametrize("fused", [False, True], ids=["plain-masks", "fused-masks"])
@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_training_blocks_are_the_drafted_blocks(model_type, fused):
    """The training forward's block at anchor p equals the drafter's block after committing tokens 0..p,
    whether the drafter got every state at once or, as in decoding, a step's new states only."""
    target = tiny.build(model_type)
    model = untrained(target, block_size=4, fused_masks=fused)
    ids = tiny.repetitive_prompt(12)[0].tolist()
    features = target_features(target, ids, model.config.layers)  # [S, layers, H]
    anchors = torch.tensor([[3, 8, -1]])
    batch = AnchorBatch(torch.tensor([ids]), features[None].half(), torch.tensor([0]), torch.tensor([12]), anchors)
    with torch.no_grad():
        trained_view = anchor_block_logits(model, batch)[0]  # [A, b, V]
    drafter = TargetDiffusionDrafter(model, target)
    for a, p in enumerate([3, 8]):
        drafter.reset()
        states = features[:p].half().transpose(0, 1)
        ctx = DraftContext(ids[: p + 1], budget=3, new_hidden=states, new_hidden_start=0)
        torch.testing.assert_close(drafter._block_logits(ctx, 3), trained_view[a, 1:], atol=1e-4, rtol=0)
    drafter.reset()
    drafter._block_logits(DraftContext(ids[:4], budget=3, new_hidden=features[:3].half().transpose(0, 1)), 3)
    later = DraftContext(ids[:9], budget=3, new_hidden=features[3:8].half().transpose(0, 1), new_hidden_start=3)
    torch.testing.assert_close(drafter._block_logits(later, 3), trained_view[1, 1:], atol=1e-4, rtol=0)


def test_fused_masks_carry_the_anchor_and_the_last_context_row():
    target = tiny.build("llama")
    plain, fused = untrained(target, block_size=4), untrained(target, block_size=4, fused_masks=True)
    anchor, last = torch.tensor(7), torch.randn(plain.config.hidden_size)
    embedding = target.get_input_embeddings().weight[7]
    with torch.no_grad():
        rows, plain_rows = fused.block_embeds(anchor, 4, last), plain.block_embeds(anchor, 4, last)
    torch.testing.assert_close(rows[0], embedding)  # the anchor row as before
    torch.testing.assert_close(rows[1:], (fused.mask_embedding + embedding + last).expand(3, -1))
    torch.testing.assert_close(plain_rows[1:], plain.mask_embedding.expand(3, -1))  # one vector in every block


# --- lossless ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gpt2", "gemma", "phi3"])
def test_greedy_equals_generate_for_every_method(model_type):
    target = tiny.build(model_type)
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(target, prompt, NEW_TOKENS)
    for model in (untrained(target), untrained(target, fused_masks=True)):
        for name in METHODS:
            spec = methods.build(name, target, None, model)
            assert spec.generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected, name
            steps = len(spec.last_stats.accepted_lengths)
            assert steps - 1 <= spec.drafter.forward_count <= steps  # one forward a step (none for a last bonus-only one)
    assert methods.build("dflash", target, None, model, methods.MethodOptions(draft_length=99)).drafter.k == 4


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_a_reduced_draft_vocabulary_is_lossless_and_proposes_inside_it(model_type):
    """FR-Spec for DFlash: only the draft vocabulary's LM-head rows run; its logits are the full head's
    columns, -inf elsewhere; the output is generate's; draft_vocab.json beside a saved drafter is read."""
    target = tiny.build(model_type)
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(target, prompt, NEW_TOKENS)
    model = untrained(target, fused_masks=True)
    vocab = sorted(set(prompt[0].tolist()) | set(range(0, 256, 3)))
    full, reduced = TargetDiffusionDrafter(model, target), TargetDiffusionDrafter(model, target, draft_vocab=vocab)
    ids = prompt[0].tolist()
    features = target_features(target, ids, model.config.layers)[: len(ids) - 1].transpose(0, 1)
    ctx = DraftContext(ids, budget=3, new_hidden=features, new_hidden_start=0)
    whole, part = full._block_logits(ctx, 3), reduced._block_logits(ctx, 3)  # [3, V], [3, N]
    torch.testing.assert_close(part, whole[:, vocab].float(), atol=1e-5, rtol=0)
    # greedy ranks inside the draft vocabulary: the lattice of the whole head with -inf outside it, without dists
    reduced.reset()
    lattice = reduced.propose(ctx)
    over_head = prune_lattice(torch.softmax(to_full_vocab(part.float(), torch.tensor(vocab), tiny.VOCAB), dim=-1))
    assert lattice.dists is None and set(lattice.candidates.flatten().tolist()) <= set(vocab)
    assert torch.equal(lattice.candidates, over_head.candidates)
    torch.testing.assert_close(lattice.probs, over_head.probs)
    reduced.reset()
    assert SpecDiff(target, reduced).generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected


# --- a pattern the target's hidden states reveal -------------------------------------------------

V = 16


def pattern_rows(count: int, seed: int, random: int = 6, length: int = 32) -> torch.Tensor:
    """[count, length]: random tokens, then c d c d ... with c != d drawn per row."""
    g = np.random.default_rng(seed)
    rows = [np.concatenate([g.integers(3, V, random), np.resize(g.choice(np.arange(3, V), 2, replace=False),
                                                                 length - random)]) for _ in range(count)]
    return torch.tensor(np.array(rows))


def pattern_target():
    """A tiny Llama taught the pattern, so that its greedy replies continue it."""
    target = tiny.build("llama", vocab_size=V, tie_word_embeddings=True).train()
    optimizer = torch.optim.AdamW(target.parameters(), lr=1e-2)
    rows = pattern_rows(2400, seed=0)
    for step in range(150):
        batch = rows[16 * step : 16 * step + 16]
        logits = target(batch).logits[:, 7:-1]  # the pattern part
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), batch[:, 8:].reshape(-1))
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    return target.eval().requires_grad_(False)


def in_memory_features(target, prompts: torch.Tensor, reply_tokens: int, layers) -> TeacherFeatures:
    """`TeacherFeatures` of prompts + the target's greedy replies, built in memory."""
    with torch.no_grad():
        rows = target.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=reply_tokens,
                               do_sample=False)
    ids = [row.numpy() for row in rows]
    states = torch.cat(teacher_hidden_states(target, ids, layers)).to(torch.float16).numpy()
    offsets = np.arange(len(ids) + 1) * rows.shape[1]
    return TeacherFeatures(Path("."), tuple(layers), offsets, np.full(len(ids), prompts.shape[1]),
                           rows.flatten().numpy().astype(np.int32), states)


PROMPT = 10  # 6 random tokens, then c d c d: the pattern is set before the reply
PATTERN_CONFIG = TrainConfig(steps=150, batch_size=8, seq_len=PROMPT + 16, lr=1e-2, warmup_steps=10, eval_every=150,
                             eval_batches=2, save_every=150)


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    target = pattern_target()
    layers = DFlashModel.for_target(target, block_size=4).config.layers
    train_features = in_memory_features(target, pattern_rows(256, seed=1)[:, :PROMPT], 16, layers)
    heldout_features = in_memory_features(target, pattern_rows(32, seed=2)[:, :PROMPT], 16, layers)
    sampler = AnchorSampler(train_features, layers, PATTERN_CONFIG.seq_len, 8, 16, seed=0)
    heldout = AnchorSampler(heldout_features, layers, PATTERN_CONFIG.seq_len, 8, 16, seed=99).fixed_batches(2)
    torch.manual_seed(0)
    model = DFlashModel.for_target(target, block_size=4)
    train(model, DFlashObjective(), sampler.batch, heldout, PATTERN_CONFIG, tmp_path_factory.mktemp("dflash"))
    return target, model.eval(), sampler, heldout


class ShiftedDrafter(TargetDiffusionDrafter):
    """Features one position off: position j gets the target's state at j - 1."""

    def reset(self):
        super().reset()
        self.previous = None

    def propose(self, ctx):
        states = ctx.new_hidden
        before = states[:, :1] if self.previous is None else self.previous
        self.previous = states[:, -1:]
        return super().propose(dataclasses.replace(ctx, new_hidden=torch.cat([before, states[:, :-1]], dim=1)))


def pattern_tau(target, drafter) -> float:
    """tau (new tokens / target forwards) over greedy replies to held-out pattern prompts, each `generate`'s."""
    tokens = forwards = 0
    for row in pattern_rows(8, seed=3):
        prompt = row[:PROMPT][None]
        result = SpecDiff(target, drafter).generate(prompt, max_new_tokens=33)
        assert result.token_ids == tiny.reference(target, prompt, 33)
        tokens, forwards = tokens + len(result.token_ids), forwards + len(result.stats.accepted_lengths)
    return tokens / forwards


def test_the_target_states_make_the_pattern_predictable(pattern):
    target, model, _, heldout = pattern
    b = model.config.block_size
    assert heldout_acceptance(model, heldout)["tau"] >= 0.7 * b
    assert pattern_tau(target, TargetDiffusionDrafter(model, target)) >= 0.7 * b
    # Token d after "... c d c" sits in the state of the position before the anchor: one position off, it is lost.
    assert pattern_tau(target, ShiftedDrafter(model, target)) < 0.4 * b


# --- a reduced draft vocabulary in training (FR-Spec) --------------------------------------------


def test_windows_of_a_long_prompt_start_near_the_reply():
    # One record: a 100-token prompt and a 20-token reply; windows of 32 start from 16 before the reply
    # to its first token (at most T - S = 88), so every row has anchors.
    features = TeacherFeatures(Path("unused"), (1,), np.array([0, 120]), np.array([100]), np.arange(120, dtype=np.int32),
                               np.zeros((120, 1, 4), dtype=np.float16))
    batch = AnchorSampler(features, (1,), seq_len=32, batch_size=64, anchors=4, seed=0).batch(0)
    assert set(batch.start.tolist()) <= set(range(84, 89)) and len(set(batch.start.tolist())) > 1
    assert (batch.anchors >= 0).all() and (batch.anchors + batch.start[:, None] >= 99).all()


def test_draft_labels_by_hand():
    labels = torch.tensor([[IGNORE, 5, 7, 2, 9]])
    assert to_draft_labels(labels, torch.tensor([2, 5, 9]), 16).tolist() == [[IGNORE, 1, IGNORE, 0, 2]]
    assert to_draft_labels(labels, None, 16) is labels


def test_reduced_head_is_the_full_heads_columns_and_scores_the_same(pattern):
    target, model, sampler, heldout = pattern
    batch, vocab = sampler.batch(3), torch.tensor([0, 2, 3, 5, 6, 9, 10, 12, 15])
    with torch.no_grad():
        full = anchor_block_logits(model, batch)  # [B, A, b, V]
        torch.testing.assert_close(anchor_block_logits(model, batch, vocab), full[..., vocab])
        # the whole vocabulary as the draft vocabulary: the same loss and acceptance as the plain head
        everything = torch.arange(V)
        torch.testing.assert_close(DFlashObjective(vocab=everything).loss(model, batch),
                                   DFlashObjective().loss(model, batch))
    assert heldout_acceptance(model, heldout, everything) == heldout_acceptance(model, heldout)
    # without the pattern's tokens in it, a slot can only miss: accuracy falls to what the rest explains
    labels = torch.cat([block_labels(b, model.config.block_size)[:, :, 1:].flatten() for b in heldout])
    common = torch.bincount(labels[labels != IGNORE], minlength=V).argsort(descending=True)[:4]
    rest = torch.tensor(sorted(set(range(V)) - set(common.tolist())))
    reduced = heldout_acceptance(model, heldout, rest)
    assert reduced["tau"] < heldout_acceptance(model, heldout)["tau"]
    share_left = float(torch.isin(labels[labels != IGNORE], rest).float().mean())
    assert max(reduced["accuracy_by_position"]) <= share_left + 1e-6


def test_a_confidence_cut_chain_is_lossless_and_drafts_less(pattern):
    """Chain(threshold): the chain stops before the first position drafted with probability <= 0.9."""
    target, model, _, _ = pattern
    plain = methods.build("dflash", target, None, model)
    parts = methods.DFlashMethod("dflash-cut", "a test", threshold=0.9).build(target, None, model,
                                                                              methods.MethodOptions())
    cut = SpecDiff(target, parts.drafter, tree=parts.tree, draft_length=parts.draft_length)
    drafted = {"plain": 0, "cut": 0}
    for row in pattern_rows(6, seed=4):
        prompt = row[:PROMPT][None]
        expected = tiny.reference(target, prompt, 24)
        for name, spec in (("plain", plain), ("cut", cut)):
            result = spec.generate(prompt, max_new_tokens=24)
            assert result.token_ids == expected, name
            drafted[name] += result.stats.drafted_tokens
    assert 0 < drafted["cut"] < drafted["plain"]


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,fused,vocab", [("dflash", False, None), ("dflash-opt-tree", False, None),
                                                ("dflash", True, [0, 1, 3, 4, 6]), ("dflash-opt-tree", True, None),
                                                ("dflash-cut", True, None), ("dflash-opt-tree-hw", True, None),
                                                ("dflash-lookup", True, None)])
def test_sampled_tokens_follow_the_target(method, fused, vocab):
    """Also with fused masks, and over a reduced draft vocabulary (q = 0 elsewhere: the residual covers it)."""
    target = small_model(0)
    torch.manual_seed(5)
    model = DFlashModel.for_target(target, block_size=3, fused_masks=fused)
    with torch.no_grad():  # a peaked drafter, so drafts are both accepted and rejected
        model.mask_embedding.normal_(0, 1.0)
    spec = methods.build(method, target, None, model)
    if isinstance(spec.tree_builder, MeasuredSize):  # sizes by a fixed cost model, not the clock: cuts by value
        sized = FixedCost(spec.tree_builder.inner)
        spec = SpecDiff(target, spec.drafter, tree=sized, draft_length=MeasuredDraftLength(sized, spec.drafter.k))
    if vocab is not None:
        drafter = DrawnChain(TargetDiffusionDrafter(model, target, k=spec.drafter.k, draft_vocab=vocab))
        spec = SpecDiff(target, drafter, tree=spec.tree_builder, draft_length=spec.draft_length)
    options = dict(temperature=1.0, top_k=0, repetition_penalty=1.2)
    assert first_tokens_pvalue(spec, target, 3, 200, options) > P_VALUE
    accepted = {n for seed in range(20) for n in spec.generate(torch.tensor([[3, 4, 5, 3, 4]]), max_new_tokens=6,
                                                               temperature=1.0, seed=seed).stats.accepted_lengths}
    assert 0 in accepted and max(accepted) >= 1


class FixedLattice:
    """A lattice drafter that proposes the same rows every step (dists given, candidates their top 2)."""

    needs = DraftNeeds()  # no target states
    k = 3
    forward_count = 0

    def __init__(self, dists: torch.Tensor):
        top = dists.topk(2, dim=-1)
        self.lattice = TokenLattice(top.indices, top.values, dists)

    def bind(self, target_vocab_size, tokenizer=None):
        pass

    def reset(self):
        pass

    def propose(self, ctx):
        return self.lattice


def test_a_sampled_chain_is_drawn_from_the_lattice_rows_and_cut_by_the_lattice_alone():
    from specdiff.sampling import SamplingSettings

    dists = torch.zeros(3, 8)
    dists[0, [2, 5]] = 0.5  # two equally likely tokens
    dists[1, 3] = 1.0
    dists[2, [1, 4, 6]] = torch.tensor([0.3, 0.3, 0.4])  # most probable 0.4: the threshold-0.45 chain stops before it
    drafter = DrawnChain(FixedLattice(dists), threshold=0.45)
    greedy = DraftContext([1, 2], budget=3)
    assert drafter.propose(greedy) is drafter.drafter.lattice  # greedy: the lattice, for the tree policy
    firsts = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        ctx = DraftContext([1, 2], budget=3, sampling=SamplingSettings(), generator=generator)
        tree = drafter.propose(ctx)
        assert tree.kind is ProposalKind.IID and tree.num_nodes == 2 and tree.parents.tolist() == [-1, 0]
        assert torch.equal(tree.draft_dists, dists[:2]) and tree.tokens[1] == 3
        assert torch.equal(tree.draft_probs, dists[[0, 1], tree.tokens])
        firsts.append(int(tree.tokens[0]))
    assert set(firsts) == {2, 5} and 70 < firsts.count(2) < 130  # drawn from row 0, not its argmax
    one = drafter.propose(DraftContext([1, 2], budget=1, sampling=SamplingSettings(), generator=generator))
    assert one.num_nodes == 1  # the budget caps it
    cut = DrawnChain(FixedLattice(dists), path_cut=0.6)  # the first draw's path, 0.5, is <= 0.6: nothing after it
    assert cut.propose(DraftContext([1, 2], 3, sampling=SamplingSettings(), generator=generator)).num_nodes == 1
    kept = DrawnChain(FixedLattice(dists), path_cut=0.45)  # 0.5, then 0.5 x 1.0: the whole lattice
    assert kept.propose(DraftContext([1, 2], 3, sampling=SamplingSettings(), generator=generator)).num_nodes == 3
    with pytest.raises(ValueError, match="threshold must be in"):
        DrawnChain(FixedLattice(dists), threshold=1.0)


@pytest.mark.parametrize("method", ["dflash", "dflash-lookup"])
def test_sampled_dflash_chains_are_drawn(method):
    """The chain methods' sampled steps verify drawn (IID) nodes; with lookup, its trie joins as fixed ones."""
    target = small_model(0)
    torch.manual_seed(5)
    model = DFlashModel.for_target(target, block_size=3)
    spec = methods.build(method, target, None, model)
    kinds = []
    original = spec.drafter.propose

    def recording(ctx):
        tree = original(ctx)
        kinds.append(getattr(tree, "kind", None))
        return tree

    spec.drafter.propose = recording
    spec.generate(torch.tensor([[3, 4, 5, 3, 4, 5, 3, 4]]), max_new_tokens=8, temperature=1.0, seed=0)
    assert kinds and set(kinds) == {ProposalKind.IID}
    kinds.clear()
    spec.generate(torch.tensor([[3, 4, 5, 3, 4, 5, 3, 4]]), max_new_tokens=8)  # greedy: the lattice, argmax chain
    assert ProposalKind.IID not in kinds


# --- training: resume, files, CLI ---------------------------------------------------------------


@pytest.mark.parametrize("precision,vocab", [("no", None), ("bf16", [2, 3, 5, 7, 8, 11, 13])])
def test_interrupted_training_resumes_exactly(pattern, tmp_path, precision, vocab):
    """Also in bf16 autocast over a reduced draft vocabulary (the fast setting on AMX CPUs)."""
    target, _, sampler, heldout = pattern
    config = TrainConfig(steps=6, batch_size=8, seq_len=PROMPT + 16, lr=1e-2, warmup_steps=1, eval_every=3,
                         eval_batches=2, save_every=2, mixed_precision=precision)
    objective = DFlashObjective(vocab=None if vocab is None else torch.tensor(vocab))

    def fresh(seed):
        torch.manual_seed(seed)
        return DFlashModel.for_target(target, block_size=4)

    reference = fresh(0)
    train(reference, objective, sampler.batch, heldout, config, tmp_path / "ref")

    def interrupting(step):
        if step == 3:
            raise KeyboardInterrupt
        return sampler.batch(step)

    assert train(fresh(0), objective, interrupting, heldout, config, tmp_path / "run").interrupted
    resumed = fresh(7)  # other weights: everything must come from the checkpoint
    assert train(resumed, objective, sampler.batch, heldout, config, tmp_path / "run").step == 6
    for (name, a), (_, b) in zip(reference.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_save_load_round_trip_and_mismatch_errors(tmp_path):
    target = tiny.build("llama")
    model = untrained(target, block_size=4, fused_masks=True)
    with torch.no_grad():  # fp16-exact weights: the file stores fp16
        for name, parameter in model.named_parameters():
            if name not in model.shared_names():
                parameter.copy_(parameter.half().float())
    model.save_pretrained(tmp_path / "dflash")
    with safe_open(str(tmp_path / "dflash" / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
        assert {handle.get_tensor(key).dtype for key in keys} == {torch.float16}
    assert not any("embed_tokens" in key or "lm_head" in key for key in keys)  # the target's tensors are not stored
    assert "mask_embedding" in keys and "fc.weight" in keys
    loaded = methods.get("dflash").load_drafter(str(tmp_path / "dflash"), torch.float32, "cpu").attach(target)
    assert loaded.config.fused_masks
    prompt = tiny.repetitive_prompt()
    expected = SpecDiff(target, TargetDiffusionDrafter(model, target)).generate(prompt, max_new_tokens=12)
    again = SpecDiff(target, TargetDiffusionDrafter(loaded, target)).generate(prompt, max_new_tokens=12)
    assert again.token_ids == expected.token_ids and again.stats.accepted_lengths == expected.stats.accepted_lengths
    with pytest.raises(ValueError, match="vocabulary 256.*vocabulary 128"):
        loaded.attach(tiny.build("llama", vocab_size=128))
    with pytest.raises(ValueError, match="hidden size 64.*hidden size 32"):
        TargetDiffusionDrafter(loaded, tiny.build("llama", hidden_size=32))
    with pytest.raises(ValueError, match="block_size - 1 = 3"):
        TargetDiffusionDrafter(loaded, target, k=4)
    target.save_pretrained(tmp_path / "causal-lm")
    with pytest.raises(ValueError, match="not a DFlash drafter"):
        DFlashModel.from_pretrained(tmp_path / "causal-lm")


def write_distillation_set(out_dir: Path, vocab: int, records: int = 200) -> None:
    """A `specdiff train data` directory of random prompt and reply ids (the loader reads any ids)."""
    distill.open_plan(out_dir, distill.DistillConfig(target="tiny", prompts=records), lambda: [])
    g = np.random.default_rng(0)
    prompts = [g.integers(3, vocab, 6).tolist() for _ in range(records)]
    replies = [g.integers(3, vocab, 10).tolist() for _ in range(records)]
    (out_dir / distill.SHARD_DIR).mkdir()
    distill.write_shard(out_dir, 0, {"prompt_ids": prompts, "response_ids": replies, "records": [{}] * records}, 0.0)


def test_cli_trains_exports_and_generates(tiny_models, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the teacher features' cache
    target_dir, _ = tiny_models
    vocab = json.loads((target_dir / "config.json").read_text())["vocab_size"]
    write_distillation_set(tmp_path / "data", vocab)
    out = tmp_path / "tiny-dflash"
    result = invoke("train", "dflash", "--target", target_dir, "--data", tmp_path / "data", "--out-dir", out,
                    "--work-dir", tmp_path / "work", "--steps", 3, "--block-size", 4, "--batch-size", 2,
                    "--seq-len", 16, "--anchors", 4, "--teacher-dtype", "float32", "--draft-vocab", 64,
                    "--mixed-precision", "bf16")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    shipped = json.loads((out / "draft_vocab.json").read_text())  # read by TargetDiffusionDrafter's "auto"
    assert shipped["size"] == len(shipped["ids"]) == card["draft_vocab"]["size"] == 64
    assert card["train_config"]["mixed_precision"] == "bf16"
    assert card["steps"] == 3 and len(card["heldout_acceptance"]["accuracy_by_position"]) == 3
    # the learning curve: one evaluation (at the last step, 3 x 2 x 16 window tokens), the exported model's tau
    assert card["tau_by_training_tokens"] == [[96, card["heldout_acceptance"]["tau"]]]
    assert "TargetDiffusionDrafter.from_pretrained" in (out / "README.md").read_text()
    assert list((tmp_path / "cache" / "specdiff" / "features").glob("*-l1-2-*"))  # the layers plus the LM head's input
    result = invoke("generate", "--target", target_dir, "--method", "dflash-cps", "--drafter", out,
                    "--max-new-tokens", 8, "def f(x):")
    assert result.exit_code == 0, result.output
    assert_clean_failure(invoke("train", "dflash", "--target", target_dir, "--data", tmp_path / "data", "--out-dir",
                                out, "--layers", "2,x"), "--layers")
    # --init: another run starts from the exported drafter (its weights, its draft vocabulary), with another seed
    more = tmp_path / "tiny-dflash-more"
    common = ("--target", target_dir, "--data", tmp_path / "data", "--block-size", 4, "--batch-size", 2,
              "--seq-len", 16, "--anchors", 4, "--teacher-dtype", "float32", "--draft-vocab", 64)
    result = invoke("train", "dflash", *common, "--out-dir", more, "--work-dir", tmp_path / "work2", "--steps", 1,
                    "--init", out, "--seed", 5)
    assert result.exit_code == 0, result.output
    card = json.loads((more / "card.json").read_text())
    assert card["started_from"] == {"path": str(out), "steps": 3} and card["train_config"]["seed"] == 5
    assert json.loads((more / "draft_vocab.json").read_text())["ids"] == shipped["ids"]
    assert f"after 3 steps of {out} (`--init`)" in (more / "README.md").read_text()
    from specdiff.training.dflash_recipe import warm_start

    before = DFlashModel.from_pretrained(out)
    fresh = DFlashModel(before.config)
    kept, _ = warm_start(fresh, str(out), torch.arange(64))
    assert kept.tolist() == shipped["ids"]
    shared = fresh.shared_names()
    for (name, a), (_, b) in zip(fresh.state_dict().items(), before.state_dict().items()):
        if name not in shared:
            assert torch.equal(a, b), name  # every trained weight comes from the file
    result = invoke("train", "dflash", *common[:-2], "--draft-vocab", 32, "--out-dir", tmp_path / "x", "--work-dir",
                    tmp_path / "work3", "--steps", 1, "--init", out)
    assert_clean_failure(result, "draft vocabulary (64 rows; recipe: 32)", "without --init")
    result = invoke("train", "dflash", *common, "--block-size", 3, "--out-dir", tmp_path / "y", "--work-dir",
                    tmp_path / "work4", "--steps", 1, "--init", out)
    assert_clean_failure(result, "block_size 4 (recipe: 3)")
