"""Images in the modality table: files of any Pillow format, one PNG per decoded sample, PSNR,
SSIM, rFID and codebook usage.

A codec's spec records `image_size`: every file is resized on its short side and center-cropped
(or randomly cropped) to it before encoding, and evaluation compares each reconstruction with
that crop.

Layer 5.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mediatok.codecs import Codec, Tokens
from mediatok.codecs.nested_dropout import length_choices
from mediatok.data import (
    ImageReadError,
    decode_batch,
    list_images,
    read_center_crops,
    read_image,
    side_by_side,
    write_image,
)
from mediatok.eval import CodebookUsage, InceptionFeatures, fid_from_features, psnr, ssim
from mediatok.modalities.base import (
    DecodeOptions,
    Encoded,
    EncodedBatch,
    EncodeOptions,
    EvalOptions,
    Modality,
    codec_settings,
    file_problem,
)
from mediatok.progress import progress
from mediatok.report import ReportMedia, ReportRow, write_codebook_counts
from mediatok.tokens import TokenSpec

__all__ = ["IMAGE", "PREVIEW_COLUMNS", "PREVIEW_ROWS", "ImageModality"]

PREVIEW_COLUMNS = 8  # samples a row of a sample folder's grid.png
PREVIEW_ROWS = 16  # rows (classes) at most
PREFIX_GRID_ROWS = 8  # images of `k_grid.png`, one row each

logger = logging.getLogger(__name__)


class ImageModality(Modality):
    name = "image"
    noun = "images"
    formats = ("png",)
    geometry_keys = ("image_size",)

    def list_files(self, root: str | os.PathLike) -> list[Path]:
        return list_images(root)

    def encode_files(
        self, codec: Codec, paths: Sequence[Path], device: torch.device, options: EncodeOptions
    ) -> Iterator[EncodedBatch]:
        """Batches of `options.batch_size` files, decoded (JPEGs on the GPU when there is one),
        resized and cropped to the codec's size, encoded."""
        size = self.geometry(codec.token_spec)["image_size"]
        for start in range(0, len(paths), options.batch_size):
            batch = paths[start : start + options.batch_size]
            images, read, failures = decode_batch(batch, device, size, crop=options.crop)
            encoded = []
            if read:
                codes = codec.encode(images).codes.cpu()  # (B, *token_shape)
                encoded.append(Encoded([Path(path) for path in read], codes))
            yield EncodedBatch(encoded, failures, len(batch))

    def decode(
        self,
        codec: Codec,
        codes: Sequence[torch.Tensor],
        media_lengths: Sequence[int | None],
        device: torch.device,
        options: DecodeOptions,
    ) -> list[torch.Tensor]:
        """One batch; samples of different lengths (prefixes of a codec whose tokens decode
        from any prefix) are padded along the length axis and decoded with their lengths."""
        settings = codec_settings(codec, options.codec_settings)
        axis = codec.token_spec.length_axis
        lengths = torch.tensor([sample.shape[axis] for sample in codes])
        if len(set(lengths.tolist())) == 1:
            tokens = torch.stack(list(codes)).to(device)  # (B, *token_shape): one size
        else:
            batch = torch.zeros(len(codes), *codes[int(lengths.argmax())].shape, dtype=torch.int64)
            for row, sample in enumerate(codes):
                batch[row].narrow(axis, 0, sample.shape[axis]).copy_(sample)
            tokens = Tokens(batch.to(device), codec.token_spec, lengths.to(device))
        return list(codec.decode(tokens, **settings).float().clamp(-1, 1).cpu())  # (3, S, S)

    def write(
        self, path: Path, media: torch.Tensor, spec: TokenSpec, rate: float | None = None
    ) -> None:
        write_image(path, media)

    def write_preview(
        self, folder: Path, files: Sequence[Path], labels: Sequence[int] | None
    ) -> Path | None:
        """`grid.png`: one row per class (its first `PREVIEW_COLUMNS` samples; the first
        `PREVIEW_ROWS` classes) when labelled, else the first samples in rows of
        `PREVIEW_COLUMNS`; cells of a short row stay black."""
        if not files:
            return None
        if labels is None:
            count = min(len(files), PREVIEW_COLUMNS * PREVIEW_ROWS)
            rows = [list(range(start, min(start + PREVIEW_COLUMNS, count)))
                    for start in range(0, count, PREVIEW_COLUMNS)]  # fmt: skip
        else:
            by_class: dict[int, list[int]] = {}
            for index, label in enumerate(labels):
                by_class.setdefault(int(label), []).append(index)
            rows = [indices[:PREVIEW_COLUMNS] for indices in by_class.values()][:PREVIEW_ROWS]
        images = {i: read_image(files[i]) for row in rows for i in row}  # (3, H, W) uint8
        height, width = next(iter(images.values())).shape[1:]
        grid = torch.zeros(3, len(rows) * height, PREVIEW_COLUMNS * width, dtype=torch.uint8)
        for r, row in enumerate(rows):
            for c, i in enumerate(row):
                cell = images[i]
                h, w = min(height, cell.shape[1]), min(width, cell.shape[2])
                grid[:, r * height : r * height + h, c * width : c * width + w] = cell[:, :h, :w]
        path = Path(folder) / "grid.png"
        write_image(path, grid)
        return path

    def evaluate(
        self, codec: Codec, folder: str | os.PathLike, out: Path, options: EvalOptions
    ) -> dict[str, Any]:
        """PSNR and SSIM (means over images), rFID between the crops and their reconstructions
        (the standard FID Inception network), codebook usage and perplexity over every token;
        `reconstructions.png` shows the first `grid_pairs` crops beside their reconstructions.

        An image that cannot be read is listed under `skipped` (`on_error="skip"`) or stops
        the evaluation (`"stop"`). No image metric is undefined (`undefined` is empty, `scored`
        counts every image read): PSNR of a perfect reconstruction counts as 100 dB.

        Raises:
            ValueError: DNSMOS asked for; rFID of fewer than two images (listed or read); no
                image read.
            FileNotFoundError: rFID without the Inception weights, naming the install command
                and `fid=False`.
            StopEvaluation: see above.
        """
        if options.dnsmos:
            raise ValueError(
                f"expected an audio codec for DNSMOS (it scores speech), got modality "
                f"{codec.modality!r}"
            )
        size = self.geometry(codec.token_spec)["image_size"]
        device = next(codec.parameters()).device
        root = Path(folder)
        paths = self.list_files(root)[: options.limit]
        if options.fid and len(paths) < 2:
            limited = f" with limit={options.limit}" if options.limit is not None else ""
            raise ValueError(
                f"expected at least 2 images for rFID, got {len(paths)} from {folder}{limited}; "
                "pass fid=False (--no-fid) to score without it"
            )
        inception = None
        if options.fid:
            try:
                inception = InceptionFeatures(device)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"{error}; or score without rFID: fid=False (--no-fid)"
                ) from error
        usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
        settings = codec_settings(codec, options.codec_settings)
        prefixes = prefix_lengths(codec.token_spec)
        curve = {k: _PrefixScores() for k in prefixes}
        scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
        real_features, fake_features, grid = [], [], []
        skipped: list[dict[str, str]] = []
        batches = range(0, len(paths), options.batch_size)
        for start in progress(batches, desc="eval", unit="batch"):
            crops = []
            for path in paths[start : start + options.batch_size]:
                try:
                    crops.append(read_center_crops([path], size))  # (1, 3, S, S)
                except ImageReadError as error:
                    outcome = "skipped (listed in the report's `skipped`)"
                    file_problem(path, error.problem, outcome, options, logger)
                    skipped.append(
                        {"key": path.relative_to(root).as_posix(), "error": error.problem}
                    )
            if not crops:
                continue
            images = torch.cat(crops).to(device)  # (B, 3, S, S)
            tokens = codec.encode(images)
            reconstruction = None
            for k in prefixes:  # every prefix of ordered tokens decodes: FlexTok's k-curve
                decoded = codec.decode(tokens.codes[:, :k], **settings).float().clamp(-1, 1)
                curve[k].add(decoded, images, inception, options.grid_pairs)
                if k == tokens.codes.shape[1]:  # every token: the reconstruction itself
                    reconstruction = decoded
            if reconstruction is None:
                reconstruction = codec.decode(tokens, **settings).float().clamp(-1, 1)
            usage.update_tokens(tokens.codes, tokens.spec)
            scores["psnr"].append(psnr(reconstruction, images).cpu())
            scores["ssim"].append(ssim(reconstruction, images).cpu())
            if inception is not None:
                real_features.append(inception.features(images).cpu())
                fake_features.append(inception.features(reconstruction).cpu())
            if len(grid) < options.grid_pairs:
                grid.extend(zip(images.cpu(), reconstruction.cpu(), strict=True))
        if not grid:
            raise ValueError(
                f"expected readable images in {root}, got none of {len(paths)} "
                f"({len(skipped)} skipped)"
            )
        per_image = {name: torch.cat(values) for name, values in scores.items()}
        count = len(per_image["psnr"])
        if inception is not None and count < 2:
            raise ValueError(
                f"expected at least 2 images for rFID, got {count} readable of {len(paths)} "
                f"from {folder}; pass fid=False (--no-fid) to score without it"
            )
        codebook = usage.compute()
        originals, reconstructions = zip(*grid[: options.grid_pairs], strict=True)
        out.mkdir(parents=True, exist_ok=True)
        write_image(
            out / "reconstructions.png",
            side_by_side(torch.stack(originals), torch.stack(reconstructions)),
        )
        write_codebook_counts(out, usage)
        k_curve = None
        if prefixes:
            k_curve = [{"k": k, **curve[k].summary(real_features)} for k in prefixes]
            (out / "k_curve.json").write_text(json.dumps(k_curve, indent=1))
            points = [(point["k"], point["psnr"]) for point in k_curve]
            write_image(out / "k_curve.png", plot_curve(points, "tokens k", "PSNR dB"))
            rows = [
                torch.cat([original, *(curve[k].grid[i] for k in prefixes)], dim=2)
                for i, original in enumerate(originals[:PREFIX_GRID_ROWS])
            ]  # (3, S, S·(1 + len(prefixes))) each: the original, then one column per k
            write_image(out / "k_grid.png", torch.cat(rows, dim=1))
        return {
            "images": str(folder),
            "num_images": count,
            "image_size": size,
            "psnr": float(per_image["psnr"].clamp(max=100).mean()),
            "ssim": float(per_image["ssim"].mean()),
            "rfid": fid_from_features(torch.cat(real_features), torch.cat(fake_features))
            if inception is not None
            else None,
            "scored": {"psnr": count, "ssim": count},
            "undefined": {},
            "skipped": skipped,
            "codebook_usage": codebook["usage"],
            "codebook_perplexity": codebook["perplexity"],
            **({} if k_curve is None else {"k_curve": k_curve}),
        }

    def report_media(self, out: Path, report: dict[str, Any]) -> list[ReportRow]:
        """`reconstructions.png`: the crops beside their reconstructions; with a k-curve (a
        codec whose tokens decode from any prefix), also `k_grid.png` and `k_curve.png`."""
        size = report["image_size"]
        caption = f"each {size}×{size} crop (left) beside its reconstruction (right)"
        grid = ReportMedia("image", out / "reconstructions.png", caption)
        rows = [ReportRow("Originals and reconstructions", (grid,))]
        if report.get("k_curve"):
            ks = [point["k"] for point in report["k_curve"]]
            scores = ", ".join(f"k = {p['k']}: {p['psnr']:.2f} dB" for p in report["k_curve"])
            prefixes = ReportMedia(
                "image",
                out / "k_grid.png",
                f"each crop, then decoded from its first {', '.join(map(str, ks))} tokens",
            )
            curve = ReportMedia("image", out / "k_curve.png", "PSNR against k", width=480)
            rows.append(ReportRow("Decoded from the first k tokens", (prefixes, curve), scores))
        return rows


