"""TiTok's tail token drop (One-D-Piece) through `mediatok.codecs.nested_dropout`, and decoding
`Tokens` with lengths."""

from __future__ import annotations

import pytest
import torch

from mediatok.codecs import Tokens, build_codec
from mediatok.codecs.nested_dropout import NestedDropoutConfig, sample_lengths
from tiny_configs import TITOK

pytestmark = pytest.mark.usefixtures("one_thread")

# FSQ: no codebook state changes in training, so a training forward and an eval decode agree.
FSQ = {**TITOK, "token_dim": 3, "quantizer": {"kind": "fsq", "options": {"levels": [5, 5, 5]}}}
K = TITOK["num_tokens"]


def make(**overrides):
    torch.manual_seed(0)
    return build_codec("titok", {**FSQ, **overrides})


def images(batch=4):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_tail_drop_is_off_by_default_and_adds_no_weights():
    plain, dropping = make(), make(tail_drop={"mode": "uniform"})
    assert plain.config.tail_drop is None and plain.tail_drop is None
    assert plain.state_dict().keys() == dropping.state_dict().keys()
    x = images()  # same seed, same weights: in eval mode the option changes nothing
    with torch.no_grad():
        assert torch.equal(plain.eval()(x).reconstruction, dropping.eval()(x).reconstruction)


def test_training_decodes_each_image_from_a_drawn_prefix():
    config = {"mode": "uniform"}
    codec = make(tail_drop=config)
    x = images()
    out = codec(x, generator=torch.Generator().manual_seed(3))
    lengths = sample_lengths(NestedDropoutConfig(**config), 4, K, torch.Generator().manual_seed(3))
    assert lengths.tolist() != [K] * 4
    codec.eval()
    tokens = codec.encode(x)
    expected = codec.decode(Tokens(tokens.codes, tokens.spec, lengths))
    assert torch.allclose(out.reconstruction, expected, atol=1e-5)
    # Eval mode drops nothing: forward decodes every token.
    with torch.no_grad():
        assert torch.allclose(codec(x).reconstruction, codec.decode(tokens), atol=1e-5)


def test_decode_with_lengths_masks_the_tail_and_ignores_padding():
    codec = make().eval()
    x = images(batch=2)
    tokens = codec.encode(x)
    whole = codec.decode(tokens)
    full = Tokens(tokens.codes, tokens.spec, torch.tensor([K, K]))
    assert torch.equal(codec.decode(full), whole)
    short = Tokens(tokens.codes, tokens.spec, torch.tensor([2, K]))
    decoded = codec.decode(short)
    assert not torch.allclose(decoded[0], whole[0], atol=1e-4)
    assert torch.allclose(decoded[1], whole[1], atol=1e-6)
    padded = tokens.codes.clone()
    padded[0, 2:] = 10**6  # padding past the length: any value
    assert torch.allclose(codec.decode(Tokens(padded, tokens.spec, short.lengths)), decoded)


def test_tail_drop_trains_the_mask_token():
    codec = make(tail_drop={"mode": "pow2"})
    out = codec(images(), generator=torch.Generator().manual_seed(0))
    out.reconstruction.abs().mean().backward()
    assert codec.mask_token.grad.abs().sum() > 0


def test_bad_lengths():
    codec = make().eval()
    tokens = codec.encode(images(batch=2))
    with pytest.raises(ValueError, match=rf"titok expected lengths in 0..{K}, got \[9, 1\]"):
        codec.decode(Tokens(tokens.codes, tokens.spec, torch.tensor([9, 1])))
    with pytest.raises(ValueError, match=r"titok expected integer lengths \(B=2,\)"):
        codec.decode(Tokens(tokens.codes, tokens.spec, torch.tensor([1])))
    with pytest.raises(ValueError, match=r"tail_drop\.mode: expected one of 'uniform', 'pow2'"):
        make(tail_drop={"mode": "tail"})
