"""Static trees (chain, Medusa-style choices), tree graphs and pictures, the on_step hook, and greedy
equality with `generate` for every tree builder over a tree-drafting and a lattice-drafting drafter."""

import networkx as nx
import pytest
import torch

import tiny
from specdiff import SpecDiff, TokenLattice
from specdiff.drafters import AutoregressiveDrafter
from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.lattice import ContextLattice
from specdiff.trees import Chain, MeasuredSize, OptTree, StaticTree, TreeRecorder, draw_tree, to_networkx
from specdiff.types import DraftTree, tree_depths

# --- StaticTree -------------------------------------------------------------------------------

# Row 0 ranks: 30 (0.5), 10 (0.3), 20 (0.2); row 1 ranks: 41 (0.7), 42 (0.2), 40 (0.1).
LATTICE = TokenLattice(torch.tensor([[10, 20, 30], [40, 41, 42]]),
                       torch.tensor([[0.3, 0.2, 0.5], [0.1, 0.7, 0.2]]))


def test_static_tree_over_a_lattice_follows_ranks():
    tree = StaticTree(((0, 1), (1,), (0,), (0, 0), (1, 0))).build(LATTICE, budget=5)
    # canonical order: (0,), (1,), (0, 0), (0, 1), (1, 0)
    assert tree.tokens.tolist() == [30, 10, 41, 42, 41]
    assert tree.parents.tolist() == [-1, -1, 0, 0, 1]
    assert tree.draft_probs.tolist() == pytest.approx([0.5, 0.3, 0.7, 0.2, 0.7])


def test_static_tree_drops_what_the_budget_or_proposal_lacks():
    builder = StaticTree(((0,), (3,), (0, 0), (0, 0, 0), (3, 0)))
    assert builder.build(LATTICE, budget=1).tokens.tolist() == [30]  # depth cut by the budget
    assert builder.build(LATTICE, budget=9).tokens.tolist() == [30, 41]  # no rank 3, no row 2


def test_static_tree_over_a_draft_tree_ranks_children_by_draft_probs():
    proposal = DraftTree(torch.tensor([5, 6, 7, 8, 9]), torch.tensor([-1, -1, 0, 0, 1]),
                         torch.tensor([0.2, 0.7, 0.1, 0.6, 0.5]))
    # (0,) is 6 (0.7), (1,) is 5; (0, 0) is 6's only child 9; (1, 0) is 5's best child 8 (0.6), not 7
    tree = StaticTree(((0,), (1,), (0, 0), (1, 0))).build(proposal, budget=5)
    assert tree.tokens.tolist() == [5, 6, 8, 9]  # kept in the proposal's (topological) order
    assert tree.parents.tolist() == [-1, -1, 0, 1]
    assert tree.draft_probs.tolist() == pytest.approx([0.2, 0.7, 0.6, 0.5])


def test_static_tree_validation_and_widths():
    with pytest.raises(ValueError, match="prefix-closed"):
        StaticTree(((0,), (1, 0)))
    with pytest.raises(ValueError, match="ranks"):
        StaticTree(())
    with pytest.raises(ValueError, match="widths"):
        StaticTree.from_widths((2, 0))
    builder = StaticTree.from_widths((3, 2, 1))
    assert len(builder.choices) == 3 + 6 + 6
    assert tree_depths(builder.build(LATTICE, budget=3).parents).bincount().tolist() == [3, 6]


def test_chain_over_a_lattice_is_the_argmax_path():
    tree = Chain().build(LATTICE, budget=4)
    assert tree.tokens.tolist() == [30, 41] and tree.parents.tolist() == [-1, 0]


def test_chain_stops_before_the_first_unsure_position():
    # argmax probabilities 0.5 then 0.7: at 0.6 the first position is unsure, so nothing is drafted
    assert Chain(0.6).build(LATTICE, budget=4).num_nodes == 0
    tree = Chain(0.5).build(LATTICE, budget=4)  # <= 0.5 is unsure too
    assert tree.num_nodes == 0
    tree = Chain(0.4).build(LATTICE, budget=4)
    assert tree.tokens.tolist() == [30, 41] and tree.draft_probs.tolist() == pytest.approx([0.5, 0.7])
    assert Chain(0.4).build(LATTICE, budget=1).tokens.tolist() == [30]
    with pytest.raises(ValueError, match="threshold"):
        Chain(1.0)


# --- graphs and pictures ----------------------------------------------------------------------


