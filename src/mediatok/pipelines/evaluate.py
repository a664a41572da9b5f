"""`mediatok eval`: score a codec's reconstructions of a folder (the metrics of its modality's
entry), or a folder of generated samples against reference images (gFID); write
`metrics.json` and, beside it, `report.html` (`mediatok.report`: the metrics, what the
modality's entry shows of the media, the codebook-usage histogram from `codebook.json`).

Layer 5.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch

from mediatok.codecs import Codec
from mediatok.config import check_choice
from mediatok.eval import fid as fid_scores  # the module: tests replace its `fid`
from mediatok.modalities import EvalOptions, StopEvaluation, modality_of
from mediatok.modalities.base import codec_settings
from mediatok.pipelines.common import Stopped, load_decoding_codec
from mediatok.report import (
    CODEBOOK_FILE,
    ReportMedia,
    ReportRow,
    write_codebook_counts,
    write_grid,
    write_report,
)
from mediatok.runtime import resolve_device

__all__ = ["GFID_MIN_IMAGES", "evaluate_codec", "evaluate_samples"]

logger = logging.getLogger(__name__)

# Below this many images in either folder, gFID is said to be biased (see `evaluate_samples`).
GFID_MIN_IMAGES = 5000
_SIZES_CHECKED = 1000  # the resolution check reads the headers of this many files a folder


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

    Each metric is the mean over the files for which it is defined. The report says which
    were left out: `scored` (metric -> files in its mean), `undefined` (metric -> {key: why}:
    a silent original has no PESQ, a file of 1000 samples no STFT distance; see
    `mediatok.eval.audio`) and `skipped` (`{"key", "error"}` of each file that cannot be read);
    keys are paths relative to `folder`. With `on_error="stop"`, the first such file stops the
    evaluation instead.

    Args:
        codec: a codec checkpoint directory, or a loaded codec (which stays on its device).
        folder: the media files (searched recursively).
        out: gets `metrics.json`, what the modality writes beside it (`codebook.json`, grids,
            examples) and `report.html`.
        device: where to load a checkpoint.
        **options: `EvalOptions` fields (`batch_size`, `limit`, `fid`, `grid_pairs`,
            `speech_metrics`, `dnsmos`, `examples`, `chunk_seconds`, `on_error`).

    Returns:
        The report written to `metrics.json`.

    Raises:
        ValueError: a bad option, an option the codec's modality does not have (DNSMOS of
            images), a decode setting the codec does not take (`steps` of a codec whose
            decoding is not sampling), no readable file, or a file the metrics cannot score (NaN).
        ImportError, FileNotFoundError: a metric's package or the FID weights are missing; the
            message names the install command and the option that does without.
        Stopped: a file that cannot be read or scored, with `on_error="stop"`; nothing is
            written.
    """
    settings = EvalOptions(**options)
    checkpoint = None
    if not isinstance(codec, Codec):
        checkpoint = codec
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        codec = load_decoding_codec(checkpoint, device)
    modality = modality_of(codec)
    codec_settings(codec, settings.codec_settings)  # one the codec does not take: refused now
    out = Path(out)
    try:
        metrics = modality.evaluate(codec, folder, out, settings)
    except StopEvaluation as stop:
        raise Stopped(
            f"stopped at {stop.path} (on_error='stop', --on-error stop): {stop.problem}; no "
            "report was written: remove or fix the file, or leave it out of the scores with "
            "--on-error skip (on_error='skip'), which lists it in the report"
        ) from None
    report = {"checkpoint": None if checkpoint is None else str(checkpoint), **metrics}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    codebook = out / CODEBOOK_FILE
    write_report(
        out,
        report,
        modality.report_media(out, report),
        title=f"{codec.name} reconstructing {folder}",
        codebook=codebook if codebook.is_file() else None,
    )
    return report


