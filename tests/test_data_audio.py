"""Audio I/O: reading and resampling, error reporting, writing, loudness, the AudioFolder dataset."""

from __future__ import annotations

import logging
import math
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import torch

from mediatok.data import (
    AUDIO_EXTENSIONS,
    AudioFolder,
    AudioReadError,
    Repeated,
    list_audio,
    loudness_normalize,
    read_audio,
    write_audio,
)
from mediatok.data.audio import _BLOCK_FRAMES


def sine(frequency: float, sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def peak_frequency(audio: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(audio.double()).abs()
    return float(spectrum.argmax()) * sample_rate / audio.shape[-1]


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_stereo_is_mixed_down_and_resampled_keeping_the_frequency(tmp_path, sample_rate):
    tone = sine(1000.0, sample_rate, 0.5)
    # The right channel is the tone plus an opposite-phase 3 kHz tone that the mixdown cancels.
    other = sine(3000.0, sample_rate, 0.5, amplitude=0.2)
    stereo = np.stack([tone + other, tone - other], axis=1)  # (T, 2)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, sample_rate, subtype="FLOAT")
    audio, rate = read_audio(path, sample_rate=24000)
    assert rate == 24000
    assert audio.dtype == torch.float32
    assert audio.shape == (1, round(len(tone) * 24000 / sample_rate))
    assert peak_frequency(audio[0], 24000) == pytest.approx(1000.0, abs=2.0)
    spectrum = torch.fft.rfft(audio[0].double()).abs()
    bin_3k = round(3000.0 * audio.shape[-1] / 24000)
    assert spectrum[bin_3k] < 1e-3 * spectrum.max()

    both, native = read_audio(path, mono=False)
    assert native == sample_rate and both.shape == (2, len(tone))
    torch.testing.assert_close(both.mean(0), torch.from_numpy(tone), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [
        (".wav", "PCM_16", 1 / 32768),
        (".wav", "FLOAT", 0.0),
        (".flac", "PCM_16", 1 / 32768),
        (".ogg", "VORBIS", None),
    ],
)
def test_round_trips(tmp_path, suffix, subtype, atol):
    tone = sine(440.0, 16000, 0.25)
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, tone, 16000, subtype=subtype)
    audio, rate = read_audio(path)
    assert rate == 16000 and audio.shape == (1, len(tone)) and audio.dtype == torch.float32
    if atol is None:  # lossy: the tone survives
        assert peak_frequency(audio[0], 16000) == pytest.approx(440.0, abs=5.0)
    else:
        torch.testing.assert_close(audio[0], torch.from_numpy(tone), atol=atol, rtol=0)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_audio_round_trip_and_atomic(tmp_path, suffix):
    stereo = torch.from_numpy(np.stack([sine(440.0, 8000, 0.2), sine(660.0, 8000, 0.2)]))
    path = tmp_path / "made" / "here" / f"out{suffix}"
    write_audio(path, stereo, 8000)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    info = soundfile.info(path)
    assert info.subtype == "PCM_16" and info.format == suffix[1:].upper()
    audio, rate = read_audio(path, mono=False)
    assert rate == 8000
    torch.testing.assert_close(audio, stereo, atol=1 / 32768 + 1e-7, rtol=0)
    write_audio(path, stereo[0], 8000)  # (T,) overwrites
    assert read_audio(path, mono=False)[0].shape == (1, stereo.shape[1])


def test_write_audio_rejects_bad_input(tmp_path):
    tone = torch.zeros(100)
    with pytest.raises(ValueError, match=r"\.wav or \.flac"):
        write_audio(tmp_path / "a.mp3", tone, 8000)
    with pytest.raises(ValueError, match="positive int"):
        write_audio(tmp_path / "a.wav", tone, 0)
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "a.wav", torch.tensor([0.0, float("nan")]), 8000)
    with pytest.raises(ValueError, match="shape"):
        write_audio(tmp_path / "a.wav", torch.zeros(1, 2, 3), 8000)
    with pytest.raises(TypeError, match="float"):
        write_audio(tmp_path / "a.wav", torch.zeros(10, dtype=torch.int16), 8000)
    assert not list(tmp_path.iterdir())


def test_clipped_input_is_read_as_is_and_write_clips_with_a_warning(tmp_path, caplog):
    loud = np.array([0.5, 1.5, -2.0, 0.25], dtype=np.float32)
    path = tmp_path / "loud.wav"
    soundfile.write(path, loud, 8000, subtype="FLOAT")
    audio, _ = read_audio(path)
    torch.testing.assert_close(audio[0], torch.from_numpy(loud))
    out = tmp_path / "clipped.wav"
    with caplog.at_level(logging.WARNING, logger="mediatok.data"):
        write_audio(out, audio, 8000)
    assert "clipped 2 of 4 samples" in caplog.text and str(out) in caplog.text
    written, _ = read_audio(out)
    assert written.abs().max() <= 1.0
    torch.testing.assert_close(written[0, 1:3], torch.tensor([32767 / 32768, -1.0]))


