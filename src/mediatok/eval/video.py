"""Full-reference video metrics: per-frame PSNR and SSIM, temporal consistency, and the frames'
Inception features for frame FID. FVD, the distribution metric of video, is in `eval/i3d.py`.

Layout: videos are `(B, C, T, H, W)` (what a video codec takes and returns), float in [-1, 1]
by default; pass `data_range=255` for uint8 videos, as for `eval/image.py`, whose `psnr` and
`ssim` score every frame here (frames folded into the batch). Padded videos take `lengths`
`(B,)`, the number of real frames of each; the frames past it are ignored, whatever they hold.

- `frame_psnr`: the mean over frames of each frame's PSNR, the convention of video codec and
  tokenizer tables, not the PSNR of the video's mean MSE. The two differ: −log is convex, so the
  per-frame mean is the higher (Jensen), markedly so when a few frames are much worse than the
  rest. A frame reproduced exactly has PSNR `inf`, and so has its video's mean (see
  `eval/image.py`'s `psnr`).
- `frame_ssim`: the mean over frames of each frame's SSIM (Wang et al. 2004, as `ssim`).
- `temporal_consistency`: flicker, the mean absolute difference between the frame-to-frame
  changes `x[t+1] − x[t]` of prediction and target: 0 for a perfect reconstruction, and for any
  error constant in time; it grows when the error changes from frame to frame.
- `frame_features`: every real frame's 2048-d Inception features, for `fid_from_features`
  (frame FID: the frames of all videos scored as one image set).

Every metric returns `(B,)` float32 (float64 when an input is float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mediatok.eval.fid import InceptionFeatures
from mediatok.eval.image import psnr, ssim


def _check_videos(
    prediction: torch.Tensor, target: torch.Tensor | None = None, name: str = "prediction"
) -> None:
    """Raise unless the videos are `(B, C, T, H, W)` tensors of one shape."""
    pairs = [(name, prediction)] + ([("target", target)] if target is not None else [])
    for label, video in pairs:
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"expected {label} to be a torch.Tensor, got {type(video).__name__}")
        if video.ndim != 5:
            raise ValueError(
                f"expected {label} of shape (B, C, T, H, W), got {tuple(video.shape)} "
                f"({video.ndim} dims)"
            )
    if target is not None and prediction.shape != target.shape:
        raise ValueError(
            f"expected prediction and target of one shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )


def _frame_mask(
    lengths: torch.Tensor | Sequence[int] | None, batch: int, frames: int, device: torch.device
) -> torch.Tensor:
    """`(B, T)` bool, True on each video's real frames; checks `1 <= lengths <= T`."""
    if lengths is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(
            f"expected lengths of shape ({batch},) with integer frame counts, got "
            f"{tuple(lengths.shape)} {lengths.dtype}"
        )
    if batch and (lengths.min() < 1 or lengths.max() > frames):
        raise ValueError(
            f"expected lengths from 1 to {frames} (the frames per video), got "
            f"{lengths.min().item()} to {lengths.max().item()}"
        )
    return torch.arange(frames, device=device) < lengths.unsqueeze(1)  # (B, T)


