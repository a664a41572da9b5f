"""Image codecs: TiTok (1D tokens), FlexTok (1D tokens, any prefix length) and VQGAN (a 2D grid)."""

from mediatok.codecs.image.flextok import FlexTok, FlexTokConfig, FlowOutput
from mediatok.codecs.image.repa import REPAConfig
from mediatok.codecs.image.titok import TiTok, TiTokConfig
from mediatok.codecs.image.vqgan import VQGAN, VQGANConfig

__all__ = [
    "VQGAN",
    "FlexTok",
    "FlexTokConfig",
    "FlowOutput",
    "REPAConfig",
    "TiTok",
    "TiTokConfig",
    "VQGANConfig",
]
