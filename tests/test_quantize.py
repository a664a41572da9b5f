"""The quantizer contract, checked on every kind, and each kind's own invariants."""

from __future__ import annotations

import math

import pytest
import torch

from mediatok.quantize import QUANTIZERS, build_quantizer, kmeans, nearest_code
from mediatok.quantize.base import CodeUsage

DIM = 16

# A small config of every kind, plus the variants whose code paths differ.
KINDS = {
    "vq": ("vq", {"dim": DIM, "codebook_size": 64}),
    "vq-cosine-learned-rotation": (
        "vq",
        {
            "dim": DIM,
            "codebook_size": 64,
            "distance": "cosine",
            "ema_update": False,
            "gradient": "rotation",
        },
    ),
    "vq-factorized-kmeans": (
        "vq",
        {"dim": DIM, "codebook_size": 64, "codebook_dim": 4, "kmeans_init": True},
    ),
    "rvq": ("rvq", {"dim": DIM, "codebook_size": 32, "num_quantizers": 3}),
    "rvq-learned": (
        "rvq",
        {"dim": DIM, "codebook_size": 32, "num_quantizers": 2, "ema_update": False},
    ),
    "fsq": ("fsq", {"levels": [8, 5, 5, 5], "dim": DIM}),
    "lfq": ("lfq", {"dim": DIM, "codebook_size": 2**10}),
    "bsq": ("bsq", {"dim": DIM, "codebook_size": 2**18}),
    "simvq": ("simvq", {"dim": DIM, "codebook_size": 64}),
}


def make(name: str):
    torch.manual_seed(0)
    kind, options = KINDS[name]
    return build_quantizer(kind, **options)


def test_every_registered_kind_is_covered():
    assert {kind for kind, _ in KINDS.values()} == set(QUANTIZERS)


@pytest.mark.parametrize("name", KINDS)
def test_contract(name):
    quantizer = make(name)
    latents = torch.randn(3, 40, DIM, requires_grad=True)
    out = quantizer(latents)
    levels = quantizer.num_levels
    expected_codes = (3, 40) if levels == 1 else (3, 40, levels)
    assert out.quantized.shape == (3, 40, DIM) and out.quantized.dtype == torch.float32
    assert out.codes.shape == expected_codes and out.codes.dtype == torch.int64
    sizes = torch.tensor(quantizer.codebook_sizes)
    assert torch.all(out.codes >= 0) and torch.all(out.codes.reshape(-1, levels) < sizes)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.losses.values())
    assert {"usage", "perplexity", "dead_codes"} <= set(out.metrics)
    assert 0 < float(out.metrics["usage"]) <= 1

    # Gradients reach the latents and every trainable parameter.
    loss = out.quantized.square().mean() + sum(out.losses.values())
    loss.backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    for pname, parameter in quantizer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, pname

    # decode(codes) gives quantized exactly.
    quantizer.eval()
    with torch.no_grad():
        out = quantizer(latents)
    assert torch.equal(quantizer.decode(out.codes), out.quantized)


@pytest.mark.parametrize("name", KINDS)
def test_save_load_gives_the_same_codes(name):
    quantizer = make(name)
    latents = torch.randn(2, 30, DIM)
    quantizer(latents)  # a training step: k-means init, EMA, usage clock
    quantizer.eval()
    expected = quantizer(latents).codes
    torch.manual_seed(123)
    kind, options = KINDS[name]
    restored = build_quantizer(kind, **options)
    restored.load_state_dict(quantizer.state_dict())
    restored.eval()
    assert torch.equal(restored(latents).codes, expected)


@pytest.mark.parametrize("name", KINDS)
def test_autocast_still_quantizes_in_fp32(name):
    quantizer = make(name).eval()
    latents = torch.randn(2, 20, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = quantizer(latents.bfloat16())
    plain = quantizer(latents.bfloat16().float())
    assert under_autocast.quantized.dtype == torch.float32
    assert torch.equal(under_autocast.codes, plain.codes)


@pytest.mark.parametrize("name", KINDS)
def test_bad_input_raises(name):
    quantizer = make(name)
    with pytest.raises(
        ValueError, match=rf"expected channel-last latents \(\.\.\., {DIM}\), got shape \(2, 5, 7\)"
    ):
        quantizer(torch.randn(2, 5, 7))
    bad = torch.randn(2, 5, DIM)
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="expected finite latents"):
        quantizer(bad)
    with pytest.raises(ValueError, match="expected floating-point latents"):
        quantizer(torch.ones(2, 5, DIM, dtype=torch.long))
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        quantizer([[0.0] * DIM])

    codes = quantizer.eval()(torch.randn(2, 5, DIM)).codes
    with pytest.raises(ValueError, match="expected integer codes"):
        quantizer.decode(codes.float())
    too_big = codes.clone()
    too_big.view(-1)[0] = quantizer.codebook_sizes[0]
    with pytest.raises(ValueError, match=r"expected codes in \[0, \d+\).*got values from"):
        quantizer.decode(too_big)
    negative = codes.clone()
    negative.view(-1)[-1] = -1
    with pytest.raises(ValueError, match="got values from -1"):
        quantizer.decode(negative)
    if quantizer.num_levels > 1:
        with pytest.raises(ValueError, match="one code per level"):
            quantizer.decode(codes[..., :1])


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match="known kinds: vq, rvq, fsq, lfq, bsq, simvq"):
        build_quantizer("vqq", dim=4, codebook_size=8)


