"""TiDAR: the structured mask, slot logits vs separate forwards, cache after commit, greedy and
trained-model equality with `generate`, and the training objective on a tiny model."""

import pytest
import torch

import tiny
from specdiff import SpecDiff
from specdiff.drafters import TiDARDrafter
from specdiff.masks import QuerySlots, score_layout
from specdiff.training.tidar import TiDARObjective
from specdiff.trees import OptTree
from specdiff.types import DraftTree
from specdiff.verifiers.hf import HFVerifier

MASK = 3


def tidar_model(model_type: str = "llama", **overrides):
    model = tiny.build(model_type, "eager" if model_type == "gemma2" else "sdpa", **overrides)
    model.config.mask_token_id = MASK
    return model


def test_structured_mask_by_hand():
    # 5 committed ids (c at position 4, 4 cached), drafts d1 d2 as a chain, blocks of 3 masks.
    drafter = TiDARDrafter(tidar_model(), block_size=3)
    tree = DraftTree.chain(torch.tensor([10, 11]))
    slots = drafter.query_slots([5, 6, 7, 8, 9], tree)
    allowed, positions = score_layout(tree.parents, 4, slots)
    # rows: c d1 d2 | block after c | block after d1 | block after d2
    assert positions.tolist() == [4, 5, 6, 5, 6, 7, 6, 7, 8, 7, 8, 9]
    assert slots.tokens.tolist() == [MASK] * 9
    o, x = 0, 1
    expected = [
        # c d1 d2 | b0 b0 b0 | b1 b1 b1 | b2 b2 b2
        [x, o, o, o, o, o, o, o, o, o, o, o],  # c
        [x, x, o, o, o, o, o, o, o, o, o, o],  # d1: causal
        [x, x, x, o, o, o, o, o, o, o, o, o],  # d2
        [x, o, o, x, x, x, o, o, o, o, o, o],  # block 0 sees c and itself, bidirectionally
        [x, o, o, x, x, x, o, o, o, o, o, o],
        [x, o, o, x, x, x, o, o, o, o, o, o],
        [x, x, o, o, o, o, x, x, x, o, o, o],  # block 1 sees c, d1
        [x, x, o, o, o, o, x, x, x, o, o, o],
        [x, x, o, o, o, o, x, x, x, o, o, o],
        [x, x, x, o, o, o, o, o, o, x, x, x],  # block 2 sees c, d1, d2
        [x, x, x, o, o, o, o, o, o, x, x, x],
        [x, x, x, o, o, o, o, o, o, x, x, x],
    ]
    assert allowed.int().tolist() == expected
    # the prefill block: c re-fed as a slot (sees only itself), then masks that see c and each other
    prefill = drafter.query_slots([5, 6, 7, 8, 9], None)
    assert prefill.tokens.tolist() == [9, MASK, MASK, MASK] and prefill.positions.tolist() == [4, 5, 6, 7]
    assert prefill.sees.int().tolist() == [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_query_slots_shape_checks():
    with pytest.raises(ValueError, match="positions"):
        QuerySlots(torch.tensor([1, 2]), torch.tensor([0]), torch.ones(2, 2, dtype=torch.bool))
    verifier = HFVerifier(tidar_model())
    verifier.prefill([5, 6, 7])
    bad = QuerySlots(torch.tensor([MASK]), torch.tensor([3]), torch.ones(1, 1, dtype=torch.bool), torch.tensor([4]))
    with pytest.raises(ValueError, match="anchor 4"):
        verifier.score(DraftTree.chain(torch.tensor([10])), bad)


@torch.no_grad()
def separate_block_logits(model, sequence: list[int], block: int) -> torch.Tensor:
    """One uncached forward over [sequence, block masks], masks seeing the sequence and each other."""
    n = len(sequence)
    ids = torch.tensor([sequence + [MASK] * block])
    allowed = torch.ones(n + block, n + block, dtype=torch.bool).tril()
    allowed[n:, n:] = True
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    return model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(n + block)[None]).logits[0, n:].float()


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gpt2", "gemma2"])
def test_slot_logits_equal_separate_forwards(model_type):
    model = tidar_model(model_type)
    committed = [5, 9, 14, 7, 30, 12]
    B = 3
    drafter = TiDARDrafter(model, block_size=B)
    verifier = HFVerifier(model)
    prefilled = verifier.prefill(committed, drafter.query_slots(committed, None))
    prefill_block = separate_block_logits(model, committed, B)
    torch.testing.assert_close(prefilled.slot_logits[1:], prefill_block, atol=1e-4, rtol=1e-4)
    # a branching tree: c -> 40 -> 41, c -> 42
    tree = DraftTree(tokens=torch.tensor([40, 41, 42]), parents=torch.tensor([-1, 0, -1]))
    plain = HFVerifier(model)
    plain.prefill(committed)
    scored = verifier.score(tree, drafter.query_slots(committed, tree))
    torch.testing.assert_close(scored.logits, plain.score(tree).logits, atol=1e-4, rtol=1e-4)  # slots never change main rows
    for row, path in enumerate([[], [40], [40, 41], [42]]):
        expected = separate_block_logits(model, committed + path, B)
        torch.testing.assert_close(scored.slot_logits[row * B:(row + 1) * B], expected, atol=1e-4, rtol=1e-4)


