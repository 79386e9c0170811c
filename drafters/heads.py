"""Blockwise parallel heads (Stern et al. 2018; Medusa; Hydra; algorithms.md §5): k small heads on
the target's last hidden state propose the next k tokens, drafting for free from the verify pass.

Offsets. The hidden state h at a position is what the target's LM head turned into the token after
it; head i (0-based) applied to the same h predicts the token i + 1 positions after that one
(Medusa's convention: head k predicts t + k + 1). The verifier hands the drafter the hidden state
whose logits produced the last committed token (the bonus token, or after prefill the last prompt
token), so head 0 predicts the first draft position, head i the (i + 1)-th.

Each head is a residual block x + SiLU(W x + b) (W, b zero-initialised, so an untrained head is the
target's own LM head) followed by the target's output projection, shared, never copied: the heads'
file holds only their own weights. Hydra-style heads (`conditioned=True`) also see the input
embeddings of the tokens between h and the position they predict: head i adds a zero-initialised
projection of [e(token after h), e(draft 0), ..., e(draft i - 1)] to h.

Shapes: `H` hidden size, `E` input-embedding width, `V` vocabulary, `L` lattice positions, `K`
candidates per position.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from specdiff.drafters.base import DraftContext, DraftNeeds
from specdiff.drafters.files import WEIGHTS_FILE, read_config, write_files
from specdiff.packed import PackedLinears
from specdiff.processing import process_paths
from specdiff.types import TokenLattice
from specdiff.vocab import resolve_draft_vocab, to_full_vocab

KIND = "specdiff-medusa-heads"  # in config.json, so a heads directory is never mistaken for a causal LM
TRAIN_HINT = "train heads for it with `specdiff train heads --target PATH_OR_ZOO_NAME`"


@dataclass(frozen=True)
class HeadsConfig:
    """hidden_size and vocab_size: the target's LM head, [vocab_size, hidden_size]. num_layers:
    residual blocks per head (Medusa: 1). conditioned: Hydra-style heads that see the embeddings of
    the tokens before the position they predict; embedding_size is then the target's input
    embedding width. target: what the heads were trained on (shown in errors)."""

    hidden_size: int
    vocab_size: int
    num_heads: int = 4
    num_layers: int = 1
    conditioned: bool = False
    embedding_size: int | None = None
    target: str = ""

    def __post_init__(self):
        for name in ("hidden_size", "vocab_size", "num_heads", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeadsConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.conditioned and (self.embedding_size is None or self.embedding_size < 1):
            raise ValueError("conditioned (Hydra) heads need embedding_size, the target's input embedding width "
                             f"(target.get_input_embeddings().weight.shape[1]); got {self.embedding_size}")


class ResidualBlock(torch.nn.Module):
    """x + SiLU(W x + b), W and b zero-initialised (Medusa's ResBlock): the identity at start."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, hidden_size)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.linear(x))


class MedusaHeads(torch.nn.Module):
    """k heads over the target's last hidden state; call `attach(target)` before use."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        self.config = config
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(*(ResidualBlock(config.hidden_size) for _ in range(config.num_layers)))
            for _ in range(config.num_heads)
        )
        if config.conditioned:
            # Head i reads the embeddings of i + 1 tokens; zero-initialised, so it starts as a Medusa head.
            self.token_projections = torch.nn.ModuleList(
                torch.nn.Linear((i + 1) * config.embedding_size, config.hidden_size, bias=False)
                for i in range(config.num_heads)
            )
            for projection in self.token_projections:
                torch.nn.init.zeros_(projection.weight)
        # The target's tensors, shared at attach time; non-persistent, so never saved with the heads.
        self.register_buffer("output_weight", None, persistent=False)  # [V, H]
        self.register_buffer("output_bias", None, persistent=False)  # [V] | None
        self.register_buffer("input_embeddings", None, persistent=False)  # [V_in, E], conditioned only
        self.source: Path | None = None  # the directory it was loaded from (its draft_vocab.json, if any)

    @classmethod
    def for_target(cls, target, num_heads: int = 4, num_layers: int = 1, conditioned: bool = False,
                   name: str = "") -> "MedusaHeads":
        """Fresh heads shaped for `target`, attached to it."""
        vocab_size, hidden_size = target.get_output_embeddings().weight.shape
        embedding_size = target.get_input_embeddings().weight.shape[1] if conditioned else None
        config = HeadsConfig(hidden_size, vocab_size, num_heads, num_layers, conditioned, embedding_size, name)
        return cls(config).attach(target)

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    def attach(self, target) -> "MedusaHeads":
        """Share `target`'s output projection (and input embeddings for conditioned heads); the heads
        move to its device and dtype. Raises ValueError when the shapes do not match."""
        output = target.get_output_embeddings()
        vocab_size, hidden_size = output.weight.shape
        trained_for = f" (trained for {self.config.target})" if self.config.target else ""
        if (hidden_size, vocab_size) != (self.config.hidden_size, self.config.vocab_size):
            raise ValueError(
                f"these heads{trained_for} take hidden size {self.config.hidden_size} and vocabulary "
                f"{self.config.vocab_size}, but the target's LM head has hidden size {hidden_size} and vocabulary "
                f"{vocab_size}; heads only fit the target they were trained on: {TRAIN_HINT}")
        if self.config.conditioned:
            width = target.get_input_embeddings().weight.shape[1]
            if width != self.config.embedding_size:
                raise ValueError(f"these conditioned heads{trained_for} read {self.config.embedding_size}-wide token "
                                 f"embeddings, the target's are {width}-wide; {TRAIN_HINT}")
        self.output_weight = self.output_bias = self.input_embeddings = None  # never cast a former target's
        self.to(device=output.weight.device, dtype=output.weight.dtype)
        self.output_weight = output.weight.detach()
        self.output_bias = None if output.bias is None else output.bias.detach()
        if self.config.conditioned:
            self.input_embeddings = target.get_input_embeddings().weight.detach()
        return self

    def head(self, index: int, hidden: torch.Tensor, tokens: torch.Tensor | None = None,
             rows: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits [..., V] of head `index` from hidden [..., H]. Conditioned heads also take tokens
        [..., index + 1]: the token after the hidden state's position, then the drafts before `index`.
        rows: (weight [N, H], bias [N] | None), some rows of the output projection, to project onto
        instead of the whole head (logits [..., N]; a reduced draft vocabulary)."""
        return F.linear(self.state(index, hidden, tokens), *(rows or (self.output_weight, self.output_bias)))

    def state(self, index: int, hidden: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """What head `index` hands the output projection, [..., H] (`head`'s logits before the LM head)."""
        if self.output_weight is None:
            raise RuntimeError("MedusaHeads are not attached to a target: call heads.attach(target) "
                               "(HeadsDrafter does it)")
        x = hidden
        if self.config.conditioned:
            if tokens is None or tokens.shape[-1] != index + 1:
                raise ValueError(f"conditioned head {index} needs tokens [..., {index + 1}], got "
                                 f"{None if tokens is None else tuple(tokens.shape)}")
            embedded = F.embedding(tokens, self.input_embeddings)  # [..., index + 1, E]
            x = x + self.token_projections[index](embedded.flatten(-2))
        return self.blocks[index](x)

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor | None = None,
                rows: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits [k, ..., V] of every head from hidden [..., H]; conditioned heads take tokens
        [..., k] (teacher forcing): tokens[..., m] is the token m + 1 positions after the hidden state's.
        rows: as in `head` (logits [k, ..., N])."""
        if not self.config.conditioned and self.output_weight is not None:
            # one LM-head product for all heads: k small blocks, then [k, ..., H] x [H, V]
            states = torch.stack([block(hidden) for block in self.blocks])
            return F.linear(states, *(rows or (self.output_weight, self.output_bias)))
        return torch.stack([self.head(i, hidden, None if tokens is None else tokens[..., : i + 1], rows)
                            for i in range(self.num_heads)])

    # --- files: config.json + model.safetensors ------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """config.json and the heads' own weights in fp16 (the target's tensors are buffers, not saved)."""
        return write_files(directory, KIND, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "MedusaHeads":
        heads = cls(HeadsConfig(**read_config(directory, KIND, "heads", "MedusaHeads", TRAIN_HINT)))
        heads.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)), strict=True)
        heads.source = Path(directory)
        return heads.to(device=device, dtype=dtype).eval()


class HeadsDrafter:
    """Drafts up to `heads.num_heads` positions as a `TokenLattice` (each head's `top_k` candidates)
    from the hidden state the verifier captured: no target forward of its own (BPD §4's combined
    verify-and-predict: 2m/k target calls become m/k + 1, and here m/k, because the prefill's last
    row supplies the first step's state). Use it with the target it is attached to:
    `SpecDiff(target, HeadsDrafter(heads, target))`.

    The target's context processors (repetition penalty...) and, when sampling, its warp are
    applied to each row, with the committed ids plus the row's predecessors' top tokens as context,
    so the drafts lean the way the target decodes. Candidates are fixed picks (DETERMINISTIC), which
    lossless sampling handles for any tree. Conditioned (Hydra) heads are run one after the other
    along the top-1 path; branches off it reuse that path's rows. With no hidden state (a one-token
    prompt: nothing was prefilled) the step drafts nothing.

    draft_vocab (FR-Spec, as `AutoregressiveDrafter`'s): the tokens the heads may propose, so each step
    projects onto those rows of the LM head only (on SmolLM2, 8192 of 49152 rows: the 4 heads' product
    falls from ~23 to ~4 ms in fp32 on a CPU core). "auto" (default): the ids in `draft_vocab.json`
    beside the heads (`heads.source`), else the whole head; None: the whole head; or the ids. Every
    other token gets probability 0, which only narrows what is drafted: lossless either way.
    """

    needs = DraftNeeds(hidden_layers=(-1,))  # the LM head's input, from every verifier forward

    def __init__(self, heads: MedusaHeads, target, top_k: int = 4, draft_vocab="auto"):
        if top_k < 1:
            raise ValueError(f"top_k (candidates per head) must be >= 1, got {top_k}")
        self.heads = heads.attach(target).eval()
        self.k = heads.num_heads  # SpecDiff's default draft length
        V = heads.config.vocab_size
        self.draft_vocab = resolve_draft_vocab(draft_vocab, heads.source, V)  # [N] sorted ids, or None
        self.top_k = min(top_k, V if self.draft_vocab is None else len(self.draft_vocab))
        self._rows = None  # (weight [N, H], bias [N] | None): the draft vocabulary's rows of the LM head
        if self.draft_vocab is not None:
            ids = self.draft_vocab.to(heads.output_weight.device)
            bias = heads.output_bias
            self._rows = (heads.output_weight[ids].contiguous(), None if bias is None else bias[ids].contiguous())
            self._ids = ids
        self.forward_count = 0  # head evaluations (one batched call; one per head when conditioned)
        # fp32 on a CPU: the heads' linears and the LM-head product over oneDNN-packed weights, one row included
        # (Hydra heads run a row at a time; SmolLM2's heads-lookup proposal 9.9 -> 6.9 ms at two threads)
        self.packed = PackedLinears(self.heads, min_rows=1) if PackedLinears.applies(self.heads) else None

    @classmethod
    def from_pretrained(cls, directory: str | Path, target, top_k: int = 4, draft_vocab="auto") -> "HeadsDrafter":
        return cls(MedusaHeads.from_pretrained(directory), target, top_k, draft_vocab)

    def bind(self, target_vocab_size: int, tokenizer=None) -> None:
        if target_vocab_size != self.heads.config.vocab_size:
            raise ValueError(f"the heads predict {self.heads.config.vocab_size} tokens but the target's LM head has "
                             f"{target_vocab_size} rows; {TRAIN_HINT}")

    def reset(self) -> None:
        """Nothing to forget: the heads keep no per-request state."""

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> TokenLattice:
        """candidates [L, K], probs [L, K], dists [L, V] with L = min(num_heads, budget); L = 0 without a state;
        dists None when greedy over a draft vocabulary with no processors."""
        length = min(self.k, ctx.budget)
        if ctx.hidden_state is None or length < 1:
            return TokenLattice(torch.zeros(0, self.top_k, dtype=torch.long), torch.zeros(0, self.top_k))
        hidden = ctx.hidden_state[0].to(self.heads.output_weight.dtype)  # [H]
        with self._packing():
            return self._lattice(hidden, ctx, length)

    def _lattice(self, hidden: torch.Tensor, ctx: DraftContext, length: int) -> TokenLattice:
        """`propose`'s lattice of `length` positions from the state hidden [H]."""
        # Greedy with nothing context-dependent to apply: rank inside the draft vocabulary and map the kept
        # candidates to target ids (sorted ids: ties fall as over the whole head), no [V] rows (dists None).
        narrow = self.draft_vocab is not None and ctx.sampling is None and not ctx.processors
        widen = (lambda logits: logits) if narrow else self._full
        conditioned = self.heads.config.conditioned
        all_logits = None if conditioned else widen(self._project(torch.stack(
            [self.heads.state(i, hidden) for i in range(self.heads.num_heads)])))  # [k, N or V]
        self.forward_count += length if conditioned else 1
        path = [ctx.token_ids[-1]]  # the token after the hidden state's position, then each row's top token
        dists, candidates, probs = [], [], []
        for i in range(length):
            if conditioned:
                logits = widen(self._project(self.heads.state(i, hidden, torch.tensor(path, device=hidden.device))))
            else:
                logits = all_logits[i]
            dist = torch.softmax(logits.float(), dim=-1) if narrow else self._dist(logits, ctx, path[1:])  # [N or V]
            top = dist.topk(self.top_k)
            ids = self._ids[top.indices] if narrow else top.indices
            dists.append(dist), candidates.append(ids), probs.append(top.values)
            path.append(int(ids[0]))
        # [L, K], [L, K], [L, V] (None when narrow)
        return TokenLattice(torch.stack(candidates), torch.stack(probs), None if narrow else torch.stack(dists))

    def _packing(self):
        return self.packed.active(min_rows=1) if self.packed is not None else nullcontext()

    def _project(self, states: torch.Tensor) -> torch.Tensor:
        """The heads' states [..., H] -> logits over the draft vocabulary's rows of the LM head (or all of it)."""
        weight, bias = self._rows or (self.heads.output_weight, self.heads.output_bias)
        return F.linear(states, weight, bias) if self.packed is None else self.packed.linear(states, weight, bias, 1)

    def _full(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., N] logits over the draft vocabulary -> [..., V], -inf at every other token."""
        if self.draft_vocab is None:
            return logits
        return to_full_vocab(logits, self._ids, self.heads.config.vocab_size)

    @staticmethod
    def _dist(logits: torch.Tensor, ctx: DraftContext, drafted: list[int]) -> torch.Tensor:
        """logits [V] -> the row's distribution: processors with its own context, then softmax or the warp."""
        logits = process_paths(ctx.processors, ctx.token_ids, [drafted], logits.float()[None])[0]
        return torch.softmax(logits, dim=-1) if ctx.sampling is None else ctx.sampling.probs(logits)
