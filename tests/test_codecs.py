"""One contract test over every registered codec, with a tiny config of each (STYLE.md § Tests)."""

from __future__ import annotations

import json

import pytest
import torch

from mediatok.codecs import CODECS, FlowOutput, Tokens, build_codec, load_codec
from tiny_configs import CAUSAL_VIDEO, FLEXTOK, TITOK, WAVTOKENIZER_16K

TINY = {
    "titok": {**TITOK, "depth": 2},
    "flextok": FLEXTOK,
    "vqgan": {
        "image_size": 32,
        "channels": 16,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "latent_dim": 8,
        "quantizer": {"kind": "vq", "options": {"codebook_size": 32}},
    },
    "wavtokenizer": WAVTOKENIZER_16K,
    "causal_video": CAUSAL_VIDEO,
}


def make(name: str):
    torch.manual_seed(0)
    return build_codec(name, TINY[name])


def media(codec, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """A random batch in [-1, 1] of what `codec` codes: images `(B, 3, H, W)`, waveforms
    `(B, 1, S)` a few hops long, or videos `(B, 3, T, H, W)` of 1 + 2·temporal_compression
    frames (a whole number of latent frames, so that decoding gives back T frames)."""
    generator = torch.Generator().manual_seed(seed)
    if codec.modality == "image":
        size = codec.config.image_size
        return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    if codec.modality == "audio":
        samples = 12 * codec.config.hop_length
        return torch.rand(batch, 1, samples, generator=generator) * 2 - 1
    if codec.modality == "video":
        size, frames = codec.config.image_size, 1 + 2 * codec.config.temporal_compression
        return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1
    raise AssertionError(f"no test media for modality {codec.modality!r}")


def test_every_registered_codec_has_a_tiny_config():
    assert set(CODECS) <= set(TINY), f"add a tiny config for {set(CODECS) - set(TINY)}"


@pytest.mark.parametrize("name", sorted(CODECS))
def test_contract(name):
    codec = make(name)
    x = media(codec)
    out = codec(x)
    assert out.reconstruction.shape == x.shape and out.reconstruction.dtype == torch.float32
    assert out.quantize.codes.dtype == torch.int64
    losses = dict(out.quantize.losses)
    assert all(torch.isfinite(v) for v in losses.values())
    loss = (out.reconstruction - x).abs().mean() + sum(losses.values())
    loss.backward()
    for pname, parameter in codec.named_parameters():
        assert parameter.grad is not None, f"{name}: no gradient reaches {pname}"

    codec.eval()
    tokens = codec.encode(x)
    assert isinstance(tokens, Tokens) and tokens.codes.dtype == torch.int64
    assert tokens.codes.shape[0] == 2
    assert tokens.spec == codec.token_spec
    assert int(tokens.codes.max()) < max(tokens.spec.vocab_sizes) and int(tokens.codes.min()) >= 0
    decoded = codec.decode(tokens)
    if isinstance(out, FlowOutput):
        # A flow decoder samples (from a seeded noise): `forward` gives a one-step estimate at a
        # random time, not what `decode` gives, so the codec's tests compare its samples.
        assert decoded.shape == x.shape and bool(torch.isfinite(decoded).all())
    else:
        with torch.no_grad():
            assert torch.allclose(decoded, codec(x).reconstruction, atol=1e-5)
    assert torch.equal(codec.decode(tokens.codes), decoded)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_save_and_load_give_the_same_codes(name, tmp_path):
    codec = make(name)
    codec(media(codec))  # one training forward: k-means init, EMA, clocks
    codec.eval()
    x = media(codec, seed=2)
    codec.save_pretrained(tmp_path / "checkpoint")
    loaded = load_codec(tmp_path / "checkpoint")
    assert type(loaded) is type(codec)
    assert torch.equal(loaded.encode(x).codes, codec.encode(x).codes)
    assert torch.equal(loaded.decode(codec.encode(x)), codec.decode(codec.encode(x)))


@pytest.mark.parametrize("name", sorted(CODECS))
def test_bad_input_raises(name):
    codec = make(name).eval()
    if codec.modality == "image":
        size = codec.config.image_size
        with pytest.raises(ValueError, match=rf"{name} expected images \(B, 3, {size}, {size}\)"):
            codec.encode(torch.zeros(1, 3, size + 1, size))
        with pytest.raises(ValueError, match="expected float images"):
            codec.encode(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        wrong_codes = torch.zeros(1, 3, dtype=torch.long)
        if codec.token_spec.geometry.get("prefix_decodable"):  # any prefix is valid: too long
            wrong_codes = torch.zeros(1, codec.token_spec.geometry["num_tokens"] + 1).long()
    elif codec.modality == "video":
        size = codec.config.image_size
        with pytest.raises(ValueError, match=rf"{name}\.encode expected videos \(B, 3, T, H, W\)"):
            codec.encode(torch.zeros(1, 1, 5, size, size))
        with pytest.raises(ValueError, match="expected float videos"):
            codec.encode(torch.zeros(1, 3, 5, size, size, dtype=torch.uint8))
        wrong_codes = torch.zeros(1, 3, dtype=torch.long)
    else:
        with pytest.raises(ValueError, match=rf"{name} expected audio \(B, 1, S\)"):
            codec.encode(torch.zeros(1, 2, 64))
        with pytest.raises(ValueError, match="expected float audio"):
            codec.encode(torch.zeros(1, 1, 64, dtype=torch.int16))
        wrong_codes = torch.zeros(1, 1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="expected codes"):
        codec.decode(wrong_codes)
    tokens = codec.encode(media(codec))
    wrong = Tokens(tokens.codes, type(tokens.spec)(vocab_sizes=[7], layout=tokens.spec.layout))
    with pytest.raises(ValueError, match="vocabulary"):
        codec.decode(wrong)


def test_unknown_codec_and_misspelt_option():
    with pytest.raises(ValueError, match=r"known codecs: .*titok"):
        build_codec("titoc")
    with pytest.raises(ValueError, match="did you mean 'num_tokens'"):
        build_codec("titok", {"num_token": 32})


def test_titok_sizes_follow_the_paper():
    for size, (width, depth, heads) in {
        "S": (512, 8, 8),
        "B": (768, 12, 12),
        "L": (1024, 24, 16),
    }.items():
        config = CODECS["titok"].config_class(size=size, num_tokens=32)
        assert (config.width, config.depth, config.heads) == (width, depth, heads)


# A seeded tiny model of each codec gives these numbers (the first row of codes, the first
# four values of the reconstruction: pixels or samples); a change here is a change of the model.
# A fresh FlexTok's flow decoder predicts zero velocity (adaLN-zero), so its decode is the seeded
# noise: its sampler is pinned in test_flextok.py.
PINNED = {
    "causal_video": (
        [312, 312, 312, 312, 312, 312, 192, 287, 312, 312, 287, 312, 312, 438, 187, 311],
        [0.04935, -0.09313, -0.04707, -0.08781],
    ),
    "flextok": (
        [32035, 32036, 32036, 32101, 32044, 32036, 32036, 44836],
        [-1.12584, -1.15236, -0.25058, -0.43388],
    ),
    "titok": ([23, 38, 38, 4, 23, 4, 40, 23], [-0.09926, -0.01568, 0.06771, -0.12429]),
    "vqgan": (
        [22, 22, 22, 22, 26, 26, 26, 26, 22, 26, 26, 26, 22, 26, 26, 26],
        [0.19581, 0.22183, 0.24404, 0.23021],
    ),
    "wavtokenizer": (
        [60, 15, 25, 15, 51, 8, 25, 17, 17, 17, 17, 32],
        [-0.01872, -0.00116, -0.02211, 0.0012],
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_output(name):
    codec = make(name).eval()
    tokens = codec.encode(media(codec))
    reconstruction = codec.decode(tokens)
    codes, values = PINNED[name]
    assert tokens.codes[0].reshape(-1)[: len(codes)].tolist() == codes
    assert torch.allclose(reconstruction[0].reshape(-1)[:4], torch.tensor(values), atol=1e-4)


def test_load_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text('{"something": "else"}')
    with pytest.raises(ValueError, match=r"config\.json: expected a codec checkpoint"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text('{"kind": "codec", "run": {"codec": "titok"}}')
    with pytest.raises(ValueError, match=r"config\.json: expected a codec checkpoint's run"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(
        '{"kind": "codec", "run": {"codec": "titok", "model": {}}}'
    )
    with pytest.raises(
        FileNotFoundError, match=r"expected the codec.s weights in model\.safetensors"
    ):
        load_codec(tmp_path)
    make("titok").save_pretrained(tmp_path / "titok")
    model = {"num_tokens": 9, "image_size": 32, "patch_size": 8}
    (tmp_path / "titok" / "config.json").write_text(
        json.dumps({"kind": "codec", "run": {"codec": "titok", "model": model}})
    )
    with pytest.raises(ValueError, match="weights do not fit codec 'titok'"):
        load_codec(tmp_path / "titok")


def test_titok_with_a_residual_quantizer_gives_a_level_axis():
    """TiTok builds with any quantizer kind, so a residual one must encode and decode: codes
    `(B, Q, K)`, layout "Q N" (it used to fail in `encode` on the spec's layout)."""
    torch.manual_seed(0)
    rvq = {"kind": "rvq", "options": {"codebook_size": 16, "num_quantizers": 2}}
    codec = build_codec("titok", {**TINY["titok"], "quantizer": rvq}).eval()
    x = media(codec)
    tokens = codec.encode(x)
    assert tokens.codes.shape == (2, 2, 8) and tokens.spec.layout == "Q N"
    assert tokens.spec.vocab_sizes == (16, 16)
    with torch.no_grad():
        assert torch.allclose(codec.decode(tokens), codec(x).reconstruction, atol=1e-5)
    with pytest.raises(ValueError, match=r"titok expected codes \(B, 2, 8\)"):
        codec.decode(tokens.codes[:, 0])


@pytest.mark.parametrize("name", sorted(CODECS))
def test_decode_refuses_tokens_of_another_geometry(name):
    """Two configs may share a vocabulary (two image sizes, 75 and 40 tokens per second) while
    their tokens mean different media: `decode(Tokens)` checks the spec's geometry and layout."""
    codec = make(name).eval()
    tokens = codec.encode(media(codec))
    spec = tokens.spec
    geometry = dict(spec.geometry)
    key = "hop_length" if "hop_length" in geometry else "image_size"
    geometry[key] *= 2
    other = type(spec)(vocab_sizes=spec.vocab_sizes, layout=spec.layout, geometry=geometry)
    with pytest.raises(
        ValueError, match=rf"{name}: cannot decode these tokens: expected geometry .*{key}"
    ):
        codec.decode(Tokens(tokens.codes, other))
    bigger = type(spec)(vocab_sizes=[2 * size for size in spec.vocab_sizes], layout=spec.layout)
    with pytest.raises(
        ValueError, match=rf"{name}: cannot decode these tokens: expected vocabulary"
    ):
        codec.decode(Tokens(tokens.codes, bigger))
    # A spec without geometry (built by hand) is taken on its vocabulary alone.
    bare = type(spec)(vocab_sizes=spec.vocab_sizes, layout=spec.layout)
    assert torch.equal(codec.decode(Tokens(tokens.codes, bare)), codec.decode(tokens))


@pytest.mark.parametrize("name", sorted(CODECS))
def test_encode_leaves_a_training_codec_unchanged(name):
    """`encode` is inference: on a codec still in training mode (fresh from `build_codec`) it
    used to run the quantizer's training step (k-means init, EMA update, dead-code revival),
    changing the codebook, so two encodes of the same media gave different codes."""
    codec = make(name)
    assert codec.training
    x = media(codec)
    before = {key: value.clone() for key, value in codec.state_dict().items()}
    first = codec.encode(x).codes
    assert torch.equal(codec.encode(x).codes, first)
    changed = [
        key for key, value in codec.state_dict().items() if not torch.equal(value, before[key])
    ]
    assert not changed
    assert codec.training and codec.quantizer.training  # the mode is restored