def test_unknown_option_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'codebook_size'"):
        build_quantizer("vq", dim=4, codebok_size=8)


def test_bad_option_values_raise():
    with pytest.raises(ValueError, match="power of two"):
        build_quantizer("lfq", dim=4, codebook_size=1000)
    with pytest.raises(ValueError, match="distance"):
        build_quantizer("vq", dim=4, codebook_size=8, distance="l1")
    with pytest.raises(ValueError, match="fixes spherical=True"):
        build_quantizer("bsq", dim=4, codebook_size=16, spherical=False)
    with pytest.raises(ValueError, match="preserve_symmetry"):
        build_quantizer("fsq", levels=[2, 4])


# --- VQ ---------------------------------------------------------------------------------------


def test_vq_uses_the_fused_search_codes():
    quantizer = make("vq").eval()
    latents = torch.randn(500, DIM)
    codes = quantizer(latents).codes
    assert torch.equal(codes, nearest_code(latents, quantizer.codebook.vectors))


def test_ema_moves_codes_to_the_mean_of_their_latents():
    torch.manual_seed(0)
    quantizer = build_quantizer(
        "vq", dim=2, codebook_size=2, decay=0.0, eps=1e-9, revive_dead_codes=False
    )
    quantizer.codebook.embed.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    latents = torch.tensor([[-2.0, 1.0], [-4.0, 1.0], [3.0, -1.0]])
    quantizer(latents)
    expected = torch.tensor([[-3.0, 1.0], [3.0, -1.0]])
    assert torch.allclose(quantizer.codebook.embed, expected, atol=1e-5)


def test_kmeans_init_places_one_code_per_cluster():
    torch.manual_seed(0)
    centers = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    samples = (centers[:, None] + 0.1 * torch.randn(4, 100, 2)).reshape(-1, 2)
    found = kmeans(samples, 4, iters=10)
    assert torch.cdist(found, centers).min(dim=0).values.max() < 0.5

    quantizer = build_quantizer("vq", dim=2, codebook_size=4, kmeans_init=True, decay=0.9)
    assert not bool(quantizer.codebook.initialized)
    quantizer(samples[torch.randperm(400)])
    assert bool(quantizer.codebook.initialized)
    assert torch.cdist(quantizer.codebook.embed, centers).min(dim=0).values.max() < 0.5


