"""`SequenceLayout`: codes in layout order ⇄ one combined-id sequence in the spec's read order."""

from __future__ import annotations

import pytest
import torch

from mediatok.generation.sequence import SequenceLayout
from mediatok.tokens import TokenSpec


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (TokenSpec([16]), (5,)),
        (TokenSpec([16], layout="T"), (7,)),
        (TokenSpec([16], layout="H W"), (3, 4)),
        (TokenSpec([8, 4], layout="Q T", order="T Q"), (2, 5)),
        (TokenSpec([8, 4, 6], layout="Q H W", order="H W Q"), (3, 2, 3)),
        (TokenSpec([32], layout="T H W"), (2, 3, 2)),
    ],
)
def test_round_trip_and_vocabulary(spec, shape):
    layout = SequenceLayout(spec, shape)
    generator = torch.Generator().manual_seed(0)
    codes = torch.stack(
        [torch.randint(v, shape, generator=generator) for v in [min(spec.vocab_sizes)] * 3]
    )
    ids = layout.flatten(codes)
    assert ids.shape == (3, layout.length)
    assert torch.equal(layout.unflatten(ids), codes)
    # every id is valid at its position's level
    assert bool(layout.vocab_mask[layout.level_ids[None].expand_as(ids), ids].all())
    assert layout.vocab_size == sum(spec.vocab_sizes)
    assert layout.coordinates.shape == (layout.length, len(layout.coordinate_axes))


def test_order_interleaves_levels_step_by_step():
    spec = TokenSpec([10, 10], layout="Q T", order="T Q")
    layout = SequenceLayout(spec, (2, 3))
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6]]])  # (1, Q, T)
    assert layout.flatten(codes).tolist() == [[1, 14, 2, 15, 3, 16]]
    assert layout.level_ids.tolist() == [0, 1, 0, 1, 0, 1]
    assert layout.coordinates[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert layout.coordinate_axes == ("T",)


def test_grid_coordinates_are_row_major():
    layout = SequenceLayout(TokenSpec([4], layout="H W"), (2, 3))
    assert layout.coordinates.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_errors_name_what_was_expected():
    spec = TokenSpec([8, 4], layout="Q T")
    with pytest.raises(ValueError, match="expected 2 levels"):
        SequenceLayout(spec, (3, 5))
    layout = SequenceLayout(spec, (2, 5))
    with pytest.raises(ValueError, match=r"expected codes \(B, 2, 5\)"):
        layout.flatten(torch.zeros(1, 2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside their level"):
        layout.unflatten(torch.full((1, 10), 12))
