"""VQ speed and memory: mediatok's `VectorQuantizer` against vector-quantize-pytorch's
`VectorQuantize` (and a plain matmul + argmin VQ), with matched settings.

Both quantizers: EMA codebook (decay 0.99, eps 1e-5), l2 distance, commitment weight 0.25, no
k-means init, no dead-code revival, fp32, the same gradient path (straight-through or rotation
trick, both measured). Modes: `train` (forward + backward of a loss on the output, EMA update
included) and `inference` (eval, no grad). Time is the median over CUDA-event-timed repeats after
a warm-up; memory is the peak allocated during one call above what was allocated before it
(inputs and the module itself excluded). Time and memory come from the same run.

    python benchmarks/quantize.py                      # GPU, the issue's sizes, N = 16384
    python benchmarks/quantize.py --device cpu --small # a quick look on a CPU

Writes `bench-output/quantize.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from common import add_device_arguments, git_commit, small_without_gpu
from mediatok.quantize import build_quantizer

SIZES = [(4096, 16), (16384, 8), (8192, 256), (65536, 8)]
SMALL_SIZES = [(512, 16), (1024, 8)]


def build(impl: str, dim: int, size: int, gradient: str, device: str) -> torch.nn.Module:
    if impl == "mediatok":
        module = build_quantizer(
            "vq",
            dim=dim,
            codebook_size=size,
            ema_update=True,
            decay=0.99,
            eps=1e-5,
            commitment_weight=0.25,
            kmeans_init=False,
            revive_dead_codes=False,
            gradient=gradient,
            check_finite=False,
        )
    elif impl == "mediatok+check":  # the default NaN check: one host sync per call
        module = build_quantizer(
            "vq",
            dim=dim,
            codebook_size=size,
            decay=0.99,
            commitment_weight=0.25,
            revive_dead_codes=False,
            gradient=gradient,
        )
    elif impl == "vqtorch":
        from vector_quantize_pytorch import VectorQuantize

        module = VectorQuantize(
            dim=dim,
            codebook_size=size,
            decay=0.99,
            eps=1e-5,
            kmeans_init=False,
            use_cosine_sim=False,
            threshold_ema_dead_code=0,
            commitment_weight=0.25,
            rotation_trick=gradient == "rotation",
            straight_through=False,
            ema_update=True,
            learnable_codebook=False,
            sync_codebook=False,
        )
    elif impl == "plain":
        module = PlainVQ(dim, size)
    else:
        raise ValueError(f"unknown impl {impl!r}")
    return module.to(device)


class PlainVQ(torch.nn.Module):
    """The textbook version: full distance matrix, argmin, straight-through, no EMA."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("embed", torch.randn(size, dim))

    def forward(self, x: torch.Tensor):
        flat = x.reshape(-1, x.shape[-1])
        scores = self.embed.pow(2).sum(1) - 2 * flat @ self.embed.t()  # (N, K)
        codes = scores.argmin(dim=1)
        q = self.embed[codes]
        loss = 0.25 * F.mse_loss(flat, q)
        return (flat + (q - flat).detach()).view_as(x), codes, loss


def step_fn(impl: str, module: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    def outputs():
        if impl.startswith("mediatok"):
            out = module(x)
            return out.quantized, sum(out.losses.values())
        quantized, _, loss = module(x)
        return quantized, loss

    if mode == "train":
        module.train()

        def run():
            quantized, loss = outputs()
            (quantized.square().mean() + loss).backward()
            x.grad = None

    else:
        module.eval()

        def run():
            with torch.no_grad():
                outputs()

    return run


def measure(run: Callable[[], None], device: str, warmup: int, repeats: int) -> tuple[float, int]:
    """Median milliseconds over `repeats` calls, and peak bytes of one call above its start."""
    for _ in range(warmup):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        times = []
        for _ in range(repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
    else:
        peak = -1  # the CPU allocator keeps no peak statistics
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            run()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times), peak


def profile(args: argparse.Namespace) -> None:
    """Kernel launches and their time in one train step of ours, at the issue's K=16384, D=8."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    size, dim = (1024, 8) if args.small else (16384, 8)
    for gradient in args.gradients.split(","):
        module = build("mediatok", dim, size, gradient, args.device)
        x = torch.randn(1, args.num_vectors, dim, device=args.device, requires_grad=True)
        run = step_fn("mediatok", module, x, "train")
        for _ in range(args.warmup):
            run()
        activities = [ProfilerActivity.CPU]
        if args.device == "cuda":
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        with torch_profile(activities=activities) as prof:
            run()
            if args.device == "cuda":
                torch.cuda.synchronize()
        events = prof.key_averages()
        sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print(f"--- {gradient}: K={size} D={dim} N={args.num_vectors}")
        print(events.table(sort_by=sort, row_limit=30))


def host_profile(args: argparse.Namespace) -> None:
    """Where the host's time goes in 200 train steps (cProfile), the GPU kept busy meanwhile."""
    import cProfile
    import pstats

    size, dim = (1024, 8) if args.small else (16384, 8)
    module = build("mediatok", dim, size, "straight_through", args.device)
    x = torch.randn(1, args.num_vectors, dim, device=args.device, requires_grad=True)
    run = step_fn("mediatok", module, x, "train")
    for _ in range(args.warmup):
        run()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        run()
    if args.device == "cuda":
        torch.cuda.synchronize()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def overhead(args: argparse.Namespace) -> None:
    """Host microseconds per call when the GPU work is negligible: the launch-bound floor."""
    from mediatok.quantize import nearest_code

    device = args.device
    small = torch.randn(64, device=device)
    x8, c8 = torch.randn(64, 8, device=device), torch.randn(64, 8, device=device)
    calls = {
        "torch add_ (one launch)": lambda: small.add_(1.0),
        "nearest_code (64 x 64)": lambda: nearest_code(x8, c8),
    }
    for impl in ("mediatok", "vqtorch", "plain"):
        for gradient in ("straight_through", "rotation"):
            if impl == "plain" and gradient == "rotation":
                continue
            module = build(impl, 8, 64, gradient, device)
            latents = torch.randn(1, 64, 8, device=device, requires_grad=True)
            calls[f"{impl} {gradient} train"] = step_fn(impl, module, latents, "train")
            module = build(impl, 8, 64, gradient, device)
            calls[f"{impl} {gradient} inference"] = step_fn(impl, module, latents, "inference")
    for name, call in calls.items():
        for _ in range(20):
            call()
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(300):
            call()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"{name:>40}: {(time.perf_counter() - began) / 300 * 1e6:8.1f} us per call")


