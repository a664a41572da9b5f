"""The quantizer contract shared by every kind, and the usage bookkeeping they all report.

Tensor layout: latents are channel-last `(..., D)`. Codes are int64, `(...)` for single-codebook
kinds and `(..., Q)` for residual ones. `forward` runs in fp32 with autocast off, whatever the
caller's precision, because nearest-code decisions and rounding are where low precision hurts most.

A subclass implements two methods on flattened rows:
- `_quantize(latents (N, D) fp32) -> Step(quantized (N, D), codes (N, Q), losses, counts)`, where
  `counts` is the `(Q, K)` float histogram of this step's codes summed over ranks, or None to let
  the base compute it;
- `_decode(codes (N, Q)) -> (N, D)`, which must give exactly the `quantized` of `forward`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from mediatok.nn import autocast_off
from mediatok.quantize.distributed import all_reduce_sum_


@dataclass
class QuantizeOutput:
    """What every quantizer's `forward` returns.

    Attributes:
        quantized: `(..., D)` fp32, equal to `decode(codes)`; gradients reach the latents.
        codes: int64, `(...)` or `(..., Q)` for multi-level quantizers.
        losses: named scalar losses, already weighted: a trainer adds them to its objective.
        metrics: named scalar tensors (`usage`, `perplexity`, `dead_codes`, per level for Q > 1),
            computed over all ranks in training (in eval, over this rank's codes: a rank
            encoding alone never waits in a collective); for logging, detached; computed on
            first read.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Step:
    """One `_quantize` result on flattened rows (see the module docstring)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    losses: dict[str, torch.Tensor]
    counts: torch.Tensor | None = None
    dead: torch.Tensor | None = None  # (Q,) when the subclass advanced the usage clock itself


def histogram(codes: torch.Tensor, size: int, across_ranks: bool) -> torch.Tensor:
    """`(N,)` int64 codes → `(size,)` float32 counts, summed over ranks if `across_ranks`.

    `index_add_` rather than `torch.bincount`, which syncs with the host on CUDA. Exact while
    a count stays under 2^24.
    """
    counts = torch.zeros(size, device=codes.device)
    counts.index_add_(0, codes, torch.ones(1, device=codes.device).expand(codes.shape[0]))
    return all_reduce_sum_(counts) if across_ranks else counts


class LazyMetrics(Mapping[str, torch.Tensor]):
    """A read-only dict of metric tensors, computed from the step's histogram on first read.

    A training step that does not log pays nothing for the dozen small reductions behind the
    metrics; reading any key computes them all once.
    """

    def __init__(self, compute: Callable[[], dict[str, torch.Tensor]]):
        self._compute = compute
        self._values: dict[str, torch.Tensor] | None = None

    def _resolved(self) -> dict[str, torch.Tensor]:
        if self._values is None:
            self._values = self._compute()
        return self._values

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())

    def __repr__(self) -> str:
        return f"LazyMetrics({self._resolved()!r})"


class CodeUsage(nn.Module):
    """Tracks how many tokens each code has gone without being chosen, per level.

    A code is *dead* once `dead_after_tokens` tokens (counted over all ranks) have passed without
    it being picked. Counting tokens rather than steps keeps the threshold meaning the same at any
    batch size or number of GPUs.

    Args:
        num_levels: Q.
        codebook_size: K (the largest level's, when levels differ).
        dead_after_tokens: tokens without a hit after which a code counts as dead.
    """

    def __init__(self, num_levels: int, codebook_size: int, dead_after_tokens: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.dead_after_tokens = dead_after_tokens
        self.register_buffer(
            "tokens_since_used", torch.zeros(num_levels, codebook_size, dtype=torch.int64)
        )

    def histogram(self, codes: torch.Tensor, across_ranks: bool) -> torch.Tensor:
        """`(N, Q)` codes → `(Q, K)` float32 counts, summed over ranks if `across_ranks`."""
        num_levels = codes.shape[1]
        if num_levels > 1:
            codes = codes + torch.arange(num_levels, device=codes.device) * self.codebook_size
        counts = histogram(codes.reshape(-1), num_levels * self.codebook_size, across_ranks)
        return counts.view(num_levels, self.codebook_size)

    @torch.no_grad()
    def update(
        self, counts: torch.Tensor, track: bool, dead: torch.Tensor | None = None
    ) -> LazyMetrics:
        """Fold a `(Q, K)` histogram into the dead-code clock (when `track`) and report metrics.

        A quantizer that advances the clock itself (VQ, in its fused step) passes the `(Q,)`
        dead counts it found, and the clock is left alone here.

        Returns:
            `usage` (fraction of codes hit this step), `perplexity` (exp of the code entropy),
            `dead_codes` (count), averaged (summed for dead codes) over levels, and per level
            `usage_q{i}` / `perplexity_q{i}` when Q > 1.
        """
        if dead is None:
            if track:
                seen = counts[0].sum().long()  # tokens this step, all ranks
                self.tokens_since_used.add_(seen).masked_fill_(counts > 0, 0)
            dead = (self.tokens_since_used >= self.dead_after_tokens).sum(dim=1)  # (Q,)

        def compute() -> dict[str, torch.Tensor]:
            probs = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
            perplexity = torch.special.entr(probs).sum(dim=1).exp()  # (Q,)
            usage = (counts > 0).float().mean(dim=1)
            metrics = {
                "usage": usage.mean(),
                "perplexity": perplexity.mean(),
                "dead_codes": dead.sum().long(),
            }
            if counts.shape[0] > 1:
                for level in range(counts.shape[0]):
                    metrics[f"usage_q{level}"] = usage[level]
                    metrics[f"perplexity_q{level}"] = perplexity[level]
            return metrics

        return LazyMetrics(compute)


def projections(dim: int, search_dim: int) -> tuple[nn.Module, nn.Module]:
    """Linear maps from latents `(…, dim)` to the search space `(…, search_dim)` and back;
    identities when the two agree (the factorized lookup of ViT-VQGAN §3.2 otherwise)."""
    if search_dim == dim:
        return nn.Identity(), nn.Identity()
    return nn.Linear(dim, search_dim), nn.Linear(search_dim, dim)


class Quantizer(nn.Module):
    """Base class: checks input, runs the subclass in fp32, reshapes, reports usage.

    Subclasses set `dim` (D of the latents), `codebook_sizes` (one K per level) and
    `self.usage = CodeUsage(...)`, and implement `_quantize` and `_decode`.
    """

    dim: int
    codebook_sizes: tuple[int, ...]
    usage: CodeUsage | None  # None: no usage metrics (codebooks too large to histogram)
    check_finite: bool = True

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    def forward(self, latents: torch.Tensor) -> QuantizeOutput:
        """Quantize channel-last latents.

        Args:
            latents: `(..., D)` float tensor, any leading shape.

        Returns:
            `QuantizeOutput` with `quantized (..., D)` fp32 and `codes (...)` (or `(..., Q)`).
        """
        self._check_latents(latents)
        leading = latents.shape[:-1]
        with autocast_off(latents.device.type):
            flat = latents.reshape(-1, self.dim).float()  # (N, D)
            step = self._quantize(flat)
            metrics: Mapping[str, torch.Tensor] = {}
            if self.usage is not None:
                counts = step.counts
                if counts is None:
                    counts = self.usage.histogram(step.codes, across_ranks=self.training)
                metrics = self.usage.update(counts, track=self.training, dead=step.dead)
        codes = step.codes.reshape(*leading, self.num_levels)
        if self.num_levels == 1:
            codes = codes.squeeze(-1)
        return QuantizeOutput(
            quantized=step.quantized.reshape(*leading, self.dim),
            codes=codes,
            losses=step.losses,
            metrics=metrics,
        )

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes back to quantized vectors: `(...)` or `(..., Q)` int → `(..., D)` fp32."""
        self._check_codes(codes)
        codes = codes.long()
        if self.num_levels == 1:
            codes = codes.unsqueeze(-1)
        leading = codes.shape[:-1]
        with autocast_off(codes.device.type):
            quantized = self._decode(codes.reshape(-1, self.num_levels))
        return quantized.reshape(*leading, self.dim)

    def _quantize(self, latents: torch.Tensor) -> Step:
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_latents(self, latents: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(latents, torch.Tensor):
            raise TypeError(
                f"{name} expected a torch.Tensor of latents, got {type(latents).__name__}"
            )
        if not latents.is_floating_point():
            raise ValueError(f"{name} expected floating-point latents, got dtype {latents.dtype}")
        if latents.ndim < 1 or latents.shape[-1] != self.dim:
            raise ValueError(
                f"{name} expected channel-last latents (..., {self.dim}), got shape "
                f"{tuple(latents.shape)}"
            )
        # One reduction and a host sync; worth it, since a NaN would otherwise silently pick code 0.
        if self.check_finite and not bool(torch.isfinite(latents).all()):
            raise ValueError(f"{name} expected finite latents, got NaN or inf values")

    def _check_codes(self, codes: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(codes, torch.Tensor):
            raise TypeError(
                f"{name}.decode expected a torch.Tensor of codes, got {type(codes).__name__}"
            )
        if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise ValueError(
                f"{name}.decode expected integer codes (int64), got dtype {codes.dtype}"
            )
        if self.num_levels > 1 and (codes.ndim < 1 or codes.shape[-1] != self.num_levels):
            raise ValueError(
                f"{name}.decode expected codes (..., {self.num_levels}) with one code per level, "
                f"got shape {tuple(codes.shape)}"
            )
        if codes.numel() == 0:
            return
        sizes = torch.tensor(self.codebook_sizes, device=codes.device)
        per_level = codes.reshape(-1, self.num_levels)
        low, high = int(per_level.min()), int((per_level - sizes).max())
        if low < 0 or high >= 0:
            raise ValueError(
                f"{name}.decode expected codes in [0, {max(self.codebook_sizes)}) per level "
                f"(codebook sizes {list(self.codebook_sizes)}), got values from {low} to "
                f"{int(per_level.max())}"
            )
