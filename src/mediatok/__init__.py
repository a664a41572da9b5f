"""mediatok: discrete media tokenizers, token files and generators on one quantizer core.

>>> import mediatok
>>> codec = mediatok.load("demo-output/image/checkpoint")   # doctest: +SKIP
>>> tokens = codec.encode(images)                            # doctest: +SKIP
>>> images = codec.decode(tokens)                            # doctest: +SKIP
"""

from mediatok.api import decode, encode, evaluate_codec, load, sample
from mediatok.codecs import Codec, Tokens, build_codec
from mediatok.quantize import build_quantizer, nearest_code
from mediatok.tokens import TokenDataset, TokenSpec, TokenWriter

__version__ = "0.1.0"

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
