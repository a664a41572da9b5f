"""A training run from a YAML file: `mediatok train configs/image/titok-s-128.yaml key=value ...`.

A run config names the task and holds its sections; the YAML holds only what differs from the
dataclass defaults, and `key.sub=value` overrides are applied on top (both checked strictly).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from mediatok.codecs import CODECS
from mediatok.config import apply_overrides, from_dict, load_config, to_dict
from mediatok.training.loop import TrainConfig, Trainer
from mediatok.training.tasks import CodecLossConfig, CodecTask, ImageDataConfig


@dataclass
class CodecRunConfig:
    """Train an image codec.

    Attributes:
        task: "codec".
        codec: registry name ("titok", "vqgan").
        model: the codec's config fields that differ from its defaults (checked by the codec).
        data: training images.
        loss: objective weights.
        train: the loop's settings (steps, batch size, optimizer, precision, checkpoints).
    """

    task: Literal["codec"] = "codec"
    codec: str = "titok"
    model: dict[str, Any] = field(default_factory=dict)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def train_from_config(
    path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), resume: bool = False
) -> Trainer:
    """Load a run config (strictly), apply overrides, build the task and train.

    Returns:
        The finished `Trainer` (its checkpoint is under `train.out_dir/checkpoint`).
    """
    config = load_config(CodecRunConfig, path, overrides)
    return train_codec(config, resume=resume)


def train_codec(config: CodecRunConfig, resume: bool = False) -> Trainer:
    """Train the codec a `CodecRunConfig` describes."""
    # The checkpoint records the codec's whole config, not just the overrides, so it loads the
    # same model even if the defaults change later.
    if config.codec not in CODECS:
        raise ValueError(
            f"unknown codec {config.codec!r}; known codecs: {', '.join(sorted(CODECS))}"
        )
    codec_config = from_dict(CODECS[config.codec].config_class, config.model, where="model")
    config = dataclasses.replace(config, model=to_dict(codec_config))
    task = CodecTask(config.codec, config.model, config.data, config.loss, seed=config.train.seed)
    trainer = Trainer(task, config.train, task_config=config, resume=resume)
    trainer.fit()
    return trainer


__all__ = ["CodecRunConfig", "apply_overrides", "train_codec", "train_from_config"]
