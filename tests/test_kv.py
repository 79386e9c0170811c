"""CachedLM: the tree-attention path equals the additive-mask path; one engine serves every cached model."""

import ast
from pathlib import Path

import pytest
import torch

import tiny
from specdiff import SpecDiff, hf_compat
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter
from specdiff.kv import ADDITIVE_PATH, CAUSAL_PATH, TREE_PATH, CachedLM, RowPadding
from specdiff.masks import query_parents, query_positions
from specdiff.types import DraftTree, ancestor_mask

BRANCHING = DraftTree(torch.tensor([5, 9, 17, 33, 65, 129, 7, 11, 13, 40, 41, 42]),
                      torch.tensor([-1, -1, 0, 0, 1, 2, 2, 3, 4, 5, 7, -1]))
CHAIN = DraftTree.chain([12, 99, 4, 201, 37, 8])
FAST_ARCHS = ["llama", "qwen2", "qwen3", "mistral", "phi3", "phi", "gemma", "gemma3_text", "gpt2", "gpt_neox",
              "opt", "gpt_bigcode", "olmo2", "stablelm", "granite"]


def tree_logits(model, tree: DraftTree, fast: bool, prefix: list[int]) -> tuple[torch.Tensor, str]:
    """fast: the engine's choice of path; else the additive path, the reference."""
    lm = CachedLM(model, tree_attention_path=fast, causal_chains=fast)
    lm.forward(prefix)
    ids = torch.cat([torch.tensor([3]), tree.tokens])
    out = lm.forward(ids, query_positions(tree.parents, len(prefix)), ancestor_mask(query_parents(tree.parents)))
    return out.logits.float(), out.path


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", FAST_ARCHS)
def test_tree_path_equals_additive_path(model_type, attn):
    model = tiny.build(model_type, attn)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    for tree in (BRANCHING, CHAIN):
        fast, fast_path = tree_logits(model, tree, True, prefix)
        slow, slow_path = tree_logits(model, tree, False, prefix)
        assert (fast_path, slow_path) == (TREE_PATH, ADDITIVE_PATH)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen3", "opt", "falcon", "phi", "gemma3_text", "granite"])
