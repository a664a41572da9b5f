"""Exponential moving average of model weights.

``shadow ← decay · shadow + (1 − decay) · weight`` after every optimizer step, kept in fp32 in
a full copy of the model so that evaluation and sampling run the averaged weights as an ordinary
module. Buffers are copied, not averaged: they hold state the model updates itself (EMA
codebooks, usage counters, BatchNorm statistics), and averaging them would mix codebooks.

Layer 5.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """fp32 shadow weights of ``model``.

    Args:
        model: the raw (unwrapped) module being trained; the EMA keeps references to its
            parameters and buffers, so wrap it for DDP or compile afterwards, not before.
        decay: in ``[0, 1)``; 0.999 averages over roughly the last 1000 steps.

    Attributes:
        module: the shadow model, in eval mode and without gradients.
        decay: the decay.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"expected an EMA decay in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        for param in self.module.parameters():
            if param.is_floating_point():
                # bf16 weights would round each small (1 - decay) increment away.
                param.data = param.data.float()
        mine = dict(self.module.named_parameters())
        pairs = [(mine[name], p) for name, p in model.named_parameters() if p.is_floating_point()]
        self._shadow = [shadow for shadow, _ in pairs]
        self._params = [param for _, param in pairs]
        source_buffers = dict(model.named_buffers())
        self._buffers = [(b, source_buffers[name]) for name, b in self.module.named_buffers()]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the shadow; call after each optimizer step."""
        if self._shadow:
            params = [p.detach().float() for p in self._params]
            # lerp(shadow, w, 1 - decay) = decay · shadow + (1 - decay) · w, one fused launch.
            torch._foreach_lerp_(self._shadow, params, 1.0 - self.decay)
        for mine, source in self._buffers:
            mine.copy_(source)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow model's state dict (same keys as the model's)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the shadow from :meth:`state_dict` (or from ``ema.safetensors``)."""
        self.module.load_state_dict(state, strict=True)
