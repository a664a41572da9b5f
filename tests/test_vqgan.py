"""VQGAN (codecs/image/vqgan.py): shapes, the encode/decode round trip, grids of f8 and f16,
gradients, checkpoints, and the errors of its config and entry points."""

from __future__ import annotations

import re

import pytest
import torch

from mediatok.codecs import CODECS, Tokens, build_codec, load_codec
from mediatok.codecs.image import VQGAN, VQGANConfig
from mediatok.nn.conv import AttentionBlock2d
from mediatok.quantize import QuantizerConfig
from mediatok.tokens import TokenSpec

TINY = {
    "image_size": 32,
    "channels": 16,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "latent_dim": 8,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 32}},
}


def make(**overrides) -> VQGAN:
    torch.manual_seed(0)
    return build_codec("vqgan", {**TINY, **overrides})


def images(batch: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def test_registered_with_defaults_of_the_paper():
    assert CODECS["vqgan"] is VQGAN
    config = VQGANConfig()
    assert (config.downsample, config.grid) == (16, 16)
    assert config.quantizer.kind == "vq" and config.quantizer.options["codebook_dim"] == 8
    assert VQGANConfig(channel_mult=(1, 2, 2, 4)).downsample == 8


def test_shapes_and_dtypes():
    codec = make()
    x = images()
    out = codec(x)
    assert out.reconstruction.shape == (2, 3, 32, 32)
    assert out.reconstruction.dtype == torch.float32
    assert out.quantize.quantized.shape == (2, 16, 16, 8)  # channel-last (B, h, w, D)
    assert out.quantize.codes.shape == (2, 16, 16) and out.quantize.codes.dtype == torch.int64

    codec.eval()
    tokens = codec.encode(x)
    assert tokens.codes.shape == (2, 16, 16) and tokens.codes.dtype == torch.int64
    assert int(tokens.codes.min()) >= 0 and int(tokens.codes.max()) < 32
    assert tokens.spec == codec.token_spec
    assert tokens.spec.same_vocabulary(TokenSpec(vocab_sizes=[32], layout="H W"))
    assert dict(tokens.spec.geometry) == {
        "image_size": 32,
        "grid": 16,
        "downsample": 2,
        "channels": 3,
    }
    decoded = codec.decode(tokens)
    assert decoded.shape == (2, 3, 32, 32) and decoded.dtype == torch.float32


def test_decode_of_encode_is_the_forward_reconstruction():
    codec = make()
    codec(images(seed=3))  # one training step: k-means init and an EMA update
    codec.eval()
    x = images()
    tokens = codec.encode(x)
    with torch.no_grad():
        out = codec(x)
    assert torch.equal(tokens.codes, out.quantize.codes)
    decoded = codec.decode(tokens)
    assert torch.allclose(decoded, out.reconstruction, atol=1e-6, rtol=0)
    assert torch.equal(codec.decode(tokens.codes), decoded)


@pytest.mark.parametrize(
    ("channel_mult", "grid"), [((1, 1, 1, 1), 8), ((1, 1, 1, 1, 1), 4), ((1,), 64)]
)
def test_grid_follows_the_downsampling_factor(channel_mult, grid):
    codec = make(image_size=64, channels=8, channel_mult=channel_mult, latent_dim=4).eval()
    assert codec.config.downsample * grid == 64
    tokens = codec.encode(images(batch=1, size=64))
    assert tokens.codes.shape == (1, grid, grid)
    assert tokens.spec.geometry["grid"] == grid
    assert codec.decode(tokens).shape == (1, 3, 64, 64)


def test_attention_only_at_the_lowest_resolution_and_the_middle():
    codec = make(channel_mult=[1, 2, 2], num_res_blocks=2)
    # Encoder: 2 at the lowest resolution + 1 middle; decoder: 1 middle + 3 at the lowest.
    assert sum(isinstance(m, AttentionBlock2d) for m in codec.encoder.modules()) == 3
    assert sum(isinstance(m, AttentionBlock2d) for m in codec.decoder.modules()) == 4
    plain = make(attention_at_lowest=False)
    assert not any(isinstance(m, AttentionBlock2d) for m in plain.modules())


@pytest.mark.parametrize(
    "quantizer",
    [
        {"kind": "vq", "options": {"codebook_size": 32, "codebook_dim": 4, "kmeans_init": True}},
        {"kind": "vq", "options": {"codebook_size": 32, "ema_update": False}},
        {"kind": "fsq", "options": {"levels": [5, 5, 3]}},
    ],
)
def test_gradients_reach_every_parameter(quantizer):
    codec = make(quantizer=quantizer)
    x = images()
    out = codec(x)
    loss = (out.reconstruction - x).abs().mean() + sum(out.quantize.losses.values())
    loss.backward()
    for name, parameter in codec.named_parameters():
        assert parameter.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(parameter.grad).all(), f"non-finite gradient at {name}"


def test_save_and_load_give_identical_codes(tmp_path):
    codec = make(quantizer={"kind": "vq", "options": {"codebook_size": 32, "kmeans_init": True}})
    codec(images(seed=3))  # k-means init and EMA: buffers must travel with the checkpoint
    codec.eval()
    codec.save_pretrained(tmp_path / "vqgan")
    loaded = load_codec(tmp_path / "vqgan")
    assert isinstance(loaded, VQGAN) and loaded.config == codec.config
    x = images()
    tokens = codec.encode(x)
    assert torch.equal(loaded.encode(x).codes, tokens.codes)
    assert torch.equal(loaded.decode(tokens), codec.decode(tokens))
    assert isinstance(VQGAN.from_pretrained(tmp_path / "vqgan"), VQGAN)


def test_bad_input_raises():
    codec = make().eval()
    with pytest.raises(ValueError, match=re.escape("vqgan expected images (B, 3, 32, 32)")):
        codec.encode(torch.zeros(1, 3, 32, 33))
    with pytest.raises(ValueError, match=re.escape("got shape (3, 32, 32)")):
        codec(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="vqgan expected float images"):
        codec.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="vqgan expected a tensor of images"):
        codec.encode([[0.0]])
    with pytest.raises(ValueError, match=re.escape("vqgan expected codes (B, 16, 16), got shape")):
        codec.decode(torch.zeros(1, 256, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape("got shape (1, 8, 8)")):
        codec.decode(torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="expected codes in"):
        codec.decode(torch.full((1, 16, 16), 32, dtype=torch.long))
    tokens = codec.encode(images())
    wrong = Tokens(tokens.codes, TokenSpec(vocab_sizes=[7], layout="H W"))
    with pytest.raises(ValueError, match="vocabulary"):
        codec.decode(wrong)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="did you mean 'channel_mult'"):
        build_codec("vqgan", {**TINY, "channel_mul": [1, 2]})
    with pytest.raises(ValueError, match="did you mean 'latent_dim'"):
        build_codec("vqgan", {"latent_dims": 8})
    with pytest.raises(ValueError, match="image_size divisible by the downsampling factor 16"):
        VQGANConfig(image_size=200)
    with pytest.raises(ValueError, match="expected channels >= 1"):
        VQGANConfig(channels=0)
    with pytest.raises(ValueError, match="expected channel_mult to be a non-empty list"):
        VQGANConfig(channel_mult=())
    with pytest.raises(ValueError, match="expected channel_mult to be a non-empty list"):
        VQGANConfig(channel_mult=(1, 0))


