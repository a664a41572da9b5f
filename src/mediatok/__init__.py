"""mediatok: discrete media tokenizers, token files and generators on one quantizer core.

>>> import mediatok
>>> codec = mediatok.load("demo-output/image/checkpoint")   # doctest: +SKIP
>>> tokens = codec.encode(images)                            # doctest: +SKIP
>>> images = codec.decode(tokens)                            # doctest: +SKIP

The names below are imported on first use (PEP 562), so that `import mediatok` (and with it the
`mediatok` command, whose `--help` needs none of them) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for readers and type checkers
    from mediatok.api import decode, encode, evaluate_codec, load, sample
    from mediatok.codecs import Codec, Tokens, build_codec
    from mediatok.quantize import build_quantizer, nearest_code
    from mediatok.tokens import TokenDataset, TokenSpec, TokenWriter

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "decode": "mediatok.api",
    "encode": "mediatok.api",
    "evaluate_codec": "mediatok.api",
    "load": "mediatok.api",
    "sample": "mediatok.api",
    "Codec": "mediatok.codecs",
    "Tokens": "mediatok.codecs",
    "build_codec": "mediatok.codecs",
    "build_quantizer": "mediatok.quantize",
    "nearest_code": "mediatok.quantize",
    "TokenDataset": "mediatok.tokens",
    "TokenSpec": "mediatok.tokens",
    "TokenWriter": "mediatok.tokens",
}

__all__ = [
    "Codec",
    "TokenDataset",
    "TokenSpec",
    "TokenWriter",
    "Tokens",
    "__version__",
    "build_codec",
    "build_quantizer",
    "decode",
    "encode",
    "evaluate_codec",
    "load",
    "nearest_code",
    "sample",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (PEP 562).

    Args:
        name: an attribute of the package that is not yet set.

    Returns:
        The object `_LAZY` names.

    Raises:
        AttributeError: `name` is no public name of the package.
    """
    if name not in _LAZY:
        raise AttributeError(f"module 'mediatok' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
