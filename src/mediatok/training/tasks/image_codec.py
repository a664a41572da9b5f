"""`ImageCodecTask`: trains any registered image codec (TiTok, VQGAN) in the one loop.

The objective (VQGAN §3.2, with TiTok's one-stage recipe): pixel L1 (and/or L2), an optional
perceptual term, the quantizer's own losses, and after `discriminator_start` steps a hinge
adversarial term against a PatchGAN with LeCam regularization. Every weight is in
`ImageLossConfig`; the adversarial weight is a fixed number (no adaptive VQGAN weight, which
needs the last decoder layer's gradient norm and an extra backward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mediatok.codecs import Codec
from mediatok.config import check_positive_int
from mediatok.data import (
    ImageFolder,
    Repeated,
    list_images,
    read_center_crops,
    side_by_side,
    write_image,
)
from mediatok.eval.image import psnr, ssim
from mediatok.training.base import TrainConfig, is_main_process
from mediatok.training.tasks.adversarial import LeCam, hinge_generator_loss, hinge_lecam_losses
from mediatok.training.tasks.codec import CodecTask, codec_logs, quantizer_terms
from mediatok.training.tasks.image_losses import (
    PatchDiscriminator,
    PerceptualLoss,
    reconstruction_loss,
)


@dataclass
class ImageDataConfig:
    """Where training images come from.

    Attributes:
        train_dir: a folder of images, searched recursively.
        crop: "random" crops for training (a new crop each time an image comes up),
            "random_resized" (also a random scale and a left-right flip: for small or square
            collections, whose random crops barely vary), or "center".
        repeat: each image appears this many times per epoch (tiny folders, like the demo's).
        on_error: "skip" unreadable files (logged) or "stop" at the first.
        val_dir: images for `evaluate` (default: train_dir, center crops).
        val_images: how many of them.
    """

    train_dir: str = "assets/images"
    crop: Literal["random", "random_resized", "center"] = "random"
    repeat: int = 1
    on_error: Literal["skip", "stop"] = "skip"
    val_dir: str | None = None
    val_images: int = 16

    def __post_init__(self) -> None:
        # val_images 0 would fail only at the first evaluation, after eval_every steps.
        check_positive_int("repeat", self.repeat)
        check_positive_int("val_images", self.val_images)


@dataclass
class ImageLossConfig:
    """Weights of the image codec objective (0 turns a term off)."""

    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None  # path of a torchvision vgg16 state dict
    quantizer_weight: float = 1.0
    adversarial_weight: float = 0.0
    discriminator_start: int = 0
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    lecam_weight: float = 0.001

    def __post_init__(self) -> None:
        if self.discriminator_start < 0:
            raise ValueError(f"expected discriminator_start >= 0, got {self.discriminator_start}")
        if self.perceptual_weight and not self.perceptual_weights:
            raise ValueError(
                "perceptual_weight > 0 needs perceptual_weights: the path of VGG16 weights "
                "(none can be downloaded here)"
            )


class ImageCodecTask(CodecTask):
    """Trains image codec `codec` (a registry name) with config overrides `model`."""

    modality = "image"
    run_task = "image_codec"

    def __init__(
        self,
        codec: str,
        model: dict[str, Any],
        data: ImageDataConfig,
        loss: ImageLossConfig,
        seed: int = 0,
    ):
        super().__init__(codec, model, data, loss, seed)
        self.perceptual: PerceptualLoss | None = None

    def build_model(self) -> Codec:
        codec = self.build_codec()
        self.image_size = codec.config.image_size
        if self.loss_config.perceptual_weight:
            self.perceptual = PerceptualLoss(self.loss_config.perceptual_weights)
        return codec

    def dataset(self) -> Dataset:
        return training_images(self.data, self.image_size, self.seed)

    def build_discriminator(self) -> nn.Module | None:
        if not self.loss_config.adversarial_weight:
            return None
        self.discriminator = PatchDiscriminator(
            self.loss_config.discriminator_channels, self.loss_config.discriminator_layers
        )
        # LeCam's running averages live in the discriminator, so checkpoints and DDP carry them.
        self.discriminator.lecam = LeCam()
        return self.discriminator

    def losses(self, model: nn.Module, batch: dict, step: int):
        cfg = self.loss_config
        images = batch["image"]
        out = model(images)
        reconstruction = out.reconstruction.float()
        terms = reconstruction_loss(reconstruction, images, cfg.l1_weight, cfg.l2_weight)
        if self.perceptual is not None:
            self.perceptual.to(images.device)
            terms["perceptual"] = cfg.perceptual_weight * self.perceptual(reconstruction, images)
        terms |= quantizer_terms(out.quantize, cfg.quantizer_weight)
        if self.adversarial_on(step):
            # The loop freezes the discriminator during this pass: the gradient reaches the
            # generator only.
            terms["adversarial"] = cfg.adversarial_weight * hinge_generator_loss(
                self.discriminator(reconstruction)
            )
        self._last = (images, reconstruction.detach())
        return sum(terms.values()), codec_logs(terms, out.quantize)

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
        """Reconstruct `val_images` center crops: PSNR, SSIM, codebook usage, and a grid PNG."""
        device = next(model.parameters()).device
        images = validation_images(self.data, self.image_size).to(device)
        was_training = model.training
        model.eval()
        tokens = model.encode(images)
        reconstruction = model.decode(tokens).float().clamp(-1, 1)
        model.train(was_training)
        hit = torch.unique(tokens.codes).numel()
        metrics = {
            "psnr": float(psnr(reconstruction, images).mean()),
            "ssim": float(ssim(reconstruction, images).mean()),
            "codes_used": hit,
        }
        if is_main_process():
            grid = side_by_side(images, reconstruction)
            write_image(Path(out_dir) / f"reconstructions-{step:07d}.png", grid)
        return metrics


@dataclass
class ImageCodecRunConfig:
    """Train an image codec (`task: image_codec`).

    Attributes:
        task: "image_codec".
        codec: registry name ("titok", "vqgan").
        model: the codec's config fields that differ from its defaults (checked by the codec).
        data: training images.
        loss: objective weights.
        train: the loop's settings (steps, batch size, optimizer, precision, checkpoints).
    """

    task: Literal["image_codec"] = "image_codec"
    codec: str = "titok"
    model: dict[str, Any] = field(default_factory=dict)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def training_images(data: ImageDataConfig, size: int, seed: int) -> Dataset:
    """The images of `train_dir` as `size`-pixel crops, each `repeat` times per epoch."""
    folder = ImageFolder(data.train_dir, size, crop=data.crop, on_error=data.on_error, seed=seed)
    return Repeated(folder, data.repeat) if data.repeat > 1 else folder


def validation_images(data: ImageDataConfig, size: int) -> torch.Tensor:
    """The first `val_images` images of `val_dir` (or `train_dir`), center-cropped: `(B, 3, S, S)`."""
    paths = list_images(data.val_dir or data.train_dir)[: data.val_images]
    return read_center_crops(paths, size)
