"""Image codecs: TiTok (1D tokens) and VQGAN (a 2D grid)."""

from mediatok.codecs.image.titok import TiTok, TiTokConfig
from mediatok.codecs.image.vqgan import VQGAN, VQGANConfig

__all__ = ["VQGAN", "TiTok", "TiTokConfig", "VQGANConfig"]
