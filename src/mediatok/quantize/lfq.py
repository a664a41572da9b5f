"""Lookup-free (LFQ, MAGVIT-v2, Yu et al. 2023 §3.1) and binary spherical quantization (BSQ, Zhao
et al. 2024), our own implementation.

Each of the d = log2(K) channels becomes one bit: LFQ maps x_i to ±`codebook_scale`, BSQ first
projects x onto the unit sphere and maps it to ±1/√d. The code is Σ_i bit_i·2^i (bit 0 is the
least significant).

The entropy regularizer (MAGVIT-v2 eq. 5) asks each token to be confident (low per-sample entropy)
and the batch to spread over the codebook (high entropy of the mean distribution). With the
softmax over codes of −τ·‖x − c‖², the per-sample distribution factorizes into independent bits,
so the per-sample entropy is an exact sum of d binary entropies. The batch entropy does not
factorize; like BSQ §3.3 we sum the exact entropies of groups of `entropy_group_bits` bits (an
upper bound that is tight when groups are independent).

Why not vector-quantize-pytorch's `LFQ`: it forms an N × K probability matrix for the entropy
(17 GB for K = 2^18 at N = 16384), and its training output differs from the decoded codes by
rounding. Ours costs O(N · d · 2^g) and its output equals `decode(codes)` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mediatok.config import check_positive_int
from mediatok.quantize.base import CodeUsage, Quantizer, Step, projections
from mediatok.quantize.distributed import all_reduce_sum_, world_size


@dataclass
class LFQConfig:
    """LFQ / BSQ settings.

    Attributes:
        dim: D of the latents; projections are added when it differs from log2(codebook_size).
        codebook_size: K, a power of two (d = log2 K bits per token).
        spherical: True for BSQ (unit-sphere projection), False for LFQ.
        codebook_scale: the value ±s of an LFQ bit (BSQ uses 1/√d).
        entropy_weight: weight of the entropy loss.
        diversity_gamma: weight of the batch entropy inside it.
        inv_temperature: τ of the soft assignment used by the entropy loss.
        entropy_group_bits: bits per group for the batch entropy (2^g codes per group).
        commitment_weight: β of ‖x − sg(q)‖².
        dead_code_after_tokens: for the dead-code metric; None means 32 × K.
        check_finite: reject NaN/inf latents (one host sync per call).
    """

    dim: int
    codebook_size: int
    spherical: bool = False
    codebook_scale: float = 1.0
    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0
    entropy_group_bits: int = 9
    commitment_weight: float = 0.25
    dead_code_after_tokens: int | None = None
    check_finite: bool = True

    def __post_init__(self) -> None:
        size = self.codebook_size
        if not isinstance(size, int) or size < 2 or size & (size - 1):
            suggestion = 2 ** math.ceil(math.log2(max(size, 2))) if isinstance(size, int) else 2
            raise ValueError(
                f"expected codebook_size to be a power of two >= 2 for LFQ/BSQ, got {size!r} "
                f"(nearest above: {suggestion})"
            )
        if size > 2**62:
            raise ValueError(
                f"expected codebook_size <= 2**62 (int64 codes), got 2**{size.bit_length() - 1}"
            )
        check_positive_int("dim", self.dim)
        if not 1 <= self.entropy_group_bits <= 16:
            raise ValueError(
                f"expected entropy_group_bits in [1, 16], got {self.entropy_group_bits}"
            )


class LookupFreeQuantizer(Quantizer):
    """LFQ or BSQ on the shared contract; see the module docstring and `LFQConfig`."""

    def __init__(self, config: LFQConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.codebook_sizes = (config.codebook_size,)
        self.check_finite = config.check_finite
        bits = config.codebook_size.bit_length() - 1
        self.bits = bits
        self.project_in, self.project_out = projections(config.dim, bits)
        self.scale = 1.0 / math.sqrt(bits) if config.spherical else config.codebook_scale
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.int64), persistent=False)
        # The usage histogram is K entries long: beyond 2^24 codes there are no usage metrics.
        size = config.codebook_size
        dead_after = config.dead_code_after_tokens or 32 * size
        self.usage = CodeUsage(1, size, dead_after) if size <= 1 << 24 else None

    def _quantize(self, latents: torch.Tensor) -> Step:
        cfg = self.config
        x = self.project_in(latents)  # (N, d)
        if cfg.spherical:
            x = F.normalize(x, dim=-1)
        positive = x > 0
        q = torch.where(positive, self.scale, -self.scale)
        codes = (positive.long() * self.powers).sum(dim=1, keepdim=True)  # (N, 1)
        losses = {"commitment": cfg.commitment_weight * F.mse_loss(x, q)}
        if self.training and cfg.entropy_weight > 0:
            losses["entropy"] = cfg.entropy_weight * self._entropy_loss(x)
        quantized = self.project_out(q + (x - x.detach()))  # value q exactly, gradient to x
        return Step(quantized, codes, losses)

    def _entropy_loss(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        # softmax over ±s of −τ(x − c)² per bit: logit of the + side is 4τ·s·x.
        logits = 4 * cfg.inv_temperature * self.scale * x  # (N, d)
        log_pos, log_neg = F.logsigmoid(logits), F.logsigmoid(-logits)
        per_sample = -(log_pos.exp() * log_pos + log_neg.exp() * log_neg).sum(dim=1).mean()
        batch_entropy = x.new_zeros(())
        for start in range(0, self.bits, cfg.entropy_group_bits):
            stop = min(start + cfg.entropy_group_bits, self.bits)
            width = stop - start
            subcodes = torch.arange(2**width, device=x.device)
            shifts = torch.arange(width, device=x.device)
            table = ((subcodes[None, :] >> shifts[:, None]) & 1).to(x.dtype)  # (g, 2^g): bit b of j
            log_probs = log_pos[:, start:stop] @ table + log_neg[:, start:stop] @ (1 - table)
            mean_probs = all_reduce_sum_(log_probs.exp().mean(dim=0)) / world_size()  # (2^g,)
            # Clamped log: p·log p has an infinite slope at p = 0, which would make NaN gradients.
            batch_entropy = batch_entropy - (mean_probs * mean_probs.clamp_min(1e-30).log()).sum()
        return per_sample - cfg.diversity_gamma * batch_entropy

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        positive = (codes[:, :1] & self.powers) != 0  # (N, d)
        q = torch.where(positive, self.scale, -self.scale).to(torch.float32)
        return self.project_out(q)
