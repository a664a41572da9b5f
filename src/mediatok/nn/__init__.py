"""Building blocks shared by every model: attention through SDPA, transformer blocks, conv blocks,
rotary positions, `autocast_off`."""

from mediatok.nn.conv import AttentionBlock2d, Downsample2d, ResBlock2d, Upsample2d
from mediatok.nn.precision import autocast_off
from mediatok.nn.rope import apply_rope, rope_tables, with_prefix
from mediatok.nn.transformer import MLP, Attention, Block, Transformer, init_weights

__all__ = [
    "MLP",
    "Attention",
    "AttentionBlock2d",
    "Block",
    "Downsample2d",
    "ResBlock2d",
    "Transformer",
    "Upsample2d",
    "apply_rope",
    "autocast_off",
    "init_weights",
    "rope_tables",
    "with_prefix",
]
