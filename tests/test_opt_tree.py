"""OPT-Tree: selection equals a brute-force optimum over connected subtrees on hand-built
probabilities, the stop rule, budgets, lattices with and without a proxy, and the AR drafter's beam."""

import itertools
import math

import pytest
import torch

import tiny
from specdiff.drafters import AutoregressiveDrafter
from specdiff.drafters.base import DraftContext
from specdiff.lattice import ContextLattice
from specdiff.trees import OptTree, expected_acceptance
from specdiff.types import DraftTree, ProposalKind, TokenLattice, path_to, position_ids, tree_depths


def connected_subtrees(parents: list[int], size: int) -> set[frozenset]:
    """Every node set of at most `size` that contains each member's parent (grown one node at a time)."""
    grown = sets = {frozenset()}
    for _ in range(size):
        grown = {s | {node} for s in grown for node, parent in enumerate(parents)
                 if node not in s and (parent < 0 or parent in s)}
        sets = sets | grown
    return sets


def path_prob(parents: list[int], probs: list[float], node: int) -> float:
    return math.prod(probs[n] for n in path_to(torch.tensor(parents), node))


def brute_force_expected_length(parents: list[int], probs: list[float], size: int, max_depth: int = 99) -> float:
    depths = tree_depths(torch.tensor(parents)).tolist()
    allowed = [n for n in range(len(parents)) if depths[n] < max_depth]
    best = 0.0
    for subset in connected_subtrees(parents, size):
        if all(n in allowed for n in subset):
            best = max(best, sum(path_prob(parents, probs, n) for n in subset))
    return best


# A hand-built candidate tree where greedy-by-local-probability is not optimal: node 1 (0.45) has a
# confident child (0.95), node 0 (0.5) has only weak ones.
PARENTS = [-1, -1, -1, 0, 0, 1, 1, 3, 5, 5, 8, 2]
PROBS = [0.5, 0.45, 0.05, 0.3, 0.2, 0.95, 0.04, 0.9, 0.6, 0.3, 0.99, 0.5]
TOKENS = list(range(10, 10 + len(PARENTS)))  # distinct, so output nodes map back to proposal nodes


def proposal_tree() -> DraftTree:
    return DraftTree(torch.tensor(TOKENS), torch.tensor(PARENTS), torch.tensor(PROBS))


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5, 6, 7])
def test_selection_from_tree_equals_brute_force(budget):
    tree = OptTree(node_budget=budget, max_depth=10).build(proposal_tree(), budget=10)
    assert tree.num_nodes == budget
    assert expected_acceptance(tree) == pytest.approx(brute_force_expected_length(PARENTS, PROBS, budget))


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_selection_respects_depth_limit(max_depth):
    for source in ("max_depth", "budget"):
        builder = OptTree(node_budget=5, max_depth=max_depth if source == "max_depth" else 10)
        tree = builder.build(proposal_tree(), budget=max_depth if source == "budget" else 10)
        assert int(tree_depths(tree.parents).max()) < max_depth
        assert expected_acceptance(tree) == pytest.approx(
            brute_force_expected_length(PARENTS, PROBS, 5, max_depth=max_depth))


def test_selected_nodes_keep_their_paths_and_depth_position_ids():
    proposal = proposal_tree()
    tree = OptTree(node_budget=6).build(proposal, budget=10)
    source = {token: node for node, token in enumerate(TOKENS)}
    for node in range(tree.num_nodes):  # same token path as in the proposal
        ours = tree.tokens[path_to(tree.parents, node)].tolist()
        theirs = proposal.tokens[path_to(proposal.parents, source[int(tree.tokens[node])])].tolist()
        assert ours == theirs
    assert bool((tree.parents < torch.arange(tree.num_nodes)).all())  # topological
    expected_depths = tree_depths(proposal.parents)[[source[t] for t in tree.tokens.tolist()]]
    assert position_ids(tree.parents, 40).tolist() == (expected_depths + 40).tolist()


