"""`mediatok eval`: score a codec's reconstructions of a folder (the metrics of its modality's
entry), or a folder of generated samples against reference images (gFID); write
`metrics.json`.

Layer 5.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mediatok.codecs import Codec
from mediatok.eval import fid as fid_scores  # the module: tests replace its `fid`
from mediatok.modalities import EvalOptions, modality_of
from mediatok.pipelines.common import load_decoding_codec
from mediatok.runtime import resolve_device

__all__ = ["evaluate_codec", "evaluate_samples"]


def evaluate_codec(
    codec: str | os.PathLike | Codec,
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    **options: Any,
) -> dict[str, Any]:
    """Score a codec's reconstructions of the media files under `folder`; write the report.

    Images: each is resized (short side) and center-cropped to the codec's size, encoded,
    decoded and compared with its crop: PSNR and SSIM (means over images), rFID between the
    crops and their reconstructions (the standard FID Inception network), codebook usage and
    perplexity over every token, and `reconstructions.png` (originals beside reconstructions).
    Audio: mel and multi-resolution STFT distances, SI-SDR, PESQ and STOI (and DNSMOS when
    asked for), codebook usage, and `examples/` (originals beside reconstructions).

    Args:
        codec: a codec checkpoint directory, or a loaded codec (which stays on its device).
        folder: the media files (searched recursively).
        out: gets `metrics.json` and what the modality writes beside it.
        device: where to load a checkpoint.
        **options: `EvalOptions` fields (`batch_size`, `limit`, `fid`, `grid_pairs`,
            `speech_metrics`, `dnsmos`, `examples`, `chunk_seconds`).

    Returns:
        The report written to `metrics.json`.

    Raises:
        ValueError: a bad option, an option the codec's modality does not have (DNSMOS of
            images), or a file the metrics cannot score.
    """
    settings = EvalOptions(**options)
    checkpoint = None
    if not isinstance(codec, Codec):
        checkpoint = codec
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        codec = load_decoding_codec(checkpoint, device)
    modality = modality_of(codec)
    out = Path(out)
    metrics = modality.evaluate(codec, folder, out, settings)
    report = {"checkpoint": None if checkpoint is None else str(checkpoint), **metrics}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    return report


def evaluate_samples(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """gFID of a folder of generated images against a folder of reference images at the
    samples' resolution (the standard FID Inception network); write `metrics.json`.

    Returns:
        `{"samples", "reference", "gfid"}`, as written.
    """
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    score = fid_scores.fid(samples, reference, batch_size=batch_size, device=device)
    report = {"samples": str(samples), "reference": str(reference), "gfid": score}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    return report
