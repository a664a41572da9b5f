"""A training run from a YAML file: `mediatok train configs/image/titok-s-128.yaml key=value ...`.

A run config names its task (`task: image_codec`, the default; `task: audio_codec`; `task:
generator`) and holds that task's sections; the YAML holds only what differs from the dataclass
defaults, and `key.sub=value` overrides are applied on top (both checked strictly). The file is
read once: its `task:` (or a `task=` override) picks the run config class in `RUNS`, which the
same mapping then fills.

Resuming (`--resume`) continues the run in `train.out_dir` with the run config its checkpoint
saved (`checkpoint/config.json`), not the YAML's: the YAML and overrides only locate the run,
and the overrides then apply to the saved config. The loop refuses an override that changes
more than a session setting (`loop.SESSION_KEYS`: `train.steps` to extend a run, the time limit,
the log, eval and save cadences, workers, device, ...) unless `allow_changes` is given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mediatok import checkpoint as ckpt
from mediatok.codecs import CODECS
from mediatok.config import ConfigError, build_config, from_dict, read_config_file, to_dict
from mediatok.training.loop import Trainer
from mediatok.training.tasks import (
    AudioCodecRunConfig,
    AudioCodecTask,
    CodecTask,
    FlexTokRunConfig,
    FlexTokTask,
    GeneratorRunConfig,
    ImageCodecRunConfig,
    ImageCodecTask,
    VideoCodecRunConfig,
    VideoCodecTask,
    prepare_generator_run,
)

__all__ = [
    "RUNS",
    "Run",
    "RunFinished",
    "codec_task",
    "load_run_config",
    "resume_config",
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


def codec_task(config: Any) -> tuple[Any, CodecTask]:
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
    return config, _CODEC_TASKS[config.task].from_run(config)


_CODEC_TASKS: dict[str, type[CodecTask]] = {
    task.run_task: task for task in (ImageCodecTask, AudioCodecTask, VideoCodecTask, FlexTokTask)
}

# `task:` value -> what runs it.
RUNS: dict[str, Run] = {
    "image_codec": Run(ImageCodecRunConfig, codec_task),
    "audio_codec": Run(AudioCodecRunConfig, codec_task),
    "video_codec": Run(VideoCodecRunConfig, codec_task),
    "flextok": Run(FlexTokRunConfig, codec_task),
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


class RunFinished(Exception):
    """A resume asked of a run that has done its `train.steps`: nothing to train. An outcome,
    not a mistake; the message says how to extend the run."""


def train(
    config: Any, resume: bool | Literal["if_found"] = False, *, allow_changes: bool = False
) -> Trainer:
    """Train what a run config describes (`ImageCodecRunConfig`, `AudioCodecRunConfig`,
    `GeneratorRunConfig`); its checkpoint is under `train.out_dir/checkpoint`.

    Args:
        config: the run config.
        resume: True: continue the run in `train.out_dir` (its checkpoint must exist, and
            `config` must match the saved run but for `loop.SESSION_KEYS`); "if_found":
            continue it if it has a checkpoint, else start it; False: start it. A resumed run
            that has done its steps trains no further. To resume from the saved config itself,
            see `resume_config`.
        allow_changes: let a resumed run change more than the session settings.

    Returns:
        The finished `Trainer`.
    """
    config, task = RUNS[config.task].prepare(config)
    trainer = Trainer(
        task, config.train, run_config=config, resume=resume, allow_changes=allow_changes
    )
    trainer.fit()
    return trainer


def resume_config(run_dir: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The run config saved in a run's checkpoint, with `overrides` applied: what a resumed
    session trains.

    Args:
        run_dir: the run's `train.out_dir` (or its `checkpoint` directory).
        overrides: `key.sub=value` strings applied to the saved config; `train.out_dir` becomes
            `run_dir` wherever the run was first started from.

    Returns:
        The run config dataclass of the saved `task`.

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`, naming the folder.
        ValueError: a checkpoint that is no training run's (weights only, or another task);
            an override that does not fit.
        RunFinished: the run has done its `train.steps` (after the overrides).
    """
    run_dir = Path(run_dir)
    if run_dir.name == "checkpoint" and (run_dir / ckpt.CONFIG_NAME).is_file():
        run_dir = run_dir.parent
    found = ckpt.resolve_checkpoint(run_dir / "checkpoint")
    if found is None:
        where = "holds no checkpoint" if run_dir.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"{run_dir}: expected a run to resume (its checkpoint/{ckpt.CONFIG_NAME}), but the "
            f"folder {where}; leave out --resume to start the run, or name the run's "
            "train.out_dir"
        )
    saved = ckpt.read_checkpoint(found)
    source = found / ckpt.CONFIG_NAME
    if saved.step is None or not (found / ckpt.TRAINING_STATE_NAME).is_file():
        raise ValueError(
            f"{found}: expected a training run's checkpoint (with {ckpt.TRAINING_STATE_NAME}) "
            "to resume, got a weights-only one; train a new run from a YAML instead"
        )
    task = saved.run.get("task", DEFAULT_TASK)
    if task not in RUNS:
        raise ConfigError(
            f"{source}: unknown task {task!r}; known tasks: {', '.join(sorted(RUNS))}"
        )
    config = build_config(RUNS[task].config_class, saved.run, overrides, source=source)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, out_dir=run_dir))
    if saved.step >= config.train.steps:
        raise RunFinished(
            f"{run_dir} is finished: its checkpoint is at step {saved.step} of train.steps="
            f"{config.train.steps}; nothing to train. To train it further, resume with more "
            f"steps, e.g. train.steps={2 * saved.step}"
        )
    return config


def train_from_config(
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    *,
    allow_changes: bool = False,
) -> Trainer:
    """What `mediatok train` runs: start the run that a YAML and overrides describe, or resume
    one from the config its checkpoint saved.

    Args:
        path: a YAML run config; with `resume`, the run's folder (`train.out_dir`) too.
        overrides: `key.sub=value` strings. When resuming they apply to the saved config, and
            only `loop.SESSION_KEYS` may change unless `allow_changes`.
        resume: continue the run in the YAML's `train.out_dir` (or the folder `path`);
            `train.resume=true` asks for it too.
        allow_changes: let a resumed run change more than the session settings.

    Returns:
        The finished `Trainer`.

    Raises:
        RunFinished: resume asked of a run that has done its steps.
        FileNotFoundError: resume asked, and no checkpoint in the run's folder.
        ValueError: a directory without resume; a change refused on resume; see `train`.
    """
    if Path(path).is_dir():
        if not resume:
            raise ValueError(
                f"{os.fspath(path)}: expected a YAML run config, got a folder; add --resume to "
                "continue the run in it"
            )
        config = resume_config(path, overrides)
    else:
        config = load_run_config(path, overrides)
        resume = resume or config.train.resume
        if resume:
            config = resume_config(config.train.out_dir, overrides)
    return train(config, resume=resume, allow_changes=allow_changes)