def test_node_budget_none_follows_the_policy_budget():
    builder = OptTree(node_budget=None)
    for budget in (1, 3, 5):
        tree = builder.build(proposal_tree(), budget)
        assert tree.num_nodes == budget
        assert int(tree_depths(tree.parents).max()) < budget
        assert expected_acceptance(tree) == pytest.approx(
            brute_force_expected_length(PARENTS, PROBS, budget, max_depth=budget))


@pytest.mark.parametrize("threshold, max_depth, expected", [
    # n = 6. E_sub by layer: 1.0, 1.6775, 1.919, 2.037935, so the gains are 1.0, 0.6775, 0.2415, 0.118935.
    (0.2, 3, 2.037935),  # every gain but the last passes; the failing layer is kept: all 4 layers
    (0.5, 2, 1.919),  # layer 3's gain 0.2415 fails: layers 1..3
    (0.7, 1, 1.6775),  # layer 2's gain 0.6775 fails: layers 1..2
    (1.0, 0, 1.0),  # layer 1's gain 1.0 fails: layer 1 only
])
def test_stop_rule_keeps_layers_while_the_gain_exceeds_the_threshold(threshold, max_depth, expected):
    tree = OptTree(node_budget=6, threshold=threshold).build(proposal_tree(), budget=10)
    assert int(tree_depths(tree.parents).max()) == max_depth
    assert expected_acceptance(tree) == pytest.approx(expected)


def test_selection_from_a_sampled_tree_is_marked_deterministic():
    # Survival depends on the drafted values, so the kept children are no longer i.i.d. draws.
    sampled = DraftTree(torch.tensor(TOKENS), torch.tensor(PARENTS), torch.tensor(PROBS), kind=ProposalKind.IID)
    for budget in (3, len(TOKENS)):
        assert OptTree(node_budget=budget).build(sampled, budget=10).kind is ProposalKind.DETERMINISTIC


def random_lattice(L: int, K: int, seed: int) -> TokenLattice:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(L, K + 2, generator=g) * 2, dim=-1)[:, :K]  # [L, K], rows sum < 1
    candidates = torch.randperm(200, generator=g)[: L * K].reshape(L, K) + 3
    return TokenLattice(candidates, probs)


def full_trie(lattice: TokenLattice):
    """Every lattice path as a node: (parents, probs, column paths)."""
    L, K = lattice.candidates.shape
    paths = [p for d in range(1, L + 1) for p in itertools.product(range(K), repeat=d)]
    index = {p: i for i, p in enumerate(paths)}
    parents = [index[p[:-1]] if len(p) > 1 else -1 for p in paths]
    probs = [float(lattice.probs[len(p) - 1, p[-1]]) for p in paths]
    return parents, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5])
def test_selection_from_lattice_equals_brute_force(seed, budget):
    lattice = random_lattice(L=3, K=3, seed=seed)
    tree = OptTree(node_budget=budget).build(lattice, budget=10)
    parents, probs = full_trie(lattice)
    assert tree.num_nodes == budget
    assert expected_acceptance(tree) == pytest.approx(brute_force_expected_length(parents, probs, budget))
    for node in range(tree.num_nodes):  # node d holds a candidate of lattice row d
        depth = int(tree_depths(tree.parents)[node])
        assert int(tree.tokens[node]) in lattice.candidates[depth].tolist()


def test_lattice_zero_probability_candidates_are_never_taken():
    lattice = TokenLattice(torch.tensor([[5, 6, 7], [8, 9, 10]]), torch.tensor([[0.6, 0.3, 0.0], [0.9, 0.0, 0.0]]))
    tree = OptTree(node_budget=10).build(lattice, budget=10)
    assert sorted(tree.tokens.tolist()) == [5, 6, 8, 8]
    assert bool((tree.draft_probs > 0).all())