def test_cache_after_commit_holds_committed_only():
    model = tidar_model()
    drafter = TiDARDrafter(model, block_size=4)
    verifier = HFVerifier(model)
    committed = [5, 9, 14, 7, 30]
    verifier.prefill(committed, drafter.query_slots(committed, None))
    assert verifier.cache.get_seq_length() == len(committed) - 1
    tree = DraftTree.chain(torch.tensor([40, 41, 42]))
    verifier.score(tree, drafter.query_slots(committed, tree))
    assert verifier.cache.get_seq_length() == len(committed) - 1 + 4 + 4 * 4  # rows + slots until commit
    verifier.commit([0, 1], next_token=50)
    assert verifier.committed == committed + [40, 41, 50]
    assert verifier.cache.get_seq_length() == len(verifier.committed) - 1
    # what stays cached is exactly the committed prefix: scoring again matches a fresh verifier
    fresh = HFVerifier(model)
    fresh.prefill(verifier.committed)
    probe = DraftTree.chain(torch.tensor([60]))
    torch.testing.assert_close(verifier.score(probe).logits, fresh.score(probe).logits, atol=1e-4, rtol=1e-4)


ARCHITECTURES = ["llama", "qwen2", "gpt2", "gpt_neox", "phi3", "gemma2", "gemma3_text", "mistral"]


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_greedy_equals_generate(model_type):
    # small windows on the sliding-window families, so generation runs past them
    model = tidar_model(model_type, **({"sliding_window": 8} if model_type in ("mistral", "gemma2", "gemma3_text")
                                        else {}))
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, 40)
    for block_size in (2, 4):
        result = SpecDiff(model, TiDARDrafter(model, block_size=block_size)).generate(prompt, 40)
        assert result.token_ids == expected, (model_type, block_size)
        assert result.stats.drafter_forwards == 0


