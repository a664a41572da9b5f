"""Image metrics (PSNR, SSIM against scikit-image) and codebook usage (against hand counts,
`CodeUsage`, and two gloo ranks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skimage import data
from skimage.metrics import structural_similarity

from mediatok.eval import CodebookUsage, psnr, ssim


def skimage_ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> list[float]:
    """scikit-image's SSIM per image of a `(B, C, H, W)` batch, in the Wang et al. setting."""
    return [
        float(
            structural_similarity(
                p.numpy(),
                t.numpy(),
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
            )
        )
        for p, t in zip(prediction, target, strict=True)
    ]


def astronaut_crops() -> torch.Tensor:
    """Four 96×112 uint8 crops of scikit-image's astronaut photo, `(4, 3, 96, 112)`."""
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)  # (3, 512, 512)
    corners = [(0, 0), (100, 180), (300, 60), (400, 390)]
    return torch.stack([photo[:, y : y + 96, x : x + 112] for y, x in corners]).contiguous()


# --------------------------------------------------------------------------------------------
# PSNR


def test_psnr_of_identical_images_is_inf() -> None:
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.equal(psnr(images, images.clone()), torch.full((3,), math.inf))


def test_psnr_of_known_mse() -> None:
    target = torch.zeros(2, 3, 16, 16)
    # Image 0 is off by 0.1 everywhere (MSE 0.01), image 1 by 0.5 on a quarter of its pixels
    # (MSE 0.0625); data range 2.
    prediction = target.clone()
    prediction[0] += 0.1
    prediction[1, :, :8, :8] = -0.5
    expected = torch.tensor([10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.0625)])
    assert torch.allclose(psnr(prediction, target), expected, atol=1e-4)
    # Symmetric, and the range is a parameter: the same errors on [0, 1] lose 10·log10(4) dB.
    assert torch.allclose(psnr(target, prediction), expected, atol=1e-4)
    expected_unit = expected - 10 * math.log10(4)
    assert torch.allclose(psnr(prediction, target, data_range=1.0), expected_unit, atol=1e-4)


def test_psnr_on_uint8() -> None:
    target = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    prediction = target + 5  # uint8 arithmetic: 105, no wrap-around
    expected = 10 * math.log10(255**2 / 25)
    assert psnr(prediction, target, data_range=255).item() == pytest.approx(expected, abs=1e-4)
    # 100 − 105 must not wrap around in uint8.
    assert psnr(target, prediction, data_range=255).item() == pytest.approx(expected, abs=1e-4)


def test_uint8_images_need_their_range() -> None:
    """uint8 images span 0–255: with the default range of [-1, 1] images (2) PSNR came out
    42 dB low (−23 dB here) and SSIM's constants were off, silently; now both refuse."""
    target = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    prediction = target + 5
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=r"data_range=255 for uint8 images, got 2"):
            metric(prediction, target)
        with pytest.raises(ValueError, match=r"data_range=255 for uint8 images, got 1"):
            metric(prediction.float() / 255, target, 1)


@pytest.mark.parametrize(
    ("prediction", "target", "data_range", "match"),
    [
        (torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), 2.0, r"\(B, C, H, W\)"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), 2.0, "one shape"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), 0.0, "data_range > 0"),
    ],
)
def test_psnr_rejects_bad_input(prediction, target, data_range, match) -> None:
    with pytest.raises(ValueError, match=match):
        psnr(prediction, target, data_range)


# --------------------------------------------------------------------------------------------
# SSIM


def test_ssim_of_identical_images_is_one() -> None:
    images = torch.rand(2, 3, 24, 20) * 2 - 1
    assert torch.allclose(ssim(images, images.clone()), torch.ones(2), atol=1e-6)


def test_ssim_matches_skimage_on_random_images() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 40, 57, generator=generator) * 2 - 1  # [-1, 1]
    noise = torch.randn(target.shape, generator=generator)
    prediction = (target + noise * torch.tensor([0.05, 0.3, 1.0]).view(3, 1, 1, 1)).clamp(-1, 1)
    ours = ssim(prediction, target)
    # [-1, 1] images are measured from black: scikit-image's SSIM of the same images in [0, 1].
    reference = skimage_ssim((prediction + 1) / 2, (target + 1) / 2, data_range=1.0)
    assert ours.shape == (3,)
    assert torch.allclose(ours, torch.tensor(reference), atol=1e-5), (ours, reference)
    # The three noise levels give three clearly different scores, so the match is not vacuous.
    assert ours[0] > ours[1] > ours[2]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64])
