"""Draft trees as networkx graphs, and pictures of one step's tree (tokens as labels, the accepted
path highlighted)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
from matplotlib.figure import Figure

from specdiff.types import DraftTree, tree_depths

ROOT = -1  # the last committed token, parent of the tree's roots (DraftTree.parents convention)
ACCEPTED_COLOR, DRAFT_COLOR, ROOT_COLOR = "#2ca02c", "#c6dbef", "#d9d9d9"


def token_label(token: int, tokenizer=None) -> str:
    """A token's text, escaped so whitespace shows and matplotlib draws no mathtext."""
    if tokenizer is None:
        return str(token)
    text = repr(tokenizer.decode([token]))[1:-1]
    return text.replace("$", r"\$") or "''"


def to_networkx(tree: DraftTree, tokenizer=None, accepted_path: list[int] | None = None) -> nx.DiGraph:
    """DiGraph with node -1 (the last committed token) and nodes 0..N-1; edges parent -> child.

    Node attributes: token, label, depth (root 0, first draft layer 1), draft_prob (when the tree
    has them), accepted. Edge attribute: accepted.
    """
    accepted = set(accepted_path or [])
    graph = nx.DiGraph()
    graph.add_node(ROOT, token=None, label="<ctx>", depth=0, accepted=True)
    depths = tree_depths(tree.parents).tolist()
    for node, (token, parent) in enumerate(zip(tree.tokens.tolist(), tree.parents.tolist())):
        attributes = dict(token=token, label=token_label(token, tokenizer), depth=depths[node] + 1,
                          accepted=node in accepted)
        if tree.draft_probs is not None:
            attributes["draft_prob"] = float(tree.draft_probs[node])
        graph.add_node(node, **attributes)
        graph.add_edge(parent, node, accepted=node in accepted)
    return graph


def _layout(graph: nx.DiGraph) -> dict:
    """Layers left to right by depth; inside a layer, nodes in depth-first order, so edges never cross."""
    layers: dict[int, list[int]] = {}
    for node in nx.dfs_preorder_nodes(graph, ROOT):
        layers.setdefault(graph.nodes[node]["depth"], []).append(node)
    positions = nx.multipartite_layout(graph, subset_key=layers, align="vertical")
    return {node: (x, -y) for node, (x, y) in positions.items()}  # first child on top


def draw_tree(tree: DraftTree, path_png: str | Path, tokenizer=None, accepted_path: list[int] | None = None,
              title: str | None = None) -> Path:
    """Save a PNG of one step's draft tree; accepted nodes and edges in green."""
    graph = to_networkx(tree, tokenizer, accepted_path)
    num_layers = 1 + max(nx.get_node_attributes(graph, "depth").values())
    widest = max(sum(1 for _, d in graph.nodes(data="depth") if d == depth) for depth in range(num_layers))
    figure = Figure(figsize=(min(2 + 1.6 * num_layers, 40), min(1.5 + 0.45 * widest, 40)))
    axes = figure.add_subplot()
    positions = _layout(graph)
    node_colors = [ROOT_COLOR if node == ROOT else ACCEPTED_COLOR if accepted else DRAFT_COLOR
                   for node, accepted in graph.nodes(data="accepted")]
    edge_colors = [ACCEPTED_COLOR if accepted else "#999999" for _, _, accepted in graph.edges(data="accepted")]
    edge_widths = [2.5 if accepted else 1.0 for _, _, accepted in graph.edges(data="accepted")]
    nx.draw_networkx_nodes(graph, positions, ax=axes, node_color=node_colors, node_size=900, node_shape="s")
    nx.draw_networkx_edges(graph, positions, ax=axes, edge_color=edge_colors, width=edge_widths,
                           arrows=True, node_size=900, node_shape="s")
    nx.draw_networkx_labels(graph, positions, labels=dict(graph.nodes(data="label")), ax=axes, font_size=8)
    axes.set_title(title or f"{tree.num_nodes} draft nodes, {len(accepted_path or [])} accepted")
    axes.set_axis_off()
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path_png, dpi=100, bbox_inches="tight")
    return path_png


class TreeRecorder:
    """An `on_step` observer for `SpecDiff`: saves each step's tree as `step_0001.png`, ... in
    `directory` (the first `max_steps` steps; None: all). Steps without a draft are skipped."""

    def __init__(self, directory: str | Path, tokenizer=None, max_steps: int | None = None):
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, or None for every step; got {max_steps}")
        self.directory, self.tokenizer, self.max_steps = Path(directory), tokenizer, max_steps
        self.step = 0
        self.saved: list[Path] = []

    def __call__(self, tree: DraftTree, acceptance) -> None:
        self.step += 1
        if tree.num_nodes == 0 or (self.max_steps is not None and len(self.saved) >= self.max_steps):
            return
        accepted = len(acceptance.path)
        title = f"step {self.step}: {tree.num_nodes} draft nodes, {accepted} accepted"
        self.saved.append(draw_tree(tree, self.directory / f"step_{self.step:04d}.png", self.tokenizer,
                                    acceptance.path, title))
