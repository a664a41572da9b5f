"""The generator registry: `build_generator(name, config, spec, token_shape)`.

Layer 4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from mediatok.generation.ar import ARConfig, ARTransformer, build_ar_transformer
from mediatok.generation.masked import MaskedConfig, MaskedTransformer, build_masked_transformer
from mediatok.tokens import TokenSpec

__all__ = ["GENERATORS", "build_generator"]

# name -> (config class, model class)
GENERATORS: dict[str, tuple[type, type[nn.Module]]] = {
    "ar": (ARConfig, ARTransformer),
    "masked": (MaskedConfig, MaskedTransformer),
}
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "ar": build_ar_transformer,
    "masked": build_masked_transformer,
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

    Returns:
        The model, randomly initialized.

    Raises:
        ValueError: an unknown name (the known ones are listed), a bad config, spec or shape.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    return _BUILDERS[name](config, spec, tuple(token_shape))
