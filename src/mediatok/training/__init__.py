"""Training: the one loop and its generic parts, and the tasks it trains.

>>> from mediatok.training import Task, TrainConfig, Trainer
>>> # class MyTask(Task): build_model, dataset, losses (+ optional discriminator, evaluate)
>>> # Trainer(MyTask(), TrainConfig(steps=1000, out_dir="runs/x")).fit()

Generic (no model names): `loop.py` (`Trainer`), `base.py` (`Task`, `TrainConfig`, `Losses`),
`schedule.py` (warmup + cosine, AdamW, the resumable epoch sampler), `ema.py`, `rng.py`. The
tasks (image codec, audio codec, generator), their run configs, losses and discriminators are in
`mediatok.training.tasks`; `run.py` maps a YAML's `task:` to them. Checkpoints are read and
written by `mediatok.checkpoint`.
"""

from __future__ import annotations

from mediatok.training.base import Losses, Task, TrainConfig, is_main_process
from mediatok.training.ema import EMA
from mediatok.training.loop import Trainer
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
    "lr_factor",
]