def test_unreadable_files_raise_naming_the_path(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(AudioReadError, match=r"empty audio \(0 samples\)") as caught:
        read_audio(empty)
    assert caught.value.path == empty and str(empty) in str(caught.value)

    no_bytes = tmp_path / "nothing.wav"
    no_bytes.write_bytes(b"")
    with pytest.raises(AudioReadError, match=r"0 bytes"):
        read_audio(no_bytes)

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n")
    with pytest.raises(AudioReadError, match="not audio") as caught:
        read_audio(text)
    assert str(text) in str(caught.value) and "this is not" in str(caught.value)

    whole = tmp_path / "whole.wav"
    soundfile.write(whole, sine(440.0, 8000, 0.5), 8000, subtype="PCM_16")
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioReadError, match="truncated") as caught:
        read_audio(truncated)
    assert str(truncated) in str(caught.value)

    with pytest.raises(AudioReadError, match="cannot read the file"):
        read_audio(tmp_path / "missing.wav")

    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.array([0.0, np.nan, 0.1], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN"):
        read_audio(nan)

    error = AudioReadError(truncated, "truncated")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_silence_reads_as_zeros_and_stays_silent(tmp_path):
    path = tmp_path / "silence.flac"
    soundfile.write(path, np.zeros(4000, np.float32), 16000, subtype="PCM_16")
    audio, _ = read_audio(path, sample_rate=24000)
    assert audio.shape == (1, 6000) and not audio.any()
    assert not loudness_normalize(audio).any()


@pytest.mark.parametrize(
    ("rate", "frames", "expected"), [(48000, 1, 1), (96000, 2, 1), (8000, 1, 3)]
)
def test_a_clip_of_a_few_samples_resamples_to_at_least_one(tmp_path, rate, frames, expected):
    """Half a sample rounds to none: the clip would reach the codec empty and fail its batch."""
    path = tmp_path / "click.wav"
    soundfile.write(path, np.full((frames, 2), 0.5, np.float32), rate)
    audio, new_rate = read_audio(path, sample_rate=24000)
    assert new_rate == 24000 and audio.shape == (1, expected) and audio.abs().max() > 0


@pytest.mark.parametrize("rate", [22051, 22254])
def test_an_awkward_rate_resamples_at_the_exact_rate_without_a_huge_kernel(
    tmp_path, monkeypatch, rate
):
    """22051 / 24000 does not reduce: torchaudio's kernel would be 24000 phases x 22064 taps in
    float64, 4 GB (a RuntimeError or an exhausted machine). The filter is evaluated sample by
    sample instead, at the exact rate: a 1 kHz tone stays in phase to the last sample."""
    import torchaudio.functional

    original = torchaudio.functional.resample

    def spy(waveform, orig_freq, new_freq, *args, **kwargs):
        divisor = math.gcd(orig_freq, new_freq)
        size = orig_freq // divisor * new_freq // divisor
        assert size <= 2**20, f"torchaudio asked for a kernel of {size} phases x taps"
        return original(waveform, orig_freq, new_freq, *args, **kwargs)

    monkeypatch.setattr(torchaudio.functional, "resample", spy)
    path = tmp_path / "odd.wav"
    soundfile.write(path, sine(1000.0, rate, 1.0), rate, subtype="FLOAT")
    audio, new_rate = read_audio(path, sample_rate=24000)
    assert new_rate == 24000 and audio.shape == (1, 24000)  # round(T * 24000 / rate), T = rate
    expected = torch.from_numpy(sine(1000.0, 24000, 1.0))
    # The edges see the zeros beyond the file; inside, only the filter's ripple is left (a rate
    # off by 1e-5 would drift 0.01 cycles, 0.03 in amplitude, by the end).
    torch.testing.assert_close(audio[0, 50:-50], expected[50:-50], atol=2e-3, rtol=0)


@pytest.mark.parametrize(("old_rate", "new_rate"), [(44100, 24000), (16000, 24000), (8000, 44100)])
def test_resampling_sample_by_sample_is_torchaudios_filter(old_rate, new_rate):
    import torchaudio.functional

    from mediatok.data.audio import _resample_directly

    audio = torch.randn(2, 3, 1001, generator=torch.Generator().manual_seed(0)).double()
    length = round(1001 * new_rate / old_rate)
    expected = torchaudio.functional.resample(audio, old_rate, new_rate)[..., :length]
    direct = _resample_directly(audio, old_rate, new_rate, length)
    assert direct.shape == (2, 3, length) and direct.dtype == torch.float64
    torch.testing.assert_close(direct, expected, atol=1e-10, rtol=0)


def test_a_failure_to_resample_names_the_file(tmp_path, monkeypatch):
    def fail(audio, old_rate, new_rate):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("mediatok.data.audio.resample", fail)
    path = tmp_path / "tone.wav"
    soundfile.write(path, sine(440.0, 16000, 0.1), 16000)
    with pytest.raises(
        AudioReadError, match=r"cannot resample .* to 24000 Hz: RuntimeError"
    ) as caught:
        read_audio(path, sample_rate=24000)
    assert caught.value.path == path


def flac_without_length(tmp_path, tone: np.ndarray, writer: str):
    """A FLAC whose STREAMINFO gives 0 total samples (unknown), as a pipe writer leaves it."""
    path = tmp_path / f"{writer}.flac"
    if writer == "ffmpeg":
        if shutil.which("ffmpeg") is None:
            pytest.skip("ffmpeg is not installed")
        wav = tmp_path / "tone.wav"
        soundfile.write(wav, tone, 16000, subtype="PCM_16")
        command = ["ffmpeg", "-loglevel", "error", "-i", str(wav), "-f", "flac", "-"]
        path.write_bytes(subprocess.run(command, capture_output=True, check=True).stdout)
    else:
        soundfile.write(path, tone, 16000, subtype="PCM_16")
        data = bytearray(path.read_bytes())
        # "fLaC", a 4-byte block header, then STREAMINFO: 10 bytes of block and frame sizes,
        # 20 bits of sample rate, 3 of channels, 5 of bits per sample, 36 of total samples.
        fields = int.from_bytes(data[18:26], "big") & ~(2**36 - 1)
        data[18:26] = fields.to_bytes(8, "big")
        path.write_bytes(data)
    assert soundfile.info(path).frames == 2**63 - 1  # libsndfile: "bumping to SF_COUNT_MAX"
    return path


@pytest.mark.parametrize("writer", ["patched", "ffmpeg"])
@pytest.mark.parametrize("frames", [1000, _BLOCK_FRAMES])  # the end inside a block, at its end
def test_a_flac_with_no_length_in_its_header_is_read_to_its_end(tmp_path, writer, frames):
    """soundfile's read() would allocate 2**63 - 1 frames ("array is too big")."""
    tone = np.round(sine(440.0, 16000, frames / 16000) * 32768) / 32768
    path = flac_without_length(tmp_path, tone, writer)
    audio, rate = read_audio(path)
    assert rate == 16000 and audio.shape == (1, frames)
    torch.testing.assert_close(audio[0], torch.from_numpy(tone), atol=0, rtol=0)


def test_a_truncated_ogg_is_reported_as_truncated(tmp_path):
    whole = tmp_path / "whole.ogg"
    soundfile.write(whole, sine(440.0, 16000, 1.0), 16000, subtype="VORBIS")
    data = whole.read_bytes()
    # Cut in the middle libsndfile cannot open it; cut near the end it opens with 0 frames.
    for size in (len(data) // 2, len(data) - 100):
        cut = tmp_path / f"cut-{size}.ogg"
        cut.write_bytes(data[:size])
        with pytest.raises(AudioReadError, match=r"truncated OGG data.* last page is cut short"):
            read_audio(cut)
    assert read_audio(whole)[0].shape == (1, 16000)
    empty = tmp_path / "empty.ogg"
    soundfile.write(empty, np.zeros((0, 1), np.float32), 16000, subtype="VORBIS")
    with pytest.raises(AudioReadError, match=r"empty audio \(0 samples\)"):
        read_audio(empty)


def test_a_wav_whose_data_size_is_a_zero_placeholder_is_read(tmp_path):
    """A streaming writer that never fills in the data chunk's size leaves 0 there."""
    tone = sine(440.0, 8000, 0.2)
    path = tmp_path / "streamed.wav"
    soundfile.write(path, tone, 8000, subtype="FLOAT")
    data = bytearray(path.read_bytes())
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = bytes(4)
    path.write_bytes(data)
    audio, rate = read_audio(path)
    assert rate == 8000
    torch.testing.assert_close(audio[0], torch.from_numpy(tone), atol=0, rtol=0)

    # An empty data chunk followed by another chunk is empty audio.
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1), np.float32), 8000, subtype="PCM_16")
    data = bytearray(empty.read_bytes()) + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    empty.write_bytes(data)
    with pytest.raises(AudioReadError, match=r"empty audio \(0 samples\)"):
        read_audio(empty)


