"""CachedLM: one model, its KV cache and the ids in it (DESIGN.md §3, the foundation engine).

The verifier and every cached drafter drive their model through this class:

- `sync(ids)` crops the cache to its longest common prefix with `ids` and returns how many rows it kept;
- `forward(ids, positions, visible)` feeds rows: with `visible` None they extend the committed ids
  causally; with `visible` [Q, R] they are pending rows (a tree, a mask block, query slots) that see
  every committed row and, among the last R rows (pending rows already in the cache, then their
  own), those marked True;
- `compact(keep)` makes pending rows `keep` committed and drops the others; `drop(n)` drops rows.

Three attention paths. The tree path (`specdiff.tree_attention`) leaves the committed rows unmasked
and masks only the [Q, R] block. Where it does not apply (sliding windows that cut the context,
logit soft-capping, models whose attention bypasses transformers' `AttentionInterface`), a chain over
full-attention layers takes the model's own causal mask, as `generate` does (the causal path), and
anything else gets a float mask over every visible key (the additive path). `last_path` and
`path_counts` say which one ran.

Row padding (`RowPadding`, on for the verifier and the AR drafter in fp32 on a CPU): BLAS kernels are
not monotonic in the row count (fp32 MKL, SmolLM2's LM head: 16 / 43 / 82 / 31 ms for 1 / 2 / 3 / 4
rows; its whole forward: ~79 / 126 / 142 / 103 ms), so a forward of Q rows may feed a few more, by
measured time. Padding rows sit after the real ones, see the cache and themselves, are seen by no real
row, and leave the cache right after the forward.

Packed weights (`specdiff.packed.PackedLinears`, on in fp32 on a CPU): forwards of two or more rows run
the model's linear layers over weights prepacked once for oneDNN, not repacked by every call, so a verify
forward of 2-8 rows costs about one decoding step (SmolLM2, fp32: 3 rows 143 -> 61 ms, one row 61 ms).

Compiled (`CachedLM(compiled=True)`, off by default: its first forward compiles for minutes on a CPU): tree-path
forwards of two or more rows run the decoder through `specdiff.compiled.CompiledBase` (torch.compile, Inductor
with freezing) and the LM head after it; one-row steps and prefills stay eager.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import transformers

from specdiff import hf_compat, tree_attention
from specdiff.compiled import CompiledBase
from specdiff.masks import additive_mask, block_allowed
from specdiff.packed import PackedLinears

TREE_PATH, ADDITIVE_PATH, CAUSAL_PATH = "tree", "additive", "causal"


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading ids two sequences share: what a cache can keep of its last context.
    The common case (one extends the other) is one C-level list comparison, no Python loop."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


@dataclass(frozen=True)
class ForwardOutput:
    """logits [Q, V] (model dtype; [Q, N] over `CachedLM(head_rows=...)`'s N tokens); hidden
    [len(layers), Q, H] when asked (-1 is the LM head's input, after the final norm; i >= 0 is
    `output_hidden_states[i]`); path: which attention ran."""

    logits: torch.Tensor
    hidden: torch.Tensor | None
    path: str


class RowPadding:
    """How many rows a forward of Q rows feeds: the cheapest of Q..Q + `max_pad` by measured time.

    Every forward's model time is booked under the rows it fed (an exponential average, `decay`, as
    the context grows); each candidate is fed `tries` times before the cheapest is chosen, and the
    first untried candidate is fed whenever one remains; every `revisit`-th choice feeds the least
    measured candidate, so an early slow measurement does not stick. Forwards of more than `up_to`
    rows (prefills) are fed as they are. `fixed` pads by exactly that many rows (tests). Padding
    changes which kernels run, not what is computed for the real rows (up to float rounding, as
    between any two row counts)."""

    def __init__(self, max_pad: int = 3, decay: float = 0.8, tries: int = 2, revisit: int = 32, up_to: int = 16,
                 fixed: int | None = None):
        if max_pad < 0 or tries < 1 or revisit < 1 or not 0 <= decay < 1 or (fixed is not None and fixed < 0):
            raise ValueError(f"need max_pad >= 0, tries >= 1, revisit >= 1, 0 <= decay < 1, fixed >= 0; got "
                             f"{max_pad}, {tries}, {revisit}, {decay}, {fixed}")
        self.max_pad, self.decay, self.tries, self.revisit, self.up_to = max_pad, decay, tries, revisit, up_to
        self.fixed = fixed
        self.seconds: dict[int, float] = {}  # rows fed -> average model time
        self.counts: Counter[int] = Counter()
        self.choices = 0

    def rows(self, Q: int) -> int:
        if self.fixed is not None:
            return Q + self.fixed
        if Q > self.up_to:
            return Q
        self.choices += 1
        candidates = range(Q, Q + self.max_pad + 1)
        untried = [rows for rows in candidates if self.counts[rows] < self.tries]
        if untried:
            return untried[0]
        if self.choices % self.revisit == 0:
            return min(candidates, key=self.counts.__getitem__)
        return min(candidates, key=self.seconds.__getitem__)

    def book(self, rows: int, seconds: float) -> None:
        before = self.seconds.get(rows)
        self.seconds[rows] = seconds if before is None else self.decay * before + (1 - self.decay) * seconds
        self.counts[rows] += 1


class CachedLM:
    """An unmodified Hugging Face causal LM with a prefix KV cache of `ids` and pending rows after it."""

    def __init__(self, model, tree_attention_path: bool = True, causal_chains: bool = True,
                 head_rows: torch.Tensor | None = None, row_padding: RowPadding | str | None = None,
                 packed_weights: bool | str = "auto", pack_one_row: bool = False, compiled: bool = False):
        """head_rows [N]: token ids; logits then cover only those columns, [Q, N] (`hf_compat.RowsHead`:
        the base model's output times those rows of the LM head), for drafters with a reduced vocabulary.
        row_padding: a `RowPadding`, "auto" (one in fp32 on a CPU, none elsewhere: on a GPU rows are
        ~free, and bf16 on a CPU cost rose with every row where measured) or None; it pads only models
        whose every layer attends to the whole context.
        packed_weights: multi-row forwards through `PackedLinears` (fp32 linears prepacked for oneDNN):
        "auto" (where `PackedLinears.applies`, fp32 on a CPU, and the copy `fits` in memory), True (where
        it applies, an error elsewhere) or False. One-row forwards keep torch's kernel (bit for bit `generate`'s)
        unless `pack_one_row`: a drafter's engine, whose numbers need match nothing, packs them too (SmolLM2-sized
        linears, two threads: 26 ms a row packed against torch's 45).
        compiled: tree-path forwards of two or more rows run the decoder through `CompiledBase` (torch.compile,
        Inductor with freezing; the first such forward compiles, ~1.5 min for SmolLM2-135M on two CPU cores);
        for inference only: the weights are frozen into the graph."""
        hf_compat.check_supported(model)
        self.model = model
        if packed_weights not in ("auto", True, False):
            raise ValueError(f"packed_weights must be 'auto', True or False, got {packed_weights!r}")
        if packed_weights is True and not PackedLinears.applies(model):
            raise ValueError("packed_weights=True needs fp32 weights on a CPU and a torch built with oneDNN; "
                             "use 'auto' to pack only where it applies")
        wanted = packed_weights is True or (packed_weights == "auto" and PackedLinears.applies(model)
                                            and PackedLinears.fits(model))
        self.packed = PackedLinears.of(model) if wanted else None
        self.pack_one_row = pack_one_row
        if compiled and not CompiledBase.applies(model):
            raise ValueError(f"compiled=True: {type(model).__name__}'s logits are not its LM head over its decoder's "
                             "output (soft-capping or scaling after the head), so its decoder cannot be compiled "
                             "apart; run it uncompiled")
        self.compiled = CompiledBase.of(model) if compiled else None
        # fp32 on a CPU: MKL's 2- and 3-row kernels; packed, 2 rows still cost more than 3 (in bf16 rows cost
        # monotonically)
        if row_padding == "auto":
            row_padding = RowPadding() if self.device.type == "cpu" and self.dtype == torch.float32 else None
        elif isinstance(row_padding, str):
            raise ValueError(f"row_padding must be a RowPadding, 'auto' or None, got {row_padding!r}")
        self.row_padding = row_padding
        self.head = None
        if head_rows is not None:
            hf_compat.check_head_of_base(model)
            self.head = hf_compat.RowsHead(model, head_rows)
        self.tree_attention_path = tree_attention_path and hf_compat.tree_attention_supported(model)
        self.causal_chains = causal_chains
        self.forward_count = 0
        self.forward_seconds = 0.0  # wall time inside `forward` (mask, model, CUDA-synchronised)
        self.path_counts: Counter[str] = Counter()
        self.last_path: str | None = None
        self.reset()

    def reset(self) -> None:
        self.cache = None
        self.ids: list[int] = []  # the committed ids whose rows are cached, at positions 0..len - 1
        self._pending_positions = torch.zeros(0, dtype=torch.long)  # [P] positions of the pending rows

    @property
    def device(self) -> torch.device:
        return self.model.get_output_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_output_embeddings().weight.dtype

    @property
    def pending(self) -> int:
        return len(self._pending_positions)

    def _fresh(self) -> None:
        self.reset()
        self.cache = hf_compat.new_cache(self.model)

    # --- bookkeeping -----------------------------------------------------------------------------

    def sync(self, ids: list[int]) -> int:
        """Drop the pending rows, then crop to the longest common prefix with `ids`; returns its length.

        A sliding-window layer keeps only its window, so once the committed rows outgrew it, cropped
        rows cannot be given back: the cache then starts afresh.
        """
        if self.cache is None:
            self._fresh()
            return 0
        self.drop(self.pending)
        keep = common_prefix_length(self.ids, ids)
        removed = len(self.ids) - keep
        if removed and any(len(self.ids) > group.window - 1 for group in self._groups() if group.window):
            self._fresh()
            return 0
        self.drop(removed)
        return keep

    def drop(self, num_rows: int) -> None:
        """Remove the last `num_rows` rows (pending ones first, then committed ones)."""
        if num_rows <= 0:
            hf_compat.trim_to_window(self.cache)
            return
        hf_compat.drop_last(self.cache, num_rows)
        from_pending = min(num_rows, self.pending)
        self._pending_positions = self._pending_positions[: self.pending - from_pending]
        from_committed = num_rows - from_pending
        if from_committed:
            del self.ids[-from_committed:]

    def compact(self, keep: list[int], ids: list[int]) -> None:
        """Commit pending rows `keep` (ascending indices into the pending rows; `ids` their tokens,
        whose positions must follow the committed ones) and drop the other pending rows."""
        if len(keep) != len(ids):
            raise ValueError(f"compact: {len(keep)} rows to keep but {len(ids)} ids for them")
        hf_compat.compact(self.cache, keep, num_new=self.pending)
        self._pending_positions = self._pending_positions[:0]
        self.ids.extend(ids)

    # --- the forward -----------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, ids: list[int] | torch.Tensor, positions: torch.Tensor | None = None,
                visible: torch.Tensor | None = None, hidden_layers: tuple[int, ...] = (),
                inputs_embeds: torch.Tensor | None = None) -> ForwardOutput:
        """Feed `ids` [Q]. visible None: a causal continuation of the committed ids (no pending rows
        allowed), committed at once. Else positions [Q] (absolute) and visible [Q, R] bool over the
        last R = pending + Q rows; the rows stay pending until `compact` or `drop`.
        inputs_embeds [Q, E]: the rows' input vectors, fed instead of the embeddings of `ids` (which
        still name the rows for `sync`): for drafters whose input mixes in the target's features."""
        clock = time.perf_counter()
        if self.cache is None:
            self._fresh()
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        Q = len(ids)
        if visible is None:
            if self.pending:
                raise ValueError("a causal forward cannot follow pending rows: compact or drop them first")
            positions = torch.arange(len(self.ids), len(self.ids) + Q)
        elif positions is None or positions.shape != (Q,) or visible.shape != (Q, self.pending + Q):
            raise ValueError(f"forward: {Q} ids need positions [{Q}] and visible [{Q}, {self.pending + Q}]")
        if inputs_embeds is not None and inputs_embeds.shape[0] != Q:
            raise ValueError(f"forward: {Q} ids but inputs_embeds for {inputs_embeds.shape[0]} rows")
        run = self._run_padded(ids, positions, visible, hidden_layers, inputs_embeds)
        if visible is None:
            self.ids.extend(ids.tolist())
            hf_compat.trim_to_window(self.cache)
        else:
            self._pending_positions = torch.cat([self._pending_positions, positions.cpu()])
        if self.device.type == "cuda":  # the step's one sync (acceptance) would wait for this anyway
            torch.cuda.synchronize(self.device)
        self.forward_seconds += time.perf_counter() - clock
        return run

    def _run_padded(self, ids, positions, visible, hidden_layers, inputs_embeds) -> ForwardOutput:
        """The model's forward of `ids` [Q], plus the padding rows `row_padding` asks for, which leave
        the cache at once; the outputs are the real rows'. Pads after a chain continue it (the causal
        path stays available); pads after a tree repeat its last row's position and see only themselves."""
        Q = len(ids)
        pad = 0
        if self.row_padding is not None and hf_compat.full_attention_only(self.cache):
            pad = self.row_padding.rows(Q) - Q
        chain = pad and (visible is None or self._causal_continuation(positions, visible))
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if chain and limit is not None and int(positions[-1]) + pad >= limit:
            pad = 0  # learned positions end there
        if pad:
            ids = torch.cat([ids, ids[-1:].expand(pad)])
            if inputs_embeds is not None:
                inputs_embeds = torch.cat([inputs_embeds, inputs_embeds[-1:].expand(pad, -1)])
            if chain:
                positions = torch.arange(int(positions[0]), int(positions[0]) + Q + pad)
                visible = None if visible is None else torch.ones(Q + pad, Q + pad, dtype=torch.bool).tril()
            else:
                positions = torch.cat([positions, positions[-1:].expand(pad)])
                P = self.pending
                visible = torch.cat([
                    torch.cat([visible, visible.new_zeros(Q, pad)], dim=1),
                    torch.cat([visible.new_zeros(pad, P + Q), torch.eye(pad, dtype=torch.bool, device=visible.device)],
                              dim=1)])
        mask, path = self._mask(positions, visible)
        clock = time.perf_counter()
        run = self._run(ids, positions, mask, path, hidden_layers, inputs_embeds)
        if self.row_padding is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.row_padding.book(Q + pad, time.perf_counter() - clock)
        if not pad:
            return run
        hf_compat.drop_last(self.cache, pad)
        return ForwardOutput(run.logits[:Q], None if run.hidden is None else run.hidden[:, :Q], run.path)

    def _run(self, ids, positions, mask, path, hidden_layers, inputs_embeds=None) -> ForwardOutput:
        want_states = any(layer >= 0 for layer in hidden_layers)
        input_ids, position_ids = ids[None].to(self.device), positions[None].to(self.device)
        embeds = inputs_embeds[None].to(self.device, self.dtype) if inputs_embeds is not None else None
        before = hf_compat.cache_length(self.cache)
        compiled = self.compiled is not None and path == TREE_PATH and len(ids) >= 2 and inputs_embeds is None
        if compiled:  # inference tensors, whoever made the ids: their dispatch keys are part of the graph's guards
            input_ids, position_ids = input_ids.clone(), position_ids.clone()
        if self.head is not None or compiled:  # the decoder, then the head (only its chosen rows, with head_rows)
            with self._attention(path), (self.compiled.active() if compiled else self._packing()):
                out = hf_compat.base_model_forward(self.model, input_ids, self.cache, mask, position_ids,
                                                   output_hidden_states=want_states, inputs_embeds=embeds,
                                                   base=self.compiled.base if compiled else None)
            last = hf_compat.LastHidden()
            last.value, hidden = out.last_hidden_state, out.last_hidden_state[0]  # [Q, H]
            logits = self._head(hidden)
        else:
            with (hf_compat.capture_last_hidden(self.model, -1 in hidden_layers) as last, self._attention(path),
                  self._packing()):
                out = hf_compat.forward(self.model, input_ids, self.cache, mask, position_ids,
                                        output_hidden_states=want_states, inputs_embeds=embeds)
            logits = out.logits[0]
        if hf_compat.cache_length(self.cache) != before + len(ids):  # else every later step reads a wrong cache
            raise RuntimeError(
                f"{type(self.model).__name__}'s forward did not write its {len(ids)} rows into SpecDiff's cache "
                f"(length {before} -> {hf_compat.cache_length(self.cache)}): this transformers version "
                f"({transformers.__version__}) passes caches in a way specdiff.hf_compat does not know; "
                "please report it with that version")
        self.forward_count += 1
        self.path_counts[path] += 1
        self.last_path = path
        hidden = None
        if hidden_layers:
            hidden = torch.stack([last.value[0] if layer < 0 else out.hidden_states[layer][0]
                                  for layer in hidden_layers])  # [layers, Q, H]
        return ForwardOutput(logits, hidden, path)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """[Q, H] -> logits [Q, V] (or [Q, N] over `head_rows`), over the packed weights where they apply."""
        head = self.head if self.head is not None else self.model.get_output_embeddings()
        if self.packed is None:
            return head(hidden)
        return self.packed.linear(hidden, head.weight, head.bias, self._min_packed_rows)

    def _attention(self, path: str):
        if path == TREE_PATH:
            return hf_compat.tree_attention_enabled(self.model)
        return nullcontext()

    @property
    def _min_packed_rows(self) -> int | None:
        return 1 if self.pack_one_row else None  # None: PackedLinears' own (2)

    def _packing(self):
        return self.packed.active(self._min_packed_rows) if self.packed is not None else nullcontext()

    def _groups(self) -> list[hf_compat.LayerGroup]:
        return hf_compat.layer_groups(self.cache)

    def _mask(self, positions: torch.Tensor, visible: torch.Tensor | None):
        """(attention_mask for transformers, path). Causal continuations leave the mask to transformers."""
        if visible is None:
            return None, CAUSAL_PATH
        groups = self._groups()
        if self.tree_attention_path and all(self._window_covers(group, positions) for group in groups):
            block = additive_mask(visible.to(self.device), self.dtype, self.device)  # [1, 1, Q, R]
            return hf_compat.pack_masks({group.name: block for group in groups}), TREE_PATH
        if (self.causal_chains and self._causal_continuation(positions, visible)
                and hf_compat.full_attention_only(self.cache)):
            return None, CAUSAL_PATH  # a chain over full attention: the model's own causal mask, as `generate`
        key_positions = torch.cat([self._pending_positions, positions.cpu()])
        return hf_compat.pack_masks({
            group.name: additive_mask(
                block_allowed(positions.cpu(), visible.cpu(), key_positions, len(self.ids),
                              hf_compat.visible_cache_rows(self.cache, group) - self.pending, group.window),
                self.dtype, self.device)
            for group in groups
        }), ADDITIVE_PATH

    def _causal_continuation(self, positions: torch.Tensor, visible: torch.Tensor) -> bool:
        """Rows that follow the committed ones in order, each seeing all before it (a chain)."""
        Q = len(positions)
        return (not self.pending and torch.equal(positions.cpu(), torch.arange(len(self.ids), len(self.ids) + Q))
                and torch.equal(visible.cpu(), torch.ones(Q, Q, dtype=torch.bool).tril()))

    def _window_covers(self, group: hf_compat.LayerGroup, positions: torch.Tensor) -> bool:
        """A sliding window that shows every cached row and reaches back to position 0 masks nothing."""
        if group.window is None:
            return True
        rows = len(self.ids) + self.pending
        return rows <= group.window - 1 and int(positions.max()) < group.window
