"""Audio metrics on synthetic signals: sines, a chirp, noise, and a speech-like buzz for PESQ and
STOI (against their definitions' fixed points, not pinned printouts)."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable

import pytest
import torch

from mediatok.eval import mel_distance, multi_resolution_stft_distance, pesq, si_sdr, stoi

SAMPLE_RATE = 16000


def sines_and_chirp(seconds: float = 1.0, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Three test signals `(3, T)` in [-1, 1]: 440 Hz, a 220 + 1250 Hz mix, a 100–4000 Hz chirp."""
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    sine = 0.5 * torch.sin(2 * math.pi * 440 * t)
    mix = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.2 * torch.sin(2 * math.pi * 1250 * t)
    # Linear chirp: instantaneous frequency 100 + (4000 - 100) · t / seconds.
    chirp = 0.5 * torch.sin(2 * math.pi * (100 * t + (4000 - 100) * t**2 / (2 * seconds)))
    return torch.stack([sine, mix, chirp]).float()


def speech_like(seconds: float = 3.0, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A voiced buzz `(1, T)`: a 100–140 Hz harmonic series in 2 Hz syllable bursts with pauses,
    enough speech-like activity for PESQ's voice detector and STOI's frame selection."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    pitch = 120 + 20 * torch.sin(2 * math.pi * 0.7 * t)  # Hz
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / sample_rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 30))
    voiced = voiced / voiced.abs().max() + 0.05 * torch.randn(t.shape, generator=generator)
    syllables = torch.sin(2 * math.pi * 2 * t).clamp_min(0) ** 2
    return (0.3 * voiced * syllables).float()[None]


