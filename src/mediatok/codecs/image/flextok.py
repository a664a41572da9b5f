"""FlexTok: images as ordered 1D token sequences of any length 1..K (Bachmann et al. 2025,
"FlexTok: Resampling images into 1D token sequences of flexible length").

Encoder: a ViT reads the image's p×p patches followed by K learned register tokens under a
mask in which patches attend to patches only and register i attends to every patch and to
registers 0..i, never a later one (`register_attention_mask`): a register's output cannot
depend on a later register, which nested dropout then orders coarse to fine. The K register
outputs are projected to `token_dim` and quantized by the core's FSQ [8, 8, 8, 5, 5, 5] (64,000
codes). Because of the mask, the first k codes of `encode` are what a k-token encoding gives.

Decoder: a rectified-flow DiT (`flow.FlowTransformer`) over [registers, noised patches]. The
registers are the dequantized codes projected to the decoder's width, those past the image's
length replaced by a learned mask token, plus learned register positions; the time step enters
every block through adaLN-zero. Training (`forward`): t from a logit-normal (SD3's mean 0, std 1
by default), x_t = t·ε + (1 − t)·x₀, the network predicts v and the target is ε − x₀ (a task
minimizes mse(velocity, target) plus the quantizer's terms); per image a length k is drawn by
nested dropout (powers of two, the paper's choice) and with probability `register_dropout` all
registers are masked, which trains the unconditional branch of classifier-free guidance.
Optional REPA (`repa.py`; Yu et al. 2024): an MLP maps the decoder's patch tokens after block
`repa.layer` to the patch features of a frozen TorchScript network the user gives (DINOv2-L in
the paper; none ships here); `FlowOutput.repa_loss` is 1 − their mean cosine similarity.

Decoding is sampling (`decode`): Euler from t = 1 to 0 in T steps on the grid of diffusers'
`FlowMatchEulerDiscreteScheduler` (`flow.euler_sigmas`), with classifier-free guidance (the
unconditional branch has every register masked; both run as one doubled batch) or adaptive
projected guidance (`flow.apg`). The initial noise is drawn on the CPU from `seed` and moved to
the device, so CPU and GPU start alike; every row gets the same noise for an int seed, so an
image decodes as it would alone, whatever the batch (a list of seeds gives one per row). One
step — the network, the guidance and the Euler update — is one function (`_denoise_step`) that
`decode(..., compile=True)` compiles whole (`fullgraph`), once per batch size and guidance mode;
the guidance settings and times are tensor inputs, so a sweep compiles nothing new.

How we differ from the paper:
- pixel space: the paper codes the latents of its own VAE (8×, 16 channels, 2×2 patches); we
  code pixels with p×p patches (p = 16 keeps its 256 patches at 256²). A latent variant would
  plug in as a frozen autoencoder part around this model: `encode` would patchify the VAE's
  latents (2×2 patches of 16 channels) instead of pixels, the flow decoder would noise and
  predict latents, and `decode` would end with the VAE's decoder; registers, masks, FSQ, nested
  dropout and sampling see only the patch sequence and would not change. It is left out: no
  pretrained VAE can be fetched here and a pixel model needs none;
- the paper modulates patches and registers with separate adaLN parameters; ours share one
  modulation per block (half the adaLN weights, which are a third of a DiT block's);
- positions are learned absolute embeddings (patches of the encoder and decoder, registers of
  the decoder; the encoder's registers are learned tokens, their own positions);
- sizes: "d18" is the paper's d18-d18 and "d28" its d18-d28 (encoder depth 18, decoder 28), with
  width 64·depth and 64-wide heads (1152 for d18, the width of the released d18 encoders'
  outputs; 1792 for d28 by the same rule: our reading) and the paper's K = 256 registers; the
  defaults are our small d6-d6; REPA's default layer is REPA's 8 of 28, scaled to the depth.

Layout: images `(B, 3, H, W)` in [-1, 1]; encoder tokens `(B, N + K, D)`, N = (H/p)²; codes
`(B, k)` int64, k ≤ K (layout "N"); decoder tokens `(B, K + N, D)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.codecs.base import Codec, CodecOutput, Tokens, register_codec
from mediatok.codecs.image.common import check_images
from mediatok.codecs.image.flow import (
    FlowTransformer,
    ProcessCache,
    apg,
    euler_sigmas,
    init_flow_weights,
    masked_block,
    sample_times,
)
from mediatok.codecs.image.repa import FeatureAlignment, REPAConfig
from mediatok.codecs.nested_dropout import (
    NestedDropoutConfig,
    check_lengths,
    mask_tail,
    sample_lengths,
)
from mediatok.nn import Transformer
from mediatok.quantize import QuantizerConfig
from mediatok.tokens import TokenSpec

# (width, depth, heads) of the encoder and of the decoder: the paper's d18-d18 and d18-d28.
SIZES = {
    "d18": ((1152, 18, 18), (1152, 18, 18)),
    "d28": ((1152, 18, 18), (1792, 28, 28)),
}
GUIDANCE = ("cfg", "apg")


def _default_quantizer() -> QuantizerConfig:
    return QuantizerConfig("fsq", {"levels": [8, 8, 8, 5, 5, 5]})


@dataclass
class FlexTokConfig:
    """FlexTok settings (defaults: a small d6-d6 model at 256², 256 registers).

    Attributes:
        image_size: H = W of the images it codes.
        patch_size: p, for the encoder's and the decoder's patches.
        size: "d18" or "d28" set the six sizes below (see the module docstring), "custom" keeps
            them.
        encoder_width, encoder_depth, encoder_heads: the encoder's.
        decoder_width, decoder_depth, decoder_heads: the flow decoder's.
        num_registers: K, the most tokens an image gets.
        token_dim: the dimension each register is quantized in (6 = len(levels) for FSQ: no
            projections).
        quantizer: a single-level kind of the shared core, built with dim = token_dim.
        nested_dropout: how training draws each image's kept length; None keeps all K.
        register_dropout: probability that training masks all of an image's registers (the
            unconditional branch of classifier-free guidance).
        time_mean, time_std: of the logit-normal training times.
        repa: REPA alignment, or None.
    """

    image_size: int = 256
    patch_size: int = 16
    size: Literal["d18", "d28", "custom"] = "custom"
    encoder_width: int = 384
    encoder_depth: int = 6
    encoder_heads: int = 6
    decoder_width: int = 384
    decoder_depth: int = 6
    decoder_heads: int = 6
    num_registers: int = 256
    token_dim: int = 6
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)
    nested_dropout: NestedDropoutConfig | None = field(default_factory=NestedDropoutConfig)
    register_dropout: float = 0.1
    time_mean: float = 0.0
    time_std: float = 1.0
    repa: REPAConfig | None = None

    def __post_init__(self) -> None:
        if self.size != "custom":
            encoder, decoder = SIZES[self.size]
            self.encoder_width, self.encoder_depth, self.encoder_heads = encoder
            self.decoder_width, self.decoder_depth, self.decoder_heads = decoder
        if self.image_size < 1 or self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"expected image_size divisible by patch_size, got {self.image_size} and "
                f"{self.patch_size}"
            )
        for part in ("encoder", "decoder"):
            width, depth, heads = (
                getattr(self, f"{part}_{n}") for n in ("width", "depth", "heads")
            )
            if min(width, depth, heads) < 1 or width % heads:
                raise ValueError(
                    f"expected positive {part} width, depth and heads with the width divisible "
                    f"by the heads, got width={width}, depth={depth}, heads={heads}"
                )
        for name in ("num_registers", "token_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.register_dropout < 1.0:
            raise ValueError(f"expected register_dropout in [0, 1), got {self.register_dropout}")
        if not self.time_std > 0:
            raise ValueError(f"expected time_std > 0, got {self.time_std}")
        if self.repa is not None:
            layer = self.repa.layer
            if layer is not None and not 1 <= layer <= self.decoder_depth:
                raise ValueError(
                    f"expected repa.layer in 1..{self.decoder_depth} (the decoder's blocks), "
                    f"got {layer}"
                )

    @property
    def repa_layer(self) -> int | None:
        """The decoder block REPA aligns after (None without REPA)."""
        if self.repa is None:
            return None
        return self.repa.layer or max(1, round(8 * self.decoder_depth / 28))


@dataclass
class FlowOutput(CodecOutput):
    """What `FlexTok.forward` returns: a `CodecOutput` and the flow terms.

    Attributes:
        reconstruction: the one-step estimate x̂₀ = x_t − t·v̂, clamped to [-1, 1] `(B, 3, H, W)`
            (for logging: at large t it is a blur).
        quantize: the quantizer's output (codes `(B, K)`).
        velocity: v̂ `(B, 3, H, W)` float32; target: ε − x₀, same shape; the loss is their MSE.
        t: `(B,)` the times drawn.
        lengths: `(B,)` registers each image kept (0 for a guidance-dropped image).
        repa_loss: 1 − mean cosine similarity to the feature network's (a scalar) with REPA,
            else None.
    """

    velocity: torch.Tensor
    target: torch.Tensor
    t: torch.Tensor
    lengths: torch.Tensor
    repa_loss: torch.Tensor | None = None


def register_attention_mask(
    num_patches: int, num_registers: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The encoder's mask over [patches, registers], True where a query may attend a key:
    patches see patches only; register i sees every patch and registers 0..i.

    Returns:
        `(N + K, N + K)` bool.
    """
    index = torch.arange(num_patches + num_registers, device=device)
    query, key = index[:, None], index[None, :]
    return (key < num_patches) | ((query >= num_patches) & (key <= query))


