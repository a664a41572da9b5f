"""VQGAN: a 2D convolutional VQ image tokenizer (Esser et al. 2021, "Taming transformers for
high-resolution image synthesis"), the baseline of the image codecs.

A convolutional encoder (residual blocks with GroupNorm and SiLU, stride-2 downsampling between
resolutions, single-head attention at the lowest resolution and in the middle block) maps an
image to a grid of `latent_dim`-channel latents f times smaller on each side; each grid cell is
quantized to one code; a mirrored decoder (one more residual block per resolution,
nearest-neighbour upsampling) maps the quantized grid back to pixels (paper §3.1, the encoder and
decoder of its appendix). f = 2^(len(channel_mult) − 1): f16 with the default five resolutions,
f8 with four.

How we differ from the paper:
- the quantizer is any single-level kind of the shared core; the default is VQ with a low-dim
  factorized lookup (8-d search space, ViT-VQGAN §3.2), an EMA codebook of 16384 codes and k-means
  init, rather than the paper's 256-d learned codebook of 1024 codes;
- no separate 1×1 `quant_conv` / `post_quant_conv`: the encoder's output conv writes `latent_dim`
  channels directly and the decoder's input conv reads them (the quantizer's own projections do
  the factorized lookup);
- the perceptual and adversarial losses live in `mediatok.training`, not here; the decoder's
  output is not clamped;
- `attention_at_lowest=False` drops every attention block (lowest resolution and middle), for a
  purely convolutional model;
- convolutions keep PyTorch's default initialization.

Layout: images `(B, 3, H, W)` in [-1, 1]; latents `(B, latent_dim, h, w)` channel-first in the
encoder and decoder, channel-last `(B, h, w, latent_dim)` in the quantizer; codes `(B, h, w)`
int64, with h = H / f and w = W / f (token layout "H W").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.codecs.base import Codec, CodecOutput, Tokens, register_codec
from mediatok.codecs.image.common import check_images
from mediatok.nn.conv import AttentionBlock2d, Downsample2d, ResBlock2d, Upsample2d, group_norm
from mediatok.quantize import QuantizeOutput, QuantizerConfig
from mediatok.tokens import TokenSpec


def _default_quantizer() -> QuantizerConfig:
    return QuantizerConfig("vq", {"codebook_size": 16384, "codebook_dim": 8, "kmeans_init": True})


@dataclass
class VQGANConfig:
    """VQGAN settings (defaults: the paper's f16 model).

    Attributes:
        image_size: H = W of the images it codes; divisible by the downsampling factor f.
        channels: base width of the encoder and decoder.
        channel_mult: width multiplier per resolution, highest resolution first; its length sets
            f = 2^(len − 1): (1, 1, 2, 2, 4) is f16, (1, 2, 2, 4) is f8.
        num_res_blocks: residual blocks per resolution in the encoder (the decoder has one more).
        attention_at_lowest: attention blocks at the lowest resolution and in the middle blocks
            of the encoder and decoder; False gives a purely convolutional model.
        latent_dim: channels of the latent grid, the quantizer's `dim`.
        quantizer: the shared-core quantizer, built with dim = latent_dim; it must have a single
            level (the "H W" token layout has no Q axis).
    """

    image_size: int = 256
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attention_at_lowest: bool = True
    latent_dim: int = 256
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        for name in ("image_size", "channels", "num_res_blocks", "latent_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        if not self.channel_mult or any(mult < 1 for mult in self.channel_mult):
            raise ValueError(
                f"expected channel_mult to be a non-empty list of positive ints, got "
                f"{list(self.channel_mult)}"
            )
        if self.image_size % self.downsample:
            raise ValueError(
                f"expected image_size divisible by the downsampling factor {self.downsample} "
                f"(2^(len(channel_mult) - 1)), got {self.image_size}"
            )

    @property
    def downsample(self) -> int:
        """f, the ratio of the image side to the latent grid side."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid(self) -> int:
        """h = w, the side of the latent grid."""
        return self.image_size // self.downsample


class VQGANEncoder(nn.Module):
    """Images `(B, 3, H, W)` → latents `(B, latent_dim, H/f, W/f)`.

    conv_in; per resolution `num_res_blocks` residual blocks (+ attention after each at the
    lowest resolution), a stride-2 downsample between resolutions; middle ResBlock, Attention,
    ResBlock; GroupNorm, SiLU, conv_out.
    """

    def __init__(
        self,
        channels: int,
        channel_mult: tuple[int, ...],
        num_res_blocks: int,
        attention: bool,
        latent_dim: int,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        lowest = len(channel_mult) - 1
        width, blocks = channels, []
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock2d(width, channels * mult))
                width = channels * mult
                if attention and level == lowest:
                    blocks.append(AttentionBlock2d(width))
            if level != lowest:
                blocks.append(Downsample2d(width))
        self.down = nn.Sequential(*blocks)
        self.middle = _middle(width, attention)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, latent_dim, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` → `(B, latent_dim, h, w)`."""
        hidden = self.middle(self.down(self.conv_in(images)))  # (B, C_lowest, h, w)
        return self.conv_out(F.silu(self.norm_out(hidden)))


class VQGANDecoder(nn.Module):
    """Quantized latents `(B, latent_dim, h, w)` → images `(B, 3, h·f, w·f)`.

    The encoder mirrored: conv_in; middle; per resolution, lowest first, `num_res_blocks + 1`
    residual blocks (+ attention at the lowest resolution), a nearest-neighbour upsample between
    resolutions; GroupNorm, SiLU, conv_out.
    """

    def __init__(
        self,
        channels: int,
        channel_mult: tuple[int, ...],
        num_res_blocks: int,
        attention: bool,
        latent_dim: int,
    ):
        super().__init__()
        lowest = len(channel_mult) - 1
        width = channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(latent_dim, width, 3, padding=1)
        self.middle = _middle(width, attention)
        blocks = []
        for level in reversed(range(len(channel_mult))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock2d(width, channels * channel_mult[level]))
                width = channels * channel_mult[level]
                if attention and level == lowest:
                    blocks.append(AttentionBlock2d(width))
            if level != 0:
                blocks.append(Upsample2d(width))
        self.up = nn.Sequential(*blocks)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        """`(B, latent_dim, h, w)` → `(B, 3, H, W)`."""
        hidden = self.up(self.middle(self.conv_in(quantized)))  # (B, channels·mult[0], H, W)
        return self.conv_out(F.silu(self.norm_out(hidden)))


def _middle(width: int, attention: bool) -> nn.Sequential:
    """ResBlock, Attention, ResBlock at the lowest resolution (no attention when disabled)."""
    if attention:
        return nn.Sequential(
            ResBlock2d(width, width), AttentionBlock2d(width), ResBlock2d(width, width)
        )
    return nn.Sequential(ResBlock2d(width, width), ResBlock2d(width, width))


@register_codec
class VQGAN(Codec):
    """See the module docstring and `VQGANConfig`."""

    name = "vqgan"
    modality = "image"
    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        parts = (
            config.channels,
            config.channel_mult,
            config.num_res_blocks,
            config.attention_at_lowest,
            config.latent_dim,
        )
        self.encoder = VQGANEncoder(*parts)
        self.quantizer = config.quantizer.build(config.latent_dim)
        self.decoder = VQGANDecoder(*parts)

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec(
            vocab_sizes=list(self.quantizer.codebook_sizes),
            layout="H W" if self.quantizer.num_levels == 1 else "Q H W",
            geometry={
                "image_size": self.config.image_size,
                "grid": self.config.grid,
                "downsample": self.config.downsample,
                "channels": 3,
            },
        )

    def _quantize(self, images: torch.Tensor) -> QuantizeOutput:
        """`(B, 3, H, W)` → the quantizer's output on channel-last latents `(B, h, w, D)`."""
        latents = self.encoder(images)  # (B, D, h, w)
        return self.quantizer(rearrange(latents, "b d h w -> b h w d"))  # codes (B, h, w)

    def _decode_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        """Channel-last `(B, h, w, D)` → images `(B, 3, H, W)`."""
        quantized = rearrange(quantized, "b h w d -> b d h w")  # (B, D, h, w)
        return self.decoder(quantized.to(self.decoder.conv_in.weight.dtype))

    def forward(self, images: torch.Tensor) -> CodecOutput:
        """Reconstruct `images (B, 3, H, W)` through the quantized grid (training).

        Returns:
            `CodecOutput`: reconstruction `(B, 3, H, W)` and the quantizer's output (quantized
            `(B, h, w, D)`, codes `(B, h, w)`, losses, metrics).
        """
        check_images(self.name, images, self.config.image_size)
        out = self._quantize(images)
        return CodecOutput(self._decode_quantized(out.quantized), out)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> Tokens:
        """Images `(B, 3, H, W)` in [-1, 1] → `Tokens` with codes `(B, h, w)` int64, or
        `(B, Q, h, w)` for a residual quantizer (layout "Q H W")."""
        check_images(self.name, images, self.config.image_size)
        with self._inference():
            codes = self._quantize(images).codes
        if self.quantizer.num_levels > 1:
            codes = rearrange(codes, "b h w q -> b q h w")  # (B, Q, h, w)
        return Tokens(codes, self.token_spec)

    @torch.no_grad()
    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """`Tokens` (or codes `(B, h, w)`) → images `(B, 3, H, W)`, about [-1, 1] (not clamped)."""
        codes = self._codes(tokens)
        grid, levels = self.config.grid, self.quantizer.num_levels
        expected = (grid, grid) if levels == 1 else (levels, grid, grid)
        if codes.ndim != len(expected) + 1 or tuple(codes.shape[1:]) != expected:
            raise ValueError(
                f"vqgan expected codes (B, {', '.join(map(str, expected))}), got shape "
                f"{tuple(codes.shape)}"
            )
        if levels > 1:
            codes = rearrange(codes, "b q h w -> b h w q")  # (B, h, w, Q)
        return self._decode_quantized(self.quantizer.decode(codes))  # (B, h, w, D) inside
