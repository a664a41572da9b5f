"""Fused EMA-VQ training step (Triton). Imported only when a CUDA tensor asks for it.

In eager PyTorch the bookkeeping around the nearest-code search (gather the code vectors, the
commitment loss, scatter the EMA sums and counts, the EMA update, the new codebook, the dead-code
clock) is some twenty small kernels, and at the sizes a tokenizer uses the time goes to launching
them, not to running them. Here it is three:

1. `_gather_scatter` (forward): q = embed[codes]; Σ(x − q)² for the commitment loss; per code, the
   sum of its latents and its count; the number of tokens seen. All into one fp32 buffer
   `stats` laid out as `[K·(d+1) sums and counts | seen | squared error | dead]`, so DDP needs one
   all-reduce of its first K·(d+1)+1 entries.
2. `_finalize` (after the all-reduce): EMA of sums and counts, the new code vectors (mean of the
   assigned latents, unit norm for cosine), the dead-code clock in tokens, the dead count.
3. `_backward`: the gradient of the commitment loss plus that of the output (straight-through
   or the rotation trick), in one pass.

`vq.py` holds the equivalent torch code for the CPU; tests check that both agree (on the CPU
through Triton's interpreter, on a GPU directly).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mediatok.quantize._launch import CachedLauncher


@triton.jit
def _gather_scatter(
    x_ptr,
    embed_ptr,
    codes_ptr,
    q_ptr,
    stats_ptr,
    N,
    D,
    K,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_D)  # BLOCK_D > D: column D carries the count
    in_vector = row_ok[:, None] & (cols[None, :] < D)
    codes = tl.load(codes_ptr + rows, mask=row_ok, other=0)
    x = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=in_vector, other=0.0)
    q = tl.load(embed_ptr + codes[:, None] * D + cols[None, :], mask=in_vector, other=0.0)
    tl.store(q_ptr + rows[:, None] * D + cols[None, :], q, mask=in_vector)
    diff = x - q
    tail = stats_ptr + K * (D + 1)
    tl.atomic_add(tail + 1, tl.sum(diff * diff))
    values = tl.where(cols[None, :] == D, 1.0, x)
    tl.atomic_add(
        stats_ptr + codes[:, None] * (D + 1) + cols[None, :],
        values,
        mask=row_ok[:, None] & (cols[None, :] <= D),
    )
    tl.atomic_add(tail, tl.sum(row_ok.to(tl.float32)))


@triton.jit
def _finalize(
    ema_ptr,
    stats_ptr,
    embed_ptr,
    clock_ptr,
    K,
    D,
    decay,
    eps,
    dead_after,
    COSINE: tl.constexpr,
    TRACK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    codes = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    code_ok = codes < K
    cols = tl.arange(0, BLOCK_D)
    in_row = code_ok[:, None] & (cols[None, :] <= D)
    offsets = codes[:, None] * (D + 1) + cols[None, :]
    stats = tl.load(stats_ptr + offsets, mask=in_row, other=0.0)
    ema = tl.load(ema_ptr + offsets, mask=in_row, other=0.0)
    ema = ema + (1.0 - decay) * (stats - ema)
    tl.store(ema_ptr + offsets, ema, mask=in_row)

    is_count = cols[None, :] == D
    count = tl.sum(tl.where(is_count, ema, 0.0), axis=1)
    hits = tl.sum(tl.where(is_count, stats, 0.0), axis=1)
    vectors = tl.where(cols[None, :] < D, ema, 0.0) / tl.maximum(count, eps)[:, None]
    if COSINE:
        norm = tl.sqrt(tl.sum(vectors * vectors, axis=1))
        vectors = vectors / tl.maximum(norm, 1e-12)[:, None]
    tl.store(
        embed_ptr + codes[:, None] * D + cols[None, :],
        vectors,
        mask=code_ok[:, None] & (cols[None, :] < D),
    )

    tail = stats_ptr + K * (D + 1)
    clock = tl.load(clock_ptr + codes, mask=code_ok, other=0)
    if TRACK:
        seen = tl.load(tail).to(tl.int64)
        clock = tl.where(hits > 0, 0, clock + seen)
        tl.store(clock_ptr + codes, clock, mask=code_ok)
    dead = tl.sum(((clock >= dead_after) & code_ok).to(tl.float32))
    tl.atomic_add(tail + 2, dead)


@triton.jit
def _backward(
    grad_q_ptr,
    x_ptr,
    q_ptr,
    grad_loss_ptr,
    out_ptr,
    N,
    D,
    coef,
    GRADIENT: tl.constexpr,  # 0: none, 1: straight-through, 2: rotation trick
    HAS_GRAD_LOSS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    offsets = rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    q = tl.load(q_ptr + offsets, mask=mask, other=0.0)
    grad = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if HAS_GRAD_LOSS:  # commitment loss weight · mean (x − q)²
        grad += (tl.load(grad_loss_ptr) * coef) * (x - q)
    if GRADIENT == 1:
        grad += tl.load(grad_q_ptr + offsets, mask=mask, other=0.0)
    if GRADIENT == 2:
        # Rotation trick (Fifty et al. 2024, §4.2): the output is λ·R·x with R, λ held fixed,
        # R = I − 2rrᵀ + 2q̂x̂ᵀ and λ = ‖q‖/‖x‖, so the gradient is λ·Rᵀg = λ(g − 2r(r·g) + 2x̂(q̂·g)).
        g = tl.load(grad_q_ptr + offsets, mask=mask, other=0.0)
        x_norm = tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), 1e-12)
        q_norm = tl.sqrt(tl.sum(q * q, axis=1))
        x_hat = x / x_norm[:, None]
        q_hat = q / tl.maximum(q_norm, 1e-12)[:, None]
        r = x_hat + q_hat
        r = r / tl.maximum(tl.sqrt(tl.sum(r * r, axis=1)), 1e-12)[:, None]
        r_g = tl.sum(r * g, axis=1)
        q_g = tl.sum(q_hat * g, axis=1)
        rotated = g - 2.0 * r * r_g[:, None] + 2.0 * x_hat * q_g[:, None]
        grad += (q_norm / x_norm)[:, None] * rotated
    tl.store(out_ptr + offsets, grad, mask=mask)


_launch_gather_scatter = CachedLauncher(_gather_scatter)
_launch_finalize = CachedLauncher(_finalize)
_launch_backward = CachedLauncher(_backward)


def _block_d(dim: int) -> int:
    return triton.next_power_of_2(dim + 1)


_GRADIENTS = {None: 0, "straight_through": 1, "rotation": 2}


class EMALookup(torch.autograd.Function):
    """Gather, commitment loss and EMA statistics in one launch; its backward in one more.

    Forward inputs: x `(N, d)` fp32 contiguous, embed `(K, d)`, codes `(N,)` int64, stats (the
    zeroed buffer of the module docstring), the commitment weight, and the gradient path of the
    output to x: "straight_through", "rotation", or None (no gradient through the output).
    Returns q `(N, d)` (the code vectors, exactly) and the weighted commitment loss (a scalar).
    """

    @staticmethod
    def forward(ctx, x, embed, codes, stats, weight: float, gradient: str | None):
        num_rows, dim = x.shape
        q = torch.empty_like(x)
        block_d = _block_d(dim)
        block_n = max(1, 4096 // block_d)
        if num_rows:
            blocks = triton.cdiv(num_rows, block_n)
            _launch_gather_scatter(
                lambda meta: (blocks,), x, embed, codes, q, stats, num_rows, dim, embed.shape[0],
                BLOCK_N=block_n, BLOCK_D=block_d,
            )  # fmt: skip
        scale = weight / max(num_rows * dim, 1)
        ctx.save_for_backward(x, q)
        ctx.coef = 2.0 * scale
        ctx.gradient = _GRADIENTS[gradient]
        if gradient is None:
            ctx.mark_non_differentiable(q)
        return q, stats[-2] * scale

    @staticmethod
    def backward(ctx, grad_q, grad_loss):
        x, q = ctx.saved_tensors
        num_rows, dim = x.shape
        out = torch.empty_like(x)
        gradient = ctx.gradient if grad_q is not None else 0
        block_d = triton.next_power_of_2(dim)
        block_n = max(1, 4096 // block_d)
        if num_rows:
            blocks = triton.cdiv(num_rows, block_n)
            _launch_backward(
                lambda meta: (blocks,),
                grad_q.contiguous() if gradient else x,
                x,
                q,
                grad_loss if grad_loss is not None else x,
                out,
                num_rows,
                dim,
                ctx.coef,
                GRADIENT=gradient,
                HAS_GRAD_LOSS=grad_loss is not None,
                BLOCK_N=block_n,
                BLOCK_D=block_d,
            )
        return out, None, None, None, None, None


def finalize(
    ema: torch.Tensor,
    stats: torch.Tensor,
    embed: torch.Tensor,
    clock: torch.Tensor,
    *,
    decay: float,
    eps: float,
    dead_after: int,
    cosine: bool,
    track: bool,
) -> None:
    """EMA, new codebook, dead-code clock and dead count (into `stats[-1]`), in one launch."""
    size, dim = embed.shape
    block_d = _block_d(dim)
    block_k = max(1, 4096 // block_d)
    blocks = triton.cdiv(size, block_k)
    _launch_finalize(
        lambda meta: (blocks,), ema, stats, embed, clock, size, dim, decay, eps, dead_after,
        COSINE=cosine, TRACK=track, BLOCK_K=block_k, BLOCK_D=block_d,
    )  # fmt: skip
