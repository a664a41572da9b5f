"""`VideoCodecTask`: trains a registered video codec (the causal video tokenizer) in the one loop,
on clips and, jointly, on images as 1-frame videos.

The objective (MAGVIT-v2 §3 and the image task's one-stage recipe): pixel L1 (and/or L2) over
every real frame, an optional per-frame perceptual term, the quantizer's own losses, and after
`discriminator_start` steps a hinge adversarial term against a 3-D PatchGAN with LeCam
regularization. Every weight is in `VideoLossConfig`.

Joint image and video training: with `data.image_dir`, every `data.image_every`-th step adds the
reconstruction and quantizer terms of a batch of images, taken as 1-frame videos (a causal codec
encodes a video's first frame alone, so the same weights code both), times `loss.image_weight`.
Which images a step draws is a function of the step (and seed and rank) alone, so a resumed run
draws the same ones without saving a sampler state.

Initialisation from an image model ("inflation", MAGVIT-v2 §3.2): `init_from` names a
checkpoint of the same codec trained on images only (or 1-frame clips); its weights are loaded
with each temporal kernel's earlier taps zeroed (`inflate_from_image_checkpoint`), so training
starts from a model that codes every frame as the image model did.

Layout: batches `{"video": (B, 3, T, S, S) in [-1, 1], "length": (B,), ...}` of clips of
`data.frames` frames; images `(B, 3, 1, S, S)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mediatok.codecs import Codec
from mediatok.codecs.video import inflate_from_image_checkpoint
from mediatok.config import check_positive_int
from mediatok.data import ImageFolder, Repeated, VideoFolder, write_image
from mediatok.data.folder import item_seed
from mediatok.eval import frame_psnr, frame_ssim
from mediatok.modalities.video import frame_strip
from mediatok.training.base import TrainConfig, is_main_process
from mediatok.training.tasks.adversarial import LeCam, hinge_generator_loss, hinge_lecam_losses
from mediatok.training.tasks.codec import CodecTask, codec_logs, quantizer_terms
from mediatok.training.tasks.image_codec import ImageLossConfig
from mediatok.training.tasks.image_losses import PerceptualLoss, reconstruction_loss
from mediatok.training.tasks.video_losses import PatchDiscriminator3d, frame_perceptual_loss

__all__ = [
    "VideoCodecRunConfig",
    "VideoCodecTask",
    "VideoDataConfig",
    "VideoLossConfig",
]


@dataclass
class VideoDataConfig:
    """Where training clips (and images) come from.

    Attributes:
        train_dir: a folder of videos (any container PyAV reads), searched recursively.
        frames: frames per training clip (1 + 4k fits a 4× temporal compression exactly).
        fps: resample the clips to this frame rate; None: the codec's `fps` (its token geometry
            records it).
        crop: "random" windows and crops (new ones each time a video comes up),
            "random_resized" (also a random scale and flip) or "center".
        repeat: each video appears this many times per epoch (tiny folders, like the demo's).
        on_error: "skip" unreadable files (logged) or "stop" at the first.
        image_dir: images for joint training as 1-frame videos; None: clips only.
        image_every: with `image_dir`, an image batch every this many steps.
        val_dir: videos for `evaluate` (default: train_dir; their first `frames` frames).
        val_videos: how many of them.
    """

    train_dir: str = "bench-data/video-128"
    frames: int = 17
    fps: float | None = None
    crop: Literal["random", "random_resized", "center"] = "random"
    repeat: int = 1
    on_error: Literal["skip", "stop"] = "skip"
    image_dir: str | None = None
    image_every: int = 4
    val_dir: str | None = None
    val_videos: int = 4

    def __post_init__(self) -> None:
        for name in ("frames", "repeat", "image_every", "val_videos"):
            check_positive_int(name, getattr(self, name))
        if self.fps is not None and not 0 < self.fps < float("inf"):
            raise ValueError(f"expected fps finite and > 0 (or None), got {self.fps}")


@dataclass
class VideoLossConfig(ImageLossConfig):
    """Weights of the video codec objective (0 turns a term off): the image task's, applied to
    every frame (the perceptual term frame by frame, the discriminator a 3-D PatchGAN), and
    `image_weight`, of the image batches' terms in joint training."""

    image_weight: float = 1.0


class VideoCodecTask(CodecTask):
    """Trains video codec `codec` (a registry name) with config overrides `model`; optionally
    initialised from an image checkpoint (`init_from`, see the module docstring)."""

    modality = "video"
    run_task = "video_codec"

    def __init__(
        self,
        codec: str,
        model: dict[str, Any],
        data: VideoDataConfig,
        loss: VideoLossConfig,
        seed: int = 0,
        init_from: str | None = None,
    ):
        super().__init__(codec, model, data, loss, seed)
        self.init_from = init_from
        self.perceptual: PerceptualLoss | None = None
        self.images: ImageFolder | None = None

    @classmethod
    def from_run(cls, config: VideoCodecRunConfig) -> VideoCodecTask:
        return cls(
            config.codec,
            config.model,
            config.data,
            config.loss,
            config.train.seed,
            config.init_from,
        )

    def build_model(self) -> Codec:
        codec = self.build_codec()
        if self.init_from is not None:
            inflate_from_image_checkpoint(codec, self.init_from)
        self.image_size = codec.config.image_size
        self.fps = self.data.fps or codec.token_spec.geometry["fps"]
        if self.loss_config.perceptual_weight:
            self.perceptual = PerceptualLoss(self.loss_config.perceptual_weights)
        if self.data.image_dir is not None:
            self.images = ImageFolder(
                self.data.image_dir, self.image_size, crop="random", seed=self.seed
            )
        return codec

    def dataset(self) -> Dataset:
        folder = VideoFolder(
            self.data.train_dir,
            self.image_size,
            self.data.frames,
            fps=self.fps,
            crop=self.data.crop,
            on_error=self.data.on_error,
            seed=self.seed,
        )
        return Repeated(folder, self.data.repeat) if self.data.repeat > 1 else folder

    def build_discriminator(self) -> nn.Module | None:
        cfg = self.loss_config
        if not cfg.adversarial_weight:
            return None
        self.discriminator = PatchDiscriminator3d(
            cfg.discriminator_channels, cfg.discriminator_layers
        )
        self.discriminator.lecam = LeCam()  # its averages travel with checkpoints and DDP
        return self.discriminator

    def losses(self, model: nn.Module, batch: dict, step: int):
        cfg = self.loss_config
        videos = batch["video"]  # (B, 3, T, S, S)
        out = model(videos)
        reconstruction = out.reconstruction.float()
        # Frames past a short clip's length repeat its last frame: not trained on.
        real = torch.arange(videos.shape[2], device=videos.device) < batch["length"][:, None]
        mask = real[:, None, :, None, None].float()  # (B, 1, T, 1, 1)
        terms = reconstruction_loss(
            reconstruction * mask, videos * mask, cfg.l1_weight, cfg.l2_weight
        )
        if self.perceptual is not None:
            self.perceptual.to(videos.device)
            perceptual = frame_perceptual_loss(self.perceptual, reconstruction, videos)
            terms["perceptual"] = cfg.perceptual_weight * perceptual
        terms |= quantizer_terms(out.quantize, cfg.quantizer_weight)
        logs = codec_logs(terms, out.quantize)
        if self.images is not None and step % self.data.image_every == 0:
            images = self._image_batch(step, len(videos)).to(videos.device)  # (B, 3, 1, S, S)
            image_out = model(images)
            image_terms = reconstruction_loss(
                image_out.reconstruction.float(), images, cfg.l1_weight, cfg.l2_weight
            )
            image_terms |= quantizer_terms(image_out.quantize, cfg.quantizer_weight)
            image_terms = {f"image_{k}": cfg.image_weight * v for k, v in image_terms.items()}
            terms |= image_terms
            logs |= {name: value.detach() for name, value in image_terms.items()}
        if self.adversarial_on(step):
            # The loop freezes the discriminator during this pass: the gradient reaches the
            # codec only.
            terms["adversarial"] = cfg.adversarial_weight * hinge_generator_loss(
                self.discriminator(reconstruction)
            )
            logs["adversarial"] = terms["adversarial"].detach()
        self._last = (videos, reconstruction.detach())
        return sum(terms.values()), logs

    def _image_batch(self, step: int, count: int) -> torch.Tensor:
        """The images of step `step`: `count` drawn by a generator seeded from (seed, step,
        rank), with that draw's crops; `(count, 3, 1, S, S)`. A function of the step, so that
        a resumed run draws what an uninterrupted one would (the crops draw from the folder's
        per-item generators, never from the global RNG)."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        generator = torch.Generator().manual_seed(item_seed(self.seed, step, rank))
        picks = torch.randint(len(self.images), (count,), generator=generator).tolist()
        self.images.set_epoch(step)
        images = [self.images[index]["image"] for index in picks]  # (3, S, S) each
        return torch.stack(images)[:, :, None]  # (count, 3, 1, S, S)

    def discriminator_losses(
        self, model: nn.Module, discriminator: nn.Module, batch: dict, step: int
    ):
        if not self.adversarial_on(step) or self._last is None:
            return None
        real, fake = self._last
        lecam, weight = self.discriminator.lecam, self.loss_config.lecam_weight
        return hinge_lecam_losses(discriminator, lecam, real, fake, weight)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str | Path) -> dict[str, float]:
        """Reconstruct the first `frames` frames of `val_videos` videos (center crops): per-frame
        PSNR and SSIM, codes used, and a PNG of frame strips (original above reconstruction)."""
        device = next(model.parameters()).device
        folder = VideoFolder(
            self.data.val_dir or self.data.train_dir,
            self.image_size,
            self.data.frames,
            fps=self.fps,
            crop="center",
            window="start",
        )
        items = [folder[i] for i in range(min(self.data.val_videos, len(folder)))]
        videos = torch.stack([item["video"] for item in items]).to(device)
        lengths = torch.tensor([item["length"] for item in items], device=device)
        was_training = model.training
        model.eval()
        tokens = model.encode(videos, lengths=lengths)
        reconstruction = model.decode(tokens)[:, :, : videos.shape[2]].float().clamp(-1, 1)
        model.train(was_training)
        metrics = {
            "psnr": float(
                frame_psnr(reconstruction, videos, lengths=lengths).clamp(max=100).mean()
            ),
            "ssim": float(frame_ssim(reconstruction, videos, lengths=lengths).mean()),
            "codes_used": torch.unique(tokens.codes).numel(),
        }
        if is_main_process():
            rows = [
                strip
                for original, rebuilt in zip(videos.cpu(), reconstruction.cpu(), strict=True)
                for strip in (frame_strip(original), frame_strip(rebuilt))
            ]
            write_image(Path(out_dir) / f"reconstructions-{step:07d}.png", torch.cat(rows, dim=1))
        return metrics


@dataclass
class VideoCodecRunConfig:
    """Train a video codec (`task: video_codec`).

    Attributes:
        task: "video_codec".
        codec: registry name ("causal_video").
        model: the codec's config fields that differ from its defaults (checked by the codec).
        data: training clips (and images).
        loss: objective weights.
        init_from: a checkpoint of the same codec trained on images, to inflate from; None.
        train: the loop's settings.
    """

    task: Literal["video_codec"] = "video_codec"
    codec: str = "causal_video"
    model: dict[str, Any] = field(default_factory=dict)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    loss: VideoLossConfig = field(default_factory=VideoLossConfig)
    init_from: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
