"""Llama blocks for the autoregressive generator: RMSNorm, causal attention with RoPE and a static
KV cache, SwiGLU, and the pre-norm block.

Paper: Llama (Touvron et al. 2023), as LlamaGen (Sun et al. 2024) uses it for image tokens: no
biases, RMSNorm before each branch, rotary positions, SwiGLU.

How we differ: RMSNorm keeps its statistics in fp32 under bf16 autocast; the KV cache lives in
module buffers so that a CUDA-graph-captured decode step writes it in place; optional RMSNorm on
queries and keys per head.

Layout: activations `(B, n, D)`; cos/sin `(n, head_dim/2)`; KV cache `(B, heads, S, head_dim)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mediatok.nn.rope import apply_rope

__all__ = ["CausalSelfAttention", "LlamaBlock", "RMSNorm", "SwiGLU"]


class RMSNorm(nn.Module):
    """RMSNorm with fp32 statistics (a bf16 mean of squares drops small channels): `(…, D)`."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Causal self-attention with RoPE and an optional static KV cache.

    Modes: `"plain"` (causal over the n inputs), `"prefill"` (the same, and the keys and values
    are written to cache slots `[0, n)`), `"decode"` (one input at cache slot `slot`, attending
    over the first S' slots of the cache, S' = `visible`'s last size, through the `visible`
    mask: static shapes for `torch.compile`).

    Args:
        dim, heads: width and heads (dim / heads even, for RoPE).
        norm_eps: epsilon of the query/key norms.
        qk_norm: RMSNorm on queries and keys per head.
        dropout: on the attention weights, in training.
    """

    def __init__(self, dim: int, heads: int, norm_eps: float, qk_norm: bool, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        norm = (lambda: RMSNorm(self.head_dim, norm_eps)) if qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()
        self.dropout = dropout
        # (B, heads, S, head_dim), set by ARTransformer.allocate_cache. Buffers, so that CUDA
        # graphs treat them as static inputs that the captured step may write in place.
        self.register_buffer("k_cache", None, persistent=False)
        self.register_buffer("v_cache", None, persistent=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mode: str = "plain", slot=None, visible=None
    ) -> Tensor:
        """`(B, n, D)` → `(B, n, D)`; cos/sin `(n, head_dim/2)`; slot `(1,)`; visible `(1, 1, 1, S')`."""
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k, v = qkv.unbind(0)  # (B, heads, n, head_dim) each
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        if mode == "decode":
            k_cache, v_cache, q = self.k_cache, self.v_cache, q.to(self.k_cache.dtype)
            k_cache.index_copy_(2, slot, k.to(k_cache.dtype))
            v_cache.index_copy_(2, slot, v.to(v_cache.dtype))
            span = visible.shape[-1]  # read only the slots that may be visible
            keys, values = k_cache[:, :, :span], v_cache[:, :, :span]  # (B, heads, S', head_dim)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
        else:
            if mode == "prefill":
                self.k_cache[:, :, : k.shape[2]] = k.to(self.k_cache.dtype)
                self.v_cache[:, :, : v.shape[2]] = v.to(self.v_cache.dtype)
            dropout = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, n, D)


class SwiGLU(nn.Module):
    """`down(silu(gate(x)) · up(x))` (Shazeer 2020): `(…, D)` → `(…, D)`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (…, hidden) each
        return self.down(F.silu(gate) * up)


class LlamaBlock(nn.Module):
    """Pre-norm Llama block: x + attention(norm(x)), then x + swiglu(norm(x)).

    Args:
        dim, heads, norm_eps, qk_norm, dropout: see `CausalSelfAttention` (dropout also on both
            branches).
        hidden: SwiGLU hidden width.
    """

    def __init__(
        self, dim: int, heads: int, hidden: int, norm_eps: float, qk_norm: bool, dropout: float
    ):
        super().__init__()
        self.attention_norm = RMSNorm(dim, norm_eps)
        self.attention = CausalSelfAttention(dim, heads, norm_eps, qk_norm, dropout)
        self.mlp_norm = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *args) -> Tensor:
        """`(B, n, D)` → `(B, n, D)`; `args` are `CausalSelfAttention.forward`'s after x."""
        x = x + self.dropout(self.attention(self.attention_norm(x), *args))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))
