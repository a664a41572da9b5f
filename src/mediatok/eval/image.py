"""Full-reference image metrics: PSNR and SSIM, one value per image.

Layout: images are `(B, C, H, W)`. By default they are float in [-1, 1] (what the image codecs
take and return), so the data range, the distance from the lowest to the highest value, is 2;
pass `data_range=255` for uint8 images (or floats in [0, 255]) and `data_range=1` for [0, 1].
Neither metric clamps or quantizes: whether a reconstruction is scored before or after rounding
to uint8 is the caller's choice, and it changes the numbers.

SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity", §III-C): an 11×11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, population
(not sample) variances, computed on each RGB channel separately and averaged over channels —
no conversion to luma. Its luminance term compares local means as measured from zero, so SSIM,
unlike PSNR, changes when all pixels shift: the standard values (the paper, scikit-image on
uint8 images, published tables) measure pixels from black. `ssim` therefore measures from the
bottom of the range, `low`: −1 for the default [-1, 1] images, 0 for uint8 or [0, 1] (see
`ssim`). Computed on raw [-1, 1] values, SSIM would differ from the standard one (mostly
lower, markedly so in mid-grey regions, where the means are near zero).

On images already measured from black it equals `skimage.metrics.structural_similarity(...,
channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)`.
Borders: scikit-image filters with reflected borders and then drops a 5-pixel strip on every
side before averaging, so only windows that lie wholly inside the image count. We compute exactly
those windows ("valid" convolution, no padding), which gives the same mean without inventing
border pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> None:
    """Raise unless both are `(B, C, H, W)` real tensors of one shape and the range is positive."""
    for name, image in (("prediction", prediction), ("target", target)):
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"expected {name} to be a torch.Tensor, got {type(image).__name__}")
        if image.ndim != 4:
            raise ValueError(
                f"expected {name} of shape (B, C, H, W), got {tuple(image.shape)} "
                f"({image.ndim} dims)"
            )
        if image.is_complex() or image.dtype == torch.bool:
            raise TypeError(
                f"expected {name} to be a real float or integer tensor, got {image.dtype}"
            )
    if prediction.shape != target.shape:
        raise ValueError(
            f"expected prediction and target of one shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    if not (isinstance(data_range, int | float) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"expected a finite data_range > 0, got {data_range!r}")
    # uint8 pixels span 0–255 whatever the range says: with the default (2, for [-1, 1] floats)
    # the scores would be silently wrong (PSNR by 42 dB).
    if torch.uint8 in (prediction.dtype, target.dtype) and data_range != 255:
        raise ValueError(
            f"expected data_range=255 for uint8 images, got {data_range!r} (convert both to "
            f"floats in the range you give, or pass data_range=255)"
        )


def _work_dtype(*images: torch.Tensor) -> torch.dtype:
    # float64 stays float64 (a caller asking for it wants the precision); everything else,
    # uint8 and half precision included, runs in float32: bf16 would wreck the variances.
    return torch.float64 if any(image.dtype == torch.float64 for image in images) else torch.float32


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in dB.

    `10 · log10(data_range² / MSE)`, with the MSE taken over all channels and pixels of one
    image. Identical images give `inf` (the MSE is 0), not a capped value: averaging an `inf`
    over a dataset makes a perfect reconstruction visible instead of hiding it behind an
    arbitrary ceiling; filter with `torch.isfinite` if a finite mean is needed.

    Args:
        prediction: `(B, C, H, W)` float in [-1, 1] by default, or uint8 with `data_range=255`.
        target: same shape as `prediction`.
        data_range: highest minus lowest possible value: 2 for [-1, 1], 1 for [0, 1], 255 for
            uint8.

    Returns:
        `(B,)` float32 (float64 if an input is float64) PSNR per image; `inf` where the images
        are identical.
    """
    _check_pair(prediction, target, data_range)
    dtype = _work_dtype(prediction, target)
    difference = prediction.to(dtype) - target.to(dtype)  # (B, C, H, W); exact for uint8 inputs
    # Accumulate the mean in float64: millions of squared errors summed in float32 drift.
    mse = difference.square().flatten(1).mean(dim=1, dtype=torch.float64)  # (B,)
    return (10 * torch.log10(data_range**2 / mse)).to(dtype)


