"""`ARTransformer`, its decode engine, `mediatok.nn.rope` and `mediatok.generation.sampling`.

Tiny models (dim 32, depth 2, heads 4) on CPU in fp32: the KV-cached path must give the
teacher-forced logits, sampling must be reproducible and respect each position's vocabulary.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mediatok.generation import MaskedConfig, build_generator, engine
from mediatok.generation.ar import (
    ARConfig,
    ARTransformer,
    build_ar_transformer,
    resolve_variable_length,
)
from mediatok.generation.engine import ARDecodeEngine, _Draw
from mediatok.generation.sampling import (
    SampleSettings,
    cfg_logits,
    cfg_scale_at,
    check_guidance,
    draw_noise,
    filter_logits,
    pick,
    sample,
    scale_logits,
)
from mediatok.nn.rope import apply_rope, rope_tables, with_prefix
from mediatok.tokens import TokenSpec

SPECS = {
    "1d": (TokenSpec([16]), (7,)),
    "grid": (TokenSpec([16], layout="H W"), (3, 4)),
    "levels Q T": (TokenSpec([8, 4], layout="Q T"), (2, 4)),
    "levels T Q": (TokenSpec([8, 4], layout="Q T", order="T Q"), (2, 4)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(spec: TokenSpec, shape, num_classes: int = 0, seed: int = 0, **overrides) -> ARTransformer:
    torch.manual_seed(seed)
    config = ARConfig(dim=32, depth=2, heads=4, num_classes=num_classes, **overrides)
    return ARTransformer(config, spec, shape).eval()


def random_ids(model: ARTransformer, batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    codes = [
        torch.randint(size, (batch, model.max_tokens), generator=generator)
        for size in model.spec.vocab_sizes
    ]
    codes = torch.stack(codes)  # (Q, B, L)
    level_ids = model.level_ids
    return codes[level_ids, :, torch.arange(model.max_tokens)].T + model.layout.offsets[level_ids]


# --------------------------------------------------------------------------------------------
# rope


@pytest.mark.parametrize("axes", [1, 2, 3])
def test_rope_scores_depend_only_on_coordinate_differences(axes):
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, 12, generator=generator)  # (B, heads, L, d) each
    shift = torch.arange(1, axes + 1) * 3  # a different shift on every axis

    def score(a, b):
        cos, sin = rope_tables(torch.stack([a, b]), 12)  # (2, 6)
        rotated_q = apply_rope(q, cos[:1], sin[:1])
        rotated_k = apply_rope(k, cos[1:], sin[1:])
        return (rotated_q * rotated_k).sum()

    a, b = torch.arange(axes) + 2, torch.arange(axes) * 5
    torch.testing.assert_close(score(a, b), score(a + shift, b + shift))
    assert not torch.allclose(score(a, b), score(a + shift, b))  # positions matter


def test_rope_axial_split_and_prefix():
    cos, _ = rope_tables(torch.tensor([[0, 5]]), 8)  # 4 pairs: 2 for H, 2 for W
    assert cos[0, :2].tolist() == [1.0, 1.0]  # h = 0 does not rotate H's pairs
    assert cos[0, 2:].tolist() != [1.0, 1.0]
    assert with_prefix(torch.tensor([[0, 0], [0, 1]])).tolist() == [[-1, -1], [0, 0], [0, 1]]
    with pytest.raises(ValueError, match="at least 3 channel pairs"):
        rope_tables(torch.zeros(4, 3, dtype=torch.int64), 4)


# --------------------------------------------------------------------------------------------
# sampling helpers


def test_filter_logits_keeps_the_hand_computed_sets():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()

    def kept(**kwargs):
        return torch.isfinite(filter_logits(logits, **kwargs)).nonzero().flatten().tolist()

    assert kept(top_k=2) == [0, 1]
    assert kept(top_p=0.9) == [0, 1, 2]  # 0.5 + 0.3 < 0.9 <= 0.95
    assert kept(top_p=0.7) == [0, 1]
    assert kept(top_p=0.3) == [0]  # the most likely id alone already reaches 0.3
    # top-p after top-k sees renormalized probabilities: 0.5 / 0.95 = 0.526 >= 0.52
    assert kept(top_k=3, top_p=0.52) == [0]
    assert kept(top_p=0.52) == [0, 1]
    assert kept(top_k=10, top_p=1.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="top_p in"):
        filter_logits(logits, top_p=0.0)


def test_sample_greedy_and_masked():
    logits = torch.tensor([[0.0, 2.0, float("-inf"), 1.0]]).expand(500, 4)
    assert sample(logits, temperature=0).unique().tolist() == [1]
    drawn = sample(logits, temperature=3.0, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (500,) and set(drawn.tolist()) == {0, 1, 3}


def test_sample_frequencies_follow_the_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, float("-inf"), 2.0])
    for temperature, top_k in [(1.0, None), (2.0, None), (1.0, 3)]:
        drawn = sample(
            logits.expand(40_000, 5), temperature, top_k, generator=torch.Generator().manual_seed(1)
        )
        expected = filter_logits(logits / temperature, top_k).softmax(dim=0)
        frequencies = torch.bincount(drawn, minlength=5) / len(drawn)
        # Binomial standard error at 40,000 draws is at most 0.0025: 0.01 is four of them.
        torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)


def test_pick_with_the_noise_of_sample_draws_the_same_ids():
    logits = torch.randn(6, 7, generator=torch.Generator().manual_seed(0))
    drawn = sample(logits, 0.7, top_p=0.9, generator=torch.Generator().manual_seed(3))
    noise = draw_noise((6, 7), "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(pick(logits, noise, 0.7, top_p=0.9), drawn)
    with pytest.raises(ValueError, match="expected noise of shape"):
        pick(logits, None, 0.7)
    # noise of exactly 0 (exponential_ can round to it) never draws a masked id
    masked = torch.tensor([[float("-inf"), 0.0, 1.0]])
    assert pick(masked, torch.tensor([[0.0, 1.0, 1.0]])).item() == 2
    with pytest.raises(ValueError, match="temperature >= 0"):
        pick(logits, noise, -1.0)


def test_non_finite_sampling_settings_are_refused():
    logits = torch.zeros(2, 5)
    for temperature in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match=r"expected a finite temperature >= 0 \(0: greedy\)"):
            sample(logits, temperature)
    for scale in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=r"expected a finite cfg_scale \(1: no guidance\)"):
            check_guidance(scale, "constant")
    check_guidance(-2.0, "linear")  # any finite scale is a valid guidance scale


@pytest.mark.parametrize("as_tensor", [False, True], ids=["float", "0-d fp32 tensor"])
def test_extreme_temperatures_never_draw_a_masked_id(as_tensor):
    """1e-40 used to overflow every logit to ±inf, so the first id won (even a -inf one after
    top-k); 1e300 turned -inf into NaN, which argmax takes. As a 0-d fp32 tensor (a compiled
    step's input) 1e-50 is 0 and 1e300 is inf."""
    logits = torch.tensor([[float("-inf"), 1.0, 3.0, 2.0, float("-inf")]]).expand(4000, 5)
    noise = draw_noise(logits.shape, "cpu", torch.Generator().manual_seed(0))
    for temperature in (1e-40, 1e-50, 1e-300):
        value = torch.tensor(temperature) if as_tensor else temperature
        assert pick(logits, noise, value).unique().tolist() == [2]  # greedy
        assert pick(logits, noise, value, top_k=2).unique().tolist() == [2]
    for temperature in (1e30, 1e300):
        value = torch.tensor(temperature) if as_tensor else temperature
        drawn = pick(logits, noise, value)
        frequencies = torch.bincount(drawn, minlength=5) / len(drawn)
        # uniform over the three valid ids (standard error 0.0075)
        torch.testing.assert_close(
            frequencies, torch.tensor([0, 1, 1, 1, 0]) / 3, atol=0.03, rtol=0
        )
        assert set(pick(logits, noise, value, top_k=2).tolist()) == {2, 3}
    scaled = scale_logits(torch.tensor([[float("-inf"), 0.0, 1e30]]), torch.tensor(0.0))
    assert scaled.tolist() == [[float("-inf"), float("-inf"), 0.0]]


def test_generate_with_extreme_temperatures_and_guidance_scales():
    """1e-40 is greedy, 1e300 draws valid ids (it gave NaN logits, then an IndexError from the
    embedding or all-zero codes); a NaN or infinite guidance scale is refused (NaN gave all-zero
    codes)."""
    spec, shape = SPECS["levels T Q"]
    model = tiny(spec, shape, num_classes=3)
    labels = torch.tensor([0, 1, 2, 1])
    for options in ({}, {"cfg_scale": 3.0}, {"top_k": 3}):
        greedy = model.generate(
            labels=labels, settings=SampleSettings(temperature=0.0, **options)
        ).codes
        tiny_temperature = model.generate(
            labels=labels,
            settings=SampleSettings(temperature=1e-40, **options),
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.equal(tiny_temperature.codes, greedy)
        hot = model.generate(
            labels=labels,
            settings=SampleSettings(temperature=1e300, **options),
            generator=torch.Generator().manual_seed(0),
        )
        assert int(hot.codes[:, 0].max()) < 8 and int(hot.codes[:, 1].max()) < 4
    variable = tiny(TokenSpec([8]), None, num_classes=3, max_tokens=12, variable_length=True)
    codes, lengths = variable.generate(
        labels=labels,
        settings=SampleSettings(temperature=1e300),
        generator=torch.Generator().manual_seed(0),
    )
    assert int(codes.max()) < 8 and int(lengths.min()) >= 1
    # The settings are refused where they enter, before any model sees them.
    for scale in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"expected a finite cfg_scale \(1: no guidance\)"):
            SampleSettings(cfg_scale=scale)
    with pytest.raises(ValueError, match=r"expected a finite temperature >= 0 \(0: greedy\)"):
        SampleSettings(temperature=float("inf"))


def test_cfg_scale_one_is_no_guidance_whatever_the_schedule():
    """As in the masked generator: a linear schedule at scale 1 is 1 at every step. It used to
    count as guidance: an unconditional model refused it, a conditional one ran a doubled
    batch for nothing."""
    spec, shape = SPECS["1d"]
    unconditional = tiny(spec, shape)
    plain = unconditional.generate(2, generator=torch.Generator().manual_seed(0)).codes
    linear = unconditional.generate(
        2,
        settings=SampleSettings(cfg_scale=1.0, cfg_schedule="linear"),
        generator=torch.Generator().manual_seed(0),
    ).codes
    assert torch.equal(linear, plain)
    conditional = tiny(spec, shape, num_classes=3)
    rows = []
    original = conditional.allocate_cache
    conditional.allocate_cache = lambda batch, dtype=None: (rows.append(batch), original(batch))
    conditional.generate(
        labels=[0, 1], settings=SampleSettings(cfg_scale=1.0, cfg_schedule="linear")
    )
    conditional.generate(
        labels=[0, 1], settings=SampleSettings(cfg_scale=2.0, cfg_schedule="linear")
    )
    assert rows == [2, 4]  # the doubled batch only under guidance


def test_generate_reads_the_cache_in_four_spans_at_most():
    for length in (1, 4, 31, 256, 1024):
        model = tiny(TokenSpec([16]), (length,))
        spans = model.engine.spans(length)
        assert all(step + 2 <= span <= length + 1 for step, span in enumerate(spans))
        assert len(set(spans)) <= 4 and spans == sorted(spans)
    assert sum(spans) < 0.66 * len(spans) * (length + 1)  # 1024 tokens: ~5/8 of the cache


def test_the_engine_is_made_once_and_a_copied_model_gets_its_own():
    model = tiny(TokenSpec([16]), (5,), num_classes=3)
    first = model.generate(labels=[0, 1], generator=torch.Generator().manual_seed(0)).codes
    assert isinstance(model.engine, ARDecodeEngine) and model.engine is model.engine
    assert model.engine.model is model
    # A compiled step samples from the model it was compiled on: the engine of a copied model
    # (an EMA copy; `copy.deepcopy(model)` reaches the engine with the copy in its memo) is
    # the copy's, without it.
    model.engine._compiled = ("default", model.engine.advance)
    twin = tiny(TokenSpec([16]), (5,), num_classes=3, seed=1)
    engine_copy = copy.deepcopy(model.engine, {id(model): twin})
    assert engine_copy.model is twin and engine_copy._compiled is None
    again = model.generate(labels=[0, 1], generator=torch.Generator().manual_seed(0)).codes
    assert torch.equal(again, first)


def test_cfg_helpers():
    assert cfg_scale_at(0, 5, 3.0, "linear") == 1.0
    assert cfg_scale_at(2, 5, 3.0, "linear") == 2.0
    assert cfg_scale_at(4, 5, 3.0, "linear") == 3.0
    assert cfg_scale_at(3, 5, 3.0) == 3.0
    cond = torch.tensor([1.0, float("-inf"), 2.0])
    uncond = torch.tensor([0.0, float("-inf"), 3.0])
    assert cfg_logits(cond, uncond, 2.0).tolist() == [2.0, float("-inf"), 1.0]
    assert cfg_logits(cond, uncond, 1.0) is cond
    with pytest.raises(ValueError, match="cfg_schedule"):
        cfg_scale_at(0, 5, 2.0, "cosine")


# --------------------------------------------------------------------------------------------
# KV cache


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("num_classes", [0, 3])
def test_cached_logits_equal_teacher_forced(name, num_classes):
    spec, shape = SPECS[name]
    model = tiny(spec, shape, num_classes)
    ids = random_ids(model, batch=2)
    labels = torch.tensor([0, 2]) if num_classes else None
    with torch.no_grad():
        full = model.logits(ids, labels)  # (B, L + 1, V + 1)
        assert full.shape == (2, model.max_tokens + 1, model.vocab_size + 1)
        model.allocate_cache(2)
        torch.testing.assert_close(
            model.prefill(ids[:, :0], labels), full[:, :1], atol=1e-5, rtol=0
        )
        spans = model.engine.spans(model.max_tokens)
        for position in range(model.max_tokens):
            step = model.decode_step(ids[:, position : position + 1], torch.tensor(position))
            torch.testing.assert_close(step, full[:, position + 1], atol=1e-5, rtol=0)
            # generate's steps read only the cache slots that can be visible
            short = model._decode(
                ids[:, position : position + 1], torch.tensor(position), 2 + position
            )
            torch.testing.assert_close(short, full[:, position + 1], atol=1e-5, rtol=0)
            assert position + 2 <= spans[position] <= 1 + model.max_tokens
        # a prompt prefilled at once, then one step
        model.allocate_cache(2)
        prompt = model.prefill(ids[:, :3], labels)
        torch.testing.assert_close(prompt, full[:, :4], atol=1e-5, rtol=0)
        step = model.decode_step(ids[:, 3:4], torch.tensor(3))
        torch.testing.assert_close(step, full[:, 4], atol=1e-5, rtol=0)
    # ids of another level are impossible at each position
    allowed = torch.isfinite(full[0, : model.max_tokens, : model.vocab_size])  # (L, V)
    assert torch.equal(allowed, model.layout.vocab_mask[model.level_ids])


# --------------------------------------------------------------------------------------------
# sampling


def test_fixed_seed_reproduces_and_other_seed_differs():
    spec, shape = SPECS["grid"]
    model = tiny(spec, shape, num_classes=3)
    labels = torch.tensor([0, 1, 2, 1])

    def draw(seed, **kwargs):
        generator = torch.Generator().manual_seed(seed)
        settings = SampleSettings(top_k=8, **kwargs)
        return model.generate(labels=labels, settings=settings, generator=generator)

    codes, lengths = draw(0)
    assert codes.shape == (4, *shape) and lengths.tolist() == [3] * 4  # rows: the length axis H
    assert torch.equal(draw(0)[0], codes)
    assert not torch.equal(draw(1)[0], codes)
    # guided: reproducible, scale 1 equals plain conditional sampling, a larger scale changes it
    assert torch.equal(draw(0, cfg_scale=1.0, cfg_schedule="linear")[0], codes)
    guided = draw(0, cfg_scale=4.0)[0]
    assert torch.equal(draw(0, cfg_scale=4.0)[0], guided)
    assert not torch.equal(guided, codes)
    assert model.blocks[0].attention.k_cache is None  # freed after generate


def test_invalid_level_ids_are_never_sampled():
    spec, shape = SPECS["levels T Q"]
    model = tiny(spec, shape)
    # Without the mask, ids of the other level and the end token would be likely: every raw
    # logit is finite and the temperature flattens them.
    codes, lengths = model.generate(
        64, settings=SampleSettings(temperature=5.0), generator=torch.Generator().manual_seed(0)
    )
    assert codes.shape == (64, *shape) and lengths.tolist() == [4] * 64  # T
    assert int(codes[:, 0].max()) < 8 and int(codes[:, 1].max()) < 4
    assert len(codes[:, 1].unique()) == 4  # level 1 does get sampled, just within its range


def test_end_token_gives_variable_lengths_and_padding():
    model = tiny(TokenSpec([8]), None, max_tokens=12, variable_length=True)
    codes, lengths = model.generate(
        32, settings=SampleSettings(temperature=2.0), generator=torch.Generator().manual_seed(0)
    )
    assert codes.shape == (32, 12)
    assert int(lengths.min()) >= 1 and int(lengths.max()) <= 12
    assert int(lengths.min()) < 12  # some samples ended early
    padding = torch.arange(12) >= lengths[:, None]
    assert not bool(codes[padding].any())
    short, short_lengths = model.generate(4, max_tokens=5, generator=torch.Generator())
    assert short.shape == (4, 5) and int(short_lengths.max()) <= 5


def end_token_wins(model: ARTransformer) -> ARTransformer:
    """`model` with a head whose end row has a bias of 1e4: wherever the end token is not masked,
    it is drawn, at any temperature and under guidance."""
    head = torch.nn.Linear(model.config.dim, model.head.out_features)
    with torch.no_grad():
        head.weight.copy_(model.head.weight)
        head.bias.zero_()
        head.bias[model.end_id] = 1e4
    model.head = head
    return model


@pytest.mark.parametrize(
    "options",
    [{"temperature": 1.0}, {"temperature": 0.0}, {"cfg_scale": 3.0, "top_p": 0.9}],
    ids=["temperature 1", "greedy", "cfg"],
)
def test_a_fixed_length_1d_model_never_ends_a_sample_early(options):
    """TiTok's K tokens: an image of K - 1 tokens does not decode. The end token used to be a
    valid prediction at tokens 1..L-1 of every 1-D layout, and a row that drew it came back short
    and padded with code 0."""
    labels = torch.tensor([0, 1, 2, 0])
    generator = torch.Generator().manual_seed(0)
    fixed = end_token_wins(tiny(TokenSpec([8]), (6,), num_classes=3, variable_length=False))
    codes, lengths = fixed.generate(
        labels=labels, settings=SampleSettings(**options), generator=generator
    )
    assert codes.shape == (4, 6) and lengths.tolist() == [6] * 4
    assert int(codes.max()) < 8  # no end id (8) in the codes either
    logits = fixed.logits(codes.reshape(4, 6), labels)  # (B, L + 1, V + 1)
    assert torch.isinf(logits[:, :6, fixed.end_id]).all()  # -inf at every token
    # The same forced head on a variable-length model ends every row at its first chance.
    variable = end_token_wins(tiny(TokenSpec([8]), (6,), num_classes=3, variable_length=True))
    codes, lengths = variable.generate(
        labels=labels, settings=SampleSettings(**options), generator=generator
    )
    assert lengths.tolist() == [1] * 4 and not bool(codes[:, 1:].any())
    with pytest.raises(ValueError, match="expected max_tokens None or 6 for this fixed-length"):
        fixed.generate(2, labels=[0, 1], max_tokens=3)
    assert variable.generate(labels=[0, 1], max_tokens=3).codes.shape == (2, 3)


def test_a_fixed_length_1d_model_trains_no_end_token():
    fixed = tiny(TokenSpec([8]), (6,), variable_length=False)
    variable = tiny(TokenSpec([8]), (6,), variable_length=True)
    variable.load_state_dict(fixed.state_dict())
    ids = torch.randint(8, (3, 6), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6, 4, 2])
    # fixed: the mean over the 12 real tokens alone, the padding after a short sample untrained
    logits = fixed.logits(ids)[:, :6]  # (B, L, V + 1)
    real = torch.arange(6) < lengths[:, None]  # (B, L)
    expected = torch.nn.functional.cross_entropy(logits[real], ids[real])
    torch.testing.assert_close(fixed(ids, lengths=lengths), expected)
    assert not torch.allclose(variable(ids, lengths=lengths), expected)  # + 2 end targets
    # Full rows: no end target either way, but the variable-length model's softmax keeps some
    # mass for the end token at tokens 1..L-1 (the same weights, one more finite logit).
    assert fixed(ids) < variable(ids)