def test_dead_codes_are_counted_in_tokens_and_revived():
    torch.manual_seed(0)
    quantizer = build_quantizer("vq", dim=2, codebook_size=8, dead_code_after_tokens=100)
    far = torch.full((8, 2), 100.0)
    far[0] = 0.0  # only code 0 is ever near the data
    quantizer.codebook.embed.copy_(far)
    quantizer.codebook.ema.copy_(torch.cat([far, torch.ones(8, 1)], dim=1))
    latents = 0.01 * torch.randn(60, 2)
    out = quantizer(latents)  # 60 tokens seen: nothing dead yet
    assert int(out.metrics["dead_codes"]) == 0
    out = quantizer(latents)  # 120 tokens: codes 1..7 are dead (reported), revived next step
    assert int(out.metrics["dead_codes"]) == 7
    quantizer(latents)
    assert quantizer.codebook.embed[1:].abs().max() < 1.0  # revived onto the data
    quantizer.eval()
    assert float(quantizer(torch.randn(2000, 2) * 0.01).metrics["usage"]) > 0.5


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_a_training_step_asks_the_host_nothing(kind, monkeypatch):
    # A host sync per step (bool(), item(), ...) stalls the GPU pipeline; revival of dead codes
    # must not need one. Python-level conversions of a tensor are what would sync.
    torch.manual_seed(0)
    options = dict(dim=2, codebook_size=8, dead_code_after_tokens=50, check_finite=False)
    quantizer = build_quantizer(kind, **options, **({"num_quantizers": 2} if kind == "rvq" else {}))
    if kind == "vq":  # only code 0 is near the data: codes 1..7 die at the second step
        far = torch.full((8, 2), 100.0)
        far[0] = 0.0
        quantizer.codebook.embed.copy_(far)
        quantizer.codebook.ema.copy_(torch.cat([far, torch.ones(8, 1)], dim=1))
    latents = 0.01 * torch.randn(30, 2)

    def sync(*args, **kwargs):
        raise AssertionError("a host sync in a training step")

    for name in ("__bool__", "__int__", "__float__", "__index__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    for _ in range(3):
        quantizer(latents)
    monkeypatch.undo()
    if kind == "vq":
        assert quantizer.codebook.embed[1:].abs().max() < 1.0  # revived onto the data


def test_eval_leaves_the_codebook_and_usage_clock_alone():
    quantizer = make("vq")
    quantizer(torch.randn(100, DIM))
    state = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.eval()(torch.randn(100, DIM))
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_rotation_trick_keeps_the_value_and_changes_the_gradient():
    latents = torch.randn(50, DIM, requires_grad=True)
    grads, values = [], []
    for gradient in ("straight_through", "rotation"):
        torch.manual_seed(0)
        quantizer = build_quantizer("vq", dim=DIM, codebook_size=32, gradient=gradient).eval()
        out = quantizer(latents)
        (out.quantized * torch.linspace(-1, 1, DIM)).sum().backward()
        grads.append(latents.grad.clone())
        values.append(out.quantized.detach())
        latents.grad = None
    assert torch.equal(values[0], values[1])
    assert not torch.allclose(grads[0], grads[1])
    # straight-through passes the upstream gradient unchanged
    assert torch.allclose(grads[0], torch.linspace(-1, 1, DIM).expand(50, DIM))


def test_learned_codebook_trains_by_the_codebook_loss():
    quantizer = make("vq-cosine-learned-rotation")
    out = quantizer(torch.randn(100, DIM))
    assert "codebook" in out.losses
    out.losses["codebook"].backward()
    assert quantizer.codebook.embed.grad.abs().sum() > 0


def test_residual_levels_reduce_the_error():
    torch.manual_seed(0)
    latents = torch.randn(2000, 8)
    errors = []
    for levels in (1, 2, 4):
        torch.manual_seed(0)
        quantizer = build_quantizer(
            "rvq", dim=8, codebook_size=64, num_quantizers=levels, kmeans_init=True
        )
        quantizer(latents)  # k-means init of every level
        quantizer.eval()
        errors.append(float((quantizer(latents).quantized - latents).pow(2).mean()))
    assert errors[0] > errors[1] > errors[2]


# --- FSQ, LFQ/BSQ, SimVQ ------------------------------------------------------------------------


def test_fsq_codebook_is_the_product_of_levels_and_every_code_decodes():
    quantizer = build_quantizer("fsq", levels=[3, 4, 5])
    assert quantizer.codebook_sizes == (60,)
    every = quantizer.decode(torch.arange(60))
    assert torch.unique(every, dim=0).shape[0] == 60
    # channel i takes levels[i] evenly spaced values in [-1, 1]
    for channel, levels in enumerate((3, 4, 5)):
        assert torch.unique(every[:, channel]).numel() == levels
    assert every.abs().max() <= 1.0


@pytest.mark.parametrize("spherical", [False, True])
def test_lfq_codes_are_sign_bits(spherical):
    kind = "bsq" if spherical else "lfq"
    quantizer = build_quantizer(kind, dim=4, codebook_size=16).eval()
    latents = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-0.5, -0.2, -3.0, 0.1]])
    out = quantizer(latents)
    assert out.codes.tolist() == [1 + 4 + 8, 8]
    scale = 0.5 if spherical else 1.0
    assert torch.equal(out.quantized, scale * torch.sign(latents))


def test_lfq_entropy_matches_the_full_softmax():
    """The factorized entropies equal the ones computed over all 2^d codes (one group)."""
    torch.manual_seed(0)
    quantizer = build_quantizer(
        "lfq",
        dim=6,
        codebook_size=64,
        inv_temperature=0.7,
        entropy_group_bits=6,
        entropy_weight=1.0,
        diversity_gamma=1.0,
    )
    x = torch.randn(300, 6)
    bits = (torch.arange(64)[:, None] >> torch.arange(6)) & 1
    codebook = bits.float() * 2 - 1  # (64, 6) of ±1
    logits = -0.7 * torch.cdist(x, codebook).pow(2)
    probs = logits.softmax(dim=1)
    per_sample = -(probs * probs.log()).sum(1).mean()
    mean = probs.mean(0)
    batch = -(mean * mean.log()).sum()
    assert torch.allclose(quantizer._entropy_loss(x), per_sample - batch, atol=1e-4)