def periodic_rows(successor: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    rows = [torch.randint(4, 4 + len(successor), (count,), generator=generator)]
    for _ in range(length - 1):
        rows.append(successor[rows[-1] - 4])
    return torch.stack(rows, dim=1)


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama trained with TiDAR's objective on a fixed token cycle: both modes learn it."""
    torch.manual_seed(0)
    model = tidar_model(vocab_size=32)
    successor = torch.randperm(28, generator=torch.Generator().manual_seed(0)) + 4
    objective = TiDARObjective(MASK, (2, 4), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    model.train()
    first = None
    for _ in range(80):
        ar, diff = objective.losses(model, periodic_rows(successor, 16, 32, generator))
        first = first or (ar.item(), diff.item())
        ((ar + diff) / 2).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model, successor, first, (ar.item(), diff.item())


def test_objective_trains_both_modes(trained):
    _, _, first, last = trained
    assert last[0] < first[0] / 10 and last[1] < first[1] / 10


# at most block_size tokens per forward; 6 is larger than any block it was trained on (zero-shot)
@pytest.mark.parametrize("block_size,least_tau", [(2, 1.6), (4, 2.8), (6, 3.2)])
def test_trained_model_drafts_whole_blocks(trained, block_size, least_tau):
    model, successor, _, _ = trained
    prompt = periodic_rows(successor, 1, 10, torch.Generator().manual_seed(7))
    expected = tiny.reference(model, prompt, 40)
    result = SpecDiff(model, TiDARDrafter(model, block_size=block_size)).generate(prompt, 40)
    assert result.token_ids == expected
    assert result.stats.tau > least_tau
    assert result.stats.drafter_forwards == 0 and result.stats.target_forwards == len(result.stats.accepted_lengths)


def test_trained_model_with_a_lattice_tree(trained):
    model, successor, _, _ = trained
    prompt = periodic_rows(successor, 1, 10, torch.Generator().manual_seed(8))
    expected = tiny.reference(model, prompt, 30)
    spec = SpecDiff(model, TiDARDrafter(model, block_size=4), tree=OptTree(node_budget=6, max_depth=3))
    result = spec.generate(prompt, 30)
    assert result.token_ids == expected and result.stats.tau > 2.5


def test_refusals():
    model = tidar_model()
    with pytest.raises(ValueError, match="same model|model it was built on"):
        SpecDiff(tidar_model(seed=1), TiDARDrafter(model))
    with pytest.raises(ValueError, match="block_size"):
        TiDARDrafter(model, block_size=1)
    plain = tiny.build("llama")
    with pytest.raises(ValueError, match="mask token"):
        TiDARDrafter(plain)
    with pytest.raises(ValueError, match="outside"):
        TiDARDrafter(plain, mask_token_id=tiny.VOCAB)


def test_objective_checks():
    with pytest.raises(ValueError, match="block_sizes"):
        TiDARObjective(MASK, ())
    with pytest.raises(ValueError, match="alpha"):
        TiDARObjective(MASK, (4,), alpha=-1)


def test_one_token_prompt_and_a_reused_cache(trained):
    model, successor, _, _ = trained
    spec = SpecDiff(model, TiDARDrafter(model, block_size=4))
    one = torch.tensor([[int(successor[0])]])
    assert spec.generate(one, 12).token_ids == tiny.reference(model, one, 12)
    prompt = periodic_rows(successor, 1, 8, torch.Generator().manual_seed(9))
    first = spec.generate(prompt, 10).token_ids
    follow = torch.cat([prompt, torch.tensor([first + [5, 6]])], dim=1)  # a chat turn: extends the committed ids
    assert spec.verifier.committed == prompt[0].tolist() + first
    assert spec.generate(follow, 16).token_ids == tiny.reference(model, follow, 16)


def test_fewer_blocks_stay_exact(trained):
    model, successor, _, _ = trained
    prompt = periodic_rows(successor, 1, 10, torch.Generator().manual_seed(10))
    expected = tiny.reference(model, prompt, 40)
    drafter = TiDARDrafter(model, block_size=4, max_blocks=2)
    slots = drafter.query_slots([5, 6, 7], DraftTree.chain(torch.tensor([8, 9, 10])))
    assert len(slots) == 2 * 4 and slots.anchors.tolist() == [0] * 4 + [1] * 4
    result = SpecDiff(model, drafter).generate(prompt, 40)
    assert result.token_ids == expected
    # whole blocks are accepted, then the next step finds no block for its outcome and drafts nothing
    assert 0 < result.stats.tau < 4 and 3 in result.stats.accepted_lengths
    with pytest.raises(ValueError, match="max_blocks"):
        TiDARDrafter(model, max_blocks=0)


def test_cli_generate_with_the_zoo_tidar_model():
    from click.testing import CliRunner

    from specdiff.cli.main import cli

    args = ["generate", "--target", "stdlib-target", "--method", "tidar-lean", "--max-new-tokens", "8", "import os\n"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "decodes its own model zoo:stdlib-tidar" in result.output and "tau" in result.output