def measure_group(
    args: argparse.Namespace, size: int, dim: int, gradient: str, mode: str
) -> list[dict]:
    """All implementations at one setting, timed in interleaved rounds.

    The host's speed drifts (ours is launch-bound, theirs GPU-bound), so each round times every
    implementation once and the reported time is the median over rounds of each round's median.
    """
    impls = [i for i in args.impls.split(",") if i != "plain" or gradient == "straight_through"]
    runs, rows = {}, {}
    for impl in impls:
        module = build(impl, dim, size, gradient, args.device)
        x = torch.randn(1, args.num_vectors, dim, device=args.device, requires_grad=mode == "train")
        row = {"impl": impl, "K": size, "D": dim, "N": args.num_vectors}
        rows[impl] = row | {"gradient": gradient, "mode": mode, "round_ms": []}
        runs[impl] = (module, x, step_fn(impl, module, x, mode))
    for round_index in range(args.rounds):
        for impl in impls:
            row = rows[impl]
            if "error" in row:
                continue
            try:
                ms, peak = measure(runs[impl][2], args.device, args.warmup, args.repeats)
            except torch.OutOfMemoryError as error:
                row["error"] = str(error).split("\n")[0]
                torch.cuda.empty_cache()
                continue
            row["round_ms"].append(round(ms, 4))
            if round_index == 0:
                row["peak_mb"] = round(peak / 2**20, 1) if peak >= 0 else None
    for row in rows.values():
        row["ms"] = statistics.median(row["round_ms"]) if row["round_ms"] else None
        row.setdefault("peak_mb", None)
        print(json.dumps(row), flush=True)
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, "small sizes for a CPU check")
    parser.add_argument("--num-vectors", type=int, default=16384)
    parser.add_argument("--impls", default="mediatok,mediatok+check,vqtorch,plain")
    parser.add_argument("--gradients", default="straight_through,rotation")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting")
    parser.add_argument("--out", default="bench-output/quantize.json")
    parser.add_argument(
        "--profile", action="store_true", help="print a torch.profiler table of one train step"
    )
    parser.add_argument(
        "--overhead", action="store_true", help="host time per call at a tiny size (launch cost)"
    )
    args = parser.parse_args()
    small_without_gpu(args)
    if args.profile:
        profile(args)
        host_profile(args)
        return
    if args.overhead:
        overhead(args)
        return

    sizes = SMALL_SIZES if args.small else SIZES
    torch.manual_seed(0)
    rows = []
    for size, dim in sizes:
        for gradient in args.gradients.split(","):
            for mode in ("train", "inference"):
                rows += measure_group(args, size, dim, gradient, mode)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    report = {
        "benchmark": "quantize",
        "device": device_name,
        "torch": torch.__version__,
        "commit": git_commit(),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))

    print(f"\n{device_name}, N = {args.num_vectors}; ratio = vqtorch / mediatok")
    print(
        f"{'K':>6} {'D':>4} {'gradient':>16} {'mode':>9} | {'ours ms':>8} {'vqtorch ms':>10} "
        f"{'speedup':>7} | {'ours MB':>8} {'vqtorch MB':>10} {'mem ratio':>9} | {'plain ms':>8}"
    )
    index = {(r["impl"], r["K"], r["D"], r["gradient"], r["mode"]): r for r in rows}
    for size, dim in sizes:
        for gradient in args.gradients.split(","):
            for mode in ("train", "inference"):
                ours = index.get(("mediatok", size, dim, gradient, mode))
                theirs = index.get(("vqtorch", size, dim, gradient, mode))
                plain = index.get(("plain", size, dim, "straight_through", mode))
                if not ours or not theirs or ours["ms"] is None or theirs["ms"] is None:
                    continue
                speedup = theirs["ms"] / ours["ms"]
                ours_mb, theirs_mb = (
                    ours["peak_mb"] or float("nan"),
                    theirs["peak_mb"] or float("nan"),
                )
                mem = theirs_mb / ours_mb if ours_mb > 0 else float("nan")
                plain_ms = plain["ms"] if plain and plain["ms"] else float("nan")
                print(
                    f"{size:>6} {dim:>4} {gradient:>16} {mode:>9} | {ours['ms']:>8.3f} "
                    f"{theirs['ms']:>10.3f} {speedup:>6.1f}x | {ours_mb:>8.1f} "
                    f"{theirs_mb:>10.1f} {mem:>8.1f}x | {plain_ms:>8.3f}"
                )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
