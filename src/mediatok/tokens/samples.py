"""Checking one sample's codes before it is written, and converting it to the stored form.

A writer accepts numpy arrays and torch tensors of any integer dtype in the spec's layout, and
refuses anything a reader could not trust later: floats, the wrong number of axes or levels,
negative codes, or codes at or above their level's vocabulary size.
"""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from mediatok.tokens.spec import TokenSpec

__all__ = [
    "Sample",
    "check_codes",
    "check_label",
    "check_media_length",
    "check_media_rate",
    "check_source_stats",
    "to_numpy",
    "trim",
]


@dataclass
class Sample:
    """One checked sample waiting to be flushed into a shard."""

    codes: np.ndarray  # (n,) in the spec's code dtype, flattened in layout (C) order
    shape: tuple[int, ...]  # the token shape, e.g. (Q, T)
    label: int | None
    key: str
    media_length: int | None = None  # the source's length in samples/frames, or None
    media_rate: float | None = None  # the source's frames per second (video), or None
    source_stats: tuple[int, int] | None = None  # (size, mtime_ns) of the source file, or None
    replaces: str | None = None  # the shard file whose sample of this key this one replaces


def to_numpy(array: Any) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a nested sequence."""
    # Look torch up only if the caller already imported it: a tensor cannot exist otherwise,
    # and writing tokens from numpy should not pay for importing torch.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def check_codes(codes: Any, spec: TokenSpec) -> tuple[np.ndarray, tuple[int, ...]]:
    """Check one sample's codes against `spec` and flatten them.

    Args:
        codes: integer array or tensor of `spec.ndim` axes in layout order, e.g. `(Q, T)`.
        spec: the writer's spec.

    Returns:
        (`(n,)` copy in `spec.code_dtype`, C order; the sample's shape).

    Raises:
        ValueError: float codes, a wrong number of axes or levels, or codes outside
            `[0, vocab size)` of their level, saying what was expected and what came.
    """
    codes = to_numpy(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"expected integer codes, got dtype {codes.dtype}")
    if codes.ndim != spec.ndim:
        raise ValueError(
            f"expected codes with {spec.ndim} axes ({spec.layout!r}), got shape {codes.shape}"
        )
    level_axis = spec.level_axis
    if level_axis is not None and codes.shape[level_axis] != spec.num_levels:
        raise ValueError(
            f"expected {spec.num_levels} levels on the Q axis of {spec.layout!r}, "
            f"got shape {codes.shape}"
        )
    if codes.size:
        _check_range(codes, spec)
    return codes.astype(spec.code_dtype, order="C").reshape(-1), tuple(codes.shape)


def check_label(label: Any, what: str = "label") -> int | None:
    """A label (or another integer field, named by `what` in the error) as a Python int (numpy
    and 0-d tensor integers too), or None; floats refused."""
    if label is None:
        return None
    if isinstance(label, bool | float | np.floating | np.bool_):
        raise ValueError(f"expected an integer {what}, got {label!r}")
    try:
        return operator.index(label)
    except TypeError:
        raise ValueError(f"expected an integer {what}, got {label!r}") from None


def check_media_length(length: Any) -> int | None:
    """A source length as a Python int >= 0, or None."""
    if length is None:
        return None
    value = check_label(length, "media length")
    if value < 0:
        raise ValueError(f"expected a media length >= 0, got {length!r}")
    return value


def check_media_rate(rate: Any) -> float | None:
    """A source's rate (a video's frames per second) as a finite Python float > 0, or None."""
    if rate is None:
        return None
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"expected a media rate (a number > 0), got {rate!r}") from None
    if not (0 < value < float("inf")):
        raise ValueError(f"expected a finite media rate > 0, got {rate!r}")
    return value


def check_source_stats(stats: Any) -> tuple[int, int] | None:
    """A source's `(size in bytes, mtime in ns)` as two Python ints, or None.

    Raises:
        ValueError: anything but a pair of integers with a size >= 0.
    """
    if stats is None:
        return None
    try:
        size, mtime_ns = stats
        size, mtime_ns = operator.index(size), operator.index(mtime_ns)
    except (TypeError, ValueError):
        raise ValueError(
            f"expected source_stats (size, mtime_ns) integers, got {stats!r}"
        ) from None
    if size < 0:
        raise ValueError(f"expected a source size >= 0, got {size}")
    return size, mtime_ns


def trim(codes: np.ndarray, length: Any, spec: TokenSpec) -> np.ndarray:
    """Keep the first `length` entries of one sample along `spec.length_axis`.

    Args:
        codes: one sample of a padded batch, `spec.ndim` axes.
        length: how many entries are real.
        spec: the writer's spec.

    Returns:
        The trimmed sample (a copy).
    """
    axis = spec.length_axis
    length = operator.index(length)
    if codes.ndim != spec.ndim or not 0 <= length <= codes.shape[axis]:
        raise ValueError(
            f"expected lengths in [0, {codes.shape[axis] if codes.ndim > axis else 0}] "
            f"(axis {axis} of {spec.layout!r}), got {length}"
        )
    return np.take(codes, np.arange(length), axis=axis)


def _check_range(codes: np.ndarray, spec: TokenSpec) -> None:
    """Raise ValueError unless every code lies in [0, vocab size of its level)."""
    lowest = codes.min()
    if lowest < 0:
        raise ValueError(f"expected codes >= 0, got {lowest}")
    if spec.level_axis is None:
        highest = [codes.max()]
    else:
        # (Q, everything else): the largest code of each level
        highest = np.moveaxis(codes, spec.level_axis, 0).reshape(spec.num_levels, -1).max(axis=1)
    for level, (high, vocab_size) in enumerate(zip(highest, spec.vocab_sizes)):
        if high >= vocab_size:
            where = f" of level {level}" if spec.level_axis is not None else ""
            raise ValueError(f"expected codes{where} in [0, {vocab_size}), got {high}")
