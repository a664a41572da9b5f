"""Image datasets for codec training and batched (GPU) decoding for encoding.

Geometry policy, the same for training (`ImageFolder`), encoding (`decode_batch`) and evaluation
(`read_center_crops`):
`resize_and_crop` scales the image, keeping its aspect ratio, until it just covers the target
(the short side becomes `size`), with antialiased bicubic resampling on uint8 pixels, then cuts a
`size` x `size` window: centred for evaluation and encoding, uniformly random for training.
Images smaller than the target are upscaled the same way (a dataset of small images is the
user's choice; padding would teach the codec borders that real images do not have).

A random crop of a square image at the target size is the whole image, every time. For small or
square collections (the demo's photos) training can use `"random_resized"`: a window of the
target's aspect ratio whose side is a random 50 to 100 % of the largest that fits, at a random
position, resized to the target and flipped left to right half of the time.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from mediatok.data.folder import ON_ERROR, MediaFolder
from mediatok.data.image_io import (
    EXIF_ORIENTATION_TAG,
    IMAGE_EXTENSIONS,
    ImageReadError,
    apply_exif_orientation,
    decode_image_bytes,
    list_images,
    read_image,
    to_float,
)

__all__ = [
    "CROPS",
    "ON_ERROR",
    "ImageFolder",
    "decode_batch",
    "read_center_crops",
    "resize_and_crop",
    "side_by_side",
]

CROPS = ("center", "random", "random_resized")
# "random_resized": the window side, as a fraction of the largest window that fits.
RESIZED_SIDE = (0.5, 1.0)
logger = logging.getLogger("mediatok.data")


def resize_and_crop(
    image: torch.Tensor,
    size: int | Sequence[int],
    crop: Literal["center", "random", "random_resized"] = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale an image to cover `size` (aspect ratio kept), then crop to exactly `size`
    (`"random_resized"`: crop a random window, then scale it to `size`; see the module
    docstring).

    With `size` an int the short side becomes `size` and the crop is square; with `(H, W)` the
    image is scaled by `max(H / height, W / width)`, the smallest factor that covers both. An
    image already at the covering size is not resampled (pixels stay exact). The center crop
    puts the odd pixel, if any, at the bottom / right; the random crop draws the top-left
    corner uniformly over every position (along the long side only when `size` is an int).

    Args:
        image: `(..., C, H, W)` uint8 (torchvision's fast antialiased uint8 kernel on CPU) or
            float, on any device.
        size: target side, or `(H, W)`.
        crop: `"center"`, `"random"` or `"random_resized"`.
        generator: random source for the random crops (CPU or on the image's device); None uses
            the global one.

    Returns:
        `(..., C, H, W)` of the target size, same dtype and device, contiguous.
    """
    height, width = target_size(size)
    if crop not in CROPS:
        raise ValueError(f"expected crop to be one of {CROPS}, got {crop!r}")
    if not isinstance(image, torch.Tensor) or image.ndim < 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an image (..., C, H, W), got {shape}")
    old_height, old_width = image.shape[-2:]
    if old_height == 0 or old_width == 0:
        raise ValueError(f"expected a non-empty image, got shape {tuple(image.shape)}")
    if crop == "random_resized":
        return _random_resized_crop(image, height, width, generator)
    scale = max(height / old_height, width / old_width)
    # The covering side rounds to the target exactly; max() guards the other against rounding.
    new_height = max(height, round(old_height * scale))
    new_width = max(width, round(old_width * scale))
    if (new_height, new_width) != (old_height, old_width):
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2.functional import resize

        image = resize(image, [new_height, new_width], InterpolationMode.BICUBIC, antialias=True)
    if crop == "center":
        top, left = (new_height - height) // 2, (new_width - width) // 2
    else:
        device = generator.device if generator is not None else "cpu"
        top, left = (
            int(torch.randint(limit + 1, (), generator=generator, device=device))
            for limit in (new_height - height, new_width - width)
        )
    return image[..., top : top + height, left : left + width].contiguous()


def _random_resized_crop(
    image: torch.Tensor, height: int, width: int, generator: torch.Generator | None
) -> torch.Tensor:
    """A window of aspect `height / width`, its side a random fraction (`RESIZED_SIDE`) of the
    largest that fits, at a uniformly random position, scaled to `(height, width)` and flipped
    left to right with probability 1/2."""
    old_height, old_width = image.shape[-2:]
    device = generator.device if generator is not None else "cpu"
    side, row, column, flip = torch.rand(4, generator=generator, device=device).tolist()
    low, high = RESIZED_SIDE
    fit = min(old_height / height, old_width / width) * (low + (high - low) * side)
    window_height = min(old_height, max(1, round(height * fit)))
    window_width = min(old_width, max(1, round(width * fit)))
    top = min(int(row * (old_height - window_height + 1)), old_height - window_height)
    left = min(int(column * (old_width - window_width + 1)), old_width - window_width)
    image = image[..., top : top + window_height, left : left + window_width]
    if (window_height, window_width) != (height, width):
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2.functional import resize

        image = resize(image, [height, width], InterpolationMode.BICUBIC, antialias=True)
    if flip < 0.5:
        image = image.flip(-1)
    return image.contiguous()


