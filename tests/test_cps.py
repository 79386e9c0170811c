"""Lattice pruning and EOS rules on hand-built distributions, n-gram proxies, and causal-consistency
path search (CPS) on hand-built lattices."""

import itertools
import math

import numpy as np
import pytest
import torch

import tiny
from specdiff.lattice import ContextLattice, LatticePruning, prune_lattice, tokens_before_eos
from specdiff.ngram import NGramModel, OnlineNGram
from specdiff.trees import CausalConsistencySearch, CausalLMProxy
from specdiff.types import DraftTree, ProposalKind, TokenLattice, root_to_leaf_paths, tree_depths

EOS = 4


def _dists(rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- pruning (DiffuSpec Eq. 7) ------------------------------------------------------------------


def test_pruning_keeps_smallest_set_reaching_tau_plus_eos():
    dists = _dists([
        [0.50, 0.35, 0.10, 0.04, 0.01],  # 0.50 + 0.35 >= 0.8: keep {0, 1}, then EOS
        [0.02, 0.90, 0.05, 0.02, 0.01],  # peaked: keep {1}, then EOS
        [0.05, 0.25, 0.25, 0.25, 0.20],  # flat: needs 4 tokens; EOS (0.20) is among them
    ])
    lattice = prune_lattice(dists, eos_token_ids=(EOS,), pruning=LatticePruning(tau=0.8, max_candidates=15))
    assert lattice.candidates.tolist() == [[0, 1, EOS, 0], [1, EOS, 1, 1], [1, 2, 3, EOS]]
    expected_probs = [[0.50, 0.35, 0.01, 0.0], [0.90, 0.01, 0.0, 0.0], [0.25, 0.25, 0.25, 0.20]]
    assert torch.allclose(lattice.probs, torch.tensor(expected_probs))
    assert torch.equal(lattice.dists, dists)
    assert lattice.kind == ProposalKind.DETERMINISTIC


def test_pruning_caps_at_max_candidates_and_always_keeps_eos():
    flat = torch.full((2, 10), 0.1)
    lattice = prune_lattice(flat, eos_token_ids=(9,), pruning=LatticePruning(tau=0.8, max_candidates=3))
    assert lattice.candidates.shape == (2, 4)  # capped at 3, plus EOS
    assert (lattice.candidates[:, -1] == 9).all()
    no_eos = prune_lattice(flat, pruning=LatticePruning(tau=0.8, max_candidates=3))
    assert no_eos.candidates.shape == (2, 3)


def test_lattice_ends_at_first_argmax_eos():
    dists = _dists([
        [0.7, 0.1, 0.1, 0.05, 0.05],
        [0.1, 0.1, 0.1, 0.1, 0.6],  # argmax is EOS: the lattice ends here, this position included
        [0.9, 0.025, 0.025, 0.025, 0.025],
    ])
    lattice = prune_lattice(dists, eos_token_ids=(EOS,))
    assert lattice.length == 2
    assert lattice.candidates[1, 0] == EOS
    assert tokens_before_eos(lattice, (EOS,)) == 1  # L^gen (Eq. 9): one token before the EOS
    assert prune_lattice(dists).length == 3  # no EOS ids: no cut
    assert tokens_before_eos(prune_lattice(dists), (EOS,)) == 1
    assert tokens_before_eos(prune_lattice(dists[[0, 2]], (EOS,)), (EOS,)) == 2  # no EOS: the whole draft
    assert tokens_before_eos(DraftTree.chain([1, 2]), (EOS,)) is None
    assert tokens_before_eos(None, (EOS,)) is None


def test_pruning_config_is_validated():
    with pytest.raises(ValueError, match="tau"):
        LatticePruning(tau=0.0)
    with pytest.raises(ValueError, match="max_candidates"):
        LatticePruning(max_candidates=0)


# --- n-gram proxies -----------------------------------------------------------------------------


def test_ngram_counts_and_normalisation():
    stream = np.array([1, 2, 3, 5, 1, 2, 3, 6, 1, 2, 4, 7])
    model = NGramModel.fit(stream, vocab_size=8, order=3)
    log_probs = model.log_probs([0, 1, 2], [[]], torch.tensor([3, 4, 0]))[0]
    assert log_probs[0] > log_probs[1] > log_probs[2]  # "1 2" was followed by 3 twice, 4 once, 0 never
    every_token = model.log_probs([0, 1], [[2], [7, 7], []], torch.arange(8)).exp()
    assert torch.allclose(every_token.sum(dim=1), torch.ones(3), atol=1e-6)
    assert (every_token > 0).all()  # interpolation down to uniform: nothing is impossible


def test_ngram_value_matches_formula():
    # absolute discounting by hand: c(1 2 3) = 2, c(1 2) = 3, N1+(1 2 .) = 2, D = 0.5
    stream = np.array([1, 2, 3, 1, 2, 3, 1, 2, 4])
    model = NGramModel.fit(stream, vocab_size=5, order=3, discount=0.5)
    unigram = (2 - 0.5 + 0.5 * 4 * (1 / 5)) / 9  # c(3) = 2 of 9 tokens, 4 types seen, uniform 1/5 below
    bigram = (2 - 0.5 + 0.5 * 2 * unigram) / 3  # c(2 3) = 2, c(2 .) = 3, types {3, 4}
    trigram = (2 - 0.5 + 0.5 * 2 * bigram) / 3
    got = model.log_probs([1, 2], [[]], torch.tensor([3]))[0, 0].exp().item()
    assert got == pytest.approx(trigram, rel=1e-6)


def test_ngram_save_load_and_min_count(tmp_path):
    stream = np.random.default_rng(0).integers(0, 16, size=500)
    model = NGramModel.fit(stream, vocab_size=16, order=3)
    model.save(tmp_path / "ngram.npz")
    loaded = NGramModel.load(tmp_path / "ngram.npz")
    candidates = torch.arange(16)
    prefixes = [[3], [5, 7]]
    assert torch.equal(model.log_probs([1, 2], prefixes, candidates), loaded.log_probs([1, 2], prefixes, candidates))
    pruned = NGramModel.fit(stream, vocab_size=16, order=3, min_count=2)
    assert len(pruned.tables["keys3"]) < len(model.tables["keys3"])
    assert (pruned.tables["counts3"] >= 2).all()
    with pytest.raises(ValueError, match="token ids"):
        NGramModel.fit(np.array([1, 99]), vocab_size=16)


def test_online_ngram_equals_a_corpus_model_of_the_context():
    context = np.random.default_rng(1).integers(0, 12, size=80)
    online = OnlineNGram(vocab_size=12, order=3)
    candidates = torch.arange(12)
    for length in (30, 55, 80):  # the context grows, as committed ids do
        fitted = NGramModel.fit(context[:length], vocab_size=12, order=3)
        expected = fitted.log_probs(context[:length].tolist(), [[], [4], [4, 5]], candidates)
        got = online.log_probs(context[:length].tolist(), [[], [4], [4, 5]], candidates)
        assert torch.allclose(got, expected, atol=1e-6)
    other = [1, 2, 3, 1, 2]  # a different request: recounted from scratch
    assert torch.allclose(online.log_probs(other, [[]], candidates),
                          NGramModel.fit(np.array(other), 12, 3).log_probs(other, [[]], candidates), atol=1e-6)


def test_causal_lm_proxy_matches_full_forward():
    model = tiny.build("llama")
    proxy = CausalLMProxy(model)
    candidates = torch.tensor([5, 17, 200, 3])
    context = torch.randint(3, tiny.VOCAB, (14,), generator=torch.Generator().manual_seed(0)).tolist()
    for length in (9, 14):  # the second call reuses the cache of the first
        prefixes = [[11, 12], [11, 40], [90, 12]]
        got = proxy.log_probs(context[:length], prefixes, candidates)
        for row, prefix in enumerate(prefixes):
            with torch.no_grad():
                logits = model(torch.tensor([context[:length] + prefix])).logits[0, -1]
            assert torch.allclose(got[row], torch.log_softmax(logits, -1)[candidates], atol=1e-4)


# --- causal-consistency search on hand-built lattices ---------------------------------------------


class TableProxy:
    """A proxy given as a table: log p(token | last token of context + prefix)."""

    def __init__(self, table: dict[tuple[int, int], float], default: float = math.log(1e-3)):
        self.table, self.default, self.contexts = table, default, []

    def log_probs(self, context, prefixes, candidates):
        self.contexts.append(tuple(context))
        rows = []
        for prefix in prefixes:
            history = list(context) + list(prefix)
            last = history[-1] if history else -1
            rows.append([self.table.get((last, int(c)), self.default) for c in candidates])
        return torch.tensor(rows)


def _lattice(candidates, probs, context=(0,)):
    return ContextLattice(torch.tensor(candidates), torch.tensor(probs), context=tuple(context))


def _score(path, lattice, proxy, weight):
    total, history = 0.0, list(lattice.context)
    for position, token in enumerate(path):
        column = lattice.candidates[position].tolist().index(token)
        dlm = math.log(lattice.probs[position, column])
        total += weight * dlm + (1 - weight) * proxy.log_probs(history, [[]], torch.tensor([token]))[0, 0].item()
        history.append(token)
    return total


LATTICE = _lattice([[10, 11], [20, 21], [30, 31]], [[0.6, 0.4], [0.55, 0.45], [0.7, 0.3]])
PROXY_TABLE = {(0, 11): math.log(0.9), (11, 21): math.log(0.9), (21, 31): math.log(0.9),
               (0, 10): math.log(0.1), (10, 20): math.log(0.05), (20, 30): math.log(0.1)}


def _path(tree):
    assert root_to_leaf_paths(tree.parents) == [list(range(tree.num_nodes))]  # a chain
    return tree.tokens.tolist()


def test_dlm_weight_one_is_the_argmax_chain():
    search = CausalConsistencySearch(TableProxy(PROXY_TABLE), dlm_weight=1.0)
    assert _path(search.build(LATTICE, budget=3)) == [10, 20, 30]


def test_dlm_weight_zero_follows_the_proxy():
    search = CausalConsistencySearch(TableProxy(PROXY_TABLE), dlm_weight=0.0)
    assert _path(search.build(LATTICE, budget=3)) == [11, 21, 31]


def test_known_best_path_equals_exhaustive_search():
    proxy = TableProxy(PROXY_TABLE)
    for weight in (0.2, 0.5, 0.8):
        paths = itertools.product(*[row.tolist() for row in LATTICE.candidates])
        best = max(paths, key=lambda p: _score(p, LATTICE, proxy, weight))
        searched = TableProxy(PROXY_TABLE)
        search = CausalConsistencySearch(searched, dlm_weight=weight, beam_size=8)  # 2^3 paths: exhaustive
        assert tuple(_path(search.build(LATTICE, budget=3))) == best
        assert set(searched.contexts) == {(0,)}  # the proxy saw the lattice's committed context


def test_budget_cuts_the_search_and_trees_pass_through():
    search = CausalConsistencySearch(TableProxy(PROXY_TABLE), dlm_weight=1.0)
    assert _path(search.build(LATTICE, budget=2)) == [10, 20]
    tree = DraftTree.chain([1, 2, 3])
    assert search.build(tree, budget=2).tokens.tolist() == [1, 2]


def test_eos_finishes_a_beam():
    lattice = _lattice([[10, EOS], [20, 21], [30, 31]], [[0.45, 0.55], [0.5, 0.5], [0.5, 0.5]])
    search = CausalConsistencySearch(TableProxy({}), dlm_weight=1.0, eos_token_ids=(EOS,))
    assert _path(search.build(lattice, budget=3)) == [EOS]  # finished beams keep their score


def test_padding_slots_are_never_chosen():
    lattice = _lattice([[10, 10], [20, 20]], [[1.0, 0.0], [1.0, 0.0]])
    search = CausalConsistencySearch(TableProxy({}), dlm_weight=0.0, beam_size=3)
    assert _path(search.build(lattice, budget=2)) == [10, 20]


def test_top_beams_merge_into_a_tree_with_draft_probs():
    dists = torch.zeros(3, 40)
    for position, (tokens, probs) in enumerate(zip(LATTICE.candidates.tolist(), LATTICE.probs.tolist())):
        dists[position, tokens] = torch.tensor(probs)
    lattice = ContextLattice(LATTICE.candidates, LATTICE.probs, dists, context=(0,))
    search = CausalConsistencySearch(TableProxy(PROXY_TABLE), dlm_weight=0.5, beam_size=3, num_paths=3)
    tree = search.build(lattice, budget=3)
    beams = search.search(lattice, 3)
    paths = [[tree.tokens[node].item() for node in path] for path in root_to_leaf_paths(tree.parents)]
    assert sorted(paths) == sorted(list(beam.tokens) for beam in beams)
    assert tree.kind == ProposalKind.DETERMINISTIC
    depths = tree_depths(tree.parents)
    assert torch.equal(tree.draft_probs, dists[depths, tree.tokens])  # each node's lattice probability
    assert torch.equal(tree.draft_dists, dists[depths])


def test_plain_lattice_and_validation():
    plain = TokenLattice(LATTICE.candidates, LATTICE.probs)  # no context: scored from its first position
    assert _path(CausalConsistencySearch(TableProxy({}), dlm_weight=0.5).build(plain, 3)) == [10, 20, 30]
    with pytest.raises(ValueError, match="dlm_weight"):
        CausalConsistencySearch(TableProxy({}), dlm_weight=1.5)
    with pytest.raises(ValueError, match="num_paths"):
        CausalConsistencySearch(TableProxy({}), beam_size=2, num_paths=3)
