"""`MaskedTransformer`: schedules, the sampler's unmasking, seeds, CFG, level masking, the loss."""

from __future__ import annotations

import itertools

import pytest
import torch

from mediatok.generation.masked import (
    SCHEDULES,
    MaskedConfig,
    MaskedTransformer,
    build_masked_transformer,
    mask_ratio,
    masked_count,
)
from mediatok.generation.sampling import SampleSettings
from mediatok.tokens import TokenSpec

TINY = {"dim": 32, "depth": 2, "heads": 4}
SPEC = TokenSpec([16], layout="H W")
SHAPE = (4, 4)
TWO_LEVELS = TokenSpec([5, 7], layout="Q T", order="T Q")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(spec=SPEC, shape=SHAPE, seed=0, **config) -> MaskedTransformer:
    torch.manual_seed(seed)
    return MaskedTransformer(MaskedConfig(**TINY | config), spec, shape).eval()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_are_monotone_and_end_at_zero(schedule):
    grid = torch.linspace(0, 1, 101)
    ratios = mask_ratio(grid, schedule)
    assert ratios[0] == pytest.approx(1) and ratios[-1] == pytest.approx(0, abs=1e-6)
    assert bool((ratios[1:] <= ratios[:-1]).all())
    assert mask_ratio(0.3, schedule) == pytest.approx(
        float(mask_ratio(torch.tensor(0.3), schedule))
    )
    for steps, length in [(1, 1), (1, 9), (8, 16), (12, 16), (16, 16), (8, 256), (3, 1000)]:
        counts = [length] + [masked_count(t, steps, length, schedule) for t in range(steps)]
        assert counts[-1] == 0
        assert all(after < before for before, after in itertools.pairwise(counts)), counts


def test_cosine_counts_follow_the_paper_where_not_clamped():
    # ceil(cos(π/2 · t/8) · 256) for t = 1..8 (MaskGIT §3.2)
    assert [masked_count(t, 8, 256) for t in range(8)] == [252, 237, 213, 182, 143, 98, 50, 0]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sampler_unmasks_the_scheduled_count_each_step(schedule):
    model = tiny(schedule=schedule)
    steps, seen = 6, []

    def record(step, ids):
        seen.append((step, ids.clone()))

    settings = SampleSettings(steps=steps)
    codes = model.generate(4, settings=settings, generator=seeded(0), callback=record).codes
    assert codes.shape == (4, *SHAPE) and codes.dtype == torch.int64
    assert [step for step, _ in seen] == list(range(steps))
    expected = [masked_count(t, steps, model.length, schedule) for t in range(steps)]
    for (step, ids), count in zip(seen, expected, strict=True):
        assert (ids == model.mask_id).sum(dim=1).tolist() == [count] * 4, step
    # an unmasked id never changes afterwards, and the last step's ids are the codes
    for (_, before), (_, after) in itertools.pairwise(seen):
        known = before != model.mask_id
        assert torch.equal(after[known], before[known])
    assert torch.equal(model.layout.unflatten(seen[-1][1]), codes)


def test_fixed_seed_reproduces_and_another_seed_differs():
    # In training mode with heavy dropout: generate must switch to eval (dropout draws from the
    # global RNG, so it would break reproduction) and restore the flag.
    model = tiny(num_classes=3, dropout=0.5).train()
    labels = torch.tensor([0, 1, 2, 0])
    options = SampleSettings(steps=5, cfg_scale=2.0, cfg_schedule="linear", top_k=8)
    first, lengths = model.generate(labels=labels, settings=options, generator=seeded(7))
    again = model.generate(labels=labels, settings=options, generator=seeded(7)).codes
    other = model.generate(labels=labels, settings=options, generator=seeded(8)).codes
    assert torch.equal(first, again) and lengths is None
    assert not torch.equal(first, other)
    assert model.training


