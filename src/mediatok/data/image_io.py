"""Image files to tensors and back: listing, decoding every Pillow mode to RGB, atomic writing.

Every image in mediatok is a tensor `(3, H, W)`: uint8 in [0, 255] on disk and in data loading,
float in [-1, 1] inside models (`to_float` / `to_uint8` convert, the same two lines everywhere).

`read_image` decodes with Pillow and returns RGB whatever the file holds:

- grayscale (`L`, `1`) is repeated over the three channels; palette (`P`), `CMYK`, `YCbCr`, `HSV`
  go through Pillow's conversion to RGB (no ICC colour management: embedded profiles are
  ignored, as in every common training pipeline);
- anything with transparency (`RGBA`, `LA`, `PA`, premultiplied `RGBa`/`La`, `P`/`L`/`RGB` with a
  transparent colour) is composited over white;
- 16-bit samples (`I;16`, `I;16B`, 16-bit PNG in any colour type) are scaled by 255/65535 and
  rounded, not truncated to their high byte as Pillow does for 16-bit colour PNGs, which is why
  those are decoded with torchvision instead;
- 32-bit `I` is read as a 16-bit range [0, 65535] (it is what 16-bit grayscale becomes after
  many operations; larger values clip) and 32-bit float `F` as [0, 1] (the usual convention of
  float images; values outside clip, NaN or inf are an error);
- the EXIF orientation is applied; multi-frame files (GIF, animated WebP, TIFF pages) give their
  first frame.

A file that cannot be decoded raises `ImageReadError`, never a blank image. Pillow's global
`ImageFile.LOAD_TRUNCATED_IMAGES` must stay False (its default): set to True, Pillow itself pads
truncated files with grey and nothing downstream can tell.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from mediatok.data.folder import MediaReadError, list_files

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "apply_exif_orientation",
    "decode_image_bytes",
    "list_images",
    "read_image",
    "to_float",
    "to_uint8",
    "write_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EXIF_ORIENTATION_TAG = 0x0112
# Pillow decodes these PNG sample layouts to 8 bits by keeping the high byte (v >> 8), which is
# off by one level for about half of all values (e.g. 0xFF00 -> 255 instead of 254).
_PNG_16BIT_RAWMODES = frozenset({"RGB;16B", "RGBA;16B", "LA;16B"})
_16BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_JPEG_QUALITY = 95


class ImageReadError(MediaReadError):
    """An image file cannot be read or decoded; the message starts with its path.

    Args:
        path: the file at fault.
        problem: what went wrong, e.g. `"truncated or damaged JPEG data (...)"`.
    """


# --------------------------------------------------------------------------------------------
# listing


def list_images(
    root: str | os.PathLike[str], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Every image file under `root`, recursively, in a deterministic order: `list_files`."""
    return list_files(root, extensions, "images")


# --------------------------------------------------------------------------------------------
# reading


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an image file to RGB (see the module docstring for how each mode converts).

    Args:
        path: any format Pillow reads (JPEG, PNG, WebP, BMP, TIFF, GIF, ...).

    Returns:
        `(3, H, W)` uint8, contiguous, EXIF orientation applied.

    Raises:
        ImageReadError: the file is missing or unreadable, not an image, truncated or damaged;
            the message names the path and the problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(path, f"cannot read the file ({error.strerror or error})") from error
    return decode_image_bytes(data, path)


def decode_image_bytes(data: bytes, path: str | os.PathLike[str]) -> torch.Tensor:
    """`read_image` on the bytes of a file already in memory.

    Args:
        data: the whole file.
        path: where the bytes came from, for error messages.

    Returns:
        `(3, H, W)` uint8.

    Raises:
        ImageReadError: as `read_image`.
    """
    if not data:
        raise ImageReadError(path, "empty file (0 bytes), not an image")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"refused by Pillow: {error}") from error
    except Exception as error:
        # UnidentifiedImageError's own message shows only a BytesIO repr; the first bytes tell
        # an HTML error page or a text file saved under an image name at a glance.
        raise ImageReadError(
            path, f"not an image, or a format Pillow cannot read (file starts with {data[:16]!r})"
        ) from error
    with image:
        try:
            pixels = _decode_to_rgb(image, data)
        except Exception as error:
            # Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error, EOFError...
            # on damaged data; all of them mean the same thing here.
            raise ImageReadError(path, _describe_decode_error(image, error)) from error
    # One copy to a contiguous, writable (3, H, W) array (Pillow's arrays are read-only).
    return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))


