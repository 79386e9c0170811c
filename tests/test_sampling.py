"""Lossless sampling as pure functions: on a V = 8 vocabulary with hand-built target and draft
distributions, the tokens emitted by rejection sampling over chains and trees follow the target's
law (chi-square over many seeded trials), for every proposal kind, an adversarial q and q = p."""

import dataclasses

import pytest
import torch

from specdiff.acceptance import greedy_accept
from specdiff.sampling import SamplingSettings, check_tree, rejection_sample, sampled_accept, speculative_step
from specdiff.types import DraftTree, ProposalKind, tree_from_sequences

V = 8
P_VALUE = 1e-4  # seeded, so each check is deterministic; a broken rule scores far below this


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's goodness of fit of counts [C] to probs [C]; cells expected below `min_expected`
    are pooled into one. A count where the law puts no mass at all scores 0."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    expected = probs * counts.sum()
    small = expected < min_expected
    observed = torch.cat([counts[~small], counts[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = expected > 0
    observed, expected = observed[keep], expected[keep]
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = len(expected) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), statistic / 2))


# --- a Markov "target" and "drafter" on V tokens: the law of the next token given the last one ------


def markov(seed: int, scale: float = 2.0, keep: int = V) -> torch.Tensor:
    """[V + 1, V] next-token laws: row 0 after the committed token, row 1 + t after token t.
    `keep` < V zeroes all but the `keep` most likely tokens of each row (a top-k target)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(V + 1, V, generator=g) * scale
    cut = logits.topk(keep, dim=-1).values[:, -1:]
    return torch.softmax(logits.masked_fill(logits < cut, float("-inf")), dim=-1)


def row(table: torch.Tensor, last: int) -> torch.Tensor:
    return table[0 if last < 0 else 1 + last]


def draw_children(kind, dist, width, g) -> list[int]:
    """The tokens a drafter of `kind` proposes from dist [V]."""
    if kind is ProposalKind.IID:
        return torch.multinomial(dist, width, replacement=True, generator=g).tolist()
    if kind is ProposalKind.WITHOUT_REPLACEMENT:
        # Gumbel-top-k (Kool et al. 2019): the sorted keys are sequential draws without replacement
        keys = dist.log() - torch.empty(V).exponential_(generator=g).log()
        return keys.topk(min(width, int((dist > 0).sum()))).indices.tolist()
    return dist.topk(width).indices.tolist()  # DETERMINISTIC: the fixed top candidates


def draft_tree(kind, q_table, widths, g, reported=None) -> DraftTree:
    """A tree with widths[d] children per node at depth d, each node drawn from the drafter's law
    at its parent. `reported` replaces the distributions the tree reports (a lying drafter)."""
    tokens, parents, dists = [], [], []
    frontier = [-1]
    for width in widths:
        next_frontier = []
        for parent in frontier:
            last = tokens[parent] if parent >= 0 else -1
            for token in draw_children(kind, row(q_table, last), width, g):
                next_frontier.append(len(tokens))
                tokens.append(token), parents.append(parent)
                dists.append(row(reported if reported is not None else q_table, last))
        frontier = next_frontier
    return DraftTree(torch.tensor(tokens), torch.tensor(parents), None, torch.stack(dists), kind)


def emitted(tree, p_table, g, length) -> list[int]:
    """The first `length` tokens: one rejection-sampling step, then plain target sampling."""
    target_probs = torch.stack([row(p_table, -1)] + [row(p_table, t) for t in tree.tokens.tolist()])
    acceptance = rejection_sample(tree, target_probs, g)
    out = acceptance.new_tokens(tree)
    while len(out) < length:
        out.append(int(torch.multinomial(row(p_table, out[-1]), 1, generator=g)))
    return out[:length]


def exact_pairs(p_table) -> torch.Tensor:
    """[V * V] exact law of the first two tokens."""
    return (row(p_table, -1)[:, None] * p_table[1:]).flatten()


def pair_pvalue(kind, p_table, q_table, widths, trials=2000, reported=None, edit=lambda tree: tree) -> float:
    """Goodness of fit of the first two emitted tokens, over seeded trials; `edit` changes each
    drafted tree before acceptance (to model a drafter's mistake)."""
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(V * V)
    for _ in range(trials):
        first, second = emitted(edit(draft_tree(kind, q_table, widths, g, reported)), p_table, g, 2)
        counts[first * V + second] += 1
    return chi_square_pvalue(counts, exact_pairs(p_table))


TARGET = markov(seed=1)
DRAFTS = {
    "close": markov(seed=1, scale=1.5),  # the target, flatter: a decent drafter
    "adversarial": torch.softmax(-3 * TARGET.log().clamp(min=-30), dim=-1),  # mass where p is small
    "equal": TARGET,
    "narrow": markov(seed=2, keep=3),  # q = 0 on most of p's support
}


@pytest.mark.parametrize("draft", DRAFTS)
def test_chain_leviathan_rule(draft):
    # a chain of i.i.d. drafts, three deep: accept min(1, p/q), residual, bonus token from p
    assert pair_pvalue(ProposalKind.IID, TARGET, DRAFTS[draft], (1, 1, 1)) > P_VALUE


@pytest.mark.parametrize("draft", DRAFTS)
@pytest.mark.parametrize("kind", list(ProposalKind), ids=lambda k: k.name)
def test_tree_recursive_rejection_sampling(kind, draft):
    assert pair_pvalue(kind, TARGET, DRAFTS[draft], (3, 2)) > P_VALUE


@pytest.mark.parametrize("kind", list(ProposalKind), ids=lambda k: k.name)
def test_top_k_target_with_full_support_draft(kind):
    # the target has zeros (a top-3 warp), the drafter proposes them: they must never be emitted
    target = markov(seed=3, keep=3)
    assert pair_pvalue(kind, target, DRAFTS["close"], (3, 2)) > P_VALUE


def test_a_drafter_that_misreports_q_is_caught():
    # The field's classic bug: drafts sampled from one law, the ratio taken with another. The same
    # check that passes above must fail here, or it proves nothing.
    reported = markov(seed=1, scale=0.5)
    assert pair_pvalue(ProposalKind.IID, TARGET, DRAFTS["close"], (1, 1), reported=reported) < 1e-6


def test_a_mislabelled_kind_is_caught():
    # Fixed top-3 candidates declared IID: the ratio p/q and the residual p - q assume a draw from q.
    as_iid = lambda tree: dataclasses.replace(tree, kind=ProposalKind.IID)
    assert pair_pvalue(ProposalKind.DETERMINISTIC, TARGET, DRAFTS["close"], (3,), edit=as_iid) < 1e-6


def test_vocabulary_wider_than_the_draft():
    # draft_dists over a shared vocabulary of 5 tokens; the target puts mass on tokens 5..7 too
    q = torch.nn.functional.pad(DRAFTS["close"][:, :5], (0, 3))
    q = q / q.sum(-1, keepdim=True)
    shared = lambda tree: dataclasses.replace(tree, draft_dists=tree.draft_dists[:, :5])
    assert pair_pvalue(ProposalKind.IID, TARGET, q, (2, 1), edit=shared) > P_VALUE


# --- drawn trees with fixed candidates (DraftTree.fixed: prompt lookup merged into a sampled draft) -------

def fixed_candidates(q_table) -> list[list[int]]:
    """Fixed candidates known before the draws (lookup's continuations): the drafter's and the target's likely
    first tokens, so that the drafter often draws a fixed token (a node both fixed and drawn)."""
    return [[int(q_table[0].argmax()), 5], [int(TARGET[0].argmax())], [2, 6, 1]]


def mixed_tree(q_table, g, shared_as_fixed_only=False, fixed=None) -> DraftTree:
    """A drawn IID chain of 2 from q_table merged with fixed candidates (drafters.hybrid.merge). With
    `shared_as_fixed_only`, a node both drawn and fixed loses its drawn trial (a tempting shortcut: biased)."""
    from specdiff.drafters.hybrid import merge

    chain = draft_tree(ProposalKind.IID, q_table, (1, 1), g)
    chain = dataclasses.replace(chain, draft_probs=torch.full((2,), 0.5))
    fixed = fixed_candidates(q_table) if fixed is None else fixed
    tree = merge(chain, fixed, [0.9])
    if shared_as_fixed_only:
        dists = tree.draft_dists.clone()
        dists[tree.fixed & (dists.sum(-1) > 0)] = 0
        tree = dataclasses.replace(tree, draft_dists=dists)
    return tree


def mixed_pvalue(q_table, trials=3000, p_table=TARGET, **kwargs) -> float:
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(V * V)
    for _ in range(trials):
        first, second = emitted(mixed_tree(q_table, g, **kwargs), p_table, g, 2)
        counts[first * V + second] += 1
    return chi_square_pvalue(counts, exact_pairs(p_table))


@pytest.mark.parametrize("draft", DRAFTS)
def test_fixed_candidates_in_a_drawn_tree(draft):
    assert mixed_pvalue(DRAFTS[draft]) > P_VALUE


def test_a_shared_node_without_its_drawn_trial_is_caught():
    # A drawn token that is also a fixed candidate must still take its drawn trial after a rejection as a fixed
    # one: the residual then subtracts q. Skipping it (treating the node as fixed only) biases the law.
    # The bias is largest where the drafter often draws the fixed token and the target rarely wants it: here
    # q puts 0.51 on token 5, p 0.002 (0.21 of total variation in the first token).
    p_table, q_table = TARGET.clone(), DRAFTS["close"].clone()
    p_table[0] = torch.tensor([0.284, 0.184, 0.001, 0.343, 0.005, 0.002, 0.099, 0.082])
    q_table[0] = torch.tensor([0.268, 0.165, 0.031, 0.004, 0.007, 0.512, 0.004, 0.009])
    p_table[0], q_table[0] = p_table[0] / p_table[0].sum(), q_table[0] / q_table[0].sum()
    assert mixed_pvalue(q_table, p_table=p_table, fixed=[[5]]) > P_VALUE
    assert mixed_pvalue(q_table, p_table=p_table, fixed=[[5]], shared_as_fixed_only=True) < 1e-6


def test_a_mixed_tree_by_hand():
    from specdiff.drafters.hybrid import merge

    q = torch.eye(V)[[3, 4]] * 0.6 + 0.4 / V  # [2, V]: drew 3 then 4
    chain = DraftTree.chain([3, 4], torch.tensor([0.65, 0.65]), q, ProposalKind.IID)
    tree = merge(chain, [[3, 7], [1]], [0.8, 0.5])
    assert tree.tokens.tolist() == [3, 4, 7, 1] and tree.parents.tolist() == [-1, 0, 0, -1]
    assert tree.fixed.tolist() == [True, False, True, True]  # 3 drawn and fixed, 4 drawn, 7 and 1 fixed
    assert tree.draft_probs.tolist() == pytest.approx([0.8, 0.65, 0.5, 0.8])  # a fixed node: lookup's rate
    assert torch.equal(tree.draft_dists[:2], q) and not tree.draft_dists[2:].any()
    for kind in (ProposalKind.DETERMINISTIC, ProposalKind.WITHOUT_REPLACEMENT):
        with pytest.raises(ValueError, match="leave it None"):
            dataclasses.replace(tree, kind=kind)
    # Fixed trials come first: with p a point mass on 1 the fixed root 1 passes, never the drawn 3 before it.
    p = torch.zeros(5, V)
    p[:, 1] = 1
    assert rejection_sample(tree, p, torch.Generator().manual_seed(0)).path == [3]


# --- single steps, guards and refusals --------------------------------------------------------------


def test_step_accepts_with_min_one_ratio():
    target = torch.tensor([0.5, 0.3, 0.2, 0, 0, 0, 0, 0])
    draft = torch.tensor([0.25, 0.6, 0.15, 0, 0, 0, 0, 0])
    g = torch.Generator().manual_seed(0)
    accepted = [speculative_step(target, draft, 1, g)[0] for _ in range(4000)]
    assert sum(accepted) / 4000 == pytest.approx(0.3 / 0.6, abs=0.03)
    assert all(speculative_step(target, draft, 0, g)[0] for _ in range(100))  # p >= q: always
    ok, residual = speculative_step(target, draft, 1, torch.Generator().manual_seed(1))
    while ok:
        ok, residual = speculative_step(target, draft, 1, g)
    assert torch.allclose(residual, torch.tensor([0.25, 0, 0.05, 0, 0, 0, 0, 0]) / 0.3)


def test_zero_residual_falls_back_to_the_target():
    target = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0, 0])
    ok, law = speculative_step(target, target.clone(), 2, torch.Generator().manual_seed(0))
    assert not ok and torch.equal(law, target)  # token 2 has p = 0: rejected; p - q has no mass