@register_codec
class FlexTok(Codec):
    """See the module docstring and `FlexTokConfig`."""

    name = "flextok"
    modality = "image"
    config_class = FlexTokConfig
    decode_settings = (
        "steps",
        "cfg_scale",
        "seed",
        "guidance",
        "apg_eta",
        "apg_norm_threshold",
        "apg_momentum",
        "compile",
    )

    def __init__(self, config: FlexTokConfig):
        super().__init__()
        self.config = config
        width, patch = config.encoder_width, config.patch_size
        self.grid = config.image_size // patch
        num_patches, count = self.grid**2, config.num_registers

        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.encoder_positions = nn.Parameter(width**-0.5 * torch.randn(num_patches, width))
        self.registers = nn.Parameter(width**-0.5 * torch.randn(count, width))
        self.encoder = Transformer(width, config.encoder_depth, config.encoder_heads)
        self.to_token = nn.Linear(width, config.token_dim)

        self.quantizer = config.quantizer.build(config.token_dim)
        if self.quantizer.num_levels != 1:
            raise ValueError(
                f"flextok expected a single-level quantizer (token layout 'N'), got "
                f"{config.quantizer.kind!r} with {self.quantizer.num_levels} levels"
            )

        width = config.decoder_width
        self.from_token = nn.Linear(config.token_dim, width)
        self.register_positions = nn.Parameter(width**-0.5 * torch.randn(count, width))
        self.mask_token = nn.Parameter(width**-0.5 * torch.randn(width))
        self.decoder = FlowTransformer(
            width, config.decoder_depth, config.decoder_heads, patch, self.grid
        )
        self.repa = None if config.repa is None else FeatureAlignment(config.repa, width, self.grid)
        self.apply(init_flow_weights)
        self.decoder.zero_init()
        self._compiled = ProcessCache()  # the compiled step

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec(
            vocab_sizes=list(self.quantizer.codebook_sizes),
            layout="N",
            geometry={
                "image_size": self.config.image_size,
                "num_tokens": self.config.num_registers,
                "prefix_decodable": True,
                "channels": 3,
            },
        )

    def _encode_latents(self, images: torch.Tensor, count: int) -> torch.Tensor:
        """`(B, 3, H, W)` → the first `count` registers' latents `(B, count, token_dim)`."""
        patches = rearrange(self.patch_embed(images), "b d h w -> b (h w) d")  # (B, N, D)
        patches = patches + self.encoder_positions
        registers = self.registers[:count].expand(len(images), -1, -1)  # (B, k, D)
        mask = register_attention_mask(patches.shape[1], count, images.device)
        hidden = torch.cat([patches, registers], dim=1)  # (B, N + k, D)
        for block in self.encoder.blocks:
            hidden = masked_block(block, hidden, mask)
        return self.to_token(self.encoder.norm(hidden[:, patches.shape[1] :]))  # (B, k, d)

    def _conditions(self, quantized: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Quantized registers `(B, k, token_dim)`, k ≤ K → the decoder's `(B, K, D)`: projected,
        those past `lengths` (and past k) the mask token, plus positions."""
        tokens = self.from_token(quantized.to(self.from_token.weight.dtype))  # (B, k, D)
        tokens = F.pad(tokens, (0, 0, 0, self.config.num_registers - tokens.shape[1]))
        return mask_tail(tokens, lengths, self.mask_token) + self.register_positions

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> FlowOutput:
        """One rectified-flow training evaluation of `images (B, 3, H, W)` in [-1, 1].

        Args:
            images: the batch.
            generator: draws the lengths, guidance dropout, noise and times (on its device,
                then moved), for reproducible steps; None uses the global RNG. Nested and
                register dropout apply in training mode only.

        Returns:
            `FlowOutput`; a task minimizes mse(velocity, target) + the quantizer's losses (+ a
            weight × repa_loss).
        """
        check_images(self.name, images, self.config.image_size)
        batch, count, device = len(images), self.config.num_registers, images.device
        out = self.quantizer(self._encode_latents(images, count))
        lengths = torch.full((batch,), count, dtype=torch.long, device=device)
        if self.training and self.config.nested_dropout is not None:
            lengths = sample_lengths(self.config.nested_dropout, batch, count, generator, device)
        if self.training and self.config.register_dropout > 0:
            where = generator.device if generator is not None else device
            drop = torch.rand(batch, generator=generator, device=where).to(device)
            lengths = torch.where(drop < self.config.register_dropout, 0, lengths)
        conditions = self._conditions(out.quantized, lengths)  # (B, K, D)

        where = generator.device if generator is not None else device
        noise = torch.randn(images.shape, generator=generator, device=where).to(device)
        t = sample_times(batch, self.config.time_mean, self.config.time_std, generator, device)
        t_image = t[:, None, None, None]
        noised = t_image * noise + (1 - t_image) * images  # (B, 3, H, W)
        velocity, hidden = self.decoder(noised, t, conditions, self.config.repa_layer)
        reconstruction = (noised - t_image * velocity).clamp(-1, 1)
        repa_loss = None if self.repa is None else self.repa(images, hidden)
        return FlowOutput(reconstruction, out, velocity, noise - images, t, lengths, repa_loss)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, num_tokens: int | None = None) -> Tokens:
        """Images `(B, 3, H, W)` in [-1, 1] → the first k codes of each.

        Args:
            images: the batch.
            num_tokens: k in 1..K; None: all K registers.

        Returns:
            `Tokens` with codes `(B, k)` int64 and lengths `(B,)` = k.
        """
        check_images(self.name, images, self.config.image_size)
        count = self.config.num_registers if num_tokens is None else num_tokens
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= self.config.num_registers
        ):
            raise ValueError(
                f"flextok.encode expected num_tokens in 1..{self.config.num_registers} or None, "
                f"got {num_tokens!r}"
            )
        with self._inference():
            codes = self.quantizer(self._encode_latents(images, count)).codes  # (B, k)
        lengths = torch.full((len(images),), count, dtype=torch.long, device=codes.device)
        return Tokens(codes, self.token_spec, lengths)

    @torch.no_grad()
    def decode(
        self,
        tokens: Tokens | torch.Tensor,
        steps: int = 25,
        cfg_scale: float = 1.0,
        seed: int | Sequence[int] = 0,
        guidance: Literal["cfg", "apg"] = "cfg",
        apg_eta: float = 0.0,
        apg_norm_threshold: float = 0.0,
        apg_momentum: float = 0.0,
        compile: bool = False,
    ) -> torch.Tensor:
        """Sample images from codes: Euler from t = 1 to 0, guided by the registers.

        Args:
            tokens: `Tokens` (their `lengths`, when set, are each row's prefix: codes past it
                are padding and ignored) or codes `(B, k)`, 1 ≤ k ≤ K, taken as k-token prefixes.
            steps: T Euler steps.
            cfg_scale: w; 1 is no guidance (one branch), else a doubled batch.
            seed: the initial noise's, drawn on the CPU: an int gives every row the same noise
                (a row decodes as it would alone); a sequence, one seed per row.
            guidance: "cfg" (v = v_u + w·(v_c − v_u)) or "apg" (`flow.apg`).
            apg_eta: APG's η, the weight of the update's part parallel to the conditional
                prediction (0, the paper's choice: dropped; 1 without cap or momentum is CFG).
            apg_norm_threshold: APG's r, the RMS its update is capped at; 0: no cap (ours: a
                good r depends on the data's scale).
            apg_momentum: APG's β (≤ 0 in the paper); 0: none.
            compile: run each step through `torch.compile` (compiled once per batch size and
                guidance mode, then reused).

        Returns:
            Images `(B, 3, H, W)` float32, about [-1, 1] (not clamped).
        """
        codes, lengths = self._check_codes(tokens)
        floats = {"cfg_scale": cfg_scale, "apg_eta": apg_eta}
        floats |= {"apg_norm_threshold": apg_norm_threshold, "apg_momentum": apg_momentum}
        seeds = self._check_sampling(len(codes), steps, floats, seed, guidance)
        device = codes.device
        conditions = self._conditions(self.quantizer.decode(codes), lengths)  # (B, K, D)
        mode = "none" if cfg_scale == 1.0 else guidance
        if mode != "none":
            unconditional = (self.mask_token + self.register_positions).expand_as(conditions)
            conditions = torch.cat([conditions, unconditional])  # (2B, K, D)
        shape = (3, self.config.image_size, self.config.image_size)
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
        noise = torch.stack(noise).expand(len(codes), *shape)  # (B, 3, H, W)
        x = noise.contiguous().to(device)
        values = (cfg_scale, apg_eta, apg_norm_threshold, apg_momentum)
        scalars = [torch.tensor(value, dtype=torch.float32, device=device) for value in values]
        running = torch.zeros_like(x)
        step = self._denoise_step
        if compile:
            if "step" not in self._compiled:
                self._compiled["step"] = torch.compile(step, fullgraph=True, dynamic=False)
            step = self._compiled["step"]
        sigmas = euler_sigmas(steps).to(device)
        for index in range(steps):
            x, running = step(
                x, sigmas[index], sigmas[index + 1], conditions, *scalars, running, mode
            )
        return x

    def _denoise_step(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        conditions: torch.Tensor,
        scale: torch.Tensor,
        eta: torch.Tensor,
        norm_threshold: torch.Tensor,
        momentum: torch.Tensor,
        running: torch.Tensor,
        mode: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Euler step from t to t_next (0-d tensors) of x `(B, 3, H, W)`: the velocity (one
        branch, or conditional and unconditional as one doubled batch mixed by CFG or APG),
        then x + (t_next − t)·v, `FlowMatchEulerDiscreteScheduler.step`'s update. `running` is
        APG's momentum state `(B, 3, H, W)`."""
        batch = len(x)
        if mode == "none":
            velocity, _ = self.decoder(x, t.expand(batch), conditions)
        else:
            both, _ = self.decoder(torch.cat([x, x]), t.expand(2 * batch), conditions)
            conditional, unconditional = both.chunk(2)  # (B, 3, H, W) each
            if mode == "cfg":
                velocity = unconditional + scale * (conditional - unconditional)
            else:
                x0, running = apg(
                    x - t * conditional,
                    x - t * unconditional,
                    scale,
                    eta,
                    norm_threshold,
                    momentum,
                    running,
                )
                velocity = (x - x0) / t
        return x + (t_next - t) * velocity, running

    def _check_codes(self, tokens: Tokens | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes `(B, k)` with the padding past each row's length zeroed, and lengths `(B,)`."""
        codes = self._codes(tokens)
        count = self.config.num_registers
        if codes.ndim != 2 or not 1 <= codes.shape[1] <= count:
            raise ValueError(
                f"flextok expected codes (B, k) with 1 <= k <= {count}, got shape "
                f"{tuple(codes.shape)}"
            )
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"flextok expected integer codes, got dtype {codes.dtype}")
        lengths = tokens.lengths if isinstance(tokens, Tokens) else None
        lengths = check_lengths(self.name, lengths, len(codes), codes.shape[1], codes.device)
        keep = torch.arange(codes.shape[1], device=codes.device)[None] < lengths[:, None]
        return codes.long().masked_fill(~keep, 0), lengths

    def _check_sampling(
        self,
        batch: int,
        steps: int,
        floats: dict[str, float],
        seed: int | Sequence[int],
        guidance: str,
    ) -> list[int]:
        """Check the sampling settings; the seed of every row's noise."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"flextok.decode expected steps to be an int >= 1, got {steps!r}")
        for name, value in floats.items():
            finite = isinstance(value, int | float) and abs(value) < float("inf")
            if isinstance(value, bool) or not finite:
                raise ValueError(f"flextok.decode expected a finite {name}, got {value!r}")
        if floats["apg_norm_threshold"] < 0:
            raise ValueError(
                f"flextok.decode expected apg_norm_threshold >= 0, got {floats['apg_norm_threshold']}"
            )
        if guidance not in GUIDANCE:
            raise ValueError(f"flextok.decode expected guidance 'cfg' or 'apg', got {guidance!r}")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return [seed]
        seeds = list(seed) if isinstance(seed, Sequence) else None
        if seeds is None or len(seeds) != batch or not all(isinstance(s, int) for s in seeds):
            raise ValueError(
                f"flextok.decode expected seed to be an int or {batch} ints (one per row), got "
                f"{seed!r}"
            )
        return seeds
