"""Images in the modality table: files of any Pillow format, one PNG per decoded sample, PSNR,
SSIM, rFID and codebook usage.

A codec's spec records `image_size`: every file is resized on its short side and center-cropped
(or randomly cropped) to it before encoding, and evaluation compares each reconstruction with
that crop.

Layer 5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mediatok.codecs import Codec
from mediatok.data import decode_batch, list_images, read_center_crops, side_by_side, write_image
from mediatok.eval import CodebookUsage, InceptionFeatures, fid_from_features, psnr, ssim
from mediatok.modalities.base import (
    DecodeOptions,
    Encoded,
    EncodedBatch,
    EncodeOptions,
    EvalOptions,
    Modality,
)
from mediatok.tokens import TokenSpec

__all__ = ["IMAGE", "ImageModality", "codebook_usage"]


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

    def write(self, path: Path, media: torch.Tensor, spec: TokenSpec) -> None:
        write_image(path, media)

    def evaluate(
        self, codec: Codec, folder: str | os.PathLike, out: Path, options: EvalOptions
    ) -> dict[str, Any]:
        """PSNR and SSIM (means over images), rFID between the crops and their reconstructions
        (the standard FID Inception network), codebook usage and perplexity over every token;
        `reconstructions.png` shows the first `grid_pairs` crops beside their reconstructions.
        """
        if options.dnsmos:
            raise ValueError(
                f"expected an audio codec for DNSMOS (it scores speech), got modality "
                f"{codec.modality!r}"
            )
        size = self.geometry(codec.token_spec)["image_size"]
        device = next(codec.parameters()).device
        paths = self.list_files(folder)[: options.limit]
        if options.fid and len(paths) < 2:
            limited = f" with limit={options.limit}" if options.limit is not None else ""
            raise ValueError(
                f"expected at least 2 images for rFID, got {len(paths)} from {folder}{limited}; "
                "pass fid=False (--no-fid) to score without it"
            )
        inception = InceptionFeatures(device) if options.fid else None
        usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
        scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
        real_features, fake_features, grid = [], [], []
        for start in tqdm(range(0, len(paths), options.batch_size), desc="eval", disable=None):
            batch = paths[start : start + options.batch_size]
            images = read_center_crops(batch, size).to(device)
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
        per_image = {name: torch.cat(values) for name, values in scores.items()}
        codebook = usage.compute()
        originals, reconstructions = zip(*grid[: options.grid_pairs], strict=True)
        out.mkdir(parents=True, exist_ok=True)
        write_image(
            out / "reconstructions.png",
            side_by_side(torch.stack(originals), torch.stack(reconstructions)),
        )
        return {
            "images": str(folder),
            "num_images": len(paths),
            "image_size": size,
            "psnr": float(per_image["psnr"].clamp(max=100).mean()),
            "ssim": float(per_image["ssim"].mean()),
            "rfid": fid_from_features(torch.cat(real_features), torch.cat(fake_features))
            if inception is not None
            else None,
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
