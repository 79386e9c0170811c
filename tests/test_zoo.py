"""The shipped zoo: offline loading, tokenizer, held-out loss and quality gate, lossless with its drafter."""

import zipfile

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdiff import SpecDiff, zoo
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.zoo.corpus import is_heldout, read_source, split_files, stdlib_root
from specdiff.zoo.quality import QUALITY_GATE, greedy_continuations, pooled_distinct_bigram_ratio


@pytest.fixture(scope="module")
def target():
    return zoo.load("stdlib-target")


@pytest.fixture(scope="module")
def drafter_model():
    return zoo.load("stdlib-ar-drafter")[0]


def test_loads_offline_with_from_pretrained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = zoo.path("stdlib-target")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == len(tokenizer) <= 8192
    assert tokenizer.mask_token and tokenizer.eos_token and tokenizer.pad_token
    assert set(zoo.shipped()) >= {"stdlib-target", "stdlib-ar-drafter"}
    assert set(zoo.available()) == set(zoo.shipped()) | {"smollm2-135m-instruct"}


def test_shipped_size_budget(tmp_path):
    """The shipped models must fit one wheel on the package index: PyPI takes files up to 100 MiB unless a
    project asks for more, and a wheel is a zip. stdlib: target 14 MB + TiDAR model 14 MB (a second full
    model) + drafters, heads and the 3-gram: ~45 MB; SmolLM2's drafters, trained weights only (fp16, the
    target's embedding not stored): small LM 28 MB (4 layers), DFlash 23 MB (3 layers), EAGLE 10 MB, Hydra
    heads 9 MB: ~103 MiB zipped (2026-12-07, after the DEER Stage I drafter left the wheel to make room for the
    Hydra heads: `specdiff train diffusion-drafter --stage 1` rebuilds it). A next drafter must make room, not
    grow the wheel."""
    files = [f for name in zoo.shipped() for f in (zoo.SHIPPED_DIR / name).iterdir()] + [zoo.ngram_path()]
    with zipfile.ZipFile(tmp_path / "models.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in dict.fromkeys(files):
            archive.write(path, str(path.relative_to(zoo.SHIPPED_DIR)))
    assert (tmp_path / "models.zip").stat().st_size < 100 * 2**20


def test_split_is_deterministic_and_holds_out_about_five_percent():
    split = split_files()
    root = stdlib_root()
    total = len(split.train) + len(split.heldout)
    assert 0.02 < len(split.heldout) / total < 0.09
    assert any("test" in p.relative_to(root).parts[0] for p in split.heldout)
    assert all(is_heldout(p.relative_to(root).as_posix()) for p in split.heldout)
    assert zoo.heldout_prompts(3, seed=4) == zoo.heldout_prompts(3, seed=4)
    assert all(prompt.endswith("\n") for prompt in zoo.heldout_prompts(5, seed=0))


def test_tokenizer_round_trip_on_heldout_files(target):
    _, tokenizer = target
    for path in split_files().heldout[:10]:
        text = read_source(path)[:5000]
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_heldout_loss_below_card_bound(target):
    model, tokenizer = target
    card = zoo.card("stdlib-target")
    rng = np.random.default_rng(0)
    losses = []
    for path in split_files().heldout[:12]:
        ids = tokenizer(read_source(path))["input_ids"]
        if len(ids) < 300:
            continue
        start = int(rng.integers(0, len(ids) - 257))
        window = torch.tensor([ids[start : start + 256]])
        with torch.no_grad():
            losses.append(model(input_ids=window, labels=window).loss.item())
    # the card's loss was measured on random held-out windows; allow slice-to-slice noise
    assert np.mean(losses) < card["heldout_loss"] + 0.35


def test_quality_gate(target):
    model, tokenizer = target
    outputs = greedy_continuations(model, tokenizer, zoo.heldout_prompts(3, seed=1), max_new_tokens=128)
    assert sum(len(ids) for ids in outputs) > 64  # not all stopping at once
    assert pooled_distinct_bigram_ratio(outputs) >= QUALITY_GATE


@pytest.mark.parametrize("top_k", [1, 2])
def test_greedy_specdiff_with_shipped_drafter_equals_generate(target, drafter_model, top_k):
    model, tokenizer = target
    spec = SpecDiff(model, AutoregressiveDrafter(drafter_model, k=4, top_k=top_k, tokenizer=tokenizer), tokenizer)
    for prompt in zoo.heldout_prompts(2, seed=2):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False)
        result = spec.generate(prompt, max_new_tokens=48)
        assert result.token_ids == expected[0, ids.shape[1]:].tolist()
        assert result.text == tokenizer.decode(result.token_ids, skip_special_tokens=True)
        assert result.stats.tau > 1.0


