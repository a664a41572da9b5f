"""Codebook usage over a whole evaluation set: how many codes a tokenizer actually uses.

The definitions are those of `mediatok.quantize.base.CodeUsage`, which reports them per training
step: *usage* is the fraction of a level's codes hit at least once, *perplexity* is the
exponential of the entropy (natural log) of the level's code histogram, so it runs from 1 (one
code takes every token) to K (all codes equally often). Here the histogram accumulates over
every batch seen, which is what a paper's "codebook usage" means; a per-step value is lower.
With several levels (residual quantizers) `usage` and `perplexity` are means over levels, and
each level also gets `usage_q{i}` / `perplexity_q{i}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from mediatok.tokens import TokenSpec


class CodebookUsage:
    """Accumulates per-level code histograms over batches and reports usage and perplexity.

    Counts are exact (int64) and live on the device of the codes they came from. Under
    `torch.distributed`, each rank updates with its own codes and `compute()` sums the
    histograms over ranks, so every rank must call `compute()` (or `reduce()`) together.

    >>> usage = CodebookUsage([4])
    >>> usage.update(torch.tensor([0, 0, 1, 1]))
    >>> usage.compute()["usage"], usage.compute()["perplexity"]
    (0.5, 2.0)

    Args:
        codebook_sizes: K of each level, one entry per level (a quantizer's `codebook_sizes`);
            a single int means one level.
    """

    def __init__(self, codebook_sizes: int | Sequence[int]):
        sizes = (codebook_sizes,) if isinstance(codebook_sizes, int) else tuple(codebook_sizes)
        if not sizes or not all(isinstance(size, int) and size > 0 for size in sizes):
            raise ValueError(
                f"expected codebook_sizes as positive ints, one per level, got {codebook_sizes!r}"
            )
        self.codebook_sizes = sizes
        # One flat histogram, level q at [offsets[q], offsets[q + 1]): levels may differ in K.
        self._offsets = [0]
        for size in sizes:
            self._offsets.append(self._offsets[-1] + size)
        self._counts = torch.zeros(self._offsets[-1], dtype=torch.int64)

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def counts(self) -> list[torch.Tensor]:
        """This rank's histograms: one int64 `(K_q,)` tensor per level (views, not copies)."""
        return [self._level(self._counts, level) for level in range(self.num_levels)]

    def _level(self, flat: torch.Tensor, level: int) -> torch.Tensor:
        return flat[self._offsets[level] : self._offsets[level + 1]]

    def reset(self) -> None:
        """Forget every code seen so far."""
        self._counts.zero_()

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        """Add a batch of codes to the histograms.

        Checks that every code is in range, which reads two numbers back from the device: fine
        for evaluation, and an out-of-range code would otherwise be miscounted silently.

        Args:
            codes: integer tensor `(..., Q)` with Q = `num_levels`; with a single level any
                shape `(...)` (the quantizers' single-codebook layout) is taken whole.
        """
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"expected codes as a torch.Tensor, got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TypeError(f"expected integer codes, got {codes.dtype}")
        if self.num_levels == 1:
            flat = codes.reshape(-1, 1)  # (N, 1)
        elif codes.ndim == 0 or codes.shape[-1] != self.num_levels:
            raise ValueError(
                f"expected codes of shape (..., {self.num_levels}) for {self.num_levels} "
                f"levels, got {tuple(codes.shape)}"
            )
        else:
            flat = codes.reshape(-1, self.num_levels)  # (N, Q)
        if flat.numel() == 0:
            return
        flat = flat.long()
        sizes = torch.tensor(self.codebook_sizes, device=flat.device)  # (Q,)
        low, high = flat.min(dim=0).values, flat.max(dim=0).values  # (Q,) each
        bad = (low < 0) | (high >= sizes)
        if bool(bad.any()):
            level = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"expected level-{level} codes in [0, {self.codebook_sizes[level]}), got "
                f"values from {int(low[level])} to {int(high[level])}"
            )
        if self._counts.device != flat.device:
            self._counts = self._counts.to(flat.device)
        offsets = torch.tensor(self._offsets[:-1], device=flat.device)  # (Q,)
        # bincount would sync with the host on CUDA; index_add_ stays asynchronous.
        indices = (flat + offsets).reshape(-1)  # (N·Q,)
        self._counts.index_add_(0, indices, torch.ones_like(indices))

    def update_tokens(self, codes: torch.Tensor, spec: TokenSpec) -> None:
        """`update` with a batch of token codes `(B, *token_shape)` laid out as `spec` says:
        its level axis ("Q H W", "Q N") is moved last first, so that each level is counted
        apart."""
        if spec.level_axis is not None:
            codes = codes.movedim(1 + spec.level_axis, -1)  # (B, ..., Q)
        self.update(codes)

    def reduce(self) -> list[torch.Tensor]:
        """The histograms summed over all ranks (this rank's alone outside `torch.distributed`).

        Returns a new tensor; this rank's own counts are left as they are, so updating and
        reducing may alternate without counting another rank's codes twice. A collective:
        every rank must call it.

        Returns:
            One int64 `(K_q,)` histogram per level.
        """
        total = self._counts.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
            if dist.get_backend() == "nccl" and total.device.type != "cuda":
                total = total.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return [self._level(total, level) for level in range(self.num_levels)]

    def compute(self) -> dict[str, float]:
        """Usage and perplexity over everything seen, on all ranks.

        Returns:
            `usage` (fraction of codes hit at least once), `perplexity` (exp of the entropy of
            the code histogram), `unused_codes` (codes never hit, summed over levels) and
            `num_tokens` (tokens seen per level); with Q > 1 levels, `usage` and `perplexity`
            are means over levels and `usage_q{i}` / `perplexity_q{i}` give each level.
        """
        histograms = self.reduce()
        num_tokens = int(histograms[0].sum())
        if num_tokens == 0:
            raise RuntimeError("no codes seen: call update() with at least one batch first")
        usages, perplexities, unused = [], [], 0
        for histogram in histograms:
            counts = histogram.double()
            probabilities = counts / counts.sum()
            # entr(p) = −p·ln p, and 0 for p = 0: empty bins add nothing to the entropy.
            perplexities.append(float(torch.special.entr(probabilities).sum().exp()))
            usages.append(float((histogram > 0).double().mean()))
            unused += int((histogram == 0).sum())
        metrics = {
            "usage": sum(usages) / len(usages),
            "perplexity": sum(perplexities) / len(perplexities),
            "unused_codes": float(unused),
            "num_tokens": float(num_tokens),
        }
        if self.num_levels > 1:
            for level, (usage, perplexity) in enumerate(zip(usages, perplexities, strict=True)):
                metrics[f"usage_q{level}"] = usage
                metrics[f"perplexity_q{level}"] = perplexity
        return metrics