def _describe_decode_error(image: Image.Image, error: Exception) -> str:
    what = f"{image.format or 'image'} data (mode {image.mode}, {image.width}x{image.height})"
    if isinstance(error, OSError) and "truncated" in str(error):
        return f"truncated {what}: {error}"
    return f"cannot decode the {what}: {type(error).__name__}: {error}"


def _decode_to_rgb(image: Image.Image, data: bytes) -> np.ndarray:
    """Decode an opened Pillow image to `(H, W, 3)` uint8 with the orientation applied."""
    # A PNG tRNS chunk in a 16-bit file names one 16-bit colour or gray level as see-through.
    transparent = image.info.get("transparency")
    if image.format == "PNG" and image.tile and image.tile[0][3] in _PNG_16BIT_RAWMODES:
        return _decode_16bit_png(data, transparent)
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    mode = image.mode
    if mode in _16BIT_GRAY_MODES or mode == "I":
        values = np.asarray(image)
        gray = _scale_16bit(np.clip(values, 0, 65535) if mode == "I" else values)
        if isinstance(transparent, int):
            gray = np.where(values == transparent, np.uint8(255), gray)  # over white
        return _gray_to_rgb(gray)
    if mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise ValueError("float image holds NaN or infinite values")
        return _gray_to_rgb(np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8))
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        if mode == "La":
            image = image.convert("LA")  # Pillow has no direct La -> RGBA conversion
        rgba = np.asarray(image.convert("RGBA"))
        return _composite_over_white(rgba[..., :3], rgba[..., 3], 255)
    return np.asarray(image.convert("RGB"))


def _decode_16bit_png(data: bytes, transparent: object = None) -> np.ndarray:
    """16-bit colour PNG through libpng (torchvision), which keeps all 16 bits; `transparent`
    is the `(r, g, b)` of a tRNS chunk (Pillow's `info["transparency"]`), or None."""
    from torchvision.io import ImageReadMode, decode_png

    planes = decode_png(
        torch.frombuffer(bytearray(data), dtype=torch.uint8),
        ImageReadMode.UNCHANGED,
        apply_exif_orientation=True,
    )
    pixels = planes.permute(1, 2, 0).numpy()  # (H, W, C) uint16, C = 2 (LA), 3 or 4
    if pixels.shape[2] == 3:
        scaled = _scale_16bit(pixels)
        if isinstance(transparent, tuple) and len(transparent) == 3:
            see_through = (pixels == np.array(transparent, dtype=pixels.dtype)).all(axis=2)
            scaled[see_through] = 255  # over white
        return scaled
    color = pixels[..., :3] if pixels.shape[2] == 4 else np.repeat(pixels[..., :1], 3, axis=2)
    return _composite_over_white(color, pixels[..., -1], 65535)


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """Round v * 255 / 65535 in integers: 65535 -> 255, 32768 -> 128, 0xFF00 -> 254."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)


def _composite_over_white(color: np.ndarray, alpha: np.ndarray, max_value: int) -> np.ndarray:
    """`color * a + white * (1 - a)` in 8 bits.

    Why white: the colour stored under a transparent pixel is arbitrary (often black, sometimes
    leftovers of an edit), so dropping alpha puts garbage into the training data; white is how
    viewers and web pages show such images (logos, product shots, icons), so the model learns
    what people see.

    Args:
        color: `(H, W, 3)` integers in [0, max_value].
        alpha: `(H, W)` integers in [0, max_value], max_value opaque.
        max_value: 255 or 65535.

    Returns:
        `(H, W, 3)` uint8.
    """
    opacity = alpha.astype(np.float32)[..., None] / max_value
    scaled = color.astype(np.float32) * (255.0 / max_value)
    blended = scaled * opacity + 255.0 * (1.0 - opacity)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def apply_exif_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn an image stored with EXIF orientation `orientation` upright, on any device.

    The same transforms as `PIL.ImageOps.exif_transpose`; for decoders that do not apply it
    themselves (nvjpeg).

    Args:
        image: `(..., C, H, W)`.
        orientation: the EXIF tag value, 1 to 8; other values leave the image as it is.

    Returns:
        `(..., C, H, W)`, or `(..., C, W, H)` for orientations 5 to 8.
    """
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, dims=(-2, -1))  # a quarter turn clockwise
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, dims=(-2, -1))  # a quarter turn counterclockwise
    return image


