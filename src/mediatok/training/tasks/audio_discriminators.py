"""Waveform and spectrogram discriminators for audio codec training (WavTokenizer / Vocos recipe).

Three families judge a waveform `(B, 1, S)`; every sub-discriminator returns a
`DiscriminatorOutput` with its logits and the activations of its hidden layers, which the
feature-matching loss compares between real and reconstructed audio (`audio_losses.py`).

- `MultiPeriodDiscriminator` (HiFi-GAN, Kong et al. 2020, §2.3): for each period p the signal is
  right-padded by reflection to a multiple of p and folded to `(B, 1, S/p, p)`, so that a stack
  of `(5, 1)` convolutions striding 3 along the first axis sees samples p apart: periodic
  structure (pitch, harmonics) that a plain 1-D convolution resolves poorly. Periods
  (2, 3, 5, 7, 11) are the paper's, widths (32, 128, 512, 1024, 1024) its released model's; the
  last width's layer has stride 1, and a `(3, 1)` convolution gives one logit channel.
- `MultiResolutionDiscriminator` (UnivNet, Jang et al. 2021, in the form Vocos uses, Siuzdak
  2023): for each STFT resolution `(n_fft, hop, win)` the magnitude spectrogram
  `(B, 1, F, T)` goes through five convolutions that halve frequency each time and time every
  other time, then a 3×3 convolution to one channel. The spectrogram is computed in fp32 with
  autocast off (half precision would wreck its dynamic range); the convolutions follow the
  caller's autocast. The default window is rectangular, as in Vocos, which passes no window to
  its STFT; "hann" is the alternative.
- `MultiBandDiscriminator` (DAC, Kumar et al. 2023, "Discriminator design"; WavTokenizer adds
  it to the Vocos pair): for each window length W the complex STFT (Hann window, hop W / 4) as
  two real channels `(B, 2, F, T)` (real, imaginary: phase too, which a magnitude hides) is
  split along frequency into bands at fixed fractions of its `F = W // 2 + 1` bins (edges 0,
  .1, .25, .5, .75, 1: narrower bands at low frequencies). Each band has its own stack of five
  convolutions, width 32, kernels `(9, 3)` over (frequency, time), the middle three striding 2
  along frequency, the last `(3, 3)`; the band outputs are concatenated along frequency and a
  `(3, 3)` convolution gives one logit channel. The design is the paper's; the numbers
  (windows 2048, 1024, 512, hop, edges, widths, kernels, strides) are the defaults of its
  released code, which lays the spectrogram out `(B, 2, T, F)` with `(3, 9)` kernels: the same
  layers, transposed into this module's (frequency, time) order.
  The family is off by default (`band_windows=()`) until a quality run shows that it earns its
  cost (`configs/audio/wavtokenizer-75-mbd.yaml` against `wavtokenizer-75.yaml`).

How we differ from the reference code: one config dataclass with validated fields builds the
families; feature maps are every hidden activation (HiFi-GAN's choice; Vocos' period
discriminator skips its first layer) and never the logits; the period fold pads by reflection,
which needs `S >= max(periods)`; no conditioning embeddings (Vocos' bandwidth ids). For the band
family: band edges are given once as a partition of [0, 1] (`band_edges`), so bands can neither
overlap nor leave a gap; the STFT is `torch.stft`'s centred one, `S // hop + 1` frames (DAC pads
to `ceil(S / hop)` frames); and the waveform is not re-normalized first (DAC removes the DC offset
and scales every input to a peak of 0.8, for all its discriminators; here every family sees the
waveform as it comes, and training crops are loudness-normalized). A band sub-discriminator
returns its bands' activations in band order, five per band (25 at DAC's settings), which the
feature-matching loss sums, as DAC's does.

All convolutions use weight normalization (`torch.nn.utils.parametrizations.weight_norm`) and
LeakyReLU with slope 0.1, as in all three papers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from mediatok.config import check_choice, check_positive_int
from mediatok.eval.audio import check_stft_resolutions
from mediatok.nn import autocast_off

LEAKY_SLOPE = 0.1  # HiFi-GAN §2.3 and Vocos both use LeakyReLU(0.1)
PERIOD_KERNEL = 5  # (5, 1) kernels along the folded time axis (HiFi-GAN §2.3)
PERIOD_STRIDE = 3
# (kernel, stride) over (frequency, time) of the resolution discriminator's layers, the layout
# Vocos uses: frequency halves at every layer, time at every other one.
RESOLUTION_LAYERS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((7, 5), (2, 2)),
    ((5, 3), (2, 1)),
    ((5, 3), (2, 2)),
    ((3, 3), (2, 1)),
    ((3, 3), (2, 2)),
)
WINDOWS = ("rectangular", "hann")
DEFAULT_PERIODS = (2, 3, 5, 7, 11)  # HiFi-GAN §2.3
DEFAULT_PERIOD_CHANNELS = (32, 128, 512, 1024, 1024)  # HiFi-GAN's period sub-discriminator
DEFAULT_RESOLUTIONS = ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512))  # Vocos
# The band family (DAC's released defaults): its window lengths (`band_windows` is empty by
# default, which turns the family off), hop = window // 4, band edges as fractions of the bins.
DAC_BAND_WINDOWS = (2048, 1024, 512)
DEFAULT_BAND_EDGES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
BAND_HOP_DIVISOR = 4
# (kernel, stride) over (frequency, time) of every band's layers: DAC's (3, 9) / (1, 2) over
# (time, frequency), transposed; frequency halves at the middle three layers, time never.
BAND_LAYERS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((9, 3), (1, 1)),
    ((9, 3), (2, 1)),
    ((9, 3), (2, 1)),
    ((9, 3), (2, 1)),
    ((3, 3), (1, 1)),
)
KINDS = ("period", "resolution", "band")  # the families, in the order their outputs come


@dataclass
class AudioDiscriminatorConfig:
    """The discriminator of the audio codec objective: multi-period, multi-resolution, and
    (off by default) multi-band complex STFT.

    Attributes:
        periods: one period sub-discriminator each (HiFi-GAN §2.3: primes, so that the
            sub-discriminators overlap as little as possible); empty turns the family off.
        period_channels: output widths of the period sub-discriminators' layers; all stride 3
            along time except the last (stride 1). HiFi-GAN: (32, 128, 512, 1024, 1024).
        resolutions: `(n_fft, hop_length, win_length)` of each resolution sub-discriminator,
            `win_length <= n_fft`; empty turns the family off. Vocos' defaults.
        resolution_channels: width of every layer of a resolution sub-discriminator (Vocos: 64).
        resolution_window: STFT window of the resolution sub-discriminators, "rectangular"
            (Vocos) or "hann".
        band_windows: STFT window length W of each band sub-discriminator (hop W // 4, Hann
            window); empty (the default) turns the family off. DAC: (2048, 1024, 512).
        band_edges: where the bands split the frequency axis, as fractions of its
            `W // 2 + 1` bins, from 0 to 1 and increasing; band i is `[edges[i], edges[i+1])`,
            bin `floor(edge · bins)`. DAC: (0, .1, .25, .5, .75, 1), five bands.
        band_channels: width of every layer of a band's convolution stack (DAC: 32).
    """

    periods: tuple[int, ...] = DEFAULT_PERIODS
    period_channels: tuple[int, ...] = DEFAULT_PERIOD_CHANNELS
    resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_RESOLUTIONS
    resolution_channels: int = 64
    resolution_window: Literal["rectangular", "hann"] = "rectangular"
    band_windows: tuple[int, ...] = ()
    band_edges: tuple[float, ...] = DEFAULT_BAND_EDGES
    band_channels: int = 32

    def __post_init__(self) -> None:
        if not self.periods and not self.resolutions and not self.band_windows:
            raise ValueError(
                "expected at least one period, resolution or band sub-discriminator, got "
                "periods=(), resolutions=() and band_windows=()"
            )
        _check_periods(self.periods)
        if self.periods:
            _check_widths("period_channels", self.period_channels)
        check_stft_resolutions(self.resolutions)
        check_positive_int("resolution_channels", self.resolution_channels)
        check_choice("resolution_window", self.resolution_window, WINDOWS)
        _check_band_edges(self.band_edges)
        _check_band_windows(self.band_windows, self.band_edges)
        check_positive_int("band_channels", self.band_channels)


def _check_widths(name: str, widths: tuple[int, ...]) -> None:
    if not widths:
        raise ValueError(f"expected {name} to hold at least one layer width, got ()")
    for index, width in enumerate(widths):
        check_positive_int(f"{name}[{index}]", width)


def _check_periods(periods: tuple[int, ...]) -> None:
    for index, period in enumerate(periods):
        check_positive_int(f"periods[{index}]", period)
    if len(set(periods)) != len(periods):
        raise ValueError(f"expected distinct periods, got {tuple(periods)}")


def _check_band_edges(edges: tuple[float, ...]) -> None:
    if not isinstance(edges, (tuple, list)) or len(edges) < 2:
        raise ValueError(f"expected band_edges to hold at least two fractions, got {edges!r}")
    for index, edge in enumerate(edges):
        if isinstance(edge, bool) or not isinstance(edge, (int, float)):
            raise ValueError(f"expected band_edges[{index}] to be a number, got {edge!r}")
    if edges[0] != 0 or edges[-1] != 1:
        raise ValueError(
            f"expected band_edges from 0 to 1 (the whole frequency axis), got {tuple(edges)}"
        )
    if any(high <= low for low, high in itertools.pairwise(edges)):
        raise ValueError(f"expected strictly increasing band_edges, got {tuple(edges)}")


def band_bins(window: int, edges: tuple[float, ...]) -> list[tuple[int, int]]:
    """The `[start, stop)` bins of each band of a `window`-point STFT (`window // 2 + 1` bins).

    Bin `floor(edge · bins)` for each edge, as DAC rounds; the bands share their edges, so
    they cover the bins without gap or overlap.
    """
    bins = window // 2 + 1
    cuts = [math.floor(edge * bins) for edge in edges]
    return list(itertools.pairwise(cuts))


def _check_band_windows(windows: tuple[int, ...], edges: tuple[float, ...]) -> None:
    for index, window in enumerate(windows):
        check_positive_int(f"band_windows[{index}]", window)
        if window < BAND_HOP_DIVISOR:
            raise ValueError(
                f"expected band_windows[{index}] >= {BAND_HOP_DIVISOR} (hop = window // "
                f"{BAND_HOP_DIVISOR}), got {window}"
            )
        bands = zip(band_bins(window, edges), itertools.pairwise(edges), strict=True)
        for (start, stop), (low, high) in bands:
            if stop <= start:
                raise ValueError(
                    f"expected every band to hold a frequency bin, got none in band "
                    f"({low}, {high}) of the {window}-point STFT ({window // 2 + 1} bins); "
                    f"use fewer bands or longer band_windows"
                )
    if len(set(windows)) != len(windows):
        raise ValueError(f"expected distinct band_windows, got {tuple(windows)}")


def check_discriminator_input(
    audio: torch.Tensor, min_length: int, who: str, why: str = ""
) -> None:
    """Raise unless `audio` is a real float `(B, 1, S)` tensor with `S >= min_length`, the
    input a discriminator family takes.

    Args:
        audio: the input to check.
        min_length: the fewest samples accepted.
        who: the caller, named in errors.
        why: what sets `min_length`, appended to the too-short error.
    """
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"{who}: expected audio as a torch.Tensor, got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise TypeError(f"{who}: expected float audio, got {audio.dtype}")
    if audio.ndim != 3 or audio.shape[1] != 1:
        raise ValueError(f"{who}: expected audio of shape (B, 1, S), got {tuple(audio.shape)}")
    if audio.shape[-1] < min_length:
        raise ValueError(
            f"{who}: expected audio of at least {min_length} samples{why}, got {audio.shape[-1]}"
        )


@dataclass
class DiscriminatorOutput:
    """What one sub-discriminator says about a batch.

    Attributes:
        logits: real-vs-fake scores, one per patch: `(B, 1, rows, period)` for a period
            sub-discriminator, `(B, 1, F', T')` for a resolution or band one.
        features: activations of every hidden layer, in order, for feature matching:
            `(B, C_l, rows_l, period)` or `(B, C_l, F_l, T_l)` (a band sub-discriminator: its
            first band's layers, then the second's, ...).
        kind: the family, "period", "resolution" or "band"; losses average within a family.
        name: which sub-discriminator, e.g. "period_5", "resolution_1024_256_1024" or
            "band_2048"; the same for real and fake outputs, so losses can pair them.
    """

    logits: torch.Tensor
    features: list[torch.Tensor]
    kind: str
    name: str


def _conv2d(
    in_channels: int, out_channels: int, kernel: tuple[int, int], stride: tuple[int, int]
) -> nn.Module:
    """Weight-normalized conv with "same"-style padding of odd kernels: out = ceil(in / stride)."""
    padding = (kernel[0] // 2, kernel[1] // 2)
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel, stride, padding))


class PeriodDiscriminator(nn.Module):
    """One period p: `(B, 1, S)` → logits `(B, 1, rows, p)` and hidden activations.

    `rows` is `ceil(S / p)` divided by 3 (rounding up) once per strided layer.

    Args:
        period: p, the spacing of the samples one column sees.
        channels: output widths of the layers; all but the last stride 3 along time.
    """

    def __init__(self, period: int, channels: tuple[int, ...]):
        super().__init__()
        self.period = period
        layers, width = [], 1
        for index, out in enumerate(channels):
            stride = PERIOD_STRIDE if index < len(channels) - 1 else 1
            layers.append(_conv2d(width, out, (PERIOD_KERNEL, 1), (stride, 1)))
            width = out
        self.layers = nn.ModuleList(layers)
        self.output = _conv2d(width, 1, (3, 1), (1, 1))

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Args: audio `(B, 1, S)`, `S >= period`. Returns: its `DiscriminatorOutput`."""
        padding = -audio.shape[-1] % self.period
        if padding:
            audio = F.pad(audio, (0, padding), mode="reflect")  # (B, 1, rows · p)
        x = rearrange(audio, "b c (rows p) -> b c rows p", p=self.period)  # (B, 1, rows, p)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LEAKY_SLOPE)  # (B, C_l, rows_l, p)
            features.append(x)
        logits = self.output(x)  # (B, 1, rows_L, p)
        return DiscriminatorOutput(logits, features, "period", f"period_{self.period}")


