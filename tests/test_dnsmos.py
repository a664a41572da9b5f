"""DNSMOS through the `dnsmos` extra: clean speech beats the same speech in noise, any rate in,
one score set per item, the package's own numbers, a clear error without the extra, and
`mediatok eval --dnsmos` end to end.

Every clip here is `02-en-f5.flac` (4.7 s, doubled by the package to 9.5 s: one DNSMOS window,
about 0.5 s of CPU), so the file stays fast after the first call loads the models."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import soundfile
import torch
import torchaudio

from mediatok.cli import main
from mediatok.codecs import build_codec
from mediatok.eval.audio import dnsmos_scores, reconstruction_scores
from test_cli_audio import TINY_WAVTOKENIZER

CLIP = Path(__file__).resolve().parents[1] / "assets" / "speech-val" / "02-en-f5.flac"
KEYS = {"ovrl", "sig", "bak", "p808"}


@pytest.fixture(scope="module")
def clean_and_noisy() -> torch.Tensor:
    """`(2, 1, T)` at 24 kHz: the clip, and the clip in white noise (about -10 dB SNR) past full scale."""
    speech, rate = soundfile.read(CLIP, dtype="float32")
    assert rate == 24000
    clean = torch.from_numpy(speech)  # (T,), -20 dBFS RMS
    noise = 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return torch.stack([clean, clean + noise])[:, None]  # (2, 1, T)


@pytest.fixture(scope="module")
def scores(clean_and_noisy) -> dict[str, torch.Tensor]:
    return dnsmos_scores(clean_and_noisy, 24000)


def test_clean_speech_scores_above_noisy_speech(scores):
    assert set(scores) == KEYS
    for name, values in scores.items():
        assert values.shape == (2,) and values.dtype == torch.float32, name
        assert ((values > 0.5) & (values < 5)).all(), (name, values)  # MOS, about 1 to 5
    clean, noisy = scores["ovrl"].tolist()
    assert clean > noisy + 0.5, (clean, noisy)
    assert scores["bak"][0] > scores["bak"][1] + 0.5  # the noise is in the background score


def test_resampled_to_16k_and_clamped_as_the_package_scores(clean_and_noisy, scores):
    from speechmos import dnsmos

    noisy = clean_and_noisy[1, 0]  # (T,) at 24 kHz
    at_16k = torchaudio.functional.resample(noisy, 24000, 16000)
    assert at_16k.abs().max() > 1  # the package itself raises on this
    expected = dnsmos.run(at_16k.clamp(-1, 1).numpy(), sr=16000)
    for name in KEYS:
        assert scores[name][1].item() == pytest.approx(float(expected[f"{name}_mos"]), abs=1e-5)


@pytest.mark.parametrize(
    ("audio", "sample_rate", "message"),
    [
        (torch.zeros(1, 2, 100), 16000, r"shape \(B, T\) or \(B, 1, T\)"),
        (torch.zeros(1, 0), 16000, "at least one sample"),
        (torch.zeros(1, 100, dtype=torch.int16), 16000, "real float"),
        (torch.tensor([[0.0, 0.1], [0.0, float("nan")]]), 16000, r"NaN or inf in items \[1\]"),
        (torch.zeros(1, 100), 0, "sample_rate"),
    ],
)
def test_bad_input_raises(audio, sample_rate, message):
    error = TypeError if audio.dtype == torch.int16 else ValueError
    with pytest.raises(error, match=message):
        dnsmos_scores(audio, sample_rate)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)  # makes `import speechmos` fail
    with pytest.raises(ImportError, match=r"pip install 'mediatok\[dnsmos\]'") as error:
        dnsmos_scores(torch.zeros(1, 16000), 16000)
    assert "speechmos is missing" in str(error.value)


def test_reconstruction_scores_keys_do_not_depend_on_the_extra(clean_and_noisy):
    clean = clean_and_noisy[:1, :, :24000]  # (1, 1, T), 1 s
    assert set(reconstruction_scores(clean, clean, 24000)) == {
        "mel_distance",
        "stft_distance",
        "si_sdr",
    }


def test_eval_dnsmos_flag(tmp_path, scores):
    torch.manual_seed(0)
    checkpoint = build_codec("wavtokenizer", TINY_WAVTOKENIZER).save_pretrained(tmp_path / "ckpt")
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(CLIP, clips / CLIP.name)
    out = tmp_path / "report"
    args = ["eval", str(checkpoint), str(clips), "-o", str(out), "--device", "cpu"]
    assert main([*args, "--no-speech-metrics", "--dnsmos"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert "pesq" not in report
    for name in KEYS:
        assert isinstance(report[f"dnsmos_{name}"], float), name
        # The original's score is the clean clip's (read by `read_audio`, not soundfile).
        expected = scores[name][0].item()
        assert report[f"dnsmos_{name}_reference"] == pytest.approx(expected, abs=1e-4), name
