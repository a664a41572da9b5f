"""Audio files to tensors and back: listing, reading, resampling, loudness, a training dataset.

Every waveform in mediatok is a float32 tensor `(C, T)`, channels first, samples nominally in
[-1, 1] (full scale). Files are read and written with soundfile (libsndfile); torchaudio is used
only for resampling (torchaudio 2.9 and later cannot read or write files).

`read_audio` returns what the file holds, converted to float32 by libsndfile (integer PCM scaled
to [-1, 1)); float files are returned as they are, including samples beyond full scale (clipping
them would hide a problem of the data, and `write_audio` clips anyway). Mono is the average of
the channels, not a sum (no level change for identical channels, never clips). Resampling uses
`torchaudio.functional.resample` with its defaults: windowed-sinc interpolation with a Hann
window, 6 zero crossings per side and a cutoff at 0.99 of the lower Nyquist frequency; the output
is cut to `round(T * new_rate / old_rate)` samples, and never to none. torchaudio's kernel holds
one filter per output phase, `new_rate / gcd` of them, each `old_rate / gcd` taps wide (4 GB from
22051 Hz to 24 kHz); where that is large, the same filter is evaluated at each output sample's
own position instead (exact rate, memory bounded by a block of samples).

A file that cannot be decoded raises `AudioReadError`, never silence: unreadable, not audio,
damaged, truncated (a WAV whose data chunk is shorter than its header says, an OGG whose last
page is cut short, or any file that yields fewer frames than it declares), empty (0 bytes, or 0
samples), holding NaN or inf, or failing to resample. MP3 is listed and read only where the
installed libsndfile supports it (1.1 and later); its frame count is an estimate, so the
declared-length check is skipped for it. A file whose header gives no length (a FLAC that ffmpeg
wrote to a pipe) is read to its end, with no such check either. A WAV whose data chunk size is 0,
the placeholder of a streaming writer that never went back to fill it in, is read to the end of
the file, unless another chunk follows (then the data chunk is empty).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile
import torch
import torch.nn.functional as F

from mediatok.data.folder import MediaFolder, MediaReadError, list_files

__all__ = [
    "AUDIO_CROPS",
    "AUDIO_EXTENSIONS",
    "AudioFolder",
    "AudioReadError",
    "list_audio",
    "loudness_normalize",
    "read_audio",
    "write_audio",
]

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg") + (
    (".mp3",) if "MP3" in soundfile.available_formats() else ()
)
AUDIO_CROPS = ("random", "start")
_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
_WRITE_SUBTYPE = "PCM_16"
_SILENCE_RMS = 1e-6
_PEAK_LIMIT = 0.99
# libsndfile's WAV parser logs "data : <declared> (should be <present>)" when the file ends
# before its data chunk does; it then quietly reads what is there.
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers leave these placeholders in the data chunk size; not a truncation.
_WAV_SIZE_PLACEHOLDERS = frozenset({0, 0xFFFFFFFF})
_WAV_ZERO_DATA = re.compile(r"^data\s*:\s*0\s*$", re.MULTILINE)
_CHUNK_ID = re.compile(rb"[ -~]{4}")  # a RIFF chunk's name: four printable ASCII characters
# libsndfile's SF_COUNT_MAX: "Frames : 0 (bumping to SF_COUNT_MAX)", a header with no length.
_UNKNOWN_FRAMES = 2**63 - 1
_SFE_BAD_SEEK = 39  # libsndfile's "Internal psf_fseek() failed."
_BLOCK_FRAMES = 2**16
_OGG_MAX_PAGE = 27 + 255 + 255 * 255  # header, segment table, data (RFC 3533, section 6)
# Resampling: torchaudio's defaults, and the size of its kernel (phases x taps) beyond which the
# filter is evaluated sample by sample (`_resample_directly`), in blocks of output samples.
_RESAMPLE_ZERO_CROSSINGS = 6
_RESAMPLE_ROLLOFF = 0.99
_RESAMPLE_KERNEL_LIMIT = 2**20
_RESAMPLE_BLOCK = 2**14
logger = logging.getLogger("mediatok.data")


class AudioReadError(MediaReadError):
    """An audio file cannot be read or decoded; the message starts with its path.

    Args:
        path: the file at fault.
        problem: what went wrong, e.g. `"empty audio (0 samples)"`.
    """


# --------------------------------------------------------------------------------------------
# listing


def list_audio(
    root: str | os.PathLike[str], extensions: Iterable[str] = AUDIO_EXTENSIONS
) -> list[Path]:
    """Every audio file under `root`, recursively, in a deterministic order: `list_files`."""
    return list_files(root, extensions, "audio files")


# --------------------------------------------------------------------------------------------
# reading


def read_audio(
    path: str | os.PathLike[str], sample_rate: int | None = None, mono: bool = True
) -> tuple[torch.Tensor, int]:
    """Decode an audio file to float32, channels first (see the module docstring).

    Args:
        path: any format libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3 where supported, ...).
        sample_rate: resample to this rate (Hz) when the file's differs; None keeps the file's.
        mono: average the channels into one.

    Returns:
        `audio` `(C, T)` float32 (C = 1 with `mono`), and its sample rate.

    Raises:
        AudioReadError: the file is missing or unreadable, not audio, damaged, truncated, empty,
            holds non-finite samples or fails to resample; the message names the path and the
            problem.
        ValueError: `sample_rate` is not a positive int.
    """
    _check_sample_rate(sample_rate, "sample_rate", allow_none=True)
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as error:
        raise AudioReadError(path, f"cannot read the file ({error.strerror or error})") from error
    if not head:
        raise AudioReadError(path, "empty file (0 bytes), not audio")
    try:
        sound = soundfile.SoundFile(path)
    except Exception as error:
        raise AudioReadError(path, _describe_open_failure(path, head, error)) from error
    if sound.format in ("WAV", "WAVEX") and _WAV_ZERO_DATA.search(sound.extra_info):
        patched = _fill_wav_data_size(path)
        if patched is not None:
            sound.close()
            try:
                sound = soundfile.SoundFile(patched)
            except Exception as error:
                raise AudioReadError(
                    path,
                    "damaged WAV data: its data chunk size is 0, and the bytes after it cannot "
                    f"be read as samples ({error})",
                ) from error
    with sound:
        what = f"{sound.format} data ({sound.channels} channels, {sound.samplerate} Hz)"
        try:
            if sound.frames == _UNKNOWN_FRAMES:
                samples = _read_to_end(sound)  # (T, C)
            else:
                samples = sound.read(dtype="float32", always_2d=True)  # (T, C)
        except Exception as error:
            raise AudioReadError(
                path, f"cannot decode the {what}: {type(error).__name__}: {error}"
            ) from error
        truncation = _describe_truncation(path, sound, samples.shape[0])
        native_rate = sound.samplerate
    if truncation:
        raise AudioReadError(path, f"truncated {what}: {truncation}")
    if samples.shape[0] == 0:
        raise AudioReadError(path, "empty audio (0 samples)")
    audio = torch.from_numpy(samples.T.copy())  # (C, T)
    if not torch.isfinite(audio).all():
        raise AudioReadError(path, f"the {what} holds NaN or infinite samples")
    if mono:
        audio = audio.mean(dim=0, keepdim=True)  # (1, T)
    if sample_rate is not None and sample_rate != native_rate:
        try:
            audio = resample(audio, native_rate, sample_rate)
        except Exception as error:
            raise AudioReadError(
                path,
                f"cannot resample the {what} to {sample_rate} Hz: {type(error).__name__}: {error}",
            ) from error
        native_rate = sample_rate
    return audio, native_rate


def _describe_open_failure(path: Path, head: bytes, error: Exception) -> str:
    """Why libsndfile cannot open a file that starts with `head`."""
    container = {b"OggS": "OGG", b"fLaC": "FLAC"}.get(head[:4])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        container = "WAV"
    if container is None:
        # libsndfile's "Format not recognised" says less than the first bytes (an HTML error
        # page, a text file under an audio name).
        return f"not audio, or a format libsndfile cannot read (file starts with {head!r})"
    reason = getattr(error, "error_string", None) or str(error)
    if container == "OGG" and not _ogg_ends_cleanly(path):
        return f"truncated OGG data: its last page is cut short (libsndfile: {reason})"
    return f"damaged or truncated {container} data (libsndfile: {reason})"


def _ogg_ends_cleanly(path: Path) -> bool:
    """Whether the file's last Ogg page is whole and ends its stream (RFC 3533, section 6).

    Only chooses the words of an error: the capture pattern `OggS` may also occur inside a
    page's data, which makes this answer False for a file that may be whole.
    """
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - _OGG_MAX_PAGE))
        tail = file.read()
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) < start + 27:
        return False
    segments = tail[start + 26]
    table = tail[start + 27 : start + 27 + segments]
    end_of_stream = tail[start + 5] & 0x04
    return bool(end_of_stream) and len(tail) == start + 27 + segments + sum(table)


def _fill_wav_data_size(path: Path) -> io.BytesIO | None:
    """The WAV at `path` with its data chunk size 0 replaced by 0xFFFFFFFF, libsndfile's cue to
    read the samples up to the end of the file; None when nothing follows the chunk's header
    but another chunk (the data chunk is empty)."""
    data = path.read_bytes()
    if data[:4] != b"RIFF":
        return None
    position = 12
    while position + 8 <= len(data):
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        if data[position : position + 4] == b"data":
            rest = data[position + 8 :]
            after = int.from_bytes(rest[4:8], "little")
            if size != 0 or not rest or (_CHUNK_ID.fullmatch(rest[:4]) and 8 + after <= len(rest)):
                return None
            logger.debug("%s: the WAV data chunk size is 0; reading to the end of the file", path)
            return io.BytesIO(data[: position + 4] + b"\xff\xff\xff\xff" + rest)
        position += 8 + size + size % 2
    return None


def _read_to_end(sound: soundfile.SoundFile) -> np.ndarray:
    """Every frame of a file whose header gives no length, `(T, C)` float32, block by block.

    soundfile seeks to the end of each block it reads, and libsndfile cannot seek to the end of
    a FLAC whose length it does not know ("Internal psf_fseek() failed."): the last read raises
    after libsndfile has filled the block. The NaN it was filled with marks what it did not
    write (decoded samples of an unknown-length file, FLAC, are integers, always finite).
    """
    blocks = []
    while True:
        block = np.full((_BLOCK_FRAMES, sound.channels), np.nan, np.float32)  # (B, C)
        try:
            count = len(sound.read(out=block))
        except soundfile.LibsndfileError as error:
            if error.code != _SFE_BAD_SEEK:
                raise
            written = ~np.isnan(block[:, 0])
            count = len(block) if written.all() else int(written.argmin())
            blocks.append(block[:count])
            break
        blocks.append(block[:count])
        if count < len(block):
            break
    return np.concatenate(blocks)


def _describe_truncation(path: Path, sound: soundfile.SoundFile, frames_read: int) -> str | None:
    """Why the file looks truncated, or None."""
    if sound.format in ("WAV", "WAVEX"):
        match = _WAV_SHORT_DATA.search(sound.extra_info)
        if match:
            declared, present = int(match[1]), int(match[2])
            if declared not in _WAV_SIZE_PLACEHOLDERS and present < declared:
                return f"the data chunk holds {present} of its {declared} declared bytes"
    if sound.format == "OGG" and frames_read == 0 and not _ogg_ends_cleanly(path):
        return "its last page is cut short (libsndfile finds no samples)"
    if sound.format != "MP3" and frames_read < sound.frames < _UNKNOWN_FRAMES:
        return f"read {frames_read} of {sound.frames} declared frames"
    return None


def resample(audio: torch.Tensor, old_rate: int, new_rate: int) -> torch.Tensor:
    """Resample `(..., T)` with torchaudio's windowed sinc (defaults: Hann, width 6, rolloff 0.99).

    Where torchaudio's kernel would be large (more than 2**20 phases x taps: rates whose
    ratio reduces to large terms, 22051 Hz to 24 kHz), the same filter is evaluated at each
    output sample's position by `_resample_directly`.

    Returns:
        `(..., round(T * new_rate / old_rate))` (at least 1 when T >= 1), same dtype and device.
    """
    import torchaudio.functional

    length = round(audio.shape[-1] * new_rate / old_rate)
    if audio.shape[-1]:
        length = max(length, 1)  # a click of half a sample at the new rate is not silence
    divisor = math.gcd(old_rate, new_rate)
    phases, taps = new_rate // divisor, old_rate // divisor
    if phases * taps > _RESAMPLE_KERNEL_LIMIT:
        logger.debug(
            "resampling %d Hz to %d Hz sample by sample: torchaudio's kernel would hold %d "
            "phases of %d taps",
            old_rate,
            new_rate,
            phases,
            taps,
        )
        return _resample_directly(audio, old_rate, new_rate, length)
    resampled = torchaudio.functional.resample(audio, old_rate, new_rate)
    # torchaudio returns ceil(T * new / old) samples; round() matches the duration best.
    assert resampled.shape[-1] >= length, (resampled.shape, length)
    return resampled[..., :length].contiguous()


def _resample_directly(
    audio: torch.Tensor, old_rate: int, new_rate: int, length: int
) -> torch.Tensor:
    """torchaudio's resampling filter, evaluated at each output sample's own position.

    Output sample n lies at input position p = n * old_rate / new_rate and is
    `sum_m x[m] * c * sinc(t) * cos(pi * t / 12) ** 2`, t = (m - p) * c clamped to [-6, 6], with
    c = 0.99 * min(1, new_rate / old_rate) the cutoff as a fraction of the input's Nyquist
    frequency: the formula of `torchaudio.functional.resample`, whose kernel tabulates it for
    the new_rate / gcd phases that p takes. Here p is exact (integer arithmetic) and memory is
    one block of output samples times 2 * ceil(6 / c) + 1 taps.

    Args:
        audio: `(..., T)` float.
        length: output samples to compute.

    Returns:
        `(..., length)`, same dtype and device.
    """
    cutoff = _RESAMPLE_ROLLOFF * min(1.0, new_rate / old_rate)
    width = math.ceil(_RESAMPLE_ZERO_CROSSINGS / cutoff)
    flat = audio.reshape(math.prod(audio.shape[:-1]), audio.shape[-1])  # (N, T)
    padded = F.pad(flat, (width, width))  # (N, T + 2·width), zeros beyond both ends
    offsets = torch.arange(-width, width + 1, device=audio.device)  # (K,)
    dtype = torch.promote_types(audio.dtype, torch.float32)  # of the kernel, as torchaudio's
    blocks = [flat[:, :0]]  # (N, 0): T = 0 gives no samples
    for start in range(0, length, _RESAMPLE_BLOCK):
        n = torch.arange(start, min(start + _RESAMPLE_BLOCK, length), device=audio.device)
        first = n * old_rate // new_rate  # (L,) the input sample at or before p
        fraction = (n * old_rate % new_rate).double() / new_rate  # (L,) p - first
        t = ((offsets.double() - fraction[:, None]) * cutoff).to(dtype)  # (L, K) zero crossings
        t = t.clamp(-_RESAMPLE_ZERO_CROSSINGS, _RESAMPLE_ZERO_CROSSINGS)
        window = torch.cos(t * (math.pi / (2 * _RESAMPLE_ZERO_CROSSINGS))) ** 2
        kernel = (torch.special.sinc(t) * window * cutoff).to(audio.dtype)  # (L, K)
        neighbours = padded[:, first[:, None] + offsets + width]  # (N, L, K)
        blocks.append((neighbours * kernel).sum(dim=-1))  # (N, L)
    return torch.cat(blocks, dim=-1).reshape(*audio.shape[:-1], length)


def _check_sample_rate(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected {name} to be a positive int (Hz), got {value!r}")


# --------------------------------------------------------------------------------------------
# loudness


def loudness_normalize(audio: torch.Tensor, target_db: float = -20.0) -> torch.Tensor:
    """Scale audio to an RMS level of `target_db` dBFS, then peak-limit it to 0.99.

    The level is the plain RMS over all channels and samples, in dB relative to a full-scale
    value of 1 (a full-scale square wave is 0 dB, a full-scale sine about -3 dB). It is not LUFS
    (ITU-R BS.1770: no K-weighting, no gating), so quiet passages count fully. Audio with an RMS
    below 1e-6 (-120 dB) is returned unchanged: amplifying silence would amplify only noise.
    If the gain would push any sample's magnitude above 0.99, the whole clip is scaled down so
    the peak is 0.99 (a single gain, no compressor), so such clips end below the target.

    Args:
        audio: `(..., T)` float.
        target_db: target RMS in dBFS, finite and at most 0.

    Returns:
        `(..., T)`, same dtype and device.
    """
    if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
        kind = audio.dtype if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise TypeError(f"loudness_normalize expects a float tensor, got {kind}")
    if not isinstance(target_db, (int, float)) or not math.isfinite(target_db) or target_db > 0:
        raise ValueError(f"expected target_db to be a finite number <= 0 dBFS, got {target_db!r}")
    if audio.numel() == 0:
        return audio
    rms = audio.float().square().mean().sqrt()
    if rms < _SILENCE_RMS:
        return audio
    gain = 10.0 ** (target_db / 20.0) / rms
    peak = audio.float().abs().max() * gain
    if peak > _PEAK_LIMIT:
        gain = gain * (_PEAK_LIMIT / peak)
    return (audio.float() * gain).to(audio.dtype)


# --------------------------------------------------------------------------------------------
# writing


def write_audio(path: str | os.PathLike[str], audio: torch.Tensor, sample_rate: int) -> None:
    """Write audio to 16-bit PCM WAV or FLAC, atomically.

    Samples outside [-1, 1] are clipped to it (16-bit PCM cannot hold them); when any are, a
    warning on the `"mediatok.data"` logger says how many. The bytes go to a hidden temporary
    file beside `path` that is then renamed over it (not fsynced), as `write_image` does.

    Args:
        path: ends in `.wav` or `.flac` (any case); parent directories are created.
        audio: `(C, T)` or `(T,)` float in [-1, 1], on any device, T >= 1.
        sample_rate: in Hz, a positive int.

    Raises:
        ValueError: an unknown suffix, a wrong shape, an empty clip, non-finite samples or a bad
            sample rate.
        TypeError: not a float tensor.
    """
    path = Path(path)
    audio_format = _WRITE_FORMATS.get(path.suffix.lower())
    if audio_format is None:
        raise ValueError(f"expected a path ending in .wav or .flac, got {path}")
    _check_sample_rate(sample_rate, "sample_rate")
    if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
        kind = audio.dtype if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise TypeError(f"expected float audio in [-1, 1], got {kind}")
    if audio.ndim == 1:
        audio = audio[None]  # (1, T)
    if audio.ndim != 2 or audio.shape[-1] == 0:
        raise ValueError(
            f"expected audio of shape (C, T) or (T,) with T >= 1, got {tuple(audio.shape)}"
        )
    audio = audio.detach().cpu().float()
    if not torch.isfinite(audio).all():
        raise ValueError(f"cannot write {path}: the audio holds NaN or infinite samples")
    clipped = int((audio.abs() > 1.0).sum())
    if clipped:
        logger.warning(
            "%s: clipped %d of %d samples to [-1, 1] before writing", path, clipped, audio.numel()
        )
    samples = audio.clamp(-1.0, 1.0).T.contiguous().numpy()  # (T, C)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "xb") as file:
            soundfile.write(file, samples, sample_rate, subtype=_WRITE_SUBTYPE, format=audio_format)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# dataset


class AudioFolder(MediaFolder):
    """Every audio file under a directory, read as mono, resampled and cut for codec training.

    Items are `{"audio": (1, S) float32, "key": str, "index": int, "length": int}`: the key is
    the file's path relative to `root` (POSIX separators), the index that of the file returned,
    and `length` the number of real samples at the start of `audio`. With `segment_seconds`,
    S = round(segment_seconds * sample_rate): longer files give an S-sample window (random or
    from the start), shorter ones are right-padded with zeros. With `segment_seconds=None`, S is
    the whole file (then batches need a collate function that pads).

    `normalize_db` normalizes each whole file with `loudness_normalize` before cutting, so a quiet
    passage of a loud file stays quiet.

    Bad files, `skipped`, seeding and `set_epoch` behave exactly as in `ImageFolder`: with
    `on_error="stop"` an `AudioReadError` naming the file; with `"skip"` a warning, the file is
    appended to `skipped` and the next readable file in listing order is returned. Random
    windows draw from a generator seeded by `(seed, epoch, index)`.

    Args:
        root: directory searched recursively by `list_audio`.
        sample_rate: output rate in Hz; files at other rates are resampled.
        segment_seconds: window length in seconds, or None for whole files.
        crop: `"random"` (training) or `"start"`.
        on_error: `"skip"` or `"stop"`.
        normalize_db: target RMS in dBFS, or None to keep the files' levels.
        seed: non-negative base seed of the random windows.
        extensions: file suffixes to include.

    Attributes:
        paths: the files, sorted; `keys`: their relative paths; `skipped`: unreadable files met
            so far by this copy; `segment_samples`: S, or None.
    """

    noun = "audio file"

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int,
        segment_seconds: float | None = None,
        crop: Literal["random", "start"] = "random",
        on_error: Literal["skip", "stop"] = "skip",
        normalize_db: float | None = None,
        seed: int = 0,
        extensions: Iterable[str] = AUDIO_EXTENSIONS,
    ) -> None:
        _check_sample_rate(sample_rate, "sample_rate")
        if crop not in AUDIO_CROPS:
            raise ValueError(f"expected crop to be one of {AUDIO_CROPS}, got {crop!r}")
        self.segment_samples: int | None = None
        if segment_seconds is not None:
            # bool is an int subclass, and `True` seconds is surely a mistake.
            if isinstance(segment_seconds, bool) or not isinstance(segment_seconds, (int, float)):
                raise TypeError(
                    "expected segment_seconds to be None or a number of seconds, got "
                    f"{type(segment_seconds).__name__} {segment_seconds!r}"
                )
            finite = math.isfinite(segment_seconds)
            samples = round(segment_seconds * sample_rate) if finite else 0
            if samples < 1:
                raise ValueError(
                    "expected segment_seconds to be None or a duration of at least one sample, "
                    f"got {segment_seconds!r} at {sample_rate} Hz"
                )
            self.segment_samples = samples
        if normalize_db is not None:
            loudness_normalize(torch.zeros(1), normalize_db)  # validates the target
        super().__init__(root, list_audio(root, extensions), on_error, seed)
        self.sample_rate = sample_rate
        self.crop = crop
        self.normalize_db = normalize_db

    def _read(self, path: Path) -> torch.Tensor:
        return read_audio(path, self.sample_rate, mono=True)[0]

    def _item(self, audio: torch.Tensor, index: int, draw: int) -> dict[str, Any]:
        if self.normalize_db is not None:
            audio = loudness_normalize(audio, self.normalize_db)
        length = audio.shape[-1]
        segment = self.segment_samples
        if segment is not None:
            if length >= segment:
                start = 0
                if self.crop == "random":
                    generator = self.generator(index, draw)
                    start = int(torch.randint(length - segment + 1, (), generator=generator))
                audio = audio[:, start : start + segment]  # (1, S)
                length = segment
            else:
                audio = F.pad(audio, (0, segment - length))  # (1, S), zeros on the right
        return {
            "audio": audio.contiguous(),
            "key": self.keys[index],
            "index": index,
            "length": length,
        }
