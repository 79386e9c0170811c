"""How far a hybrid method's node probabilities hold, by who proposed the node: every node of every merged tree
handed to the size chooser (before its cut), with the model drafter's probability or lookup's match rate, its
depth, whether its parent's path was a prefix of the reply (tried) and whether its own was (hit). Greedy fp32,
so the reply is the target's own and a node's hit does not depend on which nodes were verified.

    OMP_NUM_THREADS=1 python benchmarks/node_reliability.py heads-lookup,eagle-tree-lookup 2
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from specdiff import methods, zoo
from specdiff.bench import load_prompts
from specdiff.conversation import Conversation
from specdiff.types import Source, tree_depths

EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)


def node_rows(spec, token_ids: list[int], new_tokens: int) -> list[tuple[int, float, int, bool, bool]]:
    """(source, probability, depth, tried, hit) of every node the size chooser was handed for one reply."""
    sized, trees = spec.tree_builder, []
    build = type(sized).build

    def recording(proposal, budget):
        trees.append((len(spec.verifier.committed), proposal))
        return build(sized, proposal, budget)

    sized.build = recording
    try:
        reply = list(token_ids) + spec.generate(token_ids, new_tokens).token_ids
    finally:
        del sized.build
    rows = []
    for start, tree in trees:
        if tree.num_nodes == 0 or tree.draft_probs is None:
            continue
        tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
        paths: list[tuple[int, ...]] = []
        for token, parent in zip(tokens, parents):
            paths.append((paths[parent] if parent >= 0 else ()) + (token,))
        hit = [reply[start : start + len(path)] == list(path) for path in paths]
        source = [Source.MODEL] * len(tokens) if tree.source is None else tree.source.tolist()
        for i, (depth, prob) in enumerate(zip(tree_depths(tree.parents).tolist(), tree.draft_probs.tolist())):
            rows.append((source[i], prob, depth, parents[i] < 0 or hit[parents[i]], hit[i]))
    return rows


def main(names: list[str], per_category: int, new_tokens: int = 128) -> None:
    model, tokenizer = zoo.load("smollm2-135m-instruct", dtype="float32")
    questions = Path(__file__).resolve().parents[2] / "shared/data/spec_bench/question.jsonl"
    prompts = load_prompts(questions, categories=("translation", "summarization", "qa", "math_reasoning", "rag"),
                           per_category=per_category)
    for name in names:
        method = methods.get(name)
        drafter = method.load_drafter(zoo.drafter_for("smollm2-135m-instruct", method.default_drafter), model.dtype,
                                      "cpu")
        spec = methods.build(name, model, tokenizer, drafter)
        rows = [row for prompt in prompts
                for row in node_rows(spec, Conversation(tokenizer).prompt_ids(prompt.turns[0]), new_tokens)]
        print(f"== {name}: accepted / drafted probability of the nodes whose parent was accepted (count)")
        cells = defaultdict(list)
        for source, prob, depth, tried, hit in rows:
            if tried:
                cells[source, min(depth, 2), np.searchsorted(EDGES, prob, side="right") - 1].append((prob, hit))
        for source in Source:
            for depth in range(3):
                line = [f"{EDGES[b]:.1f}+ {np.mean([h for _, h in c]):.2f}/{np.mean([p for p, _ in c]):.2f} ({len(c)})"
                        for b in range(len(EDGES) - 1) if len(c := cells.get((source, depth, b), [])) >= 8]
                if line:
                    print(f"  {source.name.lower():6s} depth {depth + 1}{'+' if depth == 2 else ' '}", "  ".join(line))


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]))
