"""The 3-D PatchGAN of video codec training, and the per-frame perceptual loss.

`PatchDiscriminator3d` is the image PatchGAN (`image_losses.PatchDiscriminator`, pix2pix /
VQGAN) with 3-D convolutions, as MAGVIT (Yu et al. 2023, §3) uses for video: strided in space at
every layer and in time at the first ones, a logit per space-time patch, so that motion that
does not look real (flicker, frozen texture) is penalized, not only frames that do not. A clip of
one frame (an image in joint training) passes too: time is never strided below one frame.

Layer 5.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from mediatok.nn.conv import group_norm
from mediatok.training.tasks.image_losses import PerceptualLoss

__all__ = ["PatchDiscriminator3d", "frame_perceptual_loss"]


class PatchDiscriminator3d(nn.Module):
    """`(B, 3, T, H, W)` → patch logits `(B, 1, T', h, w)`.

    Args:
        channels: width of the first layer; doubles per layer up to 8×.
        layers: strided layers L: space is halved by each, time by the first `time_strides`
            (at least one frame remains: a 1-frame clip keeps its one frame).
        time_strides: how many layers halve time.
    """

    def __init__(self, channels: int = 64, layers: int = 3, time_strides: int = 2):
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Conv3d(3, channels, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
            nn.LeakyReLU(0.2),
        ]
        width = channels
        for index in range(1, layers + 1):
            out = channels * min(2**index, 8)
            space = 2 if index < layers else 1
            time = 2 if index <= time_strides else 1
            blocks += [
                nn.Conv3d(width, out, (3, 4, 4), (time, space, space), (1, 1, 1)),
                group_norm(out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        blocks.append(nn.Conv3d(width, 1, (3, 4, 4), 1, (1, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.net(videos)


def frame_perceptual_loss(
    perceptual: PerceptualLoss, prediction: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """`perceptual` (an image loss) of every frame: videos `(B, 3, T, H, W)` folded into a batch
    of frames `(B·T, 3, H, W)`; the mean over frames."""
    fold = "b c t h w -> (b t) c h w"
    return perceptual(rearrange(prediction, fold), rearrange(target, fold))
