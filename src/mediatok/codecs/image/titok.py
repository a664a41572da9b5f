"""TiTok: a 1D image tokenizer (Yu et al. 2024, "An image is worth 32 tokens for reconstruction
and generation").

A ViT encoder reads the 16×16 patches of the image followed by K learned latent tokens; only the
K latent outputs are kept, projected to a low dimension (12–16) and quantized, so an image
becomes K codes whatever its layout. A ViT decoder reads one mask token per patch followed by the
K quantized latents, and predicts the pixels of each patch from the mask positions.

How we differ from the paper: training is one stage and the decoder predicts pixels directly
(the paper's first stage regresses proxy codes of a pretrained MaskGIT-VQGAN, which cannot be
downloaded here); the quantizer is any kind of the shared core (default: VQ with a 12-d
factorized-free codebook of 4096 codes, EMA, k-means init and dead-code revival).

Tail token drop (optional, `tail_drop`; One-D-Piece, Miwa et al. 2025): in training, each image
keeps the first k of its K quantized tokens, k drawn by `mediatok.codecs.nested_dropout`, and
the decoder sees the learned mask token (the one its patch positions start from) in place of
the rest, so that prefixes decode. `decode` of `Tokens` with `lengths` does the same to the
codes past each row's length. A model trained without tail drop has never seen masked tokens:
its short prefixes decode poorly, as expected. Off by default.

Layout: images `(B, 3, H, W)` in [-1, 1]; patches `(B, (H/p)·(W/p), D)`; codes `(B, K)`
(layout "N"), or `(B, Q, K)` with a residual quantizer (layout "Q N").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from mediatok.codecs.base import Codec, CodecOutput, Tokens, register_codec
from mediatok.codecs.image.common import check_images
from mediatok.codecs.nested_dropout import (
    NestedDropout,
    NestedDropoutConfig,
    check_lengths,
    mask_tail,
)
from mediatok.nn import Transformer, init_weights
from mediatok.quantize import QuantizerConfig
from mediatok.tokens import TokenSpec

# (width, depth, heads) of the paper's sizes; encoder and decoder are alike.
SIZES = {"S": (512, 8, 8), "B": (768, 12, 12), "L": (1024, 24, 16)}


def _default_quantizer() -> QuantizerConfig:
    return QuantizerConfig(
        "vq", {"codebook_size": 4096, "kmeans_init": True, "commitment_weight": 0.25}
    )


@dataclass
class TiTokConfig:
    """TiTok settings.

    Attributes:
        image_size: H = W of the images it codes.
        patch_size: p.
        size: "S", "B" or "L" (sets width, depth, heads), or "custom" to use the three below.
        width, depth, heads: the transformer's, when size is "custom".
        num_tokens: K, the number of 1D tokens per image (32, 64 or 128 in the paper).
        token_dim: the dimension each token is quantized in (12–16 in the paper).
        quantizer: the shared-core quantizer, built with dim = token_dim.
        tail_drop: nested dropout of the token tail in training (One-D-Piece's tail token
            drop), or None (the paper's TiTok).
    """

    image_size: int = 256
    patch_size: int = 16
    size: Literal["S", "B", "L", "custom"] = "S"
    width: int = 512
    depth: int = 8
    heads: int = 8
    num_tokens: int = 128
    token_dim: int = 12
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)
    tail_drop: NestedDropoutConfig | None = None

    def __post_init__(self) -> None:
        if self.size != "custom":
            self.width, self.depth, self.heads = SIZES[self.size]
        if self.image_size % self.patch_size:
            raise ValueError(
                f"expected image_size divisible by patch_size, got {self.image_size} and "
                f"{self.patch_size}"
            )
        for name in ("num_tokens", "token_dim", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")


@register_codec
class TiTok(Codec):
    """See the module docstring and `TiTokConfig`."""

    name = "titok"
    modality = "image"
    config_class = TiTokConfig

    def __init__(self, config: TiTokConfig):
        super().__init__()
        self.config = config
        width, patch = config.width, config.patch_size
        self.grid = config.image_size // patch
        num_patches = self.grid**2
        scale = width**-0.5

        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.encoder_positions = nn.Parameter(scale * torch.randn(num_patches, width))
        self.latent_tokens = nn.Parameter(scale * torch.randn(config.num_tokens, width))
        self.encoder = Transformer(width, config.depth, config.heads)
        self.to_token = nn.Linear(width, config.token_dim)

        self.quantizer = config.quantizer.build(config.token_dim)

        self.from_token = nn.Linear(config.token_dim, width)
        self.latent_positions = nn.Parameter(scale * torch.randn(config.num_tokens, width))
        self.mask_token = nn.Parameter(scale * torch.randn(width))
        self.decoder_positions = nn.Parameter(scale * torch.randn(num_patches, width))
        self.decoder = Transformer(width, config.depth, config.heads)
        self.to_pixels = nn.Linear(width, patch * patch * 3)
        self.tail_drop = NestedDropout(config.tail_drop) if config.tail_drop else None
        self.apply(init_weights)

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec(
            vocab_sizes=list(self.quantizer.codebook_sizes),
            layout="N" if self.quantizer.num_levels == 1 else "Q N",
            geometry={
                "image_size": self.config.image_size,
                "num_tokens": self.config.num_tokens,
                "channels": 3,
            },
        )

    def _encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` → `(B, K, token_dim)` continuous latents."""
        patches = rearrange(self.patch_embed(images), "b d h w -> b (h w) d")  # (B, N, D)
        patches = patches + self.encoder_positions
        latents = self.latent_tokens.expand(len(images), -1, -1)  # (B, K, D)
        hidden = self.encoder(torch.cat([patches, latents], dim=1))
        return self.to_token(hidden[:, patches.shape[1] :])  # (B, K, token_dim)

    def _decode_quantized(
        self,
        quantized: torch.Tensor,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """`(B, K, token_dim)` → images `(B, 3, H, W)`; the tokens past `lengths (B,)` (or, in
        training with tail drop, past drawn lengths) replaced by the mask token."""
        latents = self.from_token(quantized.to(self.from_token.weight.dtype))  # (B, K, D)
        if lengths is not None:
            latents = mask_tail(latents, lengths, self.mask_token)
        elif self.tail_drop is not None and self.training:
            latents, _ = self.tail_drop(latents, self.mask_token, generator)
        latents = latents + self.latent_positions
        masks = (self.mask_token + self.decoder_positions).expand(len(quantized), -1, -1)
        hidden = self.decoder(torch.cat([masks, latents], dim=1))
        pixels = self.to_pixels(hidden[:, : masks.shape[1]])  # (B, N, p·p·3)
        return rearrange(
            pixels,
            "b (gh gw) (ph pw c) -> b c (gh ph) (gw pw)",
            gh=self.grid,
            ph=self.config.patch_size,
            pw=self.config.patch_size,
        )

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> CodecOutput:
        """Reconstruct `images (B, 3, H, W)` through the quantized tokens (training); with
        `tail_drop`, in training mode, each image through a prefix of them (lengths drawn from
        `generator`, or the global RNG)."""
        check_images(self.name, images, self.config.image_size)
        out = self.quantizer(self._encode_latents(images))
        return CodecOutput(self._decode_quantized(out.quantized, generator=generator), out)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> Tokens:
        """Images `(B, 3, H, W)` in [-1, 1] → `Tokens` with codes `(B, K)` int64, or `(B, Q, K)`
        for a residual quantizer (layout "Q N")."""
        check_images(self.name, images, self.config.image_size)
        with self._inference():
            codes = self.quantizer(self._encode_latents(images)).codes  # (B, K) or (B, K, Q)
        if self.quantizer.num_levels > 1:
            codes = rearrange(codes, "b n q -> b q n")  # (B, Q, K)
        return Tokens(codes, self.token_spec)

    @torch.no_grad()
    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """`Tokens` (or codes `(B, K)`, `(B, Q, K)` for a residual quantizer) → images
        `(B, 3, H, W)`, about [-1, 1] (not clamped). `Tokens` with `lengths (B,)` decode each
        row from its prefix: the codes past it (padding, any value) are replaced by
        the mask token, as tail drop trains (see the module docstring)."""
        codes = self._codes(tokens)
        lengths = tokens.lengths if isinstance(tokens, Tokens) else None
        count, levels = self.config.num_tokens, self.quantizer.num_levels
        expected = (count,) if levels == 1 else (levels, count)
        if codes.ndim != len(expected) + 1 or tuple(codes.shape[1:]) != expected:
            raise ValueError(
                f"titok expected codes (B, {', '.join(map(str, expected))}), got shape "
                f"{tuple(codes.shape)}"
            )
        if lengths is not None:
            lengths = check_lengths(self.name, lengths, len(codes), count, codes.device)
            keep = torch.arange(count, device=codes.device) < lengths[:, None]  # (B, K)
            codes = codes.masked_fill(~(keep if levels == 1 else keep[:, None]), 0)
        if levels > 1:
            codes = rearrange(codes, "b q n -> b n q")  # (B, K, Q)
        return self._decode_quantized(self.quantizer.decode(codes), lengths)
