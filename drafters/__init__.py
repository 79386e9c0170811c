"""Drafters: propose a `TokenLattice` or a `DraftTree` from the committed context."""

from specdiff.drafters.autoregressive import AutoregressiveDrafter
from specdiff.drafters.base import DraftContext, Drafter
from specdiff.drafters.diffusion import DiffusionDrafter
from specdiff.drafters.heads import HeadsConfig, HeadsDrafter, MedusaHeads
from specdiff.drafters.lookup import PromptLookupDrafter
from specdiff.drafters.tidar import TiDARDrafter

__all__ = ["AutoregressiveDrafter", "DiffusionDrafter", "DraftContext", "Drafter", "HeadsConfig", "HeadsDrafter",
           "MedusaHeads", "PromptLookupDrafter", "TiDARDrafter"]
