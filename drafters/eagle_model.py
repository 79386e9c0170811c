"""The EAGLE draft model (algorithms.md §10): one decoder layer of the target's own architecture over
the target's features, with the target's frozen input embedding and LM head.

Row t of the draft model stands at position t and reads the token after it and a feature of t:

    x_t = fc([embed(token_{t+1}); feature_t])                                    [E]

feature_t is the target's hidden state at t: EAGLE-1's LM-head input (`feature_layers` = (L,), L the
target's layer count), or EAGLE-3's fusion of low, middle and high layers (their concatenation through
a Linear, n H -> H). The decoder's output at the row after its final norm, h_t, is what the frozen LM
head turns into token_{t+2}, and it is the feature of the next drafted row (EAGLE's recurrent feature;
EAGLE-3's training-time test trains the model for it, `forward`).

Reduced vocabulary (EAGLE-3's d2t): the LM head restricted to the `draft_vocab` rows of the target's
(saved with the drafter); `to_target` scatters the logits back over the target's vocabulary with -inf
elsewhere, so their softmax is a distribution over target tokens that is zero outside the subset.

The file holds only the trained weights (fuse, fc, the decoder layer, its norms) and the draft
vocabulary; the target's embedding and LM head are borrowed at `attach`. Shapes: `H` hidden size (the
LM head's input), `E` input-embedding width, `V` target vocabulary, `N` draft vocabulary, `n` feature
layers, `B` batch, `S` positions.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from specdiff.drafters.files import WEIGHTS_FILE, read_config, write_files
from specdiff.masks import additive_mask
from specdiff.vocab import to_draft_indices, to_full_vocab

KIND = "specdiff-eagle"  # in config.json, so an EAGLE directory is never mistaken for a causal LM
TRAIN_HINT = "train one for it with `specdiff train eagle --target PATH_OR_ZOO_NAME --data DIR --out-dir DIR`"


@dataclass(frozen=True)
class EagleConfig:
    """hidden_size, vocab_size: the target's LM head [vocab_size, hidden_size]; embedding_size: its input
    embedding width. feature_layers index the target's hidden_states (0 the embeddings, i the output of
    layer i, num_target_layers the LM head's input). decoder: the transformers config (`to_dict()`) of
    the one-layer decoder. draft_vocab_size: rows of the reduced LM head, None for the whole vocabulary.
    target: what the drafter was trained on (shown in errors)."""

    hidden_size: int
    vocab_size: int
    embedding_size: int
    num_target_layers: int
    feature_layers: tuple[int, ...]
    decoder: dict = field(repr=False)
    draft_vocab_size: int | None = None
    attn_implementation: str = "sdpa"
    target: str = ""

    def __post_init__(self):
        object.__setattr__(self, "feature_layers", tuple(int(layer) for layer in self.feature_layers))
        object.__setattr__(self, "decoder", json.loads(json.dumps(self.decoder)))  # as config.json stores it
        for name in ("hidden_size", "vocab_size", "embedding_size", "num_target_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"EagleConfig.{name} must be >= 1, got {getattr(self, name)}")
        L, layers = self.num_target_layers, self.feature_layers
        if not layers or len(set(layers)) != len(layers) or not all(0 <= layer <= L for layer in layers):
            raise ValueError(f"feature_layers must be distinct indices of the target's hidden_states, in [0, {L}] "
                             f"(0: the embeddings, i: the output of layer i, {L}: the LM head's input); got {layers}")
        if self.draft_vocab_size is not None and not 1 <= self.draft_vocab_size <= self.vocab_size:
            raise ValueError(f"draft_vocab_size must be in [1, {self.vocab_size}] or None (the whole vocabulary), "
                             f"got {self.draft_vocab_size}")
        if "model_type" not in self.decoder:
            raise ValueError("EagleConfig.decoder must be a transformers config dict (config.to_dict()) with a "
                             "model_type")

    @property
    def fused(self) -> bool:
        """True unless the only feature is the LM head's input (EAGLE-1), which is already the head's width."""
        return self.feature_layers != (self.num_target_layers,)


def one_layer_config(target_config, vocab_size: int):
    """The target's transformers config cut to one decoder layer with its own, untied `vocab_size` head."""
    config = copy.deepcopy(target_config)
    config.num_hidden_layers = 1
    config.vocab_size = vocab_size
    config.tie_word_embeddings = False
    layer_types = getattr(config, "layer_types", None)
    if layer_types:  # a drafter layer sees the whole context
        config.layer_types = ["full_attention" if "full_attention" in layer_types else layer_types[0]]
    return config


