"""TiDAR (algorithms.md §3): the model drafts its next block in diffusion mode inside the same
forward that verifies its last drafts autoregressively. `SpecDiff(model, TiDARDrafter(model))`.

The drafter has no model forward of its own. Before each verifier forward it adds query slots
(`query_slots`): for every row of that forward (the last committed token c and each draft node) a
block of `block_size` masks at the positions right after the row, seeing the committed prefix, the
row's root path and its own block bidirectionally, and nothing else (no other block). So one
forward pre-drafts the next block for every possible acceptance outcome; after acceptance the
drafter reads the block of the last accepted row. Its first mask stands where the bonus token
went (which the causal rows decide); the drafts are masks 2..block_size, the positions after it.
The prefill adds one block after the whole prompt, so the first step already has drafts.

The rows of the verify block are checked by the model's own causal logits (chain or tree rule,
greedy or rejection sampling), so the output is exactly `model.generate`'s: this is TiDAR's "trust
AR" mode. The paper's default "trust diffusion" mode (commit the first draft from the diffusion
logits) changes the output distribution and is not offered.

With `block_size` b the layout matches TiDAR's: a verify block of b rows (c and b - 1 drafts) and
b pre-draft blocks of b masks, b(b + 1) query rows in all. A tree builder other than the chain
(lattice OPT-Tree) also works: every tree node gets its block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from specdiff import hf_compat
from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.drafters.diffusion import _eos_ids, block_probs, mask_token_id_of
from specdiff.lattice import ContextLattice, LatticePruning, prune_lattice
from specdiff.masks import QuerySlots
from specdiff.types import DraftTree, tree_depths
from specdiff.vocab import shared_vocab_size


@dataclass(frozen=True)
class _Block:
    """Where a pre-drafted block applies: after context + path (+ any one bonus token when `bonus`)."""

    path: tuple[int, ...]
    bonus: bool
    first_row: int  # the slot row of the block's first draft position
    rows: int  # draft positions available


class TiDARDrafter:
    """Drafts for `model` from the mask blocks it computed in the verifier's last forward.

    model: the same causal LM that SpecDiff verifies with, trained as TiDAR (the zoo's stdlib-tidar)
    or any model whose mask blocks predict their own positions. block_size: masks per block
    (default: `model.config.tidar_block_size`, else 8); the draft length k is block_size - 1.
    mask_token_id: explicit, else the tokenizer's, else the config's. eos_token_ids / pruning: as
    for `DiffusionDrafter` (the lattice ends at the first EOS argmax; Eq. 7 pruning for tree search).
    max_blocks: pre-draft only after rows of depth < max_blocks (c is depth 0), i.e. for the first
    max_blocks acceptance outcomes (None: every row, TiDAR's layout). Where each query row costs
    compute (CPU) and long acceptances are rare, fewer blocks make the forward cheaper; when more
    is accepted than was pre-drafted for, the next step drafts nothing and pre-drafts again.
    """

    needs = DraftNeeds(query_slots=True, drafts_with_target=True)  # SpecDiff checks it is given the same model

    def __init__(self, model, block_size: int | None = None, mask_token_id: int | None = None, *, tokenizer=None,
                 pruning: LatticePruning = LatticePruning(), eos_token_ids: Sequence[int] | int | None = None,
                 max_blocks: int | None = None):
        hf_compat.check_supported(model)
        if block_size is None:
            block_size = int(getattr(model.config, "tidar_block_size", None) or 8)
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2 (the bonus position and at least one draft), got {block_size}")
        if max_blocks is not None and max_blocks < 1:
            raise ValueError(f"max_blocks must be >= 1 (or None: a block after every row), got {max_blocks}")
        self.model, self.block_size, self.k, self.max_blocks = model, block_size, block_size - 1, max_blocks
        self.tokenizer, self.pruning = tokenizer, pruning
        self.mask_token_id = mask_token_id_of(model, tokenizer, mask_token_id)
        self.eos_token_ids = _eos_ids(model, tokenizer, eos_token_ids)
        self.vocab_size = hf_compat.output_vocab_size(model)
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id {self.mask_token_id} is outside the model's {self.vocab_size} embeddings")
        self.shared_vocab = self.vocab_size
        self.forward_count = 0  # never: the drafts come from the verifier's forward
        self.reset()

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        self.shared_vocab = shared_vocab_size(target_vocab_size, self.vocab_size, tokenizer, self.tokenizer)

    def reset(self) -> None:
        self._context: tuple[int, ...] = ()
        self._blocks: list[_Block] = []

    def query_slots(self, token_ids: list[int], tree: DraftTree | None) -> QuerySlots:
        """The pre-draft blocks for the verifier's next forward (tree None: the prefill of token_ids)."""
        B, mask, last = self.block_size, self.mask_token_id, len(token_ids) - 1  # `last`: position of c
        self._context = tuple(token_ids)
        if tree is None:
            # [c, B masks]: c is re-fed as a slot so the masks see the whole prompt (the prefill caches
            # all but c); c's slot sees only the prompt and itself.
            tokens = torch.tensor([token_ids[-1]] + [mask] * B)
            positions = last + torch.arange(B + 1)
            sees = torch.ones(B + 1, B + 1, dtype=torch.bool)
            sees[0, 1:] = False
            self._blocks = [_Block(path=(), bonus=False, first_row=1, rows=B)]
            return QuerySlots(tokens, positions, sees)
        rows = 1 + tree.num_nodes
        parents = torch.cat([torch.tensor([-1]), tree.parents.cpu() + 1])  # over [c, nodes]
        depths = tree_depths(parents)  # [rows]: c at depth 0
        paths: list[tuple[int, ...]] = [()]
        node_tokens = tree.tokens.tolist()
        for row in range(1, rows):
            paths.append(paths[int(parents[row])] + (node_tokens[row - 1],))
        anchored = [row for row in range(rows) if self.max_blocks is None or int(depths[row]) < self.max_blocks]
        tokens = torch.full((len(anchored) * B,), mask)
        # [blocks, B]: mask 0 at the bonus position after its row
        positions = (last + depths[anchored] + 1)[:, None] + torch.arange(B)[None]
        sees = torch.block_diag(*[torch.ones(B, B, dtype=torch.bool)] * len(anchored))
        anchors = torch.tensor(anchored).repeat_interleave(B)
        self._blocks = [_Block(path=paths[row], bonus=True, first_row=i * B + 1, rows=B - 1)
                        for i, row in enumerate(anchored)]
        return QuerySlots(tokens, positions.flatten(), sees, anchors)

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> ContextLattice | None:
        """The block whose anchor is what was just committed; None (a plain step) when there is none."""
        if ctx.slot_logits is None or not self._blocks:
            return None
        ids, n = ctx.token_ids, len(self._context)
        if len(ids) < n or tuple(ids[:n]) != self._context:
            return None
        added = tuple(ids[n:])
        for block in self._blocks:
            expected = len(block.path) + (1 if block.bonus else 0)
            if len(added) == expected and added[: len(block.path)] == block.path:
                k = min(self.k, ctx.budget, block.rows)
                logits = ctx.slot_logits[block.first_row : block.first_row + k]
                probs = block_probs(logits, self.shared_vocab, self.mask_token_id, ctx.processors, ids)
                return prune_lattice(probs, self.eos_token_ids, self.pruning, context=ids)
        return None
