"""The codec contract (DESIGN.md § Contracts), the codec registry, and codec checkpoints.

A codec maps media to `Tokens` and back: `encode(media) -> Tokens`, `decode(Tokens) -> media`,
`forward(media) -> CodecOutput(reconstruction, quantize)` for training. `Tokens` carries the
codec's `TokenSpec`, the whole contract between codecs and generators.

A codec checkpoint is a `mediatok.checkpoint` directory of kind "codec" whose run names the
codec and its config (`{"codec": "titok", "model": {...}}`); `save_pretrained` writes one and
`mediatok train` writes the same with its training state beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mediatok.checkpoint import CONFIG_NAME, load_model, read_checkpoint, save_checkpoint
from mediatok.config import from_dict, to_dict
from mediatok.quantize import QuantizeOutput
from mediatok.tokens import TokenSpec


@dataclass
class Tokens:
    """Codes and what they mean.

    Attributes:
        codes: int64 `(B, *token_shape)` (e.g. `(B, N)` for 1D image tokens, `(B, H, W)` for a
            2D grid, `(B, Q, T)` for residual audio tokens).
        spec: the codec's `TokenSpec`.
        lengths: `(B,)` int64 valid lengths for variable-length codecs, else None.
    """

    codes: torch.Tensor
    spec: TokenSpec
    lengths: torch.Tensor | None = None


@dataclass
class CodecOutput:
    """What `Codec.forward` returns for training: the reconstruction and the quantizer's output."""

    reconstruction: torch.Tensor
    quantize: QuantizeOutput


class Codec(nn.Module):
    """Base class of every codec. Subclasses set `name`, `modality` and `config_class`, take
    their config in `__init__`, and implement `forward`, `encode`, `decode` and `token_spec`.

    `modality` ("image", "audio", "video") names the codec's entry in the modality table
    (`mediatok.modalities`): which media readers, writers and metrics fit it.

    `decode_settings` names the keyword arguments `decode` takes besides the tokens, for codecs
    whose decoding is sampling (FlexTok's flow decoder: `steps`, `cfg_scale`, `seed`, ...); the
    pipelines pass the ones a user gives (`mediatok decode --steps 25`) and refuse the others.
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    config_class: ClassVar[type]
    decode_settings: ClassVar[tuple[str, ...]] = ()
    config: Any

    @property
    def token_spec(self) -> TokenSpec:
        raise NotImplementedError

    def encode(self, media: torch.Tensor) -> Tokens:
        raise NotImplementedError

    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Run the quantizer in eval mode for `encode`, whatever the codec's mode: in training
        mode it would take a training step (k-means init, EMA update, dead-code revival),
        changing the codebook under the caller. Each module's mode is restored after."""
        quantizer = self.get_submodule("quantizer")
        modes = [(module, module.training) for module in quantizer.modules()]
        quantizer.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training

    def _codes(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """The codes of `tokens`, after checking (`TokenSpec.describe_mismatch`) they belong to
        this codec's vocabulary, layout and (when the tokens carry one) geometry: two configs may
        share a vocabulary while their tokens mean other media (two image sizes; 75 and 40
        tokens per second)."""
        if isinstance(tokens, Tokens):
            mismatch = self.token_spec.describe_mismatch(tokens.spec)
            if mismatch is not None:
                raise ValueError(
                    f"{self.name}: cannot decode these tokens: {mismatch}; decode with the codec "
                    "that encoded them"
                )
            return tokens.codes
        if isinstance(tokens, torch.Tensor):
            return tokens
        raise TypeError(
            f"{self.name}.decode expected Tokens or a tensor of codes, got {type(tokens).__name__}"
        )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`, atomically (the
        layout of `mediatok.checkpoint`; `mediatok train` writes the same, plus its state).

        Args:
            directory: the checkpoint directory (created; replaced if it exists).
        """
        run = {"codec": self.name, "model": to_dict(self.config)}
        return save_checkpoint(directory, self, kind="codec", run=run)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, ema: bool = True) -> Codec:
        """Load a codec checkpoint (EMA weights if there)."""
        return load_codec(directory, ema=ema, expected=cls)


CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make a codec buildable by name."""
    if cls.name in CODECS:
        raise ValueError(f"codec name {cls.name!r} is registered twice")
    CODECS[cls.name] = cls
    return cls


def build_codec(name: str, config: dict | Any = None) -> Codec:
    """A fresh codec by registry name, from its config object or a dict of overrides."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; known codecs: {', '.join(sorted(CODECS))}")
    cls = CODECS[name]
    if config is None or isinstance(config, dict):
        config = from_dict(cls.config_class, config or {}, where=f"codec {name!r}")
    return cls(config)


def load_codec(
    directory: str | os.PathLike, ema: bool = True, expected: type[Codec] | None = None
) -> Codec:
    """Load a codec checkpoint directory (written by `save_pretrained` or `mediatok train`), in
    eval mode, checking it is whole.

    Args:
        directory: holds `config.json` and `model.safetensors` (and maybe `ema.safetensors`).
        ema: use the EMA weights when the checkpoint has them.
        expected: raise unless the checkpoint holds this codec class (or a subclass).

    Raises:
        FileNotFoundError: no checkpoint, or no weights (the message lists what is there).
        ValueError: another kind of checkpoint, an unknown codec, or weights that do not fit.
    """
    checkpoint = read_checkpoint(directory, kind="codec")
    name, config = checkpoint.run.get("codec"), checkpoint.run.get("model")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise ValueError(
            f"{Path(directory) / CONFIG_NAME}: expected a codec checkpoint's run with 'codec' "
            f"(a name) and 'model' (its config), got {name!r} and {type(config).__name__}"
        )
    codec = build_codec(name, config)
    if expected is not None and not isinstance(codec, expected) and expected is not Codec:
        raise ValueError(f"{directory}: holds codec {name!r}, expected {expected.name!r}")
    return load_model(directory, codec, ema=ema, what=f"codec {name!r}").eval()