def prefix_lengths(spec: TokenSpec) -> list[int]:
    """The prefix lengths k a k-curve scores, for tokens whose spec says any prefix decodes
    (`prefix_decodable`): 1, 2, 4, ... below the token count K, then K; none otherwise."""
    count = spec.geometry.get("num_tokens")
    if not spec.geometry.get("prefix_decodable") or not count:
        return []
    return length_choices("pow2", int(count))  # the lengths FlexTok trains on


class _PrefixScores:
    """PSNR, SSIM, Inception features and the first images of the decodes from k tokens."""

    def __init__(self) -> None:
        self.psnr: list[torch.Tensor] = []
        self.ssim: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []
        self.grid: list[torch.Tensor] = []

    def add(self, decoded, images, inception, keep: int) -> None:
        self.psnr.append(psnr(decoded, images).cpu())
        self.ssim.append(ssim(decoded, images).cpu())
        if inception is not None:
            self.features.append(inception.features(decoded).cpu())
        self.grid.extend(decoded.cpu()[: max(0, keep - len(self.grid))])

    def summary(self, real_features: list[torch.Tensor]) -> dict[str, float | None]:
        rfid = None
        if self.features:
            rfid = fid_from_features(torch.cat(real_features), torch.cat(self.features))
        return {
            "psnr": float(torch.cat(self.psnr).clamp(max=100).mean()),
            "ssim": float(torch.cat(self.ssim).mean()),
            "rfid": rfid,
        }


