"""Training: the one loop, its `Task` interface, checkpoints.

>>> from mediatok.training import Task, TrainConfig, Trainer
>>> # class MyTask(Task): build_model, dataset, losses (+ optional discriminator, evaluate)
>>> # Trainer(MyTask(), TrainConfig(steps=1000, out_dir="runs/x")).fit()

A checkpoint directory (`out_dir/checkpoint`) holds `config.json`, `model.safetensors`,
`ema.safetensors`, `discriminator.safetensors` and `training_state.pt`; read it back with
`load_checkpoint` / `load_model_weights`.
"""

from __future__ import annotations

from mediatok.training.checkpoint import (
    load_checkpoint,
    load_model_weights,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from mediatok.training.ema import EMA
from mediatok.training.loop import Losses, Task, TrainConfig, Trainer, is_main_process
from mediatok.training.schedule import EpochBatches, default_param_groups, lr_factor

__all__ = [
    "EMA",
    "EpochBatches",
    "Losses",
    "Task",
    "TrainConfig",
    "Trainer",
    "default_param_groups",
    "is_main_process",
    "load_checkpoint",
    "load_model_weights",
    "load_training_state",
    "lr_factor",
    "resolve_checkpoint",
    "save_checkpoint",
    "unwrap_model",
]
