"""The tree-builder contract: turn a drafter's proposal into the `DraftTree` the target verifies."""

from __future__ import annotations

from typing import Protocol

from specdiff.types import DraftTree, TokenLattice


class TreeBuilder(Protocol):
    def build(self, proposal: TokenLattice | DraftTree, budget: int) -> DraftTree: ...