def noise_like(signal: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    """Zero-mean white noise of `signal`'s shape whose energy is `snr_db` below each item's."""
    noise = torch.randn(signal.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise - noise.mean(dim=-1, keepdim=True)
    signal_energy = (signal - signal.mean(dim=-1, keepdim=True)).square().sum(-1, keepdim=True)
    scale = (signal_energy / noise.square().sum(-1, keepdim=True) / 10 ** (snr_db / 10)).sqrt()
    return noise * scale


def test_identical_signals_are_at_distance_zero() -> None:
    signals = sines_and_chirp()
    assert torch.equal(mel_distance(signals, signals, SAMPLE_RATE), torch.zeros(3))
    assert torch.equal(multi_resolution_stft_distance(signals, signals), torch.zeros(3))
    scores = si_sdr(signals, signals)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all() and (scores > 90).all()


def test_distances_grow_with_noise() -> None:
    signals = sines_and_chirp()
    for metric in (
        lambda p, t: mel_distance(p, t, SAMPLE_RATE),
        multi_resolution_stft_distance,
    ):
        distances = torch.stack(
            [metric(signals + noise_like(signals, snr), signals) for snr in (40, 20, 0)]
        )  # (3 noise levels, B)
        assert (distances > 0).all()
        assert (distances[1:] > distances[:-1]).all(), distances


def test_si_sdr_matches_the_noise_level() -> None:
    signals = sines_and_chirp()
    for snr in (0.0, 10.0, 25.0):
        scores = si_sdr(signals + noise_like(signals, snr), signals)
        assert torch.allclose(scores, torch.full((3,), snr), atol=0.5), (snr, scores)


def test_si_sdr_is_scale_invariant_and_matches_the_definition() -> None:
    signals = sines_and_chirp()
    noisy = signals + noise_like(signals, 12.0)
    reference = si_sdr(noisy, signals)
    for gain in (0.01, 0.5, 8.0):
        assert torch.allclose(si_sdr(gain * noisy, signals), reference, atol=1e-4)
    # Eq. 5 of Le Roux et al. written out with the projection, in float64.
    estimate = noisy.double() - noisy.double().mean(-1, keepdim=True)
    target = signals.double() - signals.double().mean(-1, keepdim=True)
    alpha = (estimate * target).sum(-1, keepdim=True) / target.square().sum(-1, keepdim=True)
    projection = alpha * target
    expected = 10 * torch.log10(
        projection.square().sum(-1) / (estimate - projection).square().sum(-1)
    )
    assert torch.allclose(reference.double(), expected, atol=1e-4)
    # A silent prediction is very bad, not NaN.
    assert (si_sdr(torch.zeros_like(signals), signals) < -90).all()


def test_channel_layout_and_float64() -> None:
    signals = sines_and_chirp()
    noisy = signals + noise_like(signals, 10.0)
    for metric in (lambda p, t: mel_distance(p, t, SAMPLE_RATE), si_sdr):
        flat = metric(noisy, signals)
        assert torch.allclose(metric(noisy[:, None], signals[:, None]), flat)
        assert metric(noisy.double(), signals).dtype == torch.float64


@pytest.mark.parametrize(
    ("prediction_shape", "target_shape", "message"),
    [
        ((2, 4000), (2, 3999), "one length, got 4000 and 3999"),
        ((2, 4000), (3, 4000), "one batch size, got 2 and 3"),
        ((2, 2, 4000), (2, 2, 4000), r"\(B, T\) or \(B, 1, T\), got \(2, 2, 4000\)"),
        ((4000,), (4000,), r"\(B, T\) or \(B, 1, T\), got \(4000,\)"),
    ],
)
def test_bad_shapes_raise(
    prediction_shape: tuple[int, ...], target_shape: tuple[int, ...], message: str
) -> None:
    prediction, target = torch.zeros(prediction_shape), torch.zeros(target_shape)
    for metric in (
        lambda p, t: mel_distance(p, t, SAMPLE_RATE),
        multi_resolution_stft_distance,
        si_sdr,
    ):
        with pytest.raises(ValueError, match=message):
            metric(prediction, target)


def test_bad_types_and_settings_raise() -> None:
    signals = sines_and_chirp()
    with pytest.raises(TypeError, match=r"real float tensor, got torch\.int16"):
        si_sdr(signals.to(torch.int16), signals)
    with pytest.raises(ValueError, match="sample_rate to be a positive integer, got 0"):
        mel_distance(signals, signals, 0)
    with pytest.raises(ValueError, match="longer than n_fft // 2 = 1024"):
        multi_resolution_stft_distance(signals[:, :1000], signals[:, :1000])
    with pytest.raises(ValueError, match="win_length <= n_fft"):
        multi_resolution_stft_distance(signals, signals, resolutions=((256, 64, 512),))


def test_pesq_identical_is_high_and_noise_is_low() -> None:
    pytest.importorskip("pesq", reason="wide-band PESQ needs `pip install pesq`")
    speech = speech_like()
    noise = noise_like(speech, 0.0)
    scores = pesq(torch.cat([speech, noise]), torch.cat([speech, speech]), SAMPLE_RATE)
    assert scores.shape == (2,)
    assert scores[0] > 4.0 and scores[1] < 2.0, scores
    # At 24 kHz the signals are resampled to 16 kHz first.
    speech_24k = speech_like(sample_rate=24000)
    assert pesq(speech_24k, speech_24k, 24000)[0] > 4.0


def test_stoi_identical_is_one_and_noise_is_lower() -> None:
    pytest.importorskip("pystoi", reason="STOI needs `pip install pystoi`")
    speech = speech_like()
    noise = noise_like(speech, 0.0)
    scores = stoi(torch.cat([speech, noise]), torch.cat([speech, speech]), SAMPLE_RATE)
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] < 0.7, scores


def test_missing_optional_packages_raise_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    speech = speech_like(seconds=1.0)
    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` fail
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(ImportError, match="pip install pesq"):
        pesq(speech, speech, SAMPLE_RATE)
    with pytest.raises(ImportError, match="pip install pystoi"):
        stoi(speech, speech, SAMPLE_RATE)


def test_pesq_of_a_silent_prediction_is_the_lowest_score() -> None:
    """A codec may output silence; the `pesq` package then fails inside ("cannot convert float
    NaN to integer"). Silence against speech is the worst quality: the scale's floor, no crash,
    and no higher than the package's score for anything else: a 7 kHz tone (about 1.013, below
    the mapping of P.862's nominal raw floor −0.5, 1.043) or faint noise (which PESQ's level
    alignment scores as noise at speech level)."""
    pytest.importorskip("pesq", reason="wide-band PESQ needs `pip install pesq`")
    from mediatok.eval.audio import PESQ_WB_FLOOR

    speech = speech_like(seconds=2.0)
    whisper = noise_like(speech, 100.0)  # 100 dB below the speech
    t = torch.arange(speech.shape[-1]) / SAMPLE_RATE
    tone = 0.9 * torch.sin(2 * math.pi * 7000 * t)[None]
    predictions = torch.cat([torch.zeros_like(speech), whisper, tone])
    scores = pesq(predictions, speech.repeat(3, 1), SAMPLE_RATE)
    assert scores[0] == pytest.approx(PESQ_WB_FLOOR) and 1.01 < PESQ_WB_FLOOR < 1.015
    assert scores[0] <= scores[1:].min() and scores[1:].max() < 2.0, scores


@pytest.mark.parametrize("prediction", ["silent", "speech"])
def test_pesq_of_a_silent_target_raises_whatever_the_prediction(prediction: str) -> None:
    """PESQ is undefined without speech in the reference; a silent prediction got the floor
    while any other raised the package's NoUtterancesError."""
    speech = speech_like(seconds=1.0)
    predictions = torch.cat([speech, speech if prediction == "speech" else speech * 0])
    targets = torch.cat([speech, torch.zeros_like(speech)])
    with pytest.raises(ValueError, match=r"speech in every target, got silence in items \[1\]"):
        pesq(predictions, targets, SAMPLE_RATE)


@pytest.mark.parametrize("metric", [pesq, stoi])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_pesq_and_stoi_reject_non_finite_samples(metric: Callable, bad: float) -> None:
    """NaN made the `pesq` package fail inside ("cannot convert float NaN to integer"); inf made
    it scale the reference to silence and raise NoUtterancesError."""
    speech = speech_like(seconds=1.0).repeat(2, 1)
    broken = speech.clone()
    broken[1, 100] = bad
    with pytest.raises(ValueError, match=r"expected finite prediction, got .* items \[1\]"):
        metric(broken, speech, SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"expected finite target, got .* items \[1\]"):
        metric(speech, broken, SAMPLE_RATE)


TINY_16K = {
    "sample_rate": SAMPLE_RATE,
    "hop_length": 8,
    "strides": [2, 4],
    "channels": 4,
    "latent_dim": 8,
    "decoder_dim": 16,
    "decoder_intermediate": 16,
    "decoder_layers": 1,
    "attention_window": 4,
    "attention_heads": 2,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 16}},
}


@pytest.fixture(scope="module")
def tiny_codec():
    from mediatok.codecs import build_codec

    torch.manual_seed(0)
    return build_codec("wavtokenizer", TINY_16K).eval()


def test_metrics_of_a_silent_or_short_original_are_undefined() -> None:
    """A silent original gave an STFT distance in the tens of thousands and an SI-SDR of
    −100 dB, which wrecked the means over files; PESQ of it raised."""
    pytest.importorskip("pesq", reason="wide-band PESQ needs `pip install pesq`")
    pytest.importorskip("pystoi", reason="STOI needs `pip install pystoi`")
    from mediatok.eval.audio import reconstruction_scores, score_items

    speech = speech_like(seconds=2.0)
    noisy = speech + noise_like(speech, 10.0)
    dither = noise_like(speech, 0.0) / noise_like(speech, 0.0).abs().max() / 40000  # < 1 LSB
    scores, undefined = score_items(
        torch.cat([noisy, noisy]), torch.cat([speech, dither]), SAMPLE_RATE, speech=True
    )
    names = ["mel_distance", "stft_distance", "si_sdr", "pesq", "stoi"]
    assert list(scores) == names and undefined == {key: {1: "silent original"} for key in names}
    assert all(math.isnan(scores[name][1]) and math.isfinite(scores[name][0]) for name in names)
    alone = reconstruction_scores(noisy, speech, SAMPLE_RATE, speech=True)
    both = reconstruction_scores(
        torch.cat([noisy, noisy]), torch.cat([speech, dither]), SAMPLE_RATE, speech=True
    )
    assert both == alone  # the silent item is left out, not averaged in
    assert math.isnan(reconstruction_scores(noisy, dither, SAMPLE_RATE)["si_sdr"])
    # a constant original has no signal to project on: SI-SDR only
    _, undefined = score_items(noisy, torch.full_like(speech, 0.25), SAMPLE_RATE)
    assert undefined == {"si_sdr": {0: "constant original"}}
    # 800 samples: too short for the 2048-point STFT, for PESQ's 0.25 s and STOI's frames
    short, noisy_short = speech[:, 16000:16800], noisy[:, 16000:16800]
    scores, undefined = score_items(noisy_short, short, SAMPLE_RATE, speech=True)
    assert set(undefined) == {"stft_distance", "pesq", "stoi"}
    assert undefined["stft_distance"][0].startswith("too short (800 samples")
    assert "BufferTooShortError" in undefined["pesq"][0]
    assert undefined["stoi"][0].startswith("too little speech for STOI")
    assert math.isfinite(scores["mel_distance"][0]) and math.isfinite(scores["si_sdr"][0])
    # a silent *reconstruction* of speech is the worst score, not undefined
    _, undefined = score_items(torch.zeros_like(speech), speech, SAMPLE_RATE, speech=True)
    assert undefined == {}


def write_clips(folder, **clips: torch.Tensor) -> None:
    from mediatok.data import write_audio

    for name, clip in clips.items():
        write_audio(folder / f"{name}.wav", clip, SAMPLE_RATE)


def test_codec_evaluation_leaves_undefined_metrics_out_of_its_means(tiny_codec, tmp_path) -> None:
    """One silent file among normal ones used to stop the whole evaluation (PESQ of silence) or,
    without speech metrics, wreck its means; a file too short for the STFT stopped it too."""
    pytest.importorskip("pesq", reason="wide-band PESQ needs `pip install pesq`")
    pytest.importorskip("pystoi", reason="STOI needs `pip install pystoi`")
    from mediatok.pipelines import evaluate_codec

    speech = speech_like(seconds=2.0)
    write_clips(tmp_path / "one", speech=speech)
    write_clips(tmp_path / "two", speech=speech, silent=torch.zeros_like(speech))
    alone = evaluate_codec(tiny_codec, tmp_path / "one", tmp_path / "r1")
    report = evaluate_codec(tiny_codec, tmp_path / "two", tmp_path / "r2")
    names = ["mel_distance", "stft_distance", "si_sdr", "pesq", "stoi"]
    assert report["num_files"] == 2 and alone["num_files"] == 1
    for name in names:
        assert report[name] == alone[name] and math.isfinite(report[name]), name
    assert report["scored"] == dict.fromkeys(names, 1)
    assert report["undefined"] == {key: {"silent.wav": "silent original"} for key in names}
    assert alone["undefined"] == {} and report["skipped"] == []

    write_clips(tmp_path / "short", long=sines_and_chirp(0.25)[:1], short=sines_and_chirp(0.01)[:1])
    report = evaluate_codec(tiny_codec, tmp_path / "short", tmp_path / "r3", speech_metrics=False)
    assert report["scored"] == {"mel_distance": 1, "stft_distance": 1, "si_sdr": 2}
    assert set(report["undefined"]) == {"mel_distance", "stft_distance"}
    assert report["undefined"]["mel_distance"]["short.wav"].startswith("too short (160 samples")


def test_codec_evaluation_skips_or_stops_at_a_bad_file(tiny_codec, tmp_path, capsys) -> None:
    """`--on-error skip|stop` as in encode: an unreadable file is listed and left out, or stops
    the evaluation naming it; so does a file a metric is undefined for, with stop."""
    from mediatok.cli import main
    from mediatok.pipelines import Stopped, evaluate_codec

    speech = speech_like(seconds=1.0)
    write_clips(tmp_path / "clips", a=speech, silent=torch.zeros_like(speech))
    (tmp_path / "clips" / "broken.wav").write_bytes(b"RIFF not really a wav")
    options = {"speech_metrics": False}
    report = evaluate_codec(tiny_codec, tmp_path / "clips", tmp_path / "r", **options)
    assert report["num_files"] == 2 and [e["key"] for e in report["skipped"]] == ["broken.wav"]
    assert set(report["undefined"]["si_sdr"]) == {"silent.wav"}
    (tmp_path / "clips" / "broken.wav").unlink()
    with pytest.raises(Stopped, match=r"stopped at .*silent\.wav .*si_sdr undefined: silent orig"):
        evaluate_codec(tiny_codec, tmp_path / "clips", tmp_path / "r2", on_error="stop", **options)
    assert not (tmp_path / "r2" / "metrics.json").exists()
    checkpoint = tiny_codec.save_pretrained(tmp_path / "codec")
    args = ["eval", str(checkpoint), str(tmp_path / "clips"), "-o", str(tmp_path / "r3")]
    assert main([*args, "--no-speech-metrics", "--on-error", "stop", "--device", "cpu"]) == 1
    assert re.search(r"^mediatok eval: stopped at .*silent\.wav", capsys.readouterr().err)
    assert main([*args, "--no-speech-metrics", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"mediatok eval: warning: .*silent\.wav: .*left out of those means", err)


def test_eval_without_the_speech_packages_is_one_line(tiny_codec, tmp_path, capsys, monkeypatch):
    """A missing `pesq` was a traceback; now one line naming the install command and the flag
    that does without, before any file is encoded."""
    from mediatok.cli import main

    monkeypatch.delenv("MEDIATOK_TRACEBACK")  # set for every test by conftest.py
    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` fail
    write_clips(tmp_path / "clips", a=speech_like(seconds=1.0))
    checkpoint = tiny_codec.save_pretrained(tmp_path / "codec")
    out = tmp_path / "report"
    args = ["eval", str(checkpoint), str(tmp_path / "clips"), "-o", str(out), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mediatok eval: error: ") and "Traceback" not in err
    assert "pip install 'mediatok[eval]'" in err and "--no-speech-metrics" in err
    assert len(err.strip().splitlines()) == 2  # the error, then the MEDIATOK_TRACEBACK hint
    assert not out.exists()
    assert main([*args, "--no-speech-metrics"]) == 0
