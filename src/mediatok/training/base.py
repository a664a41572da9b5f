"""The interface between the training loop and what it trains: `TrainConfig` (the loop's
settings), `Task` (everything model-specific) and `Losses` (what a task's loss hooks return).

Layer 5.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple

import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from mediatok.config import check_choice, check_positive_int
from mediatok.training.schedule import default_param_groups

__all__ = ["Losses", "Task", "TrainConfig", "is_main_process"]


@dataclasses.dataclass
class TrainConfig:
    """Settings of the training loop (model settings live in the task's own config).

    Attributes:
        steps: optimizer steps of the whole run (the cosine spans them).
        batch_size: samples per micro-batch per rank.
        grad_accumulation: micro-batches per optimizer step.
        lr: peak learning rate (groups from ``Task.param_groups`` may set their own).
        min_lr_ratio: lr at the end of the cosine, as a fraction of ``lr``.
        warmup_steps: linear warmup length.
        schedule: "cosine" or "constant" after warmup.
        weight_decay: AdamW decoupled weight decay (not on 1-D parameters by default).
        betas: AdamW β1, β2.
        grad_clip: max global gradient norm; 0 turns clipping off.
        ema_decay: decay of fp32 EMA weights; 0 keeps none.
        discriminator_lr: None: ``lr``.
        discriminator_betas: None: ``betas`` (GANs often use (0.5, 0.9)).
        precision: "bf16" (autocast, on CUDA or CPU) or "fp32".
        compile: ``torch.compile`` the model (not the discriminator).
        seed: seeds weights, data order and every RNG (rank r uses seed + r after init).
        log_every: steps between logged scalars.
        eval_every: steps between ``Task.evaluate`` calls; 0 never.
        save_every: steps between checkpoints; 0 only at the end (always saved then).
        out_dir: checkpoint, ``metrics.jsonl``, ``tensorboard/`` and task outputs.
        num_workers: DataLoader worker processes per rank.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        tensorboard: write TensorBoard scalars (needs the ``tensorboard`` package).
        resume: continue the run in ``out_dir``, as ``mediatok train --resume`` does: its
            checkpoint must exist (``Trainer``'s ``resume="if_found"`` starts a run that has
            none).
        time_limit_minutes: wall-clock limit of this session of the run (0: none), counted
            from ``Trainer.fit``. The run stops at the first log step past it, on every rank,
            and saves a checkpoint as at its last step; an evaluation that would end past it
            is skipped (its duration is estimated from the last one). ``resume`` continues the
            run (the schedule still spans ``steps``). For jobs under a scheduler's time limit.
    """

    steps: int = 1000
    batch_size: int = 32
    grad_accumulation: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    discriminator_lr: float | None = None
    discriminator_betas: tuple[float, float] | None = None
    precision: Literal["bf16", "fp32"] = "bf16"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 1000
    out_dir: Path = Path("runs/train")
    num_workers: int = 4
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True
    resume: bool = False
    time_limit_minutes: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accumulation", "log_every"):
            check_positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "eval_every", "save_every", "num_workers", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"expected {name} to be an integer >= 0, got {value!r}")
        for name in ("lr", "discriminator_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"expected {name} > 0, got {value}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"expected min_lr_ratio in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"expected ema_decay in [0, 1) (0 is off), got {self.ema_decay}")
        if not self.time_limit_minutes >= 0:
            raise ValueError(
                f"expected time_limit_minutes >= 0 (0 is none), got {self.time_limit_minutes}"
            )
        if not self.weight_decay >= 0 or not self.grad_clip >= 0:
            raise ValueError("expected weight_decay and grad_clip >= 0 (grad_clip 0 is off)")
        for name in ("betas", "discriminator_betas"):
            betas = getattr(self, name)
            if betas is not None and not (len(betas) == 2 and all(0 <= b < 1 for b in betas)):
                raise ValueError(f"expected {name} to be two values in [0, 1), got {betas}")
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        check_choice("precision", self.precision, ("bf16", "fp32"))
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        self.out_dir = Path(self.out_dir)


class Losses(NamedTuple):
    """What :meth:`Task.losses` and :meth:`Task.discriminator_losses` return.

    A plain ``(loss, logs)`` tuple is accepted the same way.

    Attributes:
        loss: scalar to minimize (a mean over the micro-batch, so accumulation averages).
        logs: scalars to log as ``train/<name>``: floats or 1-element tensors, read only at
            log steps, so returning tensors costs no host sync.
    """

    loss: Tensor
    logs: Mapping[str, float | Tensor] = MappingProxyType({})


class Task(ABC):
    """Everything model-specific that the loop needs; subclass it and fill in the abstract
    methods (``build_model``, ``dataset``, ``losses``).

    ``step`` in the hooks is the 0-based index of the optimizer step being computed (the
    number of steps already done). Every hook runs on every rank and must make the same
    collective calls there: decide on ``step``, never on data-dependent values.

    Attributes:
        kind: written as ``kind`` into ``config.json`` so a loader knows what to rebuild;
            None writes the class name.
        find_unused_parameters: tell DDP that some parameters may get no gradient in a step.
    """

    kind: ClassVar[str | None] = None
    find_unused_parameters: ClassVar[bool] = False

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Build the model on CPU; the loop seeds first, then moves and wraps it."""

    @abstractmethod
    def dataset(self) -> Dataset[Any]:
        """The training set (map-style); the loop shards, shuffles and batches it.

        Called after :meth:`build_model` (so it may use what the model decided, such as its
        image size). If it has ``set_epoch(epoch)``, the loop calls it before each epoch (per-epoch
        augmentation seeds; workers then restart each epoch to see it).
        """

    def collate(self, samples: list[Any]) -> Any:
        """Samples -> batch; torch's ``default_collate`` unless overridden."""
        return default_collate(samples)

    @abstractmethod
    def losses(
        self, model: nn.Module, batch: Any, step: int
    ) -> Losses | tuple[Tensor, Mapping[str, float | Tensor]]:
        """The generator loss of one micro-batch, under autocast.

        For an adversarial term call the discriminator that :meth:`build_discriminator`
        returned (keep it on ``self``); the loop freezes its parameters during this pass so
        the generator's gradient flows through it without reaching its ``.grad``.

        Args:
            model: the model as trained (maybe DDP- and compile-wrapped): call it.
            batch: a collated micro-batch, its tensors on the device.
            step: 0-based optimizer step.

        Returns:
            ``(loss, logs)`` as :class:`Losses` or a tuple.
        """

    def build_discriminator(self) -> nn.Module | None:
        """An adversarial discriminator, trained by the loop with its own AdamW, or None."""
        return None

    def discriminator_losses(
        self, model: nn.Module, discriminator: nn.Module, batch: Any, step: int
    ) -> Losses | tuple[Tensor, Mapping[str, float | Tensor]] | None:
        """The discriminator loss of one micro-batch, or None for no discriminator step.

        Called right after :meth:`losses` on the same micro-batch, so a task may keep that
        pass's detached outputs (the reconstruction) on ``self`` rather than recompute them.

        Args:
            model: the raw model (no DDP or compile wrapper), for tasks that must recompute
                under ``torch.no_grad``; its gradients are not used.
            discriminator: the discriminator as trained (maybe DDP-wrapped): call this one.
            batch: the micro-batch of the generator pass.
            step: 0-based optimizer step. Return None, without calling the discriminator,
                before it starts; it then does not step.

        Returns:
            ``(loss, logs)`` as :class:`Losses` or a tuple, or None.
        """
        return None

    def param_groups(self, module: nn.Module) -> list[dict[str, Any]]:
        """AdamW groups, for the model and for the discriminator.

        By default no weight decay on 1-D parameters (biases, norm scales). A group may set
        its own ``lr`` and ``weight_decay``; together the groups must hold every trainable
        parameter of ``module`` exactly once.

        Args:
            module: the raw model or discriminator.

        Returns:
            ``[{"params": [...], **options}, ...]``.
        """
        return default_param_groups(module)

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> Mapping[str, float]:
        """Evaluate every ``eval_every`` steps and at the end, under ``torch.no_grad``.

        Runs on every rank, because a model may hold collectives (quantizer usage counts are
        summed over ranks, so a rank-0-only call would hang); shard the evaluation by rank or
        repeat it, and write files only where :func:`is_main_process`. Rank 0's scalars are
        logged as ``eval/<name>``.

        Args:
            model: the EMA weights when the run keeps them, else the raw model; in eval mode.
            step: optimizer steps done.
            out_dir: the run's output directory, for samples.

        Returns:
            name -> scalar.
        """
        return {}


def is_main_process() -> bool:
    """Whether this process is rank 0 (or not distributed): the one that logs and saves."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
