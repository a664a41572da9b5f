"""`AudioCodecTask`: trains any registered audio codec (WavTokenizer-style) in the one loop.

The objective (Vocos §3 / WavTokenizer §3.3, HiFi-GAN §2): multi-scale log-mel L1, the
quantizer's own losses, and after `discriminator_start` steps a hinge adversarial term and
feature matching against multi-period and multi-resolution discriminators (and DAC's multi-band
one where `loss.discriminator.band_windows` turns it on). Every weight is in `AudioLossConfig`.
The adversarial, feature-matching and discriminator terms are also logged per family
(`adversarial_period`, `feature_matching_band`, `discriminator_hinge_resolution`, ...).

Layout: batches `{"audio": (B, 1, S), ...}` of fixed-length crops at the codec's sample rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mediatok.codecs import Codec
from mediatok.data import (
    AudioFolder,
    Repeated,
    list_audio,
    loudness_normalize,
    read_audio,
    write_audio,
)
from mediatok.eval.audio import reconstruction_scores
from mediatok.training.base import TrainConfig, is_main_process
from mediatok.training.tasks.audio_discriminators import (
    AudioDiscriminator,
    AudioDiscriminatorConfig,
    DiscriminatorOutput,
)
from mediatok.training.tasks.audio_losses import (
    MultiScaleMelLoss,
    feature_matching_loss_by_family,
    hinge_discriminator_loss_by_family,
    hinge_generator_loss_by_family,
)
from mediatok.training.tasks.codec import CodecTask, codec_logs, quantizer_terms


@dataclass
class AudioDataConfig:
    """Where training audio comes from.

    Attributes:
        train_dir: a folder of audio files (WAV, FLAC, OGG, ...), searched recursively.
        segment_seconds: length of each training crop (shorter files are zero-padded).
        crop: "random" crops (a new one each time a file comes up) or from the "start".
        normalize_db: loudness-normalize each file to this RMS level (dBFS); None keeps levels.
        repeat: each file appears this many times per epoch (tiny folders, like the demo's).
        on_error: "skip" unreadable files (logged) or "stop" at the first.
        val_dir: files for `evaluate` (default: train_dir).
        val_files: how many of them (the first, sorted by path).
        val_seconds: evaluate at most this much of each file (from its start).
    """

    train_dir: str = "assets/speech"
    segment_seconds: float = 3.0
    crop: Literal["random", "start"] = "random"
    normalize_db: float | None = -20.0
    repeat: int = 1
    on_error: Literal["skip", "stop"] = "skip"
    val_dir: str | None = None
    val_files: int = 8
    val_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.segment_seconds > 0 or not self.val_seconds > 0:
            raise ValueError(
                f"expected segment_seconds and val_seconds > 0, got {self.segment_seconds} "
                f"and {self.val_seconds}"
            )
        if self.repeat < 1 or self.val_files < 1:
            raise ValueError(
                f"expected repeat and val_files >= 1, got {self.repeat} and {self.val_files}"
            )


@dataclass
class AudioLossConfig:
    """Weights of the audio codec objective (0 turns a term off).

    The defaults are Vocos' and WavTokenizer's: mel 45, adversarial and feature matching 1.
    """

    mel_weight: float = 45.0
    quantizer_weight: float = 1.0
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 1.0
    discriminator_start: int = 0
    discriminator: AudioDiscriminatorConfig = field(default_factory=AudioDiscriminatorConfig)

    def __post_init__(self) -> None:
        for name in ("mel_weight", "quantizer_weight", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0, got {getattr(self, name)}")
        if self.feature_matching_weight < 0 or self.discriminator_start < 0:
            raise ValueError("expected feature_matching_weight and discriminator_start >= 0")


class AudioCodecTask(CodecTask):
    """Trains audio codec `codec` (a registry name) with config overrides `model`."""

    modality = "audio"
    run_task = "audio_codec"

    def __init__(
        self,
        codec: str,
        model: dict[str, Any],
        data: AudioDataConfig,
        loss: AudioLossConfig,
        seed: int = 0,
    ):
        super().__init__(codec, model, data, loss, seed)
        self.mel_loss: MultiScaleMelLoss | None = None

    def build_model(self) -> Codec:
        codec = self.build_codec()
        self.sample_rate = codec.config.sample_rate
        self.mel_loss = MultiScaleMelLoss(self.sample_rate)
        return codec

    def dataset(self) -> Dataset:
        folder = AudioFolder(
            self.data.train_dir,
            self.sample_rate,
            segment_seconds=self.data.segment_seconds,
            crop=self.data.crop,
            on_error=self.data.on_error,
            normalize_db=self.data.normalize_db,
            seed=self.seed,
        )
        return Repeated(folder, self.data.repeat) if self.data.repeat > 1 else folder

    def build_discriminator(self) -> nn.Module | None:
        cfg = self.loss_config
        if not (cfg.adversarial_weight or cfg.feature_matching_weight):
            return None
        self.discriminator = AudioDiscriminator(cfg.discriminator)
        return self.discriminator

    def losses(self, model: nn.Module, batch: dict, step: int):
        cfg = self.loss_config
        audio = batch["audio"]  # (B, 1, S)
        out = model(audio)
        reconstruction = out.reconstruction.float()
        self.mel_loss.to(audio.device)
        terms = {"mel": cfg.mel_weight * self.mel_loss(reconstruction, audio)}
        terms |= quantizer_terms(out.quantize, cfg.quantizer_weight)
        family_logs: dict[str, torch.Tensor] = {}
        if self.adversarial_on(step):
            # The loop freezes the discriminator during this pass: gradients reach the codec only.
            fake = self.discriminator(reconstruction)
            if cfg.adversarial_weight:
                families = _per_family(hinge_generator_loss_by_family, fake)
                terms["adversarial"] = cfg.adversarial_weight * sum(families.values())
                family_logs |= {
                    f"adversarial_{kind}": cfg.adversarial_weight * loss.detach()
                    for kind, loss in families.items()
                }
            if cfg.feature_matching_weight:
                with torch.no_grad():
                    real = self.discriminator(audio)
                families = _per_family(feature_matching_loss_by_family, real, fake)
                terms["feature_matching"] = cfg.feature_matching_weight * sum(families.values())
                family_logs |= {
                    f"feature_matching_{kind}": cfg.feature_matching_weight * loss.detach()
                    for kind, loss in families.items()
                }
        self._last = (audio, reconstruction.detach())
        return sum(terms.values()), codec_logs(terms, out.quantize) | family_logs

    def discriminator_losses(
        self, model: nn.Module, discriminator: nn.Module, batch: dict, step: int
    ):
        if not self.adversarial_on(step) or self._last is None:
            return None
        real, fake = self._last
        families = _per_family(
            hinge_discriminator_loss_by_family, discriminator(real), discriminator(fake)
        )
        loss = sum(families.values())
        logs = {f"discriminator_hinge_{kind}": value.detach() for kind, value in families.items()}
        return loss, {"discriminator_hinge": loss.detach()} | logs

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str | Path) -> dict[str, float]:
        """Reconstruct the validation files: mel and STFT distances, SI-SDR, codes used; the
        first two files' reconstructions are written as WAVs beside their originals."""
        device = next(model.parameters()).device
        clips = validation_audio(self.data, self.sample_rate)
        was_training = model.training
        model.eval()
        scores: list[dict[str, float]] = []
        used: set[int] = set()
        for index, (key, audio) in enumerate(clips):
            audio = audio.to(device)[None]  # (1, 1, S)
            tokens = model.encode(audio)
            reconstruction = model.decode(tokens).float()[..., : audio.shape[-1]]
            used.update(tokens.codes.unique().tolist())
            scores.append(reconstruction_scores(reconstruction, audio, self.sample_rate))
            if index < 2 and is_main_process():
                folder = Path(out_dir) / f"samples-{step:07d}"
                stem = Path(key).with_suffix("").as_posix().replace("/", "_")
                write_audio(folder / f"{stem}-original.wav", audio[0].cpu(), self.sample_rate)
                write_audio(
                    folder / f"{stem}-reconstruction.wav",
                    reconstruction[0].clamp(-1, 1).cpu(),
                    self.sample_rate,
                )
        model.train(was_training)
        metrics = {name: sum(clip[name] for clip in scores) / len(scores) for name in scores[0]}
        return metrics | {"codes_used": len(used)}


def _per_family(
    loss: Callable[..., torch.Tensor], *outputs: list[DiscriminatorOutput]
) -> dict[str, torch.Tensor]:
    """`loss` over the outputs of each discriminator family alone, by kind. The `audio_losses`
    losses sum their family means, so these add up to `loss(*outputs)`, and can be logged."""
    kinds = dict.fromkeys(output.kind for output in outputs[0])  # in the order they came
    return {
        kind: loss(*([output for output in group if output.kind == kind] for group in outputs))
        for kind in kinds
    }


@dataclass
class AudioCodecRunConfig:
    """Train an audio codec (`task: audio_codec`).

    Attributes:
        task: "audio_codec".
        codec: registry name ("wavtokenizer").
        model: the codec's config fields that differ from its defaults (checked by the codec).
        data: training audio.
        loss: objective weights and the discriminators.
        train: the loop's settings.
    """

    task: Literal["audio_codec"] = "audio_codec"
    codec: str = "wavtokenizer"
    model: dict[str, Any] = field(default_factory=dict)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    loss: AudioLossConfig = field(default_factory=AudioLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def validation_audio(data: AudioDataConfig, sample_rate: int) -> list[tuple[str, torch.Tensor]]:
    """The first `val_files` files of `val_dir` (or `train_dir`): `(key, (1, S))` pairs, mono at
    `sample_rate`, at most `val_seconds` long, loudness-normalized as in training."""
    root = Path(data.val_dir or data.train_dir)
    clips = []
    for path in list_audio(root)[: data.val_files]:
        audio, _ = read_audio(path, sample_rate)
        audio = audio[:, : round(data.val_seconds * sample_rate)]
        if data.normalize_db is not None:
            audio = loudness_normalize(audio, data.normalize_db)
        clips.append((path.relative_to(root).as_posix(), audio))
    return clips
