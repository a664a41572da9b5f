"""SimVQ (Zhu et al. 2024, "Addressing representation collapse in vector quantized models with one
linear layer"), our own implementation.

The code vectors are C·Wᵀ: C is a frozen random `(K, d)` basis and W a learned `(d, d)` linear
map. Every gradient step on W moves the whole codebook at once, so no code is left behind, which
the paper shows keeps usage near 100 % without EMA, k-means or revival. Search runs on the fused
`nearest_code` over the current C·Wᵀ.

Losses (paper §3): commitment β‖x − sg(q)‖² and codebook ‖sg(x) − q‖², whose gradient reaches W.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mediatok.config import check_positive_int
from mediatok.quantize.base import CodeUsage, Quantizer, Step, projections
from mediatok.quantize.search import nearest_code
from mediatok.quantize.vq import Gradient, gradient_path


@dataclass
class SimVQConfig:
    """SimVQ settings.

    Attributes:
        dim: D of the latents.
        codebook_size: K.
        codebook_dim: d of the frozen basis and the search; projections are added when it
            differs from `dim`. None: `dim`.
        distance: "l2" or "cosine".
        commitment_weight: β.
        codebook_weight: weight of the codebook loss (trains W).
        gradient: "straight_through" or "rotation".
        dead_code_after_tokens: for the dead-code metric; None means 32 × K.
        check_finite: reject NaN/inf latents (one host sync per call).
    """

    dim: int
    codebook_size: int
    codebook_dim: int | None = None
    distance: Literal["l2", "cosine"] = "l2"
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    gradient: Gradient = "straight_through"
    dead_code_after_tokens: int | None = None
    check_finite: bool = True

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim)
        check_positive_int("codebook_size", self.codebook_size)
        if self.distance not in ("l2", "cosine"):
            raise ValueError(f"expected distance 'l2' or 'cosine', got {self.distance!r}")


class SimVQ(Quantizer):
    """SimVQ on the shared contract; see the module docstring and `SimVQConfig`."""

    def __init__(self, config: SimVQConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.codebook_sizes = (config.codebook_size,)
        self.check_finite = config.check_finite
        search_dim = config.codebook_dim or config.dim
        self.project_in, self.project_out = projections(config.dim, search_dim)
        # The frozen basis is a buffer (saved, never trained); W starts at the identity.
        self.register_buffer(
            "basis", torch.randn(config.codebook_size, search_dim) * search_dim**-0.5
        )
        self.linear = nn.Linear(search_dim, search_dim, bias=False)
        nn.init.eye_(self.linear.weight)
        dead_after = config.dead_code_after_tokens or 32 * config.codebook_size
        self.usage = CodeUsage(1, config.codebook_size, dead_after)

    def code_vectors(self) -> torch.Tensor:
        """`(K, d)` current code vectors C·Wᵀ (unit norm for cosine)."""
        vectors = self.linear(self.basis)
        if self.config.distance == "cosine":
            vectors = F.normalize(vectors, dim=-1)
        return vectors

    def _quantize(self, latents: torch.Tensor) -> Step:
        cfg = self.config
        x = self.project_in(latents)
        if cfg.distance == "cosine":
            x = F.normalize(x, dim=-1)
        vectors = self.code_vectors()
        codes = nearest_code(x.detach(), vectors.detach(), "l2")
        q = F.embedding(codes, vectors)  # (N, d), gradient reaches W
        losses = {
            "commitment": cfg.commitment_weight * F.mse_loss(x, q.detach()),
            "codebook": cfg.codebook_weight * F.mse_loss(q, x.detach()),
        }
        quantized = self.project_out(gradient_path(x, q.detach(), cfg.gradient))
        return Step(quantized, codes.unsqueeze(1), losses)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.embedding(codes[:, 0], self.code_vectors()))
