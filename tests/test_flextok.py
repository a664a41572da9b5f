"""FlexTok: the register mask, nested dropout, the flow objective, the sampler (diffusers'
schedule, seeding, guidance, compile), prefix round trips, REPA and bad input."""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from copy import deepcopy

import numpy as np
import pytest
import torch

from mediatok.codecs import Tokens, build_codec
from mediatok.codecs.image import FlexTok, FlexTokConfig, REPAConfig
from mediatok.codecs.image import flextok as flextok_module
from mediatok.codecs.image.flextok import register_attention_mask
from mediatok.codecs.image.flow import apg, euler_scheduler, euler_sigmas, sample_times
from mediatok.codecs.nested_dropout import (
    NestedDropout,
    NestedDropoutConfig,
    length_choices,
    mask_tail,
    sample_lengths,
)
from tiny_configs import FLEXTOK

pytestmark = pytest.mark.usefixtures("one_thread")

K = FLEXTOK["num_registers"]
SIZE = FLEXTOK["image_size"]


def make(**overrides):
    torch.manual_seed(0)
    return build_codec("flextok", {**FLEXTOK, **overrides})


def untrained(codec):
    """Give the zero-initialized maps of the flow decoder (adaLN-zero, output) random weights,
    and the register projection larger ones: a fresh decoder predicts v = 0, under which every
    sampler setting agrees, and barely tells registers from the mask token."""
    generator = torch.Generator().manual_seed(7)
    decoder = codec.decoder
    zeros = (*[b.modulation for b in decoder.blocks], decoder.modulation_out, decoder.to_pixels)
    with torch.no_grad():
        for module in zeros:
            module.weight.copy_(0.2 * torch.randn(module.weight.shape, generator=generator))
            module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
        weight = codec.from_token.weight
        weight.copy_(torch.randn(weight.shape, generator=generator))
    return codec.eval()


def images(batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, SIZE, SIZE, generator=generator) * 2 - 1


# ------------------------------------------------------------------------------------------
# the encoder's register mask


def test_register_mask_layout():
    mask = register_attention_mask(3, 4)
    patches, registers = mask[:3], mask[3:]
    assert patches[:, :3].all() and not patches[:, 3:].any()  # patches see patches only
    assert registers[:, :3].all()  # every register sees every patch
    assert torch.equal(registers[:, 3:], torch.ones(4, 4, dtype=torch.bool).tril())