def test_ssim_matches_skimage_on_photos(dtype: torch.dtype) -> None:
    target = astronaut_crops()  # (4, 3, 96, 112) uint8
    generator = torch.Generator().manual_seed(1)
    # Noise of growing strength per crop, rounded back to uint8 like a saved reconstruction.
    sigma = torch.tensor([2.0, 8.0, 20.0, 40.0]).view(4, 1, 1, 1)
    noisy = target.float() + sigma * torch.randn(target.shape, generator=generator)
    prediction = noisy.round().clamp(0, 255).to(torch.uint8)
    prediction, target = prediction.to(dtype), target.to(dtype)
    ours = ssim(prediction, target, data_range=255)
    reference = skimage_ssim(prediction, target, data_range=255)
    assert torch.allclose(ours.double(), torch.tensor(reference, dtype=torch.float64), atol=1e-5)
    assert (ours.diff() < 0).all()  # more noise, lower SSIM


def test_ssim_measures_from_black_in_every_range() -> None:
    # [-1, 1] floats (L = 2), uint8 (L = 255), [0, 1] and [-0.5, 0.5] (with low) all give the
    # standard SSIM of the same pictures. Raw [-1, 1] values fed to the formula would not: the
    # luminance term compares means measured from zero.
    target = astronaut_crops()
    prediction = torch.flip(target, dims=[3])  # a very different image with the same pixels
    in_uint8 = ssim(prediction, target, data_range=255)
    in_float = ssim(prediction.double(), target.double(), data_range=255)
    assert torch.allclose(in_uint8.double(), in_float, atol=1e-6)
    for scale, shift, kwargs in [
        (127.5, -1.0, {}),
        (255.0, 0.0, {"data_range": 1.0}),
        (255.0, -0.5, {"data_range": 1.0, "low": -0.5}),
    ]:
        unit = [images.double() / scale + shift for images in (prediction, target)]
        assert torch.allclose(in_uint8.double(), ssim(*unit, **kwargs), atol=1e-5), kwargs
    raw = skimage_ssim(prediction.double() / 127.5 - 1, target.double() / 127.5 - 1, 2.0)
    assert not np.allclose(in_uint8.numpy(), raw, atol=1e-2)
    assert torch.allclose(ssim(prediction, target, 255), ssim(target, prediction, 255), atol=1e-6)
    assert (in_uint8 < 0.9).all()


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="at least 11×11"):
        ssim(torch.zeros(1, 3, 10, 32), torch.zeros(1, 3, 10, 32))


# --------------------------------------------------------------------------------------------
# codebook usage


def test_codebook_usage_of_a_known_histogram() -> None:
    usage = CodebookUsage(8)
    # Counts (4, 2, 1, 1, 0, 0, 0, 0) over two batches: half the codes used; entropy 1.75 bits.
    usage.update(torch.tensor([[0, 0], [1, 2]]))
    usage.update(torch.tensor([0, 0, 1, 3]))
    metrics = usage.compute()
    assert metrics["usage"] == pytest.approx(0.5)
    assert metrics["perplexity"] == pytest.approx(2**1.75)
    assert metrics["unused_codes"] == 4
    assert metrics["num_tokens"] == 8
    assert not any(key.startswith("usage_q") for key in metrics)  # one level: no per-level keys
    assert usage.counts[0].tolist() == [4, 2, 1, 1, 0, 0, 0, 0]
    usage.reset()
    with pytest.raises(RuntimeError, match="no codes seen"):
        usage.compute()


def test_codebook_usage_per_level_with_different_sizes() -> None:
    usage = CodebookUsage([4, 2])
    # Level 0: codes 0..3 once each (usage 1, perplexity 4); level 1: always 1 (usage 1/2, 1).
    usage.update(torch.tensor([[[0, 1], [1, 1]], [[2, 1], [3, 1]]]))  # (2, 2, Q=2)
    metrics = usage.compute()
    assert metrics["usage_q0"] == pytest.approx(1.0)
    assert metrics["perplexity_q0"] == pytest.approx(4.0)
    assert metrics["usage_q1"] == pytest.approx(0.5)
    assert metrics["perplexity_q1"] == pytest.approx(1.0)
    assert metrics["usage"] == pytest.approx(0.75)
    assert metrics["perplexity"] == pytest.approx(2.5)
    assert metrics["unused_codes"] == 1
    assert metrics["num_tokens"] == 4