def target_size(size: int | Sequence[int]) -> tuple[int, int]:
    """`size` or `(H, W)` as `(H, W)` of positive ints; raises ValueError otherwise."""
    sides = (size, size) if isinstance(size, int) else tuple(size)
    if len(sides) != 2 or not all(isinstance(side, int) and side > 0 for side in sides):
        raise ValueError(f"expected size to be a positive int or (H, W), got {size!r}")
    return sides[0], sides[1]


class ImageFolder(MediaFolder):
    """Every image under a directory, decoded, resized and cropped for codec training.

    Items are `{"image": float (3, H, W) in [-1, 1], "key": str, "index": int}`: the key is the
    file's path relative to `root` (POSIX separators), the index that of the file returned.

    A file that cannot be decoded either stops the job (`on_error="stop"`: `ImageReadError`
    naming it) or is skipped (`"skip"`): a warning on the `"mediatok.data"` logger names it, it
    is appended to `skipped`, and the item is the next readable file in listing order (wrapping
    around), so the substitution is deterministic. Known-bad files are not decoded again.
    Under a `DataLoader` with workers every worker holds its own copy of the dataset, so
    `skipped` of the main process's object stays empty; the warnings are the record there.

    Random crops draw from a generator seeded by `(seed, epoch, index)`: a run is reproducible
    whatever the worker count, and every epoch gets new crops after `set_epoch`. Call
    `set_epoch` before iterating the epoch's loader; with `persistent_workers=True` the workers
    keep the epoch they were started with.

    Args:
        root: directory searched recursively by `list_images`.
        size: output side, or `(H, W)`; see `resize_and_crop` for the geometry.
        crop: `"random"` or `"random_resized"` (training), or `"center"`.
        on_error: `"skip"` or `"stop"`.
        extensions: file suffixes to include.
        seed: non-negative base seed of the random crops.

    Attributes:
        paths: the files, sorted; `keys`: their relative paths; `skipped`: unreadable files met
            so far by this copy.
    """

    noun = "image"

    def __init__(
        self,
        root: str | os.PathLike[str],
        size: int | Sequence[int],
        crop: Literal["center", "random", "random_resized"] = "random",
        on_error: Literal["skip", "stop"] = "skip",
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        seed: int = 0,
    ) -> None:
        target_size(size)
        if crop not in CROPS:
            raise ValueError(f"expected crop to be one of {CROPS}, got {crop!r}")
        super().__init__(root, list_images(root, extensions), on_error, seed)
        self.size = size
        self.crop = crop

    def _read(self, path: Path) -> torch.Tensor:
        return read_image(path)

    def _item(self, image: torch.Tensor, index: int, draw: int) -> dict[str, Any]:
        generator = self.generator(index, draw) if self.crop != "center" else None
        image = resize_and_crop(image, self.size, self.crop, generator)
        return {"image": to_float(image), "key": self.keys[index], "index": index}


def decode_batch(
    paths: Sequence[str | os.PathLike[str]],
    device: str | torch.device,
    size: int | Sequence[int],
    crop: Literal["center", "random", "random_resized"] = "center",
    *,
    root: str | os.PathLike[str] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[str], list[tuple[Path, str]]]:
    """Decode, resize and crop a batch of image files onto `device`, for encoding.

    On CUDA, baseline RGB or grayscale JPEGs are decoded by nvjpeg in one batched call (their
    EXIF orientation read from the headers and applied on the GPU). Everything else goes through
    `read_image` on the CPU: other formats, CMYK JPEGs, files without an end-of-image marker
    (truncated files, which nvjpeg might decode to grey instead of failing), and JPEGs nvjpeg
    rejects. A file that no decoder can read is reported in `failures`, never returned as an
    image. Resizing and cropping (`resize_and_crop`) run on `device`.

    Args:
        paths: image files.
        device: where the images end up; `"cuda"` enables nvjpeg.
        size: output side, or `(H, W)`.
        crop: `"center"` (the encoding default), `"random"` or `"random_resized"`.
        root: when given, keys are paths relative to it (as `ImageFolder` keys); else the paths
            as given.
        generator: random source for the random crops.

    Returns:
        `images` `(B, 3, H, W)` float32 in [-1, 1] on `device`, B = the files read; `keys` for
        them, in input order; `failures`, `(path, message)` for the others, in input order.
    """
    height, width = target_size(size)
    if crop not in CROPS:
        raise ValueError(f"expected crop to be one of {CROPS}, got {crop!r}")
    device = torch.device(device)
    paths = [Path(path) for path in paths]
    decoded: dict[int, torch.Tensor] = {}
    left_over: dict[int, bytes | None] = dict.fromkeys(range(len(paths)))
    failures: dict[int, str] = {}
    if device.type == "cuda":
        decoded, left_over, failures = _decode_jpegs_with_nvjpeg(paths, device)
    for index, data in left_over.items():
        try:
            decoded[index] = (
                read_image(paths[index]) if data is None else decode_image_bytes(data, paths[index])
            )
        except ImageReadError as error:
            failures[index] = str(error)
    images, keys = [], []
    for index, path in enumerate(paths):
        if index in decoded:
            image = decoded[index].to(device)
            images.append(to_float(resize_and_crop(image, (height, width), crop, generator)))
            keys.append(path.relative_to(root).as_posix() if root is not None else str(path))
    batch = (
        torch.stack(images)
        if images
        else torch.empty((0, 3, height, width), dtype=torch.float32, device=device)
    )
    return batch, keys, [(paths[index], failures[index]) for index in sorted(failures)]


