"""Nearest-code search: the one place where latents meet a codebook.

`nearest_code` returns, for every latent vector, the index of the closest codebook row. On CUDA it
runs a fused Triton kernel that streams the codebook through shared memory in tiles and keeps a
running (min, argmin) per row, so the N×K distance matrix never exists in memory: memory is O(N + K)
instead of O(N·K), and the work is one pass of matrix-unit products. Elsewhere (CPU, or a GPU
without Triton) it runs a chunked torch path whose chunks bound the distance matrix to a fixed
number of elements.

Both paths minimize ‖c‖² − 2·x·c, which orders codes exactly like ‖x − c‖² (‖x‖² is the same for
every code of a row). Ties go to the lowest index, as `torch.argmin` does; two codes whose
distances differ by rounding alone may be ordered differently by the two paths.

Precision: fp32 inputs use three tf32 products per tile on the GPU ("tf32x3", error near plain fp32
and far below the gaps that separate codes in practice); bf16 and fp16 inputs multiply in their own
type and accumulate in fp32, like cuBLAS does.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

Distance = Literal["l2", "cosine"]
Backend = Literal["auto", "triton", "torch"]

# The torch path materializes at most this many distances at once (256 MB in fp32).
_CHUNK_ELEMENTS = 1 << 26


def nearest_code(
    latents: torch.Tensor,
    codebook: torch.Tensor,
    distance: Distance = "l2",
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Index of the nearest codebook row for every latent vector.

    Args:
        latents: `(..., D)` float tensor.
        codebook: `(K, D)` float tensor on the same device.
        distance: `"l2"` (Euclidean) or `"cosine"` (both sides l2-normalized first, so the
            nearest code is the one with the largest cosine similarity).
        backend: `"auto"` picks the fused Triton kernel on CUDA when Triton is installed and the
            chunked torch path otherwise; `"triton"` or `"torch"` force one.

    Returns:
        `(...)` int64 codes in `[0, K)`.
    """
    if distance not in ("l2", "cosine"):
        raise ValueError(f"expected distance 'l2' or 'cosine', got {distance!r}")
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"expected backend 'auto', 'triton' or 'torch', got {backend!r}")
    if codebook.ndim != 2:
        raise ValueError(f"expected a (K, D) codebook, got shape {tuple(codebook.shape)}")
    if latents.ndim < 1 or latents.shape[-1] != codebook.shape[1]:
        raise ValueError(
            f"expected latents with last dimension {codebook.shape[1]} (the codebook's D), "
            f"got shape {tuple(latents.shape)}"
        )
    if not (latents.is_floating_point() and codebook.is_floating_point()):
        raise ValueError(
            f"expected floating-point latents and codebook, got {latents.dtype} and {codebook.dtype}"
        )
    if latents.device != codebook.device:
        raise ValueError(
            f"expected latents and codebook on one device, got {latents.device} and {codebook.device}"
        )

    leading = latents.shape[:-1]
    flat = latents.reshape(-1, latents.shape[-1])  # (N, D)
    if latents.dtype != codebook.dtype:
        flat, codebook = flat.float(), codebook.float()
    if distance == "cosine":
        flat = torch.nn.functional.normalize(flat, dim=-1)
        codebook = torch.nn.functional.normalize(codebook, dim=-1)

    use_triton = backend == "triton" or (backend == "auto" and flat.is_cuda and _triton_available())
    if use_triton:
        if not flat.is_cuda:
            raise ValueError("backend='triton' needs CUDA tensors; use backend='torch' on the CPU")
        if not _triton_available():
            raise RuntimeError("backend='triton' was asked for but Triton is not installed")
        codes = _nearest_triton(flat, codebook)
    else:
        codes = _nearest_torch(flat, codebook)
    return codes.reshape(leading)


def _nearest_torch(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Chunked argmin of ‖c‖² − 2·x·c; `flat` (N, D), `codebook` (K, D) → (N,) int64."""
    work = torch.float32 if flat.dtype in (torch.float16, torch.bfloat16) else flat.dtype
    flat, codebook = flat.to(work), codebook.to(work)
    code_norms = codebook.pow(2).sum(dim=1)  # (K,)
    chunk = max(1, _CHUNK_ELEMENTS // max(codebook.shape[0], 1))
    out = torch.empty(flat.shape[0], dtype=torch.int64, device=flat.device)
    for start in range(0, flat.shape[0], chunk):
        rows = flat[start : start + chunk]
        scores = torch.addmm(code_norms, rows, codebook.t(), beta=1, alpha=-2)  # (n, K)
        out[start : start + chunk] = scores.argmin(dim=1)
    return out


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# Our launcher (`_launch.CachedLauncher`) bypasses Triton's traceable `kernel[grid](...)`, so
# dynamo could only break the graph somewhere inside it: inside a compiled model the search runs
# eagerly, as one clean graph break.
@torch.compiler.disable
def _nearest_triton(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    from mediatok.quantize._triton_search import nearest_code_triton

    return nearest_code_triton(flat, codebook)