def test_a_later_register_never_changes_an_earlier_one_and_patches_never_see_registers():
    codec = make().eval()
    x = images()
    captured = []
    # The last block's MLP output over [patches, registers]: its patch rows see only the
    # patches' residual stream.
    last = codec.encoder.blocks[-1].mlp
    hook = last.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    before = codec._encode_latents(x, K)
    for later in range(1, K):
        with torch.no_grad():
            codec.registers[later:] += torch.randn(K - later, FLEXTOK["encoder_width"])
        after = codec._encode_latents(x, K)
        assert torch.equal(after[:, :later], before[:, :later])
        assert not torch.allclose(after[:, later:], before[:, later:])
        before = after
    hook.remove()
    num_patches = (SIZE // FLEXTOK["patch_size"]) ** 2
    for hidden in captured[1:]:
        assert torch.equal(hidden[:, :num_patches], captured[0][:, :num_patches])


def test_every_prefix_encodes_as_the_prefix_of_the_whole():
    codec = make().eval()
    x = images()
    whole = codec.encode(x)
    assert whole.codes.shape == (3, K) and whole.lengths.tolist() == [K] * 3
    for k in range(1, K + 1):
        prefix = codec.encode(x, num_tokens=k)
        assert prefix.codes.shape == (3, k) and prefix.lengths.tolist() == [k] * 3
        assert torch.equal(prefix.codes, whole.codes[:, :k])


def test_token_spec():
    spec = make().token_spec
    assert spec.layout == "N" and spec.vocab_sizes == (64000,)
    assert dict(spec.geometry) == {
        "image_size": SIZE,
        "num_tokens": K,
        "prefix_decodable": True,
        "channels": 3,
    }


# ------------------------------------------------------------------------------------------
# nested dropout


@pytest.mark.parametrize("count", [16, 12])
@pytest.mark.parametrize("mode", ["uniform", "pow2", "uniform_pow2"])
def test_nested_dropout_draws_the_mode_distribution(mode, count):
    draws = 40000
    generator = torch.Generator().manual_seed(0)
    lengths = sample_lengths(NestedDropoutConfig(mode), draws, count, generator)
    assert lengths.dtype == torch.int64 and lengths.shape == (draws,)
    choices = length_choices(mode, count)
    if mode == "uniform":
        expected = {k: 1 / count for k in choices}
    elif mode == "pow2":
        expected = {k: 1 / len(choices) for k in choices}
    else:  # the width of each power's interval (previous power, power], capped at count
        bounds = [0, *choices]
        expected = {k: (k - bounds[i]) / count for i, k in enumerate(choices)}
    assert set(lengths.unique().tolist()) == set(expected)
    for k, probability in expected.items():
        assert abs((lengths == k).float().mean().item() - probability) < 0.01, (k, probability)
    if mode != "uniform":
        assert choices == [1, 2, 4, 8, count] if count == 12 else [1, 2, 4, 8, 16]


def test_nested_dropout_probability_leaves_the_other_images_whole():
    generator = torch.Generator().manual_seed(0)
    config = NestedDropoutConfig("uniform", probability=0.25)
    lengths = sample_lengths(config, 40000, 8, generator)
    whole = (lengths == 8).float().mean().item()
    assert abs(whole - (0.75 + 0.25 / 8)) < 0.01


def test_nested_dropout_is_deterministic_given_a_generator():
    config = NestedDropoutConfig("uniform")
    first = sample_lengths(config, 64, 256, torch.Generator().manual_seed(3))
    assert torch.equal(first, sample_lengths(config, 64, 256, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, sample_lengths(config, 64, 256, torch.Generator().manual_seed(4)))
    tokens = torch.randn(64, 256, 4)
    module = NestedDropout(config).train()
    masked, lengths = module(tokens, torch.zeros(4), torch.Generator().manual_seed(3))
    assert torch.equal(lengths, first) and torch.equal(
        masked, mask_tail(tokens, first, torch.zeros(4))
    )


def test_mask_tail_places_the_mask_and_passes_gradients_where_they_belong():
    tokens = torch.randn(3, 5, 4, requires_grad=True)
    mask_token = torch.randn(4, requires_grad=True)
    lengths = torch.tensor([0, 2, 5])
    out = mask_tail(tokens, lengths, mask_token)
    for row, length in enumerate(lengths.tolist()):
        assert torch.equal(out[row, :length], tokens[row, :length])
        assert torch.equal(out[row, length:], mask_token.expand(5 - length, 4))
    out.sum().backward()
    kept = (torch.arange(5)[None] < lengths[:, None]).float()[..., None].expand(3, 5, 4)
    assert torch.equal(tokens.grad, kept)
    assert torch.equal(mask_token.grad, torch.full((4,), 8.0))  # 8 masked positions


def test_nested_dropout_module_is_the_identity_in_eval():
    module = NestedDropout(NestedDropoutConfig()).eval()
    tokens = torch.randn(2, 6, 3)
    out, lengths = module(tokens, torch.zeros(3))
    assert out is tokens and lengths.tolist() == [6, 6]


def test_nested_dropout_config_errors():
    with pytest.raises(ValueError, match="nested dropout mode to be one of"):
        NestedDropoutConfig("geometric")
    with pytest.raises(ValueError, match=r"probability in \[0, 1\], got 1.5"):
        NestedDropoutConfig(probability=1.5)


# ------------------------------------------------------------------------------------------
# the flow objective


@pytest.mark.parametrize("time", [0.0, 1.0, 0.3])
def test_flow_terms_at_fixed_times(monkeypatch, time):
    codec = untrained(make())
    x = images()
    monkeypatch.setattr(
        flextok_module, "sample_times", lambda batch, *args: torch.full((batch,), time)
    )
    out = codec(x, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))  # eval: noise first
    assert torch.equal(out.target, noise - x)
    assert out.t.tolist() == pytest.approx([time] * 3) and out.lengths.tolist() == [K] * 3
    noised = time * noise + (1 - time) * x
    with torch.no_grad():
        conditions = codec._conditions(
            codec.quantizer(codec._encode_latents(x, K)).quantized, out.lengths
        )
        velocity, _ = codec.decoder(noised, out.t, conditions)
    assert torch.allclose(out.velocity, velocity, atol=1e-6)
    assert torch.allclose(out.reconstruction, (noised - time * out.velocity).clamp(-1, 1))
    if time == 0.0:
        assert torch.equal(out.reconstruction, x)  # x_0 is the image itself
    # The exact velocity takes x_t back to the image at any t.
    assert torch.allclose(noised - time * out.target, x, atol=1e-6)
    assert out.repa_loss is None


def test_training_draws_lengths_guidance_dropout_and_logit_normal_times():
    codec = make(register_dropout=0.5)
    x = images(batch=64)
    out = codec(x, generator=torch.Generator().manual_seed(0))
    lengths = out.lengths.tolist()
    assert set(lengths) <= {0, 1, 2, 4, 8} and 0 in lengths and len(set(lengths)) > 2
    again = codec(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.lengths, out.lengths) and torch.equal(again.t, out.t)
    times = sample_times(20000, 0.5, 0.8, torch.Generator().manual_seed(1), torch.device("cpu"))
    logits = torch.logit(times.double())
    assert abs(logits.mean().item() - 0.5) < 0.03 and abs(logits.std().item() - 0.8) < 0.03


def test_a_few_steps_lower_the_flow_loss():
    codec = make(register_dropout=0.0)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=3e-3)
    x = images(batch=4)

    def loss(seed):
        out = codec(x, generator=torch.Generator().manual_seed(seed))
        return (out.velocity - out.target).pow(2).mean()

    with torch.no_grad():
        first = sum(loss(seed).item() for seed in range(4))
    for step in range(40):
        optimizer.zero_grad()
        loss(100 + step).backward()
        optimizer.step()
    with torch.no_grad():
        assert sum(loss(seed).item() for seed in range(4)) < 0.9 * first


