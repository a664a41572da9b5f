"""What the video codecs share: input checks and masking past each item's length."""

from __future__ import annotations

import torch


def check_video(where: str, video: torch.Tensor, spatial_compression: int) -> torch.Tensor:
    """A float `(B, 3, T, H, W)` view of `video` (images `(B, 3, H, W)`: T = 1), or a
    TypeError / ValueError saying what was expected (`where`: "causal_video.encode").

    H and W must be positive multiples of `spatial_compression`; T at least 1.
    """
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{where} expected a tensor of videos, got {type(video).__name__}")
    if video.ndim not in (4, 5) or video.shape[1] != 3 or min(video.shape) < 1:
        raise ValueError(
            f"{where} expected videos (B, 3, T, H, W) or images (B, 3, H, W) in [-1, 1], got "
            f"shape {tuple(video.shape)}"
        )
    if not video.is_floating_point():
        raise ValueError(f"{where} expected float videos in [-1, 1], got dtype {video.dtype}")
    height, width = video.shape[-2:]
    if height % spatial_compression or width % spatial_compression:
        raise ValueError(
            f"{where} expected H and W to be multiples of the spatial compression "
            f"{spatial_compression}, got {height}×{width}"
        )
    return video if video.ndim == 5 else video[:, :, None]  # (B, 3, T, H, W)


def check_lengths(
    where: str,
    lengths: torch.Tensor | None,
    batch: int,
    size: int,
    unit: str,
    device: torch.device,
) -> torch.Tensor | None:
    """`lengths (B,)` as int64 on `device`, checked to be integers in [1, size] (`unit`:
    "frames")."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch,) or lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(
            f"{where} expected integer lengths ({batch},) in {unit}, got dtype {lengths.dtype} "
            f"and shape {tuple(lengths.shape)}"
        )
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > size):
        raise ValueError(
            f"{where} expected lengths in [1, {size}] {unit}, got values from "
            f"{int(lengths.min())} to {int(lengths.max())}"
        )
    return lengths.to(device, torch.int64)


def mask_frames(x: torch.Tensor, lengths: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero `x` at positions `>= lengths[b]` along `dim` (1 for codes `(B, T, h, w)`, 2 for
    videos `(B, 3, T, H, W)`)."""
    beyond = torch.arange(x.shape[dim], device=x.device) >= lengths.to(x.device)[:, None]
    shape = [len(x)] + [1] * (x.ndim - 1)
    shape[dim] = x.shape[dim]
    return x.masked_fill(beyond.view(shape), 0)  # beyond: (B, T) → e.g. (B, 1, T, 1, 1)
