"""Tree builders: turn a proposal (lattice or tree) into the draft tree the target verifies."""

from specdiff.trees.base import TreeBuilder
from specdiff.trees.static import Chain, truncate_depth

__all__ = ["Chain", "TreeBuilder", "truncate_depth"]