def test_variable_length_is_for_1d_layouts_and_off_by_default():
    for spec, shape in SPECS.values():
        one_axis = spec.ndim == 1
        assert tiny(spec, shape).variable_length is False
        assert not tiny(spec, shape, variable_length=False).variable_length
        if one_axis:
            assert tiny(spec, shape, variable_length=True).variable_length
        else:
            with pytest.raises(
                ValueError,
                match=f"expected variable_length False for layout {spec.layout!r} .*, got True",
            ):
                tiny(spec, shape, variable_length=True)
    # A config without the key is fixed-length: `mediatok train` decides it from the shards.
    default = build_generator("ar", {"dim": 32, "depth": 1, "heads": 4}, TokenSpec([8]), (6,))
    assert default.config.variable_length is False and not default.variable_length
    with pytest.raises(TypeError, match="expected variable_length True or False, got 'no'"):
        ARConfig(variable_length="no")
    with pytest.raises(TypeError, match="got 1"):
        ARConfig(variable_length=1)


def test_training_memorizes_one_sequence_per_class():
    model = tiny(TokenSpec([16]), (8,), num_classes=3, variable_length=True).train()
    ids = torch.tensor(
        [[3, 1, 4, 1, 5, 0, 0, 0], [9, 2, 6, 5, 3, 5, 8, 9], [7, 7, 2, 0, 0, 0, 0, 0]]
    )
    lengths, labels = torch.tensor([5, 8, 3]), torch.tensor([0, 1, 2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = model(ids.repeat(4, 1), labels.repeat(4), lengths.repeat(4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    codes, generated_lengths = model.generate(labels=labels, settings=SampleSettings(temperature=0))
    assert generated_lengths.tolist() == lengths.tolist()
    assert torch.equal(codes, ids)  # padding is code 0 after the end, as in `ids`
    assert model.training  # generate restored the mode


@pytest.mark.parametrize("name", ["levels Q T", "levels T Q"])
def test_loss_takes_codes_and_ignores_padding_along_the_length_axis(name):
    spec, shape = SPECS[name]
    model = tiny(spec, shape)
    codes = torch.stack([torch.randint(8, (3, 4)), torch.randint(4, (3, 4))], dim=1)  # (B, Q, T)
    ids = model.layout.flatten(codes)
    assert torch.equal(model(codes), model(ids))
    assert math.isfinite(model(codes).item())
    lengths = torch.tensor([2, 4, 1])  # time steps; later ones are padding
    padded = codes.clone()
    padded[0, :, 2:], padded[2, :, 1:] = 3, 1
    assert torch.equal(model(codes, lengths=lengths), model(padded, lengths=lengths))
    assert not torch.equal(model(codes), model(padded))


# --------------------------------------------------------------------------------------------
# `mediatok train` decides variable_length from the shards


def test_variable_length_is_resolved_from_the_training_lengths():
    one_d, grid = TokenSpec([8], layout="N"), TokenSpec([8], layout="H W")
    # TiTok-like: every sample has the model's 6 tokens; fixed-length.
    assert resolve_variable_length(one_d, (6,), [6, 6, 6]) is False
    # Audio-like, windows of 6: a 3-token clip is followed by the end token in training.
    assert resolve_variable_length(one_d, (6,), [6, 3, 9]) is True
    # Clips all at least a window long train on full random windows only, none of which ends
    # where its clip does: nothing teaches an end, so the model is fixed-length.
    assert resolve_variable_length(one_d, (6,), [6, 8, 9]) is False
    assert resolve_variable_length(one_d, (10,), [6, 8, 9]) is True
    assert resolve_variable_length(grid, (2, 3), [2, 1]) is False


# --------------------------------------------------------------------------------------------
# errors and sizes


def test_bad_inputs_raise_with_expected_and_got():
    spec, shape = SPECS["levels Q T"]
    conditional = tiny(spec, shape, num_classes=3)
    ids = conditional.layout.flatten(torch.zeros(2, *shape, dtype=torch.int64))
    with pytest.raises(
        ValueError, match=r"expected ids in \[8, 12\) at position 4 \(level 1\), got 3"
    ):
        conditional(ids.index_put((torch.tensor([1]), torch.tensor([4])), torch.tensor(3)))
    with pytest.raises(ValueError, match="expected ids in"):
        conditional(ids - 1)
    with pytest.raises(ValueError, match=r"expected 2 integer labels .* got .* shape \(3,\)"):
        conditional(ids, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected labels in \[0, 3\]"):
        conditional(ids, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"n <= 8, got torch.int64 of shape \(1, 9\)"):
        conditional(torch.zeros(1, 9, dtype=torch.int64))
    unconditional = tiny(spec, shape)
    with pytest.raises(ValueError, match="expected labels=None for an unconditional model, got 2"):
        unconditional(ids, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected labels=None for an unconditional model, got 2"):
        unconditional.generate(labels=[0, 1])
    with pytest.raises(
        ValueError,
        match=r"expected labels \(of a class-conditional model\) for CFG, got cfg_scale=2.0",
    ):
        unconditional.generate(2, settings=SampleSettings(cfg_scale=2.0))
    # a conditional model sampling its null class (no labels) has nothing to guide either
    with pytest.raises(ValueError, match=r"for CFG, got cfg_scale=3.0, cfg_schedule='linear'"):
        conditional.generate(2, settings=SampleSettings(cfg_scale=3.0, cfg_schedule="linear"))
    with pytest.raises(
        ValueError, match=r"expected no steps for an 'ar' generator .*masked generators only"
    ):
        unconditional.generate(2, settings=SampleSettings(steps=4))
    with pytest.raises(TypeError, match="expected settings a SampleSettings or None, got dict"):
        unconditional.generate(2, settings={"temperature": 0.0})
    with pytest.raises(ValueError, match=r"expected num_samples >= 1, or labels \(of that many\)"):
        conditional.generate(3, labels=[0, 1])
    assert conditional.generate(2, labels=[0, 1]).codes.shape == (2, *shape)
    with pytest.raises(ValueError, match=r"expected lengths in \[1, 4\], got \[5, 1\]"):
        conditional(ids, lengths=torch.tensor([5, 1]))
    with pytest.raises(ValueError, match="expected max_tokens None or 8"):
        unconditional.generate(2, max_tokens=4)
    with pytest.raises(ValueError, match=r"expected allocate_cache\(2\) first"):
        unconditional.decode_step(ids[:, :1], torch.tensor(0))
    with pytest.raises(ValueError, match="expected a token_shape for layout 'Q T'"):
        ARTransformer(ARConfig(dim=32, depth=1, heads=4), spec)


def test_sizes_and_the_builder():
    config = ARConfig(dim=32, heads=4)
    assert config.hidden == 256  # 8/3 · 32 rounded up to a multiple of 256
    assert ARConfig().hidden == 2048
    assert ARConfig(dim=32, heads=4, mlp_ratio=2.5).hidden == 80  # int(dim · mlp_ratio)
    with pytest.raises(ValueError, match="expected mlp_ratio > 0 or None, got 0"):
        ARConfig(mlp_ratio=0)
    with pytest.raises(ValueError, match="expected size to be one of"):
        ARConfig.preset("M")
    large = ARConfig.preset("L", num_classes=10)
    assert (large.dim, large.depth, large.heads, large.num_classes) == (1024, 24, 16, 10)
    # one builder signature for both generators: a config or the fields that differ from the
    # defaults, a spec or its dict form, a token shape (1-D: None takes config.max_tokens)
    tiny_config = {"dim": 32, "depth": 1, "heads": 4}
    model = build_ar_transformer(tiny_config, TokenSpec([16]).to_dict(), (4,))
    assert model.max_tokens == 4 and model.config.dim == 32 and model.spec == TokenSpec([16])
    config = ARConfig(**tiny_config, max_tokens=5)
    assert build_ar_transformer(config, TokenSpec([16]), None).max_tokens == 5
    with pytest.raises(ValueError, match="heads"):
        build_ar_transformer({"dim": 32, "haeds": 4}, TokenSpec([16]), (4,))
    with pytest.raises(TypeError, match="expected an ARConfig, got MaskedConfig"):
        ARTransformer(MaskedConfig(), TokenSpec([16]), (4,))


@pytest.mark.slow
def test_gpt_b_parameter_count():
    config = ARConfig.preset("B", num_classes=1000)
    model = build_ar_transformer(config, TokenSpec([16384]), (256,))
    # The head's 16,385 rows are padded to 16,448: 48,384 parameters more than LlamaGen's B.
    assert sum(p.numel() for p in model.parameters()) == 110_937_600


@pytest.mark.slow
def test_compiled_decode_step_matches_eager():
    spec, shape = SPECS["levels T Q"]
    model = tiny(spec, shape, num_classes=3)
    labels = torch.tensor([0, 2])
    generator = torch.Generator()
    settings = SampleSettings(cfg_scale=2.0)
    eager = model.generate(labels=labels, settings=settings, generator=generator.manual_seed(0))
    compiled = model.generate(
        labels=labels,
        settings=SampleSettings(cfg_scale=2.0, compile=True),
        generator=generator.manual_seed(0),
    )
    assert torch.equal(eager[0], compiled[0])


@pytest.mark.slow
def test_compiled_step_matches_eager_with_end_token_top_p_and_linear_schedule():
    # 3 cache spans: 3 compiled graphs
    model = tiny(TokenSpec([16]), (40,), num_classes=3, variable_length=True)
    assert len(set(model.engine.spans(40))) == 3
    labels, options = torch.tensor([0, 1, 2, 1]), {"cfg_scale": 3.0, "cfg_schedule": "linear"}
    options |= {"top_p": 0.9, "top_k": 8, "temperature": 1.3}
    eager = model.generate(
        labels=labels,
        settings=SampleSettings(**options),
        generator=torch.Generator().manual_seed(5),
    )
    compiled = model.generate(
        labels=labels,
        settings=SampleSettings(**options, compile=True),
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(eager.codes, compiled.codes) and torch.equal(eager.lengths, compiled.lengths)


@pytest.mark.slow
def test_compiled_sampling_of_a_fixed_length_1d_model_never_ends_early():
    model = end_token_wins(tiny(TokenSpec([16]), (12,), num_classes=3, variable_length=False))
    labels, options = torch.tensor([0, 1, 2]), {"cfg_scale": 2.0, "top_k": 8}
    eager = model.generate(
        labels=labels,
        settings=SampleSettings(**options),
        generator=torch.Generator().manual_seed(1),
    )
    compiled = model.generate(
        labels=labels,
        settings=SampleSettings(**options, compile=True),
        generator=torch.Generator().manual_seed(1),
    )
    assert compiled.lengths.tolist() == [12] * 3 and torch.equal(eager.codes, compiled.codes)


@pytest.mark.slow
def test_new_temperatures_compile_nothing_and_the_graph_limit_is_a_clear_error(monkeypatch):
    torch._dynamo.reset()  # the limit counts the graphs of every model in the process
    monkeypatch.setattr(engine, "_COMBINATIONS", 1)
    model = tiny(TokenSpec([16]), (16,), num_classes=3, variable_length=True)
    graphs = len(set(model.engine.spans(16)[:-1]))  # per combination: the last step feeds nothing
    labels = torch.tensor([0, 1])
    stats = torch._dynamo.utils.counters["stats"]  # counts since the process started
    before = stats["unique_graphs"]
    for temperature, top_p in ((1.0, 0.9), (0.5, 0.6), (2.0, 0.3)):
        settings = SampleSettings(temperature=temperature, top_p=top_p, compile=True)
        model.generate(labels=labels, settings=settings)
    assert stats["unique_graphs"] - before == graphs
    with pytest.raises(RuntimeError, match=r"1 combinations .* compile=False"):
        for top_k in (4, 2):  # each new top_k: new graphs; the limit is 4 graphs
            model.generate(labels=labels, settings=SampleSettings(top_k=top_k, compile=True))
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_generate_on_a_fresh_model_matches_eager():
    """Warm-up, recording and replays of every span, each step's outputs fed to the next."""
    model = tiny(TokenSpec([16]), (40,), num_classes=3, variable_length=True).cuda()
    labels = torch.tensor([0, 1, 2], device="cuda")
    runs = [
        model.generate(
            labels=labels,
            settings=SampleSettings(cfg_scale=2.0, compile=compiled),
            generator=torch.Generator("cuda").manual_seed(0),
        )
        for compiled in (True, True, False)  # the second compiled run replays recorded graphs
    ]
    for run in runs[:2]:
        assert torch.equal(run.codes, runs[2].codes) and torch.equal(run.lengths, runs[2].lengths)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_step_matches_eager(dtype):
    model = tiny(TokenSpec([16], layout="H W"), (4, 4), num_classes=3).cuda()
    labels = torch.tensor([0, 1, 2], device="cuda")
    null = torch.full_like(labels, model.null_class)
    step = model.engine.step_function(True, torch.device("cuda"))  # mode "reduce-overhead"
    draw = _Draw(guided=True, temperature=torch.tensor(1.0, device="cuda"), top_k=None, top_p=None)
    generator = torch.Generator("cuda").manual_seed(0)
    scales = torch.full((model.max_tokens,), 2.0, device="cuda")
    finished = torch.zeros(3, dtype=torch.bool, device="cuda")
    lengths = torch.full((3,), 4, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        model.allocate_cache(6)
        assert model.blocks[0].attention.k_cache.dtype == dtype
        empty = torch.zeros(6, 0, dtype=torch.int64, device="cuda")
        logits = model.prefill(empty, torch.cat([labels, null]))[:, 0]  # (6, V + 1)
        for position in range(model.max_tokens - 1):
            noise = draw_noise((3, model.vocab_size + 1), "cuda", generator)
            state = (
                logits,
                noise,
                scales,
                torch.tensor(position, device="cuda"),
                finished,
                lengths,
            )
            torch.compiler.cudagraph_mark_step_begin()
            span = model.engine.spans(model.max_tokens)[position]
            token, _, _, compiled = (out.clone() for out in step(*state, draw, span))
            # Eager from the same state: the same token, so it rewrites the same cache slot.
            eager_token, _, _, logits = model.engine.advance(*state, draw, span)
            assert torch.equal(token, eager_token)
            tolerance = 1e-4 if dtype == torch.float32 else 5e-2
            torch.testing.assert_close(compiled, logits, atol=tolerance, rtol=0)
        settings = SampleSettings(cfg_scale=2.0, compile=True)
        codes, lengths = model.generate(labels=labels, settings=settings)
    assert codes.shape == (3, 4, 4) and lengths.tolist() == [4] * 3


def test_a_fixed_length_model_over_prefix_decodable_tokens_may_stop_at_k():
    """FlexTok's tokens are ordered coarse to fine and any prefix decodes (the spec says
    `prefix_decodable`): a model trained on all K may sample the first k; one over other tokens
    may not (31 of TiTok's 32 tokens do not decode)."""
    ordered = tiny(TokenSpec([16], geometry={"prefix_decodable": True}), (8,))
    generator = torch.Generator().manual_seed(0)
    full = ordered.generate(2, generator=generator)
    codes, lengths = ordered.generate(2, generator=generator.manual_seed(0), max_tokens=3)
    assert codes.shape == (2, 3) and lengths.tolist() == [3, 3]
    assert torch.equal(codes, full.codes[:, :3])  # the same draws, stopped early
    assert full.lengths.tolist() == [8, 8]
    with pytest.raises(ValueError, match="expected max_tokens None or 8 for this fixed-length"):
        tiny(TokenSpec([16]), (8,)).generate(2, max_tokens=3)
