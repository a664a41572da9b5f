"""A training run from a YAML file: `mediatok train configs/image/titok-s-128.yaml key=value ...`.

A run config names its task (`task: codec` for image codecs, `task: audio_codec`, `task:
generator`) and holds that task's sections; the YAML holds only what differs from the dataclass defaults, and
`key.sub=value` overrides are applied on top (both checked strictly).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from mediatok.codecs import CODECS
from mediatok.config import ConfigError, from_dict, load_config, to_dict
from mediatok.generation import GENERATORS
from mediatok.tokens import TokenDataset, TokenSpec
from mediatok.training.audio_task import AudioCodecTask, AudioDataConfig, AudioLossConfig
from mediatok.training.generator_task import (
    GeneratorDataConfig,
    GeneratorTask,
    SampleConfig,
    resolve_variable_length,
)
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


@dataclass
class AudioCodecRunConfig:
    """Train an audio codec.

    Attributes:
        task: "audio_codec".
        codec: registry name ("wavtokenizer").
        model: the codec's config fields that differ from its defaults (checked by the codec).
        data: training audio.
        loss: objective weights and the discriminators.
        train: the loop's settings.
    """

    task: Literal["audio_codec"] = "audio_codec"
    codec: str = "wavtokenizer"
    model: dict[str, Any] = field(default_factory=dict)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    loss: AudioLossConfig = field(default_factory=AudioLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class GeneratorRunConfig:
    """Train a generator on token shards.

    Attributes:
        task: "generator".
        generator: "ar" (autoregressive) or "masked" (MaskGIT-style).
        model: the generator's config fields that differ from its defaults.
        data: the token shards.
        sample: how samples are drawn at evaluation and by `mediatok sample` by default.
        codec: the codec checkpoint that wrote the shards, to decode samples (optional here;
            `mediatok sample --codec` can name one later). Saved with the checkpoint as an
            absolute path, so that `mediatok sample` finds it from any directory.
        spec, token_shape: filled in from the shards when training starts and saved with the
            checkpoint, so sampling needs no shards.
        train: the loop's settings.
    """

    task: Literal["generator"] = "generator"
    generator: Literal["ar", "masked"] = "ar"
    model: dict[str, Any] = field(default_factory=dict)
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    codec: str | None = None
    spec: dict[str, Any] | None = None
    token_shape: list[int] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


def run_config_class(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> type:
    """The run config class a YAML file asks for with its `task:` key (or a `task=` override)."""
    task = "codec"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError:
        data = None  # load_config reports the syntax error with its position
    if isinstance(data, dict) and "task" in data:
        task = data["task"]
    for override in overrides:
        if override.startswith("task="):
            task = override.split("=", 1)[1]
    if task not in RUNS:
        raise ConfigError(
            f"{os.fspath(path)}: unknown task {task!r}; known tasks: {', '.join(sorted(RUNS))}"
        )
    return RUNS[task][0]


def train_from_config(
    path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), resume: bool = False
) -> Trainer:
    """Load a run config (strictly), apply overrides, build the task and train.

    Returns:
        The finished `Trainer` (its checkpoint is under `train.out_dir/checkpoint`).
    """
    config = load_config(run_config_class(path, overrides), path, overrides)
    return RUNS[config.task][1](config, resume=resume)


def train_codec(config: CodecRunConfig | AudioCodecRunConfig, resume: bool = False) -> Trainer:
    """Train the codec a run config describes."""
    config, task = codec_task(config)
    trainer = Trainer(task, config.train, task_config=config, resume=resume)
    trainer.fit()
    return trainer


def codec_task(
    config: CodecRunConfig | AudioCodecRunConfig,
) -> tuple[CodecRunConfig | AudioCodecRunConfig, CodecTask | AudioCodecTask]:
    """The run config with the codec's whole config filled in, and the task that trains it.

    The checkpoint records the codec's whole config, not just what the YAML and overrides set,
    so it loads the same model even if the defaults change later.
    """
    if config.codec not in CODECS:
        raise ValueError(
            f"unknown codec {config.codec!r}; known codecs: {', '.join(sorted(CODECS))}"
        )
    codec_config = from_dict(CODECS[config.codec].config_class, config.model, where="model")
    config = dataclasses.replace(config, model=to_dict(codec_config))
    task_class = CodecTask if config.task == "codec" else AudioCodecTask
    task = task_class(config.codec, config.model, config.data, config.loss, seed=config.train.seed)
    return config, task


def train_generator(config: GeneratorRunConfig, resume: bool = False) -> Trainer:
    """Train the generator a `GeneratorRunConfig` describes on its token shards."""
    if config.generator not in GENERATORS:
        raise ValueError(
            f"unknown generator {config.generator!r}; known: {', '.join(sorted(GENERATORS))}"
        )
    tokens = TokenDataset(config.data.tokens)
    if len(tokens) == 0:
        raise ValueError(f"{config.data.tokens}: no samples to train on")
    spec = tokens.spec
    recorded = None if config.spec is None else TokenSpec.from_dict(config.spec)
    if recorded is not None and recorded != spec:
        # Same vocabulary: the difference is in the order or geometry, which only the full form
        # shows.
        same = recorded.same_vocabulary(spec)
        expected = recorded.to_dict() if same else recorded.describe()
        got = spec.to_dict() if same else spec.describe()
        raise ValueError(
            f"{config.data.tokens}: expected token shards of the run's spec, {expected}; got "
            f"{got}; point data.tokens at the shards the run was started on, or start a new run"
        )
    shape = list(tokens[0]["codes"].shape)
    if config.data.window is not None:
        shape[spec.length_axis] = config.data.window
    elif len(set(tokens.lengths.tolist())) > 1:
        raise ValueError(
            f"{config.data.tokens}: samples differ in length ({int(tokens.lengths.min())} to "
            f"{int(tokens.lengths.max())} tokens); set data.window to train on windows"
        )
    model = dict(config.model)
    if tokens.labels is not None and "num_classes" not in model:
        model["num_classes"] = int(tokens.labels.max()) + 1
    config_class = GENERATORS[config.generator][0]
    if hasattr(config_class, "variable_length") and model.get("variable_length") is None:
        # Decided from the shards here, so the checkpoint's config records it for sampling.
        model["variable_length"] = resolve_variable_length(spec, shape, tokens.lengths)
    model_config = from_dict(config_class, model, where="model")
    classes = model_config.num_classes
    if tokens.labels is None and classes:
        # An AR model would train the null class alone without a word (and then sample classes
        # it never saw), a masked one would stop at the first batch.
        raise ValueError(
            f"{config.data.tokens}: model.num_classes={classes} needs shards with labels, got "
            "shards without; set model.num_classes: 0 (unconditional), or write shards with "
            "labels"
        )
    if tokens.labels is not None and classes:
        # Label `num_classes` is the null class's row: an AR model would train it unconditional
        # without a word, a masked one would stop at the batch that holds it.
        low, high = int(tokens.labels.min()), int(tokens.labels.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"{config.data.tokens}: the shards hold labels {low} up to {high}, beyond "
                f"model.num_classes={classes} (classes 0 to {classes - 1}); set "
                f"model.num_classes to at least {high + 1}, or leave it out to take it from "
                "the shards"
            )
    # Sampling settings are used first at the first evaluation: check them now, not after
    # eval_every steps of training.
    config.sample.options(config.generator)
    length = math.prod(shape)
    evaluates = config.train.eval_every > 0  # else the settings wait for `mediatok sample`
    if evaluates and config.generator == "masked" and config.sample.steps > length:
        raise ValueError(
            f"{config.data.tokens}: sample.steps={config.sample.steps} is more than the {length} "
            f"tokens of a sample {tuple(shape)}, and a masked generator unmasks at least one "
            f"token per step; set sample.steps to at most {length}"
        )
    # Scale 1 is no guidance under either schedule (both generators agree).
    if config.sample.cfg_scale != 1.0 and not model_config.num_classes:
        raise ValueError(
            f"{config.data.tokens}: sample.cfg_scale={config.sample.cfg_scale} needs a "
            "class-conditional generator, got shards without labels and model.num_classes 0; "
            "set sample.cfg_scale: 1.0, or write shards with labels"
        )
    if config.generator != "masked" and config.sample.steps != SampleConfig.steps:
        raise ValueError(
            f"expected sample.steps unset for an {config.generator!r} generator (it sets the "
            f"decoding steps of masked generators only), got {config.sample.steps}"
        )
    # Relative to where training runs: `mediatok sample` may run anywhere.
    codec = None if config.codec is None else os.fspath(Path(config.codec).resolve())
    config = dataclasses.replace(
        config, model=to_dict(model_config), spec=spec.to_dict(), token_shape=shape, codec=codec
    )
    task = GeneratorTask(
        config.generator,
        config.model,
        spec,
        tuple(shape),
        config.data,
        config.sample,
        codec=config.codec,
        seed=config.train.seed,
    )
    if config.codec is not None:  # a wrong codec is reported now, not at the first evaluation
        task.codec_on(torch.device("cpu"))
    trainer = Trainer(task, config.train, task_config=config, resume=resume)
    trainer.fit()
    return trainer


# `task:` value -> (run config class, train function). A YAML without `task:` is an image codec.
RUNS: dict[str, tuple[type, Callable[..., Trainer]]] = {
    "codec": (CodecRunConfig, train_codec),
    "audio_codec": (AudioCodecRunConfig, train_codec),
    "generator": (GeneratorRunConfig, train_generator),
}


__all__ = [
    "RUNS",
    "AudioCodecRunConfig",
    "CodecRunConfig",
    "GeneratorRunConfig",
    "run_config_class",
    "train_codec",
    "train_from_config",
    "train_generator",
]
