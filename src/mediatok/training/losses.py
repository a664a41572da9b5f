"""Reconstruction losses for codec training: pixel L1/L2 and an optional perceptual loss.

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

from mediatok.quantize import QuantizeOutput

# Where each VGG16 stage ends in torchvision's `features` (after relu1_2, 2_2, 3_3, 4_3, 5_3).
_STAGE_ENDS = (4, 9, 16, 23, 30)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def quantizer_terms(quantize: QuantizeOutput, weight: float) -> dict[str, torch.Tensor]:
    """The quantizer's own losses as codec loss terms: `quantizer_<name>`, times `weight`."""
    return {f"quantizer_{name}": weight * value for name, value in quantize.losses.items()}


def codec_logs(terms: dict[str, torch.Tensor], quantize: QuantizeOutput) -> dict[str, torch.Tensor]:
    """What a codec task logs per step: every loss term, detached, and codebook usage and
    perplexity (tensors: read only at log steps, so no host sync)."""
    logs = {name: value.detach() for name, value in terms.items()}
    return logs | {
        f"codebook_{name}": value
        for name, value in quantize.metrics.items()
        if name in ("usage", "perplexity")
    }


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
