"""Losses of image codec training: pixel L1/L2, an optional perceptual loss, and the PatchGAN
discriminator.

`PatchDiscriminator` is the PatchGAN of pix2pix (Isola et al. 2017) that VQGAN uses: strided
convolutions with a logit per receptive-field patch.

No perceptual network can be downloaded here, so `PerceptualLoss` loads VGG16 weights from a path
the user gives (a torchvision `vgg16` state dict, `.pth` or `.safetensors`) and compares
channel-normalized features of five VGG stages, the recipe of LPIPS (Zhang et al. 2018, eq. 1)
with uniform channel weights instead of its learned linear heads (those are a separate download).
Without a path, training runs without it; asking for it without weights is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mediatok.nn.conv import group_norm

# Where each VGG16 stage ends in torchvision's `features` (after relu1_2, 2_2, 3_3, 4_3, 5_3).
_STAGE_ENDS = (4, 9, 16, 23, 30)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, l1_weight: float, l2_weight: float
) -> dict[str, torch.Tensor]:
    """Weighted pixel losses, by name (only those with a non-zero weight)."""
    losses = {}
    if l1_weight:
        losses["l1"] = l1_weight * F.l1_loss(reconstruction, target)
    if l2_weight:
        losses["l2"] = l2_weight * F.mse_loss(reconstruction, target)
    return losses


class PerceptualLoss(nn.Module):
    """Distance between VGG16 features of two image batches in [-1, 1]; frozen.

    Args:
        weights: path of a torchvision `vgg16` state dict (keys `features.N.weight`, ...).
    """

    def __init__(self, weights: str | os.PathLike):
        super().__init__()
        from torchvision.models import vgg16

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"perceptual loss: no VGG16 weights at {path}; give the path of a torchvision "
                f"vgg16 state dict, or set the perceptual weight to 0"
            )
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        features = vgg16(weights=None).features[: _STAGE_ENDS[-1]]
        own = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
        missing, _ = features.load_state_dict(own, strict=False)
        if missing:
            raise ValueError(f"{path}: not a torchvision vgg16 state dict (missing {missing[:3]})")
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # frozen: always in eval mode
        return self

    def _stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1) / 2 - self.mean) / self.std
        outputs, start = [], 0
        for end in _STAGE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = reconstruction.new_zeros(())
        for a, b in zip(self._stages(reconstruction), self._stages(target), strict=True):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (a - b).pow(2).sum(dim=1).mean()
        return total


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