def test_point_mass_proposal_zeroes_the_rejected_token():
    target = torch.full((V,), 1 / V)
    tree = DraftTree.chain([3], kind=ProposalKind.DETERMINISTIC)
    g = torch.Generator().manual_seed(0)
    results = [rejection_sample(tree, target.expand(2, V), g) for _ in range(2000)]
    rejected = [r.next_token for r in results if not r.path]
    assert 3 not in rejected
    assert len(rejected) / 2000 == pytest.approx(7 / 8, abs=0.03)


def test_refuses_sampled_trees_without_distributions():
    tree = DraftTree.chain([1, 2], kind=ProposalKind.IID)
    with pytest.raises(ValueError, match="draft_dists"):
        rejection_sample(tree, torch.full((3, V), 1 / V), torch.Generator())
    with pytest.raises(ValueError, match="proposal kind"):
        check_tree(DraftTree.chain([1], kind="naive"), V)
    wide = DraftTree.chain([1], draft_dists=torch.full((1, V + 2), 0.1), kind=ProposalKind.IID)
    with pytest.raises(ValueError, match="shared vocabulary"):
        check_tree(wide, V)
    with pytest.raises(ValueError, match="1 \\+ N"):
        rejection_sample(DraftTree.chain([1]), torch.full((3, V), 1 / V), torch.Generator())


