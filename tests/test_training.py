"""The training loop on toy tasks, CPU only: schedule, accumulation, clipping, EMA, checkpoints,
and the key property: a resumed run gives exactly the losses of an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from mediatok import checkpoint as checkpoint_module
from mediatok.checkpoint import (
    load_checkpoint,
    load_model,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)
from mediatok.config import ConfigError, from_dict
from mediatok.training import (
    EMA,
    EpochBatches,
    Losses,
    Task,
    TrainConfig,
    Trainer,
    lr_factor,
)

DIM = 6


class ToyTask(Task):
    """An MLP (with dropout, so resume must restore the RNG) regressing a fixed linear map."""

    kind = "toy"

    def __init__(self, num_samples: int = 40, crash_at: int | None = None) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.inputs = torch.randn(num_samples, DIM, generator=generator)
        self.targets = self.inputs @ torch.randn(DIM, DIM, generator=generator)
        self.crash_at = crash_at
        self.seen: list[Tensor] = []

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(DIM, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, DIM))

    def dataset(self) -> Dataset[Any]:
        return TensorDataset(self.inputs, self.targets, torch.arange(len(self.inputs)))

    def losses(self, model: nn.Module, batch: Any, step: int) -> Losses:
        if step == self.crash_at:
            raise RuntimeError("simulated crash")
        inputs, targets, index = batch
        self.seen.append(index)
        loss = F.mse_loss(model(inputs), targets)
        return Losses(loss, {"mse": loss.detach(), "constant": 2.0})

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        return {"mse": float(F.mse_loss(model(self.inputs), self.targets))}


class ToyGANTask(ToyTask):
    """ToyTask plus a discriminator that starts at step ``start``."""

    kind = "toy-gan"
    start = 2

    def build_discriminator(self) -> nn.Module:
        self.discriminator = nn.Sequential(nn.Linear(DIM, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.leaked_grads: list[bool] = []
        return self.discriminator

    def losses(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Any]]:
        if step == self.crash_at:
            raise RuntimeError("simulated crash")
        inputs, targets, index = batch
        self.seen.append(index)
        prediction = model(inputs)
        mse = F.mse_loss(prediction, targets)
        # From step 0, so a discriminator that were not frozen would collect gradients early.
        adversarial = -self.discriminator(prediction).mean()
        self.last = prediction.detach()
        return mse + 0.1 * adversarial, {"adversarial": adversarial.detach()}

    def discriminator_losses(
        self, model: nn.Module, discriminator: nn.Module, batch: Any, step: int
    ) -> Losses | None:
        self.leaked_grads.append(any(p.grad is not None for p in self.discriminator.parameters()))
        if step < self.start:
            return None
        real, fake = discriminator(batch[1]), discriminator(self.last)
        loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return Losses(loss, {"hinge": loss.detach()})


def config(tmp_path: Path, name: str = "run", **changes: Any) -> TrainConfig:
    base = {
        "steps": 6,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 2,
        "precision": "fp32",
        "seed": 3,
        "log_every": 1,
        "save_every": 0,
        "out_dir": tmp_path / name,
        "num_workers": 0,
        "device": "cpu",
        "tensorboard": False,
    }
    return TrainConfig(**{**base, **changes})


def records(out_dir: Path, key: str = "train/loss") -> dict[int, float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines) if key in r}


def weights(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------
# the loop


def test_toy_task_trains_and_loss_falls(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=60, log_every=5, eval_every=30, schedule="constant")
    trainer = Trainer(ToyTask(), cfg)
    last = trainer.fit()
    losses = records(cfg.out_dir)
    assert sorted(losses) == list(range(5, 61, 5))
    assert losses[60] < 0.3 * losses[5]
    assert last["train/constant"] == 2.0 and "train/grad_norm" in last and "train/mse" in last
    evaluated = records(cfg.out_dir, "eval/mse")
    assert sorted(evaluated) == [30, 60] and evaluated[60] < evaluated[30]
    assert trainer.step == 60


def test_bf16_autocasts_the_task(tmp_path: Path) -> None:
    class Recording(ToyTask):
        def losses(self, model: nn.Module, batch: Any, step: int) -> Losses:
            prediction = model(batch[0])
            self.dtypes = [*getattr(self, "dtypes", []), prediction.dtype]
            return Losses(F.mse_loss(prediction.float(), batch[1]))

    task = Recording()
    last = Trainer(task, config(tmp_path, steps=2, precision="bf16")).fit()
    assert task.dtypes == [torch.bfloat16] * 2
    assert torch.isfinite(torch.tensor(last["train/loss"]))


def test_lr_schedule_values(tmp_path: Path) -> None:
    schedule = {"steps": 100, "warmup_steps": 10, "min_lr_ratio": 0.1}
    assert lr_factor(0, **schedule) == pytest.approx(1 / 11)
    assert lr_factor(9, **schedule) == pytest.approx(10 / 11)
    assert lr_factor(10, **schedule) == pytest.approx(1.0)
    assert lr_factor(55, **schedule) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, **schedule) == pytest.approx(0.1)
    assert lr_factor(500, **schedule) == pytest.approx(0.1)
    assert lr_factor(50, **schedule, schedule="constant") == 1.0
    assert lr_factor(3, steps=10, warmup_steps=3, schedule="constant") == 1.0

    cfg = config(tmp_path, steps=8, warmup_steps=3, min_lr_ratio=0.2)
    Trainer(ToyTask(), cfg).fit()
    logged = records(cfg.out_dir, "train/lr")
    for step in range(1, 9):  # the record of step s holds the lr of step index s - 1
        expected = 1e-2 * lr_factor(step - 1, steps=8, warmup_steps=3, min_lr_ratio=0.2)
        assert logged[step] == pytest.approx(expected, rel=1e-12)


def test_grad_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    def one_step(name: str, batch_size: int, accumulation: int) -> dict[str, Tensor]:
        cfg = config(tmp_path, name, steps=1, batch_size=batch_size, grad_accumulation=accumulation)
        task = ToyTask()
        task.build_model = lambda: nn.Sequential(nn.Linear(DIM, 32), nn.GELU(), nn.Linear(32, DIM))
        trainer = Trainer(task, cfg)
        start = weights(trainer.model)
        trainer.fit()
        assert not torch.equal(start["0.weight"], trainer.model.state_dict()["0.weight"])
        seen = torch.cat(task.seen)
        return {"seen": seen, **weights(trainer.model)}

    big = one_step("big", 8, 1)
    small = one_step("small", 4, 2)
    assert torch.equal(big.pop("seen"), small.pop("seen"))
    for key in big:
        torch.testing.assert_close(small[key], big[key], rtol=0, atol=1e-6)


def test_grad_clip_caps_the_norm(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=3, grad_clip=0.01)
    trainer = Trainer(ToyTask(), cfg)
    norms: list[float] = []

    def record_norm(optimizer: torch.optim.Optimizer, *_: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(float(torch.nn.utils.get_total_norm(grads)))

    trainer.optimizer.register_step_pre_hook(record_norm)
    trainer.fit()
    unclipped = records(cfg.out_dir, "train/grad_norm")
    assert all(value > 0.1 for value in unclipped.values())  # so clipping had work to do
    assert norms == pytest.approx([0.01] * 3, rel=1e-5)


def test_ema_follows_the_formula(tmp_path: Path) -> None:
    decay = 0.75
    cfg = config(tmp_path, steps=2, ema_decay=decay)
    trainer = Trainer(ToyTask(), cfg)
    history = [weights(trainer.model)]
    trainer.optimizer.register_step_post_hook(lambda *_: history.append(weights(trainer.model)))
    trainer.fit()
    assert trainer.ema is not None
    p0, p1, p2 = history
    ema = trainer.ema.state_dict()
    d0, d1 = 1 / 10, 2 / 11  # warming up: min(decay, (1 + n) / (10 + n)) after n updates
    assert trainer.ema.updates == 2 and trainer.ema.current_decay() == pytest.approx(3 / 12)
    for key in p0:
        expected = d1 * (d0 * p0[key] + (1 - d0) * p1[key]) + (1 - d1) * p2[key]
        torch.testing.assert_close(ema[key], expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(ema["0.weight"], p2["0.weight"])
    _, saved = load_checkpoint(trainer.checkpoint_dir, ema=True)
    assert all(torch.equal(saved[key], ema[key]) for key in ema)


def test_ema_decay_warms_up_to_its_value() -> None:
    model = torch.nn.Linear(2, 2)
    assert EMA(model, 0.999).current_decay() == pytest.approx(0.1)
    assert EMA(model, 0.999, updates=1000).current_decay() == pytest.approx(1001 / 1010)
    assert EMA(model, 0.9, updates=1000).current_decay() == 0.9
    with pytest.raises(ValueError, match="updates"):
        EMA(model, 0.9, updates=-1)


def test_discriminator_starts_late_and_is_frozen_in_the_generator_pass(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=4, discriminator_lr=5e-3)
    task = ToyGANTask()
    trainer = Trainer(task, cfg)
    assert trainer.discriminator is task.discriminator
    start = weights(task.discriminator)
    snapshots = []
    trainer.optimizer.register_step_post_hook(
        lambda *_: snapshots.append(weights(task.discriminator))
    )
    trainer.fit()
    # Steps 0 and 1 return no discriminator loss: it must not move, though the generator's
    # adversarial term runs through it from step 0.
    for key in start:
        assert torch.equal(snapshots[1][key], start[key])
    assert not torch.equal(snapshots[3]["0.weight"], start["0.weight"])
    assert task.leaked_grads == [False] * 4
    assert set(records(cfg.out_dir, "train/hinge")) == {3, 4}
    state = load_training_state(trainer.checkpoint_dir)
    assert state["discriminator_optimizer"]["param_groups"][0]["base_lr"] == 5e-3
    assert (trainer.checkpoint_dir / "discriminator.safetensors").is_file()


@pytest.mark.parametrize("task_class", [ToyTask, ToyGANTask])
def test_resume_gives_exactly_the_same_losses(tmp_path: Path, task_class: type[ToyTask]) -> None:
    # Everything on: warmup + cosine, accumulation, clipping, EMA, dropout. 40 samples in
    # batches of 4 × 2 is 5 steps an epoch: the checkpoint at step 3 is mid-epoch and steps
    # 4..6 cross into epoch 1.
    options = {"grad_accumulation": 2, "grad_clip": 0.5, "ema_decay": 0.9, "save_every": 3}
    straight = Trainer(task_class(), config(tmp_path, "a", **options))
    straight.fit()

    interrupted = config(tmp_path, "b", **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(task_class(crash_at=4), interrupted).fit()  # after logging step 4
    assert json.loads((interrupted.out_dir / "checkpoint/config.json").read_text())["step"] == 3
    assert sorted(records(interrupted.out_dir)) == [1, 2, 3, 4]
    resumed = Trainer(task_class(), interrupted, resume=True)
    assert resumed.step == 3
    resumed.fit()

    expected, got = records(straight.config.out_dir), records(interrupted.out_dir)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # step 4 of the crashed session was replaced
    assert [got[s] for s in (4, 5, 6)] == [expected[s] for s in (4, 5, 6)]
    assert len({expected[s] for s in (4, 5, 6)}) == 3
    for module in ("model", "ema", "discriminator"):
        a, b = getattr(straight, module), getattr(resumed, module)
        if module == "ema":
            a, b = a.module, b.module
        if a is not None:
            assert all(torch.equal(x, y) for x, y in zip(weights(a).values(), weights(b).values()))


def test_time_limit_stops_at_a_log_step_and_resume_continues(tmp_path: Path) -> None:
    straight = Trainer(ToyTask(), config(tmp_path, "a"))
    straight.fit()
    limited = config(tmp_path, "b", log_every=2, eval_every=2, time_limit_minutes=1e-9)
    stopped = Trainer(ToyTask(), limited)
    stopped.fit()  # past the limit at once: stops at the first log step
    assert stopped.stopped_early and not straight.stopped_early
    assert not records(limited.out_dir, "eval/mse")  # saved and stopped before evaluating
    assert json.loads((limited.out_dir / "checkpoint/config.json").read_text())["step"] == 2
    resumed = Trainer(ToyTask(), dataclasses.replace(limited, time_limit_minutes=0.0), resume=True)
    assert resumed.step == 2
    resumed.fit()
    assert resumed.step == 6 and not resumed.stopped_early
    expected, got = records(straight.config.out_dir), records(limited.out_dir)
    assert sorted(got) == [2, 4, 6] and all(got[s] == expected[s] for s in (2, 4, 6))


def test_epoch_batches_resume_mid_epoch() -> None:
    data = TensorDataset(torch.arange(22))
    batches = EpochBatches(data, 4, seed=7)
    assert batches.per_epoch == 5
    first = [next(batches)[0] for _ in range(7)]
    position = batches.state_dict()
    assert position == {"epoch": 1, "index": 2}
    rest = [next(batches)[0] for _ in range(6)]
    again = EpochBatches(data, 4, seed=7)
    again.load_state_dict(position)
    assert all(torch.equal(a, b) for a, b in zip(rest, [next(again)[0] for _ in range(6)]))
    epoch0 = torch.cat(first[:5])
    assert len(set(epoch0.tolist())) == 20  # a permutation: no sample twice in an epoch
    assert not torch.equal(epoch0, torch.cat([*first[5:], *rest[:3]]))  # reshuffled


def test_resume_refuses_changed_batch_size_and_unasked_overwrite(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=2)
    Trainer(ToyTask(), cfg).fit()
    with pytest.raises(ValueError, match="--resume"):
        Trainer(ToyTask(), cfg)
    changed = dataclasses.replace(cfg, batch_size=2, resume=True)
    with pytest.raises(ValueError, match="batch_size: saved 4, now 2"):
        Trainer(ToyTask(), changed)


# --------------------------------------------------------------------------------------------
# checkpoints


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # shared tensor
        self.norm = nn.LayerNorm(4)
        self.register_buffer("count", torch.tensor(3))


# torch.compile's first import warns about torch's own use of torch.jit.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = Tied()
    compiled = torch.compile(model)  # the wrapper only; nothing is compiled until called
    state = {"step": 5, "nested": {"values": [1, 2.5, "x", None, torch.ones(2)]}}
    directory = save_checkpoint(
        tmp_path / "checkpoint",
        compiled,
        kind="tied",
        run={"dim": 4},
        step=5,
        ema=compiled.state_dict(),
        training_state=state,
    )
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["config.json", "ema.safetensors", "model.safetensors", "training_state.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no temporary left
    config, weights_read = load_checkpoint(directory)
    assert config.kind == "tied" and config.step == 5 and config.run == {"dim": 4}
    assert config.mediatok_version
    assert set(weights_read) == set(model.state_dict())  # no `_orig_mod.` prefix

    fresh = Tied()
    load_model(directory, fresh, ema=False)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert fresh.head.weight is fresh.embed.weight
    load_model(directory, Tied(), ema=True)

    loaded = torch.load(directory / "training_state.pt", weights_only=True)
    assert loaded["step"] == 5 and torch.equal(loaded["nested"]["values"][4], torch.ones(2))
    assert load_training_state(directory)["nested"]["values"][:4] == [1, 2.5, "x", None]


def test_checkpoint_refuses_what_weights_only_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(
            tmp_path / "c", Tied(), kind="tied", run={}, training_state={"bad": {"x": object()}}
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="ema"):
        save_checkpoint(tmp_path / "c", Tied(), kind="tied", run={})
        load_checkpoint(tmp_path / "c", ema=True)


def test_interrupted_save_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "checkpoint"
    first = Tied()
    save_checkpoint(directory, first, kind="tied", run={}, step=1, training_state={"step": 1})

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(directory, Tied(), kind="tied", run={}, step=2, training_state={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    config, state = load_checkpoint(directory)
    assert config.step == 1 and load_training_state(directory)["step"] == 1
    assert torch.equal(state["embed.weight"], first.embed.weight)

    # Killed between the two renames: readers find the previous checkpoint under `.old`.
    directory.rename(tmp_path / "checkpoint.old")
    assert resolve_checkpoint(directory) == tmp_path / "checkpoint.old"
    assert load_checkpoint(directory)[0].step == 1
    monkeypatch.undo()
    save_checkpoint(directory, Tied(), kind="tied", run={}, step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert load_checkpoint(directory)[0].step == 3


# --------------------------------------------------------------------------------------------
# config and errors


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps to be a positive integer"),
        ({"lr": -1.0}, "lr > 0"),
        ({"ema_decay": 1.0}, "ema_decay in"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"schedule": "linear"}, "schedule"),
        ({"precision": "fp16"}, "precision"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"time_limit_minutes": -1.0}, "time_limit_minutes >= 0"),
    ],
)
def test_bad_config_values_raise(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_dict(TrainConfig, changes)


def test_config_is_strict_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grad_clip"):
        from_dict(TrainConfig, {"grad_clipping": 1.0})
    cfg = from_dict(TrainConfig, {"out_dir": str(tmp_path), "betas": [0.5, 0.9]})
    assert cfg.out_dir == tmp_path and cfg.betas == (0.5, 0.9)
    from mediatok.config import to_dict

    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_task_errors_are_clear(tmp_path: Path) -> None:
    class NoGrad(ToyTask):
        def losses(self, model: nn.Module, batch: Any, step: int) -> Losses:
            with torch.no_grad():
                return Losses(F.mse_loss(model(batch[0]), batch[1]))

    with pytest.raises(ValueError, match="does not require grad"):
        Trainer(NoGrad(), config(tmp_path, "a")).fit()
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(ToyTask(num_samples=3), config(tmp_path, "b"))
    with pytest.raises(TypeError, match="Task"):
        Trainer(object(), config(tmp_path, "c"))  # type: ignore[arg-type]


def test_tensorboard_and_checkpoint_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = config(tmp_path, steps=2, tensorboard=True)
    Trainer(ToyTask(), cfg, run_config={"hidden": 32}).fit()
    assert list((cfg.out_dir / "tensorboard").glob("events.out.tfevents.*"))
    saved = json.loads((cfg.out_dir / "checkpoint" / "config.json").read_text())
    # each setting once: the loop's settings are the run's `train` section, nowhere else
    assert (
        saved["kind"] == "toy"
        and saved["step"] == 2
        and set(saved)
        == {"mediatok_version", "format_version", "kind", "run", "step", "world_size"}
    )
    assert saved["run"]["hidden"] == 32 and set(saved["run"]) == {"hidden", "train"}
    assert from_dict(TrainConfig, saved["run"]["train"]) == cfg


# --------------------------------------------------------------------------------------------
# found in review: each of these failed before its fix


class NaNAt(ToyTask):
    """ToyTask whose loss is NaN from optimizer step ``nan_from`` on."""

    def __init__(self, nan_from: int) -> None:
        super().__init__()
        self.nan_from = nan_from

    def losses(self, model: nn.Module, batch: Any, step: int) -> Losses:
        loss = F.mse_loss(model(batch[0]), batch[1])
        return Losses(loss * float("nan") if step >= self.nan_from else loss)


def test_a_non_finite_loss_at_a_save_step_keeps_the_good_checkpoint(tmp_path: Path) -> None:
    # Saves every 2 steps, logs every 3: the loss turns NaN in step index 3, whose end (step 4)
    # is a save step but not a log step. The NaN weights must not replace the step-2 checkpoint.
    cfg = config(tmp_path, log_every=3, save_every=2)
    with pytest.raises(FloatingPointError, match="at step 4"):
        Trainer(NaNAt(nan_from=3), cfg).fit()
    saved, state = load_checkpoint(cfg.out_dir / "checkpoint")
    assert saved.step == 2
    assert all(torch.isfinite(value).all() for value in state.values())


def test_a_non_finite_gradient_at_a_save_step_keeps_the_good_checkpoint(tmp_path: Path) -> None:
    # The loss is finite but its gradient is not (sqrt at 0) in step index 3, a save step:
    # the weights it makes are NaN and must not be saved.
    class NaNGradient(ToyTask):
        def losses(self, model: nn.Module, batch: Any, step: int) -> Losses:
            loss = F.mse_loss(model(batch[0]), batch[1])
            if step == 3:
                loss = loss + (model[0].weight.sum() * 0).sqrt()
            return Losses(loss)

    cfg = config(tmp_path, log_every=3, save_every=2)
    with pytest.raises(FloatingPointError, match=r"at step 4 \(loss=[0-9.]+, grad_norm=nan"):
        Trainer(NaNGradient(), cfg).fit()
    assert load_checkpoint(cfg.out_dir / "checkpoint")[0].step == 2


def test_resume_survives_a_torn_last_metrics_line(tmp_path: Path) -> None:
    # A job killed while appending to metrics.jsonl leaves half a line; resuming must not choke.
    cfg = config(tmp_path, save_every=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(ToyTask(crash_at=4), cfg).fit()
    with (cfg.out_dir / "metrics.jsonl").open("a") as file:
        file.write('{"step": 5, "train/lo')
    resumed = Trainer(ToyTask(), cfg, resume=True)
    resumed.fit()
    assert sorted(records(cfg.out_dir)) == [1, 2, 3, 4, 5, 6]


# The resumed session, in a process of its own that is killed (os._exit: no `finally`, no flush)
# in its first step, before it logs anything.
_KILLED_RESUME = """
import os, sys
sys.path.insert(0, sys.argv[1])
from test_training import ToyTask, config
from mediatok.training import Trainer
from pathlib import Path

