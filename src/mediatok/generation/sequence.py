"""How a sample's codes become the 1-D sequence a generator reads, and back.

A `TokenSpec` stores codes in `layout` order (e.g. `"Q T"`: all of level 0, then level 1) and
says in which order a generator reads them (`order`, e.g. `"T Q"`: both levels of step 0, then
step 1). `SequenceLayout` does that permutation for one token shape and gives each position of
the sequence what a model needs to know about it:

- its quantizer level (`level_ids`), since residual levels have their own vocabularies;
- its coordinates on the non-Q axes (`coordinates`, e.g. `(h, w)` on a grid), for 1-D or 2-D
  rotary positions;
- one combined vocabulary for all levels: level q's code c is id `offsets[q] + c`, so one
  embedding table and one output head serve every level, and `vocab_mask` says which ids are
  valid at each level.

Layout: codes `(B, *token_shape)` in `spec.layout` order ⇄ ids `(B, L)` in `spec.order` order,
L = prod(token_shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mediatok.tokens import TokenSpec

__all__ = ["IGNORE_INDEX", "SequenceLayout"]

IGNORE_INDEX = -100  # cross-entropy target of positions that are not scored (both generators)


class SequenceLayout:
    """The sequence order of one token shape under a `TokenSpec`.

    Args:
        spec: the codec's token contract.
        token_shape: one sample's code shape in layout order, e.g. `(N,)`, `(H, W)` or `(Q, T)`.

    Attributes:
        spec, token_shape.
        length: L, positions in the sequence.
        vocab_size: size of the combined vocabulary (sum of the levels').
        offsets: `(Q,)` int64, first combined id of each level.
        level_ids: `(L,)` int64, the level of each position (all 0 without a Q axis).
        coordinates: `(L, A)` int64, each position's index on the A non-Q axes, in `spec.order`
            order (`(n,)` for "N", `(t,)` for "T" and "Q T", `(h, w)` for "H W").
        coordinate_axes: the names of those A axes, e.g. `("H", "W")`.
        vocab_mask: `(Q, vocab_size)` bool, True where a combined id belongs to the level.
    """

    def __init__(self, spec: TokenSpec, token_shape: Sequence[int]):
        token_shape = tuple(int(size) for size in token_shape)
        if len(token_shape) != spec.ndim or any(size < 1 for size in token_shape):
            raise ValueError(
                f"expected a token shape of {spec.ndim} positive sizes for layout "
                f"{spec.layout!r}, got {token_shape}"
            )
        if spec.level_axis is not None and token_shape[spec.level_axis] != spec.num_levels:
            raise ValueError(
                f"expected {spec.num_levels} levels on the Q axis of {spec.layout!r}, got "
                f"shape {token_shape}"
            )
        self.spec, self.token_shape = spec, token_shape
        layout_axes, order_axes = spec.axes, spec.order.split()
        # Sequence position p reads codes[permutation applied]: permute layout → order.
        self._permutation = tuple(layout_axes.index(axis) for axis in order_axes)
        self._inverse = tuple(order_axes.index(axis) for axis in layout_axes)
        ordered_shape = tuple(token_shape[i] for i in self._permutation)
        self.length = 1
        for size in token_shape:
            self.length *= size

        # Index metadata lives on the CPU, also when a model is built under `torch.device("meta")`.
        sizes = torch.tensor(spec.vocab_sizes, dtype=torch.int64, device="cpu")
        self.vocab_size = int(sizes.sum())
        self.offsets = torch.cumsum(sizes, 0) - sizes  # (Q,)
        ids = torch.arange(self.vocab_size, device="cpu")
        self.vocab_mask = (ids >= self.offsets[:, None]) & (
            ids < (self.offsets + sizes)[:, None]
        )  # (Q, vocab_size)

        # Index grids in order-axis order, flattened C-style: (L, ndim).
        grids = torch.meshgrid(
            *[torch.arange(size, device="cpu") for size in ordered_shape], indexing="ij"
        )
        index = torch.stack([grid.reshape(-1) for grid in grids], dim=1)  # (L, ndim)
        if "Q" in order_axes:
            self.level_ids = index[:, order_axes.index("Q")].clone()
        else:
            self.level_ids = torch.zeros(self.length, dtype=torch.int64, device="cpu")
        keep = [i for i, axis in enumerate(order_axes) if axis != "Q"]
        self.coordinate_axes = tuple(order_axes[i] for i in keep)
        self.coordinates = index[:, keep].contiguous()  # (L, A)

    def flatten(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `(B, *token_shape)` (layout order, per-level codes) → combined ids `(B, L)`."""
        if tuple(codes.shape[1:]) != self.token_shape:
            raise ValueError(
                f"expected codes (B, {', '.join(map(str, self.token_shape))}) for layout "
                f"{self.spec.layout!r}, got shape {tuple(codes.shape)}"
            )
        ordered = codes.permute(0, *(1 + i for i in self._permutation))  # (B, *order shape)
        ids = ordered.reshape(len(codes), self.length)  # (B, L)
        return ids + self.offsets.to(codes.device)[self.level_ids.to(codes.device)]

    def unflatten(self, ids: torch.Tensor) -> torch.Tensor:
        """Combined ids `(B, L)` → codes `(B, *token_shape)` in layout order.

        Raises:
            ValueError: an id outside its position's level (e.g. an end token left in).
        """
        if ids.ndim != 2 or ids.shape[1] != self.length:
            raise ValueError(f"expected ids (B, {self.length}), got shape {tuple(ids.shape)}")
        level_ids = self.level_ids.to(ids.device)
        codes = ids - self.offsets.to(ids.device)[level_ids]  # (B, L)
        sizes = torch.tensor(self.spec.vocab_sizes, device=ids.device)[level_ids]
        if bool(((codes < 0) | (codes >= sizes)).any()):
            raise ValueError("ids outside their level's vocabulary (special tokens left in?)")
        ordered_shape = tuple(self.token_shape[i] for i in self._permutation)
        ordered = codes.reshape(len(ids), *ordered_shape)  # (B, *order shape)
        return ordered.permute(0, *(1 + i for i in self._inverse)).contiguous()
