"""Fused nearest-code kernel (Triton). Imported only when a CUDA tensor asks for it.

One program owns BLOCK_N latent rows. It walks the codebook in tiles of BLOCK_K codes; for each
tile it forms the (BLOCK_N, BLOCK_K) block of x·cᵀ on the matrix units, turns it into ‖c‖² − 2·x·c,
and folds the tile's row minima into a running (min, argmin). Only the N codes leave the kernel:
the N×K distances live in registers, one tile at a time.

With `TRITON_INTERPRET=1` the same kernel runs on the CPU through Triton's interpreter, which is how
the CPU test suite checks it against brute force.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _configs() -> list[triton.Config]:
    configs = []
    # Three (BLOCK_N, BLOCK_K) fp32/int32 tiles live in registers: keep them under ~100 per thread.
    for block_n, block_k, warps, stages in (
        (64, 64, 4, 3),
        (32, 128, 4, 3),
        (64, 128, 8, 3),
        (128, 64, 8, 3),
        (128, 128, 16, 3),
    ):
        configs.append(
            triton.Config(
                {"BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages
            )
        )
    return configs


@triton.jit
def _nearest_kernel(
    x_ptr,
    c_ptr,
    norm_ptr,
    out_ptr,
    N,
    K,
    D,
    stride_x,
    stride_c,
    D_BUCKET,
    K_BUCKET,
    N_BUCKET,
    BLOCK_D: tl.constexpr,
    D_TILES: tl.constexpr,
    PRECISION: tl.constexpr,
    NORMS_IN_KERNEL: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)

    # With a single D tile the latent block stays in registers for the whole codebook walk.
    if D_TILES == 1:
        x_block = tl.load(
            x_ptr + rows[:, None] * stride_x + dims[None, :],
            mask=row_ok[:, None] & (dims[None, :] < D),
            other=0.0,
        )

    # Running minimum per (row, column of the tile), folded across tiles with elementwise ops
    # only; the cross-thread reduction over columns happens once, after the walk.
    best = tl.full([BLOCK_N, BLOCK_K], float("inf"), tl.float32)
    best_code = tl.zeros([BLOCK_N, BLOCK_K], tl.int32)
    for k_start in range(0, K, BLOCK_K):
        codes = k_start + tl.arange(0, BLOCK_K)
        code_ok = codes < K
        dot = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        norms = tl.zeros([BLOCK_K], tl.float32)
        if D_TILES == 1:
            c_block = tl.load(  # (BLOCK_D, BLOCK_K): the codebook tile, transposed
                c_ptr + codes[None, :] * stride_c + dims[:, None],
                mask=code_ok[None, :] & (dims[:, None] < D),
                other=0.0,
            )
            dot = tl.dot(x_block, c_block, dot, input_precision=PRECISION)
            if NORMS_IN_KERNEL:
                c_float = c_block.to(tl.float32)
                norms += tl.sum(c_float * c_float, axis=0)
        else:
            # A real loop, not unrolled: unrolling would give every D tile its own pipeline buffers.
            for d_start in range(0, D, BLOCK_D):
                d = d_start + dims
                x_tile = tl.load(
                    x_ptr + rows[:, None] * stride_x + d[None, :],
                    mask=row_ok[:, None] & (d[None, :] < D),
                    other=0.0,
                )
                c_block = tl.load(
                    c_ptr + codes[None, :] * stride_c + d[:, None],
                    mask=code_ok[None, :] & (d[:, None] < D),
                    other=0.0,
                )
                dot = tl.dot(x_tile, c_block, dot, input_precision=PRECISION)
                if NORMS_IN_KERNEL:
                    c_float = c_block.to(tl.float32)
                    norms += tl.sum(c_float * c_float, axis=0)
        if not NORMS_IN_KERNEL:
            norms = tl.load(norm_ptr + codes, mask=code_ok, other=0.0)
        # Padding codes get +inf so they never win.
        norms = tl.where(code_ok, norms, float("inf"))
        scores = norms[None, :] - 2.0 * dot
        # Strict '<' keeps the earlier tile on ties: per column, the lowest index wins.
        better = scores < best
        best = tl.where(better, scores, best)
        best_code = tl.where(better, codes[None, :], best_code)
    row_best = tl.min(best, axis=1)
    # Among the columns that reach the row minimum, the lowest code (as torch.argmin).
    tied = tl.where(best == row_best[:, None], best_code, K)
    tl.store(out_ptr + rows, tl.min(tied, axis=1).to(tl.int64), mask=row_ok)


# The autotuner times each config on the device, so the interpreter (CPU tests) gets one fixed config.
_nearest_autotuned = triton.autotune(
    configs=_configs(), key=["D_BUCKET", "K_BUCKET", "N_BUCKET", "PRECISION", "NORMS_IN_KERNEL"]
)(_nearest_kernel)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _bucket(value: int) -> int:
    """Power-of-two bucket, so the autotuner re-tunes per size class, not per exact size."""
    return 1 << max(0, (value - 1).bit_length())


NORMS_IN_KERNEL = True


def nearest_code_triton(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """`flat` (N, D) and `codebook` (K, D) of one float dtype → (N,) int64 codes."""
    if flat.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"the Triton search takes fp32, bf16 or fp16, got {flat.dtype}")
    flat = flat.contiguous()
    codebook = codebook.contiguous()
    num_rows, dim = flat.shape
    num_codes = codebook.shape[0]
    # Either each program recomputes ‖c‖² from the tiles it loads anyway (no extra launch), or
    # one small torch reduction computes them up front; benchmarks/search.py compares the two.
    norms = flat if NORMS_IN_KERNEL else codebook.float().pow(2).sum(dim=1)
    out = torch.empty(num_rows, dtype=torch.int64, device=flat.device)
    if num_rows == 0:
        return out
    # tl.dot needs at least 16 along the reduced axis; D up to 64 stays in registers, larger D is
    # walked in tiles of 32.
    block_d = max(16, triton.next_power_of_2(dim)) if dim <= 64 else 32
    d_tiles = triton.cdiv(dim, block_d)
    precision = "tf32x3" if flat.dtype == torch.float32 else "ieee"

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_N"]),)

    kernel, fixed = _nearest_autotuned, {}
    if _INTERPRET:
        kernel, fixed = _nearest_kernel, {"BLOCK_N": 32, "BLOCK_K": 32}
    kernel[grid](
        flat,
        codebook,
        norms,
        out,
        num_rows,
        num_codes,
        dim,
        flat.stride(0),
        codebook.stride(0),
        _bucket(dim),
        _bucket(num_codes),
        _bucket(num_rows),
        BLOCK_D=block_d,
        D_TILES=d_tiles,
        PRECISION=precision,
        NORMS_IN_KERNEL=NORMS_IN_KERNEL,
        **fixed,
    )
    return out
