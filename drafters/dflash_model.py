"""The DFlash draft model (algorithms.md §9): a small block-diffusion decoder fed the target's hidden states.

Parts. The target's hidden states at a few layers (`DFlashConfig.layers`, indices into transformers'
`hidden_states`: 0 the embeddings, i the output of decoder layer i) are concatenated and projected,
`fc` Linear(layers x H -> H, no bias) then RMSNorm, into one context vector per committed position
(DFlash's fusion). A stack of `num_layers` decoder layers of the target's own architecture (built by
transformers from the target's config) runs over [context rows | block rows]. Its input embedding and LM
head are the target's, shared and frozen: they are not trained and not saved with the drafter.

Rows. Context row j is the projected feature of position j, at position j, fed as `inputs_embeds`;
context rows are causal among themselves and cached like an AR model's rows, so every draft layer sees
them as keys and values. (DFlash feeds the context only to the K/V projections of each layer; here the
context rows run through the layers as ordinary rows, which needs no change to the modeling code.) The
block after the last committed token t_{T-1} holds `block_size` rows: slot 0 is t_{T-1}'s own embedding
at position T - 1 (DFlash's anchor: the known token first), slots 1.. a learned mask embedding at
positions T, T + 1, ...; slot k predicts the token at its own position (no shift), so a block drafts
block_size - 1 tokens. The block sees every context row and itself, bidirectionally.

Fused masks (`DFlashConfig.fused_masks`, ours, not DFlash's). A plain mask row is the same vector in every
block, so in a one-layer drafter its query cannot depend on the block: it attends by position alone, to a
mix it cannot choose. With fused masks every mask row adds the anchor's embedding and the last context
row's fused feature (position T - 2) to the mask embedding: EAGLE's input for the token after the anchor,
so the one attention layer asks with what this block is about. Shipped drafters say which they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from specdiff.drafters.files import WEIGHTS_FILE, read_config, write_files

KIND = "specdiff-dflash"  # in config.json, so a drafter directory is never mistaken for a causal LM
TRAIN_HINT = "train one for it with `specdiff train dflash --target NAME|DIR --data DIR --out-dir DIR`"


def default_layers(num_target_layers: int) -> tuple[int, ...]:
    """EAGLE-3's taps as `hidden_states` indices: 2, L // 2 and L - 3 (SmolLM2, L = 30: 2, 15, 27),
    clamped to [1, L] and deduplicated for shallow targets."""
    L = num_target_layers
    return tuple(sorted({min(max(index, 1), L) for index in (2, L // 2, L - 3)}))


@dataclass(frozen=True)
class DFlashConfig:
    """hidden_size, vocab_size: the target's LM head [vocab_size, hidden_size]. layers: the target's
    `hidden_states` indices fused into the context. block_size: rows per block, the anchor and
    block_size - 1 masks (DFlash: 16). decoder: the draft decoder's transformers config (`to_dict()`).
    target: what it was trained for (shown in errors). fused_masks: mask rows add the anchor's embedding
    and the last context row (module docstring); False in drafters saved before it existed."""

    hidden_size: int
    vocab_size: int
    layers: tuple[int, ...]
    block_size: int = 16
    num_layers: int = 1
    decoder: dict = field(default_factory=dict)
    target: str = ""
    fused_masks: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        if not self.layers or min(self.layers) < 0:
            raise ValueError(f"DFlashConfig.layers: name at least one hidden_states index >= 0, got {self.layers}")
        if self.block_size < 2:
            raise ValueError(f"DFlashConfig.block_size must be >= 2 (the anchor and one mask), got {self.block_size}")
        for name in ("hidden_size", "vocab_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"DFlashConfig.{name} must be >= 1, got {getattr(self, name)}")
        if "model_type" not in self.decoder:
            raise ValueError("DFlashConfig.decoder must be a transformers config dict (with model_type)")

    @classmethod
    def for_target(cls, target, layers: tuple[int, ...] | None = None, block_size: int = 16, num_layers: int = 1,
                   name: str = "", fused_masks: bool = False) -> "DFlashConfig":
        """The config of a drafter for `target`: its architecture with `num_layers` (full-attention) layers."""
        decoder = copy.deepcopy(target.config)
        num_target_layers = decoder.num_hidden_layers
        decoder.num_hidden_layers = num_layers
        if isinstance(getattr(decoder, "layer_types", None), list):
            decoder.layer_types = ["full_attention"] * num_layers  # the block must see the whole context
        layers = default_layers(num_target_layers) if layers is None else tuple(layers)
        if max(layers) > num_target_layers:
            raise ValueError(f"layers {layers}: the target has hidden_states 0..{num_target_layers}")
        vocab_size, hidden_size = target.get_output_embeddings().weight.shape
        values = decoder.to_dict()
        values["_attn_implementation"] = target.config._attn_implementation
        return cls(hidden_size, vocab_size, layers, block_size, num_layers, values, name, fused_masks)

    def decoder_config(self):
        skip = ("model_type", "_attn_implementation")
        values = {key: value for key, value in self.decoder.items() if key not in skip}
        return AutoConfig.for_model(self.decoder["model_type"], **values)


class DFlashModel(torch.nn.Module):
    """fc + norm over the target's features, a learned mask embedding, and the draft decoder.
    Call `attach(target)` before use: it shares the target's input embedding and LM head."""

    def __init__(self, config: DFlashConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.fc = torch.nn.Linear(len(config.layers) * H, H, bias=False)
        self.hidden_norm = torch.nn.RMSNorm(H, eps=1e-6)
        self.mask_embedding = torch.nn.Parameter(torch.randn(H) * 0.02)  # [H]
        attn = config.decoder.get("_attn_implementation") or "sdpa"
        self.decoder = AutoModelForCausalLM.from_config(config.decoder_config(), attn_implementation=attn)
        self._share(None)
        self.source: Path | None = None  # the directory it was loaded from (its draft_vocab.json, if any)

    @classmethod
    def for_target(cls, target, layers=None, block_size: int = 16, num_layers: int = 1,
                   name: str = "", fused_masks: bool = False) -> "DFlashModel":
        """A fresh (untrained) drafter shaped for `target`, attached to it."""
        config = DFlashConfig.for_target(target, layers, block_size, num_layers, name, fused_masks)
        return cls(config).attach(target).eval()

    def _share(self, target) -> None:
        """The decoder's input embedding and LM head: the target's modules, or tiny placeholders (so
        that moving or casting the drafter never touches a target, and no unused [V, H] table is kept)."""
        if target is None:
            self.decoder.set_input_embeddings(torch.nn.Embedding(1, self.config.hidden_size))
            self.decoder.set_output_embeddings(torch.nn.Linear(self.config.hidden_size, 1, bias=False))
        else:
            self.decoder.set_input_embeddings(target.get_input_embeddings())
            self.decoder.set_output_embeddings(target.get_output_embeddings())

    def shared_names(self) -> set[str]:
        """State-dict names of the target's tensors (never saved)."""
        shared = {id(p) for module in (self.decoder.get_input_embeddings(), self.decoder.get_output_embeddings())
                  for p in module.parameters()}
        return {name for name, p in self.named_parameters(remove_duplicate=False) if id(p) in shared}

    def attach(self, target) -> "DFlashModel":
        """Share `target`'s input embedding and LM head, frozen (requires_grad False: training moves only
        the drafter's own weights); the drafter moves to their device and dtype. Raises ValueError when
        the hidden size, vocabulary or hidden layers do not match."""
        weight = target.get_output_embeddings().weight
        vocab_size, hidden_size = weight.shape
        trained_for = f" (trained for {self.config.target})" if self.config.target else ""
        if (hidden_size, vocab_size) != (self.config.hidden_size, self.config.vocab_size):
            raise ValueError(
                f"this DFlash drafter{trained_for} takes hidden size {self.config.hidden_size} and vocabulary "
                f"{self.config.vocab_size}, but the target's LM head has hidden size {hidden_size} and vocabulary "
                f"{vocab_size}; a drafter only fits the target it was trained on: {TRAIN_HINT}")
        num_states = target.config.num_hidden_layers + 1
        if max(self.config.layers) >= num_states:
            raise ValueError(f"this DFlash drafter{trained_for} reads hidden_states {list(self.config.layers)}, the "
                             f"target has only 0..{num_states - 1}; {TRAIN_HINT}")
        self._share(None)
        self.to(device=weight.device, dtype=weight.dtype)
        self._share(target)
        for module in (target.get_input_embeddings(), target.get_output_embeddings()):
            module.requires_grad_(False)
        return self

    def context_embeds(self, features: torch.Tensor) -> torch.Tensor:
        """features [..., layers, H] (the target's hidden states at one position each) -> [..., H]."""
        return self.hidden_norm(self.fc(features.to(self.fc.weight.dtype).flatten(-2)))

    def block_embeds(self, anchor_ids: torch.Tensor, rows: int, last_context: torch.Tensor | None = None) -> torch.Tensor:
        """anchor_ids [...] -> [..., rows, H]: the anchor's embedding, then rows - 1 mask embeddings; with
        fused masks each adds the anchor's embedding and `last_context` [..., H] (the fused feature of the
        position before the anchor; None or zeros where there is none)."""
        anchor = self.decoder.get_input_embeddings()(anchor_ids)[..., None, :]  # [..., 1, H]
        masks = self.mask_embedding.to(anchor.dtype).expand(*anchor_ids.shape, rows - 1, -1)
        if self.config.fused_masks:
            masks = masks + anchor
            if last_context is not None:
                masks = masks + last_context.to(anchor.dtype)[..., None, :]
        return torch.cat([anchor, masks], dim=-2)

    # --- files: config.json + model.safetensors ------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """config.json and the trained weights only, in float16 (the target's embedding and LM head are not stored)."""
        shared = self.shared_names()
        return write_files(directory, KIND, self.config,
                           {name: value for name, value in self.state_dict().items() if name not in shared})

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "DFlashModel":
        """The drafter in `directory`, not yet attached (`attach(target)`, or `TargetDiffusionDrafter`, does it)."""
        model = cls(DFlashConfig(**read_config(directory, KIND, "a DFlash drafter", "DFlashModel", TRAIN_HINT)))
        missing, unexpected = model.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)), strict=False)
        if set(missing) - model.shared_names() or unexpected:
            raise ValueError(f"{str(directory)!r}: weights do not fit the config (missing "
                             f"{sorted(set(missing) - model.shared_names())}, unexpected {sorted(unexpected)})")
        model.source = Path(directory)
        return model.to(device=device, dtype=dtype).eval()