class Borrowed(torch.nn.Module):
    """A target's embedding or LM head, shared at attach time: non-persistent buffers, never trained or saved."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "embedding" | "head"
        self.register_buffer("weight", None, persistent=False)  # [V, E] or [N, H]
        self.register_buffer("bias", None, persistent=False)  # [N] | None

    @property
    def packs_as_linear(self) -> bool:
        """The head is F.linear over its weight: `PackedLinears` may prepack it for multi-row drafts (the
        draft vocabulary's rows; unpacked, a 5-row draft through SmolLM2's 8,192 rows cost 4-5 ms on one core)."""
        return self.kind == "head"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("the EAGLE model is not attached to a target: call eagle.attach(target) "
                               "(EagleDrafter does it)")
        if self.kind == "embedding":
            return F.embedding(x, self.weight)
        return F.linear(x, self.weight, self.bias)


def unroll_allowed(S: int, steps: int) -> torch.Tensor:
    """[steps S, steps S] bool: which rows of a `steps`-deep unroll see which. Row (s, i) is the s-th
    drafted row after committed position i: it sees step 0's rows j <= i (the committed context) and
    the rows (1..s, i) of its own chain."""
    step = torch.arange(steps).repeat_interleave(S)  # [steps S]
    position = torch.arange(S).repeat(steps)  # [steps S]
    causal = (step[None] == 0) & (position[None] <= position[:, None])
    own_chain = (step[None] >= 1) & (step[None] <= step[:, None]) & (position[None] == position[:, None])
    return causal | own_chain


def shifted(ids: torch.Tensor, shift: int, fill: int = 0) -> torch.Tensor:
    """[B, S]: entry [b, i] is ids[b, i + shift] (`fill` past the end)."""
    return F.pad(ids[:, shift:], (0, shift), value=fill)


class EagleModel(torch.nn.Module):
    """fc + one decoder layer over the target's features; call `attach(target)` before use."""

    def __init__(self, config: EagleConfig):
        super().__init__()
        self.config = config
        H, E = config.hidden_size, config.embedding_size
        decoder_values = dict(config.decoder)
        decoder_config = AutoConfig.for_model(decoder_values.pop("model_type"), **decoder_values)
        self.decoder = AutoModelForCausalLM.from_config(decoder_config, attn_implementation=config.attn_implementation)
        self.decoder.set_input_embeddings(Borrowed("embedding"))  # never used by the decoder: rows come as vectors
        self.decoder.set_output_embeddings(Borrowed("head"))
        n = len(config.feature_layers)
        self.fuse = torch.nn.Linear(n * H, H, bias=False) if config.fused else None
        self.fc = torch.nn.Linear(E + H, E)
        if config.draft_vocab_size is not None:
            self.register_buffer("draft_vocab", torch.zeros(config.draft_vocab_size, dtype=torch.long))  # [N] d2t

    @classmethod
    def for_target(cls, target, feature_layers: tuple[int, ...] | None = None, draft_vocab=None, name: str = "",
                   dtype: torch.dtype | None = None) -> "EagleModel":
        """A fresh drafter shaped for `target`, attached to it. feature_layers: None for EAGLE-1's (L,);
        draft_vocab: target ids [N] of the reduced LM head, or None for the whole vocabulary."""
        V, H = target.get_output_embeddings().weight.shape
        E = target.get_input_embeddings().weight.shape[1]
        L = target.config.num_hidden_layers
        vocab = None if draft_vocab is None else torch.as_tensor(draft_vocab, dtype=torch.long).sort().values
        if vocab is not None and (vocab.dim() != 1 or len(vocab.unique()) != len(vocab) or not 0 <= vocab.min()
                                  or not vocab.max() < V):
            raise ValueError(f"draft_vocab must be distinct target token ids in [0, {V}), [N] for N rows of the "
                             f"reduced LM head; got shape {tuple(vocab.shape)}")
        decoder = one_layer_config(target.config, V if vocab is None else len(vocab)).to_dict()
        attn = getattr(target.config, "_attn_implementation", None) or "sdpa"
        config = EagleConfig(H, V, E, L, feature_layers or (L,), decoder, None if vocab is None else len(vocab),
                             attn, name)
        model = cls(config)
        if vocab is not None:
            model.draft_vocab.copy_(vocab)
        model._copy_shared_weights(target)
        return model.attach(target, dtype)

    def _copy_shared_weights(self, target) -> None:
        """Start the decoder's weights outside its layer (final norm, learned positions) from the target's."""
        theirs = target.state_dict()
        with torch.no_grad():
            for name, parameter in self.decoder.named_parameters():
                in_layer = any(part.isdigit() for part in name.split("."))
                if not in_layer and name in theirs and theirs[name].shape == parameter.shape:
                    parameter.copy_(theirs[name])

    @property
    def embed(self) -> Borrowed:
        return self.decoder.get_input_embeddings()

    @property
    def head(self) -> Borrowed:
        return self.decoder.get_output_embeddings()

    @property
    def verifier_layers(self) -> tuple[int, ...]:
        """feature_layers as DraftNeeds names them: the LM head's input is -1 (read with a hook)."""
        L = self.config.num_target_layers
        return tuple(-1 if layer == L else layer for layer in self.config.feature_layers)

    def attach(self, target, dtype: torch.dtype | None = None) -> "EagleModel":
        """Borrow `target`'s input embedding and LM head (its `draft_vocab` rows); the model moves to the
        target's device and to `dtype` (default: the target's). Raises ValueError when shapes differ."""
        output = target.get_output_embeddings()
        (V, H), E = output.weight.shape, target.get_input_embeddings().weight.shape[1]
        config = self.config
        trained_for = f" (trained for {config.target})" if config.target else ""
        if (H, V, E) != (config.hidden_size, config.vocab_size, config.embedding_size):
            raise ValueError(
                f"this EAGLE drafter{trained_for} reads hidden size {config.hidden_size}, vocabulary "
                f"{config.vocab_size} and {config.embedding_size}-wide embeddings, but the target has hidden size "
                f"{H}, vocabulary {V} and {E}-wide embeddings; a drafter only fits the target it was trained on: "
                f"{TRAIN_HINT}")
        if target.config.num_hidden_layers != config.num_target_layers:
            raise ValueError(f"this EAGLE drafter{trained_for} reads the features of a {config.num_target_layers}-"
                             f"layer target, this one has {target.config.num_hidden_layers} layers; {TRAIN_HINT}")
        self.embed.weight = self.head.weight = self.head.bias = None  # never cast a former target's
        self.to(device=output.weight.device, dtype=dtype or output.weight.dtype)
        weight, bias = output.weight.detach(), None if output.bias is None else output.bias.detach()
        if config.draft_vocab_size is not None:
            weight, bias = weight[self.draft_vocab], None if bias is None else bias[self.draft_vocab]
        cast = dict(dtype=dtype) if dtype is not None else {}
        self.embed.weight = target.get_input_embeddings().weight.detach().to(**cast)
        self.head.weight, self.head.bias = weight.to(**cast), None if bias is None else bias.to(**cast)
        return self

    # --- the pieces of a row ------------------------------------------------------------------------

    def fuse_features(self, states: torch.Tensor) -> torch.Tensor:
        """The target's states [..., n, H] at `feature_layers` -> features [..., H]."""
        if self.fuse is None:
            return states[..., 0, :]
        return self.fuse(states.flatten(-2))

    def inputs(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Row inputs [..., E] from tokens [...] (the token after each row's position) and features [..., H]."""
        return self.fc(torch.cat([self.embed(tokens), features.to(self.fc.weight.dtype)], dim=-1))

    def to_target(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits [..., N] -> target-vocabulary logits [..., V], -inf outside the subset."""
        if self.config.draft_vocab_size is None:
            return logits
        return to_full_vocab(logits, self.draft_vocab, self.config.vocab_size)

    def target_ids(self, draft_indices: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary indices [...] -> target ids [...]."""
        return draft_indices if self.config.draft_vocab_size is None else self.draft_vocab[draft_indices]

    def to_draft(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Target ids [...] -> draft-vocabulary indices [...], -1 for tokens outside it."""
        if self.config.draft_vocab_size is None:
            return token_ids
        return to_draft_indices(token_ids, self.draft_vocab, self.config.vocab_size)

    # --- training-time test ---------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, states: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """EAGLE-3's training-time test over every position at once. ids [B, S] a window of tokens,
        states [B, S, n, H] the target's features there. Step s's row i reads ids[i + s + 1] and, at
        step 0, the target's feature at i, later step s - 1's output at i; it stands at position i + s
        and sees what `unroll_allowed` says, as the s-th drafted row after position i does at inference.

        Each step re-runs the earlier steps' rows (identical: they see no later row) instead of keeping
        a cache, so the whole unroll is plain forwards. Returns the LM head's inputs [steps, B, S, H];
        `head` turns the rows one wants scored into draft-vocabulary logits (row (s, i) predicts
        ids[i + s + 2]), so no logits are computed for prompt or padding rows."""
        B, S = ids.shape
        feature = self.fuse_features(states)  # [B, S, H]
        rows = []  # every step's row inputs so far, [B, S, E] each
        for step in range(steps):
            rows.append(self.inputs(shifted(ids, step + 1), feature))
            depth = step + 1
            mask = additive_mask(unroll_allowed(S, depth), self.fc.weight.dtype, ids.device)  # [1, 1, dS, dS]
            positions = (torch.arange(S, device=ids.device).repeat(depth)
                         + torch.arange(depth, device=ids.device).repeat_interleave(S))  # [dS]
            out = self.decoder(inputs_embeds=torch.cat(rows, dim=1), attention_mask=mask,
                               position_ids=positions.expand(B, -1), output_hidden_states=True, use_cache=False,
                               logits_to_keep=1)
            outputs = out.hidden_states[-1]  # [B, dS, H], the LM head's input
            feature = outputs[:, -S:]
        return outputs.unflatten(1, (steps, S)).transpose(0, 1)

    # --- files: config.json + model.safetensors ----------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """The trained weights in fp16 and the draft vocabulary; the target's tensors stay out."""
        return write_files(directory, KIND, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "EagleModel":
        """The drafter in `directory`, not yet attached (`attach(target)`, or `EagleDrafter`, does it)."""
        values = read_config(directory, KIND, "EAGLE drafter files", "EagleModel", TRAIN_HINT)
        model = cls(EagleConfig(**values))
        model.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)), strict=True)
        return model.to(device=device, dtype=dtype).eval()