def test_cfg_scale_one_equals_conditional_sampling():
    model = tiny(num_classes=3)
    labels = torch.tensor([2, 0, 1])
    conditional = model.generate(labels=labels, generator=seeded(3)).codes
    # a scale that is not 1.0 takes the doubled-batch path but guides by (numerically) 1
    nearly_one = SampleSettings(cfg_scale=1.0 + 1e-12)
    doubled = model.generate(labels=labels, settings=nearly_one, generator=seeded(3)).codes
    assert torch.equal(doubled, conditional)
    six = SampleSettings(cfg_scale=6.0)
    guided = model.generate(labels=labels, settings=six, generator=seeded(3)).codes
    assert not torch.equal(guided, conditional)


def test_invalid_level_ids_are_never_predicted_or_sampled():
    model = tiny(TWO_LEVELS, (2, 6), num_classes=2)
    ids = torch.full((2, model.length), model.mask_id)
    logits = model.logits(ids, torch.tensor([0, 1]))
    invalid = ~model.layout.vocab_mask[model.layout.level_ids]  # (L, V)
    assert bool(torch.isinf(logits[:, invalid]).all()) and bool(
        logits[:, ~invalid].isfinite().all()
    )
    # A hot temperature flattens the distribution: unmasked logits would pick wrong levels often.
    samples = model.generate(
        labels=torch.tensor([0, 1] * 8),
        settings=SampleSettings(temperature=10.0, cfg_scale=3.0),
        generator=seeded(0),
    ).codes
    assert samples.shape == (16, 2, 6)
    assert int(samples[:, 0].max()) < 5 and int(samples[:, 1].max()) < 7
    assert int(samples.min()) >= 0


def test_extreme_temperatures_and_non_finite_settings():
    """A temperature of 1e-40 used to overflow the logits to ±inf, so that the first id won
    rather than the largest logit (and one of another level could win); it is greedy now. A NaN
    guidance scale gave all-zero codes; NaN and inf settings are refused."""
    model = tiny(TWO_LEVELS, (2, 6), num_classes=2)
    labels = torch.tensor([0, 1, 1, 0])
    for options in ({}, {"cfg_scale": 3.0}, {"top_k": 2}):
        options |= {"choice_temperature": 0.0, "steps": 4}  # no noise on confidences
        greedy = model.generate(
            labels=labels, settings=SampleSettings(temperature=0.0, **options)
        ).codes
        tiny_temperature = model.generate(
            labels=labels,
            settings=SampleSettings(temperature=1e-40, **options),
            generator=seeded(0),
        ).codes
        assert torch.equal(tiny_temperature, greedy)
        hot = model.generate(
            labels=labels,
            settings=SampleSettings(temperature=1e300, **options),
            generator=seeded(0),
        )
        assert int(hot.codes[:, 0].max()) < 5 and int(hot.codes[:, 1].max()) < 7
    # The settings are refused where they enter, before any model sees them.
    finite = r"expected a finite cfg_scale \(1: no guidance\), got"
    for scale in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=finite):
            SampleSettings(cfg_scale=scale)
    with pytest.raises(ValueError, match=r"expected a finite temperature >= 0 \(0: greedy\)"):
        SampleSettings(temperature=float("inf"))
    with pytest.raises(ValueError, match="expected a finite choice_temperature >= 0, got inf"):
        SampleSettings(choice_temperature=float("inf"))


