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

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mediatok.codecs import Codec
from mediatok.data import AudioReadError, list_audio, read_audio, write_audio
from mediatok.eval import CodebookUsage
from mediatok.eval.audio import reconstruction_scores
from mediatok.modalities.base import (
    DecodeOptions,
    Encoded,
    EncodedBatch,
    EncodeOptions,
    EvalOptions,
    Modality,
)
from mediatok.tokens import TokenSpec

__all__ = ["AUDIO", "READ_THREADS", "AudioModality"]

READ_THREADS = 4  # audio files are read on this many threads while the model runs


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

    def write(self, path: Path, media: torch.Tensor, spec: TokenSpec) -> None:
        write_audio(path, media, self.geometry(spec)["sample_rate"])

    def decode_order(self, lengths: Sequence[int]) -> list[int]:
        return sorted(range(len(lengths)), key=lambda i: int(lengths[i]))

    def evaluate(
        self, codec: Codec, folder: str | os.PathLike, out: Path, options: EvalOptions
    ) -> dict[str, Any]:
        """Each file, read as mono at the codec's rate, encoded (in chunks when longer than
        `chunk_seconds`), decoded and compared with itself: mel distance, multi-resolution STFT
        distance and SI-SDR (means over files), wide-band PESQ and STOI (speech; resampled to 16
        kHz by the metrics), DNSMOS when asked for, codebook usage and perplexity over every
        token. The first `examples` files are written to `examples/<name>.wav` and
        `examples/<name>-reconstruction.wav`.
        """
        geometry = self.geometry(codec.token_spec)
        rate = geometry["sample_rate"]
        device = next(codec.parameters()).device
        root = Path(folder)
        paths = self.list_files(root)[: options.limit]
        usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
        scores: list[dict[str, float]] = []
        seconds = 0.0
        for index, path in enumerate(tqdm(paths, desc="eval", disable=None)):
            audio = read_audio(path, rate)[0].to(device)[None]  # (1, 1, S)
            tokens = codec.encode_long(audio, options.chunk_seconds)
            reconstruction = codec.decode_long(tokens.codes)[..., : audio.shape[-1]].float()
            reconstruction = reconstruction.clamp(-1, 1)
            usage.update(tokens.codes.reshape(1, -1, 1))
            seconds += audio.shape[-1] / rate
            reconstruction, audio = reconstruction.cpu(), audio.cpu()
            try:
                clip_scores = reconstruction_scores(
                    reconstruction,
                    audio,
                    rate,
                    speech=options.speech_metrics,
                    dnsmos=options.dnsmos,
                )
            except ImportError:
                raise
            except Exception as error:  # too short for an STFT or PESQ, silence PESQ refuses, ...
                raise ValueError(
                    f"{path}: cannot score this file ({audio.shape[-1]} samples at {rate} Hz): "
                    f"{type(error).__name__}: {error}"
                ) from error
            scores.append(clip_scores)
            if index < options.examples:
                stem = path.relative_to(root).with_suffix("").as_posix().replace("/", "_")
                write_audio(out / "examples" / f"{stem}.wav", audio[0], rate)
                write_audio(
                    out / "examples" / f"{stem}-reconstruction.wav", reconstruction[0], rate
                )
        codebook = usage.compute()
        return {
            "audio": str(folder),
            "num_files": len(paths),
            "seconds": round(seconds, 3),
            "sample_rate": rate,
            "tokens_per_second": rate / geometry["hop_length"],
            **{name: sum(clip[name] for clip in scores) / len(scores) for name in scores[0]},
            "codebook_usage": codebook["usage"],
            "codebook_perplexity": codebook["perplexity"],
        }


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