def test_loudness_normalize_reaches_the_target_and_limits_the_peak():
    tone = torch.from_numpy(sine(440.0, 16000, 0.5, amplitude=0.01))[None]
    out = loudness_normalize(tone, target_db=-20.0)
    assert 20 * torch.log10(out.square().mean().sqrt()) == pytest.approx(-20.0, abs=1e-3)
    # A sine at -1 dBFS RMS would peak at 1.26: limited to 0.99 instead.
    limited = loudness_normalize(tone, target_db=-1.0)
    assert limited.abs().max() == pytest.approx(0.99, abs=1e-6)
    with pytest.raises(ValueError, match="target_db"):
        loudness_normalize(tone, target_db=3.0)


def make_folder(root):
    root.mkdir()
    soundfile.write(root / "a_long.wav", sine(440.0, 16000, 1.0), 16000, subtype="PCM_16")
    soundfile.write(root / "b_short.flac", sine(440.0, 8000, 0.1), 8000, subtype="PCM_16")
    (root / "sub").mkdir()
    soundfile.write(root / "sub" / "c.wav", sine(220.0, 16000, 0.5), 16000, subtype="FLOAT")
    (root / "readme.txt").write_text("not listed")
    return root


def test_list_audio(tmp_path):
    root = make_folder(tmp_path / "clips")
    assert [p.relative_to(root).as_posix() for p in list_audio(root)] == [
        "a_long.wav",
        "b_short.flac",
        "sub/c.wav",
    ]
    assert ".wav" in AUDIO_EXTENSIONS
    assert (".mp3" in AUDIO_EXTENSIONS) == ("MP3" in soundfile.available_formats())
    with pytest.raises(ValueError, match="no audio files"):
        list_audio(root / "sub", extensions="ogg")
    with pytest.raises(ValueError, match="does not exist"):
        list_audio(tmp_path / "missing")


