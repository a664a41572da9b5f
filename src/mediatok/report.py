"""`report.html`: the page `mediatok eval` writes beside `metrics.json`, for looking and listening.

The page is one HTML file that needs no network: its images (reconstruction grids, frame
strips, spectrograms, sample grids) are inlined as `data:` URIs, its audio and video players
point at files beside it by relative paths (`examples/...`), and the codebook-usage histogram
is an inline SVG. It shows the metrics table (each value with the number of files in its mean),
what the modality's entry offers (`Modality.report_media`: rows of `ReportMedia`), the
histogram drawn from `codebook.json` (`codebook_counts`, written by the evaluation: the codes
used and how often) and the files left out of the means.

Nothing here knows a modality: it renders what an evaluation returned and wrote. The helpers a
modality's entry uses to make its media (`spectrograms`, `image_grid`) are plain functions of
tensors and files.

Layer 5: data, eval.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mediatok.data import read_image, resize_and_crop, write_image
from mediatok.eval.audio import mel_spectrogram
from mediatok.eval.codebook import CodebookUsage

__all__ = [
    "CODEBOOK_FILE",
    "REPORT_FILE",
    "ReportMedia",
    "ReportRow",
    "codebook_counts",
    "image_grid",
    "read_codebook_counts",
    "spectrograms",
    "write_codebook_counts",
    "write_grid",
    "write_report",
]

REPORT_FILE = "report.html"
CODEBOOK_FILE = "codebook.json"
CODEBOOK_FORMAT = 1
HISTOGRAM_BARS = 128  # at most this many bars a level; more codes share a bar
_DISPLAY_WIDTH = 1024  # small images are shown enlarged up to about this width (pixelated)


@dataclass(frozen=True)
class ReportMedia:
    """One piece of media on the page.

    Attributes:
        kind: "image" (inlined), "audio" or "video" (a player of the file, by relative path).
        path: the file; audio and video should lie under the report's folder (the page points
            at them relatively, so the folder travels whole).
        caption: shown under it.
        picture: an image shown above an audio player (its spectrogram); None for none.
        width: display width in CSS pixels (None: the image's own, enlarged when small; a
            video's 256).
    """

    kind: Literal["image", "audio", "video"]
    path: Path
    caption: str = ""
    picture: Path | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "audio", "video"):
            raise ValueError(f"expected kind image, audio or video, got {self.kind!r}")


@dataclass(frozen=True)
class ReportRow:
    """A titled row of media shown side by side (an original beside its reconstruction).

    Attributes:
        title: the row's heading.
        items: its media, left to right.
        note: a line under the heading.
    """

    title: str
    items: tuple[ReportMedia, ...]
    note: str = ""


# --------------------------------------------------------------------------------------------
# codebook counts


def codebook_counts(usage: CodebookUsage) -> dict[str, Any]:
    """The histograms of `usage`, compactly: per level its size and the codes used with their
    counts (unused codes are left out, so a 2^18-code level seen on a few thousand tokens stays
    small). Sums over ranks (`CodebookUsage.reduce`: a collective under torch.distributed).

    Returns:
        `{"format": 1, "levels": [{"codebook_size": K, "codes": [...], "counts": [...]}]}`.
    """
    levels = []
    for size, histogram in zip(usage.codebook_sizes, usage.reduce(), strict=True):
        histogram = histogram.cpu()
        used = histogram.nonzero().flatten()  # (U,) ascending
        levels.append(
            {
                "codebook_size": size,
                "codes": used.tolist(),
                "counts": histogram[used].tolist(),
            }
        )
    return {"format": CODEBOOK_FORMAT, "levels": levels}


def write_codebook_counts(out: str | os.PathLike, usage: CodebookUsage) -> Path:
    """Write `codebook_counts(usage)` to `out/codebook.json` (one line); returns the path."""
    path = Path(out) / CODEBOOK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(codebook_counts(usage), separators=(",", ":")))
    return path


def read_codebook_counts(path: str | os.PathLike) -> list[torch.Tensor]:
    """The per-level histograms (`(K,)` int64 each) that `write_codebook_counts` wrote.

    Raises:
        ValueError: a file of another format, naming it.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        histograms = []
        for level in data["levels"]:
            histogram = torch.zeros(int(level["codebook_size"]), dtype=torch.int64)
            histogram[torch.tensor(level["codes"], dtype=torch.int64)] = torch.tensor(
                level["counts"], dtype=torch.int64
            )
            histograms.append(histogram)
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
        raise ValueError(
            f"{path}: expected the codebook counts an evaluation writes, got {error}"
        ) from error
    if data.get("format") != CODEBOOK_FORMAT:
        raise ValueError(f"{path}: expected format {CODEBOOK_FORMAT}, got {data.get('format')}")
    return histograms


# --------------------------------------------------------------------------------------------
# media helpers for the modalities

# Viridis at nine stops, interpolated: perceptually even, readable in grey.
_VIRIDIS = torch.tensor(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=torch.float32,
)


def _colormap(values: torch.Tensor) -> torch.Tensor:
    """`(H, W)` in [0, 1] -> `(3, H, W)` uint8 through `_VIRIDIS`."""
    position = values.clamp(0, 1) * (len(_VIRIDIS) - 1)  # (H, W)
    low = position.floor().long().clamp(max=len(_VIRIDIS) - 2)
    weight = (position - low)[..., None]  # (H, W, 1)
    colors = _VIRIDIS[low] * (1 - weight) + _VIRIDIS[low + 1] * weight  # (H, W, 3)
    return colors.round().byte().permute(2, 0, 1)  # (3, H, W)


def spectrograms(
    clips: Sequence[torch.Tensor],
    sample_rate: int,
    *,
    n_mels: int = 80,
    top_db: float = 80.0,
    height: int = 128,
    max_width: int = 480,
) -> list[torch.Tensor]:
    """Log-mel spectrograms of `clips` as images on one colour scale (the loudest bin of all
    of them at the top of the scale, `top_db` below it at the bottom), so that an original and
    its reconstruction compare by eye. 10 ms a column (at most `max_width` columns, averaged
    down), low frequencies at the bottom.

    Args:
        clips: waveforms `(S,)` or `(1, S)` in [-1, 1] at `sample_rate`.
        sample_rate: in Hz.
        n_mels: mel bands (stretched to `height` rows).
        top_db: the dynamic range shown.
        height, max_width: the image size in pixels.

    Returns:
        `(3, height, W)` uint8 images, one per clip.
    """
    n_fft = 1 << max(8, math.ceil(math.log2(sample_rate * 0.04)))  # about 40 ms windows
    transform = mel_spectrogram(sample_rate, n_fft, max(1, sample_rate // 100), n_mels)
    decibels = []
    for clip in clips:
        clip = clip.detach().float().cpu().reshape(-1)  # (S,)
        if clip.numel() <= n_fft // 2:  # too short for centred frames: pad with silence
            clip = torch.nn.functional.pad(clip, (0, n_fft // 2 + 1 - clip.numel()))
        magnitude = transform(clip)  # (n_mels, T)
        decibels.append(20 * torch.log10(magnitude.clamp(min=1e-5)))
    peak = max(float(d.max()) for d in decibels)
    images = []
    for values in decibels:
        scaled = ((values - (peak - top_db)) / top_db).clamp(0, 1).flip(0)  # high bands on top
        width = min(values.shape[1], max_width)
        scaled = torch.nn.functional.interpolate(
            scaled[None, None],
            size=(height, width),
            mode="area" if width < values.shape[1] else "nearest",
        )[0, 0]  # (height, W)
        images.append(_colormap(scaled))
    return images


def image_grid(
    files: Sequence[str | os.PathLike], columns: int = 8, limit: int = 64
) -> torch.Tensor:
    """The first `limit` images of `files` in rows of `columns`, each resized and
    center-cropped to the first one's size; `(3, H, W)` uint8 (a short last row stays black).

    Raises:
        ValueError: no files.
    """
    files = list(files)[:limit]
    if not files:
        raise ValueError("expected at least one image for a grid, got none")
    first = read_image(files[0])  # (3, h, w)
    height, width = first.shape[1:]
    rows = -(-len(files) // columns)
    grid = torch.zeros(3, rows * height, min(columns, len(files)) * width, dtype=torch.uint8)
    for index, file in enumerate(files):
        image = first if index == 0 else read_image(file)
        if tuple(image.shape[1:]) != (height, width):
            image = resize_and_crop(image, (height, width), "center")
        r, c = divmod(index, columns)
        grid[:, r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return grid


# --------------------------------------------------------------------------------------------
# the page


def write_report(
    out: str | os.PathLike,
    report: dict[str, Any],
    rows: Sequence[ReportRow] = (),
    *,
    title: str,
    codebook: str | os.PathLike | None = None,
) -> Path:
    """Write `out/report.html`.

    Args:
        out: the report's folder (holds `metrics.json`; relative media paths start here).
        report: what `metrics.json` holds: scalar values become the metrics table (with
            `scored` counts beside them), `skipped` and `undefined` the list of files left out.
        rows: the media to show (`Modality.report_media`).
        title: the page's heading.
        codebook: a `codebook.json` (`write_codebook_counts`) to draw the usage histogram
            from; None draws none.

    Returns:
        The page's path.

    Raises:
        FileNotFoundError: a media file that is not there.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = [_metrics_table(report)]
    for row in rows:
        sections.append(_media_row(out, row))
    if codebook is not None:
        sections.append(_codebook_section(read_codebook_counts(codebook), report))
    left_out = _left_out(report)
    if left_out:
        sections.append(left_out)
    page = _PAGE.format(
        title=html.escape(title),
        sections="\n".join(sections),
        footer=html.escape(
            "The numbers are those of metrics.json beside this page; the players and images "
            "are files in this folder."
        ),
    )
    path = out / REPORT_FILE
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, path)
    return path


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1060px;
       padding: 0 16px; color: #1d1d1f; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }}
h2 {{ font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }}
p.note {{ color: #555; margin: 2px 0 10px; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 3px 14px 3px 0; text-align: left; vertical-align: top; }}
td.value {{ font-variant-numeric: tabular-nums; }}
td.scored {{ color: #777; }}
.row {{ display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }}
figure {{ margin: 0; }}
figcaption {{ color: #555; font-size: 13px; margin-top: 3px; }}
.pixels {{ image-rendering: pixelated; }}
img, video {{ max-width: 100%; display: block; }}
audio {{ display: block; width: 320px; margin-top: 4px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #444; }}
footer {{ color: #777; font-size: 13px; margin-top: 36px; }}
</style>
</head>
<body>
<h1>{title}</h1>
{sections}
<footer>{footer}</footer>
</body>
</html>
"""


def _format(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _metrics_table(report: dict[str, Any]) -> str:
    scored = report.get("scored") if isinstance(report.get("scored"), dict) else {}
    lines = []
    for name, value in report.items():
        if isinstance(value, dict | list):
            continue
        count = scored.get(name)
        lines.append(
            f"<tr><th>{html.escape(name)}</th>"
            f'<td class="value">{html.escape(_format(value))}</td>'
            f'<td class="scored">{"" if count is None else f"{count} scored"}</td></tr>'
        )
    return f'<h2>Metrics</h2>\n<table id="metrics">\n{chr(10).join(lines)}\n</table>'


def _data_uri(path: Path) -> tuple[str, tuple[int, int]]:
    """An image file as a `data:` URI (PNG, or JPEG as it is) and its size in pixels."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        size, kind = image.size, (image.format or "PNG").lower()
    if kind not in ("png", "jpeg", "gif", "webp"):  # any other format: re-encoded as PNG
        buffer = io.BytesIO()
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB").save(buffer, format="PNG")
        data, kind = buffer.getvalue(), "png"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}", size


def _image_tag(path: Path, alt: str, width: int | None = None, enlarge: bool = True) -> str:
    """An inlined `<img>`: at `width`, else its own width, enlarged (pixelated, at most 4×)
    towards `_DISPLAY_WIDTH` when small and `enlarge`."""
    uri, (natural, _) = _data_uri(path)
    if width is None:
        scale = max(1, min(4, _DISPLAY_WIDTH // max(natural, 1))) if enlarge else 1
        width = natural * scale
    pixelated = ' class="pixels"' if width > natural else ""
    return f'<img src="{uri}" width="{width}" alt="{html.escape(alt)}"{pixelated}>'


def _relative(out: Path, path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"expected a media file for the report, got no file at {path}")
    relative = os.path.relpath(path.resolve(), out.resolve())
    return urllib.parse.quote(Path(relative).as_posix())


def _media_row(out: Path, row: ReportRow) -> str:
    figures = []
    for item in row.items:
        parts = []
        if item.picture is not None:
            picture = Path(item.picture)
            parts.append(_image_tag(picture, f"{item.caption} (picture)", enlarge=False))
        if item.kind == "image":
            parts.append(_image_tag(Path(item.path), item.caption, item.width))
        elif item.kind == "audio":
            source = _relative(out, Path(item.path))
            parts.append(f'<audio controls preload="metadata" src="{source}"></audio>')
        else:
            source = _relative(out, Path(item.path))
            parts.append(
                f'<video controls loop muted autoplay playsinline preload="auto" '
                f'width="{item.width or 256}" class="pixels" src="{source}"></video>'
            )
        caption = f"<figcaption>{html.escape(item.caption)}</figcaption>" if item.caption else ""
        figures.append(f"<figure>{''.join(parts)}{caption}</figure>")
    note = f'<p class="note">{html.escape(row.note)}</p>' if row.note else ""
    return f'<h2>{html.escape(row.title)}</h2>\n{note}\n<div class="row">{"".join(figures)}</div>'


def _codebook_section(histograms: list[torch.Tensor], report: dict[str, Any]) -> str:
    charts = []
    for level, histogram in enumerate(histograms):
        name = f"level {level}: " if len(histograms) > 1 else ""
        charts.append(_histogram_svg(histogram, name))
    note = (
        "Each bar is a group of codes, ranked from the most used to the least; its height is "
        "the share of all tokens that one code of the group takes, on average. A codebook used "
        "evenly is flat; the bars that reach zero are codes never used."
    )
    return (
        '<h2>Codebook usage</h2>\n<p class="note">'
        + html.escape(note)
        + "</p>\n"
        + "\n".join(charts)
    )


def _histogram_svg(histogram: torch.Tensor, name: str) -> str:
    """An inline SVG bar chart of a level's codes ranked by use (`HISTOGRAM_BARS` bars at
    most), with the used count and the perplexity in its heading."""
    size = len(histogram)
    total = int(histogram.sum())
    ranked = histogram.double().sort(descending=True).values / max(total, 1)  # (K,)
    used = int((histogram > 0).sum())
    probabilities = ranked[ranked > 0]
    perplexity = float(torch.exp(-(probabilities * probabilities.log()).sum())) if used else 0.0
    bars = min(size, HISTOGRAM_BARS)
    edges = torch.linspace(0, size, bars + 1).round().long()
    heights = [float(ranked[edges[i] : edges[i + 1]].mean()) for i in range(bars)]
    width, height, left, bottom, top = 720, 200, 52, 30, 12
    plot_width, plot_height = width - left - 10, height - bottom - top
    peak = max(heights) or 1.0
    bar_width = plot_width / bars
    rects = []
    for i, value in enumerate(heights):
        h = plot_height * value / peak
        x, y = left + i * bar_width, top + plot_height - h
        rects.append(
            f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(bar_width - 0.6, 0.5):.2f}" '
            f'height="{h:.2f}" fill="#3b6ea8"></rect>'
        )
    heading = (
        f"{name}{used} of {size} codes used ({used / size:.1%}), perplexity {perplexity:.1f}, "
        f"{total} tokens"
    )
    axes = (
        f'<line x1="{left}" y1="{top + plot_height}" x2="{width - 10}" y2="{top + plot_height}" '
        'stroke="#888"></line>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_height}" stroke="#888"></line>'
        f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{peak:.2%}</text>'
        f'<text x="{left - 4}" y="{top + plot_height}" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 8}">most used</text>'
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end">least used '
        f"(codes ranked by use{'' if bars == size else f', {size / bars:.3g} codes a bar'})</text>"
    )
    return (
        f'<p class="note">{html.escape(heading)}</p>\n'
        f'<svg class="codebook" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(heading)}">'
        f"{axes}{''.join(rects)}</svg>"
    )


def _left_out(report: dict[str, Any]) -> str:
    items = []
    for entry in report.get("skipped") or []:
        items.append(f"{entry.get('key')}: skipped, {entry.get('error')}")
    for metric, files in (report.get("undefined") or {}).items():
        for key, why in files.items():
            items.append(f"{key}: no {metric}, {why}")
    if not items:
        return ""
    listed = "".join(f"<li>{html.escape(item)}</li>" for item in items[:200])
    more = f"<li>… and {len(items) - 200} more (metrics.json)</li>" if len(items) > 200 else ""
    return f"<h2>Left out of the means</h2>\n<ul>{listed}{more}</ul>"


def write_grid(path: str | os.PathLike, files: Sequence[str | os.PathLike], **options: Any) -> Path:
    """`image_grid(files, **options)` written to `path` (PNG); returns the path."""
    write_image(path, image_grid(files, **options))
    return Path(path)
