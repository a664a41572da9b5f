"""Nearest-code search alone: the fused Triton kernel, the chunked
torch path, and a plain full-matrix matmul + argmin, at N = 16384 and the VQ benchmark's (K, D).

    python benchmarks/search.py                 # GPU
    python benchmarks/search.py --device cpu --small

Writes `bench-output/search.json` (or `--out`) and prints a table. Times are medians of
CUDA-event-timed repeats (triton.testing.do_bench) on the GPU, of wall time on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from common import add_device_arguments, small_without_gpu
from mediatok.quantize import nearest_code

SIZES = [(4096, 16), (16384, 8), (8192, 256), (65536, 8)]
SMALL_SIZES = [(512, 16), (1024, 8)]


def plain(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    scores = codebook.float().pow(2).sum(1) - 2 * latents.float() @ codebook.float().t()
    return scores.argmin(dim=1)


def timed(fn, device: str, repeats: int) -> float:
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser)
    parser.add_argument("--num-vectors", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="bench-output/search.json")
    args = parser.parse_args()
    small_without_gpu(args)

    variants = {"torch-chunked": lambda x, c: nearest_code(x, c, backend="torch"), "plain": plain}
    if args.device == "cuda":
        variants = {"triton": lambda x, c: nearest_code(x, c, backend="triton"), **variants}
    rows = []
    for size, dim in SMALL_SIZES if args.small else SIZES:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(args.num_vectors, dim, device=args.device).to(dtype)
            c = torch.randn(size, dim, device=args.device).to(dtype)
            reference = plain(x, c)
            for name, fn in variants.items():
                agree = float((fn(x, c) == reference).float().mean())
                ms = timed(lambda fn=fn, x=x, c=c: fn(x, c), args.device, args.repeats)
                row = {"variant": name, "K": size, "D": dim, "N": args.num_vectors}
                row |= {"dtype": str(dtype).removeprefix("torch."), "ms": round(ms, 4)}
                row |= {"agree_with_plain": round(agree, 5)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "search", "device": device, "rows": rows}, indent=1))
    print(f"\n{device}, N = {args.num_vectors}")
    print(f"{'K':>6} {'D':>4} {'dtype':>9} " + " ".join(f"{v:>24}" for v in variants))
    for size, dim in SMALL_SIZES if args.small else SIZES:
        for dtype in ("float32", "bfloat16"):
            cells = [
                next(
                    r
                    for r in rows
                    if (r["K"], r["D"], r["dtype"], r["variant"]) == (size, dim, dtype, v)
                )
                for v in variants
            ]
            print(
                f"{size:>6} {dim:>4} {dtype:>9} " + " ".join(f"{c['ms']:>21.3f} ms" for c in cells)
            )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
