"""Codecs: media ⇄ tokens, each built from an encoder, a shared-core quantizer and a decoder
(image: TiTok, FlexTok, VQGAN; audio: WavTokenizer; video: the causal 3-D tokenizer)."""

from mediatok.codecs.base import (
    CODECS,
    Codec,
    CodecOutput,
    Tokens,
    build_codec,
    load_codec,
    register_codec,
)
from mediatok.codecs.nested_dropout import NestedDropout, NestedDropoutConfig

# Importing the modality packages registers their codecs.
from mediatok.codecs import image  # noqa: F401  isort: skip
from mediatok.codecs.image import FlowOutput  # isort: skip
from mediatok.codecs import audio  # noqa: F401  isort: skip
from mediatok.codecs import video  # noqa: F401  isort: skip

__all__ = [
    "CODECS",
    "Codec",
    "CodecOutput",
    "FlowOutput",
    "NestedDropout",
    "NestedDropoutConfig",
    "Tokens",
    "build_codec",
    "load_codec",
    "register_codec",
]