def plot_curve(
    points: list[tuple[float, float]],
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (480, 320),
) -> torch.Tensor:
    """A line plot of `points` on a log2 x axis, drawn with Pillow (the library needs no
    plotting package): `(3, H, W)` uint8, white background, labelled axes and ticks."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 56, 16, 16, 40
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    xs = [math.log2(x) for x, _ in points]
    ys = [y for _, y in points]
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_low, y_high = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> tuple[float, float]:
        u = left + (x - x_low) / (x_high - x_low) * (width - left - right)
        v = height - bottom - (y - y_low) / (y_high - y_low) * (height - top - bottom)
        return u, v

    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], "black")
    for (x, _), u in zip(points, xs, strict=True):
        px, _ = at(u, y_low)
        draw.line([(px, height - bottom), (px, height - bottom + 4)], "black")
        draw.text((px - 6, height - bottom + 6), f"{x:g}", fill="black")
    for y in (y_low, (y_low + y_high) / 2, y_high):
        _, py = at(x_low, y)
        draw.text((4, py - 6), f"{y:.4g}", fill="black")
    draw.line([at(u, y) for u, y in zip(xs, ys, strict=True)], fill=(31, 119, 180), width=2)
    for u, y in zip(xs, ys, strict=True):
        px, py = at(u, y)
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(31, 119, 180))
    draw.text((width // 2 - 20, height - 16), x_label, fill="black")
    draw.text((left + 4, 2), y_label, fill="black")
    pixels = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
    return pixels.reshape(height, width, 3).permute(2, 0, 1).contiguous()  # (3, H, W)


IMAGE = ImageModality()
