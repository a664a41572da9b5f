"""Generator checkpoints: what one records, and loading it.

A generator checkpoint is a `mediatok.checkpoint` directory of kind "generator" whose run
(`mediatok train`'s `GeneratorRunConfig`, resolved) records the generator's name and config, the
`TokenSpec` and token shape it was trained on, the codec checkpoint that wrote its shards (if
the run named one) and the default sampling settings.

Layer 4.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mediatok.checkpoint import CONFIG_NAME, load_model, read_checkpoint
from mediatok.generation.registry import build_generator
from mediatok.tokens import TokenSpec

__all__ = ["GeneratorRun", "load_generator", "read_generator_run"]


@dataclass(frozen=True)
class GeneratorRun:
    """What a generator checkpoint records.

    Attributes:
        generator: the registry name ("ar", "masked").
        model: the generator's resolved config.
        spec: the `TokenSpec` of the shards it was trained on.
        token_shape: one sample's code shape (for windows: the window).
        codec: the codec checkpoint that wrote the shards (an absolute path), or None.
        sample: the run's sampling settings (`SampleConfig` fields).
    """

    generator: str
    model: Mapping[str, Any]
    spec: TokenSpec
    token_shape: tuple[int, ...]
    codec: str | None = None
    sample: Mapping[str, Any] = field(default_factory=dict)


def read_generator_run(path: str | os.PathLike) -> GeneratorRun:
    """What the generator checkpoint at `path` records.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: a checkpoint of another kind, or a run without what a generator needs.
    """
    run = read_checkpoint(path, kind="generator").run
    try:
        return GeneratorRun(
            generator=run["generator"],
            model=dict(run["model"]),
            spec=TokenSpec.from_dict(run["spec"]),
            token_shape=tuple(int(size) for size in run["token_shape"]),
            codec=run.get("codec"),
            sample=dict(run.get("sample") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{Path(path) / CONFIG_NAME}: expected a generator run with 'generator', 'model', "
            f"'spec' and 'token_shape', got {sorted(run)} ({error!r})"
        ) from error


def load_generator(
    path: str | os.PathLike, *, ema: bool = True, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a generator checkpoint written by `mediatok train` (a `task: generator` run), in
    eval mode.

    Args:
        path: the checkpoint directory.
        ema: use the EMA weights when the checkpoint has them.
        device: where to put the model.

    Raises:
        FileNotFoundError: no checkpoint, or no weights (the message lists what is there).
        ValueError: another kind of checkpoint, or weights that do not fit the recorded model.
    """
    run = read_generator_run(path)
    model = build_generator(run.generator, run.model, run.spec, run.token_shape)
    load_model(path, model, ema=ema, what=f"the recorded generator {run.generator!r}")
    return model.to(device).eval()
