"""The causal video tokenizer: causality, 1 + 4k frame arithmetic, chunked == one pass (encode
and decode), images == 1-frame videos, padded batches == items alone, bounded streaming state,
last-tap inflation, the shipped configs and input errors (fp32 on CPU, one thread)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mediatok.codecs import build_codec
from mediatok.codecs.video import (
    CausalVideoConfig,
    CausalVideoTokenizer,
    FrameCache,
    inflate_from_image_checkpoint,
)
from mediatok.codecs.video.layers import CausalConv3d, CausalTemporalAttention
from mediatok.config import from_dict
from tiny_configs import CAUSAL_VIDEO, TITOK

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, STEP = CAUSAL_VIDEO["image_size"], CAUSAL_VIDEO["temporal_compression"]
GRID = SIZE // 4  # spatial compression 4 (channel_mult of length 3)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "video"


def clips(batch: int, frames: int, seed: int = 1, size: int = SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1


def make(seed: int = 0, **overrides) -> CausalVideoTokenizer:
    torch.manual_seed(seed)
    return build_codec("causal_video", {**CAUSAL_VIDEO, **overrides}).eval()


@pytest.fixture(scope="module")
def codec() -> CausalVideoTokenizer:
    return make()


def test_frame_arithmetic_and_end_padding(codec):
    """1 + 4k frames give 1 + k latent frames; other counts are padded at the end with their
    last frame to the next 1 + 4k; decoding gives 1 + 4k frames."""
    x = clips(2, 14)
    for frames in range(1, 15):
        latent = 1 + -(-(frames - 1) // STEP)
        assert codec.latent_frames(frames) == latent
        tokens = codec.encode(x[:, :, :frames])
        assert tokens.codes.shape == (2, latent, GRID, GRID) and tokens.lengths is None
        assert codec.decode(tokens).shape == (2, 3, 1 + STEP * (latent - 1), SIZE, SIZE)
    short = x[:, :, :6]  # → 9 frames
    repeated = torch.cat([short, short[:, :, -1:].expand(-1, -1, 3, -1, -1)], dim=2)
    assert torch.equal(codec.encode(short).codes, codec.encode(repeated).codes)
    with torch.no_grad():  # forward pads the same way and trims back to T
        out = codec(short)
        assert out.reconstruction.shape == short.shape
        assert torch.equal(out.quantize.codes, codec.encode(short).codes)
        assert torch.allclose(out.reconstruction, codec.decode(out.quantize.codes)[:, :, :6])


def test_causality(codec):
    """Latent frame j sees frames ≤ 4j only; decoded frame t sees latent frames ≤ ceil(t / 4)."""
    x = clips(1, 17)
    codes = codec.encode(x).codes  # (1, 5, h, w)
    assert codes.unique().numel() > 10  # varied codes: the comparisons below can fail
    for changed in (1, 4, 5, 12, 16):
        y = x.clone()
        y[:, :, changed:] = clips(1, 17 - changed, seed=7)
        other = codec.encode(y).codes
        kept = (changed - 1) // STEP + 1  # latent frames that end before `changed`
        assert torch.equal(other[:, :kept], codes[:, :kept]), f"frames from {changed} changed"
        assert not torch.equal(other[:, kept:], codes[:, kept:])
    video = codec.decode(codes)
    for changed in (1, 2, 4):
        other = codes.clone()
        other[:, changed:] = (codes[:, changed:] + 1) % codec.quantizer.codebook_sizes[0]
        kept = 1 + STEP * (changed - 1)  # frames decoded from latent frames < `changed`
        decoded = codec.decode(other)
        assert torch.equal(decoded[:, :, :kept], video[:, :, :kept])
        assert not torch.allclose(decoded[:, :, kept:], video[:, :, kept:])


def test_chunked_encoding_equals_one_pass(codec):
    x = clips(2, 23)  # padded to 25 frames, 7 latent frames
    whole = codec.encode(x)
    assert whole.codes.shape == (2, 7, GRID, GRID)
    for chunk in (STEP, 2 * STEP, 3 * STEP, 6 * STEP, 64):
        chunked = codec.encode_long(x, chunk_frames=chunk)
        assert torch.equal(chunked.codes, whole.codes), f"chunks of {chunk} frames"
    # Codes could hide a small error: the latents agree up to float rounding too.
    padded = codec._pad_frames(x, None)
    with torch.no_grad():
        reference = codec.encoder(padded).permute(0, 2, 3, 4, 1)  # (B, T', h, w, D)
        for chunk in (STEP, 3 * STEP):
            latents = torch.cat(list(codec._latents(padded, chunk)), dim=1)
            assert torch.allclose(latents, reference, atol=1e-6, rtol=0), f"chunks of {chunk}"


def test_without_attention_chunks_stay_exact():
    codec = make(attention_layers=0)
    assert not any("attention" in type(module).__name__.lower() for module in codec.modules())
    x = clips(1, 13)
    codes = codec.encode(x).codes
    assert torch.equal(codec.encode_long(x, chunk_frames=STEP).codes, codes)
    assert torch.allclose(codec.decode_long(codes, 1), codec.decode(codes), atol=1e-5, rtol=0)


def test_chunked_decoding_equals_one_pass(codec):
    codes = codec.encode(clips(2, 25)).codes  # 7 latent frames
    whole = codec.decode(codes)
    assert whole.shape == (2, 3, 25, SIZE, SIZE) and whole.dtype == torch.float32
    for chunk in (1, 2, 3, 5, 7, 8):
        chunked = codec.decode_long(codes, chunk_latent_frames=chunk)
        assert torch.allclose(chunked, whole, atol=1e-5, rtol=0), f"chunks of {chunk}"


def test_streaming_state_stays_bounded(codec):
    """A cache holds at most k − 1 input frames per conv and `attention_window` keys and values
    per attention layer, whatever the length streamed so far."""
    x = codec._pad_frames(clips(1, 41), None)
    window = CAUSAL_VIDEO["attention_window"]
    cache, sizes = FrameCache(), []
    with torch.no_grad():
        codec.encoder(x[:, :, :1], cache)
        for start in range(1, 41, STEP):  # one latent frame per chunk
            codec.encoder(x[:, :, start : start + STEP], cache)
            sizes.append(sum(tail.numel() for tail in cache.tails.values()))
    assert len(set(sizes[window:])) == 1
    modules = dict(codec.named_modules())
    assert any(isinstance(modules[key], CausalTemporalAttention) for key in cache.tails)
    for key, tail in cache.tails.items():
        if isinstance(modules[key], CausalTemporalAttention):
            assert tail.shape[3] == window  # (2, B·h·w, heads, window, d)
        else:
            assert tail.shape[2] <= modules[key].time_kernel - 1  # (B, C, ≤ k − 1, H, W)


def test_an_image_is_a_one_frame_video(codec):
    x = clips(2, 9)
    image = x[:, :, 0]  # (B, 3, H, W)
    tokens = codec.encode(image)
    assert tokens.codes.shape == (2, 1, GRID, GRID)
    assert torch.equal(tokens.codes, codec.encode(x[:, :, :1]).codes)
    # The first frame is encoded alone: a clip's first latent frame is its first frame's code.
    assert torch.equal(codec.encode(x).codes[:, :1], tokens.codes)
    assert codec.decode(tokens).shape == (2, 3, 1, SIZE, SIZE)
    with torch.no_grad():
        out = codec(image)
    assert out.reconstruction.shape == image.shape
    assert torch.allclose(out.reconstruction, codec.decode(tokens)[:, :, 0], atol=1e-6)


def test_padded_batch_gives_each_item_its_own_codes_and_frames(codec):
    lengths = torch.tensor([17, 6, 1])
    x = clips(3, 17, seed=3)
    x[1, :, 6:] = 0.7  # what lies past a length must not matter
    x[2, :, 1:] = -0.3
    tokens = codec.encode(x, lengths=lengths)
    assert tokens.lengths.tolist() == [5, 3, 1]
    assert torch.equal(codec.encode_long(x, chunk_frames=STEP, lengths=lengths).codes, tokens.codes)
    batch_video = codec.decode(tokens)  # uses tokens.lengths
    batch_long = codec.decode_long(tokens, chunk_latent_frames=2)
    for item, length in enumerate(lengths.tolist()):
        alone = codec.encode(x[item : item + 1, :, :length]).codes[0]
        latent = len(alone)
        assert torch.equal(tokens.codes[item, :latent], alone)
        assert (tokens.codes[item, latent:] == 0).all()
        expected = codec.decode(alone[None])[0]  # (3, 1 + 4·(latent − 1), H, W)
        frames = expected.shape[1]
        for decoded in (batch_video, batch_long):
            assert torch.allclose(decoded[item, :, :frames], expected, atol=1e-5)
            assert (decoded[item, :, frames:] == 0).all()


def test_last_tap_inflation(tmp_path):
    """An image-only checkpoint (trained on 1-frame clips: only the last temporal taps see
    data) inflates into a video model that codes every latent frame of a static clip as the
    image model codes the frame."""
    image_model = make(seed=3)  # stands in for a model trained on 1-frame clips
    image_model.save_pretrained(tmp_path / "image")
    frame = clips(2, 1, seed=5)
    static = frame.expand(-1, -1, 13, -1, -1)
    image_codes = image_model.encode(frame).codes  # (2, 1, h, w)
    assert image_codes.unique().numel() > 3
    # Without inflation the earlier taps mix frames: later latent frames differ.
    before = image_model.encode(static).codes
    assert not torch.equal(before, image_codes.expand_as(before))

    model = inflate_from_image_checkpoint(make(seed=4), tmp_path / "image")
    codes = model.encode(static).codes  # (2, 4, h, w)
    assert torch.equal(codes, image_codes.expand_as(codes))
    source = image_model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, CausalConv3d) and module.time_kernel > 1:
            weight = module.conv.weight
            assert (weight[:, :, :-1] == 0).all(), name
            assert torch.equal(weight[:, :, -1], source[f"{name}.conv.weight"][:, :, -1]), name
    decoded = model.decode(codes)
    assert torch.allclose(decoded[:, :, :1], image_model.decode(image_codes), atol=1e-6)

    with pytest.raises(ValueError, match="weights do not fit this causal_video model"):
        inflate_from_image_checkpoint(make(channels=4), tmp_path / "image")
    torch.manual_seed(0)
    build_codec("titok", TITOK).save_pretrained(tmp_path / "titok")
    with pytest.raises(ValueError, match="expected a 'causal_video' checkpoint"):
        inflate_from_image_checkpoint(model, tmp_path / "titok")
    with pytest.raises(FileNotFoundError):
        inflate_from_image_checkpoint(model, tmp_path / "nothing")


def test_lfq_builds_and_codes():
    lfq = {"kind": "lfq", "options": {"codebook_size": 2**18}}
    codec = make(latent_dim=18, quantizer=lfq)
    assert codec.token_spec.vocab_sizes == (2**18,)
    x = clips(2, 5)
    codec.train()
    out = codec(x)
    assert {"commitment", "entropy"} <= set(out.quantize.losses)
    codec.eval()
    codes = codec.encode(x).codes
    assert codes.shape == (2, 2, GRID, GRID) and 0 <= int(codes.min()) < int(codes.max()) < 2**18
    assert torch.allclose(codec.decode(codes), codec(x).reconstruction[:, :, :5], atol=1e-5)


def test_shipped_configs():
    """The model sections of configs/video/*.yaml (the run configs load through the
    `video_codec` task, tests/test_configs.py): compression, sizes and quantizers as named."""
    expected = {
        "video-4x8x8.yaml": (4, 8, 128, "fsq", 64000),
        "video-4x16x16.yaml": (4, 16, 256, "fsq", 64000),
        "video-4x8x8-lfq.yaml": (4, 8, 128, "lfq", 2**18),
        "demo-video.yaml": (4, 4, 32, "fsq", None),
    }
    assert sorted(path.name for path in CONFIGS.glob("*.yaml")) == sorted(expected)
    for name, (time, space, size, kind, codebook) in expected.items():
        run = yaml.safe_load((CONFIGS / name).read_text())
        assert (run["task"], run["codec"]) == ("video_codec", "causal_video")
        assert set(run["data"]) <= {"train_dir", "frames", "image_dir"}
        config = from_dict(CausalVideoConfig, run["model"])
        got = (config.temporal_compression, config.spatial_compression, config.image_size)
        assert got == (time, space, size), name
        assert config.quantizer.kind == kind, name
        if codebook is not None:
            levels = config.quantizer.options.get("levels", [8, 8, 8, 5, 5, 5])
            size_of = config.quantizer.options.get("codebook_size") or torch.tensor(levels).prod()
            assert int(size_of) == codebook, name
    demo = yaml.safe_load((CONFIGS / "demo-video.yaml").read_text())
    torch.manual_seed(0)
    codec = build_codec("causal_video", demo["model"])
    assert sum(p.numel() for p in codec.parameters()) < 100_000  # ~67k: a CPU minute of training
    frames = demo["data"]["frames"]
    codes = codec.eval().encode(clips(1, frames, size=32)).codes
    assert codes.shape == (1, codec.latent_frames(frames), 8, 8)  # 32 / 4


def test_bad_input_raises(codec):
    with pytest.raises(TypeError, match="expected a tensor of videos"):
        codec.encode([[0.0]])
    with pytest.raises(ValueError, match=r"expected videos \(B, 3, T, H, W\) or images"):
        codec.encode(torch.zeros(1, 4, 5, SIZE, SIZE))  # 4 channels
    with pytest.raises(ValueError, match=r"expected videos \(B, 3, T, H, W\)"):
        codec.encode(torch.zeros(3, SIZE, SIZE))  # no batch axis
    with pytest.raises(ValueError, match=r"expected videos \(B, 3, T, H, W\)"):
        codec.encode(torch.zeros(1, 3, 0, SIZE, SIZE))  # no frames
    with pytest.raises(ValueError, match="expected float videos in"):
        codec(torch.zeros(1, 3, 5, SIZE, SIZE, dtype=torch.uint8))
    for height, width in ((2, 2), (SIZE + 2, SIZE), (SIZE, 6)):  # spatial compression 4
        with pytest.raises(ValueError, match="multiples of the spatial compression 4, got"):
            codec.encode(torch.zeros(1, 3, 5, height, width))
    assert codec.encode(torch.zeros(1, 3, 5, 8, 12)).codes.shape == (1, 2, 2, 3)  # any multiple
    with pytest.raises(ValueError, match="positive multiple of temporal_compression 4, got 6"):
        codec.encode_long(clips(1, 9), chunk_frames=6)
    with pytest.raises(TypeError, match="chunk_frames to be an int"):
        codec.encode_long(clips(1, 9), chunk_frames=4.0)
    with pytest.raises(ValueError, match="chunk_latent_frames >= 1"):
        codec.decode_long(torch.zeros(1, 2, 4, 4, dtype=torch.long), chunk_latent_frames=0)
    with pytest.raises(ValueError, match=r"expected lengths in \[1, 9\] frames, got values"):
        codec.encode(clips(2, 9), lengths=torch.tensor([9, 10]))
    with pytest.raises(ValueError, match=r"expected integer lengths \(2,\)"):
        codec.encode(clips(2, 9), lengths=torch.tensor([9.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected codes \(B, T', h, w\)"):
        codec.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer codes"):
        codec.decode(torch.zeros(1, 2, 4, 4))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="divisible by the spatial compression 8"):
        CausalVideoConfig(image_size=100)
    with pytest.raises(ValueError, match="temporal_compression to be a power of two"):
        CausalVideoConfig(temporal_compression=3)
    with pytest.raises(ValueError, match="temporal_compression <= the spatial compression 4"):
        CausalVideoConfig(channel_mult=(1, 2, 2), temporal_compression=8)
    with pytest.raises(ValueError, match="divisible by attention_heads"):
        CausalVideoConfig(attention_heads=7)
    rvq = {"kind": "rvq", "options": {"codebook_size": 16, "num_quantizers": 2}}
    with pytest.raises(ValueError, match="expected a single-level quantizer"):
        make(quantizer=rvq)
