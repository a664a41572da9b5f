"""What the codec tasks share: the codec they train (built by registry name and checked against
the task's modality), the quantizer's terms in the objective, the logged codebook statistics,
and when the adversarial terms start.

Layer 5.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mediatok.codecs import Codec, build_codec
from mediatok.quantize import QuantizeOutput
from mediatok.training.base import Task

__all__ = ["CodecTask", "codec_logs", "quantizer_terms"]


class CodecTask(Task):
    """Base of the tasks that train a registered codec `codec` with config overrides `model`.

    Subclasses set `modality` (the codecs they train) and `run_task` (their `task:` name), and
    fill in the `Task` hooks; `build_codec` builds and checks the model.

    Attributes:
        discriminator: what `build_discriminator` returned, or None.
    """

    kind = "codec"  # `mediatok.load` reads checkpoints of this kind, whatever the modality
    modality: ClassVar[str]
    run_task: ClassVar[str]

    def __init__(
        self, codec: str, model: dict[str, Any], data: Any, loss: Any, seed: int = 0
    ) -> None:
        self.codec_name, self.model_config = codec, model
        self.data, self.loss_config, self.seed = data, loss, seed
        self.discriminator: nn.Module | None = None
        # The last generator pass's (real, detached reconstruction), for the discriminator pass.
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_run(cls, config: Any) -> CodecTask:
        """The task a resolved run config (`ImageCodecRunConfig`, ...) describes."""
        return cls(config.codec, config.model, config.data, config.loss, seed=config.train.seed)

    def build_codec(self) -> Codec:
        """The codec, fresh, after checking it codes this task's modality."""
        codec = build_codec(self.codec_name, self.model_config)
        if codec.modality != self.modality:
            raise ValueError(
                f"task: {self.run_task} trains {self.modality} codecs; {self.codec_name!r} "
                f"codes {codec.modality} (use task: {codec.modality}_codec)"
            )
        return codec

    def adversarial_on(self, step: int) -> bool:
        """Whether the adversarial terms (and the discriminator's step) run at `step`."""
        return self.discriminator is not None and step >= self.loss_config.discriminator_start


def quantizer_terms(quantize: QuantizeOutput, weight: float) -> dict[str, torch.Tensor]:
    """The quantizer's own losses as codec loss terms: `quantizer_<name>`, times `weight`."""
    return {f"quantizer_{name}": weight * value for name, value in quantize.losses.items()}


def codec_logs(terms: dict[str, torch.Tensor], quantize: QuantizeOutput) -> dict[str, torch.Tensor]:
    """What a codec task logs per step: every loss term, detached, and codebook usage and
    perplexity (tensors: read only at log steps, so no host sync)."""
    logs = {name: value.detach() for name, value in terms.items()}
    return logs | {
        f"codebook_{name}": value
        for name, value in quantize.metrics.items()
        if name in ("usage", "perplexity")
    }