def _gaussian_window(
    size: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The normalized 1-D Gaussian taps `(size,)`; the 2-D window is their outer product."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 2.0,
    *,
    low: float | None = None,
) -> torch.Tensor:
    """Structural similarity of each image (Wang et al. 2004), averaged over its channels.

    Each channel (R, G and B for colour images, not luma) gets its own SSIM map from an 11×11
    Gaussian window (σ = 1.5) over the valid region, i.e. the windows that fit inside the image,
    so H and W must be at least 11; the per-image value is the mean over channels and positions.
    Pixels are measured from `low` (black) in units of `data_range`, which gives the standard
    SSIM: `ssim(x, y)` on [-1, 1] images equals scikit-image's `structural_similarity` on the
    same images as uint8 (up to rounding), and `ssim(x, y, 255)` on uint8 equals it exactly.

    Args:
        prediction: `(B, C, H, W)` float in [-1, 1] by default, or uint8 with `data_range=255`.
        target: same shape as `prediction`.
        data_range: highest minus lowest possible value: 2 for [-1, 1], 1 for [0, 1], 255 for
            uint8. It sets the stabilizing constants `C1 = (K1·L)²`, `C2 = (K2·L)²`.
        low: the lowest possible value (black). Default: −1 when `data_range` is 2 (the [-1, 1]
            images of mediatok), else 0 (uint8 with 255, [0, 1] with 1). Pass it for any other
            range, e.g. `low=-0.5` for [-0.5, 0.5].

    Returns:
        `(B,)` float32 (float64 if an input is float64) SSIM per image, 1 for identical images.
    """
    _check_pair(prediction, target, data_range)
    height, width = prediction.shape[-2:]
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(
            f"expected images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels for the "
            f"{SSIM_WINDOW}×{SSIM_WINDOW} SSIM window, got {height}×{width}"
        )
    if low is None:
        low = -1.0 if data_range == 2 else 0.0
    if not (isinstance(low, int | float) and math.isfinite(low)):
        raise ValueError(f"expected a finite low (the value of black), got {low!r}")
    dtype = _work_dtype(prediction, target)
    # Measured from black in units of the range: x ∈ [0, 1], L = 1 (see the module docstring).
    # Unit scale also keeps E[x²] − E[x]² clear of float32 cancellation for uint8-range inputs;
    # SSIM is unchanged when x, y and L scale together (C1, C2 scale with L²).
    x = (prediction.to(dtype) - low) / data_range
    y = (target.to(dtype) - low) / data_range
    c1, c2 = SSIM_K1**2, SSIM_K2**2

    taps = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, dtype, x.device)
    # The 2-D Gaussian is separable: a (1 × 11) then an (11 × 1) depthwise pass, no padding.
    # All five statistics of all channels go through the filter as one grouped convolution.
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    groups = stats.shape[1]
    horizontal = taps.view(1, 1, 1, SSIM_WINDOW).expand(groups, 1, 1, SSIM_WINDOW)
    vertical = taps.view(1, 1, SSIM_WINDOW, 1).expand(groups, 1, SSIM_WINDOW, 1)
    filtered = F.conv2d(F.conv2d(stats, horizontal, groups=groups), vertical, groups=groups)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = filtered.chunk(5, dim=1)  # each (B, C, h, w)

    variance_x = mean_xx - mean_x * mean_x
    variance_y = mean_yy - mean_y * mean_y
    covariance = mean_xy - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x.square() + mean_y.square() + c1) * (variance_x + variance_y + c2)
    ssim_map = numerator / denominator  # (B, C, h, w)
    # Mean over positions per channel, then over channels: equal weights either way since all
    # channels share one valid region, and it is the order scikit-image uses.
    return ssim_map.flatten(2).mean(dim=2, dtype=torch.float64).mean(dim=1).to(dtype)