def read_center_crops(
    paths: Sequence[str | os.PathLike[str]], size: int | Sequence[int]
) -> torch.Tensor:
    """Read image files and center-crop them (`resize_and_crop`) on the CPU, for evaluation.

    Unlike `decode_batch`, which reports unreadable files and goes on, this stops at the first:
    a score over a folder must not quietly leave images out.

    Args:
        paths: image files.
        size: output side, or `(H, W)`.

    Returns:
        `(B, 3, H, W)` float32 in [-1, 1], B = `len(paths)`, in input order.

    Raises:
        ImageReadError: a file cannot be read; the message names it.
    """
    height, width = target_size(size)
    images = [to_float(resize_and_crop(read_image(path), size, "center")) for path in paths]
    return torch.stack(images) if images else torch.empty((0, 3, height, width))


def _decode_jpegs_with_nvjpeg(
    paths: list[Path], device: torch.device
) -> tuple[dict[int, torch.Tensor], dict[int, bytes | None], dict[int, str]]:
    """Batched nvjpeg decoding of the files it can take.

    Returns:
        `decoded` (index -> `(3, H, W)` uint8 on `device`, upright), `left_over` (index -> the
        file's bytes, for the CPU decoder) and `failures` (index -> message: unreadable files).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    left_over: dict[int, bytes | None] = {}
    failures: dict[int, str] = {}
    candidates: list[tuple[int, bytes, int]] = []  # (index, bytes, EXIF orientation)
    for index, path in enumerate(paths):
        try:
            data = path.read_bytes()
        except OSError as error:
            failures[index] = str(ImageReadError(path, f"cannot read the file ({error})"))
            continue
        orientation = _nvjpeg_orientation(data)
        if orientation is None:
            left_over[index] = data
        else:
            candidates.append((index, data, orientation))
    decoded: dict[int, torch.Tensor] = {}
    if not candidates:
        return decoded, left_over, failures
    buffers = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for _, data, _ in candidates]
    try:
        images: list[torch.Tensor | None] = list(
            decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device)
        )
    except RuntimeError as error:
        # One file nvjpeg rejects fails the whole batched call: retry one by one so that only
        # that file takes the CPU path.
        logger.debug("batched nvjpeg decode failed (%s); decoding one by one", error)
        images = []
        for (index, _, _), buffer in zip(candidates, buffers):
            try:
                images.append(decode_jpeg(buffer, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as single_error:
                logger.debug("nvjpeg rejected %s (%s); using Pillow", paths[index], single_error)
                images.append(None)
    for (index, data, orientation), image in zip(candidates, images):
        if image is None:
            left_over[index] = data
        else:
            decoded[index] = apply_exif_orientation(image, orientation)
    return decoded, left_over, failures


def _nvjpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG that nvjpeg should decode, or None for the CPU path.

    Only the headers are parsed. Excluded: non-JPEG data, CMYK/YCCK (nvjpeg's colour handling
    of those differs from Pillow's), and files that do not end in an end-of-image marker (after
    trailing zero padding): a truncated file is left to Pillow, which reports it.
    """
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG" or image.mode not in ("L", "RGB"):
                return None
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return None  # damaged headers: Pillow's full decode gives the error message
    return orientation if isinstance(orientation, int) else 1


def side_by_side(
    originals: torch.Tensor, reconstructions: torch.Tensor, columns: int = 4
) -> torch.Tensor:
    """A grid image `(3, H', W')` of (original, reconstruction) pairs, `columns` pairs a row."""
    pairs = torch.cat([originals, reconstructions], dim=3).cpu()  # (B, 3, S, 2S)
    count = len(pairs)
    rows = -(-count // columns)
    blank = torch.full_like(pairs[0], -1.0)
    cells = list(pairs) + [blank] * (rows * columns - count)
    lines = [torch.cat(cells[r * columns : (r + 1) * columns], dim=2) for r in range(rows)]
    return torch.cat(lines, dim=1)
