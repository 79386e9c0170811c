"""Decoding settings: one frozen dataclass, defaults read from the model's generation_config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module before torch is needed
    from specdiff.sampling import SamplingSettings

# What transformers' `generate` samples with when neither the call nor the model's generation_config
# sets a value (GenerationConfig._get_default_generation_params in transformers 5).
_GENERATE_SAMPLING_DEFAULTS = dict(temperature=1.0, top_k=50, top_p=1.0)


@dataclass(frozen=True)
class DecodingConfig:
    """What `generate` would be told. temperature 0 means greedy (do_sample=False); seed makes a
    sampled run reproducible (None: a fresh random seed)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0 (0 = off), got {self.no_repeat_ngram_size}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def sampling(self) -> SamplingSettings | None:
        """The warp for target and drafter; None when greedy."""
        from specdiff.sampling import SamplingSettings

        return None if self.greedy else SamplingSettings(self.temperature, self.top_k, self.top_p)

    @classmethod
    def from_model(cls, model, **overrides) -> "DecodingConfig":
        """Defaults from `model.generation_config` as `generate` reads them; `None` overrides are ignored.

        Sampling is on when the call gives temperature > 0, or gives none and the generation_config
        sets do_sample. top_k and top_p then come from the call, the generation_config, or
        transformers' own defaults (top_k 50), so the result samples like `generate(do_sample=True)`.
        """
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown decoding options: {sorted(unknown)}")
        gc = model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else model.config.eos_token_id
        eos_ids = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
        values = dict(
            repetition_penalty=gc.repetition_penalty or 1.0,
            no_repeat_ngram_size=gc.no_repeat_ngram_size or 0,
            eos_token_ids=eos_ids,
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        sampled = given["temperature"] > 0 if "temperature" in given else bool(gc.do_sample)
        if sampled:
            values.update({name: getattr(gc, name) if getattr(gc, name) is not None else default
                           for name, default in _GENERATE_SAMPLING_DEFAULTS.items()})
        values.update(given)
        eos_ids = values["eos_token_ids"]
        values["eos_token_ids"] = (int(eos_ids),) if isinstance(eos_ids, int) else tuple(eos_ids)
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)