# ------------------------------------------------------------------------------------------
# sampling


def test_the_scheduler_grid_is_the_plain_euler_grid_and_its_loop_a_plain_euler_loop():
    from diffusers import FlowMatchEulerDiscreteScheduler

    steps = 7
    sigmas = euler_sigmas(steps)
    assert torch.allclose(sigmas, torch.linspace(1, 0, steps + 1), atol=1e-6)
    weight = torch.randn(4, 4)

    def velocity(x, t):
        return torch.tanh(x @ weight) * (1 + t)

    start = torch.randn(2, 4)
    scheduler = euler_scheduler(FlowMatchEulerDiscreteScheduler, steps)
    x = start.clone()
    for timestep, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1], strict=True):
        x = scheduler.step(velocity(x, sigma), timestep, x).prev_sample
    plain, grid = start.clone(), np.linspace(1.0, 0.0, steps + 1)
    for t, t_next in itertools.pairwise(grid):
        plain = plain + (t_next - t) * velocity(plain, float(t))
    assert torch.allclose(x, plain.float(), atol=1e-5)


def test_decode_equals_a_loop_through_the_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    codec = untrained(make())
    tokens = codec.encode(images(batch=2))
    decoded = codec.decode(tokens, steps=5)
    scheduler = euler_scheduler(FlowMatchEulerDiscreteScheduler, 5)
    conditions = codec._conditions(codec.quantizer.decode(tokens.codes), tokens.lengths)
    x = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    with torch.no_grad():
        for timestep, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1], strict=True):
            velocity, _ = codec.decoder(x, sigma.expand(2), conditions)
            x = scheduler.step(velocity, timestep, x).prev_sample
    assert torch.allclose(decoded, x, atol=1e-5)


