"""Causal 3-D building blocks of the video codecs: a conv causal in time, a per-frame GroupNorm,
a factorized residual block, strided down-sampling, depth-to-space up-sampling and windowed
causal temporal attention.

Every block computes output frame t from input frames ≤ t only, and nothing normalizes across
frames, so that

- padding appended after a clip's end never reaches its earlier frames (a right-padded batch
  gives each item what it would get alone, up to its own last latent frame);
- a clip cut into chunks gives exactly the frames of one pass when each block keeps what it
  still needs of the past in a `FrameCache` (a conv's last input frames, an attention layer's
  last keys and values, whether the up-sampler has dropped its first frame), under its module
  name (`cache_key`, set by the model).

Time is padded with zeros (k − 1 frames of them before the first frame, none after), not by
replicating the first frame: a 1-frame clip then meets only the last temporal tap of each kernel,
so an image model's weights inflate exactly into a video model by keeping those taps (see
`inflate.py`), and the cache of a fresh stream is a constant, whatever the clip.

Layout: `(B, C, T, H, W)` throughout; the attention reads `(B·H·W, T, C)` inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class FrameCache:
    """What a causal pass carries from one chunk of frames to the next (internal to
    `encode_long` / `decode_long`; one cache per pass, never shared).

    Attributes:
        tails: per layer, by module name: a causal conv's input frames its next window still
            needs `(B, C, ≤ k − 1, H, W)`; an attention layer's last keys and values
            `(2, B·H·W, heads, ≤ window, head_dim)`.
        started: layers that have seen a chunk (a temporal up-sampler drops its first output
            frame once per stream).
    """

    tails: dict[str, torch.Tensor] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)


class CausalLayer(nn.Module):
    """A block that keeps state in a `FrameCache`; its model sets `cache_key` to its name."""

    cache_key: str = ""


class CausalConv3d(CausalLayer):
    """Conv3d, causal in time, "same" zero padding in space.

    Output frame j ends at input frame j·s (s the time stride) and sees input frames
    [j·s − k + 1, j·s], zeros before frame 0: T = 1 + s·m input frames give 1 + m output frames,
    the first computed from frame 0 alone. With a cache, the input frames the next window needs
    are kept, so chunks of any length (each yielding at least one frame) give one pass's frames.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel: (k_t, k_h, k_w); k_h and k_w odd.
        stride: (s_t, s_h, s_w).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
    ):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel, stride, padding=(0, kernel[1] // 2, kernel[2] // 2)
        )
        self.time_kernel, self.time_stride = kernel[0], stride[0]

    def forward(self, x: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, C_in, T, H, W)` → `(B, C_out, T', H / s_h, W / s_w)`: T' = 1 + (T − 1) // s_t in
        one pass; with a cache, the windows that end in this chunk."""
        kernel, stride = self.time_kernel, self.time_stride
        if kernel == 1 and stride == 1:
            return self.conv(x)  # per frame: nothing to pad or keep
        if cache is None:
            return self.conv(F.pad(x, (0, 0, 0, 0, kernel - 1, 0)))  # (B, C, k − 1 + T, H, W)
        tail = cache.tails.get(self.cache_key)
        if tail is None:  # the zeros of the one-pass padding
            tail = x.new_zeros(*x.shape[:2], kernel - 1, *x.shape[3:])
        x = torch.cat([tail, x], dim=2)  # (B, C, tail + T, H, W)
        windows = (x.shape[2] - kernel) // stride + 1
        assert windows >= 1, "a chunk must give every layer at least one frame"
        cache.tails[self.cache_key] = x[:, :, windows * stride :].clone()
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (channels of a group, H, W) of each frame separately: statistics never
    mix frames (so the past never sees the future, and a chunk is normalized as in one pass).
    Statistics in fp32 whatever the autocast; 32 groups where the channels allow it."""

    def __init__(self, channels: int):
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        super().__init__(groups, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, T, H, W)` → same."""
        batch, channels, frames, height, width = x.shape
        groups = x.reshape(batch, self.num_groups, -1, frames, height, width).float()
        variance, mean = torch.var_mean(groups, dim=(2, 4, 5), correction=0, keepdim=True)
        normalized = ((groups - mean) * torch.rsqrt(variance + self.eps)).to(x.dtype)
        normalized = normalized.reshape(batch, channels, frames, height, width)
        shape = (1, channels, 1, 1, 1)
        return normalized * self.weight.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)


class FactorizedResBlock(nn.Module):
    """x + temporal(SiLU(norm(spatial(SiLU(norm(x)))))): a 1×3×3 conv for space then a causal
    3×1×1 conv for time (Cosmos's factorized block): 12·C² weights where two 3×3×3 convs
    have 54·C²."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(channels)
        self.spatial = CausalConv3d(channels, channels, (1, 3, 3))
        self.norm2 = FrameGroupNorm(channels)
        self.temporal = CausalConv3d(channels, channels, (3, 1, 1))

    def forward(self, x: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, C, T, H, W)` → same."""
        h = self.spatial(F.silu(self.norm1(x)))
        return x + self.temporal(F.silu(self.norm2(h)), cache)


class SpaceTimeDownsample(nn.Module):
    """Halve H and W with a stride-2 1×3×3 conv (C_in → C_out), then, if `time`, halve the frames
    after the first with a causal stride-2 3×1×1 conv: T = 1 + 2m → 1 + m."""

    def __init__(self, in_channels: int, out_channels: int, time: bool):
        super().__init__()
        self.space = CausalConv3d(in_channels, out_channels, (1, 3, 3), (1, 2, 2))
        self.time = CausalConv3d(out_channels, out_channels, (3, 1, 1), (2, 1, 1)) if time else None

    def forward(self, x: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, C_in, T, H, W)` → `(B, C_out, T or 1 + (T − 1) / 2, H / 2, W / 2)`."""
        x = self.space(x)
        return x if self.time is None else self.time(x, cache)


class SpaceTimeUpsample(CausalLayer):
    """Depth-to-space (MAGVIT-v2 §3.2): a 1×3×3 conv to C_out·(2·)2·2 channels, rearranged into
    twice the H and W (and, if `time`, twice the frames; the first output frame is dropped, so
    1 + m frames give 1 + 2m and the first stays alone). ICNR initialization: every sub-position
    starts with the same weights, i.e. as nearest-neighbour up-sampling followed by a conv (no
    checkerboard at init)."""

    def __init__(self, in_channels: int, out_channels: int, time: bool):
        super().__init__()
        self.time_factor = 2 if time else 1
        factor = self.time_factor * 4
        self.conv = CausalConv3d(in_channels, out_channels * factor, (1, 3, 3))
        with torch.no_grad():  # (C_out·f, C_in, 1, 3, 3): channel c·f + i copies channel c
            weight = self.conv.conv.weight[::factor].repeat_interleave(factor, dim=0)
            self.conv.conv.weight.copy_(weight)
            self.conv.conv.bias.copy_(self.conv.conv.bias[::factor].repeat_interleave(factor))

    def forward(self, x: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, C_in, T, H, W)` → `(B, C_out, T or 2T − 1 (first chunk) or 2T, 2H, 2W)`."""
        x = rearrange(
            self.conv(x),
            "b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)",
            pt=self.time_factor,
            ph=2,
            pw=2,
        )  # (B, C_out, T·f_t, 2H, 2W)
        if self.time_factor == 1:
            return x
        if cache is not None:
            if self.cache_key in cache.started:
                return x
            cache.started.add(self.cache_key)
        return x[:, :, 1:]  # the frame before frame 0


class CausalTemporalAttention(CausalLayer):
    """Pre-LayerNorm multi-head self-attention along time at each spatial position, residual:
    frame t attends to frames [t − window, t] of the same (h, w). LayerNorm over channels (per
    position and frame). No positional encoding: positions come from the causal convs around
    it, and a static clip gives every frame the same output (which last-tap inflation relies
    on). A cache keeps the last `window` keys and values, so streaming state stays bounded.

    Args:
        dim: C; divisible by `heads`.
        heads: attention heads.
        window: past frames each frame sees (≥ 1).
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: FrameCache | None = None) -> torch.Tensor:
        """`(B, C, T, H, W)` → same."""
        batch, _, frames, height, width = x.shape
        tokens = rearrange(x, "b c t h w -> (b h w) t c")  # (N, T, C)
        q, k, v = rearrange(
            self.qkv(self.norm(tokens)), "n t (three h d) -> three n h t d", three=3, h=self.heads
        )  # (N, heads, T, d) each
        if cache is not None:
            tail = cache.tails.get(self.cache_key)
            if tail is not None:
                k, v = torch.cat([tail[0], k], dim=2), torch.cat([tail[1], v], dim=2)
            cache.tails[self.cache_key] = torch.stack(
                [k[:, :, -self.window :], v[:, :, -self.window :]]
            )  # (2, N, heads, ≤ window, d)
        past = k.shape[2] - frames  # keys before the first query
        offset = torch.arange(k.shape[2], device=x.device) - past  # key position − query 0's
        offset = offset - torch.arange(frames, device=x.device)[:, None]  # (T, past + T)
        mask = (offset <= 0) & (offset >= -self.window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, T, d)
        out = self.proj(rearrange(out, "n h t d -> n t (h d)"))  # (N, T, C)
        return x + rearrange(out, "(b h w) t c -> b c t h w", b=batch, h=height, w=width)
