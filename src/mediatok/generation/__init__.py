"""Generators over token shards: autoregressive (`ar`) and masked (`masked`) transformers.

A generator knows only a `TokenSpec`, never a codec class (DESIGN.md § Layers): one code path
serves 1-D image tokens, 2-D grids, residual levels and audio tokens. `build_generator(name,
config, spec, token_shape)` builds one by registry name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mediatok.config import from_dict
from mediatok.generation.ar import ARConfig, ARSamples, ARTransformer
from mediatok.generation.masked import MaskedConfig, MaskedSamples, MaskedTransformer
from mediatok.generation.sequence import SequenceLayout
from mediatok.tokens import TokenSpec

# name -> (config class, model class)
GENERATORS: dict[str, tuple[type, type[nn.Module]]] = {
    "ar": (ARConfig, ARTransformer),
    "masked": (MaskedConfig, MaskedTransformer),
}


def build_generator(
    name: str,
    config: Mapping[str, Any] | Any,
    spec: TokenSpec | Mapping[str, Any],
    token_shape: Sequence[int],
) -> nn.Module:
    """A fresh generator by registry name.

    Args:
        name: "ar" or "masked".
        config: its config object, or a mapping of fields that differ from the defaults.
        spec: the `TokenSpec` of the shards it models (or its dict form).
        token_shape: one sample's code shape in layout order.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    config_class, model_class = GENERATORS[name]
    if not isinstance(config, config_class):
        config = from_dict(config_class, dict(config or {}), where=f"generator {name!r}")
    if not isinstance(spec, TokenSpec):
        spec = TokenSpec.from_dict(spec)
    return model_class(config, spec, tuple(token_shape))


__all__ = [
    "GENERATORS",
    "ARConfig",
    "ARSamples",
    "ARTransformer",
    "MaskedConfig",
    "MaskedSamples",
    "MaskedTransformer",
    "SequenceLayout",
    "build_generator",
]