def test_settings_are_validated():
    for bad in (dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingSettings(**bad)


def test_warp_matches_its_definition():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0, -4.0]])
    scaled = torch.softmax(logits / 0.5, dim=-1)
    assert torch.allclose(SamplingSettings(temperature=0.5).probs(logits), scaled)
    top3 = SamplingSettings(temperature=0.5, top_k=3).probs(logits)
    assert torch.allclose(top3[0, :3], scaled[0, :3] / scaled[0, :3].sum()) and not top3[0, 3:].any()
    # top_p keeps the smallest head whose mass reaches top_p
    plain = torch.softmax(logits, dim=-1)[0]
    head = int((plain.cumsum(0) < 0.9).sum()) + 1
    nucleus = SamplingSettings(top_p=0.9).probs(logits)[0]
    assert int((nucleus > 0).sum()) == head
    assert nucleus.dtype == torch.float32
    assert SamplingSettings().probs(logits.half()).dtype == torch.float32


def test_near_zero_temperature_agrees_with_greedy():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        tree = tree_from_sequences([torch.randint(0, V, (3,), generator=g).tolist() for _ in range(3)])
        logits = torch.randn(1 + tree.num_nodes, V, generator=g) * 3
        sampled = sampled_accept(tree, logits, SamplingSettings(temperature=1e-4), g)
        assert sampled == greedy_accept(tree, logits)


def test_seeded_runs_repeat():
    tree = draft_tree(ProposalKind.IID, DRAFTS["close"], (2, 2), torch.Generator().manual_seed(0))
    target_probs = torch.stack([row(TARGET, -1)] + [row(TARGET, t) for t in tree.tokens.tolist()])
    runs = [[rejection_sample(tree, target_probs, g) for _ in range(20)]
            for g in (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5))]
    assert runs[0] == runs[1]
