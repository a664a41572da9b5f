"""REPA (Yu et al. 2024, "Representation alignment for generation: training diffusion
transformers is easier than you think"): a small MLP maps a diffusion transformer's patch tokens
at an intermediate block to the patch features of a frozen encoder, and the loss rewards their
cosine similarity; it speeds up convergence (FlexTok aligns its decoder with DINOv2-L).

The frozen network is the user's: a TorchScript file taking images `(B, 3, H, W)` in [-1, 1]
(the codec's size; any resizing or normalization it needs is inside it) and returning patch
features `(B, N', D')` with N' a square. No such weights ship with mediatok, and nothing here
downloads. A grid other than the transformer's (√N' ≠ H/p) is resized bilinearly to it. The
network is loaded on first use, per device, and is no part of the model's weights: a
checkpoint trained with REPA decodes without the file.

Layout: tokens `(B, N, D)`; features `(B, N, D')`; the loss a scalar, 1 − mean cosine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.codecs.image.flow import ProcessCache


@dataclass
class REPAConfig:
    """REPA settings.

    Attributes:
        features_path: the TorchScript feature network (see the module docstring).
        feature_dim: D' of its features.
        layer: the decoder block after which tokens are aligned (1..depth); None: round(8/28 ×
            depth), REPA's layer 8 of SiT-XL's 28.
        projector_dim: hidden width of the 3-layer SiLU MLP (REPA's 2048).
    """

    features_path: str
    feature_dim: int
    layer: int | None = None
    projector_dim: int = 2048

    def __post_init__(self) -> None:
        for name in ("feature_dim", "projector_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected repa.{name} >= 1, got {getattr(self, name)}")


class FeatureAlignment(nn.Module):
    """The REPA projector and loss for a transformer of width `dim` over a `grid`² patch grid."""

    def __init__(self, config: REPAConfig, dim: int, grid: int):
        super().__init__()
        self.config, self.grid = config, grid
        hidden = config.projector_dim
        self.projector = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, config.feature_dim),
        )
        self._networks = ProcessCache()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """1 − the mean cosine similarity of the projected `tokens (B, N, D)` and the frozen
        network's features of `images (B, 3, H, W)`: a scalar in [0, 2]."""
        with torch.no_grad():
            features = self.network(images.device)(images)
        dim, path = self.config.feature_dim, self.config.features_path
        shaped = isinstance(features, torch.Tensor) and features.ndim == 3
        if not shaped or (features.shape[0], features.shape[2]) != (len(images), dim):
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else features
            raise ValueError(
                f"flextok REPA expected features (B={len(images)}, N, {dim}) from {path}, got {got}"
            )
        side = round(features.shape[1] ** 0.5)
        if side * side != features.shape[1]:
            raise ValueError(
                f"flextok REPA expected a square grid of feature tokens from {path}, got "
                f"{features.shape[1]} tokens"
            )
        if side != self.grid:
            grid = rearrange(features.float(), "b (h w) d -> b d h w", h=side)  # (B, D', h, w)
            grid = F.interpolate(grid, size=(self.grid, self.grid), mode="bilinear")
            features = rearrange(grid, "b d h w -> b (h w) d")  # (B, N, D')
        projected = self.projector(tokens)  # (B, N, D')
        similarity = F.cosine_similarity(projected.float(), features.float(), dim=-1)  # (B, N)
        return 1 - similarity.mean()

    def network(self, device: torch.device) -> torch.jit.ScriptModule:
        """The frozen network on `device`, loaded on first use."""
        key = str(device)
        if key not in self._networks:
            path = Path(self.config.features_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"flextok REPA expected a TorchScript feature network at {path} (images "
                    "(B, 3, H, W) in [-1, 1] → features (B, N, D)); there is no such file"
                )
            try:
                with warnings.catch_warnings():  # "deprecated", and still the portable format
                    warnings.simplefilter("ignore", DeprecationWarning)
                    network = torch.jit.load(str(path), map_location=device)
            except RuntimeError as error:
                raise ValueError(
                    f"flextok REPA expected a TorchScript file at {path}, could not load it: "
                    f"{str(error).splitlines()[0]}"
                ) from None
            for parameter in network.parameters():
                parameter.requires_grad_(False)
            self._networks[key] = network.eval()
        return self._networks[key]

    def extra_repr(self) -> str:
        return f"features_path={self.config.features_path!r}"
