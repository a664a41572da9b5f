"""Finite scalar quantization (FSQ, Mentzer et al. 2023), wrapping vector-quantize-pytorch's `FSQ`.

Each of the `len(levels)` channels is bounded and rounded to one of `levels[i]` values; the code is
the mixed-radix number of the per-channel values, so the implicit codebook has `prod(levels)`
entries and needs no codebook loss, EMA or revival. When `dim` differs from `len(levels)`, linear
projections map in and out.

The wrapper pins every option of the library class, feeds it `(1, N, D)` rows (it guesses
channel-first for 4-D input, which our channel-last contract must never trigger), and returns
int64 codes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from mediatok.config import check_positive_int
from mediatok.quantize.base import CodeUsage, Quantizer, Step


@dataclass
class FSQConfig:
    """FSQ settings.

    Attributes:
        levels: values per channel; the paper's choices are e.g. [8, 5, 5, 5] (1000 codes),
            [8, 8, 8, 5, 5, 5] (64000 codes). A level of 2 needs `preserve_symmetry`.
        dim: D of the latents; None means `len(levels)` (no projections).
        preserve_symmetry: the symmetric rounding of Kim et al. 2024 (§3.2).
        noise_dropout: with `preserve_symmetry`, replace rounding by uniform noise on this
            fraction of channels during training (same paper).
        projection_has_bias: bias in the in/out projections.
        dead_code_after_tokens: tokens without a hit after which a code counts as dead in the
            metrics; None means 32 × codebook size.
        check_finite: reject NaN/inf latents (one host sync per call).
    """

    levels: tuple[int, ...]
    dim: int | None = None
    preserve_symmetry: bool = False
    noise_dropout: float = 0.0
    projection_has_bias: bool = True
    dead_code_after_tokens: int | None = None
    check_finite: bool = True

    def __post_init__(self) -> None:
        self.levels = tuple(self.levels)
        if not self.levels or any(not isinstance(v, int) or v < 2 for v in self.levels):
            raise ValueError(f"expected levels to be integers >= 2, got {list(self.levels)}")
        if 2 in self.levels and not self.preserve_symmetry:
            raise ValueError(
                f"levels {list(self.levels)} contain a 2, which needs preserve_symmetry=True"
            )
        if self.noise_dropout and not self.preserve_symmetry:
            raise ValueError("noise_dropout > 0 needs preserve_symmetry=True")
        if self.dim is not None:
            check_positive_int("dim", self.dim)


class FiniteScalarQuantizer(Quantizer):
    """FSQ on the shared contract; see the module docstring and `FSQConfig`."""

    def __init__(self, config: FSQConfig):
        super().__init__()
        from vector_quantize_pytorch import FSQ

        self.config = config
        self.dim = config.dim or len(config.levels)
        size = math.prod(config.levels)
        self.codebook_sizes = (size,)
        self.check_finite = config.check_finite
        # The library's FSQ reads one of its buffers (`.item()`) while it builds, which a build
        # on the meta device (the config checks build every YAML there) cannot do; its buffers
        # are a few numbers, so they are made on the CPU then.
        on_meta = torch.get_default_device().type == "meta"
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self.fsq = self._build_fsq(FSQ, config)
        self.usage = CodeUsage(1, size, config.dead_code_after_tokens or 32 * size)

    def _build_fsq(self, fsq_class: type, config: FSQConfig) -> torch.nn.Module:
        return fsq_class(
            levels=list(config.levels),
            dim=self.dim,
            num_codebooks=1,
            keep_num_codebooks_dim=False,
            scale=None,
            allowed_dtypes=(torch.float32, torch.float64),
            channel_first=False,
            projection_has_bias=config.projection_has_bias,
            return_indices=True,
            force_quantization_f32=True,
            preserve_symmetry=config.preserve_symmetry,
            noise_dropout=config.noise_dropout,
            bound_hard_clamp=False,
            orthogonal_rotation=False,
        )

    def _quantize(self, latents: torch.Tensor) -> Step:
        quantized, indices = self.fsq(latents.unsqueeze(0))  # (1, N, D), (1, N)
        return Step(quantized[0], indices[0].long().unsqueeze(1), {})

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.fsq.indices_to_codes(codes[:, 0].unsqueeze(0))[0]  # (N, D)
