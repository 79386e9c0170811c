"""Drafters: propose a `TokenLattice` or a `DraftTree` from the committed context."""

from specdiff.drafters.autoregressive import AutoregressiveDrafter
from specdiff.drafters.base import DraftContext, Drafter
from specdiff.drafters.dflash import TargetDiffusionDrafter
from specdiff.drafters.dflash_model import DFlashConfig, DFlashModel
from specdiff.drafters.diffusion import DiffusionDrafter
from specdiff.drafters.drawn import DrawnChain
from specdiff.drafters.eagle import EagleDrafter
from specdiff.drafters.eagle_model import EagleConfig, EagleModel
from specdiff.drafters.hybrid import HybridDrafter, MatchRates
from specdiff.drafters.heads import HeadsConfig, HeadsDrafter, MedusaHeads
from specdiff.drafters.lookup import PromptLookupDrafter
from specdiff.drafters.tidar import TiDARDrafter

__all__ = ["AutoregressiveDrafter", "DFlashConfig", "DFlashModel", "DiffusionDrafter", "DraftContext", "Drafter", "DrawnChain",
           "EagleConfig", "EagleDrafter", "EagleModel", "HeadsConfig", "HeadsDrafter", "HybridDrafter", "MatchRates",
           "MedusaHeads",
           "PromptLookupDrafter", "TargetDiffusionDrafter", "TiDARDrafter"]