def test_residual_quantizer_gives_a_level_axis(tmp_path):
    """With rvq the tokens are (B, Q, h, w), layout "Q H W", and round-trip through shards."""
    from mediatok.tokens import TokenDataset, TokenWriter

    torch.manual_seed(0)
    rvq = QuantizerConfig("rvq", {"codebook_size": 32, "num_quantizers": 2})
    codec = VQGAN(VQGANConfig(**{**TINY, "quantizer": rvq})).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tokens = codec.encode(x)
    grid = codec.config.grid
    assert tokens.codes.shape == (2, 2, grid, grid) and tokens.spec.layout == "Q H W"
    with torch.no_grad():
        assert torch.allclose(codec.decode(tokens), codec(x).reconstruction, atol=1e-5)
    with TokenWriter(tmp_path / "t", tokens.spec) as writer:
        writer.add_batch(tokens.codes)
    stored = TokenDataset(tmp_path / "t", tokens.spec)[1]["codes"]
    assert torch.equal(stored, tokens.codes[1])
    with pytest.raises(ValueError, match=rf"expected codes \(B, 2, {grid}, {grid}\)"):
        codec.decode(tokens.codes[:, 0])


def test_evaluation_counts_each_level_of_a_residual_quantizer_apart(tmp_path):
    """`evaluate_codec` takes the Q axis of "Q H W" codes as the level axis: its usage and
    perplexity are those of the codes grouped by level, not of grid cells dealt out to levels."""
    from mediatok.api import evaluate_codec
    from mediatok.data import list_images, read_center_crops, write_image
    from mediatok.eval import CodebookUsage

    torch.manual_seed(0)
    rvq = QuantizerConfig("rvq", {"codebook_size": 32, "num_quantizers": 2})
    codec = VQGAN(VQGANConfig(**{**TINY, "quantizer": rvq}))
    codec(images(4, seed=5))  # k-means init, so that the two levels use their codes differently
    checkpoint = codec.eval().save_pretrained(tmp_path / "checkpoint")
    for index in range(2):
        write_image(tmp_path / "images" / f"{index}.png", images(1, seed=index)[0])
    report = evaluate_codec(checkpoint, tmp_path / "images", tmp_path / "report", fid=False)

    codes = codec.encode(read_center_crops(list_images(tmp_path / "images"), 32)).codes
    usage = CodebookUsage([32, 32])
    usage.update(codes.movedim(1, -1))  # (B, h, w, Q)
    expected = usage.compute()
    assert expected["usage_q0"] != expected["usage_q1"]  # the levels differ: the test can fail
    assert report["codebook_usage"] == pytest.approx(expected["usage"])
    assert report["codebook_perplexity"] == pytest.approx(expected["perplexity"])
