"""Rotary position embeddings (RoPE), 1-D and axial N-D, from integer coordinates.

RoPE (Su et al. 2021, "RoFormer: enhanced transformer with rotary position embedding") rotates
each pair of query/key channels by an angle proportional to the token's position, so that the
dot product of a query and a key depends on their positions only through the difference.

Axial N-D: a token on a grid has one coordinate per axis (`(h, w)` for `"H W"`, `(t, h, w)` for
`"T H W"`). The head dim's d/2 channel pairs are split between the A axes as evenly as possible
(the first axes get the remainder), and each axis rotates its own pairs with its own coordinate
and frequencies `base ** (-i / n_a)`, i < n_a, n_a = pairs of that axis. With A = 1 this is the
usual 1-D RoPE.

Pairing: channel j is paired with channel j + d/2 (the "rotate half" convention), which needs no
strided access. Pair j of the table belongs to axis a for the j in that axis's block.

Prefix tokens (a class or start token read before the sequence) get their own coordinates:
`with_prefix` puts the p-th of P prefix tokens at coordinate p - P on every axis (-1 for a single
class token), one step before the origin of the grid. RoPE only sees differences, so this is the
same as shifting every sequence coordinate by +1 and placing the prefix at 0.

Layout: coordinates `(L, A)` int; tables `cos`, `sin` `(L, d/2)` fp32; `x` `(B, heads, L, d)`.
"""

from __future__ import annotations

import torch

__all__ = ["apply_rope", "rope_tables", "with_prefix"]


def rope_tables(
    coordinates: torch.Tensor, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables for integer coordinates.

    Args:
        coordinates: `(L, A)` integer positions, one column per axis (`(L,)` is taken as A = 1);
            negative values are allowed (prefix tokens).
        head_dim: d, even, with at least one channel pair per axis (d/2 >= A).
        base: the RoPE base (10000 in the paper).

    Returns:
        `(cos, sin)`, each `(L, d/2)` float32, computed in float64 so that large positions keep
        their precision.

    Raises:
        ValueError: an odd head dim, fewer pairs than axes, or non-integer coordinates.
    """
    if coordinates.ndim == 1:
        coordinates = coordinates[:, None]  # (L, 1)
    if coordinates.ndim != 2 or coordinates.is_floating_point() or coordinates.is_complex():
        raise ValueError(
            f"expected integer coordinates (L, A), got {coordinates.dtype} of shape "
            f"{tuple(coordinates.shape)}"
        )
    num_axes = coordinates.shape[1]
    pairs = head_dim // 2
    if head_dim % 2 or pairs < num_axes:
        raise ValueError(
            f"expected an even head dim with at least {num_axes} channel pairs for {num_axes} "
            f"axes, got head_dim={head_dim}"
        )
    angles = []
    for axis in range(num_axes):
        size = pairs // num_axes + (1 if axis < pairs % num_axes else 0)
        exponents = torch.arange(size, dtype=torch.float64, device=coordinates.device) / size
        inverse_frequency = base**-exponents  # (n_a,)
        angles.append(coordinates[:, axis, None].double() * inverse_frequency)  # (L, n_a)
    angle = torch.cat(angles, dim=-1)  # (L, d/2)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs `(j, j + d/2)` of `x` by the tables' angles.

    Args:
        x: `(..., L, d)` queries or keys, usually `(B, heads, L, d)`.
        cos, sin: `(L, d/2)` from `rope_tables` (rows for exactly these L positions); cast to
            `x.dtype`, so under bf16 autocast the rotation runs in bf16 like the projections.

    Returns:
        `(..., L, d)`, same dtype as `x`.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    first, second = x.chunk(2, dim=-1)  # (..., L, d/2) each
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def with_prefix(coordinates: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
    """Coordinates of `num_prefix` tokens read before the sequence, then the sequence's own.

    Args:
        coordinates: `(L, A)` integer coordinates of the sequence.
        num_prefix: P, prefix tokens (a class or start token); prefix token p sits at coordinate
            p - P on every axis.

    Returns:
        `(P + L, A)` int64.
    """
    prefix = torch.arange(-num_prefix, 0, dtype=torch.int64, device=coordinates.device)  # (P,)
    prefix = prefix[:, None].expand(num_prefix, coordinates.shape[1])  # (P, A)
    return torch.cat([prefix, coordinates.to(torch.int64)], dim=0)  # (P + L, A)
