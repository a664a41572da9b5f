"""The codec contract (DESIGN.md § Contracts), the codec registry, and checkpoints.

A codec maps media to `Tokens` and back: `encode(media) -> Tokens`, `decode(Tokens) -> media`,
`forward(media) -> CodecOutput(reconstruction, quantize)` for training. `Tokens` carries the
codec's `TokenSpec`, the whole contract between codecs and generators.

A checkpoint is a directory: `config.json` (`{"codec": name, "config": {...}}` plus whatever the
trainer adds) and `model.safetensors` (optionally `ema.safetensors`), the layout of
`save_pretrained` / `from_pretrained`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

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

    `modality` ("image", "audio", "video") tells the CLI and the evaluation which media readers,
    writers and metrics fit the codec.
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    config_class: ClassVar[type]
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

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`, atomically.

        Args:
            directory: the checkpoint directory (created; replaced if it exists).
            extra: more JSON to store in config.json (e.g. the training config).
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        meta = {"codec": self.name, "config": to_dict(self.config), **(extra or {})}
        (staging / "config.json").write_text(json.dumps(meta, indent=1))
        save_file(state_for_saving(self), staging / "model.safetensors")
        replace_directory(staging, directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, ema: bool = True) -> Codec:
        """Load a checkpoint written by `save_pretrained` or the trainer (EMA weights if there)."""
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
    """Load a codec checkpoint directory, checking it is whole.

    Args:
        directory: holds `config.json` and `model.safetensors` (and maybe `ema.safetensors`).
        ema: use the EMA weights when the checkpoint has them.
        expected: raise unless the checkpoint holds this codec class (or a subclass).
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: not a codec checkpoint (no config.json)")
    try:
        meta = json.loads(config_path.read_text())
        if meta.get("kind") == "codec":  # written by the trainer: the run config under "task"
            name, config = meta["task"]["codec"], meta["task"]["model"]
        else:  # written by save_pretrained
            name, config = meta["codec"], meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{config_path}: expected a codec checkpoint's config ('codec' and 'config', or a "
            f"training run's 'kind': 'codec' and 'task') ({error!r})"
        ) from error
    codec = build_codec(name, config)
    if expected is not None and not isinstance(codec, expected) and expected is not Codec:
        raise ValueError(f"{directory}: holds codec {name!r}, expected {expected.name!r}")
    weights = directory / (
        "ema.safetensors"
        if ema and (directory / "ema.safetensors").is_file()
        else "model.safetensors"
    )
    if not weights.is_file():
        found = ", ".join(sorted(entry.name for entry in directory.iterdir()))
        raise FileNotFoundError(
            f"{directory}: expected the codec's weights in {weights.name} beside config.json, "
            f"got no such file (the directory holds {found})"
        )
    state = load_file(weights)
    try:
        missing, unexpected = codec.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that differ from the config's
        raise ValueError(f"{weights}: weights do not fit codec {name!r}: {error}") from error
    if missing or unexpected:
        raise ValueError(
            f"{weights}: weights do not fit codec {name!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return codec.eval()


def state_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, no shared storage."""
    return {
        key: value.detach().cpu().contiguous().clone() for key, value in module.state_dict().items()
    }


def replace_directory(staging: Path, target: Path) -> None:
    """Move a finished `staging` directory to `target`, keeping the old one until the end."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            _remove_tree(old)
        os.replace(target, old)
        os.replace(staging, target)
        _remove_tree(old)
    else:
        os.replace(staging, target)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
