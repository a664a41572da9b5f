"""Fused nearest-code kernel (Triton). Imported only when a CUDA tensor asks for it.

Program (i, j) owns BLOCK_N latent rows and the j-th slice of the codebook. It walks its slice in
tiles of BLOCK_K codes; for each tile it forms the (BLOCK_N, BLOCK_K) block of x·cᵀ on the matrix
units, turns it into ‖c‖² − 2·x·c, and folds it into a running elementwise minimum. At the end it
reduces over columns once and merges its (distance, code) into the row's result with a 64-bit
atomic minimum. Only the N codes leave the kernel: the N×K distances live in registers, one tile
at a time.

With `TRITON_INTERPRET=1` the same kernel runs on the CPU through Triton's interpreter, which is how
the CPU test suite checks it against brute force.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from mediatok.quantize._launch import CachedLauncher


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
    key_ptr,
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
    SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)
    # Split-K: program (i, j) walks the j-th slice of the codebook for row block i, so a small N
    # still fills the GPU. Slices are whole multiples of 128 codes (every BLOCK_K divides 128).
    per_split = tl.cdiv(tl.cdiv(K, tl.num_programs(1)), 128) * 128
    k_begin = tl.program_id(1) * per_split
    k_end = tl.minimum(K, k_begin + per_split)

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
    for k_start in range(k_begin, k_end, BLOCK_K):
        codes = k_start + tl.arange(0, BLOCK_K)
        code_ok = codes < k_end
        dot = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        if D_TILES == 1:
            c_block = tl.load(  # (BLOCK_D, BLOCK_K): the codebook tile, transposed
                c_ptr + codes[None, :] * stride_c + dims[:, None],
                mask=code_ok[None, :] & (dims[:, None] < D),
                other=0.0,
            )
            dot = tl.dot(x_block, c_block, dot, input_precision=PRECISION)
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
        # Codes past the slice get +inf so they never win.
        norms = tl.load(norm_ptr + codes, mask=code_ok, other=float("inf"))
        scores = norms[None, :] - 2.0 * dot
        # Strict '<' keeps the earlier tile on ties: per column, the lowest index wins.
        better = scores < best
        best = tl.where(better, scores, best)
        best_code = tl.where(better, codes[None, :], best_code)
    row_best = tl.min(best, axis=1)
    # Among the columns that reach the row minimum, the lowest code (as torch.argmin).
    tied = tl.where(best == row_best[:, None], best_code, K)
    row_code = tl.min(tied, axis=1)
    if SPLIT:
        # Merge the slices: pack (distance, code) into one int64 whose signed order is the order
        # of the distance, then of the code, and keep the smallest with one atomic per row. The
        # float's bits become an order-preserving int32 by flipping the magnitude bits of
        # negative values.
        bits = row_best.to(tl.int32, bitcast=True)
        ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        key = (ordered.to(tl.int64) << 32) | row_code.to(tl.int64)
        tl.atomic_min(key_ptr + rows, key, mask=row_ok & (k_begin < K))
    else:
        tl.store(key_ptr + rows, row_code.to(tl.int64), mask=row_ok)


# The autotuner times each config on the device, so the interpreter (CPU tests) gets one fixed config.
_nearest_autotuned = triton.autotune(
    configs=_configs(), key=["D_BUCKET", "K_BUCKET", "N_BUCKET", "PRECISION", "SPLIT"]
)(_nearest_kernel)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_launch_nearest = CachedLauncher(
    _nearest_autotuned, value_keys=("D_BUCKET", "K_BUCKET", "N_BUCKET")
)


def _bucket(value: int) -> int:
    """Power-of-two bucket, so the autotuner re-tunes per size class, not per exact size."""
    return 1 << max(0, (value - 1).bit_length())


def nearest_code_triton(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """`flat` (N, D) and `codebook` (K, D) of one float dtype → (N,) int64 codes."""
    if flat.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"the Triton search takes fp32, bf16 or fp16, got {flat.dtype}")
    if codebook.shape[0] >= 2**31:
        raise ValueError(f"the Triton search takes K < 2**31 codes, got {codebook.shape[0]}")
    flat = flat.contiguous()
    codebook = codebook.contiguous()
    num_rows, dim = flat.shape
    num_codes = codebook.shape[0]
    # Split the codebook across programs only when the row blocks alone leave SMs idle.
    split = triton.cdiv(num_rows, 64) < _multiprocessors(flat.device)
    if split:
        keys = torch.full((num_rows,), torch.iinfo(torch.int64).max, device=flat.device)
    else:
        keys = torch.empty(num_rows, dtype=torch.int64, device=flat.device)
    if num_rows == 0:
        return keys
    # ‖c‖² up front: one small reduction, cheaper than redoing it in every row block's loop.
    norms = torch.linalg.vector_norm(codebook, dim=1, dtype=torch.float32).square()
    # tl.dot needs at least 16 along the reduced axis; D up to 64 stays in registers, larger D is
    # walked in tiles of 32.
    block_d = max(16, triton.next_power_of_2(dim)) if dim <= 64 else 32
    d_tiles = triton.cdiv(dim, block_d)
    precision = "tf32x3" if flat.dtype == torch.float32 else "ieee"
    target_programs = 4 * _multiprocessors(flat.device)

    def grid(meta):
        row_blocks = triton.cdiv(num_rows, meta["BLOCK_N"])
        if not split:
            return (row_blocks, 1)
        splits = min(triton.cdiv(target_programs, row_blocks), triton.cdiv(num_codes, 128))
        return (row_blocks, max(1, splits))

    launch, fixed = _launch_nearest, {}
    if _INTERPRET:
        launch, fixed = CachedLauncher(_nearest_kernel), {"BLOCK_N": 32, "BLOCK_K": 32}
    launch(
        grid,
        flat,
        codebook,
        norms,
        keys,
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
        SPLIT=split,
        **fixed,
    )
    return keys.bitwise_and_(0xFFFFFFFF) if split else keys  # the code is in the low 32 bits


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    if _INTERPRET or device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count
