"""Discriminators and adversarial losses for codec training.

`PatchDiscriminator` is the PatchGAN of pix2pix (Isola et al. 2017) that VQGAN uses: strided
convolutions with a logit per receptive-field patch. Losses are hinge (Lim & Ye 2017) with LeCam
regularization (Tseng et al. 2021), which keeps the discriminator's outputs on real and fake
images from drifting apart when data is scarce.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mediatok.nn.conv import group_norm


class PatchDiscriminator(nn.Module):
    """`(B, 3, H, W)` → patch logits `(B, 1, H/2^L − 2, W/2^L − 2)`.

    Args:
        channels: width of the first layer; doubles per layer up to 8×.
        layers: strided layers L.
    """

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for index in range(1, layers + 1):
            out = channels * min(2**index, 8)
            stride = 2 if index < layers else 1
            blocks += [nn.Conv2d(width, out, 4, stride, 1), group_norm(out), nn.LeakyReLU(0.2)]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """−E[D(G(z))]."""
    return -fake.mean()


class LeCam(nn.Module):
    """LeCam regularizer: ‖D(x) − ema(D(G(z)))‖² + ‖D(G(z)) − ema(D(x))‖² (Tseng et al. 2021, eq. 3).

    Args:
        decay: of the exponential moving averages of the mean logits.
    """

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("real_average", torch.zeros(()))
        self.register_buffer("fake_average", torch.zeros(()))

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.real_average.lerp_(real.mean().float(), 1 - self.decay)
            self.fake_average.lerp_(fake.mean().float(), 1 - self.decay)
        return (real - self.fake_average).pow(2).mean() + (fake - self.real_average).pow(2).mean()
