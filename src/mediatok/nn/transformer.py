"""Pre-norm transformer blocks on `torch.nn.functional.scaled_dot_product_attention`.

SDPA picks the fused flash or memory-efficient kernel on CUDA (bf16/fp16) and the math kernel
elsewhere, so the same module is fast on a GPU and exact on a CPU. Layout: `(B, N, D)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: D.
        heads: number of heads; D must divide by it.
        qk_norm: LayerNorm on queries and keys per head (stabilizes large models in bf16).
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"expected dim divisible by heads, got dim={dim}, heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """`(B, N, D)` → `(B, N, D)`."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, is_causal=causal)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


class MLP(nn.Module):
    """Two linear layers with a GELU between: `(…, D)` → `(…, D)`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=causal)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """`depth` blocks and a final LayerNorm: `(B, N, D)` → `(B, N, D)`."""

    def __init__(
        self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False
    ):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qk_norm) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, causal=causal)
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    """The ViT / BERT initialization, for `model.apply(init_weights)`: linear and embedding
    weights from a truncated normal (std 0.02), zero linear biases, unit LayerNorm scales and
    zero shifts (MaskGIT's too)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
