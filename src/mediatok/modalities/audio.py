"""Audio in the modality table: WAV, FLAC, OGG, MP3 ... at any rate and channel count in, WAV or
FLAC out at the source's duration; mel, multi-resolution STFT, SI-SDR, PESQ, STOI (and DNSMOS)
scores and codebook usage.

A codec's spec records `sample_rate` and `hop_length` (audio samples per token). Files are read
as mono at that rate. Short files are encoded in padded batches of similar length, each as if
alone (`lengths`); a file longer than `chunk_seconds` is encoded alone, in chunks, with the
codes of one pass. Each file's sample count is stored beside its codes, so decoding writes it
back at its source's duration. Files are read on a few threads while the model runs.

Layer 5.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from mediatok.codecs import Codec
from mediatok.data import AudioReadError, list_audio, read_audio, write_audio, write_image
from mediatok.eval import CodebookUsage
from mediatok.eval.audio import check_speech_packages, score_items
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
from mediatok.report import ReportMedia, ReportRow, spectrograms, write_codebook_counts
from mediatok.tokens import TokenSpec

__all__ = ["AUDIO", "READ_THREADS", "AudioModality"]

READ_THREADS = 4  # audio files are read on this many threads while the model runs

logger = logging.getLogger(__name__)


class AudioModality(Modality):
    name = "audio"
    noun = "files"
    formats = ("wav", "flac")
    geometry_keys = ("sample_rate", "hop_length")

    def list_files(self, root: str | os.PathLike) -> list[Path]:
        return list_audio(root)

    def encode_files(
        self, codec: Codec, paths: Sequence[Path], device: torch.device, options: EncodeOptions
    ) -> Iterator[EncodedBatch]:
        """Batches of `options.batch_size` files in order of length (similar lengths share a
        batch: less padding); `READ_THREADS` batches are read ahead of the model, no more (the
        whole folder would not fit in memory)."""
        rate = self.geometry(codec.token_spec)["sample_rate"]
        paths = sorted(paths, key=_audio_frames)
        chunk_samples = round(options.chunk_seconds * rate)
        size = options.batch_size
        batches = [paths[i : i + size] for i in range(0, len(paths), size)]

        def read(path: Path) -> torch.Tensor | AudioReadError:
            try:
                return read_audio(path, rate, mono=True)[0]  # (1, S)
            except AudioReadError as error:
                return error

        pool = ThreadPoolExecutor(max_workers=READ_THREADS)
        reads: deque = deque()
        try:
            for number, batch in enumerate(batches):
                while len(reads) <= READ_THREADS and number + len(reads) < len(batches):
                    ahead = batches[number + len(reads)]
                    reads.append(pool.submit(lambda files: [read(path) for path in files], ahead))
                clips = reads.popleft().result()
                out = EncodedBatch(size=len(batch))
                short: list[tuple[Path, torch.Tensor]] = []
                for path, clip in zip(batch, clips, strict=True):
                    if isinstance(clip, AudioReadError):
                        out.failures.append((path, clip.problem))
                    elif clip.shape[-1] > chunk_samples:
                        tokens = codec.encode_long(clip[None].to(device), options.chunk_seconds)
                        length = torch.tensor([clip.shape[-1]])
                        out.encoded.append(Encoded([path], tokens.codes.cpu(), None, length))
                    else:
                        short.append((path, clip))
                if short:
                    lengths = torch.tensor([clip.shape[-1] for _, clip in short])
                    audio = torch.zeros(len(short), 1, int(lengths.max()))  # (B, 1, S), padded
                    for row, (_, clip) in enumerate(short):
                        audio[row, :, : clip.shape[-1]] = clip
                    tokens = codec.encode(audio.to(device), lengths=lengths.to(device))
                    out.encoded.append(
                        Encoded(
                            [path for path, _ in short],
                            tokens.codes.cpu(),
                            tokens.lengths.cpu(),
                            lengths,
                        )
                    )
                yield out
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a stop waits for no more reading

    def decode(
        self,
        codec: Codec,
        codes: Sequence[torch.Tensor],
        media_lengths: Sequence[int | None],
        device: torch.device,
        options: DecodeOptions,
    ) -> list[torch.Tensor]:
        """Samples of more than `chunk_tokens` tokens alone, in chunks; the others as one padded
        batch, each as if alone. Each comes out at its source's duration when it is known (the
        hop padding trimmed, or a hair padded), else at tokens × hop samples."""
        hop = self.geometry(codec.token_spec)["hop_length"]
        media: list[torch.Tensor | None] = [None] * len(codes)
        short = [i for i, sample in enumerate(codes) if len(sample) <= options.chunk_tokens]
        for i in sorted(set(range(len(codes))) - set(short)):
            audio = codec.decode_long(codes[i][None].to(device), options.chunk_tokens)[0]
            media[i] = _fit(audio.float().cpu(), media_lengths[i])
        if short:
            lengths = torch.tensor([len(codes[i]) for i in short])
            batch = torch.zeros(len(short), int(lengths.max()), dtype=torch.int64)  # (B, T)
            for row, i in enumerate(short):
                batch[row, : lengths[row]] = codes[i]
            audio = codec.decode(batch.to(device), lengths=lengths.to(device)).float().cpu()
            for row, i in enumerate(short):
                clip = audio[row, :, : lengths[row] * hop]  # (1, T · hop)
                media[i] = _fit(clip, media_lengths[i])
        return [clip.clamp(-1, 1) for clip in media]

    def write(
        self, path: Path, media: torch.Tensor, spec: TokenSpec, rate: float | None = None
    ) -> None:
        write_audio(path, media, self.geometry(spec)["sample_rate"])

    def decode_order(self, lengths: Sequence[int]) -> list[int]:
        return sorted(range(len(lengths)), key=lambda i: int(lengths[i]))

    def evaluate(
        self, codec: Codec, folder: str | os.PathLike, out: Path, options: EvalOptions
    ) -> dict[str, Any]:
        """Each file, read as mono at the codec's rate, encoded (in chunks when longer than
        `chunk_seconds`), decoded and compared with itself: mel distance, multi-resolution STFT
        distance and SI-SDR, wide-band PESQ and STOI (speech; resampled to 16 kHz by the
        metrics), DNSMOS when asked for (each the mean over files), codebook usage and
        perplexity over every token. The first `examples` files are written to
        `examples/<name>.wav` and `examples/<name>-reconstruction.wav`.

        A metric undefined for a file (`mediatok.eval.audio`: a silent original, a file too
        short for the STFT or for PESQ, too little speech for STOI) is left out of that
        metric's mean and listed under `undefined` (metric -> {key: why}); `scored` counts the
        files in each mean (a mean over none is null). A file that cannot be read is listed
        under `skipped`. With `on_error="stop"`, either stops the evaluation.

        Raises:
            ImportError: PESQ's or STOI's package is missing (before any work), naming the
                install command and `speech_metrics=False`.
            ValueError: no file could be read, or a file the metrics cannot score (NaN).
            StopEvaluation: see above.
        """
        if options.speech_metrics:
            try:
                check_speech_packages()
            except ImportError as error:
                raise ImportError(
                    f"{error}; or score without PESQ and STOI: speech_metrics=False "
                    "(--no-speech-metrics)"
                ) from error
        geometry = self.geometry(codec.token_spec)
        rate = geometry["sample_rate"]
        device = next(codec.parameters()).device
        root = Path(folder)
        paths = self.list_files(root)[: options.limit]
        usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
        scores: dict[str, list[float]] = {}  # metric -> its value for each file it is defined for
        undefined: dict[str, dict[str, str]] = {}
        skipped: list[dict[str, str]] = []
        examples: list[dict[str, str]] = []
        seconds, scored = 0.0, 0
        for path in progress(paths, desc="eval", unit="file"):
            key = path.relative_to(root).as_posix()
            try:
                audio = read_audio(path, rate)[0][None]  # (1, 1, S)
            except AudioReadError as error:
                outcome = "skipped (listed in the report's `skipped`)"
                file_problem(path, error.problem, outcome, options, logger)
                skipped.append({"key": key, "error": error.problem})
                continue
            tokens = codec.encode_long(audio.to(device), options.chunk_seconds)
            reconstruction = codec.decode_long(tokens.codes)[..., : audio.shape[-1]].float()
            reconstruction = reconstruction.clamp(-1, 1).cpu()
            usage.update_tokens(tokens.codes, tokens.spec)
            seconds += audio.shape[-1] / rate
            try:
                values, why = score_items(
                    reconstruction,
                    audio,
                    rate,
                    speech=options.speech_metrics,
                    dnsmos=options.dnsmos,
                )
            except ImportError:
                raise
            except Exception as error:  # NaN in a reconstruction, ...
                raise ValueError(
                    f"{path}: cannot score this file ({audio.shape[-1]} samples at {rate} Hz): "
                    f"{type(error).__name__}: {error}"
                ) from error
            metrics_by_reason: dict[str, list[str]] = {}
            for name, items in why.items():
                metrics_by_reason.setdefault(items[0], []).append(name)
            if metrics_by_reason:
                problem = "; ".join(
                    f"{', '.join(names)} undefined: {reason}"
                    for reason, names in metrics_by_reason.items()
                )
                outcome = "left out of those means (listed in the report's `undefined`)"
                file_problem(path, problem, outcome, options, logger)
            for name, value in values.items():
                if name in why:
                    undefined.setdefault(name, {})[key] = why[name][0]
                    scores.setdefault(name, [])
                else:
                    scores.setdefault(name, []).append(float(value[0]))
            if scored < options.examples:
                stem = path.relative_to(root).with_suffix("").as_posix().replace("/", "_")
                write_audio(out / "examples" / f"{stem}.wav", audio[0], rate)
                write_audio(
                    out / "examples" / f"{stem}-reconstruction.wav", reconstruction[0], rate
                )
                examples.append(
                    {
                        "key": key,
                        "original": f"examples/{stem}.wav",
                        "reconstruction": f"examples/{stem}-reconstruction.wav",
                    }
                )
            scored += 1
        if not scored:
            raise ValueError(
                f"expected readable audio files in {root}, got none of {len(paths)} "
                f"({len(skipped)} skipped)"
            )
        codebook = usage.compute()
        write_codebook_counts(out, usage)
        return {
            "audio": str(folder),
            "num_files": scored,
            "seconds": round(seconds, 3),
            "sample_rate": rate,
            "tokens_per_second": rate / geometry["hop_length"],
            **{
                name: sum(values) / len(values) if values else None
                for name, values in scores.items()
            },
            "scored": {name: len(values) for name, values in scores.items()},
            "undefined": undefined,
            "skipped": skipped,
            "codebook_usage": codebook["usage"],
            "codebook_perplexity": codebook["perplexity"],
            "examples": examples,
        }

    def report_media(self, out: Path, report: dict[str, Any]) -> list[ReportRow]:
        """Per example: the original and its reconstruction, each a player under its log-mel
        spectrogram (one colour scale for both; written beside the WAVs as PNGs)."""
        rate = report["sample_rate"]
        rows = []
        for example in report.get("examples", []):
            files = [out / example["original"], out / example["reconstruction"]]
            clips = [read_audio(file, rate)[0] for file in files]  # (1, S) each
            items = []
            sides = ("original", "reconstruction")
            for file, image, side in zip(files, spectrograms(clips, rate), sides, strict=True):
                picture = file.with_suffix(".png")
                write_image(picture, image)
                items.append(ReportMedia("audio", file, side, picture=picture))
            rows.append(ReportRow(example["key"], tuple(items)))
        return rows


def _fit(audio: torch.Tensor, length: int | None) -> torch.Tensor:
    """`(1, S)` trimmed, or zero-padded, to `length` samples (None: as it is)."""
    if length is None:
        return audio
    audio = audio[..., :length]
    if audio.shape[-1] < length:
        audio = torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))
    return audio


def _audio_frames(path: Path) -> int:
    """A file's frame count from its header (0 when unreadable: the read reports why)."""
    import soundfile

    try:
        return soundfile.info(str(path)).frames
    except Exception:
        return 0


AUDIO = AudioModality()
