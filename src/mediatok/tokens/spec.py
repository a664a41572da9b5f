"""`TokenSpec`: the whole contract between a codec that writes tokens and a generator that reads them.

A spec says how many codes each quantizer level has (`vocab_sizes`), how one sample's codes are
laid out (`layout`, named axes: N tokens, H W grid, T time or frames, Q quantizer levels), the
order in which a generator reads multi-level codes (`order`), and the media geometry a decoder
needs to turn codes back into media (`geometry`: image size, sample rate and hop, fps, frames...).

Codes of one sample are stored in `layout` order, C-contiguous: a `"Q T"` sample is `(Q, T)`.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["LAYOUTS", "TokenSpec"]

# Every level of a multi-level layout shares the Q axis, and Q is always first: a residual
# quantizer's levels are a prefix hierarchy, and a `(Q, T)` array reads one level at a time.
LAYOUTS: tuple[str, ...] = ("N", "T", "H W", "Q T", "T H W", "Q N", "Q H W")

# Codes are stored as uint16 when they fit (half the bytes of int32), else int32. int32 caps the
# vocabulary at 2**31 - 1 codes, which no quantizer comes near.
_UINT16_LIMIT = 65536
_INT32_LIMIT = 2**31 - 1

_FIELDS = ("vocab_sizes", "layout", "order", "geometry")


@dataclass(frozen=True)
class TokenSpec:
    """What the codes in a token file mean.

    Args:
        vocab_sizes: number of codes per quantizer level, one entry per level (a list is accepted
            and stored as a tuple). Layouts without a Q axis have exactly one level.
        layout: named axes of one sample's codes, one of `LAYOUTS`.
        order: the order in which a generator reads the axes, a permutation of `layout`
            (e.g. `"T Q"` for a `"Q T"` layout read time step by time step); defaults to `layout`.
        geometry: plain JSON values the codec needs to decode (`image_size`, `sample_rate`,
            `hop_length`, `fps`, `frames`, ...). Stored as a read-only mapping; two specs compare
            equal when their geometries have the same JSON form.

    Raises:
        ValueError: unknown layout or order, non-positive or non-integer vocabulary sizes, a
            number of levels that does not fit the layout, geometry that is not plain JSON.
    """

    vocab_sizes: tuple[int, ...]
    layout: str = "N"
    order: str | None = None
    geometry: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Canonical JSON of `geometry`: what equality and hashing look at, since dicts are not hashable.
    _geometry_json: str = field(default="{}", init=False, repr=False)

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise once, here
        set_field(self, "vocab_sizes", _check_vocab_sizes(self.vocab_sizes))
        if self.layout not in LAYOUTS:
            valid = ", ".join(repr(layout) for layout in LAYOUTS)
            raise ValueError(f"expected layout to be one of {valid}, got {self.layout!r}")
        axes = self.layout.split()
        if "Q" not in axes and len(self.vocab_sizes) != 1:
            raise ValueError(
                f"layout {self.layout!r} has no Q axis, so expected one vocabulary size, "
                f"got {len(self.vocab_sizes)}: {list(self.vocab_sizes)}"
            )
        order = self.layout if self.order is None else self.order
        if not isinstance(order, str) or sorted(order.split()) != sorted(axes):
            raise ValueError(
                f"expected order to be a permutation of the layout axes {self.layout!r}, "
                f"got {self.order!r}"
            )
        set_field(self, "order", " ".join(order.split()))
        geometry_json = _geometry_to_json(self.geometry)
        set_field(self, "_geometry_json", geometry_json)
        set_field(self, "geometry", MappingProxyType(json.loads(geometry_json)))

    # ---------------------------------------------------------------------------------------
    # derived properties

    @property
    def axes(self) -> tuple[str, ...]:
        """The layout's axis letters, e.g. `("Q", "T")`."""
        return tuple(self.layout.split())

    @property
    def ndim(self) -> int:
        """Number of axes of one sample's codes."""
        return len(self.axes)

    @property
    def num_levels(self) -> int:
        """Number of quantizer levels (Q), 1 for single-codebook layouts."""
        return len(self.vocab_sizes)

    @property
    def level_axis(self) -> int | None:
        """Axis of one sample that indexes quantizer levels (the Q axis), or None."""
        return self.axes.index("Q") if "Q" in self.axes else None

    @property
    def length_axis(self) -> int:
        """Axis of one sample along which lengths vary: the first axis that is not Q.

        That is N for `"N"` and `"Q N"`, T for `"T"`, `"Q T"` and `"T H W"`, H for `"H W"` and
        `"Q H W"`.
        `TokenWriter.add_batch(lengths=...)` trims samples along this axis.
        """
        return next(i for i, axis in enumerate(self.axes) if axis != "Q")

    @property
    def code_dtype(self) -> np.dtype:
        """numpy dtype of stored codes: uint16 when every level fits, else int32."""
        if max(self.vocab_sizes) <= _UINT16_LIMIT:
            return np.dtype(np.uint16)
        return np.dtype(np.int32)

    # ---------------------------------------------------------------------------------------
    # JSON round trip

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, as stored in shard metadata and manifests.

        Returns:
            `{"vocab_sizes": [...], "layout": str, "order": str, "geometry": {...}}`.
        """
        return {
            "vocab_sizes": list(self.vocab_sizes),
            "layout": self.layout,
            "order": self.order,
            "geometry": json.loads(self._geometry_json),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenSpec:
        """Inverse of `to_dict`.

        Args:
            data: a mapping with `vocab_sizes` and optionally `layout`, `order`, `geometry`.

        Returns:
            The spec.

        Raises:
            ValueError: not a mapping, missing `vocab_sizes`, an unknown key, or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a token spec mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown token spec keys {unknown}; valid keys are {list(_FIELDS)}")
        if "vocab_sizes" not in data:
            raise ValueError("token spec is missing 'vocab_sizes'")
        return cls(
            vocab_sizes=data["vocab_sizes"],
            layout=data.get("layout", "N"),
            order=data.get("order"),
            geometry=data.get("geometry") or {},
        )

    def describe(self) -> str:
        """Short text for error messages: `vocab_sizes [4096] layout 'N'`."""
        return f"vocab_sizes {list(self.vocab_sizes)} layout {self.layout!r}"

    def same_vocabulary(self, other: TokenSpec) -> bool:
        """Whether two specs have the same vocabulary sizes and layout (their geometries may
        still differ: `describe_mismatch` says whether the codes mean the same media)."""
        return self.vocab_sizes == other.vocab_sizes and self.layout == other.layout

    def describe_mismatch(self, got: TokenSpec) -> str | None:
        """What keeps codes written under `got` from meaning the same under this spec, or None.

        The one answer to "can this codec decode these tokens?" (a codec's `decode`, `mediatok
        decode`, a generator's codec). Compares the vocabulary sizes, the layout and the
        geometry: two codecs may share a vocabulary and layout while their codes mean other
        media (two image sizes; 75 and 40 tokens per second). The geometry is compared only
        when both specs carry one (a spec built by hand has none). `order` is not compared: it
        is how a generator reads the codes, not what they mean.

        Args:
            got: the spec of the codes at hand; this spec is the one expected.

        Returns:
            None when they match; else one `expected ..., got ...` clause per differing field,
            joined by "; ", the geometry narrowed to the keys that differ, e.g.
            `expected geometry {'hop_length': 600}, got {'hop_length': 320}`.
        """
        if not isinstance(got, TokenSpec):
            raise TypeError(f"expected a TokenSpec to compare with, got {type(got).__name__}")
        clauses = []
        if self.vocab_sizes != got.vocab_sizes:
            clauses.append(
                f"expected vocabulary {list(self.vocab_sizes)}, got {list(got.vocab_sizes)}"
            )
        if self.layout != got.layout:
            clauses.append(f"expected layout {self.layout!r}, got {got.layout!r}")
        if self.geometry and got.geometry:
            differing = [
                key
                for key in sorted(set(self.geometry) | set(got.geometry))
                if key not in self.geometry
                or key not in got.geometry
                or self.geometry[key] != got.geometry[key]
            ]
            if differing:
                expected = {key: self.geometry[key] for key in differing if key in self.geometry}
                came = {key: got.geometry[key] for key in differing if key in got.geometry}
                clauses.append(f"expected geometry {expected}, got {came}")
        return "; ".join(clauses) or None