def test_stream_yields_the_same_text(target):
    model, tokenizer = target
    spec = SpecDiff(model, PromptLookupDrafter(), tokenizer)
    prompt = zoo.heldout_prompts(1, seed=3)[0]
    pieces = list(spec.stream(prompt, max_new_tokens=32))
    assert "".join(pieces) == spec.generate(prompt, max_new_tokens=32).text


def _heldout_equality(model, tokenizer, spec, count: int, seed: int, tokens: int = 48) -> list:
    """Each answer equals generate's; returns the results (a prompt may end at once with EOS)."""
    results = []
    for prompt in zoo.heldout_prompts(count, seed=seed):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False)
        result = spec.generate(prompt, max_new_tokens=tokens)
        assert result.token_ids == expected[0, ids.shape[1]:].tolist()
        results.append(result)
    return results


def _tau(results) -> float:
    return sum(r.stats.new_tokens for r in results) / sum(r.stats.target_forwards for r in results)


@pytest.mark.parametrize("tree", ["chain", "opt-tree"])
def test_shipped_tidar_model_is_exact_and_drafts(tree):
    from specdiff.drafters import TiDARDrafter
    from specdiff.trees import OptTree

    model, tokenizer = zoo.load("stdlib-tidar")
    card = zoo.card("stdlib-tidar")
    assert model.config.tidar_block_size == card["block_size"] and model.config.mask_token_id == tokenizer.mask_token_id
    builder = OptTree(node_budget=8, max_depth=4) if tree == "opt-tree" else None
    spec = SpecDiff(model, TiDARDrafter(model, tokenizer=tokenizer), tokenizer, tree=builder)
    results = _heldout_equality(model, tokenizer, spec, 3, seed=2)
    assert all(r.stats.drafter_forwards == 0 for r in results)
    assert _tau(results) > 1.2


def test_shipped_tidar_model_keeps_its_ar_quality():
    card = zoo.card("stdlib-tidar")
    assert card["quality"]["passes_gate"]
    assert card["heldout_loss"] < card["heldout_loss_init"] + 0.3  # the AR mode survived the diffusion training


@pytest.mark.parametrize("tree", ["chain", "opt-tree"])
def test_shipped_heads_are_exact_and_free(target, tree):
    from specdiff.drafters import HeadsDrafter
    from specdiff.trees import OptTree

    model, tokenizer = target
    drafter = HeadsDrafter.from_pretrained(zoo.path("stdlib-heads"), model)
    builder = OptTree(node_budget=16, max_depth=drafter.k) if tree == "opt-tree" else None
    spec = SpecDiff(model, drafter, tokenizer, tree=builder)
    results = _heldout_equality(model, tokenizer, spec, 3, seed=2)
    assert _tau(results) > 1.1
    assert all(r.stats.target_forwards == len(r.stats.accepted_lengths) for r in results)  # no forward to propose


def test_stage_two_without_stage_one_names_the_command_to_run(tmp_path, monkeypatch):
    """The wheel ships the Stage II diffusion drafter only; Stage II's training starts from Stage I."""
    from test_cli import assert_clean_failure, invoke

    shipped = zoo.shipped
    monkeypatch.setattr(zoo, "shipped", lambda: [name for name in shipped() if name != "stdlib-dlm-drafter-s1"])
    result = invoke("train", "diffusion-drafter", "--stage", "2", "--steps", 1, "--work-dir", tmp_path)
    assert_clean_failure(result, "specdiff train diffusion-drafter --stage 1")


def test_cards_of_the_drafters_for_smollm2_say_what_they_were_trained_on():
    """`specdiff zoo list` reads these: SmolLM2's drafters learned from its replies, not the stdlib corpus."""
    for name in ("smollm2-135m-instruct-eagle", "smollm2-135m-instruct-dflash", "smollm2-135m-instruct-heads"):
        card = zoo.card(name)
        assert "own replies" in card["source"] and card["parameters"] > 0, (name, card["source"])
    assert "Python stdlib" in zoo.card("stdlib-ar-drafter")["source"]
