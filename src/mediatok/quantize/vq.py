"""Vector quantization (VQ-VAE, van den Oord et al. 2017), our own implementation.

What it offers, each set explicitly by `VQConfig`:
- distance: l2, or cosine (latents and codes l2-normalized, as ViT-VQGAN §3.2 does);
- codebook update: EMA of assignment counts and sums (VQ-VAE-2 appendix; Laplace-smoothed), or a
  learned codebook trained by the codebook loss;
- k-means init on the first training batch, pooled over all ranks and broadcast from rank 0;
- dead-code revival: a code that no token has picked for `dead_code_after_tokens` tokens (counted
  over all ranks) is replaced by a latent drawn from the batch;
- low-dimensional factorized lookup (ViT-VQGAN §3.2): project to `codebook_dim`, search there,
  project back;
- gradient: straight-through, or the rotation trick (Fifty et al. 2024, §4.2).

Why our own rather than vector-quantize-pytorch's `VectorQuantize`: it builds the N×K distance
matrix and a one-hot N×K assignment for the EMA update, which dominates time and memory at large
K. Here the search is the fused `nearest_code` kernel and the EMA statistics come from one
`index_add_`, so memory stays O(N·D + K·D). `benchmarks/quantize.py` measures both.

Layout: rows `(N, D)` inside; the base class handles `(..., D)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mediatok.config import check_positive_int
from mediatok.quantize.base import CodeUsage, Quantizer, Step, histogram, projections
from mediatok.quantize.distributed import (
    all_gather_rows,
    all_reduce_sum_,
    broadcast_,
    rank,
    world_size,
)
from mediatok.quantize.search import _triton_available, nearest_code

Gradient = Literal["straight_through", "rotation"]


@dataclass
class VQConfig:
    """Vector quantizer settings (names follow vector-quantize-pytorch where it has them).

    Attributes:
        dim: D of the latents.
        codebook_size: K.
        codebook_dim: search dimension; a value below `dim` adds linear projections in and out
            (factorized lookup). None: search in `dim`.
        distance: "l2" or "cosine".
        ema_update: True for an EMA codebook, False for a learned one.
        decay: EMA decay of the counts and sums.
        eps: Laplace smoothing of the EMA counts.
        commitment_weight: β of the commitment loss ‖x − sg(q)‖².
        codebook_weight: weight of the codebook loss ‖sg(x) − q‖² (learned codebooks only).
        kmeans_init: initialize the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        kmeans_samples: latents pooled over all ranks for it.
        revive_dead_codes: replace dead codes with batch latents during training.
        dead_code_after_tokens: tokens without a hit after which a code is dead; None means
            32 × codebook_size (a code used uniformly is hit once per K tokens).
        gradient: "straight_through" or "rotation".
        sync_codebook: sum EMA statistics over ranks so every rank keeps one codebook.
        check_finite: reject NaN/inf latents (costs one host sync per call).
    """

    dim: int
    codebook_size: int
    codebook_dim: int | None = None
    distance: Literal["l2", "cosine"] = "l2"
    ema_update: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    kmeans_init: bool = False
    kmeans_iters: int = 10
    kmeans_samples: int = 65536
    revive_dead_codes: bool = True
    dead_code_after_tokens: int | None = None
    gradient: Gradient = "straight_through"
    sync_codebook: bool = True
    check_finite: bool = True

    def __post_init__(self) -> None:
        positive = {"dim": self.dim, "codebook_size": self.codebook_size}
        positive["kmeans_iters"] = self.kmeans_iters
        positive["kmeans_samples"] = self.kmeans_samples
        if self.codebook_dim is not None:
            positive["codebook_dim"] = self.codebook_dim
        if self.dead_code_after_tokens is not None:
            positive["dead_code_after_tokens"] = self.dead_code_after_tokens
        for name, value in positive.items():
            check_positive_int(name, value)
        if self.distance not in ("l2", "cosine"):
            raise ValueError(f"expected distance 'l2' or 'cosine', got {self.distance!r}")
        if self.gradient not in ("straight_through", "rotation"):
            raise ValueError(
                f"expected gradient 'straight_through' or 'rotation', got {self.gradient!r}"
            )
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"expected decay in [0, 1), got {self.decay}")


def gradient_path(latents: torch.Tensor, quantized: torch.Tensor, kind: Gradient) -> torch.Tensor:
    """The value of `quantized`, with gradients routed to `latents` (both `(N, D)`).

    Written as `sg(q) + (f(x) − sg(f(x)))`: the second term is exactly zero in value, so the
    output equals `quantized` bit for bit (what makes `decode(codes) == quantized` hold), while
    its gradient is that of `f`: the identity for straight-through, or the fixed rotation and
    rescaling that carries x onto q for the rotation trick.
    """
    if not (torch.is_grad_enabled() and latents.requires_grad):
        return quantized.detach()  # no gradient to route (eval, no_grad): skip the work
    if kind == "straight_through":
        return quantized.detach() + (latents - latents.detach())
    x = latents.detach()
    q = quantized.detach()
    x_norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q_norm = q.norm(dim=-1, keepdim=True)
    x_hat, q_hat = x / x_norm, q / q_norm.clamp_min(1e-12)
    r = F.normalize(x_hat + q_hat, dim=-1)
    # R·e with R = I − 2rrᵀ + 2q̂êᵀ, never forming the D×D matrix.
    rotated = (
        latents
        - 2 * r * (r * latents).sum(-1, keepdim=True)
        + 2 * q_hat * (x_hat * latents).sum(-1, keepdim=True)
    )
    rotated = rotated * (q_norm / x_norm)
    return q + (rotated - rotated.detach())


@dataclass
class Lookup:
    """What `Codebook.lookup` returns.

    Attributes:
        codes: `(N,)` int64.
        vectors: `(N, d)` code vectors, with the requested gradient path to x (bare otherwise).
        losses: `commitment`, and `codebook` for learned codebooks; weighted.
        counts: `(K,)` float histogram of this step's codes, over all ranks in training.
        dead: scalar float tensor, codes dead after this step (before revival).
    """

    codes: torch.Tensor
    vectors: torch.Tensor
    losses: dict[str, torch.Tensor]
    counts: torch.Tensor
    dead: torch.Tensor


class Codebook(nn.Module):
    """One codebook: lookup, losses, EMA/learned update, k-means init and revival, on rows in
    codebook space. `VectorQuantizer` wraps it with projections; `ResidualVQ` stacks several.

    EMA state is one `(K, d + 1)` buffer `ema`: the running sums of the latents assigned to each
    code, then the running count, so one `index_add_`, one all-reduce and one `lerp_` update both.
    """

    # None: the fused Triton EMA step on CUDA, torch elsewhere; tests force either.
    fused: bool | None = None

    def __init__(self, config: VQConfig, dim: int):
        super().__init__()
        self.config = config
        size = config.codebook_size
        init = torch.randn(size, dim)
        if config.distance == "cosine":
            init = F.normalize(init, dim=-1)
        if config.ema_update:
            self.register_buffer("embed", init)
            self.register_buffer("ema", torch.cat([init, torch.ones(size, 1)], dim=1))
        else:
            self.embed = nn.Parameter(init)
        self.register_buffer("initialized", torch.tensor(not config.kmeans_init))
        self._known_initialized = not config.kmeans_init  # spares a host sync per step

    @property
    def vectors(self) -> torch.Tensor:
        """`(K, d)` code vectors as the search sees them (unit norm for cosine)."""
        if self.config.distance == "cosine" and not self.config.ema_update:
            return F.normalize(self.embed, dim=-1)
        return self.embed

    def lookup(
        self, x: torch.Tensor, clock: torch.Tensor, dead_after: int, gradient: Gradient | None
    ) -> Lookup:
        """Nearest codes for rows `x (N, d)`; in training, also update the codebook and the clock.

        Args:
            x: `(N, d)` fp32 rows in codebook space (already normalized for cosine).
            clock: the owner's `(K,)` int64 row of `CodeUsage.tokens_since_used`, advanced here
                in training.
            dead_after: tokens without a hit after which a code is dead.
            gradient: the gradient path of the returned vectors to `x`, or None for bare code
                vectors (residual VQ applies the path once to the sum of its levels).

        Returns:
            A `Lookup`; see its fields.
        """
        cfg = self.config
        if self.training and not self._known_initialized:
            if not bool(self.initialized):  # False until k-means ran (also in a loaded checkpoint)
                self._kmeans_init(x.detach())
            self._known_initialized = True
        codes = nearest_code(x.detach(), self.vectors.detach(), "l2")
        fused = self.fused if self.fused is not None else x.is_cuda and _triton_available()
        if self.training and cfg.ema_update and fused:
            result = self._ema_step_fused(x, codes, clock, dead_after, gradient)
        else:
            result = self._step_torch(x, codes, clock, dead_after, gradient)
        if self.training and cfg.revive_dead_codes:
            self._revive(x.detach(), clock, dead_after)
        return result

    def _step_torch(self, x, codes, clock, dead_after, gradient) -> Lookup:
        cfg = self.config
        vectors = self.vectors
        quantized = F.embedding(codes, vectors)  # (N, d)
        losses = {"commitment": F.mse_loss(x, quantized.detach()) * cfg.commitment_weight}
        if not cfg.ema_update:
            losses["codebook"] = F.mse_loss(quantized, x.detach()) * cfg.codebook_weight
        with torch.no_grad():
            if self.training and cfg.ema_update:
                counts = self._ema_update(x.detach(), codes)
            else:
                counts = histogram(codes, cfg.codebook_size, across_ranks=self.training)
            if self.training:
                clock.add_(counts.sum().long()).masked_fill_(counts > 0, 0)
            dead = (clock >= dead_after).sum().float()
        if gradient is not None:
            quantized = gradient_path(x, quantized, gradient)
        return Lookup(codes, quantized, losses, counts, dead)

    # Eager inside a compiled model, as `search._nearest_triton` (our launcher is not traceable).
    @torch.compiler.disable
    def _ema_step_fused(self, x, codes, clock, dead_after, gradient) -> Lookup:
        from mediatok.quantize import _triton_vq

        cfg = self.config
        size, dim = self.embed.shape
        shared = size * (dim + 1) + 1  # sums and counts, then tokens seen: summed over ranks
        stats = torch.zeros(shared + 2, device=x.device)  # + squared error, dead count
        x = x.contiguous()
        quantized, commitment = _triton_vq.EMALookup.apply(
            x, self.embed, codes, stats, cfg.commitment_weight, gradient
        )
        if cfg.sync_codebook:
            all_reduce_sum_(stats[:shared])
        _triton_vq.finalize(
            self.ema, stats, self.embed, clock,
            decay=cfg.decay, eps=cfg.eps, dead_after=dead_after,
            cosine=cfg.distance == "cosine", track=True,
        )  # fmt: skip
        counts = stats[: size * (dim + 1)].view(size, dim + 1)[:, dim]
        return Lookup(codes, quantized, {"commitment": commitment}, counts, stats[-1])

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        dim = self.embed.shape[1]
        stats = torch.zeros_like(self.ema)  # (K, d + 1): sums, count
        stats.index_add_(0, codes, torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1))
        if cfg.sync_codebook:
            all_reduce_sum_(stats)
        self.ema.lerp_(stats, 1 - cfg.decay)
        # Mean of the assigned latents; the clamp keeps a code that lost its tokens where it was
        # (sums and count decay together) instead of shrinking it toward zero.
        torch.div(self.ema[:, :dim], self.ema[:, dim:].clamp_min(cfg.eps), out=self.embed)
        if cfg.distance == "cosine":
            self.embed.copy_(F.normalize(self.embed, dim=-1))
        return stats[:, dim]

    # Run eagerly even inside a compiled model (inductor on the CPU mis-compiled the random
    # sampling of `_revive` and `_kmeans_init`, seen with torch 2.11).
    @torch.compiler.disable
    @torch.no_grad()
    def _revive(self, x: torch.Tensor, clock: torch.Tensor, dead_after: int) -> None:
        """Replace each code whose clock reached `dead_after` by a row of rank 0's batch
        (identical on all ranks) and restart its clock.

        With no host sync: every step draws one candidate row per code (distinct rows when the
        batch has at least K) and keeps those of the dead codes; a step where no code is dead
        changes nothing. Asking first whether any code is dead would stall the GPU pipeline
        once per step.
        """
        revived = (clock >= dead_after)[:, None]  # (K, 1)
        count, size = x.shape[0], clock.shape[0]
        if count >= size:
            picks = torch.randperm(count, device=x.device)[:size]
        else:
            picks = torch.randint(count, (size,), device=x.device)
        fresh = broadcast_(x[picks].contiguous())  # (K, d)
        if self.config.ema_update:
            self.embed.copy_(torch.where(revived, fresh, self.embed))
            fresh = torch.cat([fresh, fresh.new_ones(size, 1)], dim=1)
            self.ema.copy_(torch.where(revived, fresh, self.ema))
        else:
            self.embed.data.copy_(torch.where(revived, fresh, self.embed.data))
        clock.masked_fill_(revived[:, 0], 0)

    @torch.compiler.disable
    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor) -> None:
        cfg = self.config
        per_rank = -(-cfg.kmeans_samples // world_size())
        local = x[torch.randperm(x.shape[0], device=x.device)[:per_rank]]
        pool = all_gather_rows(local)
        centers = self.embed.detach().clone()
        if rank() == 0:
            centers = kmeans(pool, cfg.codebook_size, cfg.kmeans_iters, cfg.distance)
        broadcast_(centers)
        if cfg.ema_update:
            self.embed.copy_(centers)
            self.ema.copy_(torch.cat([centers, centers.new_ones(len(centers), 1)], dim=1))
        else:
            self.embed.data.copy_(centers)
        self.initialized.fill_(True)


@torch.no_grad()
def kmeans(
    samples: torch.Tensor, num_clusters: int, iters: int, distance: str = "l2"
) -> torch.Tensor:
    """Lloyd's k-means on `(M, d)` samples → `(num_clusters, d)` centers.

    Centers start at random samples (with replacement and a little noise when M < K); a cluster
    that loses all its samples keeps its center. Spherical for cosine distance.
    """
    num_samples = samples.shape[0]
    if num_samples >= num_clusters:
        centers = samples[torch.randperm(num_samples, device=samples.device)[:num_clusters]]
    else:
        picks = torch.randint(num_samples, (num_clusters,), device=samples.device)
        centers = samples[picks] + 1e-3 * samples.std() * torch.randn_like(samples[picks])
    centers = centers.clone()
    for _ in range(iters):
        codes = nearest_code(samples, centers, "l2")
        sums = torch.zeros_like(centers).index_add_(0, codes, samples)
        counts = torch.bincount(codes, minlength=num_clusters).unsqueeze(1)
        centers = torch.where(counts > 0, sums / counts.clamp_min(1), centers)
        if distance == "cosine":
            centers = F.normalize(centers, dim=-1)
    return centers


class VectorQuantizer(Quantizer):
    """A single-codebook VQ; see the module docstring and `VQConfig`."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.codebook_sizes = (config.codebook_size,)
        self.check_finite = config.check_finite
        search_dim = config.codebook_dim or config.dim
        self.project_in, self.project_out = projections(config.dim, search_dim)
        self.codebook = Codebook(config, search_dim)
        dead_after = config.dead_code_after_tokens or 32 * config.codebook_size
        self.usage = CodeUsage(1, config.codebook_size, dead_after)

    def _to_search_space(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.project_in(latents)
        if self.config.distance == "cosine":
            x = F.normalize(x, dim=-1)
        return x

    def _quantize(self, latents: torch.Tensor) -> Step:
        x = self._to_search_space(latents)  # (N, d)
        usage = self.usage
        found = self.codebook.lookup(
            x, usage.tokens_since_used[0], usage.dead_after_tokens, self.config.gradient
        )
        quantized = self.project_out(found.vectors)
        codes, counts, dead = found.codes.unsqueeze(1), found.counts.unsqueeze(0), found.dead
        return Step(quantized, codes, found.losses, counts, dead.reshape(1))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        vectors = F.embedding(codes[:, 0], self.codebook.vectors)
        return self.project_out(vectors.detach())

    @property
    def codebook_vectors(self) -> torch.Tensor:
        """`(K, D)` code vectors in latent space (through `project_out`)."""
        with torch.no_grad():
            return self.project_out(self.codebook.vectors)
