"""The Python entry points: load a checkpoint, encode media to tokens, decode tokens to media,
sample from a generator, score a codec. The work behind the commands lives in
`mediatok.pipelines`; this module is the short list a user meets first.

>>> import mediatok
>>> codec = mediatok.load("demo-output/image/checkpoint")      # doctest: +SKIP
>>> tokens = codec.encode(images)                               # doctest: +SKIP
>>> images = codec.decode(tokens)                               # doctest: +SKIP
>>> samples = mediatok.sample("demo-output/generation/checkpoint", 8)  # doctest: +SKIP
>>> images = samples.codec.decode(samples.tokens)               # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mediatok.checkpoint import read_checkpoint
from mediatok.codecs import Codec, Tokens, load_codec
from mediatok.generation import load_generator
from mediatok.pipelines import Samples, evaluate_codec, sample

__all__ = [
    "Samples",
    "decode",
    "encode",
    "evaluate_codec",
    "load",
    "load_generator",
    "sample",
]


def load(
    path: str | os.PathLike, *, ema: bool = True, device: str | torch.device = "cpu"
) -> Codec | nn.Module:
    """Load a checkpoint directory (`config.json` + `model.safetensors`), in eval mode: a codec,
    or a generator when the checkpoint holds one (see `load_generator`).

    Args:
        path: the checkpoint directory, e.g. `demo-output/image/checkpoint`.
        ema: use the EMA weights when the checkpoint has them.
        device: where to put the model.

    Raises:
        FileNotFoundError: no checkpoint there, or no weights in it.
        ValueError: a damaged `config.json`, or weights that do not fit the recorded model.
    """
    if read_checkpoint(path).kind == "generator":
        return load_generator(path, ema=ema, device=device)
    return load_codec(path, ema=ema).to(device)


def encode(codec: Codec, media: torch.Tensor) -> Tokens:
    """`codec.encode(media)`, with the media moved to the codec's device first."""
    device = next(codec.parameters()).device
    return codec.encode(media.to(device))


def decode(codec: Codec, tokens: Tokens | torch.Tensor) -> torch.Tensor:
    """`codec.decode(tokens)`, with the codes moved to the codec's device first."""
    device = next(codec.parameters()).device
    if isinstance(tokens, Tokens):
        tokens = Tokens(tokens.codes.to(device), tokens.spec, tokens.lengths)
    else:
        tokens = tokens.to(device)
    return codec.decode(tokens)
