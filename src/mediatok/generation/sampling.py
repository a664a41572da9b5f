"""Sampling helpers shared by the autoregressive and masked generators.

Order of operations in `sample`: divide by the temperature, keep the top-k logits, keep the
nucleus (top-p) of what is left, renormalize, draw. Logits already set to -inf (ids that are
invalid at a position) stay impossible through every step.

Classifier-free guidance (Ho & Salimans 2022): `cfg_logits` returns
`uncond + scale · (cond − uncond)`; scale 1 is plain conditional sampling. `cfg_scale_at` gives
the scale at one step of a schedule: `"constant"` uses `scale` at every step, `"linear"` ramps
from 1 at the first step to `scale` at the last, `1 + (scale − 1) · step / (total − 1)`, so that
guidance is weak while the first tokens are decided and full at the end.

Layout: logits `(..., V)`, samples `(...)` int64.
"""

from __future__ import annotations

import torch

from mediatok.config import check_choice

__all__ = ["CFG_SCHEDULES", "cfg_logits", "cfg_scale_at", "filter_logits", "sample"]

CFG_SCHEDULES = ("constant", "linear")


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Set every logit outside the top-k, then outside the nucleus, to -inf.

    Args:
        logits: `(..., V)`.
        top_k: keep the k largest logits (ties with the k-th are kept too); None or >= V keeps
            all.
        top_p: then keep the smallest set of largest-probability ids whose probability (after
            top-k, renormalized) reaches `top_p`; None or 1 keeps all. The most likely id is
            always kept.

    Returns:
        `(..., V)`, a new tensor (the input is not modified).

    Raises:
        ValueError: top_k < 1 or top_p outside (0, 1].
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"expected top_k >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"expected top_p in (0, 1] or None, got {top_p}")
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V) each
        probabilities = sorted_logits.float().softmax(dim=-1)
        # Mass of the ids strictly more likely than each one: keep an id while that is < top_p,
        # so the kept set is the smallest one reaching top_p and never empty.
        before = probabilities.cumsum(dim=-1) - probabilities
        remove = (before >= top_p).scatter(-1, order, before >= top_p)  # back to id order
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one id per row.

    Args:
        logits: `(..., V)`; at least one finite logit per row.
        temperature: > 0 divides the logits; 0 takes the argmax (greedy, ignores top-k/top-p
            and the generator).
        top_k, top_p: see `filter_logits`.
        generator: the random source (on the logits' device); None uses the global one. The same
            generator state gives the same samples.

    Returns:
        `(...)` int64 ids.

    Raises:
        ValueError: a negative temperature, or a bad top_k / top_p.
    """
    if temperature < 0:
        raise ValueError(f"expected temperature >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probabilities = logits.softmax(dim=-1).reshape(-1, logits.shape[-1])  # (rows, V)
    # multinomial never draws a zero-probability id, so -inf logits stay impossible.
    ids = torch.multinomial(probabilities, 1, generator=generator)  # (rows, 1)
    return ids.reshape(logits.shape[:-1])


def cfg_scale_at(step: int, total: int, scale: float, schedule: str = "constant") -> float:
    """The guidance scale at one step of a schedule.

    Args:
        step: 0-based step, in `[0, total)`.
        total: number of steps.
        scale: the guidance scale (the final one for `"linear"`).
        schedule: `"constant"` (scale at every step) or `"linear"`
            (`1 + (scale − 1) · step / (total − 1)`, `scale` when total is 1).

    Returns:
        The scale for that step.

    Raises:
        ValueError: unknown schedule, or step outside `[0, total)`.
    """
    check_choice("cfg_schedule", schedule, CFG_SCHEDULES)
    if not 0 <= step < total:
        raise ValueError(f"expected step in [0, {total}), got {step}")
    if schedule == "constant" or total == 1:
        return float(scale)
    return 1.0 + (scale - 1.0) * step / (total - 1)


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: `uncond + scale · (cond − uncond)`.

    Args:
        cond: `(..., V)` logits given the condition.
        uncond: `(..., V)` logits given the null condition.
        scale: guidance scale; exactly 1 returns `cond` unchanged.

    Returns:
        `(..., V)`; -inf wherever either input is -inf (an id masked out in either stays out,
        rather than becoming NaN from `-inf − -inf`).
    """
    if cond.shape != uncond.shape:
        raise ValueError(
            f"expected cond and uncond of the same shape, got {tuple(cond.shape)} and "
            f"{tuple(uncond.shape)}"
        )
    if scale == 1.0:
        return cond
    guided = uncond + scale * (cond - uncond)
    return guided.masked_fill(torch.isneginf(cond) | torch.isneginf(uncond), float("-inf"))
