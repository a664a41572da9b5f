"""A causal 3-D video tokenizer after MAGVIT-v2 (Yu et al. 2023, "Language model beats diffusion:
tokenizer is key to visual generation") and the Cosmos Tokenizer (NVIDIA 2025).

A convolutional encoder, causal in time, maps a clip of 1 + 4k frames to 1 + k latent frames 8×
smaller on each side (4×8×8; 4×16×16 with one more level); one scalar quantizer of the shared
core (FSQ [8, 8, 8, 5, 5, 5], 64,000 codes, by default; LFQ with 2^18 codes as a config) turns
each latent into one code; a mirrored decoder maps the codes back to 1 + 4k frames. Because the
first frame is encoded alone (causal padding, MAGVIT-v2 §3.2), a still image is a 1-frame video
that gives one latent frame, and one model codes images and videos (joint training).

Blocks (see `layers.py`): causal 3×3×3 convs in and out; factorized residual blocks (1×3×3 space
then causal 3×1×1 time, as Cosmos); stride-2 convs to down-sample space (every level) and time
(the first log2(temporal_compression) levels, where it saves the most compute); depth-to-space
up-sampling (MAGVIT-v2) with the mirror's factors; per-frame GroupNorm; at the lowest
resolution, causal temporal attention over a window of past latent frames (Cosmos has attention
there; MAGVIT-v2 has none).

How we differ from the papers:
- time is padded with zeros, not by replicating the first frame (the other common choice, which
  spares the first frames a dark past): a 1-frame clip then meets only the last temporal tap of
  each kernel, so an image-only checkpoint inflates exactly into a video model ("last-tap
  inflation", `inflate_from_image_checkpoint`), and the cache that starts a stream is a
  constant, whatever the clip;
- nothing normalizes across frames (a GroupNorm over (C, T, H, W) would let later frames change
  earlier codes), and the temporal attention looks back a bounded window, so long videos encode
  and decode in chunks with exactly one pass's codes (`encode_long`, `decode_long`) in bounded
  memory, and a right-padded batch gives each item its own codes (`lengths`);
- residual blocks are factorized everywhere (MAGVIT-v2's are full 3×3×3); channel
  changes happen in the down- and up-samplers, so blocks need no 1×1 skip convs; the decoder has
  as many blocks per level as the encoder;
- no wavelet patching (Cosmos) and no adaptive group norm (MAGVIT-v2 decoder): the quantized
  latents enter the decoder only through its input conv;
- the adversarial, perceptual and LFQ entropy losses live in `mediatok.training` and the
  quantizer; the decoder's output is not clamped.

Frames: a clip of T frames that is not 1 + 4k is padded at its end by repeating its last frame
to the next 1 + 4k (T = 1 needs none); decoding gives 1 + 4k frames and the caller trims to the
source's count (token shards store it per sample). Spatially the model is fully convolutional:
`encode` takes any H and W that are positive multiples of the spatial compression, and the code
grid (H/8, W/8) carries the size; `image_size` (in the token geometry) is the size it was
configured and trained for.

Layout: videos `(B, 3, T, H, W)` float in [-1, 1] (images `(B, 3, H, W)` are taken as 1-frame
videos); latents `(B, D, T', h, w)` channel-first in the encoder and decoder, channel-last
`(B, T', h, w, D)` in the quantizer; codes `(B, T', h, w)` int64 (token layout "T H W") with
T' = 1 + ceil((T − 1) / 4), h = H / 8, w = W / 8.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.codecs.base import Codec, CodecOutput, Tokens, register_codec
from mediatok.codecs.video.common import check_lengths, check_video, mask_frames
from mediatok.codecs.video.layers import (
    CausalConv3d,
    CausalLayer,
    CausalTemporalAttention,
    FactorizedResBlock,
    FrameCache,
    FrameGroupNorm,
    SpaceTimeDownsample,
    SpaceTimeUpsample,
)
from mediatok.quantize import QuantizerConfig
from mediatok.tokens import TokenSpec


def _default_quantizer() -> QuantizerConfig:
    return QuantizerConfig("fsq", {"levels": [8, 8, 8, 5, 5, 5]})


@dataclass
class CausalVideoConfig:
    """Causal video tokenizer settings (defaults: 4×8×8, 17 × 128² → 5 × 16 × 16 codes).

    Attributes:
        image_size: H = W of the frames it is configured (trained) for; a multiple of the
            spatial compression. `encode` takes other multiples too (see the module docstring).
        channels: base width of the encoder and decoder.
        channel_mult: width multiplier per resolution, highest first; its length sets the
            spatial compression 2^(len − 1): (1, 2, 2, 4) is 8, (1, 2, 2, 4, 4) is 16.
        temporal_compression: 1, 2, 4, ...: latent frames cover this many frames (after the
            first); time is halved at the first log2 of it resolutions, so at most
            the spatial compression.
        num_res_blocks: factorized residual blocks per resolution, encoder and decoder alike.
        attention_layers: causal temporal attention blocks at the lowest resolution, between
            the two middle residual blocks of the encoder and of the decoder; 0 for none.
        attention_heads: heads of those blocks; the lowest width must divide by it.
        attention_window: past latent frames each latent frame attends to (≥ 1).
        latent_dim: D of the latents, the quantizer's `dim` (6 = len(levels) of the default
            FSQ; 18 = log2(2^18) for LFQ; other values add the quantizer's projections).
        quantizer: a single-level kind of the shared core, built with dim = latent_dim.
        fps: the frame rate of the clips it is trained on, in the token geometry: the rate at
            which its generated samples play (encoded videos keep their own, which the token
            shards record per sample).
    """

    image_size: int = 128
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    temporal_compression: int = 4
    num_res_blocks: int = 2
    attention_layers: int = 1
    attention_heads: int = 8
    attention_window: int = 8
    latent_dim: int = 6
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)
    fps: float = 24.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        if not (0 < self.fps < float("inf")):
            raise ValueError(f"expected fps finite and > 0, got {self.fps}")
        positive = ("image_size", "channels", "num_res_blocks", "attention_heads")
        for name in (*positive, "attention_window", "latent_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        if self.attention_layers < 0:
            raise ValueError(f"expected attention_layers >= 0, got {self.attention_layers}")
        if not self.channel_mult or any(mult < 1 for mult in self.channel_mult):
            raise ValueError(
                f"expected channel_mult to be a non-empty list of positive ints, got "
                f"{list(self.channel_mult)}"
            )
        steps = self.temporal_compression.bit_length() - 1
        if self.temporal_compression < 1 or 2**steps != self.temporal_compression:
            raise ValueError(
                f"expected temporal_compression to be a power of two (1, 2, 4, ...), got "
                f"{self.temporal_compression}"
            )
        if self.temporal_compression > self.spatial_compression:
            raise ValueError(
                f"expected temporal_compression <= the spatial compression "
                f"{self.spatial_compression} (time is halved at most once per resolution), got "
                f"{self.temporal_compression}"
            )
        if self.image_size % self.spatial_compression:
            raise ValueError(
                f"expected image_size divisible by the spatial compression "
                f"{self.spatial_compression} (2^(len(channel_mult) - 1)), got {self.image_size}"
            )
        lowest = self.channels * self.channel_mult[-1]
        if self.attention_layers and lowest % self.attention_heads:
            raise ValueError(
                f"expected the lowest width (channels × channel_mult[-1] = {lowest}) divisible "
                f"by attention_heads, got {self.attention_heads}"
            )

    @property
    def spatial_compression(self) -> int:
        """f, the ratio of the frame side to the latent grid side."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def time_downsamples(self) -> tuple[bool, ...]:
        """Per resolution change (highest first): whether time is halved there too."""
        steps = self.temporal_compression.bit_length() - 1
        return tuple(level < steps for level in range(len(self.channel_mult) - 1))


