"""What every image codec shares."""

from __future__ import annotations

import torch


def check_images(codec: str, images: torch.Tensor, size: int) -> None:
    """Raise unless `images` is a float `(B, 3, size, size)` batch (values meant in [-1, 1])."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{codec} expected a tensor of images, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ValueError(
            f"{codec} expected images (B, 3, {size}, {size}) in [-1, 1], got shape "
            f"{tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"{codec} expected float images in [-1, 1], got dtype {images.dtype}")
