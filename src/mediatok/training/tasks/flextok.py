"""`FlexTokTask`: trains the FlexTok tokenizer (`mediatok.codecs.image.flextok`) in the one loop.

The objective (FlexTok §3; rectified flow as in SD3): the decoder's velocity prediction against
ε − x₀ at a noised image x_t = t·ε + (1 − t)·x₀, t drawn logit-normal, MSE; the quantizer's own
losses; and, when the codec's config names a feature network, the REPA alignment term. Nested
dropout (every prefix of the registers must decode) and the register dropout that trains the
unconditional branch of guidance happen inside the codec's `forward`, in training mode. There is
no discriminator: the decoder is a generative model of the image given the tokens.

The noise, times and kept-token counts draw from the global torch RNG, which the loop seeds and
restores on resume, so a resumed run is exact.

Layout: batches `{"image": (B, 3, S, S) in [-1, 1], ...}` (`ImageFolder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mediatok.codecs import Codec
from mediatok.config import check_positive_int
from mediatok.data import write_image
from mediatok.eval.image import psnr
from mediatok.training.base import TrainConfig, is_main_process
from mediatok.training.tasks.codec import CodecTask, codec_logs, quantizer_terms
from mediatok.training.tasks.image_codec import (
    ImageDataConfig,
    training_images,
    validation_images,
)

__all__ = ["FlexTokLossConfig", "FlexTokRunConfig", "FlexTokTask"]


@dataclass
class FlexTokLossConfig:
    """Weights of the FlexTok objective, and how evaluations decode.

    Attributes:
        flow_weight: of the velocity MSE.
        quantizer_weight: of the quantizer's own losses.
        repa_weight: of the REPA alignment loss (used when the codec's config has `repa`).
        eval_steps: Euler steps of the decodes at each evaluation (fewer than `decode`'s 25
            default, to keep evaluations cheap).
        eval_tokens: the prefix lengths k each evaluation decodes (those above the codec's
            register count are left out).
    """

    flow_weight: float = 1.0
    quantizer_weight: float = 1.0
    repa_weight: float = 0.5
    eval_steps: int = 10
    eval_tokens: tuple[int, ...] = (1, 4, 16, 64, 256)

    def __post_init__(self) -> None:
        check_positive_int("eval_steps", self.eval_steps)
        self.eval_tokens = tuple(self.eval_tokens)
        if not self.eval_tokens or any(k < 1 for k in self.eval_tokens):
            raise ValueError(f"expected eval_tokens positive ints, got {list(self.eval_tokens)}")
        for name in ("flow_weight", "quantizer_weight", "repa_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0, got {getattr(self, name)}")


class FlexTokTask(CodecTask):
    """Trains a FlexTok tokenizer (registry name `codec`) with config overrides `model`."""

    modality = "image"
    run_task = "flextok"

    def build_model(self) -> Codec:
        codec = self.build_codec()
        if not codec.token_spec.geometry.get("prefix_decodable"):
            raise ValueError(
                f"task: flextok trains a FlexTok-style codec (a flow decoder over ordered "
                f"tokens), got {self.codec_name!r}; use task: image_codec"
            )
        self.image_size = codec.config.image_size
        return codec

    def dataset(self) -> Dataset:
        return training_images(self.data, self.image_size, self.seed)

    def losses(self, model: nn.Module, batch: dict, step: int):
        cfg = self.loss_config
        out = model(batch["image"])  # a FlowOutput
        flow = F.mse_loss(out.velocity.float(), out.target.float())
        terms = {"flow": cfg.flow_weight * flow}
        terms |= quantizer_terms(out.quantize, cfg.quantizer_weight)
        if out.repa_loss is not None:
            terms["repa"] = cfg.repa_weight * out.repa_loss
        logs = codec_logs(terms, out.quantize)
        logs["kept_tokens"] = out.lengths.float().mean().detach()
        return sum(terms.values()), logs

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str | Path) -> dict[str, float]:
        """Decode `val_images` center crops from their first k tokens, for each k of
        `loss.eval_tokens`: PSNR per k (`psnr_k4`, ...), codes used, and a grid PNG with one row
        per image (the original, then one column per k)."""
        device = next(model.parameters()).device
        images = validation_images(self.data, self.image_size).to(device)
        was_training = model.training
        model.eval()
        tokens = model.encode(images)
        count = tokens.codes.shape[1]
        ks = [k for k in self.loss_config.eval_tokens if k <= count] or [count]
        columns, metrics = [images], {"codes_used": torch.unique(tokens.codes).numel()}
        for k in ks:
            decoded = model.decode(tokens.codes[:, :k], steps=self.loss_config.eval_steps)
            decoded = decoded.float().clamp(-1, 1)
            metrics[f"psnr_k{k}"] = float(psnr(decoded, images).clamp(max=100).mean())
            columns.append(decoded)
        model.train(was_training)
        if is_main_process():
            rows = [torch.cat([column[i] for column in columns], dim=2) for i in range(len(images))]
            write_image(Path(out_dir) / f"prefixes-{step:07d}.png", torch.cat(rows, dim=1))
        return metrics


@dataclass
class FlexTokRunConfig:
    """Train a FlexTok tokenizer (`task: flextok`).

    Attributes:
        task: "flextok".
        codec: registry name ("flextok").
        model: the codec's config fields that differ from its defaults (checked by the codec).
        data: training images.
        loss: objective weights and evaluation decodes.
        train: the loop's settings.
    """

    task: Literal["flextok"] = "flextok"
    codec: str = "flextok"
    model: dict[str, Any] = field(default_factory=dict)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    loss: FlexTokLossConfig = field(default_factory=FlexTokLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
