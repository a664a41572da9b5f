"""Videos in the modality table: any container and codec the PyAV wheel decodes (MP4/H.264,
WebM/VP9, AVI/MJPEG, MKV, animated GIF) in, MP4 (H.264) out at the source's frame rate and frame
count; per-frame PSNR and SSIM, a temporal-consistency score, frame FID, FVD (with I3D weights the
user gives) and codebook usage.

A codec's spec records `image_size` (frames are resized on their short side and center-cropped,
or randomly cropped, to it, the same window for every frame), `temporal_compression` (chunked
encoding cuts a video on multiples of it) and `fps` (the rate of generated samples). A video
keeps its own frames unless `EncodeOptions.fps` resamples it; its frame count and rate are
stored beside its codes, so decoding writes it back at its source's length and rate. Short
videos are encoded in padded batches of similar length, each as if alone (`lengths`); a video of
more than `chunk_frames` frames is encoded alone, in chunks, with the codes of one pass.

Layer 5.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mediatok.codecs import Codec
from mediatok.data import (
    VideoReadError,
    list_videos,
    read_video,
    resize_and_crop_video,
    to_float,
    video_info,
    write_image,
    write_video,
)
from mediatok.eval import (
    I3D,
    CodebookUsage,
    InceptionFeatures,
    fid_from_features,
    frame_features,
    frame_psnr,
    frame_ssim,
    fvd,
    fvd_features,
    temporal_consistency,
)
from mediatok.eval.i3d import FVD_FRAMES
from mediatok.modalities.base import (
    DecodeOptions,
    Encoded,
    EncodedBatch,
    EncodeOptions,
    EvalOptions,
    Modality,
    file_problem,
)
from mediatok.progress import progress
from mediatok.report import ReportMedia, ReportRow, write_codebook_counts
from mediatok.tokens import TokenSpec

__all__ = ["STRIP_FRAMES", "VIDEO", "VideoModality", "frame_strip"]

STRIP_FRAMES = 8  # frames a row of a preview strip shows, evenly spaced
logger = logging.getLogger(__name__)


class VideoModality(Modality):
    name = "video"
    noun = "videos"
    formats = ("mp4", "webm", "mkv")
    geometry_keys = ("image_size", "temporal_compression", "fps")

    def list_files(self, root: str | os.PathLike) -> list[Path]:
        return list_videos(root)

    def _read(self, path: Path, size: int, crop: str, fps: float | None) -> tuple[Any, float]:
        """A video as the codec takes it: `(3, T, S, S)` float in [-1, 1], and its rate."""
        frames, rate = read_video(path, fps=fps)
        if frames.shape[1] == 0:
            raise VideoReadError(path, "no frames")
        frames = resize_and_crop_video(frames, size, crop)  # (3, T, S, S) uint8
        return to_float(frames.transpose(0, 1)).transpose(0, 1), rate  # (3, T, S, S) in [-1, 1]

    def encode_files(
        self, codec: Codec, paths: Sequence[Path], device: torch.device, options: EncodeOptions
    ) -> Iterator[EncodedBatch]:
        """Batches of `options.batch_size` files in order of length (similar lengths share a
        batch: less padding); a video of more than `chunk_frames` frames is encoded alone, in
        chunks of them."""
        size = self.geometry(codec.token_spec)["image_size"]
        step = self.geometry(codec.token_spec)["temporal_compression"]
        chunk = step * max(1, options.chunk_frames // step)  # chunks on the compression's grid
        paths = sorted(paths, key=_frame_count)
        for start in range(0, len(paths), options.batch_size):
            batch = paths[start : start + options.batch_size]
            out = EncodedBatch(size=len(batch))
            short: list[tuple[Path, torch.Tensor, float]] = []
            for path in batch:
                try:
                    video, rate = self._read(path, size, options.crop, options.fps)
                except VideoReadError as error:
                    out.failures.append((path, error.problem))
                    continue
                frames = video.shape[1]
                if frames > chunk:
                    tokens = codec.encode_long(video[None].to(device), chunk)
                    out.encoded.append(_encoded([path], tokens.codes, None, [frames], [rate]))
                else:
                    short.append((path, video, rate))
            if short:
                lengths = torch.tensor([video.shape[1] for _, video, _ in short])
                videos = torch.zeros(
                    len(short), 3, int(lengths.max()), size, size
                )  # (B, 3, T, S, S)
                for row, (_, video, _) in enumerate(short):
                    videos[row, :, : video.shape[1]] = video
                tokens = codec.encode(videos.to(device), lengths=lengths.to(device))
                out.encoded.append(
                    _encoded(
                        [path for path, _, _ in short],
                        tokens.codes,
                        tokens.lengths,
                        lengths.tolist(),
                        [rate for _, _, rate in short],
                    )
                )
            yield out

    def decode(
        self,
        codec: Codec,
        codes: Sequence[torch.Tensor],
        media_lengths: Sequence[int | None],
        device: torch.device,
        options: DecodeOptions,
    ) -> list[torch.Tensor]:
        """Samples of more than `chunk_latent_frames` latent frames alone, in chunks; the others
        as one padded batch, each as if alone. Each comes out with its source's frame count when
        it is known, else with the 1 + compression·(T' − 1) frames its codes give."""
        media: list[torch.Tensor | None] = [None] * len(codes)
        limit = options.chunk_latent_frames
        short = [i for i, sample in enumerate(codes) if len(sample) <= limit]
        for i in sorted(set(range(len(codes))) - set(short)):
            video = codec.decode_long(codes[i][None].to(device), limit)[0].float().cpu()
            media[i] = _trim(video, media_lengths[i])
        if short:
            lengths = torch.tensor([len(codes[i]) for i in short])
            shape = (len(short), int(lengths.max()), *codes[short[0]].shape[1:])
            batch = torch.zeros(shape, dtype=torch.int64)  # (B, T', h, w), padded
            for row, i in enumerate(short):
                batch[row, : lengths[row]] = codes[i]
            videos = codec.decode(batch.to(device), lengths=lengths.to(device)).float().cpu()
            step = self.geometry(codec.token_spec)["temporal_compression"]
            for row, i in enumerate(short):
                frames = 1 + step * (int(lengths[row]) - 1)
                media[i] = _trim(videos[row, :, :frames], media_lengths[i])
        return [video.clamp(-1, 1) for video in media]

    def write(
        self, path: Path, media: torch.Tensor, spec: TokenSpec, rate: float | None = None
    ) -> None:
        write_video(path, media, rate or self.geometry(spec)["fps"])

    def decode_order(self, lengths: Sequence[int]) -> list[int]:
        return sorted(range(len(lengths)), key=lambda i: int(lengths[i]))

    def write_preview(
        self, folder: Path, files: Sequence[Path], labels: Sequence[int] | None
    ) -> Path | None:
        """`strip.png`: one row per sample (the first 16), `STRIP_FRAMES` frames evenly spaced
        across it."""
        if not files:
            return None
        rows = [frame_strip(read_video(path)[0]) for path in list(files)[:16]]
        width = max(row.shape[2] for row in rows)
        rows = [torch.nn.functional.pad(row, (0, width - row.shape[2])) for row in rows]
        path = Path(folder) / "strip.png"
        write_image(path, torch.cat(rows, dim=1))
        return path

    def evaluate(
        self, codec: Codec, folder: str | os.PathLike, out: Path, options: EvalOptions
    ) -> dict[str, Any]:
        """Each video, at its own frames and rate, center-cropped to the codec's size, encoded
        and decoded in chunks of `chunk_frames`, and compared with itself: per-frame PSNR and
        SSIM and the temporal-consistency error (means over videos), frame FID over every frame
        (the standard FID Inception network), FVD (I3D weights from `i3d_weights`; the usual
        protocol: the first 16 frames of each video, at least two videos), codebook usage and
        perplexity. `reconstructions.png` shows the first `grid_pairs` videos as strips of
        frames, originals above reconstructions.

        A video that cannot be read is listed under `skipped`; a metric undefined for a video
        (the temporal score of a 1-frame video, FVD of one shorter than 16 frames) is left out
        of its mean and listed under `undefined`, or stops the evaluation (`on_error="stop"`).

        Raises:
            ValueError: DNSMOS asked for; frame FID of fewer than two frames; no video read.
            FileNotFoundError: frame FID without the Inception weights, or I3D weights that are
                not there.
        """
        if options.dnsmos:
            raise ValueError(
                f"expected an audio codec for DNSMOS (it scores speech), got modality "
                f"{codec.modality!r}"
            )
        geometry = self.geometry(codec.token_spec)
        size, step = geometry["image_size"], geometry["temporal_compression"]
        chunk = step * max(1, options.chunk_frames // step)
        device = next(codec.parameters()).device
        root = Path(folder)
        paths = self.list_files(root)[: options.limit]
        inception = None
        if options.fid:
            try:
                inception = InceptionFeatures(device)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"{error}; or score without frame FID: fid=False (--no-fid)"
                ) from error
        i3d = None if options.i3d_weights is None else I3D.from_weights(options.i3d_weights, device)
        usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
        scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "temporal_consistency": []}
        undefined: dict[str, dict[str, str]] = {}
        skipped: list[dict[str, str]] = []
        real_frames, fake_frames, real_clips, fake_clips, strips = [], [], [], [], []
        examples: list[dict[str, str]] = []
        for path in progress(paths, desc="eval", unit="video"):
            key = path.relative_to(root).as_posix()
            try:
                video, rate = self._read(path, size, "center", None)
            except VideoReadError as error:
                file_problem(path, error.problem, "skipped (listed in `skipped`)", options, logger)
                skipped.append({"key": key, "error": error.problem})
                continue
            clip = video[None].to(device)  # (1, 3, T, S, S)
            tokens = codec.encode_long(clip, chunk)
            reconstruction = codec.decode_long(tokens.codes, chunk // step)
            reconstruction = reconstruction[:, :, : clip.shape[2]].float().clamp(-1, 1)
            usage.update_tokens(tokens.codes, tokens.spec)
            scores["psnr"].append(float(frame_psnr(reconstruction, clip).clamp(max=100)))
            scores["ssim"].append(float(frame_ssim(reconstruction, clip)))
            if clip.shape[2] < 2:
                reason = "a 1-frame video has no frame differences"
                self._undefined(undefined, "temporal_consistency", path, key, reason, options)
            else:
                scores["temporal_consistency"].append(
                    float(temporal_consistency(reconstruction, clip))
                )
            if inception is not None:
                real_frames.append(frame_features(inception, clip))
                fake_frames.append(frame_features(inception, reconstruction))
            if i3d is not None and clip.shape[2] < FVD_FRAMES:
                reason = f"fewer than the {FVD_FRAMES} frames of the FVD protocol"
                self._undefined(undefined, "fvd", path, key, reason, options)
            elif i3d is not None:
                real_clips.append(fvd_features(i3d, clip[:, :, :FVD_FRAMES]))
                fake_clips.append(fvd_features(i3d, reconstruction[:, :, :FVD_FRAMES]))
            if len(strips) < options.grid_pairs:
                strips.append((frame_strip(clip[0].cpu()), frame_strip(reconstruction[0].cpu())))
            if len(examples) < options.examples:  # the crop and its reconstruction, to play
                stem = path.relative_to(root).with_suffix("").as_posix().replace("/", "_")
                example = {"key": key}
                for side, media in (("original", clip), ("reconstruction", reconstruction)):
                    name = f"{stem}.mp4" if side == "original" else f"{stem}-{side}.mp4"
                    write_video(out / "examples" / name, media[0].cpu(), rate)
                    example[side] = f"examples/{name}"
                examples.append(example)
        read = len(scores["psnr"])
        if not read:
            raise ValueError(
                f"expected readable videos in {root}, got none of {len(paths)} "
                f"({len(skipped)} skipped)"
            )
        frame_fid = None
        if inception is not None:
            real, fake = torch.cat(real_frames), torch.cat(fake_frames)
            if len(real) < 2:
                raise ValueError(
                    f"expected at least 2 frames for frame FID, got {len(real)} from {folder}; "
                    "pass fid=False (--no-fid) to score without it"
                )
            frame_fid = fid_from_features(real, fake)
        video_fvd, fvd_note = (
            None,
            "not computed: no I3D weights given (i3d_weights, --i3d-weights)",
        )
        if i3d is not None and len(real_clips) >= 2:
            video_fvd, fvd_note = fvd(torch.cat(real_clips), torch.cat(fake_clips)), None
        elif i3d is not None:
            fvd_note = f"not computed: {len(real_clips)} videos of {FVD_FRAMES} frames or more"
        codebook = usage.compute()
        out.mkdir(parents=True, exist_ok=True)
        originals, reconstructions = zip(*strips, strict=True)
        write_image(out / "reconstructions.png", _stack_strips(originals, reconstructions))
        write_codebook_counts(out, usage)
        return {
            "videos": str(folder),
            "num_videos": read,
            "image_size": size,
            **{name: _mean(values) for name, values in scores.items()},
            "frame_fid": frame_fid,
            "fvd": video_fvd,
            "fvd_note": fvd_note,
            "scored": {name: len(values) for name, values in scores.items()}
            | {"fvd": len(real_clips)},
            "undefined": undefined,
            "skipped": skipped,
            "codebook_usage": codebook["usage"],
            "codebook_perplexity": codebook["perplexity"],
            "examples": examples,
        }

    def report_media(self, out: Path, report: dict[str, Any]) -> list[ReportRow]:
        """`reconstructions.png` (frame strips, originals above reconstructions), then each
        example's crop and reconstruction as players (MP4s beside the report)."""
        size = report["image_size"]
        note = f"{STRIP_FRAMES} frames evenly spaced; each original above its reconstruction"
        strips = ReportMedia("image", out / "reconstructions.png", f"{size}×{size} crops")
        rows = [ReportRow("Frame strips", (strips,), note)]
        width = size * max(1, min(8, 256 // size))  # small clips enlarged
        for example in report.get("examples", []):
            items = tuple(
                ReportMedia("video", out / example[side], side, width=width)
                for side in ("original", "reconstruction")
            )
            rows.append(ReportRow(example["key"], items))
        return rows

    @staticmethod
    def _undefined(
        undefined: dict[str, dict[str, str]],
        metric: str,
        path: Path,
        key: str,
        reason: str,
        options: EvalOptions,
    ) -> None:
        file_problem(path, f"{metric} undefined: {reason}", "left out of its mean", options, logger)
        undefined.setdefault(metric, {})[key] = reason


def frame_strip(video: torch.Tensor, frames: int = STRIP_FRAMES) -> torch.Tensor:
    """`frames` frames of `video (3, T, H, W)` evenly spaced (all of them when it has fewer),
    side by side: `(3, H, frames·W)`, in the video's dtype."""
    count = video.shape[1]
    picks = sorted({round(i * (count - 1) / max(frames - 1, 1)) for i in range(min(frames, count))})
    return torch.cat([video[:, t] for t in picks], dim=2)  # (3, H, n·W)


def _stack_strips(
    originals: Sequence[torch.Tensor], reconstructions: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Strips `(3, S, n·S)` in [-1, 1] stacked in one column, each original above its
    reconstruction; narrower strips (shorter videos) padded with black on the right."""
    rows = [row for pair in zip(originals, reconstructions, strict=True) for row in pair]
    width = max(row.shape[2] for row in rows)
    rows = [torch.nn.functional.pad(row, (0, width - row.shape[2]), value=-1.0) for row in rows]
    return torch.cat(rows, dim=1)  # (3, 2·n·S, width)


def _encoded(
    paths: list[Path],
    codes: torch.Tensor,
    lengths: torch.Tensor | None,
    frames: list[int],
    rates: list[float],
) -> Encoded:
    return Encoded(
        paths,
        codes.cpu(),
        None if lengths is None else lengths.cpu(),
        torch.tensor(frames),
        torch.tensor(rates, dtype=torch.float64),
    )


def _trim(video: torch.Tensor, frames: int | None) -> torch.Tensor:
    """`(3, T, H, W)` cut, or padded by repeating its last frame, to `frames` (None: as is)."""
    if frames is None:
        return video
    video = video[:, :frames]
    if video.shape[1] < frames:
        pad = video[:, -1:].expand(-1, frames - video.shape[1], -1, -1)
        video = torch.cat([video, pad], dim=1)
    return video


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _frame_count(path: Path) -> int:
    """A file's frame count from its container (0 when unreadable: the read reports why)."""
    try:
        return video_info(path).frames
    except (VideoReadError, OSError):
        return 0


VIDEO = VideoModality()