def test_lattice_dists_follow_each_node_depth():
    lattice = random_lattice(L=3, K=2, seed=4)
    dists = torch.softmax(torch.randn(3, 50), dim=-1)
    lattice = TokenLattice(lattice.candidates, lattice.probs, dists)
    tree = OptTree(node_budget=5).build(lattice, budget=10)
    assert torch.equal(tree.draft_dists, dists[tree_depths(tree.parents)])


class FavouriteProxy:
    """A causal proxy (trees/cps.py's CausalProxy) for which 31 follows 21 and nothing else is plausible."""

    def __init__(self):
        self.calls = []

    def log_probs(self, context, prefixes, candidates):
        self.calls.append((tuple(context), len(prefixes), len(candidates)))
        liked = ([21], [21, 31])
        return torch.tensor([[0.0 if prefix + [int(c)] in liked else -6.0 for c in candidates] for prefix in prefixes])


def test_proxy_reranks_lattice_paths():
    # The lattice prefers 20 then 30 (two roots beat the path 20 -> 30 at 0.36).
    lattice = ContextLattice(torch.tensor([[20, 21], [30, 31]]), torch.tensor([[0.6, 0.4], [0.6, 0.4]]), context=(7, 8))
    plain = OptTree(node_budget=2).build(lattice, budget=5)
    assert plain.tokens.tolist() == [20, 21]
    proxy = FavouriteProxy()
    mixed = OptTree(node_budget=2, proxy=proxy, lattice_weight=0.2).build(lattice, budget=5)
    assert mixed.tokens.tolist() == [21, 31] and mixed.parents.tolist() == [-1, 0]
    assert proxy.calls == [((7, 8), 1, 2), ((7, 8), 2, 2)]  # one batched call per layer, with the context
    assert mixed.draft_probs.tolist() == pytest.approx([0.4, 0.4])  # the lattice's own probabilities
    assert OptTree(node_budget=2, proxy=proxy, lattice_weight=1.0).build(lattice, budget=5).tokens.tolist() == [20, 21]


def test_proxy_output_is_checked():
    lattice = random_lattice(L=2, K=2, seed=0)

    class Returns:
        def __init__(self, make):
            self.make = make

        def log_probs(self, context, prefixes, candidates):
            return self.make(len(prefixes), len(candidates))

    with pytest.raises(ValueError, match="log-probabilities"):
        OptTree(node_budget=2, proxy=Returns(torch.ones)).build(lattice, budget=4)
    with pytest.raises(ValueError, match="one per prefix"):
        OptTree(node_budget=2, proxy=Returns(lambda b, k: torch.zeros(b * k))).build(lattice, budget=4)
    with pytest.raises(ValueError, match="TokenLattice"):
        OptTree(node_budget=2, proxy=Returns(torch.zeros)).build(proposal_tree(), budget=4)


def test_invalid_settings_and_inputs():
    for kwargs in (dict(node_budget=0), dict(threshold=-0.1), dict(max_depth=0), dict(lattice_weight=1.5)):
        with pytest.raises(ValueError):
            OptTree(**kwargs)
    with pytest.raises(ValueError, match="draft_probs"):
        OptTree(node_budget=3).build(DraftTree.chain([4, 5, 6]), budget=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        OptTree(node_budget=3).build(TokenLattice(torch.tensor([[4, 5]]), torch.tensor([[2.0, 0.1]])), budget=3)
    assert OptTree(node_budget=4).build(proposal_tree(), budget=0).num_nodes == 0


# --- the AR drafter's layer-wise beam ----------------------------------------------------------


def next_token_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)  # [V]


