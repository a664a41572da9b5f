"""WavTokenizer: a single-codebook audio codec (Ji et al. 2024, "WavTokenizer: an efficient
acoustic discrete codec tokenizer for audio language modeling").

A SEANet-style conv encoder (Défossez et al. 2022, Encodec) downsamples 24 kHz audio by the hop
(320 → 75 tokens/s, 600 → 40 tokens/s); windowed self-attention adds context; one VQ codebook of
4096 codes quantizes each frame; a Vocos decoder (Siuzdak 2023: ConvNeXt blocks and an
inverse-STFT head) with WavTokenizer's attention in front of it turns the codes back into a
waveform. The adversarial and mel losses live in `mediatok.training`.

How we differ from the paper:
- no LSTM in the encoder: its unbounded receptive field would make chunked encoding inexact.
  Context comes from `encoder_attention_layers` pre-LayerNorm transformer blocks with
  *windowed* attention (±`attention_window` frames) at the encoder's last width, so every code
  depends on a bounded span of audio (`receptive_field`), and `encode_long` gives exactly the
  codes of one pass whatever the chunk size;
- no normalization over time (no GroupNorm or BatchNorm): per-frame LayerNorm and weight-norm
  convs only, so padded batches, chunks and streams compute what one pass computes; every conv
  pads with zeros (not reflection), so a chunk cut at the signal's edge sees what the whole does;
- the decoder's attention is a windowed pre-LayerNorm transformer block (the paper's is a
  GroupNorm VQGAN-style block over the whole clip);
- no positional encoding: positions come from the convs;
- `causal=True` makes every layer causal (left-padded convs, left-looking attention, a causal
  overlap-add head, see `ISTFTHead`) and enables `encode_stream` / `decode_stream`, which give
  the offline codes exactly and the offline audio up to float rounding; the first n_fft − hop
  samples of a file (3 hops by default) fade in, since fewer frames overlap there;
- encoder residual units (SEANet's: ELU, conv k3 to half width, ELU, conv k1, skip) are dilated
  1, base, base², … per stage, one per stage by default (dilation 1);
- the quantizer is any single-level kind of the shared core (default VQ, EMA, k-means init,
  dead-code revival).

Layout: audio `(B, 1, S)` in [-1, 1], right-padded with zeros to T·hop; encoder activations
`(B, C, T')` and `(B, T, D)` around the attention; latents `(B, T, latent_dim)` channel-last;
codes `(B, T)` int64 (token layout "T"), T = ceil(S / hop).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mediatok.codecs.audio.layers import (
    SEANetEncoder,
    Streaming,
    StreamState,
    VocosDecoder,
    check_audio,
    mask_time,
)
from mediatok.codecs.base import Codec, CodecOutput, Tokens, register_codec
from mediatok.nn import init_weights
from mediatok.quantize import QuantizerConfig
from mediatok.tokens import TokenSpec

# Encoder strides per hop when none are given, applied first to last (WavTokenizer's ratios).
DEFAULT_STRIDES = {320: (2, 4, 5, 8), 600: (3, 5, 5, 8)}


def _default_quantizer() -> QuantizerConfig:
    return QuantizerConfig(
        "vq", {"codebook_size": 4096, "kmeans_init": True, "commitment_weight": 0.25}
    )


@dataclass
class WavTokenizerConfig:
    """WavTokenizer settings (defaults: the paper's 75 tokens/s model at 24 kHz).

    Attributes:
        sample_rate: Hz of the audio it codes.
        hop_length: samples per token.
        strides: encoder downsampling per stage, product = hop_length; None: the table
            `DEFAULT_STRIDES` (320 and 600).
        channels: width of the first encoder stage; each stage doubles it.
        residual_layers: residual units per encoder stage, dilated 1, base, base², ...
        dilation_base: see above.
        latent_dim: D of the latents and of the quantizer.
        encoder_attention_layers: windowed attention blocks at the encoder's last width.
        decoder_dim: width of the decoder.
        decoder_intermediate: hidden width of the ConvNeXt blocks.
        decoder_attention_layers: windowed attention blocks before the ConvNeXt blocks.
        decoder_layers: ConvNeXt blocks.
        attention_window: frames each side an attention layer sees (causal: before only).
        attention_heads: heads of every attention block.
        n_fft: FFT size of the iSTFT head; None: 4 × hop_length.
        causal: every layer causal; enables streaming.
        weight_norm: weight-norm parametrization of the encoder convs.
        quantizer: the shared-core quantizer (one level), built with dim = latent_dim.
    """

    sample_rate: int = 24000
    hop_length: int = 320
    strides: tuple[int, ...] | None = None
    channels: int = 32
    residual_layers: int = 1
    dilation_base: int = 2
    latent_dim: int = 512
    encoder_attention_layers: int = 2
    decoder_dim: int = 768
    decoder_intermediate: int = 2304
    decoder_attention_layers: int = 1
    decoder_layers: int = 12
    attention_window: int = 64
    attention_heads: int = 8
    n_fft: int | None = None
    causal: bool = False
    weight_norm: bool = True
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)

    def __post_init__(self) -> None:
        positive = ("sample_rate", "hop_length", "channels", "latent_dim", "decoder_dim")
        positive += ("decoder_intermediate", "attention_window", "attention_heads")
        for name in (*positive, "dilation_base"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        layers = ("residual_layers", "encoder_attention_layers", "decoder_attention_layers")
        for name in (*layers, "decoder_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0, got {getattr(self, name)}")
        strides = self.encoder_strides  # raises on a hop without defaults or a wrong product
        widths = {
            f"the encoder width (channels × 2^{len(strides)} = {self.encoder_dim})": self.encoder_dim,
            f"decoder_dim ({self.decoder_dim})": self.decoder_dim,
        }
        for name, width in widths.items():
            if width % self.attention_heads:
                raise ValueError(
                    f"expected {name} divisible by attention_heads, got {self.attention_heads}"
                )
        n_fft, hop = self.fft_size, self.hop_length
        if n_fft % 2 or n_fft < 2 * hop or (not self.causal and (n_fft - hop) % 2):
            raise ValueError(
                f"expected an even n_fft >= 2 × hop_length ({2 * hop}), with n_fft − hop_length "
                f"even unless causal, got n_fft {n_fft} and hop_length {hop}"
            )

    @property
    def encoder_strides(self) -> tuple[int, ...]:
        """The strides, given or from `DEFAULT_STRIDES` (resolved here, not stored, so an
        override of hop_length alone still picks its table entry)."""
        if self.strides is None:
            if self.hop_length not in DEFAULT_STRIDES:
                raise ValueError(
                    f"no default strides for hop_length {self.hop_length} (defaults exist for "
                    f"{', '.join(map(str, DEFAULT_STRIDES))}); give strides explicitly"
                )
            return DEFAULT_STRIDES[self.hop_length]
        strides = tuple(self.strides)
        if not strides or min(strides) < 1 or math.prod(strides) != self.hop_length:
            raise ValueError(
                f"expected positive strides whose product is hop_length {self.hop_length}, got "
                f"{list(strides)} (product {math.prod(strides)})"
            )
        return strides

    @property
    def encoder_dim(self) -> int:
        """Width of the encoder's last stage and its attention."""
        return self.channels * 2 ** len(self.encoder_strides)

    @property
    def fft_size(self) -> int:
        return 4 * self.hop_length if self.n_fft is None else self.n_fft


@register_codec
class WavTokenizer(Codec):
    """See the module docstring and `WavTokenizerConfig`."""

    name = "wavtokenizer"
    modality = "audio"
    config_class = WavTokenizerConfig

    def __init__(self, config: WavTokenizerConfig):
        super().__init__()
        self.config = config
        self.hop = config.hop_length
        self.encoder = SEANetEncoder(
            channels=config.channels,
            strides=config.encoder_strides,
            residual_layers=config.residual_layers,
            dilation_base=config.dilation_base,
            attention_layers=config.encoder_attention_layers,
            heads=config.attention_heads,
            window=config.attention_window,
            latent_dim=config.latent_dim,
            causal=config.causal,
            weight_norm=config.weight_norm,
        )
        self.quantizer = config.quantizer.build(config.latent_dim)
        if self.quantizer.num_levels != 1:
            raise ValueError(
                f"wavtokenizer expected a single-level quantizer (token layout 'T'), got "
                f"{config.quantizer.kind!r} with {self.quantizer.num_levels} levels"
            )
        self.decoder = VocosDecoder(
            latent_dim=config.latent_dim,
            dim=config.decoder_dim,
            intermediate=config.decoder_intermediate,
            attention_layers=config.decoder_attention_layers,
            heads=config.attention_heads,
            window=config.attention_window,
            convnext_layers=config.decoder_layers,
            n_fft=config.fft_size,
            hop=config.hop_length,
            causal=config.causal,
        )
        for name, module in self.named_modules():
            if isinstance(module, Streaming):
                module.stream_key = name
        self.apply(init_weights)

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec(
            vocab_sizes=list(self.quantizer.codebook_sizes),
            layout="T",
            geometry={
                "sample_rate": self.config.sample_rate,
                "hop_length": self.hop,
                "channels": 1,
            },
        )

    @property
    def receptive_field(self) -> int:
        """Samples a code sees beyond its own hop, on the farther side (derived from the
        layers): code t depends only on samples [t·hop − left, (t+1)·hop − 1 + right]."""
        reach = self.encoder.reach()
        return max(reach.left, reach.right)

    @property
    def decoder_receptive_field(self) -> int:
        """Codes an output hop depends on beyond its own, on the farther side."""
        reach = self.decoder.reach()
        return max(reach.left, reach.right)

    def forward(self, audio: torch.Tensor) -> CodecOutput:
        """Reconstruct `audio (B, 1, S)` through the quantized codes (training).

        Returns:
            `CodecOutput` with `reconstruction (B, 1, S)` float32 and the quantizer's output
            (codes `(B, ceil(S / hop))`).
        """
        # In training the quantizer's check of the latents catches a NaN: spare a host sync.
        check_audio(self.name, audio, finite=not self.training)
        out = self.quantizer(self.encoder(self._pad(audio)))
        reconstruction = self.decoder(out.quantized)[:, None, : audio.shape[-1]]  # (B, 1, S)
        return CodecOutput(reconstruction, out)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """Audio → codes, in one pass.

        Args:
            audio: `(B, 1, S)` float in [-1, 1], any float dtype (cast to the encoder's).
            lengths: `(B,)` valid samples per item of a right-padded batch, or None (all S).
                Each item then gets the codes it would get alone; codes past its length are 0.

        Returns:
            `Tokens` with codes `(B, ceil(S / hop))` int64 and, with `lengths`, `lengths`
            `ceil(lengths / hop)`.
        """
        return self.encode_long(audio, chunk_seconds=math.inf, lengths=lengths)

    @torch.no_grad()
    def encode_long(
        self,
        audio: torch.Tensor,
        chunk_seconds: float = 30.0,
        lengths: torch.Tensor | None = None,
    ) -> Tokens:
        """Audio → codes in chunks of `chunk_seconds`, each with `receptive_field` samples of
        context on both sides (left only when causal), so the codes equal `encode`'s whatever
        the chunk size, while activation memory stays bounded by the chunk.

        Args:
            audio: `(B, 1, S)` float in [-1, 1], any float dtype (cast to the encoder's).
            chunk_seconds: seconds of codes per chunk (at least one hop).
            lengths: as in `encode`.

        Returns:
            As `encode`.
        """
        check_audio(self.name, audio)
        # bool is an int subclass, and `True` seconds is surely a mistake.
        if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, int | float):
            raise TypeError(
                f"{self.name}.encode_long expected chunk_seconds to be a number of seconds, got "
                f"{type(chunk_seconds).__name__} {chunk_seconds!r}"
            )
        if not chunk_seconds > 0:  # NaN too
            raise ValueError(
                f"{self.name}.encode_long expected chunk_seconds > 0, got {chunk_seconds}"
            )
        hop, total = self.hop, math.ceil(audio.shape[-1] / self.hop)
        padded = self._pad(audio)  # (B, 1, T·hop)
        lengths = self._check_lengths(lengths, audio, "samples")
        frames = None
        if lengths is not None:
            padded = mask_time(padded, lengths)  # whatever the batch holds past a length
            frames = -(-lengths // hop)  # (B,) ceil
        chunk = total
        if not math.isinf(chunk_seconds):
            chunk = max(1, min(total, round(chunk_seconds * self.config.sample_rate / hop)))
        with self._inference():
            codes = [
                self.quantizer(latents).codes  # (B, t)
                for latents in self._chunked_latents(padded, chunk, frames)
            ]
        codes = torch.cat(codes, dim=1)  # (B, T)
        if frames is not None:
            codes = mask_time(codes[:, None], frames)[:, 0]
        return Tokens(codes, self.token_spec, frames)

    def _chunked_latents(
        self, padded: torch.Tensor, chunk: int, frames: torch.Tensor | None
    ) -> Iterator[torch.Tensor]:
        """Latents of `padded (B, 1, T·hop)`, `chunk` frames at a time, each computed from the
        chunk and the context its receptive field needs: `(B, chunk, D)` (the last: the rest).
        `frames`: `(B,)` valid frames per item, or None."""
        hop, total = self.hop, padded.shape[-1] // self.hop
        reach = self.encoder.reach()
        before, after = -(-reach.left // hop), -(-reach.right // hop)  # context frames
        for start in range(0, total, chunk):
            end = min(start + chunk, total)
            first, last = max(0, start - before), min(total, end + after)
            valid = None if frames is None else (frames - first).clamp(0, last - first) * hop
            latents = self.encoder(padded[..., first * hop : last * hop], valid)  # (B, t, D)
            yield latents[:, start - first : end - first]

    @torch.no_grad()
    def decode(
        self, tokens: Tokens | torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Codes → audio, in one pass.

        Args:
            tokens: `Tokens` or codes `(B, T)`.
            lengths: `(B,)` valid codes per item (default: `tokens.lengths`); each item then
                gets the audio it would get alone, zero past `lengths · hop`.

        Returns:
            Audio `(B, 1, T·hop)` float32, about [-1, 1] (not clamped).
        """
        return self.decode_long(tokens, chunk_tokens=0, lengths=lengths)

    @torch.no_grad()
    def decode_long(
        self,
        tokens: Tokens | torch.Tensor,
        chunk_tokens: int = 4096,
        overlap_tokens: int | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Codes → audio in chunks of `chunk_tokens`, each decoded with `overlap_tokens` more
        codes on both sides; neighbours are cross-faded linearly over the middle `overlap_tokens`
        frames of their shared codes (at most half a chunk). The default overlap, twice
        `decoder_receptive_field`, leaves both chunks exact over the fade, so the result equals
        `decode` up to float rounding; a smaller one trades exactness for speed.

        Args:
            tokens, lengths: as in `decode`.
            chunk_tokens: codes per chunk; 0 decodes in one pass.
            overlap_tokens: context codes on each side; None: 2 × decoder_receptive_field.

        Returns:
            Audio `(B, 1, T·hop)` float32.
        """
        for name, value in (("chunk_tokens", chunk_tokens), ("overlap_tokens", overlap_tokens)):
            if value is None and name == "overlap_tokens":
                continue
            # bool is an int subclass, and `True` codes is surely a mistake.
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"{self.name}.decode_long expected {name} to be an int >= 0, got "
                    f"{type(value).__name__} {value!r}"
                )
            if value < 0:
                raise ValueError(f"{self.name}.decode_long expected {name} >= 0, got {value}")
        codes = self._check_codes(tokens)
        batch, total = codes.shape
        if lengths is None and isinstance(tokens, Tokens):
            lengths = tokens.lengths
        frames = self._check_lengths(lengths, codes, "codes")
        if frames is not None:
            codes = mask_time(codes[:, None], frames)[:, 0]  # padding codes may be anything
        overlap = 2 * self.decoder_receptive_field if overlap_tokens is None else overlap_tokens
        count = 1 if chunk_tokens == 0 else math.ceil(total / chunk_tokens)
        bounds = [i * total // count for i in range(count + 1)]  # even cores, none tiny
        half = min(overlap // 2, min(b - a for a, b in itertools.pairwise(bounds)) // 2)
        hop, fade = self.hop, half * self.hop
        ramp = (torch.arange(2 * fade, device=codes.device) + 0.5) / max(2 * fade, 1)  # (2f,)
        audio = torch.zeros(batch, total * hop, device=codes.device)
        for start, end in itertools.pairwise(bounds):
            first, last = max(0, start - overlap), min(total, end + overlap)
            valid = None if frames is None else (frames - first).clamp(0, last - first)
            quantized = self.quantizer.decode(codes[:, first:last])  # (B, t, D)
            piece = self.decoder(quantized, valid)  # (B, t·hop)
            used_first, used_last = max(0, start - half), min(total, end + half)
            piece = piece[:, (used_first - first) * hop : (used_last - first) * hop]
            weight = torch.ones(piece.shape[1], device=codes.device)
            if start > 0:
                weight[: 2 * fade] = ramp
            if end < total:
                weight[weight.shape[0] - 2 * fade :] = 1 - ramp
            audio[:, used_first * hop : used_last * hop] += piece * weight
        if frames is not None:
            audio = mask_time(audio[:, None], frames * hop)[:, 0]
        return audio[:, None]  # (B, 1, T·hop)

    @torch.no_grad()
    def encode_stream(
        self, chunk: torch.Tensor, state: StreamState | None = None
    ) -> tuple[torch.Tensor, StreamState]:
        """Encode the next chunk of a stream (causal models only).

        Args:
            chunk: `(B, 1, L)` float (any float dtype), L a positive multiple of hop.
            state: what the previous call returned; None starts a stream.

        Returns:
            Codes `(B, L / hop)` (the concatenation over a stream equals `encode`'s codes) and
            the state for the next call (the one passed in is left as it was).
        """
        check_audio(self.name, chunk)
        if chunk.shape[-1] % self.hop:
            raise ValueError(
                f"{self.name}.encode_stream expected chunks of a multiple of hop_length "
                f"{self.hop} samples, got {chunk.shape[-1]}"
            )
        state = self._next_state(state, "encoder", "encode_stream", len(chunk))
        with self._inference():
            codes = self.quantizer(self.encoder(chunk, state=state)).codes  # (B, L / hop)
        state.frames += codes.shape[1]
        return codes, state

    @torch.no_grad()
    def decode_stream(
        self, codes: torch.Tensor, state: StreamState | None = None
    ) -> tuple[torch.Tensor, StreamState]:
        """Decode the next codes of a stream (causal models only).

        Args:
            codes: `(B, n)` int64, n ≥ 1.
            state: what the previous call returned; None starts a stream.

        Returns:
            Audio `(B, 1, n·hop)` float32 (concatenated: `decode`'s audio up to float rounding)
            and the state for the next call.
        """
        codes = self._check_codes(codes)
        state = self._next_state(state, "decoder", "decode_stream", len(codes))
        audio = self.decoder(self.quantizer.decode(codes), state=state)  # (B, n·hop)
        state.frames += codes.shape[1]
        return audio[:, None], state

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, 1, S)` → `(B, 1, ceil(S / hop)·hop)`, zeros on the right."""
        return F.pad(audio, (0, -audio.shape[-1] % self.hop))

    def _check_lengths(
        self, lengths: torch.Tensor | None, data: torch.Tensor, unit: str
    ) -> torch.Tensor | None:
        """`lengths (B,)` as int64 on `data`'s device, checked to lie in [1, data.shape[-1]]."""
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        size = data.shape[-1]
        if lengths.shape != (len(data),) or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(
                f"{self.name} expected integer lengths ({len(data)},) in {unit}, got dtype "
                f"{lengths.dtype} and shape {tuple(lengths.shape)}"
            )
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > size):
            raise ValueError(
                f"{self.name} expected lengths in [1, {size}] {unit}, got values from "
                f"{int(lengths.min())} to {int(lengths.max())}"
            )
        return lengths.to(data.device, torch.int64)

    def _check_codes(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        codes = self._codes(tokens)
        if codes.ndim != 2 or codes.shape[1] < 1:
            raise ValueError(
                f"{self.name} expected codes (B, T) with T >= 1, got shape {tuple(codes.shape)}"
            )
        return codes

    def _next_state(
        self, state: StreamState | None, role: str, caller: str, batch: int
    ) -> StreamState:
        """A fresh state, or a copy of `state` that the next chunk may update."""
        if not self.config.causal:
            raise ValueError(
                f"{self.name}.{caller} needs a causal model (causal=True), got causal=False"
            )
        if state is None:
            return StreamState(role)
        if not isinstance(state, StreamState) or state.role != role:
            got = state.role if isinstance(state, StreamState) else type(state).__name__
            raise ValueError(f"{self.name}.{caller} expected a {role} StreamState, got {got}")
        held = {len(tail) for tail in state.tails.values()}
        if held and held != {batch}:
            raise ValueError(
                f"{self.name}.{caller} expected a batch of {held.pop()} like the stream so far, "
                f"got {batch}"
            )
        return dataclasses.replace(state, tails=dict(state.tails))