def test_audio_folder_random_crops_are_reproducible_and_short_clips_padded(tmp_path):
    root = make_folder(tmp_path / "clips")
    dataset = AudioFolder(root, sample_rate=16000, segment_seconds=0.25, seed=3)
    assert len(dataset) == 3 and dataset.segment_samples == 4000
    first = dataset[0]
    assert first["audio"].shape == (1, 4000) and first["audio"].dtype == torch.float32
    assert first["key"] == "a_long.wav" and first["index"] == 0 and first["length"] == 4000
    again = AudioFolder(root, sample_rate=16000, segment_seconds=0.25, seed=3)[0]
    assert torch.equal(first["audio"], again["audio"])
    copies = Repeated(dataset, 2)  # a second copy of a file an epoch: another window
    assert torch.equal(copies[0]["audio"], first["audio"])
    assert copies[3]["key"] == "a_long.wav" and not torch.equal(copies[3]["audio"], first["audio"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["audio"], first["audio"])
    full = read_audio(root / "a_long.wav")[0]
    starts = [
        s
        for s in range(full.shape[-1] - 4000 + 1)
        if torch.equal(full[:, s : s + 4000], first["audio"])
    ]
    assert starts  # the window is a real slice of the file

    short = dataset[1]  # 0.1 s at 8 kHz -> 1600 samples at 16 kHz, padded to 4000
    assert short["key"] == "b_short.flac" and short["length"] == 1600
    assert short["audio"].shape == (1, 4000) and not short["audio"][:, 1600:].any()
    assert short["audio"][:, :1600].abs().max() > 0.1

    start = AudioFolder(root, 16000, segment_seconds=0.25, crop="start")[0]
    torch.testing.assert_close(start["audio"], full[:, :4000])
    whole = AudioFolder(root, 16000, normalize_db=-20.0)[2]
    assert whole["audio"].shape == (1, 8000) and whole["length"] == 8000
    assert 20 * torch.log10(whole["audio"].square().mean().sqrt()) == pytest.approx(-20, abs=0.01)
    with pytest.raises(ValueError, match="crop"):
        AudioFolder(root, 16000, crop="center")


def test_audio_folder_skip_and_stop(tmp_path, caplog):
    root = make_folder(tmp_path / "clips")
    bad = root / "b_short.flac"
    bad.write_bytes(bad.read_bytes()[:40])
    stopping = AudioFolder(root, 16000, segment_seconds=0.1, on_error="stop")
    with pytest.raises(AudioReadError) as caught:
        stopping[1]
    assert caught.value.path == bad

    skipping = AudioFolder(root, 16000, segment_seconds=0.1, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="mediatok.data"):
        item = skipping[1]
    assert item["key"] == "sub/c.wav" and item["index"] == 2
    assert skipping.skipped == [bad] and str(bad) in caplog.text
    assert skipping[1]["index"] == 2 and skipping.skipped == [bad]  # not decoded again

    for path in list_audio(root):
        path.write_text("broken")
    with pytest.raises(ValueError, match="no readable audio"):
        AudioFolder(root, 16000, on_error="skip")[0]