class Killed(ToyTask):
    def losses(self, model, batch, step):
        os._exit(9)

Trainer(Killed(), config(Path(sys.argv[2]), save_every=3), resume=True).fit()
"""


def test_a_resume_killed_before_its_first_log_keeps_the_history(tmp_path: Path) -> None:
    # The file was rewritten in place (opened with "w", the kept lines buffered): a resumed
    # job killed before its first log write left metrics.jsonl at 0 bytes.
    import subprocess
    import sys

    cfg = config(tmp_path, save_every=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(ToyTask(crash_at=4), cfg).fit()  # steps 1..4 logged, checkpoint at 3
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RESUME, str(Path(__file__).parent), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 9, killed.stderr
    assert sorted(records(cfg.out_dir)) == [1, 2, 3]  # the earlier run's, up to its checkpoint
    Trainer(ToyTask(), cfg, resume=True).fit()
    lines = (cfg.out_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]  # one record each


def labelled_tokens(directory: Path, labels: list[int]) -> Path:
    from mediatok.tokens import TokenSpec, TokenWriter

    spec = TokenSpec(vocab_sizes=[16], layout="N")
    with TokenWriter(directory, spec) as writer:
        for index, label in enumerate(labels):
            writer.add(torch.arange(4) + index % 8, label=label)
    return directory


@pytest.mark.parametrize("generator", ["ar", "masked"])
def test_generator_refuses_labels_beyond_its_classes(tmp_path: Path, generator: str) -> None:
    # Labels 0..3 with model.num_classes=3: label 3 is the null class's row, so an AR model
    # would silently train it as unconditional; a masked model would fail at some step.
    from mediatok.training.run import train
    from mediatok.training.tasks import GeneratorRunConfig

    tokens = labelled_tokens(tmp_path / "tokens", [0, 1, 2, 3] * 2)
    model = {"dim": 16, "depth": 1, "heads": 2, "num_classes": 3}
    loop = config(tmp_path, steps=1, batch_size=8)
    run = from_dict(
        GeneratorRunConfig,
        {"generator": generator, "model": model, "data": {"tokens": str(tokens)}},
    )
    run = dataclasses.replace(run, train=loop)
    with pytest.raises(ValueError, match=r"labels 0 up to 3, beyond model.num_classes=3"):
        train(run)
    assert not (loop.out_dir / "checkpoint").exists()
    # num_classes 0 asks for an unconditional model: the labels are not used (they were, and
    # the model refused them at step 0).
    unconditional = dataclasses.replace(run, model={**model, "num_classes": 0})
    assert train(unconditional).model.config.num_classes == 0


@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        (
            "data",
            {"val_images": 0},
            "val_images to be a positive integer",
        ),  # was an IndexError at the first eval
        ("data", {"repeat": 0}, "repeat to be a positive integer"),  # was taken as 1
        ("loss", {"discriminator_start": -1}, "discriminator_start >= 0"),
    ],
)
def test_image_codec_config_checks_its_values(
    section: str, changes: dict[str, Any], message: str
) -> None:
    from mediatok.training.tasks import ImageDataConfig, ImageLossConfig

    kind = ImageDataConfig if section == "data" else ImageLossConfig
    with pytest.raises(ValueError, match=message):
        from_dict(kind, changes)


def test_learning_rates_in_exponent_form_load(tmp_path: Path) -> None:
    # PyYAML reads `1e-4` (no dot) as a string, so `train.lr=1e-4` and `lr: 1e-4` were refused
    # with "expected float, got '1e-4' (str)".
    from mediatok.config import apply_overrides, load_config

    path = tmp_path / "run.yaml"
    path.write_text("lr: 3e-4\nmin_lr_ratio: 1E-2\n")
    cfg = load_config(TrainConfig, path, ["discriminator_lr=1e-5", "weight_decay=5e-2"])
    assert (cfg.lr, cfg.min_lr_ratio, cfg.discriminator_lr) == (3e-4, 1e-2, 1e-5)
    assert cfg.weight_decay == 0.05
    assert apply_overrides(cfg, ["steps=10"]).steps == 10  # integers stay integers
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(cfg, ["steps=1e3"])


def test_resume_may_add_a_discriminator(tmp_path: Path) -> None:
    # Reconstruction first, the adversarial term added on resume (`loss.adversarial_weight` was
    # 0): the checkpoint has no discriminator to load, so it starts fresh. Resuming crashed on
    # the missing discriminator.safetensors.
    cfg = config(tmp_path, steps=2)
    Trainer(ToyTask(), cfg).fit()
    resumed = Trainer(ToyGANTask(), dataclasses.replace(cfg, steps=4), resume=True)
    assert resumed.step == 2
    resumed.fit()
    assert set(records(cfg.out_dir, "train/hinge")) == {3, 4}
    assert (cfg.out_dir / "checkpoint" / "discriminator.safetensors").is_file()


def test_resume_refuses_a_changed_run_unless_asked_and_needs_a_checkpoint(tmp_path: Path) -> None:
    # A resumed run that changed its data, model or losses only logged a warning; a resume
    # into a folder without a checkpoint started a new run.
    cfg = config(tmp_path, steps=2)
    with pytest.raises(FileNotFoundError, match=r"run.*does not exist; start the run without"):
        Trainer(ToyTask(), cfg, resume=True)
    Trainer(ToyTask(), cfg, run_config={"data": {"dir": "a"}}).fit()
    longer = dataclasses.replace(cfg, steps=4, log_every=2)  # session settings: no question
    with pytest.raises(ValueError, match=r"data.dir: saved 'a', now 'b'.*--allow-changes"):
        Trainer(ToyTask(), longer, run_config={"data": {"dir": "b"}}, resume=True)
    resumed = Trainer(ToyTask(), longer, {"data": {"dir": "b"}}, resume=True, allow_changes=True)
    resumed.fit()
    assert load_checkpoint(cfg.out_dir / "checkpoint")[0].run["data"] == {"dir": "b"}


def test_resume_if_found_starts_or_continues(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=2)
    started = Trainer(ToyTask(), cfg, resume="if_found")
    assert started.step == 0
    started.fit()
    again = Trainer(ToyTask(), cfg, resume="if_found")  # a finished run: nothing to train
    assert again.step == 2 and again.fit() == {} and again.step == 2
    longer = Trainer(ToyTask(), dataclasses.replace(cfg, steps=3), resume="if_found")
    longer.fit()
    assert sorted(records(cfg.out_dir)) == [1, 2, 3]
    with pytest.raises(ValueError, match="expected resume to be True, False or 'if_found'"):
        Trainer(ToyTask(), cfg, resume="yes")  # type: ignore[arg-type]


def test_an_evaluation_that_would_cross_the_time_limit_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A fake clock: a step takes 1 s, an evaluation 100 s, the limit is 180 s. The evaluation
    # at step 2 runs (none measured yet); those at steps 4 and 6 would end past the limit.
    # They ran, and the run stopped at step 5 after 204 s, past its 180.
    from types import SimpleNamespace

    from mediatok.training import loop

    now = [0.0]
    monkeypatch.setattr(
        loop, "time", SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter)
    )

    class Timed(ToyTask):
        def losses(self, model: nn.Module, batch: Any, step: int) -> Losses:
            now[0] += 1.0
            return super().losses(model, batch, step)

        def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
            now[0] += 100.0
            return super().evaluate(model, step, out_dir)

    cfg = config(tmp_path, eval_every=2, time_limit_minutes=3.0)
    trainer = Trainer(Timed(), cfg)
    trainer.fit()
    assert sorted(records(cfg.out_dir, "eval/mse")) == [2]
    assert trainer.step == 6 and not trainer.stopped_early and now[0] < 180
    assert load_checkpoint(cfg.out_dir / "checkpoint")[0].step == 6  # the final save happened
    skipped = [r.getMessage() for r in caplog.records if "skipped the evaluation" in r.getMessage()]
    assert [message.split(":")[0] for message in skipped] == [
        "skipped the evaluation at step 4",
        "skipped the evaluation at step 6",
    ]