def _fold_frames(videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(B, C, T, H, W)` → the real frames `(N, C, H, W)`, video by video, in time order."""
    frames = videos.transpose(1, 2)  # (B, T, C, H, W)
    return frames[mask]  # (N, C, H, W), N = mask.sum()


def _mean_per_video(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame `scores (N,)` of the frames `mask (B, T)` selects → their mean per video."""
    video_of_frame = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)
    totals = torch.zeros(mask.shape[0], dtype=torch.float64, device=scores.device)
    totals.index_add_(0, video_of_frame[mask].to(scores.device), scores.double())
    return (totals / mask.sum(dim=1).to(scores.device)).to(scores.dtype)  # (B,)


def frame_psnr(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 2.0,
    *,
    lengths: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Mean over frames of the per-frame PSNR, in dB.

    Args:
        prediction: `(B, C, T, H, W)` float in [-1, 1] by default, or uint8 with
            `data_range=255`.
        target: same shape as `prediction`.
        data_range: highest minus lowest possible value: 2 for [-1, 1], 1 for [0, 1], 255 for
            uint8.
        lengths: `(B,)` real frames per video (1 to T); frames past them are ignored. All T if
            None.

    Returns:
        `(B,)` mean PSNR per video; `inf` where a frame is reproduced exactly.
    """
    _check_videos(prediction, target)
    mask = _frame_mask(lengths, prediction.shape[0], prediction.shape[2], prediction.device)
    scores = psnr(_fold_frames(prediction, mask), _fold_frames(target, mask), data_range)  # (N,)
    return _mean_per_video(scores, mask)


def frame_ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 2.0,
    *,
    low: float | None = None,
    lengths: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Mean over frames of the per-frame SSIM (`eval/image.py`'s `ssim`: Wang et al. 2004,
    11×11 Gaussian window, per RGB channel, pixels measured from black).

    Args:
        prediction: `(B, C, T, H, W)` float in [-1, 1] by default, or uint8 with
            `data_range=255`; H and W at least 11.
        target: same shape as `prediction`.
        data_range: highest minus lowest possible value: 2 for [-1, 1], 1 for [0, 1], 255 for
            uint8.
        low: the value of black; default −1 for `data_range=2`, else 0 (see `ssim`).
        lengths: `(B,)` real frames per video (1 to T); frames past them are ignored. All T if
            None.

    Returns:
        `(B,)` mean SSIM per video, 1 for identical videos.
    """
    _check_videos(prediction, target)
    mask = _frame_mask(lengths, prediction.shape[0], prediction.shape[2], prediction.device)
    folded = _fold_frames(prediction, mask), _fold_frames(target, mask)
    return _mean_per_video(ssim(*folded, data_range, low=low), mask)


def temporal_consistency(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    lengths: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Temporal flicker: `mean |(p[t+1] − p[t]) − (x[t+1] − x[t])|` over the real frame pairs,
    channels and pixels of each video.

    In the videos' own units (for [-1, 1] videos a change of the full range is 2; uint8 videos
    give 127.5 times the number of the same videos in [-1, 1]); divide by the data range for a
    range-free number. Lower is better: 0 for a perfect reconstruction and for an error that is
    constant in time.

    Args:
        prediction: `(B, C, T, H, W)`, float or uint8 (differences are taken in float, without
            wrap-around).
        target: same shape as `prediction`.
        lengths: `(B,)` real frames per video (1 to T); pairs reaching past them are ignored.
            All T if None.

    Returns:
        `(B,)` per video; NaN for a video of one frame, where no frame pair exists (an undefined
        score the caller reports, not a 0 that would read as perfect).
    """
    _check_videos(prediction, target)
    for name, video in (("prediction", prediction), ("target", target)):
        if video.is_complex() or video.dtype == torch.bool:
            raise TypeError(
                f"expected {name} to be a real float or integer tensor, got {video.dtype}"
            )
    batch, _, frames = prediction.shape[:3]
    mask = _frame_mask(lengths, batch, frames, prediction.device)
    dtype = torch.float64 if torch.float64 in (prediction.dtype, target.dtype) else torch.float32
    # The error's change over time: (p[t+1] − x[t+1]) − (p[t] − x[t]), the same number as the
    # difference of the two videos' frame differences.
    error = prediction.to(dtype) - target.to(dtype)  # (B, C, T, H, W)
    flicker = (error[:, :, 1:] - error[:, :, :-1]).abs()  # (B, C, T − 1, H, W)
    per_pair = flicker.transpose(1, 2).flatten(2).mean(dim=2, dtype=torch.float64)  # (B, T − 1)
    pairs = mask[:, 1:]  # pair (t, t + 1) is real when frame t + 1 is
    total = per_pair.masked_fill(~pairs, 0).sum(dim=1)  # (B,)
    count = pairs.sum(dim=1)
    # 0 / 0 = NaN for one-frame videos: undefined, by design.
    return (total / count).to(dtype)


def frame_features(
    inception: InceptionFeatures,
    videos: torch.Tensor,
    *,
    lengths: torch.Tensor | Sequence[int] | None = None,
    batch_size: int = 50,
) -> torch.Tensor:
    """The standard FID Inception's `pool_3` features of every real frame, for frame FID:
    `fid_from_features(frame_features(model, a), frame_features(model, b))`.

    Args:
        inception: an `InceptionFeatures` (the FID network; its weights load when it is built,
            never at import).
        videos: `(B, 3, T, H, W)` uint8, or float in [-1, 1] (quantized to uint8 levels, as
            `InceptionFeatures` does for images); any H, W.
        lengths: `(B,)` real frames per video (1 to T); padded frames are left out. All T if
            None.
        batch_size: frames per forward pass.

    Returns:
        `(N, 2048)` float64 on the CPU, one row per real frame, video by video in time order.
    """
    _check_videos(videos, name="videos")
    if videos.shape[1] != 3:
        raise ValueError(f"expected RGB videos (B, 3, T, H, W), got {tuple(videos.shape)}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"expected batch_size >= 1, got {batch_size!r}")
    mask = _frame_mask(lengths, videos.shape[0], videos.shape[2], videos.device)
    frames = _fold_frames(videos, mask)  # (N, 3, H, W)
    rows = [inception.features(chunk).cpu() for chunk in frames.split(batch_size)]
    if not rows:
        raise ValueError(f"expected at least one frame, got videos of shape {tuple(videos.shape)}")
    return torch.cat(rows)  # (N, 2048)