class ResolutionDiscriminator(nn.Module):
    """One STFT resolution: `(B, 1, S)` → logits `(B, 1, F', T')` and hidden activations.

    The magnitude spectrogram is `(B, 1, F, T)` with `F = n_fft // 2 + 1` and
    `T = S // hop + 1` (centred frames, reflected borders); each layer divides F, and every
    other layer T, by 2, rounding up.

    Args:
        resolution: `(n_fft, hop_length, win_length)`.
        channels: width of every layer.
        window: "rectangular" or "hann", of `win_length` samples.
    """

    def __init__(self, resolution: tuple[int, int, int], channels: int, window: str):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = resolution
        shape = torch.ones if window == "rectangular" else torch.hann_window
        self.register_buffer("window", shape(self.win_length), persistent=False)
        layers, width = [], 1
        for kernel, stride in RESOLUTION_LAYERS:
            layers.append(_conv2d(width, channels, kernel, stride))
            width = channels
        self.layers = nn.ModuleList(layers)
        self.output = _conv2d(width, 1, (3, 3), (1, 1))

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, 1, S)` → fp32 magnitude spectrogram `(B, 1, F, T)`, with autocast off."""
        with autocast_off(audio.device.type):
            spectrum = torch.stft(
                audio[:, 0].float(),  # (B, S)
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window.float(),
                center=True,
                return_complex=True,
            )  # (B, F, T)
            return spectrum.abs().unsqueeze(1)  # (B, 1, F, T)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Args: audio `(B, 1, S)`, `S > n_fft // 2`. Returns: its `DiscriminatorOutput`."""
        x = self.magnitude(audio)  # (B, 1, F, T)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LEAKY_SLOPE)  # (B, C, F_l, T_l)
            features.append(x)
        logits = self.output(x)  # (B, 1, F_L, T_L)
        name = f"resolution_{self.n_fft}_{self.hop_length}_{self.win_length}"
        return DiscriminatorOutput(logits, features, "resolution", name)


