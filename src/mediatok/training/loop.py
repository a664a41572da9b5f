"""The one training loop: device, precision, DDP, accumulation, clipping, EMA, schedule,
logging, evaluation cadence, checkpoint and resume. What is specific to a model sits behind
:class:`Task`; this file contains no model names.

One optimizer step = ``grad_accumulation`` micro-batches of ``batch_size`` samples per rank.
For each micro-batch the generator pass runs (the discriminator frozen, so an adversarial
loss reaches the generator but not the discriminator's gradients), then the discriminator
pass. Then the generator steps, the EMA follows, and the discriminator steps when the task gave
it a loss. Both follow the same lr schedule (``schedule.py``).

Resume is exact: the checkpoint holds the weights, optimizers, every rank's RNG states and the
data position (epoch, batches consumed in it); the sampler's permutation depends on (seed,
epoch) only, so a resumed run reads the same next batch and, on a deterministic backend, gives
the same next loss as an uninterrupted one. A dataset that augments at random should draw from
the torch RNG with ``num_workers=0`` or seed from the sample index to stay exact.

Launch with ``python`` for one device or ``torchrun --nproc-per-node=N`` for DDP.

Layer 5.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from mediatok import checkpoint as ckpt
from mediatok.config import to_dict
from mediatok.progress import progress
from mediatok.runtime import resolve_device, torchrun_rank
from mediatok.training.base import Losses, Task, TrainConfig, is_main_process
from mediatok.training.ema import EMA
from mediatok.training.rng import get_rng_state, seed_everything, set_rng_state
from mediatok.training.schedule import (
    EpochBatches,
    build_adamw,
    lr_factor,
    set_learning_rate,
)

__all__ = ["Losses", "Task", "TrainConfig", "Trainer", "is_main_process"]

logger = logging.getLogger(__name__)

# Train-config fields that must not change on resume, even when asked for: they decide which
# samples make a step and how the optimizer state is to be read.
_FIXED_ON_RESUME = (
    "batch_size",
    "grad_accumulation",
    "seed",
    "lr",
    "betas",
    "weight_decay",
    "ema_decay",
    "discriminator_lr",
    "discriminator_betas",
)

# Run-config keys that may change between the sessions of a run: how long it runs, how often it
# logs, evaluates and saves, where and how fast. Any other change (the data, the model, the
# losses, the schedule) makes a different run and needs `allow_changes`.
SESSION_KEYS = frozenset(
    f"train.{name}"
    for name in (
        "steps",
        "time_limit_minutes",
        "log_every",
        "eval_every",
        "save_every",
        "out_dir",
        "num_workers",
        "device",
        "compile",
        "tensorboard",
        "resume",
    )
)


# Logged scalars that must be finite for a step's weights to be saved.
_CHECKED_BEFORE_SAVE = ("loss", "grad_norm", "discriminator_loss", "discriminator_grad_norm")


class Trainer:
    """Train ``task``'s model under ``config``; everything is built here, :meth:`fit` runs.

    Args:
        task: the model-specific parts.
        config: the loop settings.
        run_config: the run config dataclass (or a JSON-ready mapping) that describes the
            model, saved as ``run`` in ``config.json`` with ``config`` as its ``train``
            section.
        resume: True (or ``config.resume``): continue the run in ``out_dir``, whose checkpoint
            must exist; "if_found": continue it if there is a checkpoint, else start; False:
            start, refusing to overwrite a checkpoint.
        allow_changes: let a resumed run differ from the checkpoint's run config in other keys
            than ``SESSION_KEYS`` (the data, the model, the losses, the schedule); they are
            refused otherwise. The keys of ``_FIXED_ON_RESUME`` (batch size, accumulation, seed,
            optimizer settings) and the world size are refused even then.

    Raises:
        FileNotFoundError: resume asked for, and no checkpoint in ``out_dir``.
        ValueError: a checkpoint there and no resume asked for; a resume that changes the run
            (see ``allow_changes``).

    Attributes:
        model, discriminator: the raw modules (no wrappers); ``ema``: the :class:`EMA` or None;
        optimizer, discriminator_optimizer; step: optimizer steps done; device; rank;
        world_size; checkpoint_dir; stopped_early: the time limit stopped ``fit``;
        last_logged: the scalars ``fit`` returned.
    """

    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        run_config: Any = None,
        *,
        resume: bool | Literal["if_found"] = False,
        allow_changes: bool = False,
    ) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"expected a mediatok.training.Task, got {type(task).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"expected a TrainConfig, got {type(config).__name__}")
        self.task, self.config = task, config
        if dataclasses.is_dataclass(run_config) and not isinstance(run_config, type):
            run_config = to_dict(run_config)
        # Each setting once: the loop's settings are the run's `train` section.
        run = {**(run_config or {}), "train": to_dict(config)}
        self.run_config = json.loads(json.dumps(run))  # JSON types, as when reloaded
        if config.tensorboard:
            _require_tensorboard()
        self.device, self._owns_group = _setup_device_and_group(config.device)
        self.rank, self.world_size = torchrun_rank()
        self.is_main = self.rank == 0
        self.stopped_early = False  # set by fit when the time limit stops the run
        self.last_logged: dict[str, float] = {}  # what fit returned
        self.out_dir = config.out_dir
        self.checkpoint_dir = self.out_dir / "checkpoint"
        found = ckpt.resolve_checkpoint(self.checkpoint_dir)
        if resume not in (True, False, "if_found"):
            raise ValueError(f"expected resume to be True, False or 'if_found', got {resume!r}")
        if resume == "if_found":
            resume = found is not None
        resume = resume or config.resume
        if found is not None and not resume:
            raise ValueError(
                f"{found} exists: resume that run (mediatok train --resume, resume=True) or "
                "choose another train.out_dir"
            )
        if resume and found is None:
            where = "holds no checkpoint" if self.out_dir.is_dir() else "does not exist"
            raise FileNotFoundError(
                f"{self.out_dir}: expected a run to resume (its {self.checkpoint_dir}), but the "
                f"folder {where}; start the run without --resume (resume=False)"
            )
        resume_from = found if resume else None
        if resume_from is not None:
            self._check_resumable(resume_from, allow_changes)

        # Identical initial weights on every rank (DDP would broadcast them anyway).
        seed_everything(config.seed)
        self.model = _checked_module(task.build_model(), "build_model").to(self.device)
        built = task.build_discriminator()
        self.discriminator = (
            None if built is None else _checked_module(built, "build_discriminator")
        )
        if self.discriminator is not None:
            self.discriminator.to(self.device)
        state: dict[str, Any] = {}
        if resume_from is not None:
            state = ckpt.load_training_state(resume_from)
            self.model.load_state_dict(ckpt.load_weights(resume_from / ckpt.MODEL_NAME))
            path = resume_from / ckpt.DISCRIMINATOR_NAME
            if self.discriminator is not None and path.is_file():
                self.discriminator.load_state_dict(ckpt.load_weights(path))
            elif self.discriminator is not None:
                # The run trained without one (an adversarial weight of 0 until now).
                logger.warning("%s holds no discriminator: it starts fresh", resume_from)
                state.pop("discriminator_optimizer", None)
        self.ema = None
        if config.ema_decay > 0:
            self.ema = EMA(self.model, config.ema_decay, updates=int(state.get("step", 0)))
        if self.ema is not None and resume_from is not None:
            self.ema.load_state_dict(ckpt.load_weights(resume_from / ckpt.EMA_NAME))

        fused = self.device.type == "cuda"
        self.optimizer = build_adamw(
            self.model,
            task.param_groups(self.model),
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=fused,
        )
        self.discriminator_optimizer = None
        if self.discriminator is not None:
            self.discriminator_optimizer = build_adamw(
                self.discriminator,
                task.param_groups(self.discriminator),
                lr=config.discriminator_lr or config.lr,
                betas=config.discriminator_betas or config.betas,
                weight_decay=config.weight_decay,
                fused=fused,
            )
        if state:
            _load_optimizer(self.optimizer, state["optimizer"])
            if self.discriminator_optimizer is not None and "discriminator_optimizer" in state:
                _load_optimizer(self.discriminator_optimizer, state["discriminator_optimizer"])

        self._model = torch.compile(self.model) if config.compile else self.model
        self._discriminator = self.discriminator
        if self.world_size > 1:
            self._model = self._wrap_ddp(self._model)
            if self.discriminator is not None:
                self._discriminator = self._wrap_ddp(self.discriminator)

        self._batches = EpochBatches(
            task.dataset(),
            config.batch_size,
            seed=config.seed,
            rank=self.rank,
            world_size=self.world_size,
            collate=task.collate,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        self.step = 0
        seed_everything(config.seed + self.rank)  # dropout etc. differ between ranks
        if state:
            self.step = int(state["step"])
            self._batches.load_state_dict(state["data"])
            set_rng_state(state["rng"][self.rank])

    def _wrap_ddp(self, module: nn.Module) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        find = self.task.find_unused_parameters
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find)

    def _check_resumable(self, directory: Path, allow_changes: bool) -> None:
        """Raise unless this run may continue the checkpoint at ``directory`` (see ``__init__``'s
        ``allow_changes``); log the settings it changes."""
        saved = ckpt.read_checkpoint(directory)
        now, before = self.run_config["train"], saved.run.get("train", {})
        changed = [
            f"{key}: saved {before.get(key)!r}, now {now[key]!r}"
            for key in _FIXED_ON_RESUME
            if before.get(key) != now[key]
        ]
        if (saved.world_size or 1) != self.world_size:
            changed.append(f"world size: saved {saved.world_size}, now {self.world_size}")
        if changed:
            raise ValueError(f"cannot resume {directory} exactly; changed: {'; '.join(changed)}")
        differ = _differences(saved.run, self.run_config)
        shown = [
            f"{key}: saved {_short(_lookup(saved.run, key))}, now "
            f"{_short(_lookup(self.run_config, key))}"
            for key in differ
        ]
        session = [text for key, text in zip(differ, shown) if key in SESSION_KEYS]
        settled = [text for key, text in zip(differ, shown) if key not in SESSION_KEYS]
        if settled and not allow_changes:
            raise ValueError(
                f"{directory / ckpt.CONFIG_NAME}: resuming would change the run: "
                f"{'; '.join(settled)}. A resumed run keeps its saved settings but for "
                f"{', '.join(sorted(SESSION_KEYS))}; to change these anyway, pass "
                "--allow-changes (allow_changes=True), or start a new run in another "
                "train.out_dir"
            )
        if settled and self.is_main:
            logger.warning("resuming %s with changed settings: %s", directory, "; ".join(settled))
        if session and self.is_main:
            logger.info("resuming %s with %s", directory, "; ".join(session))

    # ----------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> dict[str, float]:
        """Train until ``config.steps`` (or ``config.time_limit_minutes``), logging, evaluating
        and saving on the way.

        Every rank calls it. The last step always writes a checkpoint. Logged ``train/*``
        scalars are rank 0's, averaged over the step's micro-batches. A run stopped by the time
        limit saves (before any evaluation due at that step) and sets ``stopped_early``; the
        limit counts from the call, after the model is built and the checkpoint loaded. Under
        a time limit, an evaluation that would end past it (if it takes as long as the last
        one of this session) is skipped with a warning; the final save still happens.

        Returns:
            The last logged scalars (on rank 0; an empty dict on other ranks).

        Raises:
            FloatingPointError: a non-finite loss (checked at log steps, where the host syncs),
                or a non-finite loss or gradient norm at a save step (nothing is saved).
        """
        cfg = self.config
        writer, metrics = self._open_logs() if self.is_main else (None, None)
        bar = progress(
            desc="train", total=cfg.steps, initial=self.step, unit="step", enabled=self.is_main
        )
        last: dict[str, float] = {}
        self.stopped_early = False
        limit = 60 * cfg.time_limit_minutes
        deadline = time.monotonic() + limit if limit else None
        eval_seconds: float | None = None  # the last evaluation's, for the time limit
        self.model.train()
        if self.step >= cfg.steps and self.is_main:
            logger.info(
                "%s is at step %d of %d: nothing to train", self.out_dir, self.step, cfg.steps
            )
        try:
            started = time.perf_counter()
            done_since_log = 0
            while self.step < cfg.steps:
                logs = self._train_step(self.step)
                self.step += 1
                done_since_log += 1
                bar.update(1)
                final = self.step == cfg.steps
                if deadline is not None and not final and self.step % cfg.log_every == 0:
                    self.stopped_early = self._past(deadline)
                if self.step % cfg.log_every == 0 or final:
                    record = _read_scalars(logs, self.step, prefix="train/")
                    elapsed = time.perf_counter() - started
                    record["train/step_time"] = elapsed / done_since_log
                    started, done_since_log = time.perf_counter(), 0
                    bar.set_postfix(
                        loss=f"{record['train/loss']:.4g}", lr=f"{record['train/lr']:.3g}"
                    )
                    last = self._write(record, writer, metrics)
                if self.stopped_early:  # save before anything slow: the job may be killed soon
                    self._check_finite(logs)
                    self.save()
                    if self.is_main:
                        logger.warning(
                            "time limit of %g minutes reached: saved at step %d of %d; resume "
                            "to continue",
                            cfg.time_limit_minutes,
                            self.step,
                            cfg.steps,
                        )
                    break
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or final):
                    if self._evaluation_fits(deadline, eval_seconds):
                        began = time.monotonic()
                        last = {**last, **self._write(self._evaluate(), writer, metrics)}
                        eval_seconds = time.monotonic() - began
                    started = time.perf_counter()  # step_time measures training only
                if final or (cfg.save_every and self.step % cfg.save_every == 0):
                    self._check_finite(logs)
                    self.save()
                    started = time.perf_counter()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if metrics is not None:
                metrics.close()
            if self._owns_group and dist.is_initialized():
                dist.destroy_process_group()
        self.last_logged = last if self.is_main else {}
        return self.last_logged

    def _check_finite(self, logs: Mapping[str, float | Tensor]) -> None:
        """Raise before a save when this step's loss or gradient norm is not finite (on any
        rank): the weights are then NaN, or about to be, and must not replace the last good
        checkpoint. Save steps need not be log steps, where :func:`_read_scalars` checks."""
        names = [name for name in _CHECKED_BEFORE_SAVE if name in logs]
        values = torch.stack(
            [torch.as_tensor(logs[name], device=self.device).float() for name in names]
        )
        bad = (~torch.isfinite(values)).float()
        if self.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every rank raises, none waits in save
        if bad.any():
            found = ", ".join(f"{name}={float(v)}" for name, v in zip(names, values.tolist()))
            raise FloatingPointError(
                f"non-finite values at step {self.step} ({found} here; any rank may have them): "
                "not saved, the last checkpoint is kept"
            )

    def _evaluation_fits(self, deadline: float | None, seconds: float | None) -> bool:
        """Whether the evaluation due now ends before `deadline`, if it takes `seconds` (the
        last one's; None: none yet, so it runs); logs a warning when it does not. Every rank
        gets rank 0's answer, since an evaluation may hold collectives."""
        if deadline is None or seconds is None or not self._past(deadline, ahead=seconds):
            return True
        if self.is_main:
            logger.warning(
                "skipped the evaluation at step %d: the last one took %.0f s and this one "
                "would end past train.time_limit_minutes=%g",
                self.step,
                seconds,
                self.config.time_limit_minutes,
            )
        return False

    def _past(self, deadline: float, ahead: float = 0.0) -> bool:
        """Whether rank 0's clock, `ahead` seconds from now, is past `deadline` (a
        `time.monotonic()` value): every rank gets rank 0's answer, so all stop at the same
        step."""
        past = torch.tensor(float(time.monotonic() + ahead > deadline), device=self.device)
        if self.world_size > 1:
            dist.broadcast(past, src=0)
        return bool(past)

    def _train_step(self, step: int) -> dict[str, float | Tensor]:
        cfg, task = self.config, self.task
        accumulation = cfg.grad_accumulation
        logs: dict[str, float | Tensor] = {}
        factor = lr_factor(
            step,
            steps=cfg.steps,
            warmup_steps=cfg.warmup_steps,
            schedule=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        logs["lr"] = set_learning_rate(self.optimizer, factor)
        discriminator_stepped = False
        for micro in range(accumulation):
            last = micro == accumulation - 1
            batch = _to_device(next(self._batches), self.device)
            with _no_sync(self._model, last):
                with self._frozen_discriminator(), self._autocast():
                    out = _as_losses(task.losses(self._model, batch, step), "losses")
                (out.loss / accumulation).backward()
            _add_logs(logs, {"loss": out.loss, **out.logs}, accumulation)
            if self._discriminator is None:
                continue
            with _no_sync(self._discriminator, last):
                with self._autocast():
                    result = task.discriminator_losses(self.model, self._discriminator, batch, step)
                if result is not None:
                    result = _as_losses(result, "discriminator_losses")
                    (result.loss / accumulation).backward()
                    discriminator_stepped = True
                    _add_logs(
                        logs, {"discriminator_loss": result.loss, **result.logs}, accumulation
                    )

        logs["grad_norm"] = self._clip(self.model)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        if discriminator_stepped:
            assert self.discriminator is not None and self.discriminator_optimizer is not None
            set_learning_rate(self.discriminator_optimizer, factor)
            logs["discriminator_grad_norm"] = self._clip(self.discriminator)
            self.discriminator_optimizer.step()
            self.discriminator_optimizer.zero_grad(set_to_none=True)
        return logs

    def _clip(self, module: nn.Module) -> Tensor:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        if self.config.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
        return torch.nn.utils.get_total_norm(grads)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _frozen_discriminator(self) -> Iterator[None]:
        # The generator's adversarial loss backpropagates through the discriminator; freezing
        # its parameters keeps that gradient out of the discriminator's own accumulation.
        if self.discriminator is None:
            yield
            return
        trainable = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in trainable:
                p.requires_grad_(True)

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        try:
            with self._autocast():
                scores = self.task.evaluate(model, self.step, self.out_dir)
        finally:
            if self.ema is None:
                self.model.train()
        return {"step": self.step, **{f"eval/{k}": float(v) for k, v in scores.items()}}

    # ----------------------------------------------------------------------------------------
    # logging and checkpoints

    def _open_logs(self) -> tuple[Any, Any]:
        """Open ``metrics.jsonl`` for appending, after :func:`_drop_records_after` has cut the
        records this session redoes, and the TensorBoard writer if asked for."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "metrics.jsonl"
        _drop_records_after(path, self.step)
        metrics = path.open("a", encoding="utf-8")
        writer = None
        if self.config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # checked by _require_tensorboard

            purge = self.step + 1 if self.step > 0 else None
            writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge)
        return writer, metrics

    def _write(self, record: dict[str, float], writer: Any, metrics: Any) -> dict[str, float]:
        if not self.is_main or len(record) <= 1:
            return {}
        step = int(record["step"])
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
        if writer is not None:
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(key, value, step)
        logger.info(
            "step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
        )
        return record

    def save(self) -> Path:
        """Write ``out_dir/checkpoint`` (rank 0) after gathering every rank's RNG state.

        Returns:
            The checkpoint directory.
        """
        rng = [get_rng_state()]
        if self.world_size > 1:
            rng = [None] * self.world_size
            dist.all_gather_object(rng, get_rng_state())
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            state: dict[str, Any] = {
                "step": self.step,
                "data": self._batches.state_dict(),
                "rng": rng,
                "optimizer": self.optimizer.state_dict(),
            }
            if self.discriminator_optimizer is not None:
                state["discriminator_optimizer"] = self.discriminator_optimizer.state_dict()
            ckpt.save_checkpoint(
                self.checkpoint_dir,
                self.model,
                kind=self.task.kind or type(self.task).__name__,
                run=self.run_config,
                step=self.step,
                world_size=self.world_size,
                ema=None if self.ema is None else self.ema.state_dict(),
                discriminator=self.discriminator,
                training_state=state,
            )
        if self.world_size > 1:
            dist.barrier()  # no rank runs ahead (or reads the checkpoint) before it is whole
        return self.checkpoint_dir


# --------------------------------------------------------------------------------------------
# helpers


def _setup_device_and_group(name: str) -> tuple[torch.device, bool]:
    """Pick the device and join the process group ``torchrun`` describes, if any."""
    device = resolve_device(name)
    use_cuda = device.type == "cuda"
    owns = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None
        )
        owns = True
    return device, owns


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError(
            "TrainConfig.tensorboard is true but the tensorboard package is not installed: "
            "pip install tensorboard, or set tensorboard=false"
        ) from None


def _load_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """``load_state_dict``, keeping this machine's kernel choice: a saved ``fused=True`` (CUDA)
    must not follow a run that resumes on another device type."""
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, kernels):
        group.update(kept)


def _checked_module(module: Any, hook: str) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"Task.{hook}() must return an nn.Module, got {type(module).__name__}")
    return module


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (nested in dicts, lists, tuples) to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _drop_records_after(path: Path, step: int) -> None:
    """Keep only the records of ``metrics.jsonl`` up to ``step`` (the checkpoint's): a resumed
    run redoes the steps after it, so their old records go, and each step keeps one record.

    The kept lines are written to a temporary file that is renamed over ``path``: a job killed
    at any moment leaves either the old file or the kept lines, never a truncated history. The
    file is left untouched when nothing is to go (the usual resume after a time-limit stop).

    Args:
        path: the run's ``metrics.jsonl``; it need not exist.
        step: the last step whose records stay (0 for a run that starts: none stay).
    """
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    kept = [line for line in lines if _record_step(line) <= step]
    if not text or (kept == lines and text.endswith("\n")):
        return
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in kept)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _record_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line; infinity (dropped on resume) for an empty or torn
    line, which a job killed while appending leaves behind."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _lookup(data: Any, key: str) -> Any:
    """The value at dotted ``key`` in nested mappings (None where a part is missing)."""
    for part in key.split(".") if key != "(all)" else []:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """Dotted keys where two JSON values differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            item
            for key in sorted(set(saved) | set(now))
            for item in _differences(saved.get(key), now.get(key), f"{where}.{key}".lstrip("."))
        ]
    return [] if saved == now else [where or "(all)"]


@contextlib.contextmanager
def _no_sync(module: nn.Module, sync: bool) -> Iterator[None]:
    """DDP's ``no_sync`` unless ``sync``: gradients are all-reduced on the last micro-batch only."""
    if sync or not isinstance(module, DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def _as_losses(result: Any, hook: str) -> Losses:
    if not isinstance(result, Losses):
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                f"Task.{hook} must return Losses or (loss, logs), got {type(result).__name__}"
            )
        result = Losses(*result)
    if not (isinstance(result.loss, Tensor) and result.loss.ndim == 0):
        raise ValueError(f"Task.{hook}: expected a scalar loss tensor, got {result.loss!r:.80}")
    if not result.loss.requires_grad:
        raise ValueError(f"Task.{hook}: the loss does not require grad (computed under no_grad?)")
    return result


def _add_logs(
    logs: dict[str, float | Tensor], new: Mapping[str, float | Tensor], count: int
) -> None:
    """Accumulate the mean over micro-batches; tensors stay on their device (no host sync)."""
    for key, value in new.items():
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f"log {key!r} must be a scalar, got shape {tuple(value.shape)}")
            value = value.detach().float().reshape(())
        else:
            value = float(value)
        logs[key] = logs[key] + value / count if key in logs else value / count


def _read_scalars(logs: Mapping[str, float | Tensor], step: int, prefix: str) -> dict[str, float]:
    """The step's scalars as floats (the host syncs here, at log steps only).

    Raises:
        FloatingPointError: the loss is NaN or infinite.
    """
    record: dict[str, float] = {"step": step}
    record.update({prefix + key: float(value) for key, value in logs.items()})
    if not np.isfinite(record[prefix + "loss"]):
        raise FloatingPointError(
            f"non-finite loss {record[prefix + 'loss']} at step {step}: {record}"
        )
    return record