def test_drafter_beam_keeps_the_global_top_n_per_layer():
    model = tiny.build("llama", "eager", seed=3)
    context = tiny.repetitive_prompt(length=12)[0].tolist()
    n = 3
    tree = AutoregressiveDrafter(model, k=3, top_k=n).propose(DraftContext(context, budget=3))
    depths = tree_depths(tree.parents)
    assert depths.bincount().tolist() == [n, n, n]
    # Recompute each layer from plain forwards over each node's full path (no cache, no tree mask).
    paths = {-1: []}
    path_probs = {-1: 1.0}
    for layer in range(3):
        previous = [-1] if layer == 0 else (depths == layer - 1).nonzero().flatten().tolist()
        candidates = []
        for parent in previous:
            probs = next_token_probs(model, context + paths[parent])
            top = probs.topk(n)
            candidates += [(path_probs[parent] * float(p), parent, int(t)) for p, t in zip(top.values, top.indices)]
        expected = sorted(candidates, reverse=True)[:n]
        nodes = (depths == layer).nonzero().flatten().tolist()
        got = sorted(((path_probs[int(tree.parents[i])] * float(tree.draft_probs[i]), int(tree.parents[i]),
                       int(tree.tokens[i])) for i in nodes), reverse=True)
        assert [(p, t) for _, p, t in got] == [(p, t) for _, p, t in expected]
        assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], rel=1e-4)
        for i in nodes:
            paths[i] = paths[int(tree.parents[i])] + [int(tree.tokens[i])]
            path_probs[i] = path_probs[int(tree.parents[i])] * float(tree.draft_probs[i])


def test_drafter_threshold_stops_growing_the_tree():
    model = tiny.build("llama", "eager", seed=3)
    context = tiny.repetitive_prompt(length=12)[0].tolist()
    deep = AutoregressiveDrafter(model, k=4, top_k=2)
    shallow = AutoregressiveDrafter(model, k=4, top_k=2, tree_threshold=0.999)  # layer 1 gains < 1
    deep_tree, shallow_tree = (d.propose(DraftContext(context, budget=4)) for d in (deep, shallow))
    assert int(tree_depths(deep_tree.parents).max()) == 3 and deep.forward_count == 4  # sync + 3 layers
    assert int(tree_depths(shallow_tree.parents).max()) == 0 and shallow.forward_count == 1
    assert torch.equal(shallow_tree.tokens, deep_tree.tokens[:2])
    with pytest.raises(ValueError, match="tree_threshold"):
        AutoregressiveDrafter(model, top_k=2, tree_threshold=-1.0)


def test_drafter_threshold_cuts_a_chain_where_its_probability_falls():
    # A chain is a tree of one node per layer: the rule stops after the first token whose chain
    # probability (the layer's gain in E(A)) is <= delta, keeping that token, and saves the forwards after it.
    model = tiny.build("llama", "eager", seed=3)
    context = tiny.repetitive_prompt(length=12)[0].tolist()
    full = AutoregressiveDrafter(model, k=6).propose(DraftContext(context, budget=6))
    chain_probs = torch.cumprod(full.draft_probs, 0)
    delta = float(chain_probs[2]) + 1e-6  # cut after the third token
    cut_drafter = AutoregressiveDrafter(model, k=6, tree_threshold=delta)
    cut = cut_drafter.propose(DraftContext(context, budget=6))
    stop = int((chain_probs <= delta).nonzero()[0]) + 1
    assert stop <= 3 and torch.equal(cut.tokens, full.tokens[:stop])
    assert cut_drafter.forward_count == stop  # the sync forward, then one per kept token but the last


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_a_chain_cut_by_the_threshold_stays_lossless(family):
    from specdiff import SpecDiff

    target, drafter = tiny.build(family, seed=0), tiny.build(family, seed=1)
    prompt = tiny.repetitive_prompt(length=16)
    spec = SpecDiff(target, AutoregressiveDrafter(drafter, k=5, tree_threshold=0.3))
    result = spec.generate(prompt[0].tolist(), max_new_tokens=40)
    assert result.token_ids == tiny.reference(target, prompt, 40)
    assert result.stats.drafted_tokens < 5 * result.stats.target_forwards  # the cut fired
