"""`mediatok.data` images: every Pillow mode to RGB, bad files, listing, crops, datasets, writing.

Every image is generated in `tmp_path` with Pillow and numpy; expected pixel values are computed
by hand, not by the code under test.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mediatok.data import (
    ImageFolder,
    ImageReadError,
    Repeated,
    apply_exif_orientation,
    decode_batch,
    list_images,
    read_image,
    resize_and_crop,
    to_float,
    to_uint8,
    write_image,
)
from mediatok.data.image_io import EXIF_ORIENTATION_TAG


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """`(H, W, 3)` uint8 random pixels."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(height: int, width: int) -> np.ndarray:
    """`(H, W, 3)` uint8 gradients: survives JPEG with a small error."""
    rows = np.linspace(0, 255, height)[:, None]
    columns = np.linspace(0, 255, width)[None, :]
    planes = [rows + 0 * columns, columns + 0 * rows, (rows + columns) / 2]
    return np.stack(planes, axis=-1).round().astype(np.uint8)


def save(path: Path, image: Image.Image, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """`(H, W, 3)` -> `(3, H, W)`."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def png_16bit(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG from `(H, W)` or `(H, W, C)` uint16, C = 2, 3 or 4 (Pillow cannot write
    16-bit colour PNGs, so the chunks are assembled here)."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------
# modes


def test_rgb_png_is_exact(tmp_path: Path) -> None:
    pixels = noise(5, 7)
    image = read_image(save(tmp_path / "a.png", Image.fromarray(pixels)))
    assert image.dtype == torch.uint8 and image.shape == (3, 5, 7) and image.is_contiguous()
    assert torch.equal(image, as_tensor(pixels))


def test_grayscale_repeats_over_channels(tmp_path: Path) -> None:
    gray = np.array([[0, 17, 200], [255, 128, 3]], dtype=np.uint8)
    image = read_image(save(tmp_path / "gray.png", Image.fromarray(gray, mode="L")))
    assert torch.equal(image, torch.from_numpy(gray).expand(3, -1, -1))


def test_bilevel_image(tmp_path: Path) -> None:
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    path = save(tmp_path / "bits.png", bits)
    assert Image.open(path).mode == "1"
    assert read_image(path)[:, 0].tolist() == [[0, 255]] * 3


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I;16B", ".tif")])
def test_16bit_grayscale_scales_by_rounding(tmp_path: Path, mode: str, suffix: str) -> None:
    # 0xFF00 >> 8 would give 255 and 400 >> 8 would give 1: the right values are 254 and 2.
    values = np.array([[0, 65535, 32768, 0xFF00, 400, 257 * 77]], dtype=np.uint16)
    # Built from raw bytes: Pillow's convert("I;16B") clips to 255.
    order = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (values.shape[1], 1), values.astype(order).tobytes())
    path = save(tmp_path / f"deep{suffix}", image)
    assert Image.open(path).mode == mode
    assert read_image(path)[0, 0].tolist() == [0, 255, 128, 254, 2, 77]
    assert torch.equal(read_image(path)[0], read_image(path)[2])


def test_16bit_colour_png_is_not_truncated(tmp_path: Path) -> None:
    pixels = np.array([[[65535, 32768, 0xFF00], [400, 0, 257 * 9]]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(png_16bit(pixels))
    assert read_image(path).permute(1, 2, 0).tolist() == [[[255, 128, 254], [2, 0, 9]]]


def test_16bit_png_with_alpha_composites_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[0, 0, 0, 0], [0, 65535, 0, 65535], [0, 0, 0, 32768]]], dtype=np.uint16)
    (tmp_path / "rgba.png").write_bytes(png_16bit(rgba))
    image = read_image(tmp_path / "rgba.png")
    # transparent -> white; opaque green -> green; half-transparent black -> 255 * 32767/65535.
    assert image.permute(1, 2, 0).tolist() == [[[255, 255, 255], [0, 255, 0], [127, 127, 127]]]
    gray_alpha = np.array([[[0xFF00, 65535], [65535, 0]]], dtype=np.uint16)
    (tmp_path / "la.png").write_bytes(png_16bit(gray_alpha))
    assert read_image(tmp_path / "la.png").permute(1, 2, 0).tolist() == [[[254] * 3, [255] * 3]]


def png_with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """`png` with one more chunk right after IHDR (8-byte signature + 25-byte IHDR)."""
    extra = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + extra + png[33:]


def test_16bit_png_with_a_transparent_colour_composites_over_white(tmp_path: Path) -> None:
    # tRNS in a 16-bit PNG names one 16-bit colour (or gray level) as see-through.
    rgb = np.array([[[0, 3000, 6000], [65535, 0, 0]]], dtype=np.uint16)
    path = tmp_path / "rgb.png"
    path.write_bytes(png_with_chunk(png_16bit(rgb), b"tRNS", struct.pack(">3H", 0, 3000, 6000)))
    assert read_image(path).permute(1, 2, 0)[0].tolist() == [[255] * 3, [255, 0, 0]]
    gray = np.array([[1000, 65535, 0]], dtype=np.uint16)
    path = tmp_path / "gray.png"
    path.write_bytes(png_with_chunk(png_16bit(gray), b"tRNS", struct.pack(">H", 1000)))
    assert Image.open(path).info["transparency"] == 1000
    assert read_image(path).permute(1, 2, 0)[0].tolist() == [[255] * 3, [255] * 3, [0] * 3]


def test_32bit_integer_and_float_modes(tmp_path: Path) -> None:
    integers = Image.fromarray(np.array([[0, 65535, 32768, 70000, -5]], dtype=np.int32))
    assert integers.mode == "I"
    path = save(tmp_path / "int.tif", integers)
    assert Image.open(path).mode == "I"
    assert read_image(path)[1, 0].tolist() == [0, 255, 128, 255, 0]
    floats = Image.fromarray(np.array([[0.0, 1.0, 0.5, 2.0, -1.0]], dtype=np.float32))
    path = save(tmp_path / "float.tif", floats)
    assert Image.open(path).mode == "F"
    assert read_image(path)[0, 0].tolist() == [0, 255, 128, 255, 0]


def test_float_image_with_nan_is_an_error(tmp_path: Path) -> None:
    path = save(tmp_path / "nan.tif", Image.fromarray(np.array([[0.5, np.nan]], np.float32)))
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(path)


def test_rgba_composites_over_white(tmp_path: Path) -> None:
    rgba = np.array(
        [[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128], [200, 0, 0, 0]]], dtype=np.uint8
    )
    image = read_image(save(tmp_path / "rgba.png", Image.fromarray(rgba, mode="RGBA")))
    expected = [[255, 255, 255], [10, 20, 30], [127, 127, 127], [255, 255, 255]]
    assert image.permute(1, 2, 0)[0].tolist() == expected


def test_gray_alpha_composites_over_white(tmp_path: Path) -> None:
    la = Image.fromarray(np.array([[[40, 0], [40, 255]]], dtype=np.uint8), mode="LA")
    path = save(tmp_path / "la.png", la)
    assert Image.open(path).mode == "LA"
    assert read_image(path).permute(1, 2, 0)[0].tolist() == [[255] * 3, [40] * 3]


def test_palette_colours_are_kept(tmp_path: Path) -> None:
    palette = [255, 0, 0, 0, 128, 0, 1, 2, 3] + [0] * (256 * 3 - 9)
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    for name in ("p.png", "p.bmp", "p.gif"):
        path = save(tmp_path / name, image)
        assert Image.open(path).mode == "P"
        got = read_image(path).permute(1, 2, 0)
        assert got[0].tolist() == [[255, 0, 0], [0, 128, 0], [1, 2, 3]], name
        assert got[1].tolist() == [[1, 2, 3], [0, 128, 0], [255, 0, 0]], name


def test_palette_transparency_composites_over_white(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    path = save(tmp_path / "p.png", image, transparency=0)  # index 0 is see-through
    assert read_image(path).permute(1, 2, 0)[0].tolist() == [[255, 255, 255], [0, 0, 255]]


def test_cmyk_converts_to_rgb(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    path = save(tmp_path / "cmyk.tif", Image.fromarray(cmyk, mode="CMYK"))
    assert Image.open(path).mode == "CMYK"
    assert read_image(path).permute(1, 2, 0)[0].tolist() == [[255] * 3, [255, 0, 0], [0] * 3]


def test_cmyk_jpeg_reads(tmp_path: Path) -> None:
    cmyk = Image.fromarray(np.zeros((16, 16, 4), dtype=np.uint8), mode="CMYK")
    image = read_image(save(tmp_path / "cmyk.jpg", cmyk, quality=95))
    assert (image.int() - 255).abs().max() <= 2  # no ink is white


@pytest.mark.parametrize("suffix", [".webp", ".bmp"])
def test_webp_and_bmp_round_trip(tmp_path: Path, suffix: str) -> None:
    pixels = noise(9, 13)
    options = {"lossless": True} if suffix == ".webp" else {}
    image = read_image(save(tmp_path / f"a{suffix}", Image.fromarray(pixels), **options))
    assert torch.equal(image, as_tensor(pixels))


# --------------------------------------------------------------------------------------------
# EXIF orientation


def expected_upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """How a viewer shows `(H, W, 3)` pixels stored with `orientation` (EXIF 2.3, tag 0x0112)."""
    transposed = pixels.transpose(1, 0, 2)
    return {
        1: pixels,
        2: pixels[:, ::-1],
        3: pixels[::-1, ::-1],
        4: pixels[::-1],
        5: transposed,
        6: np.rot90(pixels, k=-1),  # rotate 90° clockwise
        7: transposed[::-1, ::-1],
        8: np.rot90(pixels, k=1),
    }[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    pixels = noise(3, 5)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    path = save(tmp_path / "o.png", Image.fromarray(pixels), exif=exif)
    assert torch.equal(read_image(path), as_tensor(expected_upright(pixels, orientation)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tensor_orientation_matches_pillow(orientation: int) -> None:
    # apply_exif_orientation is what the nvjpeg path uses; Pillow's exif_transpose is the reference.
    pixels = noise(4, 6, seed=orientation)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    reference = np.asarray(ImageOps.exif_transpose(image))
    assert torch.equal(apply_exif_orientation(as_tensor(pixels), orientation), as_tensor(reference))


def test_exif_rotation_of_a_jpeg(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    path = save(tmp_path / "camera.jpg", Image.fromarray(smooth(16, 40)), exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (3, 40, 16)
    expected = as_tensor(expected_upright(smooth(16, 40), 6)).int()
    assert (image.int() - expected).abs().float().mean() < 3


# --------------------------------------------------------------------------------------------
# bad files


def test_truncated_jpeg_raises_naming_the_path(tmp_path: Path) -> None:
    path = save(tmp_path / "photo.jpg", Image.fromarray(noise(64, 64)), quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated") as caught:
        read_image(path)
    assert str(path) in str(caught.value) and caught.value.path == path


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"<!DOCTYPE html><p>not found</p>", "not an image"), (b"", "empty file")],
)
def test_non_image_raises_naming_the_path(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=match) as caught:
        read_image(path)
    assert str(caught.value).startswith(str(path))
    assert isinstance(caught.value, ValueError)


def test_missing_file_and_damaged_png(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="cannot read the file"):
        read_image(tmp_path / "nothing.png")
    path = save(tmp_path / "a.png", Image.fromarray(noise(32, 32)))
    data = bytearray(path.read_bytes())
    data[60:80] = b"\x00" * 20  # inside the compressed IDAT stream
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=str(path)):
        read_image(path)


def test_image_read_error_pickles(tmp_path: Path) -> None:
    error = pickle.loads(pickle.dumps(ImageReadError(tmp_path / "x.jpg", "truncated")))
    assert error.path == tmp_path / "x.jpg" and str(error) == f"{tmp_path / 'x.jpg'}: truncated"


# --------------------------------------------------------------------------------------------
# listing


def test_list_images_is_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b/2.png", "a.JPG", "b/1.webp", "b/c/0.bmp", "z.jpeg", "notes.txt", "x.gif"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    for hidden in [".hidden/a.png", "._a.jpg"]:
        (tmp_path / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hidden).write_bytes(b"")
    listed = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path)]
    assert listed == ["a.JPG", "b/1.webp", "b/2.png", "b/c/0.bmp", "z.jpeg"]
    assert list_images(tmp_path, extensions=["gif", ".TXT"]) == [
        tmp_path / "notes.txt",
        tmp_path / "x.gif",
    ]


def test_list_images_errors_name_directory_and_extensions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist") as caught:
        list_images(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(caught.value) and ".webp" in str(caught.value)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images \(\.bmp, \.jpeg, \.jpg, \.png, \.webp\)"):
        list_images(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        list_images(tmp_path / "notes.txt")


# --------------------------------------------------------------------------------------------
# conversion and geometry


def test_to_float_and_back_is_exact() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    floats = to_float(pixels)
    assert floats.dtype == torch.float32 and floats.min() == -1 and floats.max() == 1
    assert torch.equal(to_uint8(floats), pixels)
    assert torch.equal(to_uint8(floats.bfloat16()), to_uint8(floats.bfloat16().float()))
    out_of_range = torch.tensor([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0]).reshape(1, 3, 1, 2)
    assert to_uint8(out_of_range).flatten().tolist() == [0, 0, 128, 255, 255, 255]
    with pytest.raises(TypeError, match="uint8"):
        to_float(floats)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        to_float(torch.zeros(4, 8, 8, dtype=torch.uint8))


def column_ramp(height: int, width: int) -> torch.Tensor:
    """`(3, H, W)` uint8 whose value is the column index."""
    return torch.arange(width, dtype=torch.uint8).expand(3, height, width).contiguous()


def test_center_crop_geometry_on_non_square_images() -> None:
    # Short side already at the target: no resampling, so the crop position shows exactly.
    wide = resize_and_crop(column_ramp(20, 51), 20, "center")
    assert wide.shape == (3, 20, 20) and wide[0, 0].tolist() == list(range(15, 35))
    tall = resize_and_crop(column_ramp(20, 51).transpose(1, 2), 20, "center")  # row ramp
    assert tall[0, :, 0].tolist() == list(range(15, 35))
    # (H, W) target: 20x50 scales by max(10/20, 40/50) = 0.8 to 16x40, then rows 3..12 remain.
    assert resize_and_crop(column_ramp(20, 50), (10, 40), "center").shape == (3, 10, 40)


def test_resize_downscales_and_upscales_keeping_content() -> None:
    flat = torch.full((3, 30, 90), 77, dtype=torch.uint8)
    for source in (flat, flat[:, :5, :7]):  # larger and smaller than the target
        out = resize_and_crop(source, 16, "center")
        assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
        assert bool((out == 77).all())
    halves = torch.zeros(3, 40, 80, dtype=torch.uint8)
    halves[:, :, 40:] = 255  # black | white; the 20x40 result keeps the split in its middle
    out = resize_and_crop(halves, 20, "center")
    assert out[0, 10, :8].max() == 0 and out[0, 10, -8:].min() == 255
    floats = resize_and_crop(to_float(halves), 20, "center")
    assert floats.dtype == torch.float32 and floats.shape == (3, 20, 20)


def test_resize_and_crop_rejects_bad_arguments() -> None:
    image = column_ramp(8, 8)
    with pytest.raises(ValueError, match="one of"):
        resize_and_crop(image, 4, "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int"):
        resize_and_crop(image, 0)
    with pytest.raises(ValueError, match="non-empty"):
        resize_and_crop(image[:, :0], 4)


def test_random_crop_follows_the_generator() -> None:
    image = column_ramp(16, 200)

    def left(seed: int) -> int:
        return int(
            resize_and_crop(image, 16, "random", torch.Generator().manual_seed(seed))[0, 0, 0]
        )

    assert left(3) == left(3)
    lefts = {left(seed) for seed in range(20)}
    assert len(lefts) > 10 and min(lefts) >= 0 and max(lefts) <= 200 - 16


def test_random_resized_crops_of_a_square_image_vary_in_scale_position_and_side() -> None:
    # A square image at the target size: every plain random crop is the whole image.
    image = column_ramp(64, 64)
    plain = resize_and_crop(image, 64, "random", torch.Generator().manual_seed(0))
    assert torch.equal(plain, image)

    def crop(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return resize_and_crop(image, 32, "random_resized", generator)

    crops = [crop(seed) for seed in range(40)]
    assert all(c.shape == (3, 32, 32) and c.dtype == torch.uint8 for c in crops)
    assert torch.equal(crop(7), crop(7))
    assert len({tuple(c[0, 0].tolist()) for c in crops}) > 30  # windows and scales differ
    # The ramp rises left to right; a flipped crop falls. About half are flipped.
    flipped = sum(int(c[0, 0, 0]) > int(c[0, 0, -1]) for c in crops)
    assert 8 <= flipped <= 32
    # A window is at least half the image's side: it spans at least ~half the ramp's range.
    spans = [abs(int(c[0, 0, 0]) - int(c[0, 0, -1])) for c in crops]
    assert min(spans) >= 0.4 * (int(image[0, 0, -1]) - int(image[0, 0, 0]))


def test_random_resized_crop_keeps_the_target_aspect_on_any_image() -> None:
    generator = torch.Generator().manual_seed(0)
    for height, width in [(5, 300), (300, 5), (1, 1), (40, 60)]:
        image = torch.full((3, height, width), 9, dtype=torch.uint8)
        out = resize_and_crop(image, (16, 24), "random_resized", generator)
        assert out.shape == (3, 16, 24) and bool((out == 9).all())


# --------------------------------------------------------------------------------------------
# ImageFolder


def make_folder(root: Path, names: list[str], height: int = 24, width: int = 60) -> list[Path]:
    paths = []
    for number, name in enumerate(names):
        paths.append(save(root / name, Image.fromarray(noise(height, width, seed=number))))
    return paths


def test_image_folder_items(tmp_path: Path) -> None:
    make_folder(tmp_path, ["b.png", "a/c.png"])
    dataset = ImageFolder(tmp_path, size=16, crop="center")
    assert len(dataset) == 2 and dataset.keys == ["a/c.png", "b.png"]
    item = dataset[1]
    assert item["key"] == "b.png" and item["index"] == 1
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    expected = resize_and_crop(read_image(tmp_path / "b.png"), 16, "center")
    assert torch.equal(to_uint8(item["image"]), expected)
    assert dataset[-1]["key"] == "b.png"
    with pytest.raises(IndexError, match="out of range"):
        dataset[2]


def test_repeated_copies_of_an_image_get_their_own_crops(tmp_path: Path) -> None:
    # `repeat: 64` shows each image 64 times an epoch: each copy must be a new crop (they were
    # all one crop, so the demo trained on 6 crops an epoch).
    save(tmp_path / "a.png", Image.fromarray(noise(16, 400)))
    save(tmp_path / "b.png", Image.fromarray(noise(16, 400, seed=1)))
    folder = ImageFolder(tmp_path, size=16, seed=7)
    repeated = Repeated(folder, 3)
    assert len(repeated) == 6 and [repeated[i]["key"] for i in range(6)] == ["a.png", "b.png"] * 3
    copies = [repeated[i]["image"] for i in (0, 2, 4)]  # a.png, three times
    assert len({crop.sum().item() for crop in copies}) == 3
    assert torch.equal(copies[0], folder[0]["image"])  # copy 0: the plain folder's crop
    assert torch.equal(repeated[2]["image"], Repeated(folder, 3)[2]["image"])  # reproducible
    repeated.set_epoch(1)
    assert not torch.equal(repeated[2]["image"], copies[1])  # new crops each epoch
    centered = Repeated(ImageFolder(tmp_path, size=16, crop="center"), 3)
    assert torch.equal(centered[0]["image"], centered[4]["image"])  # nothing random: the same
    with pytest.raises(IndexError, match="out of range"):
        repeated[6]


def test_image_folder_random_crops_are_reproducible(tmp_path: Path) -> None:
    # Four copies of one wide image: items differ only by their crops.
    pixels = noise(16, 400)
    for name in "abcd":
        save(tmp_path / f"{name}.png", Image.fromarray(pixels))
    first = ImageFolder(tmp_path, size=16, seed=7)
    second = ImageFolder(tmp_path, size=16, seed=7)
    crops = [first[index]["image"] for index in range(4)]
    assert all(torch.equal(crop, second[index]["image"]) for index, crop in enumerate(crops))
    assert len({crop.sum().item() for crop in crops}) == 4  # different across indices
    first.set_epoch(1)
    assert not torch.equal(first[0]["image"], crops[0])  # and across epochs
    first.set_epoch(0)
    assert torch.equal(first[0]["image"], crops[0])
    assert not torch.equal(ImageFolder(tmp_path, size=16, seed=8)[0]["image"], crops[0])
    with pytest.raises(ValueError, match="non-negative"):
        first.set_epoch(-1)


def test_image_folder_crops_do_not_depend_on_workers(tmp_path: Path) -> None:
    make_folder(tmp_path, ["a.png", "b.png", "c.png"], height=16, width=80)
    dataset = ImageFolder(tmp_path, size=16, seed=3)
    dataset.set_epoch(2)
    in_process = torch.stack([dataset[index]["image"] for index in range(3)])
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    batch = next(iter(loader))
    assert torch.equal(batch["image"], in_process) and batch["key"] == dataset.keys


def test_image_folder_skips_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_folder(tmp_path, ["a.png", "d.png"])
    (tmp_path / "b.png").write_text("not a png")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dataset = ImageFolder(tmp_path, size=16, crop="center", on_error="skip")
    with caplog.at_level(logging.WARNING, logger="mediatok.data"):
        item = dataset[1]
    assert item["key"] == "d.png" and item["index"] == 3  # b and c skipped, in order
    assert dataset.skipped == [tmp_path / "b.png", tmp_path / "c.jpg"]
    assert [record.name for record in caplog.records] == ["mediatok.data"] * 2
    assert str(tmp_path / "b.png") in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mediatok.data"):
        assert dataset[2]["key"] == "d.png"  # a known-bad file is not decoded (or logged) again
    assert not caplog.records and len(dataset.skipped) == 2
    assert dataset[3]["key"] == "d.png" and dataset[0]["key"] == "a.png"


def test_image_folder_skip_wraps_around_and_gives_up(tmp_path: Path) -> None:
    make_folder(tmp_path, ["a.png"])
    (tmp_path / "b.png").write_text("not a png")
    assert ImageFolder(tmp_path, size=8, on_error="skip")[1]["key"] == "a.png"
    (tmp_path / "a.png").write_text("also not a png")
    with pytest.raises(ValueError, match=f"no readable image in {tmp_path}"):
        ImageFolder(tmp_path, size=8, on_error="skip")[0]


def test_image_folder_stops_on_bad_files(tmp_path: Path) -> None:
    make_folder(tmp_path, ["a.png"])
    (tmp_path / "b.png").write_text("not a png")
    dataset = ImageFolder(tmp_path, size=16, on_error="stop")
    assert dataset[0]["key"] == "a.png"
    with pytest.raises(ImageReadError, match="not an image") as caught:
        dataset[1]
    assert caught.value.path == tmp_path / "b.png" and dataset.skipped == []


def test_image_folder_rejects_bad_arguments(tmp_path: Path) -> None:
    make_folder(tmp_path, ["a.png"])
    with pytest.raises(ValueError, match="on_error"):
        ImageFolder(tmp_path, 8, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crop"):
        ImageFolder(tmp_path, 8, crop="top")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path, 8, extensions=[".jpg"])


# --------------------------------------------------------------------------------------------
# write_image


def test_write_png_round_trip_is_exact(tmp_path: Path) -> None:
    pixels = as_tensor(noise(11, 17))
    path = tmp_path / "deep" / "er" / "out.PNG"
    write_image(path, pixels)
    assert torch.equal(read_image(path), pixels)
    write_image(path, to_float(pixels))  # float in [-1, 1], overwriting
    assert torch.equal(read_image(path), pixels)
    assert sorted(os.listdir(path.parent)) == ["out.PNG"]  # no temporary left behind


def test_write_jpeg(tmp_path: Path) -> None:
    pixels = as_tensor(smooth(32, 48))
    write_image(tmp_path / "out.jpg", pixels)
    with Image.open(tmp_path / "out.jpg") as image:
        assert image.format == "JPEG"
    assert (read_image(tmp_path / "out.jpg").int() - pixels.int()).abs().float().mean() < 2


def test_write_image_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    old = as_tensor(noise(4, 4))
    write_image(path, old)

    def fail(self: Image.Image, file: object, **options: object) -> None:
        file.write(b"half an image")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_image(path, as_tensor(noise(4, 4, seed=1)))
    monkeypatch.undo()
    assert torch.equal(read_image(path), old)  # the old file is whole
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_image_rejects_bad_input(tmp_path: Path) -> None:
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\.png, \.jpg or \.jpeg"):
        write_image(tmp_path / "a.webp", image)
    with pytest.raises(ValueError, match=r"\(3, H, W\), got \(4, 4\)"):
        write_image(tmp_path / "a.png", image[0])
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "a.png", torch.full((3, 4, 4), float("nan")))
    with pytest.raises(TypeError, match="int32"):
        write_image(tmp_path / "a.png", image.int())
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# decode_batch


def make_batch_files(root: Path) -> list[Path]:
    good = make_folder(root, ["a.png", "b.jpg", "c.webp"], height=30, width=50)
    (root / "d.png").write_text("not a png")
    truncated = root / "e.jpg"
    data = (root / "b.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [good[0], root / "d.png", good[1], truncated, good[2], root / "missing.jpg"]


def test_decode_batch_on_cpu(tmp_path: Path) -> None:
    paths = make_batch_files(tmp_path)
    images, keys, failures = decode_batch(paths, "cpu", 16)
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert keys == [str(tmp_path / name) for name in ("a.png", "b.jpg", "c.webp")]
    for image, key in zip(images, keys):
        expected = resize_and_crop(read_image(key), 16, "center")
        assert torch.equal(to_uint8(image), expected)
    assert [path.name for path, _ in failures] == ["d.png", "e.jpg", "missing.jpg"]
    assert all(message.startswith(str(path)) for path, message in failures)
    assert "truncated" in failures[1][1]
    _, keys, _ = decode_batch(paths[:1], torch.device("cpu"), (8, 12), root=tmp_path)
    assert keys == ["a.png"]
    empty, keys, failures = decode_batch(paths[1:2], "cpu", 16)
    assert empty.shape == (0, 3, 16, 16) and keys == [] and len(failures) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_batch_on_cuda_matches_cpu(tmp_path: Path) -> None:
    paths = make_batch_files(tmp_path)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    rotated = save(tmp_path / "f.jpg", Image.fromarray(smooth(30, 50)), exif=exif, quality=95)
    gray = save(tmp_path / "g.jpg", Image.fromarray(smooth(30, 50)[..., 0]), quality=95)
    cmyk = save(tmp_path / "h.jpg", Image.new("CMYK", (50, 30)), quality=95)
    paths += [rotated, gray, cmyk]
    on_gpu, gpu_keys, gpu_failures = decode_batch(paths, "cuda", 16)
    on_cpu, cpu_keys, cpu_failures = decode_batch(paths, "cpu", 16)
    assert on_gpu.device.type == "cuda" and gpu_keys == cpu_keys
    assert [path for path, _ in gpu_failures] == [path for path, _ in cpu_failures]
    # nvjpeg and libjpeg differ in IDCT and upsampling: a few levels at most.
    difference = (to_uint8(on_gpu.cpu()).int() - to_uint8(on_cpu).int()).abs()
    assert difference.float().mean() < 2 and difference.max() < 40
