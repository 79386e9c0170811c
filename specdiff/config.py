"""Decoding settings: one frozen dataclass, defaults read from the model's generation_config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class DecodingConfig:
    """What `generate` would be told. temperature 0 means greedy (do_sample=False)."""

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

    @classmethod
    def from_model(cls, model, **overrides) -> "DecodingConfig":
        """Defaults from `model.generation_config` (as `generate` reads them); `None` overrides are ignored."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown decoding options: {sorted(unknown)}")
        gc = model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else model.config.eos_token_id
        eos_ids = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
        values = dict(
            temperature=(gc.temperature or 1.0) if gc.do_sample else 0.0,
            top_k=gc.top_k or 0 if gc.do_sample else 0,
            top_p=gc.top_p if gc.do_sample and gc.top_p is not None else 1.0,
            repetition_penalty=gc.repetition_penalty or 1.0,
            no_repeat_ngram_size=gc.no_repeat_ngram_size or 0,
            eos_token_ids=eos_ids,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "eos_token_ids" in overrides and isinstance(values["eos_token_ids"], int):
            values["eos_token_ids"] = (values["eos_token_ids"],)
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)