def test_decode_starts_from_cpu_noise_of_the_seed():
    codec = make().eval()  # a fresh decoder predicts v = 0: decoding returns the noise
    tokens = codec.encode(images(batch=2))
    for seed in (0, 11):
        noise = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(codec.decode(tokens, seed=seed), noise.expand(2, -1, -1, -1))
    per_row = codec.decode(tokens, seed=[4, 9])
    for row, seed in enumerate([4, 9]):
        noise = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(per_row[row], noise)


def test_pinned_sample():
    codec = untrained(make())
    decoded = codec.decode(codec.encode(images(batch=1)), steps=4, cfg_scale=2.0)
    values = [-2.86561, 1.39924, -0.80087, -2.67003]
    assert torch.allclose(decoded.reshape(-1)[:4], torch.tensor(values), atol=1e-4)


@pytest.mark.parametrize("guidance", ["cfg", "apg"])
def test_decode_is_seeded_and_each_image_decodes_as_it_would_alone(guidance):
    codec = untrained(make())
    tokens = codec.encode(images(batch=3))
    lengths = torch.tensor([K, 3, 1])
    padded = Tokens(tokens.codes, tokens.spec, lengths)
    settings = {"steps": 6, "cfg_scale": 2.5, "guidance": guidance}
    settings |= {"apg_norm_threshold": 0.05, "apg_momentum": -0.5}
    batch = codec.decode(padded, seed=3, **settings)
    assert torch.equal(batch, codec.decode(padded, seed=3, **settings))
    assert not torch.allclose(batch, codec.decode(padded, seed=4, **settings))
    for row, length in enumerate(lengths.tolist()):
        alone = codec.decode(tokens.codes[row : row + 1, :length], seed=3, **settings)
        assert torch.allclose(batch[row : row + 1], alone, atol=1e-5)


def test_every_prefix_decodes_and_padding_past_the_length_is_ignored():
    codec = untrained(make())
    x = images(batch=2)
    whole = codec.encode(x)
    outputs = []
    for k in range(1, K + 1):
        prefix = codec.encode(x, num_tokens=k)
        decoded = codec.decode(prefix, steps=3)
        assert decoded.shape == x.shape and decoded.dtype == torch.float32
        assert bool(torch.isfinite(decoded).all())
        assert torch.equal(decoded, codec.decode(prefix.codes, steps=3))
        padding = whole.codes.clone()
        padding[:, k:] = 63999
        padded = Tokens(padding, whole.spec, torch.full((2,), k))
        assert torch.allclose(codec.decode(padded, steps=3), decoded, atol=1e-6)
        outputs.append(decoded)
    assert not torch.allclose(outputs[0], outputs[-1])


def test_guidance_runs_and_differs_from_none():
    codec = untrained(make())
    tokens = codec.encode(images(batch=2))
    plain = codec.decode(tokens, steps=5)
    cfg = codec.decode(tokens, steps=5, cfg_scale=3.0)
    projected = codec.decode(tokens, steps=5, cfg_scale=3.0, guidance="apg")
    for guided in (cfg, projected):
        assert bool(torch.isfinite(guided).all()) and not torch.allclose(guided, plain, atol=1e-3)
    assert not torch.allclose(cfg, projected, atol=1e-3)
    # APG keeping the parallel part (η = 1), without cap or momentum, is CFG.
    same = codec.decode(tokens, steps=5, cfg_scale=3.0, guidance="apg", apg_eta=1.0)
    assert torch.allclose(same, cfg, atol=1e-4)
    assert torch.allclose(codec.decode(tokens, steps=5, guidance="apg"), plain)


