"""Image codecs: TiTok (1D tokens) and VQGAN (a 2D grid)."""

from mediatok.codecs.image.titok import TiTok, TiTokConfig

__all__ = ["TiTok", "TiTokConfig"]
