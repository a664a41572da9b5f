"""Losses of audio codec training: adversarial hinge, feature matching, multi-scale log-mel L1.

The adversarial terms take the `DiscriminatorOutput` lists of `AudioDiscriminator` (one entry per
sub-discriminator, real and fake in the same order). Reduction follows Vocos' training code,
which WavTokenizer keeps: each sub-discriminator's loss is averaged over its patches, the losses
are averaged over the sub-discriminators of one family ("period", "resolution", "band"), and the
family means are summed, each times a weight (1 by default: WavTokenizer's `mrd_loss_coeff`; the
published Vocos config weights the resolution family 0.1). HiFi-GAN (§2.4) sums over
sub-discriminators instead, which with the default five periods and three resolutions equals
weights of 5 for the period family and 3 for the resolution family here.

- `hinge_discriminator_loss_by_family` / `hinge_generator_loss_by_family`: the hinge losses of
  `adversarial.py` per sub-discriminator. The generator term is `−E[D(G(z))]` as
  for the image codecs; Vocos uses `E[relu(1 − D(G(z)))]`, which stops pushing once a fake
  patch scores above 1.
- `feature_matching_loss_by_family` (HiFi-GAN §2.4, after MelGAN): per sub-discriminator the sum over
  hidden layers of the mean absolute difference between real and fake activations, the real
  ones detached.
- `MultiScaleMelLoss`: L1 between natural-log mel spectrograms (`log(clamp(mel, 1e-5))`, the
  floor of `mediatok.eval.audio` and of HiFi-GAN's mel features; Vocos clamps at 1e-7) at
  several STFT sizes, averaged over the scales, so that its size stays that of Vocos' one-scale
  loss (1024 points, hop 256, 100 bands, our middle scale) and the weight 45 of Vocos and
  WavTokenizer (HiFi-GAN §2.4) carries over.

All results are fp32 scalars, also under bf16 autocast.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from mediatok.config import check_positive_int
from mediatok.eval.audio import MEL_LOG_FLOOR, mel_spectrogram
from mediatok.nn import autocast_off
from mediatok.training.tasks.adversarial import hinge_discriminator_loss, hinge_generator_loss
from mediatok.training.tasks.audio_discriminators import KINDS, DiscriminatorOutput

# (n_fft, hop_length, n_mels) at 24 kHz: hop n_fft / 4, window n_fft, and mel bands in
# proportion to the FFT size, 100 at 1024 (Vocos' and WavTokenizer's mel loss and our
# `mel_distance`). At 24 kHz the first empty mel filter appears at 89, 176 and 349 bands for
# n_fft 512, 1024 and 2048, so these leave none, from 16 kHz up to 48 kHz as well.
DEFAULT_MEL_SCALES = ((512, 128, 50), (1024, 256, 100), (2048, 512, 200))


def _weigh_families(
    losses: Sequence[tuple[str, torch.Tensor]], weights: Mapping[str, float] | None
) -> torch.Tensor:
    """Mean over the sub-discriminators of each family, times its weight, summed: a scalar.

    Args:
        losses: `(kind, scalar loss)` per sub-discriminator.
        weights: kind → weight; kinds left out weigh 1.
    """
    weights = {} if weights is None else dict(weights)
    unknown = sorted(set(weights) - set(KINDS))
    if unknown:
        raise ValueError(
            f"expected weights for the discriminator kinds {', '.join(map(repr, KINDS))}, "
            f"got {', '.join(map(repr, unknown))}"
        )
    families: dict[str, list[torch.Tensor]] = {}
    for kind, loss in losses:
        families.setdefault(kind, []).append(loss)
    total = sum(
        weights.get(kind, 1.0) * torch.stack(family).mean() for kind, family in families.items()
    )
    return total


def _check_outputs(name: str, outputs: Sequence[DiscriminatorOutput]) -> None:
    if isinstance(outputs, DiscriminatorOutput) or not isinstance(outputs, Sequence):
        raise TypeError(
            f"expected {name} as a list of DiscriminatorOutput, got {type(outputs).__name__}"
        )
    if not outputs:
        raise ValueError(f"expected {name} to hold at least one DiscriminatorOutput, got none")
    for output in outputs:
        if not isinstance(output, DiscriminatorOutput):
            raise TypeError(
                f"expected {name} as a list of DiscriminatorOutput, got an item of type "
                f"{type(output).__name__}"
            )
        if output.kind not in KINDS:
            raise ValueError(
                f"expected discriminator kinds {', '.join(map(repr, KINDS))}, got "
                f"{output.kind!r} ({output.name})"
            )


def _check_pairs(real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput]) -> None:
    """Raise unless `real` and `fake` come from the same sub-discriminators, in one order."""
    _check_outputs("real", real)
    _check_outputs("fake", fake)
    real_names = [output.name for output in real]
    fake_names = [output.name for output in fake]
    if real_names != fake_names:
        raise ValueError(
            f"expected real and fake outputs of the same sub-discriminators, got {real_names} "
            f"and {fake_names}"
        )


def hinge_discriminator_loss_by_family(
    real: Sequence[DiscriminatorOutput],
    fake: Sequence[DiscriminatorOutput],
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """The discriminator's hinge loss, `E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]`.

    Args:
        real: outputs on real audio, one per sub-discriminator.
        fake: outputs on (detached) reconstructions, same sub-discriminators and order.
        weights: per family (`KINDS`: "period", "resolution", "band"); families left
            out weigh 1.

    Returns:
        fp32 scalar: family means of the per-sub-discriminator losses, weighted and summed.
    """
    _check_pairs(real, fake)
    losses = [
        (r.kind, hinge_discriminator_loss(r.logits.float(), f.logits.float()))
        for r, f in zip(real, fake, strict=True)
    ]
    return _weigh_families(losses, weights)


def hinge_generator_loss_by_family(
    fake: Sequence[DiscriminatorOutput], weights: Mapping[str, float] | None = None
) -> torch.Tensor:
    """The generator's hinge loss, `−E[D(G(z))]`.

    Args:
        fake: outputs on reconstructions, one per sub-discriminator.
        weights: per family (`KINDS`: "period", "resolution", "band"); families left
            out weigh 1.

    Returns:
        fp32 scalar: family means of the per-sub-discriminator losses, weighted and summed.
    """
    _check_outputs("fake", fake)
    losses = [(f.kind, hinge_generator_loss(f.logits.float())) for f in fake]
    return _weigh_families(losses, weights)


def feature_matching_loss_by_family(
    real: Sequence[DiscriminatorOutput],
    fake: Sequence[DiscriminatorOutput],
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """L1 between the discriminator's hidden activations on real and fake audio.

    Per sub-discriminator: the sum over its layers of `mean |real_l − fake_l|`, with `real_l`
    detached (the generator should move towards the real activations, not drag them along);
    then the family means, weighted and summed. 0 exactly when every activation agrees.

    Args:
        real: outputs on real audio, one per sub-discriminator.
        fake: outputs on reconstructions, same sub-discriminators and order.
        weights: per family (`KINDS`: "period", "resolution", "band"); families left
            out weigh 1.

    Returns:
        fp32 scalar.
    """
    _check_pairs(real, fake)
    losses = []
    for r, f in zip(real, fake, strict=True):
        if len(r.features) != len(f.features):
            raise ValueError(
                f"{r.name}: expected as many real as fake feature maps, got "
                f"{len(r.features)} and {len(f.features)}"
            )
        total = torch.zeros((), device=f.logits.device)
        for index, (a, b) in enumerate(zip(r.features, f.features, strict=True)):
            if a.shape != b.shape:
                raise ValueError(
                    f"{r.name} layer {index}: expected real and fake feature maps of one shape, "
                    f"got {tuple(a.shape)} and {tuple(b.shape)} (different input lengths?)"
                )
            total = total + F.l1_loss(b.float(), a.detach().float())
        losses.append((r.kind, total))
    return _weigh_families(losses, weights)


class MultiScaleMelLoss(nn.Module):
    """Mean over STFT scales of the L1 distance between log-mel spectrograms.

    At each scale `(n_fft, hop_length, n_mels)`: Hann window of n_fft samples, centred frames
    with reflected borders, magnitude (power 1) spectrum, HTK mel bands from 0 Hz to Nyquist
    without area normalization, `log(clamp(mel, 1e-5))`, then the mean absolute difference over
    batch, bands and frames (the spectrogram of `mediatok.eval.audio.mel_distance`, from the same
    `mel_spectrogram`). Computed in fp32 with autocast off, whatever the input dtype; the
    transform of each scale is built once, a submodule that moves with `.to(device)`.

    Args:
        sample_rate: of the audio, in Hz; sets the mel band edges.
        scales: `(n_fft, hop_length, n_mels)` triples; defaults `DEFAULT_MEL_SCALES` (for
            24 kHz; they leave no empty mel filter from 16 to 48 kHz).

    Raises:
        ValueError: on a non-positive setting, or a scale whose mel bands are too narrow for its
            FFT bins at this sample rate (a filter without any bin; use fewer bands).
    """

    def __init__(
        self,
        sample_rate: int,
        scales: Sequence[tuple[int, int, int]] = DEFAULT_MEL_SCALES,
    ):
        super().__init__()
        check_positive_int("sample_rate", sample_rate)
        if not scales:
            raise ValueError("expected at least one (n_fft, hop_length, n_mels) scale, got none")
        spectrograms = []
        for scale in scales:
            if not isinstance(scale, (tuple, list)) or len(scale) != 3:
                raise ValueError(f"expected scales as (n_fft, hop_length, n_mels), got {scale!r}")
            for name, value in zip(("n_fft", "hop_length", "n_mels"), scale, strict=True):
                check_positive_int(f"{name} of scale {tuple(scale)}", value)
            spectrograms.append(_checked_mel_spectrogram(sample_rate, *scale))
        self.sample_rate = sample_rate
        self.scales = tuple(tuple(scale) for scale in scales)
        self.spectrograms = nn.ModuleList(spectrograms)
        # Centred frames reflect n_fft // 2 samples at each border, which needs more than that.
        self.min_length = max(n_fft for n_fft, _, _ in self.scales) // 2 + 1

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args:
            prediction: `(B, 1, S)` or `(B, S)` float waveform, `S >= self.min_length`.
            target: the same shape.

        Returns:
            fp32 scalar, 0 for identical signals.
        """
        for name, waveform in (("prediction", prediction), ("target", target)):
            if not isinstance(waveform, torch.Tensor) or not waveform.is_floating_point():
                raise TypeError(f"expected {name} as a float tensor, got {_describe(waveform)}")
            if not (waveform.ndim == 2 or (waveform.ndim == 3 and waveform.shape[1] == 1)):
                raise ValueError(
                    f"expected {name} of shape (B, 1, S) or (B, S), got {tuple(waveform.shape)}"
                )
        if prediction.shape != target.shape:
            raise ValueError(
                f"expected prediction and target of one shape, got {tuple(prediction.shape)} "
                f"and {tuple(target.shape)} (trim or pad the reconstruction first)"
            )
        if prediction.shape[-1] < self.min_length:
            n_fft = max(n_fft for n_fft, _, _ in self.scales)
            raise ValueError(
                f"expected audio of at least {self.min_length} samples (a centred {n_fft}-point "
                f"STFT needs more than n_fft // 2), got {prediction.shape[-1]}"
            )
        with autocast_off(prediction.device.type):
            both = torch.cat([prediction, target]).reshape(-1, prediction.shape[-1]).float()
            total = torch.zeros((), device=both.device)
            for spectrogram in self.spectrograms:
                mel = spectrogram(both)  # (2B, n_mels, frames)
                log_prediction, log_target = mel.clamp_min(MEL_LOG_FLOOR).log().chunk(2)
                total = total + F.l1_loss(log_prediction, log_target)
        return total / len(self.spectrograms)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def _checked_mel_spectrogram(
    sample_rate: int, n_fft: int, hop_length: int, n_mels: int
) -> torchaudio.transforms.MelSpectrogram:
    """`mel_spectrogram` of one scale; raises if a mel filter covers no FFT bin."""
    with warnings.catch_warnings():
        # torchaudio warns about empty filters; we raise instead, below.
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero")
        transform = mel_spectrogram(sample_rate, n_fft, hop_length, n_mels)
    filters = transform.mel_scale.fb  # (n_fft // 2 + 1, n_mels)
    empty = (filters.amax(dim=0) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"expected mel bands that each cover an FFT bin, got {len(empty)} empty filter(s) "
            f"(first band {empty[0]}) with n_mels={n_mels}, n_fft={n_fft} at {sample_rate} Hz; "
            f"use fewer mel bands or a larger n_fft"
        )
    return transform
