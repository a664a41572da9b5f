"""Adversarial losses every codec task uses: hinge (Lim & Ye 2017) on discriminator logits, and
LeCam regularization (Tseng et al. 2021), which keeps the discriminator's outputs on real and
fake media from drifting apart when data is scarce.

Layer 5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """−E[D(G(z))]."""
    return -fake.mean()


def hinge_lecam_losses(
    discriminator: nn.Module,
    lecam: LeCam,
    real: torch.Tensor,
    fake: torch.Tensor,
    lecam_weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The discriminator's step of the image and video tasks: the hinge loss on its logits of
    `real` and `fake` media, plus `lecam_weight` × the `lecam` regularizer of those logits.

    Returns:
        The loss and its logged terms (`discriminator_hinge`, `discriminator_lecam`, detached).
    """
    real_logits, fake_logits = discriminator(real), discriminator(fake)
    hinge = hinge_discriminator_loss(real_logits, fake_logits)
    regularizer = lecam_weight * lecam(real_logits, fake_logits)
    return hinge + regularizer, {
        "discriminator_hinge": hinge.detach(),
        "discriminator_lecam": regularizer.detach(),
    }


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
