"""Nested dropout of a token sequence's tail, so that every prefix of a 1D code is a code.

Per image, a length k in 1..K is drawn and the tokens after the first k are replaced by a
learned mask token; a decoder trained so must reconstruct from any prefix, and the encoder
learns to put what matters most first (Rippel et al. 2014, "Learning ordered representations
with nested dropout"). Two codecs use it: FlexTok (Bachmann et al. 2025: k drawn from the
powers of two) and TiTok's optional "tail token drop" (One-D-Piece, Miwa et al. 2025).

How k is drawn (`NestedDropoutConfig.mode`), for K tokens:
- "uniform": k uniform in 1..K;
- "pow2": k uniform among the powers of two below K, and K itself ({1, 2, 4, ..., 256} for
  K = 256; a K that is no power of two adds itself as the last choice), FlexTok's choice: short
  prefixes are drawn as often as long ones;
- "uniform_pow2": k uniform in 1..K, then rounded up to the next power of two (at most K): the
  choices of "pow2", each weighted by the width of its interval, so long prefixes dominate.
With `probability` < 1, only that fraction of images is cut; the others keep all K tokens.

Every draw takes an optional `torch.Generator` (then it is drawn on the generator's device and
moved), so a seeded generator gives the same lengths on every run and device.

Layout: tokens `(B, K, D)`, lengths `(B,)` int64, the mask token `(D,)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mediatok.config import check_choice

MODES = ("uniform", "pow2", "uniform_pow2")


@dataclass
class NestedDropoutConfig:
    """How nested dropout draws the kept length of each image (see the module docstring).

    Attributes:
        mode: "uniform", "pow2" or "uniform_pow2".
        probability: the fraction of images whose tail is dropped; the others keep all tokens.
    """

    mode: Literal["uniform", "pow2", "uniform_pow2"] = "pow2"
    probability: float = 1.0

    def __post_init__(self) -> None:
        check_choice("nested dropout mode", self.mode, MODES)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(
                f"expected nested dropout probability in [0, 1], got {self.probability}"
            )


def length_choices(mode: str, max_tokens: int) -> list[int]:
    """The lengths `mode` can draw for `max_tokens` tokens, ascending (for tests and docs)."""
    check_choice("nested dropout mode", mode, MODES)
    if mode == "uniform":
        return list(range(1, max_tokens + 1))
    powers = [2**i for i in range(max_tokens.bit_length()) if 2**i < max_tokens]
    return [*powers, max_tokens]


def sample_lengths(
    config: NestedDropoutConfig,
    batch: int,
    max_tokens: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw the kept length of each of `batch` images.

    Args:
        config: the mode and probability.
        batch: B.
        max_tokens: K.
        generator: drawn from it (on its device) when given, else from the global RNG.
        device: where the lengths go.

    Returns:
        `(B,)` int64 in 1..K.
    """
    if max_tokens < 1:
        raise ValueError(f"expected max_tokens >= 1, got {max_tokens}")
    where = generator.device if generator is not None else device
    if config.mode == "pow2":
        choices = torch.tensor(length_choices("pow2", max_tokens), device=where)
        index = torch.randint(len(choices), (batch,), generator=generator, device=where)
        lengths = choices[index]
    else:
        lengths = torch.randint(1, max_tokens + 1, (batch,), generator=generator, device=where)
        if config.mode == "uniform_pow2":
            # log2 of an integer below 2^24 is exact in float32 at powers of two.
            rounded = torch.exp2(torch.log2(lengths.float()).ceil()).long()
            lengths = rounded.clamp(max=max_tokens)
    if config.probability < 1.0:
        cut = torch.rand(batch, generator=generator, device=where) < config.probability
        lengths = torch.where(cut, lengths, torch.full_like(lengths, max_tokens))
    return lengths.to(device=device if device is not None else lengths.device)


def mask_tail(
    tokens: torch.Tensor, lengths: torch.Tensor, mask_token: torch.Tensor
) -> torch.Tensor:
    """Replace the tokens of each row past its length by `mask_token`.

    Args:
        tokens: `(B, K, D)`.
        lengths: `(B,)` kept tokens per row, 0..K (0 masks the whole row).
        mask_token: `(D,)`; gradients reach it through every masked position.

    Returns:
        `(B, K, D)` in the dtype of `tokens`.
    """
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    keep = positions[None, :] < lengths.to(tokens.device)[:, None]  # (B, K)
    return torch.where(keep[..., None], tokens, mask_token.to(tokens.dtype))


def check_lengths(
    codec: str, lengths: torch.Tensor | None, batch: int, count: int, device: torch.device
) -> torch.Tensor:
    """Check the prefix lengths a decoder was given, or make them full.

    Args:
        codec: names the caller in errors (`"titok"`).
        lengths: `(B,)` integers in 0..count, or None (every row has all `count` tokens).
        batch: B.
        count: the tokens each row of the codes holds.
        device: where the lengths go.

    Returns:
        `(B,)` int64 on `device`.

    Raises:
        ValueError: another shape, a float dtype, or a length out of range (one host sync).
    """
    if lengths is None:
        return torch.full((batch,), count, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"{codec} expected integer lengths (B={batch},), got {lengths.dtype} of shape "
            f"{tuple(lengths.shape)}"
        )
    if batch and not 0 <= int(lengths.min()) <= int(lengths.max()) <= count:
        raise ValueError(f"{codec} expected lengths in 0..{count}, got {lengths.tolist()}")
    return lengths.long()


class NestedDropout(nn.Module):
    """Nested dropout in training, the identity in eval. It holds no weights: the mask token
    belongs to the model that uses it (it also fills the tail of a short code at decode time).
    """

    def __init__(self, config: NestedDropoutConfig):
        super().__init__()
        self.config = config

    def forward(
        self,
        tokens: torch.Tensor,
        mask_token: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`tokens (B, K, D)` → (tokens with each row's tail masked, its lengths `(B,)`);
        in eval mode the tokens unchanged and lengths K."""
        batch, count = tokens.shape[:2]
        if not self.training:
            return tokens, torch.full((batch,), count, dtype=torch.long, device=tokens.device)
        lengths = sample_lengths(self.config, batch, count, generator, tokens.device)
        return mask_tail(tokens, lengths, mask_token), lengths

    def extra_repr(self) -> str:
        return f"mode={self.config.mode!r}, probability={self.config.probability}"
