"""The tree-builder contract: turn a drafter's proposal into the `DraftTree` the target verifies."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from specdiff.types import DraftTree, TokenLattice


class TreeBuilder(Protocol):
    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree: ...


@runtime_checkable
class MeasuringTreeBuilder(TreeBuilder, Protocol):
    """A builder that learns from each verified step (e.g. `MeasuredSize`): the loop calls `observe` after
    the commit with the tree verified, its accepted nodes (indices, root first), the target forward's seconds and
    the step's."""

    def observe(self, tree: DraftTree, path: list[int], verify_seconds: float, step_seconds: float) -> None: ...