def test_reduced_head_logits_are_the_full_heads_columns(model_type):
    """CachedLM(head_rows=...) runs the base model and only those rows of the head: its logits are the
    full forward's at those columns, for a causal prefix, a chain and a branching tree (and so its last
    hidden state is the LM head's input)."""
    model = tiny.build(model_type)
    rows = torch.tensor([0, 3, 5, 17, 99, 200, 255])
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    for tree in (BRANCHING, CHAIN):
        outputs = []
        for head_rows in (None, rows):
            lm = CachedLM(model, head_rows=head_rows)
            first = lm.forward(prefix, hidden_layers=(-1,))
            ids = torch.cat([torch.tensor([3]), tree.tokens])
            out = lm.forward(ids, query_positions(tree.parents, len(prefix)), ancestor_mask(query_parents(tree.parents)))
            outputs.append((first, out))
        (full_first, full), (cut_first, cut) = outputs
        assert cut.logits.shape == (len(tree.tokens) + 1, len(rows)) and cut.path == full.path
        torch.testing.assert_close(cut.logits.float(), full.logits[:, rows].float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(cut_first.logits.float(), full_first.logits[:, rows].float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(cut_first.hidden, full_first.hidden, atol=1e-5, rtol=0)


def test_a_reduced_head_on_a_model_that_caps_its_logits_is_refused():
    with pytest.raises(ValueError, match="soft-capping or scaling"):
        CachedLM(tiny.build("gemma2", "eager"), head_rows=torch.arange(10))
    scaled = tiny.build("granite", logits_scaling=4.0)
    with pytest.raises(ValueError, match="draft_vocab=None"):
        CachedLM(scaled, head_rows=torch.arange(10))


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen3"])
def test_tree_path_with_pending_rows(model_type):
    """Two forwards of tree rows (an AR drafter's beam): the second sees the first's pending rows."""
    model = tiny.build(model_type)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    outputs = []
    for fast in (True, False):
        lm = CachedLM(model, tree_attention_path=fast, causal_chains=fast)
        lm.forward(prefix)
        first = lm.forward([7, 8], torch.tensor([9, 9]), torch.eye(2, dtype=torch.bool))
        visible = torch.tensor([[True, False, True, False], [False, True, False, True]])  # child of 7, child of 8
        second = lm.forward([20, 21], torch.tensor([10, 10]), visible)
        outputs.append(torch.cat([first.logits, second.logits]).float())
        assert lm.pending == 4
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)


def test_fallbacks_say_which_path_ran():
    prefix = tiny.repetitive_prompt(20)[0].tolist()
    narrow = tiny.build("mistral", sliding_window=8)  # the window cuts the context: additive path
    assert tree_logits(narrow, CHAIN, True, prefix)[1] == ADDITIVE_PATH
    softcapped = tiny.build("gemma2", "eager")  # attention logit soft-capping
    assert tree_logits(softcapped, CHAIN, True, prefix)[1] == ADDITIVE_PATH
    xglm = tiny.build("xglm", "eager")  # attention that does not go through transformers' AttentionInterface
    assert tree_logits(xglm, BRANCHING, True, prefix)[1] == ADDITIVE_PATH
    chain, path = tree_logits(xglm, CHAIN, True, prefix)  # a chain: the model's own causal mask
    assert path == CAUSAL_PATH
    torch.testing.assert_close(chain, tree_logits(xglm, CHAIN, False, prefix)[0], atol=1e-5, rtol=0)


def test_falcon_takes_whichever_path_its_transformers_allows():
    """Falcon's attention moved onto AttentionInterface in transformers 5.2x: the engine's probe decides,
    and either way the logits equal the additive reference."""
    prefix = tiny.repetitive_prompt(20)[0].tolist()
    falcon = tiny.build("falcon")
    for tree in (BRANCHING, CHAIN):
        fast, path = tree_logits(falcon, tree, True, prefix)
        assert path in (TREE_PATH, ADDITIVE_PATH, CAUSAL_PATH)
        torch.testing.assert_close(fast, tree_logits(falcon, tree, False, prefix)[0], atol=1e-5, rtol=0)


def test_sync_compact_drop_keep_the_ids_in_step():
    model = tiny.build("llama")
    lm = CachedLM(model)
    lm.forward([5, 6, 7, 8])
    assert lm.sync([5, 6, 9]) == 2 and lm.ids == [5, 6] and lm.cache.get_seq_length() == 2
    lm.forward([40, 41, 42], torch.tensor([2, 3, 3]), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]]).bool())
    lm.compact([0, 2], [40, 42])
    assert lm.ids == [5, 6, 40, 42] and lm.pending == 0 and lm.cache.get_seq_length() == 4
    lm.drop(1)
    assert lm.ids == [5, 6, 40] and lm.cache.get_seq_length() == 3
    # the compacted cache continues exactly like a fresh one
    fresh = CachedLM(model)
    torch.testing.assert_close(lm.forward([7]).logits, fresh.forward([5, 6, 40, 7]).logits[-1:], atol=1e-5, rtol=0)


def test_greedy_equals_generate_on_both_paths():
    model = tiny.build("qwen3")
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, 24)
    spec = SpecDiff(model, PromptLookupDrafter(ngram=2, k=5))
    assert spec.generate(prompt, max_new_tokens=24).token_ids == expected
    assert spec.verifier.lm.path_counts[TREE_PATH] > 0
    spec = SpecDiff(model, AutoregressiveDrafter(tiny.build("llama", seed=1), k=3, top_k=2))
    spec.verifier.lm.tree_attention_path = False
    assert spec.generate(prompt, max_new_tokens=24).token_ids == expected
    assert spec.verifier.lm.path_counts[TREE_PATH] == 0 and spec.verifier.lm.path_counts[ADDITIVE_PATH] > 0