def evaluate_samples(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    on_error: Literal["skip", "stop"] = "skip",
) -> dict[str, Any]:
    """gFID of a folder of generated images against a folder of reference images at the
    samples' resolution (the standard FID Inception network); write `metrics.json`.

    Logs a warning (`mediatok eval: warning: ...` on the command line) when either folder
    holds fewer than `GFID_MIN_IMAGES` images (the 2048-d covariances are then poorly
    estimated and FID is biased upward; published gFIDs use 10,000 or 50,000), or when the samples and the references are not all of one
    resolution (judged from the headers of each folder's first 1000 files): both are resized
    to the network's 299×299, so the score would measure the resolution gap too.

    Args:
        samples: a folder of generated images (searched recursively).
        reference: a folder of reference images.
        out: gets `metrics.json` and `report.html` (the sample grid, the first reference
            images, and the codebook histogram of the samples' `tokens/` when there are any).
        batch_size: images per forward pass of the network.
        device: where to run it.
        on_error: an unreadable image is logged and left out ("skip") or stops the job with
            an error naming it ("stop").

    Returns:
        `{"samples", "reference", "gfid"}`, as written.
    """
    check_choice("on_error", on_error, ("skip", "stop"))
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    _warn_about_gfid_folders(Path(samples), Path(reference))
    score = fid_scores.fid(
        samples,
        reference,
        batch_size=batch_size,
        device=device,
        on_error="raise" if on_error == "stop" else "skip",
    )
    report = {"samples": str(samples), "reference": str(reference), "gfid": score}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    write_report(
        out,
        report,
        _sample_rows(Path(samples), Path(reference), out),
        title=f"samples in {samples} against {reference}",
        codebook=_sample_codebook(Path(samples), out),
    )
    return report


def _sample_rows(samples: Path, reference: Path, out: Path) -> list[ReportRow]:
    """The report's grids: the samples' `grid.png` (`mediatok sample` writes one, a row per
    class) or the first 64 samples, and the first 16 reference images. A folder with no
    readable image gives no grid (its problem is the score's to report)."""
    from mediatok.data import list_images

    rows = []
    for name, folder, limit in (("samples", samples, 64), ("reference", reference, 16)):
        grid = folder / "grid.png"
        if name == "reference" or not grid.is_file():
            try:
                files = list_images(folder, extensions=fid_scores.IMAGE_SUFFIXES)
                grid = write_grid(out / f"{name}.png", files, limit=limit)
            except (OSError, ValueError) as error:  # no folder, no image, an unreadable one
                logger.warning("report.html: no grid of the %s: %s", name, error)
                continue
        caption = f"{name} ({folder})"
        rows.append(ReportRow(name.capitalize(), (ReportMedia("image", grid, caption),)))
    return rows


def _sample_codebook(samples: Path, out: Path) -> Path | None:
    """`codebook.json` of the codes in the samples' `tokens/` (which `mediatok sample` writes),
    for the report's histogram; None without such tokens."""
    from mediatok.eval import CodebookUsage
    from mediatok.tokens import TokenDataset, TokenFileError

    if not (samples / "tokens" / "manifest.json").is_file():
        return None
    try:
        dataset = TokenDataset(samples / "tokens")
        spec = dataset.spec
        usage = CodebookUsage(list(spec.vocab_sizes))
        for index in range(len(dataset)):
            usage.update_tokens(dataset[index]["codes"][None], spec)  # (1, *token_shape)
    except (TokenFileError, ValueError) as error:
        logger.warning("report.html: no codebook histogram of the samples' tokens: %s", error)
        return None
    return write_codebook_counts(out, usage)


def _warn_about_gfid_folders(samples: Path, reference: Path) -> None:
    """The warnings of `evaluate_samples`: too few images, or resolutions that differ. A folder
    that is missing is left to the scoring, which says so."""
    from PIL import Image

    from mediatok.data import list_images

    counts, sizes = {}, {}
    for name, folder in (("samples", samples), ("reference", reference)):
        if not folder.is_dir():
            return
        files = list_images(folder, extensions=fid_scores.IMAGE_SUFFIXES)
        counts[name] = len(files)
        sizes[name] = Counter()
        for file in files[:_SIZES_CHECKED]:
            try:
                with Image.open(file) as image:
                    sizes[name][image.size] += 1
            except Exception:  # unreadable: the scoring reports it
                continue
    if min(counts.values()) < GFID_MIN_IMAGES:
        logger.warning(
            "gFID of %d samples against %d reference images: below %d images in a folder the "
            "covariance of the 2048 Inception features is poorly estimated and FID is biased "
            "upward (published gFIDs use 10,000 or 50,000 samples); compare it only with gFIDs "
            "of as many images",
            counts["samples"],
            counts["reference"],
            GFID_MIN_IMAGES,
        )
    every = set(sizes["samples"]) | set(sizes["reference"])
    if len(every) > 1:

        def describe(found: Counter) -> str:
            common = [f"{width}×{height}" for (width, height), _ in found.most_common(3)]
            more = f" and {len(found) - 3} more" if len(found) > 3 else ""
            return ", ".join(common) + more if common else "none readable"

        logger.warning(
            "gFID: the samples are %s but the reference images are %s: both are resized to "
            "299×299 for the Inception network, so the score measures the difference in "
            "resolution too; use reference images at the samples' resolution",
            describe(sizes["samples"]),
            describe(sizes["reference"]),
        )