class CharTokenizer:
    """Decodes ids as characters, with a few awkward ones (newline, dollar) to exercise escaping."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join({3: "\n", 4: "$x$"}.get(i, chr(ord("a") + i % 26)) for i in ids)


def test_to_networkx_is_an_arborescence_with_depths():
    proposal = DraftTree(torch.tensor([3, 4, 5, 6]), torch.tensor([-1, -1, 0, 2]), torch.tensor([0.5, 0.4, 0.9, 0.8]))
    graph = to_networkx(proposal, CharTokenizer(), accepted_path=[0, 2])
    assert nx.is_arborescence(graph) and graph.number_of_nodes() == 5
    assert dict(graph.nodes(data="depth")) == {-1: 0, 0: 1, 1: 1, 2: 2, 3: 3}
    assert graph.nodes[0]["label"] == "\\n" and graph.nodes[1]["label"] == r"\$x\$"
    assert [n for n, a in graph.nodes(data="accepted") if a and n >= 0] == [0, 2]
    assert graph.edges[0, 2]["accepted"] and not graph.edges[2, 3]["accepted"]
    assert graph.nodes[2]["draft_prob"] == pytest.approx(0.9)


def test_draw_tree_writes_a_png(tmp_path):
    tree = OptTree(node_budget=6).build(LATTICE, budget=3)
    path = draw_tree(tree, tmp_path / "step.png", CharTokenizer(), accepted_path=[0])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chain = draw_tree(DraftTree.chain([7]), tmp_path / "one.png")  # a single node, no tokenizer
    assert chain.stat().st_size > 0


# --- end to end: greedy equality for every builder ----------------------------------------------


class TopKLatticeDrafter:
    """Test-only lattice drafter: row i holds the `top_k` tokens of `model`'s distribution at the i-th
    step of its own greedy continuation, so rows are independent of the candidates chosen above.
    The lattice carries its context, for causal proxies."""

    needs = DraftNeeds()

    def __init__(self, model, k: int = 4, top_k: int = 3):
        self.model, self.k, self.top_k = model, k, top_k
        self.forward_count = 0

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        pass

    def reset(self) -> None:
        pass

    def propose(self, ctx: DraftContext) -> ContextLattice:
        ids = torch.tensor([ctx.token_ids])
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=min(self.k, ctx.budget),
                                  do_sample=False, output_scores=True, return_dict_in_generate=True)
        self.forward_count += len(out.scores)
        probs = torch.softmax(torch.cat(out.scores).float(), dim=-1)  # [L, V]
        top = probs.topk(self.top_k, dim=-1)
        return ContextLattice(top.indices, top.values, probs, context=tuple(ctx.token_ids))


class AscendingProxy:
    """A causal proxy that likes tokens one above their predecessor (checks plumbing, not quality)."""

    def log_probs(self, context, prefixes, candidates):
        last = torch.tensor([(prefix or list(context))[-1] for prefix in prefixes])  # [B]
        return torch.where(candidates[None] == last[:, None] + 1, 0.0, -2.0)  # [B, K]


BUILDERS = {
    "chain": Chain(),
    "opt-6": OptTree(node_budget=6),
    "opt-policy": OptTree(threshold=0.05),
    "opt-proxy": OptTree(node_budget=8, proxy=AscendingProxy()),
    "static": StaticTree.from_widths((3, 2, 1, 1)),
    "measured-opt": MeasuredSize(OptTree(node_budget=6), explore=1),  # its state carries across cases: lossless anyway
}
NEW_TOKENS = 20


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def target(request):
    model = tiny.build(request.param, "sdpa")
    prompt = tiny.repetitive_prompt()
    return model, prompt, tiny.reference(model, prompt, NEW_TOKENS)


@pytest.mark.parametrize("builder", list(BUILDERS), ids=list(BUILDERS))
def test_greedy_equality_with_tree_and_lattice_drafters(target, builder):
    model, prompt, expected = target
    other = tiny.build("llama", "sdpa", seed=11)
    drafters = [TopKLatticeDrafter(model), TopKLatticeDrafter(other)]
    if builder != "opt-proxy":  # the proxy rescores lattices only
        drafters += [AutoregressiveDrafter(model, k=4, top_k=3), AutoregressiveDrafter(other, k=4, top_k=4, tree_threshold=0.0)]
    for drafter in drafters:
        result = SpecDiff(model, drafter, tree=BUILDERS[builder]).generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.token_ids == expected, (builder, type(drafter).__name__)


def test_self_drafted_lattice_always_accepts_its_best_root(target):
    model, prompt, expected = target
    result = SpecDiff(model, TopKLatticeDrafter(model, k=4), tree=OptTree(node_budget=8)).generate(
        prompt, max_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected
    # The lattice's first argmax is the target's next token and the most probable node of all, so
    # OPT-Tree always keeps it: every step that drafted accepts at least one token.
    stats = result.stats
    assert all(a >= 1 for a, depth in zip(stats.accepted_lengths, stats.draft_depths) if depth > 0)


def test_on_step_recorder_saves_pictures(tmp_path):
    model = tiny.build("llama", "sdpa")
    prompt = tiny.repetitive_prompt()
    steps = []
    recorder = TreeRecorder(tmp_path, CharTokenizer(), max_steps=2)

    def on_step(tree, acceptance):
        steps.append((tree.num_nodes, len(acceptance.path)))
        recorder(tree, acceptance)

    drafter = AutoregressiveDrafter(model, k=3, top_k=2)
    result = SpecDiff(model, drafter, tree=OptTree(node_budget=4), on_step=on_step).generate(prompt, max_new_tokens=8)
    assert sum(n for n, _ in steps) == result.stats.drafted_tokens
    assert [a for _, a in steps] == result.stats.accepted_lengths
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0001.png", "step_0002.png"]
    assert recorder.saved[0].read_bytes()[:4] == b"\x89PNG"


def test_opt_tree_node_budget_follows_an_adaptive_policy(target):
    from specdiff.policies import AdaptiveDraftLength

    model, prompt, expected = target
    sizes = []
    policy = AdaptiveDraftLength(k_min=2, k_max=6, delta=2)
    decoder = SpecDiff(model, AutoregressiveDrafter(model, k=6, top_k=3), tree=OptTree(node_budget=None),
                       draft_length=policy, on_step=lambda tree, acceptance: sizes.append(tree.num_nodes))
    assert decoder.generate(prompt, max_new_tokens=NEW_TOKENS).token_ids == expected
    assert sizes[0] == 6 and all(2 <= size <= 6 for size in sizes[:-1])  # the last step is cut by max_new_tokens
    assert len(set(sizes)) > 1, sizes
