"""Rectified-flow pieces of FlexTok's decoder: the DiT transformer, the training draw, guidance
and the sampling schedule.

Convention (rectified flow as in SD3, Esser et al. 2024): x_t = t·ε + (1 − t)·x₀ with t in
[0, 1], t = 1 pure noise; the network predicts the velocity v = ε − x₀, so x₀ = x_t − t·v and
an Euler step from t to s < t is x_s = x_t + (s − t)·v.

`FlowTransformer` is DiT (Peebles & Xie 2023, "Scalable diffusion models with transformers")
over a sequence [conditioning tokens, noised patch tokens]: every block is modulated by the time
step through adaLN-zero (shift, scale and a zero-initialized gate per branch), the final layer
is adaLN then a zero-initialized linear map, so a fresh model predicts v = 0. Its attention
reuses `mediatok.nn.Block`'s weights.

Layout: images `(B, 3, H, W)`; tokens `(B, N, D)`; time `(B,)` in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.nn import Attention, Block, init_weights


class ProcessCache(dict):
    """State of one process (a loaded network, a compiled function) that a copy leaves behind:
    the EMA's deep copy of a model must not copy a compiled function."""

    def __deepcopy__(self, memo: dict) -> ProcessCache:
        return ProcessCache()


def attend(attention: Attention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`attention` (a `mediatok.nn.Attention`) on `x (B, N, D)` with a boolean `(N, N)` mask
    (True: may attend), or none."""
    q, k, v = rearrange(
        attention.qkv(x), "b n (three h d) -> three b h n d", three=3, h=attention.heads
    )
    q, k = attention.q_norm(q), attention.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attention.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


def masked_block(block: Block, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A pre-norm `mediatok.nn.Block` with a boolean `(N, N)` attention mask."""
    x = x + attend(block.attn, block.norm1(x), mask)
    return x + block.mlp(block.norm2(x))


def time_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the time `(B,)` in [0, 1], scaled by 1000 as DiT's integer
    steps: `(B, dim)` float32 (cos half, then sin half)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = 1000.0 * t.float()[:, None] * frequencies[None]  # (B, dim/2)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimeEmbedding(nn.Module):
    """Time `(B,)` → `(B, D)`: sinusoidal features, then Linear, SiLU, Linear (DiT)."""

    def __init__(self, dim: int, features: int = 256):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        embedding = time_features(t, self.features)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`x (B, N, D)` · (1 + scale) + shift, with per-image `(B, D)` shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """A transformer block with adaLN-zero: from the condition c `(B, D)`, SiLU and a linear
    map give shift, scale and gate of the attention and of the MLP branch; the map starts at
    zero, so the block starts as the identity (DiT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.block = Block(dim, heads, mlp_ratio)
        # The shift and scale come from the condition: LayerNorms without their own affine.
        self.block.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.block.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation = nn.Linear(dim, 6 * dim)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """`x (B, N, D)`, condition `(B, D)` → `(B, N, D)`."""
        chunks = self.modulation(F.silu(condition)).chunk(6, dim=-1)  # 6 × (B, D)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = chunks
        attention_in = modulate(self.block.norm1(x), shift_a, scale_a)
        x = x + gate_a[:, None] * attend(self.block.attn, attention_in, None)
        mlp_in = modulate(self.block.norm2(x), shift_m, scale_m)
        return x + gate_m[:, None] * self.block.mlp(mlp_in)


class FlowTransformer(nn.Module):
    """DiT over [conditioning tokens, noised patches] → the velocity of every patch.

    Args:
        dim, depth, heads: the transformer's.
        patch_size: p; patches of 3·p·p pixels in and out.
        grid: patches per side (H / p).
    """

    def __init__(self, dim: int, depth: int, heads: int, patch_size: int, grid: int):
        super().__init__()
        self.patch_size, self.grid = patch_size, grid
        pixels = 3 * patch_size * patch_size
        self.patch_embed = nn.Linear(pixels, dim)
        self.patch_positions = nn.Parameter(dim**-0.5 * torch.randn(grid * grid, dim))
        self.time_embed = TimeEmbedding(dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation_out = nn.Linear(dim, 2 * dim)
        self.to_pixels = nn.Linear(dim, pixels)

    def zero_init(self) -> None:
        """adaLN-zero: every modulation map and the output map start at zero (DiT);
        call after the model's generic initialization."""
        for module in (*[b.modulation for b in self.blocks], self.modulation_out, self.to_pixels):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        noised: torch.Tensor,
        t: torch.Tensor,
        conditions: torch.Tensor,
        capture_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict the velocity.

        Args:
            noised: x_t `(B, 3, H, W)`.
            t: `(B,)` times in [0, 1].
            conditions: `(B, M, D)` tokens read before the patches (positions included).
            capture_layer: also return the patch tokens after this many blocks (REPA).

        Returns:
            The velocity `(B, 3, H, W)` float32 and the captured `(B, N, D)` patch tokens (or
            None).
        """
        p = self.patch_size
        patches = rearrange(noised, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)  # (B, N, 3pp)
        patches = self.patch_embed(patches.to(self.patch_embed.weight.dtype))
        x = torch.cat([conditions.to(patches.dtype), patches + self.patch_positions], dim=1)
        condition = self.time_embed(t)  # (B, D)
        count, captured = conditions.shape[1], None
        for index, block in enumerate(self.blocks, start=1):
            x = block(x, condition)  # (B, M + N, D)
            if index == capture_layer:
                captured = x[:, count:]
        shift, scale = self.modulation_out(F.silu(condition)).chunk(2, dim=-1)
        out = self.to_pixels(modulate(self.norm_out(x[:, count:]), shift, scale))  # (B, N, 3pp)
        velocity = rearrange(
            out, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid, p=p, q=p
        )  # (B, 3, H, W)
        return velocity.float(), captured


def init_flow_weights(module: nn.Module) -> None:
    """`mediatok.nn.init_weights`, skipping the LayerNorms that have no affine of their own."""
    if not (isinstance(module, nn.LayerNorm) and module.weight is None):
        init_weights(module)


def sample_times(
    batch: int,
    mean: float,
    std: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """Logit-normal times (SD3): t = sigmoid(mean + std·n), n ~ N(0, 1); `(B,)` float32."""
    where = generator.device if generator is not None else device
    normal = torch.randn(batch, generator=generator, device=where)
    return torch.sigmoid(mean + std * normal).to(device)


def euler_sigmas(steps: int) -> torch.Tensor:
    """The times of a `steps`-step Euler sampler from t = 1 to t = 0, from diffusers'
    `FlowMatchEulerDiscreteScheduler`: `(steps + 1,)` float32, 1, 1 − 1/T, ..., 1/T, 0.

    With `num_train_timesteps = T` and `shift = 1` (no resolution shift, no Karras,
    exponential or beta spacing, no terminal stretch, deterministic steps) its `set_timesteps(T)`
    spaces T sigmas evenly from 1 to 1/T and appends 0, and its `step` is
    x ← x + (σ_next − σ)·v: a plain Euler loop on x_t = t·ε + (1 − t)·x₀ (the test checks both).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = euler_scheduler(FlowMatchEulerDiscreteScheduler, steps)
    return scheduler.sigmas.float().cpu()


def euler_scheduler(scheduler_class: type, steps: int):
    """`FlowMatchEulerDiscreteScheduler` set to the plain Euler grid of `euler_sigmas`."""
    scheduler = scheduler_class(
        num_train_timesteps=steps,
        shift=1.0,
        use_dynamic_shifting=False,
        invert_sigmas=False,
        shift_terminal=None,
        use_karras_sigmas=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        stochastic_sampling=False,
    )
    scheduler.set_timesteps(steps)
    return scheduler


def apg(
    x0_cond: torch.Tensor,
    x0_uncond: torch.Tensor,
    scale: torch.Tensor,
    eta: torch.Tensor,
    norm_threshold: torch.Tensor,
    momentum: torch.Tensor,
    running: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and artifacts
    of high guidance scales in diffusion models"), on the clean-image predictions x̂₀.

    Per image, with Δ = x̂₀(cond) − x̂₀(uncond):
    1. momentum: Δ ← Δ + β·Δ̄ and Δ̄ ← Δ (Δ̄ starts at 0; β = `momentum`, negative in the
       paper; 0 turns it off);
    2. rescaling: Δ ← Δ · min(1, r / rms(Δ)), rms over the image's C·H·W values (the
       paper bounds the L2 norm; the RMS makes one r fit every image size; r = 0 turns it off);
    3. projection: Δ∥ = (⟨Δ, x̂₀c⟩ / ⟨x̂₀c, x̂₀c⟩)·x̂₀c, Δ⊥ = Δ − Δ∥;
    4. x̂₀ = x̂₀c + (w − 1)·(Δ⊥ + η·Δ∥) (η = `eta`; η = 1 with no rescaling and no momentum
       is CFG, η = 0 drops the parallel part that oversaturates).

    Args:
        x0_cond, x0_uncond: `(B, C, H, W)` float32.
        scale: w; eta: η; norm_threshold: r; momentum: β — 0-d float32 tensors (inputs of a
            compiled step, so a sweep compiles nothing new).
        running: Δ̄ `(B, C, H, W)`.

    Returns:
        The guided x̂₀ `(B, C, H, W)` and the new Δ̄.
    """
    delta = x0_cond - x0_uncond
    delta = delta + momentum * running
    running = delta
    rms = delta.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()  # (B, 1, 1, 1)
    factor = torch.clamp(norm_threshold / rms.clamp_min(1e-12), max=1.0)
    delta = torch.where(norm_threshold > 0, delta * factor, delta)
    dot = (delta * x0_cond).sum(dim=(1, 2, 3), keepdim=True)
    parallel = dot / x0_cond.pow(2).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) * x0_cond
    update = (delta - parallel) + eta * parallel
    return x0_cond + (scale - 1) * update, running