def test_apg_projects_caps_and_carries_momentum():
    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 2, 3, 4, 4, generator=generator)
    zero, scale = torch.tensor(0.0), torch.tensor(3.0)
    guided, running = apg(cond, uncond, scale, zero, zero, zero, torch.zeros_like(cond))
    update = (guided - cond) / 2
    assert torch.allclose((update * cond).sum(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
    assert torch.equal(running, cond - uncond)
    capped, _ = apg(cond, uncond, scale, torch.tensor(1.0), torch.tensor(0.1), zero, zero * cond)
    rms = ((capped - cond) / 2).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.full((2,), 0.1), atol=1e-5)
    _, carried = apg(cond, uncond, scale, zero, zero, torch.tensor(-0.5), running)
    assert torch.allclose(carried, (cond - uncond) * 0.5)


def test_one_step_is_captured_whole():
    codec = untrained(make())
    tokens = codec.encode(images(batch=2))
    conditions = codec._conditions(codec.quantizer.decode(tokens.codes), tokens.lengths)
    conditions = torch.cat([conditions, conditions])
    x = torch.randn(2, 3, SIZE, SIZE)
    scalars = [torch.tensor(v) for v in (2.0, 0.0, 0.1, -0.5)]
    with torch.no_grad():
        explained = torch._dynamo.explain(codec._denoise_step)(
            x, torch.tensor(0.5), torch.tensor(0.25), conditions, *scalars, x * 0, "apg"
        )
    assert explained.graph_count == 1 and explained.graph_break_count == 0


@pytest.mark.slow  # inductor compiles the step in 12–25 s on the 2-core machine
def test_compiled_decode_equals_eager():
    codec = untrained(make())
    tokens = codec.encode(images(batch=2))
    for guidance in ("cfg", "apg"):
        eager = codec.decode(tokens, steps=4, cfg_scale=2.0, guidance=guidance)
        compiled = codec.decode(tokens, steps=4, cfg_scale=2.0, guidance=guidance, compile=True)
        assert torch.allclose(compiled, eager, atol=1e-4)


# ------------------------------------------------------------------------------------------
# REPA


def feature_network(path, tokens_per_side: int, dim: int = 12):
    """A tiny random TorchScript network: images (B, 3, H, W) → (B, side², dim) features."""

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(
                3, dim, kernel_size=SIZE // tokens_per_side, stride=SIZE // tokens_per_side
            )

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.conv(images).flatten(2).transpose(1, 2)

    torch.manual_seed(5)
    with warnings.catch_warnings():  # "deprecated": still the format REPA takes
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Features()).save(str(path))
    return str(path)


