"""nearest_code: every path picks a nearest code (ties aside) and rejects bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mediatok.quantize import nearest_code


def assert_nearest(
    latents: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor, cosine=False
):
    """Each chosen code is at the minimal float64 distance, up to fp32 rounding of near-ties."""
    x, c = latents.double().reshape(-1, latents.shape[-1]), codebook.double()
    if cosine:
        x, c = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(c, dim=-1)
    distances = torch.cdist(x, c).pow(2)  # (N, K)
    chosen = distances.gather(1, codes.reshape(-1, 1)).squeeze(1)
    best = distances.min(dim=1).values
    scale = x.pow(2).sum(1) + c.pow(2).sum(1).max()
    assert codes.dtype == torch.int64
    assert torch.all(chosen - best <= 1e-5 * scale), (chosen - best).max()
    # and almost every row is the exact brute-force argmin
    assert (codes.reshape(-1) == distances.argmin(1)).float().mean() > 0.99


@pytest.mark.parametrize("shape", [(1000, 8), (7, 3, 16), (257, 100)])
@pytest.mark.parametrize("size", [1, 300, 4099])
def test_torch_path_matches_brute_force(shape, size):
    generator = torch.Generator().manual_seed(size)
    latents = torch.randn(*shape, generator=generator)
    codebook = torch.randn(size, shape[-1], generator=generator)
    codes = nearest_code(latents, codebook, backend="torch")
    assert codes.shape == shape[:-1]
    assert_nearest(latents, codebook, codes)


def test_cosine_distance_ignores_norms():
    latents = torch.randn(500, 12)
    codebook = torch.randn(64, 12)
    codes = nearest_code(latents, codebook, "cosine")
    assert_nearest(latents, codebook, codes, cosine=True)
    scaled = nearest_code(latents * 7.0, codebook * torch.rand(64, 1) * 5, "cosine")
    assert torch.equal(codes, scaled)


def test_ties_go_to_the_lowest_index():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    latents = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert nearest_code(latents, codebook).tolist() == [0, 0]


def test_chunking_gives_the_same_codes(monkeypatch):
    import mediatok.quantize.search as search

    latents, codebook = torch.randn(3000, 8), torch.randn(500, 8)
    whole = nearest_code(latents, codebook, backend="torch")
    monkeypatch.setattr(search, "_CHUNK_ELEMENTS", 500 * 7)  # 7 rows per chunk
    assert torch.equal(nearest_code(latents, codebook, backend="torch"), whole)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latents": torch.randn(4, 5), "codebook": torch.randn(3, 4)}, "last dimension 4"),
        ({"latents": torch.randn(4, 5), "codebook": torch.randn(3)}, r"\(K, D\) codebook"),
        (
            {"latents": torch.ones(4, 5, dtype=torch.long), "codebook": torch.randn(3, 5)},
            "floating",
        ),
        (
            {"latents": torch.randn(4, 5), "codebook": torch.randn(3, 5), "distance": "l1"},
            "'l2' or",
        ),
        (
            {"latents": torch.randn(4, 5), "codebook": torch.randn(3, 5), "backend": "triton"},
            "CUDA",
        ),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nearest_code(**kwargs)


def test_triton_kernel_under_the_interpreter():
    """The GPU kernel's logic, run by Triton's CPU interpreter against brute force."""
    script = textwrap.dedent(
        """
        import torch
        from mediatok.quantize._triton_search import nearest_code_triton
        torch.manual_seed(0)
        for n, k, d in [(100, 300, 8), (33, 70, 3), (65, 130, 100), (40, 64, 16), (300, 200, 8)]:
            x, c = torch.randn(n, d), torch.randn(k, d)
            codes = nearest_code_triton(x, c)
            distances = torch.cdist(x.double(), c.double())
            chosen = distances.gather(1, codes[:, None]).squeeze(1)
            assert torch.all(chosen - distances.min(1).values < 1e-5), (n, k, d)
            assert codes.dtype == torch.int64 and codes.shape == (n,)
        # Equal codes in different tiles and slices: the lower index wins, as torch.argmin.
        x, c = torch.randn(50, 8), torch.randn(300, 8)
        c[100] = c[5]
        c[200] = c[7]
        assert torch.equal(nearest_code_triton(x, c), torch.cdist(x, c).argmin(1))
        print("ok")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("n", "k", "d"),
    [
        (16384, 4096, 16),
        (16384, 16384, 8),
        (5000, 8192, 256),
        (999, 65536, 8),
        (77, 1000, 300),
        (3, 5, 3),
    ],
)
def test_triton_kernel_matches_brute_force(n, k, d, dtype):
    generator = torch.Generator(device="cuda").manual_seed(n + k + d)
    latents = torch.randn(n, d, device="cuda", generator=generator).to(dtype)
    codebook = torch.randn(k, d, device="cuda", generator=generator).to(dtype)
    codes = nearest_code(latents, codebook, backend="triton")
    assert codes.is_cuda
    # Reference on the same (rounded) inputs, in float64.
    assert_nearest(latents.float(), codebook.float(), codes)


@pytest.mark.gpu
@needs_cuda
def test_triton_and_torch_paths_agree_on_cuda():
    latents = torch.randn(20000, 32, device="cuda")
    codebook = torch.randn(2048, 32, device="cuda")
    fused = nearest_code(latents, codebook)
    chunked = nearest_code(latents, codebook, backend="torch")
    assert (fused == chunked).float().mean() > 0.999


@pytest.mark.gpu
@needs_cuda
def test_cached_launches_compute_on_their_own_inputs():
    """The second call with one signature takes the cached compiled kernel: fresh data, right codes."""
    codebook = torch.randn(3000, 24, device="cuda")
    for _ in range(3):
        latents = torch.randn(5000, 24, device="cuda")
        assert_nearest(latents, codebook, nearest_code(latents, codebook))
    offset = torch.randn(5000 * 24 + 1, device="cuda")[1:].view(5000, 24)  # 4-byte aligned
    assert_nearest(offset, codebook, nearest_code(offset, codebook))
