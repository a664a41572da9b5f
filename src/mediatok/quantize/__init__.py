"""The shared quantizer core: every codec of mediatok quantizes through `build_quantizer`.

>>> import torch
>>> from mediatok.quantize import build_quantizer
>>> vq = build_quantizer("vq", dim=16, codebook_size=512)
>>> out = vq(torch.randn(2, 64, 16))
>>> out.codes.shape, out.codes.dtype
(torch.Size([2, 64]), torch.int64)
>>> bool(torch.equal(vq.eval().decode(vq(torch.ones(1, 16)).codes), vq(torch.ones(1, 16)).quantized))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediatok.config import from_dict
from mediatok.quantize.base import CodeUsage, QuantizeOutput, Quantizer
from mediatok.quantize.fsq import FiniteScalarQuantizer, FSQConfig
from mediatok.quantize.lfq import LFQConfig, LookupFreeQuantizer
from mediatok.quantize.rvq import ResidualVQ, RVQConfig
from mediatok.quantize.search import nearest_code
from mediatok.quantize.simvq import SimVQ, SimVQConfig
from mediatok.quantize.vq import VectorQuantizer, VQConfig, kmeans

# kind → (config class, quantizer class, options the kind fixes)
QUANTIZERS: dict[str, tuple[type, type[Quantizer], dict[str, Any]]] = {
    "vq": (VQConfig, VectorQuantizer, {}),
    "rvq": (RVQConfig, ResidualVQ, {}),
    "fsq": (FSQConfig, FiniteScalarQuantizer, {}),
    "lfq": (LFQConfig, LookupFreeQuantizer, {"spherical": False}),
    "bsq": (LFQConfig, LookupFreeQuantizer, {"spherical": True}),
    "simvq": (SimVQConfig, SimVQ, {}),
}


def quantizer_config(kind: str, **options: Any) -> Any:
    """The typed config of a quantizer kind, checked strictly.

    Args:
        kind: one of `QUANTIZERS` ("vq", "rvq", "fsq", "lfq", "bsq", "simvq").
        **options: the config's fields (vector-quantize-pytorch's names: `dim`,
            `codebook_size`, `num_quantizers`, `levels`, ...).

    Returns:
        The config dataclass instance.

    Raises:
        ValueError: unknown kind (lists the known ones), unknown option (names the closest),
            a value of the wrong type, or an option the kind fixes.
    """
    if kind not in QUANTIZERS:
        raise ValueError(f"unknown quantizer kind {kind!r}; known kinds: {', '.join(QUANTIZERS)}")
    config_class, _, fixed = QUANTIZERS[kind]
    for name, value in fixed.items():
        if name in options and options[name] != value:
            raise ValueError(
                f"quantizer kind {kind!r} fixes {name}={value!r}, got {options[name]!r}"
            )
    return from_dict(config_class, {**options, **fixed}, where=f"quantizer {kind!r}")


@dataclass
class QuantizerConfig:
    """The quantizer a codec uses: a kind and its options, less `dim`, which the codec sets.

    In a codec's YAML: `quantizer: {kind: vq, options: {codebook_size: 4096, codebook_dim: 12}}`.
    """

    kind: str = "vq"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in QUANTIZERS:
            raise ValueError(
                f"unknown quantizer kind {self.kind!r}; known kinds: {', '.join(QUANTIZERS)}"
            )
        if "dim" in self.options:
            raise ValueError("quantizer options must not set 'dim': the codec sets it")

    def build(self, dim: int) -> Quantizer:
        """The quantizer for latents of width `dim`."""
        return build_quantizer(self.kind, dim=dim, **self.options)


def build_quantizer(kind: str, **options: Any) -> Quantizer:
    """Build a quantizer of `kind` from keyword options (see `quantizer_config`).

    Returns:
        A `Quantizer`: `q(latents (..., D))` gives a `QuantizeOutput`; `q.decode(codes)` gives
        the quantized vectors back; `q.codebook_sizes` has one entry per level.
    """
    config = quantizer_config(kind, **options)
    return QUANTIZERS[kind][1](config)


__all__ = [
    "QUANTIZERS",
    "CodeUsage",
    "FSQConfig",
    "FiniteScalarQuantizer",
    "LFQConfig",
    "LookupFreeQuantizer",
    "QuantizeOutput",
    "Quantizer",
    "QuantizerConfig",
    "RVQConfig",
    "ResidualVQ",
    "SimVQ",
    "SimVQConfig",
    "VQConfig",
    "VectorQuantizer",
    "build_quantizer",
    "kmeans",
    "nearest_code",
    "quantizer_config",
]
