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
3. `_commitment_backward`: the gradient of the commitment loss, plus the straight-through
   gradient of the output, in one pass.

`vq.py` holds the equivalent torch code for the CPU; tests check that both agree (on the CPU
through Triton's interpreter, on a GPU directly).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


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
def _commitment_backward(
    grad_q_ptr,
    x_ptr,
    q_ptr,
    grad_loss_ptr,
    out_ptr,
    numel,
    coef,
    HAS_GRAD_Q: tl.constexpr,
    HAS_GRAD_LOSS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < numel
    grad = tl.zeros([BLOCK], tl.float32)
    if HAS_GRAD_LOSS:
        scale = tl.load(grad_loss_ptr) * coef
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0)
        q = tl.load(q_ptr + offsets, mask=ok, other=0.0)
        grad += scale * (x - q)
    if HAS_GRAD_Q:
        grad += tl.load(grad_q_ptr + offsets, mask=ok, other=0.0)
    tl.store(out_ptr + offsets, grad, mask=ok)


def _block_d(dim: int) -> int:
    return triton.next_power_of_2(dim + 1)


class EMALookup(torch.autograd.Function):
    """Gather, commitment loss and EMA statistics in one launch; its backward in one more.

    Forward inputs: x `(N, d)` fp32 contiguous, embed `(K, d)`, codes `(N,)` int64, stats (the
    zeroed buffer of the module docstring), the commitment weight, and whether the output carries
    the straight-through gradient to x. Returns q `(N, d)` (the code vectors) and the weighted
    commitment loss (a scalar).
    """

    @staticmethod
    def forward(ctx, x, embed, codes, stats, weight: float, straight_through: bool):
        num_rows, dim = x.shape
        q = torch.empty_like(x)
        block_d = _block_d(dim)
        block_n = max(1, 4096 // block_d)
        if num_rows:
            grid = (triton.cdiv(num_rows, block_n),)
            _gather_scatter[grid](
                x, embed, codes, q, stats, num_rows, dim, embed.shape[0],
                BLOCK_N=block_n, BLOCK_D=block_d,
            )  # fmt: skip
        scale = weight / max(num_rows * dim, 1)
        ctx.save_for_backward(x, q)
        ctx.coef = 2.0 * scale
        ctx.straight_through = straight_through
        if not straight_through:
            ctx.mark_non_differentiable(q)
        return q, stats[-2] * scale

    @staticmethod
    def backward(ctx, grad_q, grad_loss):
        x, q = ctx.saved_tensors
        out = torch.empty_like(x)
        has_grad_q = ctx.straight_through and grad_q is not None
        numel = x.numel()
        if numel:
            _commitment_backward[(triton.cdiv(numel, 1024),)](
                grad_q.contiguous() if has_grad_q else x,
                x,
                q,
                grad_loss if grad_loss is not None else x,
                out,
                numel,
                ctx.coef,
                HAS_GRAD_Q=has_grad_q,
                HAS_GRAD_LOSS=grad_loss is not None,
                BLOCK=1024,
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
    _finalize[(triton.cdiv(size, block_k),)](
        ema, stats, embed, clock, size, dim, decay, eps, dead_after,
        COSINE=cosine, TRACK=track, BLOCK_K=block_k, BLOCK_D=block_d,
    )  # fmt: skip