@pytest.mark.parametrize("side", [4, 2])  # the decoder's 4×4 grid, and a 2×2 grid resized
def test_repa_loss_with_a_torchscript_network(tmp_path, side):
    path = feature_network(tmp_path / "features.pt", side)
    codec = make(repa={"features_path": path, "feature_dim": 12, "layer": 1, "projector_dim": 16})
    out = codec(images(), generator=torch.Generator().manual_seed(0))
    assert out.repa_loss.shape == () and 0 <= out.repa_loss.item() <= 2
    out.repa_loss.backward()
    assert codec.repa.projector[0].weight.grad.abs().sum() > 0
    assert codec.decoder.patch_embed.weight.grad is not None
    assert codec.decoder.blocks[1].block.mlp.fc1.weight.grad is None  # after the aligned layer
    copy = deepcopy(codec)  # the EMA's copy: the loaded network stays behind
    assert len(codec.repa._networks) == 1 and len(copy.repa._networks) == 0
    repa_keys = {key for key in codec.state_dict() if key.startswith("repa.")}
    assert repa_keys == {f"repa.projector.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}


def test_repa_errors(tmp_path):
    codec = make(repa={"features_path": str(tmp_path / "missing.pt"), "feature_dim": 12})
    assert codec.config.repa_layer == 1
    with pytest.raises(FileNotFoundError, match=r"REPA expected a TorchScript feature network"):
        codec(images())
    path = feature_network(tmp_path / "features.pt", 4, dim=5)
    codec = make(repa={"features_path": path, "feature_dim": 12})
    with pytest.raises(
        ValueError, match=r"REPA expected features \(B=3, N, 12\).*got \(3, 16, 5\)"
    ):
        codec(images())
    (tmp_path / "junk.pt").write_text("not a model")
    codec = make(repa={"features_path": str(tmp_path / "junk.pt"), "feature_dim": 12})
    with pytest.raises(ValueError, match="expected a TorchScript file"):
        codec(images())


# ------------------------------------------------------------------------------------------
# configs and bad input


def test_presets_follow_the_paper():
    d18, d28 = FlexTokConfig(size="d18"), FlexTokConfig(size="d28")
    assert (d18.encoder_width, d18.encoder_depth, d18.encoder_heads) == (1152, 18, 18)
    assert (d18.decoder_width, d18.decoder_depth, d18.decoder_heads) == (1152, 18, 18)
    assert (d28.encoder_width, d28.encoder_depth) == (1152, 18)
    assert (d28.decoder_width, d28.decoder_depth, d28.decoder_heads) == (1792, 28, 28)
    for config in (d18, d28, FlexTokConfig()):
        assert (config.num_registers, config.image_size // config.patch_size) == (256, 16)
        assert config.quantizer.options["levels"] == [8, 8, 8, 5, 5, 5]


def test_decode_settings_are_the_arguments_of_decode():
    parameters = inspect.signature(FlexTok.decode).parameters
    assert set(FlexTok.decode_settings) == set(parameters) - {"self", "tokens"}


def test_bad_config():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        FlexTokConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="decoder width, depth and heads"):
        FlexTokConfig(decoder_width=30, decoder_heads=4)
    with pytest.raises(ValueError, match=r"register_dropout in \[0, 1\)"):
        FlexTokConfig(register_dropout=1.0)
    with pytest.raises(ValueError, match=r"repa.layer in 1..6"):
        FlexTokConfig(repa=REPAConfig("x.pt", feature_dim=8, layer=7))
    with pytest.raises(ValueError, match="single-level quantizer"):
        make(quantizer={"kind": "rvq", "options": {"codebook_size": 16, "num_quantizers": 2}})


def test_bad_input():
    codec = make().eval()
    x = images(batch=2)
    for count in (0, K + 1, 2.5, True):
        with pytest.raises(ValueError, match=rf"flextok.encode expected num_tokens in 1..{K}"):
            codec.encode(x, num_tokens=count)
    tokens = codec.encode(x)
    for codes in (
        torch.zeros(2, K + 1).long(),
        torch.zeros(2, 0).long(),
        torch.zeros(2, 2, 2).long(),
    ):
        with pytest.raises(
            ValueError, match=rf"flextok expected codes \(B, k\) with 1 <= k <= {K}"
        ):
            codec.decode(codes)
    with pytest.raises(ValueError, match="expected integer codes"):
        codec.decode(tokens.codes.float())
    with pytest.raises(ValueError, match=rf"expected lengths in 0..{K}, got \[9, 1\]"):
        codec.decode(Tokens(tokens.codes, tokens.spec, torch.tensor([9, 1])))
    with pytest.raises(ValueError, match=r"expected integer lengths \(B=2,\)"):
        codec.decode(Tokens(tokens.codes, tokens.spec, torch.tensor([1.0, 2.0])))
    with pytest.raises(ValueError, match="expected steps to be an int >= 1, got 0"):
        codec.decode(tokens, steps=0)
    with pytest.raises(ValueError, match="expected guidance 'cfg' or 'apg', got 'pag'"):
        codec.decode(tokens, guidance="pag")
    with pytest.raises(ValueError, match="expected a finite cfg_scale"):
        codec.decode(tokens, cfg_scale=math.inf)
    with pytest.raises(ValueError, match="expected a finite apg_eta, got 'x'"):
        codec.decode(tokens, apg_eta="x")
    with pytest.raises(ValueError, match="expected apg_norm_threshold >= 0, got -1"):
        codec.decode(tokens, apg_norm_threshold=-1)
    with pytest.raises(ValueError, match=r"expected seed to be an int or 2 ints \(one per row\)"):
        codec.decode(tokens, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="codes in"):
        codec.decode(torch.full((2, 3), 64000))