# --------------------------------------------------------------------------------------------
# conversion


def to_float(image: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 pixels to the model range: `v / 127.5 - 1`, so 0 -> -1 and 255 -> 1 exactly.

    Args:
        image: `(..., 3, H, W)` uint8.
        dtype: a floating dtype.

    Returns:
        `(..., 3, H, W)` in [-1, 1]; `to_uint8` gives back the input exactly.
    """
    _check_image(image, "to_float")
    if image.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 pixels, got {image.dtype}")
    return image.to(dtype) / 127.5 - 1.0


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Model range back to pixels: `(x + 1) * 127.5`, rounded to nearest, clamped to [0, 255].

    Args:
        image: `(..., 3, H, W)` float in [-1, 1]; values outside clamp. Computed in fp32 so that
            bf16/fp16 inputs round the same way. NaN has no defined result (no check here, it
            would cost a device sync per call; `write_image` checks).

    Returns:
        `(..., 3, H, W)` uint8.
    """
    _check_image(image, "to_uint8")
    if not image.is_floating_point():
        raise TypeError(f"to_uint8 expects a float image in [-1, 1], got {image.dtype}")
    pixels = (image.float() + 1.0) * 127.5
    return pixels.round_().clamp_(0, 255).to(torch.uint8)


def _check_image(image: torch.Tensor, caller: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{caller} expects a tensor, got {type(image).__name__}")
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"{caller} expects (..., 3, H, W), got shape {tuple(image.shape)}")


# --------------------------------------------------------------------------------------------
# writing


def write_image(path: str | os.PathLike[str], image: torch.Tensor) -> None:
    """Write an RGB image to PNG (lossless) or JPEG (quality 95), atomically.

    The bytes go to a hidden temporary file beside `path` that is then renamed over it, so a
    reader or a killed job never sees half an image. Not fsynced: a power cut may still lose
    it (thousands of small files would pay a sync each).

    Args:
        path: ends in `.png`, `.jpg` or `.jpeg` (any case); parent directories are created.
        image: `(3, H, W)` on any device, either uint8 pixels or float in [-1, 1] (the model
            range; a float image in [0, 1] would come out washed-out, not rejected: that range is
            not detectable). Floats are converted with `to_uint8`.

    Raises:
        ValueError: an unknown suffix, a wrong shape, or non-finite float values.
        TypeError: not a tensor, or neither uint8 nor float.
    """
    path = Path(path)
    image_format = _WRITE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"expected a path ending in .png, .jpg or .jpeg, got {path}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a tensor image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    if image.is_floating_point():
        if not torch.isfinite(image).all():
            raise ValueError(f"cannot write {path}: the float image holds NaN or infinite values")
        image = to_uint8(image)
    elif image.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image or a float image in [-1, 1], got {image.dtype}")
    pixels = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    options = {"quality": _JPEG_QUALITY} if image_format == "JPEG" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and call; opened with "xb" so the file gets the umask's permissions
    # (tempfile would make it 0600).
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "xb") as file:
            Image.fromarray(pixels).save(file, format=image_format, **options)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
