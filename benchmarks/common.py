"""What every benchmark script shares: timing with CUDA syncs and peak memory, the commit, and
the JSON report. Benchmarks run as scripts (`python benchmarks/x.py`), so this imports as
`common`."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timed(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds per call, and peak GiB allocated above the start (CUDA only, else nan)."""
    for _ in range(warmup):
        fn()
    peak = float("nan")
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - before) / 2**30
    return statistics.median(times), peak


def device_argument(text: str) -> str:
    """`--device` of every benchmark: "cpu" or "cuda"; "cuda:N" makes GPU N the current one and
    reads as "cuda", so that the benchmarks' `device == "cuda"` tests hold for any GPU."""
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)
    return device.type


def add_device_arguments(parser: argparse.ArgumentParser, small_help: str | None = None) -> None:
    """`--device` (see `device_argument`; "cuda" when there is a GPU, else "cpu") and `--small`
    (the script's small sizes, for a CPU); `small_without_gpu` then applies the CPU default."""
    parser.add_argument(
        "--device",
        type=device_argument,
        default="cuda" if torch.cuda.is_available() else "cpu",
    )
    parser.add_argument("--small", action="store_true", help=small_help)


def small_without_gpu(
    args: argparse.Namespace, reason: str = "the GPU sizes need a CUDA device"
) -> None:
    """On a CPU the GPU sizes would take hours: set `args.small` there, saying so and why."""
    if args.device == "cpu" and not args.small:
        print(f"no GPU: measuring the small sizes (--small); {reason}")
        args.small = True


def git_commit() -> str | None:
    """The checked-out commit, or `$MEDIATOK_COMMIT` where there is no git (device machines)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("MEDIATOK_COMMIT")


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def write_report(path: str | os.PathLike, benchmark: str, device: str, **fields) -> Path:
    """Write `{"benchmark", "device", "torch", "commit", **fields}` as JSON; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": benchmark,
        "device": device_name(device),
        "torch": torch.__version__,
        "commit": git_commit(),
        **fields,
    }
    out.write_text(json.dumps(report, indent=1))
    return out