class CausalVideoEncoder(nn.Module):
    """Videos `(B, 3, 1 + s·k, H, W)` → latents `(B, latent_dim, 1 + k, H/f, W/f)`.

    conv_in (causal 3×3×3); per resolution `num_res_blocks` factorized residual blocks, then a
    down-sampler (space, and time at the first levels) that also changes the width; middle:
    residual block, attention blocks, residual block; GroupNorm, SiLU, conv_out (causal 3×3×3).
    """

    def __init__(self, config: CausalVideoConfig):
        super().__init__()
        widths = [config.channels * mult for mult in config.channel_mult]
        self.conv_in = CausalConv3d(3, widths[0], (3, 3, 3))
        blocks: list[nn.Module] = []
        for level, width in enumerate(widths):
            blocks += [FactorizedResBlock(width) for _ in range(config.num_res_blocks)]
            if level < len(widths) - 1:
                time = config.time_downsamples[level]
                blocks.append(SpaceTimeDownsample(width, widths[level + 1], time))
        self.blocks = nn.ModuleList([*blocks, *_middle(widths[-1], config)])
        self.norm_out = FrameGroupNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], config.latent_dim, (3, 3, 3))

    def forward(self, video: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, 3, T, H, W)` → `(B, D, T', h, w)`; with a cache, the next chunk's latents."""
        x = self.conv_in(video, cache)  # (B, C, T, H, W)
        for block in self.blocks:
            x = block(x, cache)  # (B, C_lowest, T', h, w) at the end
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class CausalVideoDecoder(nn.Module):
    """Quantized latents `(B, latent_dim, 1 + k, h, w)` → videos `(B, 3, 1 + s·k, h·f, w·f)`.

    The encoder mirrored: conv_in; middle; per resolution, lowest first, `num_res_blocks`
    factorized residual blocks, then a depth-to-space up-sampler (time too where the encoder
    halved it) that also changes the width; GroupNorm, SiLU, conv_out.
    """

    def __init__(self, config: CausalVideoConfig):
        super().__init__()
        widths = [config.channels * mult for mult in config.channel_mult]
        self.conv_in = CausalConv3d(config.latent_dim, widths[-1], (3, 3, 3))
        blocks: list[nn.Module] = list(_middle(widths[-1], config))
        for level in reversed(range(len(widths))):
            blocks += [FactorizedResBlock(widths[level]) for _ in range(config.num_res_blocks)]
            if level > 0:
                time = config.time_downsamples[level - 1]
                blocks.append(SpaceTimeUpsample(widths[level], widths[level - 1], time))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = FrameGroupNorm(widths[0])
        self.conv_out = CausalConv3d(widths[0], 3, (3, 3, 3))

    def forward(self, quantized: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, D, T', h, w)` → `(B, 3, T, H, W)`; with a cache, the next chunk's frames."""
        x = self.conv_in(quantized, cache)  # (B, C_lowest, T', h, w)
        for block in self.blocks:
            x = block(x, cache)  # (B, C, T, H, W) at the end
        return self.conv_out(F.silu(self.norm_out(x)), cache)


def _middle(width: int, config: CausalVideoConfig) -> list[nn.Module]:
    """Residual block, `attention_layers` temporal attention blocks, residual block."""
    attention = [
        CausalTemporalAttention(width, config.attention_heads, config.attention_window)
        for _ in range(config.attention_layers)
    ]
    return [FactorizedResBlock(width), *attention, FactorizedResBlock(width)]


@register_codec
class CausalVideoTokenizer(Codec):
    """See the module docstring and `CausalVideoConfig`."""

    name = "causal_video"
    modality = "video"
    config_class = CausalVideoConfig

    def __init__(self, config: CausalVideoConfig):
        super().__init__()
        self.config = config
        self.encoder = CausalVideoEncoder(config)
        self.quantizer = config.quantizer.build(config.latent_dim)
        if self.quantizer.num_levels != 1:
            raise ValueError(
                f"causal_video expected a single-level quantizer (token layout 'T H W'), got "
                f"{config.quantizer.kind!r} with {self.quantizer.num_levels} levels"
            )
        self.decoder = CausalVideoDecoder(config)
        for name, module in self.named_modules():
            if isinstance(module, CausalLayer):
                module.cache_key = name

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec(
            vocab_sizes=list(self.quantizer.codebook_sizes),
            layout="T H W",
            geometry={
                "image_size": self.config.image_size,
                "temporal_compression": self.config.temporal_compression,
                "spatial_compression": self.config.spatial_compression,
                "fps": self.config.fps,
                "channels": 3,
            },
        )

    def latent_frames(self, frames: int | torch.Tensor) -> int | torch.Tensor:
        """T' = 1 + ceil((T − 1) / temporal_compression): latent frames of a T-frame clip (an
        int, or an int64 tensor of them)."""
        return 1 + -(-(frames - 1) // self.config.temporal_compression)

    def forward(self, video: torch.Tensor) -> CodecOutput:
        """Reconstruct `video (B, 3, T, H, W)` (or images `(B, 3, H, W)`) through the codes
        (training). Frames are padded to 1 + 4k as in `encode` and the reconstruction trimmed.

        Returns:
            `CodecOutput`: reconstruction shaped like `video`, and the quantizer's output
            (quantized `(B, T', h, w, D)`, codes `(B, T', h, w)`, losses, metrics).
        """
        clip = self._check_video(video, "forward")
        padded = self._pad_frames(clip, None)
        out = self.quantizer(rearrange(self.encoder(padded), "b d t h w -> b t h w d"))
        reconstruction = self._decode_quantized(out.quantized)[:, :, : clip.shape[2]]
        return CodecOutput(reconstruction.reshape(video.shape), out)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """Videos → codes in one pass (`encode_long` bounds the memory of long videos).

        Args:
            video: `(B, 3, T, H, W)` float in [-1, 1] (any float dtype; cast to the weights'),
                or images `(B, 3, H, W)` as 1-frame videos; H and W positive multiples of the
                spatial compression. T is padded to 1 + 4k by repeating the last frame.
            lengths: `(B,)` valid frames per item of a right-padded batch, or None (all T). Each
                item then gets the codes it would get alone; codes past its latent frames are 0.

        Returns:
            `Tokens` with codes `(B, T', H/f, W/f)` int64, T' = 1 + ceil((T − 1) / 4), and,
            with `lengths`, `lengths` 1 + ceil((lengths − 1) / 4).
        """
        return self._encode(video, None, lengths, "encode")

    @torch.no_grad()
    def encode_long(
        self, video: torch.Tensor, chunk_frames: int = 32, lengths: torch.Tensor | None = None
    ) -> Tokens:
        """Videos → codes in chunks of `chunk_frames` frames (after the first frame, which the
        first chunk adds), each layer carrying its past over in a `FrameCache`: the codes equal
        `encode`'s, while activation memory is bounded by the chunk.

        Args:
            video, lengths: as in `encode`.
            chunk_frames: a positive multiple of `temporal_compression`.

        Returns:
            As `encode`.
        """
        step = self.config.temporal_compression
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int):
            raise TypeError(
                f"causal_video.encode_long expected chunk_frames to be an int, got "
                f"{type(chunk_frames).__name__} {chunk_frames!r}"
            )
        if chunk_frames < 1 or chunk_frames % step:
            raise ValueError(
                f"causal_video.encode_long expected chunk_frames to be a positive multiple of "
                f"temporal_compression {step}, got {chunk_frames}"
            )
        return self._encode(video, chunk_frames, lengths, "encode_long")

    def _encode(
        self, video: torch.Tensor, chunk: int | None, lengths: torch.Tensor | None, caller: str
    ) -> Tokens:
        clip = self._check_video(video, caller)
        lengths = check_lengths(
            f"{self.name}.{caller}", lengths, len(clip), clip.shape[2], "frames", clip.device
        )
        padded = self._pad_frames(clip, lengths)  # (B, 3, 1 + 4k, H, W)
        with self._inference():
            codes = [self.quantizer(latents).codes for latents in self._latents(padded, chunk)]
        codes = torch.cat(codes, dim=1)  # (B, T', h, w)
        if lengths is None:
            return Tokens(codes, self.token_spec)
        latent_lengths = self.latent_frames(lengths)  # (B,)
        return Tokens(mask_frames(codes, latent_lengths, dim=1), self.token_spec, latent_lengths)

    def _latents(self, padded: torch.Tensor, chunk: int | None) -> Iterator[torch.Tensor]:
        """Channel-last latents `(B, t, h, w, D)` of `padded (B, 3, 1 + 4k, H, W)`: all at once
        (`chunk` None) or per chunk of `chunk` frames after the first frame, through one cache."""
        if chunk is None:
            yield rearrange(self.encoder(padded), "b d t h w -> b t h w d")
            return
        cache, total = FrameCache(), padded.shape[2]
        bounds = [0, *range(1 + chunk, total, chunk), total]
        for start, end in itertools.pairwise(bounds):
            latents = self.encoder(padded[:, :, start:end], cache)  # (B, D, t, h, w)
            yield rearrange(latents, "b d t h w -> b t h w d")

    @torch.no_grad()
    def decode(
        self, tokens: Tokens | torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Codes → videos in one pass (`decode_long` bounds the memory of long videos).

        Args:
            tokens: `Tokens` or codes `(B, T', h, w)`.
            lengths: `(B,)` valid latent frames per item (default: `tokens.lengths`); each item
                then gets the frames it would get alone, zero past 1 + 4·(lengths − 1).

        Returns:
            Videos `(B, 3, 1 + 4·(T' − 1), h·f, w·f)`, about [-1, 1] (not clamped); the caller
            trims to the source's frame count.
        """
        return self._decode(tokens, None, lengths, "decode")

    @torch.no_grad()
    def decode_long(
        self,
        tokens: Tokens | torch.Tensor,
        chunk_latent_frames: int = 8,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Codes → videos in chunks of `chunk_latent_frames` latent frames through one
        `FrameCache`: the frames of `decode` up to float rounding, in bounded memory.

        Args:
            tokens, lengths: as in `decode`.
            chunk_latent_frames: latent frames per chunk (≥ 1).

        Returns:
            As `decode`.
        """
        if isinstance(chunk_latent_frames, bool) or not isinstance(chunk_latent_frames, int):
            raise TypeError(
                f"causal_video.decode_long expected chunk_latent_frames to be an int, got "
                f"{type(chunk_latent_frames).__name__} {chunk_latent_frames!r}"
            )
        if chunk_latent_frames < 1:
            raise ValueError(
                f"causal_video.decode_long expected chunk_latent_frames >= 1, got "
                f"{chunk_latent_frames}"
            )
        return self._decode(tokens, chunk_latent_frames, lengths, "decode_long")

    def _decode(
        self,
        tokens: Tokens | torch.Tensor,
        chunk: int | None,
        lengths: torch.Tensor | None,
        caller: str,
    ) -> torch.Tensor:
        codes = self._codes(tokens)
        if codes.ndim != 4 or min(codes.shape[1:]) < 1:
            raise ValueError(
                f"causal_video.{caller} expected codes (B, T', h, w) with T', h, w >= 1, got "
                f"shape {tuple(codes.shape)}"
            )
        if lengths is None and isinstance(tokens, Tokens):
            lengths = tokens.lengths
        total = codes.shape[1]
        lengths = check_lengths(
            f"{self.name}.{caller}", lengths, len(codes), total, "latent frames", codes.device
        )
        if lengths is not None:
            codes = mask_frames(codes, lengths, dim=1)  # padding codes may be anything
        if chunk is None:
            video = self._decode_quantized(self.quantizer.decode(codes))
        else:
            cache = FrameCache()
            video = torch.cat(
                [
                    self._decode_quantized(
                        self.quantizer.decode(codes[:, start : start + chunk]), cache
                    )
                    for start in range(0, total, chunk)
                ],
                dim=2,
            )  # (B, 3, 1 + 4·(T' − 1), H, W)
        if lengths is None:
            return video
        return mask_frames(video, 1 + self.config.temporal_compression * (lengths - 1), dim=2)

    def _decode_quantized(
        self, quantized: torch.Tensor, cache: FrameCache | None = None
    ) -> torch.Tensor:
        """Channel-last `(B, T', h, w, D)` → videos `(B, 3, T, H, W)`."""
        quantized = rearrange(quantized, "b t h w d -> b d t h w")  # (B, D, T', h, w)
        return self.decoder(quantized.to(self.decoder.conv_in.conv.weight.dtype), cache)

    def _pad_frames(self, clip: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """`(B, 3, T, H, W)` → `(B, 3, 1 + 4k, H, W)`: each item's frames past its length (T
        without lengths) replaced by its last frame, up to the next 1 + 4k."""
        frames = clip.shape[2]
        total = 1 + (self.latent_frames(frames) - 1) * self.config.temporal_compression
        if lengths is None:
            if total == frames:
                return clip
            return torch.cat([clip, clip[:, :, -1:].expand(-1, -1, total - frames, -1, -1)], 2)
        last = (lengths - 1)[:, None]  # (B, 1)
        index = torch.minimum(torch.arange(total, device=clip.device)[None, :], last)  # (B, 1 + 4k)
        index = index[:, None, :, None, None].expand(-1, 3, -1, *clip.shape[3:])
        return torch.gather(clip, 2, index)

    def _check_video(self, video: torch.Tensor, caller: str) -> torch.Tensor:
        """`check_video`, then the weights' dtype: `(B, 3, T, H, W)`."""
        clip = check_video(f"{self.name}.{caller}", video, self.config.spatial_compression)
        return clip.to(self.encoder.conv_in.conv.weight.dtype)