class BandDiscriminator(nn.Module):
    """One window length W: `(B, 1, S)` → logits `(B, 1, F', T)` and hidden activations.

    The complex spectrogram is `(B, 2, F, T)` with `F = W // 2 + 1` and `T = S // (W // 4) + 1`
    (centred frames, reflected borders). Band b, bins `[start_b, stop_b)`, goes through its own
    stack (`BAND_LAYERS`), which divides its `F_b` bins by 8 (by 2, rounding up, three times)
    and keeps T; the stacks' outputs, concatenated along frequency, give
    `F' = sum_b ceil(F_b / 8)`.

    Args:
        window: W, the STFT window (Hann) and FFT length; hop W // 4.
        edges: band edges as fractions of the bins (see `band_bins`).
        channels: width of every layer.
    """

    def __init__(self, window: int, edges: tuple[float, ...], channels: int):
        super().__init__()
        self.n_fft, self.hop_length = window, window // BAND_HOP_DIVISOR
        self.register_buffer("window", torch.hann_window(window), persistent=False)
        self.bands = band_bins(window, edges)
        stacks = []
        for _ in self.bands:
            layers, width = [], 2  # real and imaginary parts
            for kernel, stride in BAND_LAYERS:
                layers.append(_conv2d(width, channels, kernel, stride))
                width = channels
            stacks.append(nn.ModuleList(layers))
        self.stacks = nn.ModuleList(stacks)
        self.output = _conv2d(channels, 1, (3, 3), (1, 1))

    def spectrum(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, 1, S)` → fp32 complex spectrogram as `(B, 2, F, T)` (real, imag), autocast off."""
        with autocast_off(audio.device.type):
            spectrum = torch.stft(
                audio[:, 0].float(),  # (B, S)
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window.float(),
                center=True,
                return_complex=True,
            )  # (B, F, T)
            return rearrange(torch.view_as_real(spectrum), "b f t c -> b c f t")  # (B, 2, F, T)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Args: audio `(B, 1, S)`, `S > W // 2`. Returns: its `DiscriminatorOutput`."""
        spectrum = self.spectrum(audio)  # (B, 2, F, T)
        features, outputs = [], []
        for (start, stop), stack in zip(self.bands, self.stacks, strict=True):
            x = spectrum[:, :, start:stop]  # (B, 2, F_b, T)
            for layer in stack:
                x = F.leaky_relu(layer(x), LEAKY_SLOPE)  # (B, C, F_bl, T)
                features.append(x)
            outputs.append(x)
        logits = self.output(torch.cat(outputs, dim=2))  # (B, 1, F', T)
        return DiscriminatorOutput(logits, features, "band", f"band_{self.n_fft}")


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's multi-period discriminator: `(B, 1, S)` → one output per period.

    Args:
        periods: one sub-discriminator each.
        channels: layer widths of every sub-discriminator (see `PeriodDiscriminator`).
    """

    def __init__(
        self,
        periods: tuple[int, ...] = DEFAULT_PERIODS,
        channels: tuple[int, ...] = DEFAULT_PERIOD_CHANNELS,
    ):
        super().__init__()
        if not periods:
            raise ValueError("expected at least one period, got ()")
        _check_periods(tuple(periods))
        _check_widths("channels", tuple(channels))
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(period, tuple(channels)) for period in periods
        )
        # Reflection padding to a multiple of p needs fewer padded samples than there are.
        self.min_length = max(periods)
        self.min_length_reason = f" (reflection padding to period {self.min_length})"

    def forward(self, audio: torch.Tensor) -> list[DiscriminatorOutput]:
        """Args: audio `(B, 1, S)`, `S >= max(periods)`. Returns: one output per period."""
        check_discriminator_input(
            audio, self.min_length, "MultiPeriodDiscriminator", self.min_length_reason
        )
        return [discriminator(audio) for discriminator in self.discriminators]


class MultiResolutionDiscriminator(nn.Module):
    """UnivNet's / Vocos' multi-resolution discriminator: `(B, 1, S)` → one output per STFT.

    Args:
        resolutions: `(n_fft, hop_length, win_length)` of each sub-discriminator.
        channels: width of every layer.
        window: STFT window, "rectangular" (Vocos) or "hann".
    """

    def __init__(
        self,
        resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_RESOLUTIONS,
        channels: int = 64,
        window: str = "rectangular",
    ):
        super().__init__()
        if not resolutions:
            raise ValueError("expected at least one (n_fft, hop_length, win_length), got ()")
        check_stft_resolutions(tuple(resolutions))
        check_positive_int("channels", channels)
        check_choice("window", window, WINDOWS)
        self.discriminators = nn.ModuleList(
            ResolutionDiscriminator(tuple(resolution), channels, window)
            for resolution in resolutions
        )
        # Centred frames reflect n_fft // 2 samples at each border, which needs more than that.
        n_fft = max(n_fft for n_fft, _, _ in resolutions)
        self.min_length = n_fft // 2 + 1
        self.min_length_reason = f" (a centred {n_fft}-point STFT needs more than n_fft // 2)"

    def forward(self, audio: torch.Tensor) -> list[DiscriminatorOutput]:
        """Args: audio `(B, 1, S)`, `S > max(n_fft) // 2`. Returns: one output per resolution."""
        check_discriminator_input(
            audio, self.min_length, "MultiResolutionDiscriminator", self.min_length_reason
        )
        return [discriminator(audio) for discriminator in self.discriminators]


class MultiBandDiscriminator(nn.Module):
    """DAC's multi-band multi-scale STFT discriminator: `(B, 1, S)` → one output per window.

    Args:
        windows: STFT window length of each sub-discriminator (hop window // 4).
        edges: band edges as fractions of the frequency bins, from 0 to 1.
        channels: width of every layer.
    """

    def __init__(
        self,
        windows: tuple[int, ...] = DAC_BAND_WINDOWS,
        edges: tuple[float, ...] = DEFAULT_BAND_EDGES,
        channels: int = 32,
    ):
        super().__init__()
        if not windows:
            raise ValueError("expected at least one band window, got ()")
        _check_band_edges(tuple(edges))
        _check_band_windows(tuple(windows), tuple(edges))
        check_positive_int("channels", channels)
        self.discriminators = nn.ModuleList(
            BandDiscriminator(window, tuple(edges), channels) for window in windows
        )
        # Centred frames reflect W // 2 samples at each border, which needs more than that.
        window = max(windows)
        self.min_length = window // 2 + 1
        self.min_length_reason = f" (a centred {window}-point STFT needs more than n_fft // 2)"

    def forward(self, audio: torch.Tensor) -> list[DiscriminatorOutput]:
        """Args: audio `(B, 1, S)`, `S > max(windows) // 2`. Returns: one output per window."""
        check_discriminator_input(
            audio, self.min_length, "MultiBandDiscriminator", self.min_length_reason
        )
        return [discriminator(audio) for discriminator in self.discriminators]


class AudioDiscriminator(nn.Module):
    """Multi-period, multi-resolution and multi-band discriminators, built from its config.

    `forward(audio (B, 1, S))` returns the period outputs (in `periods` order), then the
    resolution outputs (in `resolutions` order), then the band outputs (in `band_windows`
    order); a family without sub-discriminators is left out. `min_length` is the shortest S
    accepted: `max(max(periods), max(n_fft) // 2 + 1, max(band_windows) // 2 + 1)`, 1025
    samples with the defaults.

    Args:
        config: which sub-discriminators, how wide.
    """

    def __init__(self, config: AudioDiscriminatorConfig | None = None):
        super().__init__()
        config = AudioDiscriminatorConfig() if config is None else config
        if not isinstance(config, AudioDiscriminatorConfig):
            raise TypeError(f"expected an AudioDiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.period = (
            MultiPeriodDiscriminator(config.periods, config.period_channels)
            if config.periods
            else None
        )
        self.resolution = (
            MultiResolutionDiscriminator(
                config.resolutions, config.resolution_channels, config.resolution_window
            )
            if config.resolutions
            else None
        )
        self.band = (
            MultiBandDiscriminator(config.band_windows, config.band_edges, config.band_channels)
            if config.band_windows
            else None
        )
        families = [family for family in self.families() if family is not None]
        longest = max(families, key=lambda family: family.min_length)
        self.min_length, self.min_length_reason = longest.min_length, longest.min_length_reason

    def forward(self, audio: torch.Tensor) -> list[DiscriminatorOutput]:
        """Judge a batch of waveforms.

        Args:
            audio: `(B, 1, S)` float waveform, `S >= self.min_length`.

        Returns:
            `len(periods) + len(resolutions) + len(band_windows)` outputs (see
            `DiscriminatorOutput`).
        """
        check_discriminator_input(
            audio, self.min_length, "AudioDiscriminator", self.min_length_reason
        )
        outputs: list[DiscriminatorOutput] = []
        for family in self.families():
            if family is not None:
                outputs += family(audio)
        return outputs

    def families(self) -> tuple[nn.Module | None, ...]:
        """The period, resolution and band families, in `KINDS` order; None where off."""
        return (self.period, self.resolution, self.band)
