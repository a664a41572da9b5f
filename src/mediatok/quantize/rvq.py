"""Residual vector quantization (SoundStream, Zeghidour et al. 2021, §3.3).

Q codebooks in sequence: level q quantizes what levels 0..q−1 left over, and the quantized vector
is the sum of the Q code vectors. Each level is a `Codebook` of `vq.py`, so every level has the
fused search, EMA or learned updates, k-means init and dead-code revival, all DDP-safe.

How we differ from vector-quantize-pytorch's `ResidualVQ`: the gradient path (straight-through or
rotation) is applied once to the whole sum rather than per level, so the encoder's gradient is
not scaled by Q, and the output equals `decode(codes)` exactly.

Codes are `(..., Q)`, level 0 first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from mediatok.config import check_positive_int
from mediatok.quantize.base import CodeUsage, Quantizer, Step, projections
from mediatok.quantize.vq import Codebook, VQConfig, gradient_path


@dataclass
class RVQConfig(VQConfig):
    """`VQConfig` plus the number of levels; every level shares the codebook settings.

    Attributes:
        num_quantizers: Q, the number of residual levels.
    """

    num_quantizers: int = field(default=8)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("num_quantizers", self.num_quantizers)


class ResidualVQ(Quantizer):
    """Q-level residual VQ; see the module docstring and `RVQConfig`."""

    def __init__(self, config: RVQConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.codebook_sizes = (config.codebook_size,) * config.num_quantizers
        self.check_finite = config.check_finite
        search_dim = config.codebook_dim or config.dim
        self.project_in, self.project_out = projections(config.dim, search_dim)
        level = VQConfig(**{f.name: getattr(config, f.name) for f in fields(VQConfig)})
        self.levels = nn.ModuleList(
            Codebook(level, search_dim) for _ in range(config.num_quantizers)
        )
        dead_after = config.dead_code_after_tokens or 32 * config.codebook_size
        self.usage = CodeUsage(config.num_quantizers, config.codebook_size, dead_after)

    def _quantize(self, latents: torch.Tensor) -> Step:
        x = self.project_in(latents)  # (N, d)
        if self.config.distance == "cosine":
            x = F.normalize(x, dim=-1)
        total = torch.zeros_like(x)
        all_codes, all_counts, all_dead, losses = [], [], [], {}
        clocks, dead_after = self.usage.tokens_since_used, self.usage.dead_after_tokens
        for index, codebook in enumerate(self.levels):
            # Level q sees the residual with its own gradient for the commitment loss.
            level_input = x - total if index else x
            found = codebook.lookup(level_input, clocks[index], dead_after, None)
            for name, value in found.losses.items():
                losses[name] = losses.get(name, 0.0) + value
            total = total + found.vectors.detach()
            all_codes.append(found.codes)
            all_counts.append(found.counts)
            all_dead.append(found.dead)
        # Learned codebooks get their gradient from the codebook loss, not through the output.
        quantized = self.project_out(gradient_path(x, total, self.config.gradient))
        losses = {name: value / len(self.levels) for name, value in losses.items()}
        codes, counts = torch.stack(all_codes, dim=1), torch.stack(all_counts)
        return Step(quantized, codes, losses, counts, torch.stack(all_dead))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        total = None
        for index, codebook in enumerate(self.levels):
            vectors = F.embedding(codes[:, index], codebook.vectors.detach())
            total = vectors if total is None else total + vectors
        return self.project_out(total)
