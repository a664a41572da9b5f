"""Streaming-capable 1D building blocks of the audio codecs, and WavTokenizer's encoder and
decoder stacks built from them.

Every block here computes each output frame from a bounded window of input frames, with no
statistics over time (per-frame LayerNorm only), so that

- a batch of right-padded items gives each item the result it would get alone (`valid` masks
  what lies beyond an item's length to zero before every operation that mixes frames: the zeros
  a single item would see as padding);
- a chunk of a long signal, given enough context on both sides, gives exactly the frames of one
  pass over the whole signal (each block reports its reach through `reach`, so a model derives
  its receptive field from its layers);
- a causal block runs on a stream of chunks: it keeps what it still needs of the past (the last
  inputs of a conv, the last keys and values of an attention layer, the unfinished overlap-add of
  the iSTFT head) in a `StreamState`, under its module name, and gives the same output as one
  offline pass.

Layouts: convs and ConvNeXt blocks read `(B, C, T)`; attention blocks and the head read
`(B, T, D)`; `valid` is `(B,)` int64, frames of each item at the block's resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.nn import MLP, autocast_off


class Reach(NamedTuple):
    """How far one output frame sees, in input samples (or frames), past its own span.

    Attributes:
        left: input steps before the first one the frame covers.
        right: input steps after the last one it covers.
        jump: input steps per frame at this depth (the product of the strides so far).
    """

    left: int
    right: int
    jump: int


@dataclass
class StreamState:
    """What a causal stream carries from one chunk to the next.

    Attributes:
        role: "encoder" or "decoder": a state fits only the side that made it.
        frames: frames (tokens) already streamed; attention layers use it to tell real past keys
            from the nothing before the start.
        tails: per layer, keyed by module name, a fixed-size tensor, batch first: a causal conv's last inputs
            `(B, C, left_padding)`, an attention layer's last keys and values
            `(B, 2, H, window, head_dim)`, the iSTFT head's unfinished overlap-add
            `(B, n_fft − hop)`.
    """

    role: str
    frames: int = 0
    tails: dict[str, torch.Tensor] = field(default_factory=dict)


class Streaming(nn.Module):
    """A block that keeps a tail in a `StreamState`; its model sets `stream_key` to its name."""

    stream_key: str = ""


def mask_time(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Zero `x (B, C, T)` at frames `t >= valid[b]` (`valid (B,)`); `x` itself when None."""
    if valid is None:
        return x
    beyond = torch.arange(x.shape[-1], device=x.device) >= valid[:, None]  # (B, T)
    return x.masked_fill(beyond[:, None, :], 0)