def test_codebook_usage_of_tokens_counts_each_level_of_a_level_first_layout() -> None:
    from mediatok.tokens import TokenSpec

    usage = CodebookUsage([4, 2])
    # (B=1, Q=2, N=4) in layout "Q N": level 0 holds 0..3, level 1 is always 1.
    usage.update_tokens(torch.tensor([[[0, 1, 2, 3], [1, 1, 1, 1]]]), TokenSpec([4, 2], "Q N"))
    metrics = usage.compute()
    assert metrics["usage_q0"] == pytest.approx(1.0)
    assert metrics["perplexity_q0"] == pytest.approx(4.0)
    assert metrics["usage_q1"] == pytest.approx(0.5)
    assert metrics["num_tokens"] == 4


def test_codebook_usage_agrees_with_quantizer_code_usage() -> None:
    from mediatok.quantize import CodeUsage

    generator = torch.Generator().manual_seed(0)
    # Skewed codes so that usage and perplexity are far from their extremes.
    codes = (torch.rand(200, 2, generator=generator) ** 4 * 64).long()  # (N, Q=2), K = 64
    tracker = CodeUsage(num_levels=2, codebook_size=64, dead_after_tokens=10**9)
    counts = tracker.histogram(codes, across_ranks=False)
    expected = tracker.update(counts, track=False)  # over one step
    usage = CodebookUsage([64, 64])
    for chunk in codes.split(128):  # in batches: the histogram accumulates
        usage.update(chunk)
    metrics = usage.compute()
    for key in ("usage", "perplexity", "usage_q0", "usage_q1", "perplexity_q0", "perplexity_q1"):
        assert metrics[key] == pytest.approx(float(expected[key]), rel=1e-5), key
    assert 0.1 < metrics["usage"] < 0.9


@pytest.mark.parametrize(
    ("sizes", "codes", "error", "match"),
    [
        (8, torch.tensor([0, 8]), ValueError, r"level-0 codes in \[0, 8\), got values from 0 to 8"),
        (8, torch.tensor([-1, 2]), ValueError, "from -1 to 2"),
        ([4, 4], torch.tensor([[0, 1, 2]]), ValueError, r"shape \(\.\.\., 2\)"),
        ([4, 2], torch.tensor([[0, 1], [3, 2]]), ValueError, r"level-1 codes in \[0, 2\)"),
        (8, torch.tensor([0.0, 1.0]), TypeError, "integer codes"),
    ],
)
def test_codebook_usage_rejects_bad_codes(sizes, codes, error, match) -> None:
    usage = CodebookUsage(sizes)
    with pytest.raises(error, match=match):
        usage.update(codes)


def test_codebook_usage_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive ints"):
        CodebookUsage([8, 0])


def usage_worker(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        usage = CodebookUsage(8)
        # Rank 0 hits codes 0 and 1, rank 1 hits 2 and 3 (twice each): together half the codes.
        usage.update(torch.tensor([0, 1]) + 2 * rank)
        usage.update(torch.tensor([0, 1]) + 2 * rank)
        metrics = usage.compute()
        assert metrics["usage"] == pytest.approx(0.5)
        assert metrics["perplexity"] == pytest.approx(4.0)
        assert metrics["num_tokens"] == 8
        # compute() left the local counts alone: reducing again does not double-count.
        assert usage.counts[0].sum() == 4
        assert usage.reduce()[0].tolist() == [2, 2, 2, 2, 0, 0, 0, 0]
    finally:
        dist.destroy_process_group()


def test_codebook_usage_reduces_over_ranks(tmp_path) -> None:
    mp.spawn(usage_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


def test_codebook_usage_counts_numpy_derived_codes() -> None:
    # int32 codes (as read from a token file) count like int64.
    usage = CodebookUsage(4)
    usage.update(torch.from_numpy(np.array([[0, 3], [3, 3]], dtype=np.int32)))
    assert usage.counts[0].tolist() == [1, 0, 0, 3]