def test_loss_counts_masked_positions_only():
    model = tiny(num_classes=2)
    codes = torch.randint(16, (3, *SHAPE), generator=seeded(1))
    labels = torch.tensor([0, 1, 1])
    loss = model(codes, labels, generator=seeded(5))
    mask = model.draw_mask(3, generator=seeded(5))
    ids = model.layout.flatten(codes)
    assert 0 < int(mask.sum()) < mask.numel()
    logits = model.logits(ids.masked_fill(mask, model.mask_id), labels)
    per_position = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    assert loss.item() == pytest.approx(per_position[mask].mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(per_position.mean().item(), rel=1e-3)

    # A masked position's target is not seen by the model: changing it changes the loss only
    # through the target.
    row, position = (int(i) for i in torch.nonzero(mask)[0])
    changed = ids.clone()
    changed[row, position] = (changed[row, position] + 1) % 16
    assert model(changed, labels, generator=seeded(5)).item() != pytest.approx(loss.item())

    # With attention cut (its output projection zeroed), a position sees only itself: changing
    # an unmasked target then cannot move the loss, unless the loss counts unmasked positions.
    with torch.no_grad():
        for block in model.transformer.blocks:
            block.attn.proj.weight.zero_()
    base = model(ids, labels, generator=seeded(5))
    row, position = (int(i) for i in torch.nonzero(~mask)[0])
    changed = ids.clone()
    changed[row, position] = (changed[row, position] + 1) % 16
    assert model(changed, labels, generator=seeded(5)).item() == pytest.approx(base.item())


def test_class_dropout_only_in_training_mode():
    codes = torch.randint(16, (3, *SHAPE), generator=seeded(1))
    labels, null = torch.tensor([0, 1, 1]), torch.full((3,), 2)
    model = tiny(num_classes=2, class_dropout=0.999)
    conditional = model(codes, labels, generator=seeded(4))
    # the mask is drawn before the dropout, so the same seed gives the same mask in both modes
    mask = model.draw_mask(3, generator=seeded(4))
    ids = model.layout.flatten(codes)
    logits = model.logits(ids.masked_fill(mask, model.mask_id), null)
    unconditional = torch.nn.functional.cross_entropy(logits[mask], ids[mask])
    assert conditional.item() != pytest.approx(unconditional.item())
    dropped = model.train()(codes, labels, generator=seeded(4))
    assert dropped.item() == pytest.approx(unconditional.item(), rel=1e-5)


def test_lengths_mask_padding_out_of_the_loss():
    spec = TokenSpec([5, 7], layout="Q T", order="T Q")
    model = tiny(spec, (2, 6))
    codes = torch.stack([torch.randint(5, (4, 6)), torch.randint(7, (4, 6))], dim=1)  # (B, Q, T)
    lengths = torch.tensor([6, 3, 1, 4])
    mask = model.draw_mask(4, lengths, generator=seeded(2))
    time = model.layout.coordinates[:, 0]
    assert not bool((mask & (time[None] >= lengths[:, None])).any())
    assert bool(mask.any(dim=1).all())
    loss = model(codes, lengths=lengths, generator=seeded(2))
    padded = codes.clone()
    padded[1, :, 3:] = 99  # out of range, but padding: not checked, not seen, not scored
    assert model(padded, lengths=lengths, generator=seeded(2)).item() == loss.item()
    with pytest.raises(ValueError, match="expected codes in"):
        model(padded)


def test_training_learns_each_class_sequence():
    torch.manual_seed(0)
    num_classes, length = 4, 16
    targets = torch.randint(16, (num_classes, length), generator=seeded(11))
    model = MaskedTransformer(
        MaskedConfig(**TINY, num_classes=num_classes), TokenSpec([16]), (length,)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    labels = torch.arange(num_classes).repeat(4)  # (16,)
    losses = []
    model.train()
    for _ in range(150):
        loss = model(targets[labels], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10, (losses[:10], losses[-10:])
    model.eval()
    samples = model.generate(
        labels=torch.arange(num_classes).repeat(2),
        settings=SampleSettings(temperature=0.1, cfg_scale=2.0),
        generator=seeded(0),
    ).codes
    match = (samples == targets[torch.arange(num_classes).repeat(2)]).float().mean(dim=1)
    assert bool((match >= 0.75).all()), match


def test_bf16_autocast_runs():
    model = tiny(TWO_LEVELS, (2, 6), num_classes=2)
    codes = torch.stack([torch.randint(5, (2, 6)), torch.randint(7, (2, 6))], dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(codes, torch.tensor([0, 1]))
        guided = SampleSettings(cfg_scale=2.0)
        samples = model.generate(labels=torch.tensor([0, 1]), settings=guided, generator=seeded(0))
    assert loss.dtype == torch.float32 and loss.isfinite()
    assert samples.codes.shape == (2, 2, 6)


def test_builder_takes_a_mapping_and_rejects_unknown_keys():
    model = build_masked_transformer(TINY | {"schedule": "arccos"}, TWO_LEVELS.to_dict(), (2, 3))
    assert model.config.schedule == "arccos" and model.length == 6 and model.vocab_size == 12
    with pytest.raises(ValueError, match="heads"):
        build_masked_transformer(TINY | {"haeds": 4}, TWO_LEVELS, (2, 3))
    assert build_masked_transformer(MaskedConfig(**TINY), SPEC, SHAPE).config.dim == 32


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match=r"expected schedule to be one of 'cosine'.*got 'square'"):
        MaskedConfig(schedule="square")
    with pytest.raises(ValueError, match="expected dim divisible by heads, got dim=30, heads=4"):
        MaskedConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match=r"expected steps to be an int in \[1, 16\], got 17"):
        masked_count(0, 17, 16)
    with pytest.raises(ValueError, match=r"expected step to be an int in \[0, 3\], got 4"):
        masked_count(4, 4, 16)
    with pytest.raises(ValueError, match=r"expected r in \[0, 1\], got 1.5"):
        mask_ratio(1.5)

    model = tiny(num_classes=3)
    codes = torch.randint(16, (2, *SHAPE))
    with pytest.raises(
        ValueError, match=r"expected codes \(B, 4, 4\) or ids \(B, 16\), got shape \(2, 4, 5\)"
    ):
        model(torch.zeros(2, 4, 5, dtype=torch.int64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expected integer codes.*got dtype torch.float32"):
        model(codes.float(), torch.tensor([0, 1]))
    bad = codes.clone()
    bad[1, 1, 1] = 16
    with pytest.raises(
        ValueError, match=r"expected codes in \[0, 16\) at level 0, got 16 in sample 1"
    ):
        model(bad, torch.tensor([0, 1]))
    with pytest.raises(
        ValueError, match=r"expected labels \(B,\) in \[0, 2\] for num_classes=3, got None"
    ):
        model(codes)
    with pytest.raises(ValueError, match=r"expected labels in \[0, 2\], got values from 0 to 3"):
        model(codes, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(2,\)"):
        model(codes, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected lengths in \[1, 4\], got values from 0 to 2"):
        model(codes, torch.tensor([0, 1]), lengths=torch.tensor([0, 2]))
    # what depends on the model is checked by `SampleSettings.check_for`, through generate
    with pytest.raises(ValueError, match=r"expected steps to be an int in \[1, 16\], got 17"):
        model.generate(labels=torch.tensor([0]), settings=SampleSettings(steps=17))
    with pytest.raises(ValueError, match="expected compile: false for a masked generator"):
        model.generate(labels=torch.tensor([0]), settings=SampleSettings(compile=True))
    with pytest.raises(ValueError, match="expected top_p: null for a masked generator"):
        model.generate(labels=torch.tensor([0]), settings=SampleSettings(top_p=0.9))
    with pytest.raises(ValueError, match="expected 3 labels for num_samples=3, got 2"):
        model.generate(3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected cfg_schedule to be one of 'constant', 'linear'"):
        SampleSettings(cfg_schedule="cosine")
    with pytest.raises(
        ValueError,
        match=r"expected a finite temperature >= 0 \(0: greedy\), got -1\.0",
    ):
        SampleSettings(temperature=-1.0)
    unconditional = tiny()
    with pytest.raises(ValueError, match="expected num_samples or labels, got neither"):
        unconditional.generate()
    # one wording for both generators (the masked one said "expected cfg_scale 1.0 for an
    # unconditional model")
    with pytest.raises(
        ValueError,
        match=r"expected labels \(of a class-conditional model\) for CFG, got cfg_scale=2.0",
    ):
        unconditional.generate(2, settings=SampleSettings(cfg_scale=2.0))
    with pytest.raises(ValueError, match="expected no labels for an unconditional model"):
        unconditional(codes, torch.tensor([0, 1]))