class Conv(Streaming):
    """Conv1d that pads with zeros to keep `T_out = T_in / stride` (T_in a multiple of stride).

    Causal: all padding on the left, so output t sees inputs ≤ its own span. Otherwise the
    padding is split, the extra step (odd totals) going left, as Encodec's SEANet does.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups: as `nn.Conv1d`.
        causal: left padding only; streams with a tail of `left` input frames.
        weight_norm: weight-norm parametrization (per output channel).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        causal: bool = False,
        weight_norm: bool = False,
    ):
        super().__init__()
        conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv) if weight_norm else conv
        self.stride = stride
        total = (kernel_size - 1) * dilation + 1 - stride
        if total < 0:
            raise ValueError(
                f"expected a kernel span >= stride, got kernel {kernel_size}, dilation "
                f"{dilation}, stride {stride}"
            )
        self.left = total if causal else total - total // 2
        self.right = total - self.left

    def init_fan_in(self) -> None:
        """Weights from N(0, 1 / fan_in), zero bias: a layer keeps the variance of its input
        rather than shrinking it by 3 (PyTorch's default) and adding a constant of its own."""
        weight = self.conv.weight.detach()
        weight = torch.randn_like(weight) * weight[0].numel() ** -0.5
        with torch.no_grad():
            if nn.utils.parametrize.is_parametrized(self.conv, "weight"):
                self.conv.weight = weight  # weight norm: sets the direction and the norm
            else:
                self.conv.weight.copy_(weight)
            self.conv.bias.zero_()

    def reach(self, reach: Reach) -> Reach:
        return Reach(
            reach.left + self.left * reach.jump,
            reach.right + self.right * reach.jump,
            reach.jump * self.stride,
        )

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """`(B, C_in, T)` → `(B, C_out, T / stride)`."""
        assert x.shape[-1] % self.stride == 0, "inputs are padded to a multiple of the hop"
        x = mask_time(x, valid)
        if state is None:
            x = F.pad(x, (self.left, self.right))
        elif self.left:
            assert self.right == 0, "only causal convs stream"
            tail = state.tails.get(self.stream_key)
            if tail is None:  # the zeros of the offline left padding
                tail = x.new_zeros(x.shape[0], x.shape[1], self.left)
            x = torch.cat([tail, x], dim=-1)  # (B, C_in, left + T)
            state.tails[self.stream_key] = x[..., -self.left :].clone()
        return self.conv(x)


class ResidualUnit(nn.Module):
    """SEANet residual unit: x + conv1(elu(conv3_dilated(elu(x)))), inner width dim / 2."""

    def __init__(self, dim: int, dilation: int, causal: bool, weight_norm: bool):
        super().__init__()
        hidden = max(dim // 2, 1)
        self.conv1 = Conv(dim, hidden, 3, dilation=dilation, causal=causal, weight_norm=weight_norm)
        self.conv2 = Conv(hidden, dim, 1, causal=causal, weight_norm=weight_norm)

    def reach(self, reach: Reach) -> Reach:
        return self.conv1.reach(reach)  # the 1×1 conv and the skip add nothing

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """`(B, C, T)` → `(B, C, T)`."""
        return x + self.conv2(F.elu(self.conv1(F.elu(x), valid, state)))


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_valid: torch.Tensor,
    window: int,
    causal: bool,
) -> torch.Tensor:
    """Attention of each query to the keys within `window` frames (before it only, if causal).

    Blocked: queries go in blocks of P frames, each block against the P + window (+ window)
    keys it can see, so time and memory are O(T · window) rather than O(T²). A query always
    sees itself, so a row is never empty (the rows of padding frames, discarded later).

    Args:
        q: `(B, H, T, d)` queries at positions 0 … T − 1.
        k, v: `(B, H, window + T + R, d)` keys and values at positions −window … T + R − 1,
            with R = 0 if causal else window.
        key_valid: `(B, window + T + R)` bool: which keys exist.
        window: frames each side.
        causal: look left only.

    Returns:
        `(B, H, T, d)`.
    """
    batch, _, length, _ = q.shape
    right = 0 if causal else window
    block = min(max(window, 32), length)
    num_blocks = math.ceil(length / block)
    extra = num_blocks * block - length
    span = block + window + right
    q = F.pad(q, (0, 0, 0, extra))  # (B, H, n·P, d)
    k, v = (F.pad(t, (0, 0, 0, extra)).unfold(2, span, block) for t in (k, v))  # (B, H, n, d, S)
    key_valid = F.pad(key_valid, (0, extra), value=False).unfold(1, span, block)  # (B, n, S)
    # key position − query position, for query i and key m of a block: (P, S)
    offset = torch.arange(span, device=q.device) - torch.arange(block, device=q.device)[:, None]
    offset = offset - window
    band = (offset >= -window) & (offset <= right)
    mask = (band & key_valid[:, :, None, :]) | (offset == 0)  # (B, n, P, S)
    q = rearrange(q, "b h (n p) d -> (b n) h p d", p=block)  # (B·n, H, P, d)
    k, v = (rearrange(t, "b h n d s -> (b n) h s d") for t in (k, v))  # (B·n, H, S, d)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=rearrange(mask, "b n p s -> (b n) 1 p s")
    )
    out = rearrange(out, "(b n) h p d -> b h (n p) d", b=batch)  # (B, H, n·P, d)
    return out[:, :, :length]


class AttentionBlock(Streaming):
    """Pre-LayerNorm transformer block with windowed self-attention: x + attn(norm(x)), then
    x + mlp(norm(x)). Each frame sees ±`window` frames (causal: the `window` before it and
    itself); positions come only from the convs around it, so there is no positional encoding.

    Args:
        dim: D.
        heads: attention heads; D must divide by it.
        window: frames each side.
        causal: look left only; streams with the last `window` keys and values.
        mlp_ratio: MLP hidden width / D.
    """

    def __init__(self, dim: int, heads: int, window: int, causal: bool, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"expected dim divisible by heads, got dim={dim}, heads={heads}")
        self.heads, self.window, self.causal = heads, window, causal
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def reach(self, reach: Reach) -> Reach:
        right = 0 if self.causal else self.window
        return Reach(
            reach.left + self.window * reach.jump, reach.right + right * reach.jump, reach.jump
        )

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """`(B, T, D)` → `(B, T, D)`."""
        length, window = x.shape[1], self.window
        q, k, v = rearrange(
            self.qkv(self.norm1(x)), "b t (three h d) -> three b h t d", three=3, h=self.heads
        )  # (B, H, T, d) each
        if state is None:
            right = 0 if self.causal else window
            k, v = (F.pad(t, (0, 0, window, right)) for t in (k, v))  # (B, H, W + T + R, d)
            positions = torch.arange(-window, length + right, device=x.device)
            end = length if valid is None else valid[:, None]
            key_valid = ((positions >= 0) & (positions < end)).expand(len(x), -1)
        else:
            assert self.causal, "only causal attention streams"
            tail = state.tails.get(self.stream_key)
            if tail is None:
                tail = k.new_zeros(k.shape[0], 2, k.shape[1], window, k.shape[-1])
            k = torch.cat([tail[:, 0], k], dim=2)  # (B, H, W + T, d)
            v = torch.cat([tail[:, 1], v], dim=2)
            state.tails[self.stream_key] = torch.stack([k[:, :, -window:], v[:, :, -window:]], 1)
            positions = torch.arange(-window, length, device=x.device) + state.frames
            key_valid = (positions >= 0).expand(len(x), -1)
        out = local_attention(q, k, v, key_valid, window, self.causal)
        x = x + self.proj(rearrange(out, "b h t d -> b t (h d)"))  # (B, T, D)
        return x + self.mlp(self.norm2(x))