def test_simvq_trains_the_linear_map_not_the_basis():
    quantizer = make("simvq")
    out = quantizer(torch.randn(100, DIM))
    sum(out.losses.values()).backward()
    assert quantizer.linear.weight.grad.abs().sum() > 0
    assert "basis" in dict(quantizer.named_buffers())


# --- usage metrics -------------------------------------------------------------------------------


def test_usage_and_perplexity_of_a_known_histogram():
    usage = CodeUsage(num_levels=1, codebook_size=8, dead_after_tokens=10)
    codes = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]).unsqueeze(1)
    metrics = usage.update(usage.histogram(codes, across_ranks=True), track=True)
    assert float(metrics["usage"]) == 0.5
    assert math.isclose(float(metrics["perplexity"]), 4.0, rel_tol=1e-6)
    assert int(metrics["dead_codes"]) == 0  # 8 tokens < 10
    metrics = usage.update(usage.histogram(codes, across_ranks=True), track=True)
    assert int(metrics["dead_codes"]) == 4  # 16 tokens without codes 4..7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", KINDS)
def test_contract_on_cuda_under_bf16_autocast(name):
    quantizer = make(name).cuda()
    latents = torch.randn(4, 256, DIM, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = quantizer(latents)
        loss = out.quantized.square().mean() + sum(out.losses.values())
    loss.backward()
    assert out.quantized.dtype == torch.float32 and out.codes.dtype == torch.int64
    assert latents.grad.abs().sum() > 0
    assert float(out.metrics["usage"]) > 0
    quantizer.eval()
    out = quantizer(latents.detach())
    assert torch.equal(quantizer.decode(out.codes), out.quantized)
    # The same module on the CPU picks the same codes (ties aside).
    cpu_codes = quantizer.cpu()(latents.detach().cpu()).codes
    assert (cpu_codes == out.codes.cpu()).float().mean() > 0.99


FUSED_CHECK = """
import torch
from mediatok.quantize import build_quantizer
from mediatok.quantize.vq import Codebook

cases = [
    ("vq", dict(dim=6, codebook_size=40, dead_code_after_tokens=60)),
    ("vq", dict(dim=6, codebook_size=40, distance="cosine", gradient="rotation")),
    ("vq", dict(dim=6, codebook_size=40, codebook_dim=3, revive_dead_codes=False)),
    ("rvq", dict(dim=6, codebook_size=16, num_quantizers=2, dead_code_after_tokens=40)),
]
for kind, options in cases:
    runs = []
    for fused in (False, True):
        Codebook.fused = fused
        torch.manual_seed(0)
        quantizer = build_quantizer(kind, **options).to("DEVICE")
        record = []
        for step in range(3):
            latents = torch.randn(50, 6, generator=torch.Generator().manual_seed(step))
            latents = latents.to("DEVICE").requires_grad_()
            out = quantizer(latents)
            (out.quantized.sin().sum() + 10 * sum(out.losses.values())).backward()
            record.append((out.codes, out.quantized.detach(), latents.grad,
                           {k: v.detach() for k, v in out.losses.items()}, dict(out.metrics)))
        runs.append((record, quantizer.state_dict()))
    (torch_run, torch_state), (fused_run, fused_state) = runs
    for (c0, q0, g0, l0, m0), (c1, q1, g1, l1, m1) in zip(torch_run, fused_run):
        assert torch.equal(c0, c1), (kind, options)
        assert torch.allclose(q0, q1, atol=1e-5), (kind, options)
        assert torch.allclose(g0, g1, atol=1e-5), (kind, options, (g0 - g1).abs().max())
        assert l0.keys() == l1.keys()
        assert all(torch.allclose(l0[k], l1[k], atol=1e-6) for k in l0), (kind, l0, l1)
        assert m0.keys() == m1.keys()
        assert all(torch.allclose(m0[k].float(), m1[k].float()) for k in m0), (kind, m0, m1)
    for key in torch_state:
        assert torch.allclose(torch_state[key].float(), fused_state[key].float(), atol=1e-5), key
print("ok")
"""


def test_fused_ema_step_matches_the_torch_step():
    """The Triton EMA step (run by Triton's CPU interpreter) equals the torch one."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    script = FUSED_CHECK.replace("DEVICE", "cpu")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_ema_step_matches_the_torch_step_on_cuda():
    import subprocess
    import sys

    script = FUSED_CHECK.replace("DEVICE", "cuda")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