# --- row padding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen3", "opt", "phi", "gemma3_text", "gpt_neox", "granite"])
def test_padded_forwards_give_the_real_rows_outputs(model_type):
    """Padding rows change which kernels run, not the real rows' outputs: a causal prefix, a branching
    tree over it, a second pending block that sees the first, compaction, then a chain, each with 3
    padding rows, equal the unpadded engine's to 1e-5, and the cache holds the same rows after each."""
    model = tiny.build(model_type)
    prefix = tiny.repetitive_prompt(9)[0].tolist()
    runs = []
    for padding in (None, RowPadding(fixed=3)):
        lm = CachedLM(model, row_padding=padding)
        outs = [lm.forward(prefix, hidden_layers=(-1, 1))]
        ids = torch.cat([torch.tensor([3]), BRANCHING.tokens])
        outs.append(lm.forward(ids, query_positions(BRANCHING.parents, len(prefix)),
                               ancestor_mask(query_parents(BRANCHING.parents)), hidden_layers=(-1, 1)))
        Q = len(ids)
        visible = torch.zeros(2, Q + 2, dtype=torch.bool)
        visible[:, [0, 1]] = True  # both see the tree's root and first child, and themselves
        visible[0, Q], visible[1, Q + 1] = True, True
        outs.append(lm.forward([20, 21], torch.tensor([len(prefix) + 2] * 2), visible, hidden_layers=(-1,)))
        lengths = [hf_compat.cache_length(lm.cache), lm.pending]
        lm.compact([0, 1, Q], [3, int(BRANCHING.tokens[0]), 20])
        outs.append(lm.forward([5, 6], hidden_layers=(-1,)))  # a causal continuation
        lengths += [hf_compat.cache_length(lm.cache), len(lm.ids)]
        runs.append((outs, lengths))
    (plain, plain_lengths), (padded, padded_lengths) = runs
    assert plain_lengths == padded_lengths == [len(prefix) + Q + 2, Q + 2, len(prefix) + 5, len(prefix) + 5]
    for a, b in zip(plain, padded):
        assert a.logits.shape == b.logits.shape and a.hidden.shape == b.hidden.shape
        torch.testing.assert_close(a.logits.float(), b.logits.float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(a.hidden.float(), b.hidden.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2", "opt", "phi3", "stablelm"])
def test_greedy_equals_generate_with_padded_forwards(model_type):
    model = tiny.build(model_type)
    prompt = tiny.repetitive_prompt()
    expected = tiny.reference(model, prompt, 24)
    for drafter in (PromptLookupDrafter(ngram=2, k=5), AutoregressiveDrafter(tiny.build("llama", seed=1), k=3, top_k=2)):
        spec = SpecDiff(model, drafter)
        spec.verifier.lm.row_padding = RowPadding(fixed=2)
        if hasattr(drafter, "lm"):
            drafter.lm.row_padding = RowPadding(fixed=1)
        assert spec.generate(prompt, max_new_tokens=24).token_ids == expected
        assert spec.verifier.lm.row_padding.counts  # every forward was padded and booked


def test_row_padding_feeds_the_cheapest_measured_row_count():
    padding = RowPadding(max_pad=3, tries=1)
    assert [padding.rows(2) for _ in range(1)] == [2]  # nothing timed yet: the request itself first
    for rows, seconds in ((2, 0.10), (3, 0.12), (4, 0.08)):
        padding.book(rows, seconds)
    assert padding.rows(2) == 5  # 5 rows untried
    padding.book(5, 0.09)
    assert padding.rows(2) == 4 and padding.rows(3) == 6  # 3 + 3 untried
    padding.book(6, 0.3)
    assert padding.rows(3) == 4 and padding.rows(1) == 1  # 1 row untried: fed as asked
    padding.book(4, 0.2)  # the average moves: 0.8 * 0.08 + 0.2 * 0.2 = 0.104
    assert padding.seconds[4] == pytest.approx(0.104) and padding.rows(2) == 5
    assert RowPadding(fixed=2).rows(3) == 5 and RowPadding(up_to=4).rows(5) == 5  # a prefill: as it is
    revisiting = RowPadding(max_pad=1, tries=1, revisit=3)
    revisiting.book(2, 0.1), revisiting.book(3, 0.05), revisiting.book(3, 0.05)
    assert [revisiting.rows(2) for _ in range(3)] == [3, 3, 2]  # the third re-measures the least measured
    with pytest.raises(ValueError, match="max_pad >= 0"):
        RowPadding(max_pad=-1)
    with pytest.raises(ValueError, match="row_padding must be"):
        CachedLM(tiny.build("llama"), row_padding="always")
    assert CachedLM(tiny.build("llama"), row_padding="auto").row_padding is not None  # fp32 on a CPU
    assert CachedLM(tiny.build("llama").to(torch.bfloat16), row_padding="auto").row_padding is None

# --- one engine, used everywhere ---------------------------------------------------------------------

CACHE_CALLS = {"new_cache", "forward", "base_model_forward", "compact", "drop_last", "trim_to_window", "layer_groups",
               "visible_cache_rows", "pack_masks", "capture_last_hidden", "tree_attention_enabled"}
ROOT = Path(__file__).resolve().parent.parent


def cache_code_calls(path: Path) -> list[str]:
    """Calls in `path` of hf_compat's cache and forward helpers, or of a model's forward with a cache."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "specdiff.hf_compat":
            found += [alias.name for alias in node.names if alias.name in CACHE_CALLS]
        if isinstance(node, ast.Attribute) and node.attr in CACHE_CALLS and getattr(node.value, "id", "") == "hf_compat":
            found.append(node.attr)
        if isinstance(node, ast.Call) and any(k.arg in ("cache", "past_key_values") for k in node.keywords):
            found.append(ast.unparse(node.func))
        if isinstance(node, ast.Name) and node.id == "DynamicCache":
            found.append("DynamicCache")
    return found


@pytest.mark.parametrize("folder", ["drafters", "trees", "verifiers"])
def test_cached_models_use_the_one_engine(folder):
    offenders = {str(path.relative_to(ROOT)): calls for path in sorted((ROOT / folder).glob("*.py"))
                 if (calls := cache_code_calls(path))}
    assert not offenders, f"cache code outside specdiff.kv (use CachedLM): {offenders}"


def test_the_probe_finds_cache_code():
    assert cache_code_calls(ROOT / "specdiff" / "kv.py")  # the engine itself is what it looks for


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_inputs_embeds_rows_equal_their_ids(model_type):
    """Rows fed as vectors (a drafter's fused features) go through the same cache and masks: fed
    the model's own embeddings they give the logits of feeding the ids."""
    model = tiny.build(model_type)
    ids = tiny.repetitive_prompt(10)[0].tolist()
    by_ids, by_vectors = CachedLM(model), CachedLM(model)
    embed = model.get_input_embeddings()
    expected = by_ids.forward(ids).logits
    with torch.no_grad():
        got = by_vectors.forward(ids, inputs_embeds=embed(torch.tensor(ids, device=model.device))).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    tree = torch.tensor([[True, False], [True, True]])
    positions = torch.tensor([10, 11])
    expected = by_ids.forward([3, 4], positions, tree).logits
    with torch.no_grad():
        got = by_vectors.forward([3, 4], positions, tree, inputs_embeds=embed(torch.tensor([3, 4], device=model.device))).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert by_vectors.ids == ids and by_vectors.pending == 2


def test_cache_goes_in_under_the_name_the_models_forward_takes():
    """transformers renamed the forward's `past_key_values` to `cache` (5.2x); a cache passed under the
    other name is swallowed by **kwargs and the model silently builds its own."""

    class Before(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return None

    class After(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            return None

    assert hf_compat.cache_kwarg(Before()) == "past_key_values" and hf_compat.cache_kwarg(After()) == "cache"
    lm = CachedLM(tiny.build("llama"))
    lm.forward([5, 6, 7])
    assert hf_compat.cache_length(lm.cache) == 3  # the forward wrote into our cache


def test_a_forward_that_bypasses_our_cache_is_an_error_not_a_wrong_answer(monkeypatch):
    """If a future transformers takes the cache under yet another name, the model would build its own and
    ours would stay empty: every later step would attend to nothing. The engine checks and says so."""
    lm = CachedLM(tiny.build("llama"))
    monkeypatch.setattr(hf_compat, "cache_kwarg", lambda model: "not_the_cache")
    with pytest.raises(RuntimeError, match="did not write its 3 rows"):
        lm.forward([5, 6, 7])