def _check_vocab_sizes(vocab_sizes: Any) -> tuple[int, ...]:
    """Validate and normalise `vocab_sizes` to a non-empty tuple of positive ints."""
    if isinstance(vocab_sizes, str | bytes) or not isinstance(vocab_sizes, Sequence | np.ndarray):
        raise ValueError(f"expected vocab_sizes to be a list of positive ints, got {vocab_sizes!r}")
    sizes = []
    for size in vocab_sizes:
        # bool is an int subclass, and `True` codes is surely a mistake.
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise ValueError(f"expected vocab_sizes to hold ints, got {list(vocab_sizes)!r}")
        if not 0 < int(size) <= _INT32_LIMIT:
            raise ValueError(
                f"expected every vocabulary size in [1, {_INT32_LIMIT}], got {list(vocab_sizes)}"
            )
        sizes.append(int(size))
    if not sizes:
        raise ValueError("expected at least one vocabulary size, got none")
    return tuple(sizes)


def _geometry_to_json(geometry: Any) -> str:
    """Canonical JSON text of `geometry` (sorted keys), or ValueError if it is not plain JSON."""
    if not isinstance(geometry, Mapping):
        raise ValueError(f"expected geometry to be a dict, got {type(geometry).__name__}")
    if not all(isinstance(key, str) for key in geometry):
        raise ValueError(f"expected geometry keys to be strings, got {list(geometry)}")
    try:
        return json.dumps(dict(geometry), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"expected geometry to hold plain JSON values: {error}") from None
