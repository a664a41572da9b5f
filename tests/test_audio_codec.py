"""WavTokenizer: chunked == one pass, padded batches == items alone, streams == offline causal,
causality, a tight receptive field, default strides and input errors (all fp32 on CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from mediatok.codecs import build_codec
from mediatok.codecs.audio import StreamState, WavTokenizer, WavTokenizerConfig
from mediatok.data import read_audio
from tiny_configs import WAVTOKENIZER_16K

TINY = {
    **WAVTOKENIZER_16K,
    # k-means init on one training batch spreads the codes, so that code equality means something
    "quantizer": {"kind": "vq", "options": {"codebook_size": 64, "kmeans_init": True}},
}
HOP = TINY["hop_length"]


def audio(batch: int, samples: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, samples, generator=generator) * 2 - 1


def make(causal: bool = False, **overrides) -> WavTokenizer:
    """A seeded tiny codec whose codebook was k-means-initialized on random audio."""
    torch.manual_seed(0)
    codec = build_codec("wavtokenizer", {**TINY, "causal": causal, **overrides})
    codec(audio(4, 40 * HOP, seed=99))
    return codec.eval()


@pytest.fixture(scope="module", params=[False, True], ids=["noncausal", "causal"])
def codec(request) -> WavTokenizer:
    return make(causal=request.param)


def test_chunked_encoding_equals_one_pass(codec):
    x = audio(2, 50 * HOP + 3)  # not a multiple of the hop
    whole = codec.encode(x)
    assert whole.codes.shape == (2, 51)
    assert whole.codes.unique().numel() > 10  # varied codes: the comparison below can fail
    field = codec.receptive_field
    assert field > 2 * HOP
    # 1 and 3 hops are far shorter than the receptive field; 51 hops is the whole signal.
    for hops in (1, 3, field // HOP // 2, 7, 20, 51):
        chunked = codec.encode_long(x, chunk_seconds=hops * HOP / codec.config.sample_rate)
        assert torch.equal(chunked.codes, whole.codes), f"chunks of {hops} hops"
    # Codes could hide a small error: the latents agree up to float rounding too.
    padded = torch.nn.functional.pad(x, (0, 51 * HOP - x.shape[-1]))
    with torch.no_grad():
        reference = codec.encoder(padded)
        for hops in (1, 3, 7):
            latents = torch.cat(list(codec._chunked_latents(padded, hops, None)), dim=1)
            assert torch.allclose(latents, reference, atol=1e-6, rtol=0), f"chunks of {hops} hops"


def test_chunked_decoding_matches_one_pass(codec):
    codes = codec.encode(audio(2, 45 * HOP)).codes
    whole = codec.decode(codes)
    assert whole.shape == (2, 1, 45 * HOP) and whole.dtype == torch.float32
    # The default overlap (2 × decoder_receptive_field) leaves each chunk exact over the
    # cross-fade, so only float rounding separates the two (outputs are ~1e-2 here).
    for chunk in (1, 4, 11, 45):
        chunked = codec.decode_long(codes, chunk_tokens=chunk)
        assert torch.allclose(chunked, whole, atol=1e-6, rtol=0), f"chunks of {chunk} codes"
    # A short overlap is no longer exact, but the cross-fade keeps the output whole.
    rough = codec.decode_long(codes, chunk_tokens=8, overlap_tokens=2)
    assert rough.shape == whole.shape and torch.isfinite(rough).all()


def test_padded_batch_gives_each_item_its_own_codes_and_audio(codec):
    lengths = torch.tensor([37 * HOP, 9 * HOP + 5, 3])
    x = audio(3, int(lengths.max()), seed=3)
    x[1, :, lengths[1] :] = 0.7  # what lies past a length must not matter
    tokens = codec.encode(x, lengths=lengths)
    assert tokens.lengths.tolist() == [37, 10, 1]
    chunked = codec.encode_long(x, chunk_seconds=5 * HOP / 16000, lengths=lengths)
    assert torch.equal(chunked.codes, tokens.codes)
    batch_audio = codec.decode(tokens)  # uses tokens.lengths
    batch_long = codec.decode_long(tokens, chunk_tokens=6)
    for item, length in enumerate(lengths.tolist()):
        alone = codec.encode(x[item : item + 1, :, :length]).codes[0]
        frames = len(alone)
        assert torch.equal(tokens.codes[item, :frames], alone)
        assert (tokens.codes[item, frames:] == 0).all()
        expected = codec.decode(alone[None])[0]  # (1, frames·hop)
        for decoded in (batch_audio, batch_long):
            assert torch.allclose(decoded[item, :, : frames * HOP], expected, atol=1e-6)
            assert (decoded[item, :, frames * HOP :] == 0).all()


def test_streaming_equals_offline_causal():
    codec = make(causal=True)
    x = audio(2, 60 * HOP, seed=4)
    generator = torch.Generator().manual_seed(0)
    offline = codec.encode(x).codes
    pieces, state, start = [], None, 0
    while start < x.shape[-1]:
        size = min(int(torch.randint(1, 9, (1,), generator=generator)) * HOP, x.shape[-1] - start)
        codes, state = codec.encode_stream(x[..., start : start + size], state)
        assert codes.shape == (2, size // HOP)
        pieces.append(codes)
        start += size
    assert state.frames == 60
    assert torch.equal(torch.cat(pieces, dim=1), offline)

    reference = codec.decode(offline)
    pieces, state, start = [], None, 0
    while start < 60:
        size = min(int(torch.randint(1, 7, (1,), generator=generator)), 60 - start)
        previous = state
        out, state = codec.decode_stream(offline[:, start : start + size], state)
        assert state is not previous
        pieces.append(out)
        start += size
    streamed = torch.cat(pieces, dim=-1)
    assert streamed.shape == reference.shape
    assert torch.allclose(streamed, reference, atol=1e-4, rtol=0)
    # A state is a handful of fixed-size tails, whatever the stream's length.
    assert all(len(tail) == 2 for tail in state.tails.values())
    # conv_in, the attention block, one per ConvNeXt block, the head
    assert len(state.tails) == 1 + 1 + TINY["decoder_layers"] + 1


def test_stream_state_is_left_unchanged_and_checked():
    codec = make(causal=True)
    x = audio(1, 8 * HOP)
    _, state = codec.encode_stream(x[..., : 4 * HOP])
    kept = {key: tail.clone() for key, tail in state.tails.items()}
    first, _ = codec.encode_stream(x[..., 4 * HOP :], state)
    again, _ = codec.encode_stream(x[..., 4 * HOP :], state)
    assert torch.equal(first, again) and state.frames == 4
    assert all(torch.equal(state.tails[key], tail) for key, tail in kept.items())
    with pytest.raises(ValueError, match="multiple of hop_length 8"):
        codec.encode_stream(x[..., :5], state)
    with pytest.raises(ValueError, match="expected a batch of 1"):
        codec.encode_stream(audio(2, HOP), state)
    with pytest.raises(ValueError, match="expected a decoder StreamState, got encoder"):
        codec.decode_stream(first, state)


def test_streaming_needs_a_causal_model():
    codec = make(causal=False)
    with pytest.raises(ValueError, match=r"causal=True"):
        codec.encode_stream(audio(1, HOP))
    with pytest.raises(ValueError, match=r"causal=True"):
        codec.decode_stream(torch.zeros(1, 2, dtype=torch.long), StreamState("decoder"))


def test_causal_model_ignores_the_future():
    codec = make(causal=True)
    x = audio(1, 40 * HOP, seed=5)
    cut = 23 * HOP + 3  # first changed sample; frames 0..22 end before it
    y = x.clone()
    y[..., cut:] = audio(1, x.shape[-1] - cut, seed=6)
    with torch.no_grad():
        latents_x, latents_y = codec.encoder(x), codec.encoder(y)
    assert torch.equal(latents_x[:, :23], latents_y[:, :23])
    assert not torch.equal(latents_x[:, 23], latents_y[:, 23])

    codes = codec.encode(x).codes
    changed = codes.clone()
    changed[:, 30:] = (changed[:, 30:] + 1) % 64
    a, b = codec.decode(codes), codec.decode(changed)
    assert torch.equal(a[..., : 30 * HOP], b[..., : 30 * HOP])
    assert not torch.equal(a[..., 30 * HOP : 31 * HOP], b[..., 30 * HOP : 31 * HOP])


def test_receptive_field_is_exact(codec):
    """A sample just outside the receptive field leaves a latent alone; one at its edge moves
    it, on both sides (the causal model sees nothing after its own hop)."""
    reach, frame = codec.encoder.reach(), 30
    assert codec.receptive_field == max(reach.left, reach.right) > 2 * HOP
    x = audio(1, 60 * HOP, seed=7)
    first, last = frame * HOP - reach.left, (frame + 1) * HOP - 1 + reach.right  # what it sees
    assert first > 0 and last < x.shape[-1] - 1
    assert (last - (frame + 1) * HOP + 1 == 0) == codec.config.causal
    with torch.no_grad():
        reference = codec.encoder(x)[:, frame]

    def latent_moves(sample: int) -> bool:
        y = x.clone()
        y[..., sample] += 0.5
        with torch.no_grad():
            return not torch.equal(codec.encoder(y)[:, frame], reference)

    assert not latent_moves(first - 1) and not latent_moves(last + 1)
    assert latent_moves(first) and latent_moves(last)


def test_decoder_receptive_field_is_exact(codec):
    """An output hop depends on exactly the frames in `decoder.reach()`: the gradient of the hop
    is nonzero at both edges and exactly zero just outside. `decode_long`'s default overlap rests
    on this. (A gradient, not a changed code: at the edge the effect on the audio is ~1e-9, which
    fp32 rounding may or may not keep, depending on the thread count.)"""
    reach, frame = codec.decoder.reach(), 25
    assert codec.decoder_receptive_field == max(reach.left, reach.right)
    codes = codec.encode(audio(1, 50 * HOP, seed=8)).codes
    quantized = codec.quantizer.decode(codes).detach().requires_grad_()  # (1, T, D)
    hop = codec.decoder(quantized)[..., frame * HOP : (frame + 1) * HOP]  # (1, HOP)
    weights = torch.randn(hop.shape, generator=torch.Generator().manual_seed(0))
    (hop * weights).sum().backward()
    seen = (quantized.grad[0].abs().sum(dim=-1) > 0).nonzero()[:, 0]  # frames with a gradient
    assert seen.min() == frame - reach.left and seen.max() == frame + reach.right


@pytest.mark.parametrize(
    ("hop", "strides", "rate"), [(320, (2, 4, 5, 8), 75), (600, (3, 5, 5, 8), 40)]
)
def test_default_strides(hop, strides, rate):
    config = WavTokenizerConfig(hop_length=hop)
    assert config.encoder_strides == strides and config.fft_size == 4 * hop
    assert config.sample_rate / hop == rate
    small = {"channels": 2, "latent_dim": 8, "decoder_dim": 16, "decoder_intermediate": 16}
    small |= {"decoder_layers": 1, "attention_heads": 2, "encoder_attention_layers": 1}
    small |= {"quantizer": {"kind": "vq", "options": {"codebook_size": 16}}}
    codec = build_codec("wavtokenizer", {"hop_length": hop, **small}).eval()
    tokens = codec.encode(audio(1, 3 * hop - 7))
    assert tokens.codes.shape == (1, 3)
    assert dict(tokens.spec.geometry) == {"sample_rate": 24000, "hop_length": hop, "channels": 1}
    assert tokens.spec.layout == "T" and tokens.spec.vocab_sizes == (16,)
    assert codec.decode(tokens).shape == (1, 1, 3 * hop)


def test_config_errors():
    with pytest.raises(ValueError, match="no default strides for hop_length 256"):
        WavTokenizerConfig(hop_length=256)
    with pytest.raises(ValueError, match=r"product is hop_length 320, got \[2, 4, 5\]"):
        WavTokenizerConfig(strides=(2, 4, 5))
    with pytest.raises(ValueError, match="divisible by attention_heads"):
        WavTokenizerConfig(attention_heads=7)
    with pytest.raises(ValueError, match="even n_fft"):
        WavTokenizerConfig(n_fft=321)
    with pytest.raises(ValueError, match="single-level quantizer"):
        build_codec(
            "wavtokenizer", {**TINY, "quantizer": {"kind": "rvq", "options": {"codebook_size": 16}}}
        )
    hop_only = build_codec("wavtokenizer", {**TINY, "strides": None, "hop_length": 600})
    assert hop_only.config.encoder_strides == (3, 5, 5, 8)


def test_bad_input_raises():
    codec = make()
    for shape in ((1, 2, 64), (1, 64), (1, 1, 0)):
        with pytest.raises(ValueError, match=r"wavtokenizer expected audio \(B, 1, S\).*got shape"):
            codec.encode(torch.zeros(shape))
    with pytest.raises(ValueError, match="expected float audio"):
        codec.encode(torch.zeros(1, 1, 64, dtype=torch.int16))
    with pytest.raises(ValueError, match="expected finite audio"):
        codec.encode(torch.full((1, 1, 64), math.nan))
    with pytest.raises(TypeError, match="expected a tensor of audio"):
        codec.encode([0.0] * 64)
    with pytest.raises(ValueError, match=r"lengths in \[1, 64\] samples, got values from 1 to 65"):
        codec.encode(torch.zeros(2, 1, 64), lengths=torch.tensor([1, 65]))
    with pytest.raises(ValueError, match=r"integer lengths \(2,\)"):
        codec.encode(torch.zeros(2, 1, 64), lengths=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"expected codes \(B, T\)"):
        codec.decode(torch.zeros(1, 1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="expected codes in"):
        codec.decode(torch.full((1, 3), 64))
    with pytest.raises(ValueError, match="chunk_seconds > 0"):
        codec.encode_long(torch.zeros(1, 1, 64), chunk_seconds=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_any_float_dtype_gives_the_codes_of_its_float32_values(dtype):
    """float64 is what `torch.from_numpy(soundfile.read(path)[0])` gives; the first conv raised
    "Input type (double) and bias type (float) should be the same"."""
    codec = make(causal=True)
    x = audio(2, 30 * HOP, seed=9).to(dtype)  # exactly representable in float32
    expected = codec.encode(x.float()).codes
    assert expected.unique().numel() > 5
    assert torch.equal(codec.encode(x).codes, expected)
    assert torch.equal(codec.encode_long(x, chunk_seconds=7 * HOP / 16000).codes, expected)
    streamed, state = codec.encode_stream(x[..., : 12 * HOP])
    rest, _ = codec.encode_stream(x[..., 12 * HOP :], state)
    assert torch.equal(torch.cat([streamed, rest], dim=1), expected)
    assert codec(x).reconstruction.dtype == torch.float32


@pytest.mark.parametrize("seed", [0, 1])
def test_at_init_the_latents_of_speech_are_not_one_vector(seed):
    # With PyTorch's default conv init the encoder shrank the signal and added its biases: the
    # latents of speech all pointed one way (mean cosine to their mean 0.99), k-means fitted the
    # codebook to that speck, and training collapsed it to 1-3 codes within 10 steps.
    root = Path(__file__).resolve().parents[1]
    model = yaml.safe_load((root / "configs/audio/demo-wavtokenizer.yaml").read_text())["model"]
    torch.manual_seed(seed)
    codec = build_codec("wavtokenizer", model).eval()
    clips = [
        read_audio(path, 24000)[0][:, : 37 * 320]
        for path in sorted(root.glob("assets/speech/*.flac"))
    ]
    with torch.no_grad():
        latents = codec.encoder(torch.stack(clips[:6])).flatten(0, 1)  # (6 × 37, D)
    cosine = torch.nn.functional.cosine_similarity(latents, latents.mean(0, keepdim=True))
    assert cosine.mean() < 0.6
