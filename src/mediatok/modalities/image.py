"""Images in the modality table: files of any Pillow format, one PNG per decoded sample, PSNR,
SSIM, rFID and codebook usage.

A codec's spec records `image_size`: every file is resized on its short side and center-cropped
(or randomly cropped) to it before encoding, and evaluation compares each reconstruction with
that crop.

Layer 5.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mediatok.codecs import Codec
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
    file_problem,
)
from mediatok.tokens import TokenSpec

__all__ = ["IMAGE", "PREVIEW_COLUMNS", "PREVIEW_ROWS", "ImageModality", "codebook_usage"]

PREVIEW_COLUMNS = 8  # samples a row of a sample folder's grid.png
PREVIEW_ROWS = 16  # rows (classes) at most

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
        batch = torch.stack(list(codes)).to(device)  # (B, *token_shape): one size
        return list(codec.decode(batch).float().clamp(-1, 1).cpu())  # (3, S, S) each

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
        scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
        real_features, fake_features, grid = [], [], []
        skipped: list[dict[str, str]] = []
        for start in tqdm(range(0, len(paths), options.batch_size), desc="eval", disable=None):
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
            reconstruction = codec.decode(tokens).float().clamp(-1, 1)
            usage.update(codebook_usage(tokens.codes, tokens.spec))
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
        }


def codebook_usage(codes: torch.Tensor, spec: TokenSpec) -> torch.Tensor:
    """Codes `(B, *token_shape)` as `CodebookUsage` reads them: `(B, tokens, Q)`, the level
    axis last ("Q H W", "Q N" move theirs), so that each level is counted apart."""
    if spec.level_axis is not None:
        codes = codes.movedim(1 + spec.level_axis, -1)  # (B, ..., Q)
    return codes.reshape(len(codes), -1, spec.num_levels)


IMAGE = ImageModality()
