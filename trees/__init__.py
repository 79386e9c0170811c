"""Tree builders: turn a proposal (lattice or tree) into the draft tree the target verifies."""

from specdiff.trees.base import MeasuringTreeBuilder, TreeBuilder
from specdiff.trees.measured import MeasuredDraftLength, MeasuredSize, Reliability
from specdiff.trees.cps import CausalConsistencySearch, CausalLMProxy, CausalProxy
from specdiff.trees.opt_tree import OptTree, expected_acceptance
from specdiff.trees.static import Chain, StaticTree, select_nodes, truncate_depth

_GRAPH_NAMES = ("TreeRecorder", "draw_tree", "to_networkx")


def __getattr__(name):
    # networkx and matplotlib cost about a second to import; load them only when a picture is asked for.
    if name in _GRAPH_NAMES:
        from specdiff.trees import graph

        return getattr(graph, name)
    raise AttributeError(f"module 'specdiff.trees' has no attribute {name!r}")


__all__ = ["CausalConsistencySearch", "CausalLMProxy", "CausalProxy", "Chain", "MeasuredDraftLength", "MeasuredSize", "MeasuringTreeBuilder", "OptTree", "Reliability", "StaticTree", "TreeBuilder",
           "TreeRecorder", "draw_tree", "expected_acceptance", "select_nodes", "to_networkx", "truncate_depth"]
