"""A training run from a YAML file: `mediatok train configs/image/titok-s-128.yaml key=value ...`.

A run config names its task (`task: image_codec`, the default; `task: audio_codec`; `task:
generator`) and holds that task's sections; the YAML holds only what differs from the dataclass
defaults, and `key.sub=value` overrides are applied on top (both checked strictly). The file is
read once: its `task:` (or a `task=` override) picks the run config class in `RUNS`, which the
same mapping then fills.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from mediatok.codecs import CODECS
from mediatok.config import ConfigError, build_config, from_dict, read_config_file, to_dict
from mediatok.training.loop import Trainer
from mediatok.training.tasks import (
    AudioCodecRunConfig,
    AudioCodecTask,
    CodecTask,
    GeneratorRunConfig,
    ImageCodecRunConfig,
    ImageCodecTask,
    prepare_generator_run,
)

__all__ = [
    "RUNS",
    "Run",
    "codec_task",
    "load_run_config",
    "train",
    "train_from_config",
]

DEFAULT_TASK = "image_codec"  # a YAML without `task:`


class Run(NamedTuple):
    """One kind of run: its config class and how it becomes a task.

    Attributes:
        config_class: the run config dataclass (`task`, the model's name and config, `data`,
            ..., `train`).
        prepare: run config -> (the run config resolved, the `Task` that trains it).
    """

    config_class: type
    prepare: Callable[[Any], tuple[Any, Any]]


def codec_task(config: ImageCodecRunConfig | AudioCodecRunConfig) -> tuple[Any, CodecTask]:
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
    task_class = _CODEC_TASKS[config.task]
    task = task_class(config.codec, config.model, config.data, config.loss, seed=config.train.seed)
    return config, task


_CODEC_TASKS: dict[str, type[CodecTask]] = {
    task.run_task: task for task in (ImageCodecTask, AudioCodecTask)
}

# `task:` value -> what runs it.
RUNS: dict[str, Run] = {
    "image_codec": Run(ImageCodecRunConfig, codec_task),
    "audio_codec": Run(AudioCodecRunConfig, codec_task),
    "generator": Run(GeneratorRunConfig, prepare_generator_run),
}


def load_run_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a run config file (once), pick its class by `task:` (a `task=` override wins), fill
    it strictly and apply the overrides.

    Raises:
        ConfigError: an unknown task (naming the known ones), a key or value that does not fit,
            naming the file.
    """
    data = read_config_file(path)
    task = data.get("task", DEFAULT_TASK)
    for override in overrides:
        if override.startswith("task="):
            task = override.split("=", 1)[1]
    if task not in RUNS:
        raise ConfigError(
            f"{os.fspath(path)}: unknown task {task!r}; known tasks: {', '.join(sorted(RUNS))}"
        )
    return build_config(RUNS[task].config_class, data, overrides, source=path)


def train(config: Any, resume: bool = False) -> Trainer:
    """Train what a run config describes (`ImageCodecRunConfig`, `AudioCodecRunConfig`,
    `GeneratorRunConfig`); its checkpoint is under `train.out_dir/checkpoint`.

    Returns:
        The finished `Trainer`.
    """
    config, task = RUNS[config.task].prepare(config)
    trainer = Trainer(task, config.train, run_config=config, resume=resume)
    trainer.fit()
    return trainer


def train_from_config(
    path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), resume: bool = False
) -> Trainer:
    """`train(load_run_config(path, overrides), resume)`: what `mediatok train` runs."""
    return train(load_run_config(path, overrides), resume=resume)