class ConvNeXtBlock(nn.Module):
    """Vocos's ConvNeXt block: depthwise conv k7, LayerNorm, Linear dim → intermediate, GELU,
    Linear back, layer scale, residual.

    Args:
        dim: C.
        intermediate: hidden width of the pointwise MLP.
        layer_scale: initial value of the per-channel output scale (Vocos: 1 / num_blocks).
        causal: the depthwise conv pads left only.
    """

    def __init__(self, dim: int, intermediate: int, layer_scale: float, causal: bool):
        super().__init__()
        self.dwconv = Conv(dim, dim, 7, groups=dim, causal=causal)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def reach(self, reach: Reach) -> Reach:
        return self.dwconv.reach(reach)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """`(B, C, T)` → `(B, C, T)`."""
        h = rearrange(self.dwconv(x, valid, state), "b c t -> b t c")  # (B, T, C)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + rearrange(h, "b t c -> b c t")  # (B, C, T)


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Frames `(B, T, N)` placed every `hop` samples and summed → `(B, (T − 1)·hop + N)`."""
    batch, length, size = frames.shape
    total = (length - 1) * hop + size
    summed = F.fold(
        frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, size), stride=(1, hop)
    )  # (B, 1, 1, total)
    return summed.reshape(batch, total)


class ISTFTHead(Streaming):
    """Vocos's inverse-STFT head: per frame, Linear → log-magnitude and phase of n_fft/2 + 1
    bins, magnitude exp(x) clipped at 1e2, irfft, Hann window, overlap-add every hop samples.
    Runs in fp32 whatever the autocast.

    Non-causal ("same" padding, as Vocos): frames are centred on their hop, (n_fft − hop) / 2
    samples are trimmed from both ends and the sum is divided by the overlap-added squared
    window. Causal: frame f covers samples [f·hop, f·hop + n_fft), output block f is
    [f·hop, (f+1)·hop), so it depends on frames ≤ f only, and the sum is divided by the
    *steady-state* squared-window envelope (periodic in the hop; constant for Hann when
    n_fft / hop ≥ 3). The first n_fft − hop samples of a file therefore fade in (fewer frames
    overlap there); the stream carries the unfinished n_fft − hop samples to the next chunk.

    Args:
        dim: D of the input frames.
        n_fft: FFT size, even, at least 2·hop.
        hop: samples per frame.
        causal: see above.
    """

    def __init__(self, dim: int, n_fft: int, hop: int, causal: bool):
        super().__init__()
        self.n_fft, self.hop, self.causal = n_fft, hop, causal
        self.proj = nn.Linear(dim, n_fft + 2)
        window = torch.hann_window(n_fft)
        self.register_buffer("window", window, persistent=False)
        squared = F.pad(window.square(), (0, -n_fft % hop))
        steady = squared.reshape(-1, hop).sum(0)  # (hop,) sum over every frame a sample sees
        self.register_buffer("steady_envelope", steady, persistent=False)

    def reach(self, reach: Reach) -> Reach:
        """In frames: the frames whose windows reach an output block."""
        if self.causal:
            left, right = math.ceil(self.n_fft / self.hop) - 1, 0
        else:
            left = right = math.ceil((self.n_fft + self.hop) / (2 * self.hop)) - 1
        return Reach(reach.left + left * reach.jump, reach.right + right * reach.jump, reach.jump)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """`(B, T, D)` → audio `(B, T·hop)` float32."""
        batch, length, _ = x.shape
        hop, n_fft = self.hop, self.n_fft
        with autocast_off(x.device.type):
            x = self.proj(x.to(self.proj.weight.dtype)).float()  # (B, T, n_fft + 2)
            magnitude, phase = x.chunk(2, dim=-1)  # (B, T, n_fft / 2 + 1) each
            spectrum = torch.polar(magnitude.exp().clamp(max=1e2), phase)
            frames = torch.fft.irfft(spectrum, n=n_fft, dim=-1) * self.window  # (B, T, n_fft)
            keep = None
            if valid is not None:
                keep = (torch.arange(length, device=x.device) < valid[:, None]).float()  # (B, T)
                frames = frames * keep[..., None]
            summed = overlap_add(frames, hop)  # (B, (T − 1)·hop + n_fft)
            if self.causal:
                audio = self._causal(summed, length, state)
            else:
                squares = self.window.square().expand(batch if keep is not None else 1, length, -1)
                if keep is not None:
                    squares = squares * keep[..., None]
                envelope = overlap_add(squares, hop)  # (B or 1, (T − 1)·hop + n_fft)
                trim = (n_fft - hop) // 2
                summed, envelope = summed[:, trim:-trim], envelope[:, trim:-trim]  # (·, T·hop)
                audio = torch.where(envelope > 1e-11, summed / envelope.clamp_min(1e-11), 0)
            if valid is not None:
                audio = mask_time(audio[:, None], valid * hop)[:, 0]
            return audio

    def _causal(self, summed: torch.Tensor, length: int, state: StreamState | None) -> torch.Tensor:
        """Keep the first T·hop samples of the sum (plus the previous chunk's carry)."""
        carry = self.n_fft - self.hop
        if state is not None:
            tail = state.tails.get(self.stream_key)
            if tail is not None:
                summed = torch.cat([summed[:, :carry] + tail, summed[:, carry:]], dim=1)
            state.tails[self.stream_key] = summed[:, length * self.hop :].clone()
        return summed[:, : length * self.hop] / self.steady_envelope.repeat(length)


class SEANetEncoder(nn.Module):
    """SEANet-style encoder with a windowed-attention context stage: audio `(B, 1, S)`, S a
    multiple of the hop → latents `(B, S / hop, latent_dim)`. Conv k7; per stride: residual
    units (dilated 1, base, base², ...), ELU, strided conv k = 2·stride doubling the width;
    attention blocks at the last width; ELU, conv k7.

    Args:
        channels: width of the first stage.
        strides: downsampling per stage, first to last (product: the hop).
        residual_layers, dilation_base: residual units per stage and their dilation base.
        attention_layers, heads, window: the windowed attention blocks.
        latent_dim: D of the output.
        causal: every layer causal.
        weight_norm: weight-norm parametrization of the convs.

    Initialization: every conv `Conv.init_fan_in` (N(0, 1 / fan_in), zero bias). With
    PyTorch's default the signal shrank through the stages while each conv added its random
    bias, so at init the latents of speech were one constant vector plus a little signal (mean
    cosine to their mean 0.988, for the demo config and wavtokenizer-75 alike); k-means then
    fitted the codebook to that speck, the first updates moved the latents off it, and the
    codebook collapsed to 1–3 codes within 10 steps, recovering only by dead-code revival
    hundreds of steps later. Now the mean cosine is 0.11–0.40 (four configs, two seeds each) and
    the demo config uses at least 50 of its 256 codes at every logged step from step 10 on
    (three seeds, 100 steps; numbers in the issue 4 note).
    """

    def __init__(
        self,
        channels: int,
        strides: tuple[int, ...],
        residual_layers: int,
        dilation_base: int,
        attention_layers: int,
        heads: int,
        window: int,
        latent_dim: int,
        causal: bool,
        weight_norm: bool,
    ):
        super().__init__()
        width = channels
        self.conv_in = Conv(1, width, 7, causal=causal, weight_norm=weight_norm)
        self.stages = nn.ModuleList()
        for stride in strides:
            units = [
                ResidualUnit(width, dilation_base**j, causal, weight_norm)
                for j in range(residual_layers)
            ]
            down = Conv(
                width, 2 * width, 2 * stride, stride, causal=causal, weight_norm=weight_norm
            )
            self.stages.append(nn.ModuleList([*units, down]))
            width *= 2
        self.blocks = nn.ModuleList(
            AttentionBlock(width, heads, window, causal) for _ in range(attention_layers)
        )
        self.conv_out = Conv(width, latent_dim, 7, causal=causal, weight_norm=weight_norm)
        for module in self.modules():
            if isinstance(module, Conv):
                module.init_fan_in()

    def reach(self) -> Reach:
        """How far a latent sees, in samples, walked through the layers."""
        layers = [self.conv_in, *(layer for stage in self.stages for layer in stage)]
        return reach_of([*layers, *self.blocks, self.conv_out])

    def forward(
        self,
        audio: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """Audio `(B, 1, S)` of any float dtype → latents `(B, T, latent_dim)`; `valid`: `(B,)`
        samples per item, multiples of the hop."""
        # float64 is what `torch.from_numpy(soundfile.read(path)[0])` gives; the weights' dtype
        # (as the decoder casts its input) spares every caller the cast.
        x = self.conv_in(audio.to(self.conv_in.conv.bias.dtype), valid, state)  # (B, C, S)
        for stage in self.stages:
            *units, down = stage
            for unit in units:
                x = unit(x, valid, state)
            x = down(F.elu(x), valid, state)  # (B, 2C, S / stride)
            valid = None if valid is None else valid // down.stride
        x = rearrange(x, "b c t -> b t c")  # (B, T, C)
        for block in self.blocks:
            x = block(x, valid, state)
        x = self.conv_out(F.elu(rearrange(x, "b t c -> b c t")), valid, state)  # (B, D, T)
        return rearrange(x, "b d t -> b t d")  # (B, T, D)


class VocosDecoder(nn.Module):
    """Vocos decoder with windowed attention in front: quantized `(B, T, latent_dim)` → audio
    `(B, T·hop)` fp32. Conv k7, attention blocks, ConvNeXt blocks, LayerNorm, iSTFT head.

    Args:
        latent_dim: D of the input.
        dim: width.
        intermediate: hidden width of the ConvNeXt blocks.
        attention_layers, heads, window: the windowed attention blocks.
        convnext_layers: ConvNeXt blocks (layer scale starts at 1 / their number).
        n_fft, hop: of the iSTFT head.
        causal: every layer causal.
    """

    def __init__(
        self,
        latent_dim: int,
        dim: int,
        intermediate: int,
        attention_layers: int,
        heads: int,
        window: int,
        convnext_layers: int,
        n_fft: int,
        hop: int,
        causal: bool,
    ):
        super().__init__()
        self.conv_in = Conv(latent_dim, dim, 7, causal=causal)
        self.blocks = nn.ModuleList(
            AttentionBlock(dim, heads, window, causal) for _ in range(attention_layers)
        )
        scale = 1 / max(convnext_layers, 1)
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate, scale, causal) for _ in range(convnext_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = ISTFTHead(dim, n_fft, hop, causal)

    def reach(self) -> Reach:
        """How far an output hop sees, in codes, walked through the layers."""
        return reach_of([self.conv_in, *self.blocks, *self.convnext, self.head])

    def forward(
        self,
        quantized: torch.Tensor,
        valid: torch.Tensor | None = None,
        state: StreamState | None = None,
    ) -> torch.Tensor:
        """`(B, T, latent_dim)` → `(B, T·hop)`; `valid`: `(B,)` codes per item."""
        x = rearrange(quantized.to(self.norm.weight.dtype), "b t d -> b d t")  # (B, D, T)
        x = rearrange(self.conv_in(x, valid, state), "b c t -> b t c")  # (B, T, C)
        for block in self.blocks:
            x = block(x, valid, state)
        x = rearrange(x, "b t c -> b c t")  # (B, C, T)
        for block in self.convnext:
            x = block(x, valid, state)
        return self.head(self.norm(rearrange(x, "b c t -> b t c")), valid, state)


def reach_of(layers: list[nn.Module]) -> Reach:
    """Walk `layers` (each with a `reach` method), input first, from one input step."""
    reach = Reach(0, 0, 1)
    for layer in layers:
        reach = layer.reach(reach)
    return reach


def check_audio(codec: str, audio: torch.Tensor, finite: bool = True) -> None:
    """Raise unless `audio` is a float `(B, 1, S)` batch with S ≥ 1, and finite if `finite`
    (one host sync: training skips it and relies on the loop's check of the loss)."""
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"{codec} expected a tensor of audio, got {type(audio).__name__}")
    if audio.ndim != 3 or audio.shape[1] != 1 or audio.shape[2] < 1:
        raise ValueError(
            f"{codec} expected audio (B, 1, S) in [-1, 1] with S >= 1, got shape "
            f"{tuple(audio.shape)}"
        )
    if not audio.is_floating_point():
        raise ValueError(f"{codec} expected float audio in [-1, 1], got dtype {audio.dtype}")
    if finite and not bool(torch.isfinite(audio).all()):
        raise ValueError(f"{codec} expected finite audio, got NaN or inf samples")
