"""Precision helpers shared by the models, quantizers and losses."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_off"]


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast disabled, entering the (costly) autocast context only when autocast is on."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
