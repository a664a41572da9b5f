"""The audio codec objective's parts: period, resolution and band discriminators, hinge and
feature matching over their outputs, the multi-scale log-mel loss, and one step of the task."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from mediatok.training.tasks.audio_discriminators import (
    DAC_BAND_WINDOWS,
    DEFAULT_BAND_EDGES,
    AudioDiscriminator,
    AudioDiscriminatorConfig,
    DiscriminatorOutput,
    MultiBandDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    band_bins,
)
from mediatok.training.tasks.audio_losses import (
    DEFAULT_MEL_SCALES,
    MultiScaleMelLoss,
    feature_matching_loss_by_family,
    hinge_discriminator_loss_by_family,
    hinge_generator_loss_by_family,
)
from test_cli_audio import TINY_WAVTOKENIZER

PERIODS = (2, 3, 5)
PERIOD_CHANNELS = (4, 8, 8)
RESOLUTIONS = ((128, 32, 128), (256, 64, 200))
TINY = AudioDiscriminatorConfig(
    periods=PERIODS,
    period_channels=PERIOD_CHANNELS,
    resolutions=RESOLUTIONS,
    resolution_channels=4,
)
MEL_SCALES = ((128, 32, 16), (256, 64, 32))
SAMPLE_RATE = 16000


def tiny_discriminator(**overrides) -> AudioDiscriminator:
    torch.manual_seed(0)
    config = AudioDiscriminatorConfig(**{**TINY.__dict__, **overrides})
    return AudioDiscriminator(config)


def tone(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """A harmonic tone plus a little noise: `(B, 1, S)`."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(length) / SAMPLE_RATE
    pitch = 110 + 50 * torch.rand(batch, 1, 1, generator=generator)
    signal = sum(torch.sin(2 * math.pi * k * pitch * time) / k for k in (1, 2, 3))
    return 0.3 * signal + 0.01 * torch.randn(batch, 1, length, generator=generator)


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


@pytest.mark.parametrize("length", [129, 1000, 1001, 2311])
def test_output_counts_names_and_shapes(length):
    discriminator = tiny_discriminator()
    assert discriminator.min_length == 129  # 256 // 2 + 1 beats max(periods) = 5
    outputs = discriminator(tone(2, length))
    assert [o.name for o in outputs] == [
        "period_2",
        "period_3",
        "period_5",
        "resolution_128_32_128",
        "resolution_256_64_200",
    ]
    for period, output in zip(PERIODS, outputs[:3], strict=True):
        assert output.kind == "period"
        rows = ceil_div(length, period)  # right-padded to a multiple of the period
        assert len(output.features) == len(PERIOD_CHANNELS)
        for index, (width, feature) in enumerate(
            zip(PERIOD_CHANNELS, output.features, strict=True)
        ):
            rows = ceil_div(rows, 3) if index < len(PERIOD_CHANNELS) - 1 else rows
            assert feature.shape == (2, width, rows, period)
        assert output.logits.shape == (2, 1, rows, period)
    for (n_fft, hop, _), output in zip(RESOLUTIONS, outputs[3:], strict=True):
        assert output.kind == "resolution"
        bins, frames = n_fft // 2 + 1, length // hop + 1
        assert len(output.features) == 5
        for time_stride, feature in zip((2, 1, 2, 1, 2), output.features, strict=True):
            bins, frames = ceil_div(bins, 2), ceil_div(frames, time_stride)
            assert feature.shape == (2, 4, bins, frames)
        assert output.logits.shape == (2, 1, bins, frames)
    assert all(torch.isfinite(o.logits).all() for o in outputs)


def test_default_discriminator():
    discriminator = AudioDiscriminator()
    assert discriminator.min_length == 1025  # the 2048-point STFT
    assert len(discriminator.period.discriminators) == 5
    assert len(discriminator.resolution.discriminators) == 3
    assert discriminator.band is None  # off until a quality run shows it earns its cost
    outputs = discriminator(torch.zeros(1, 1, 1025))  # silence: finite too
    assert len(outputs) == 8 and all(torch.isfinite(o.logits).all() for o in outputs)


def test_single_family_and_window():
    only_periods = tiny_discriminator(resolutions=())
    assert only_periods.resolution is None and only_periods.min_length == 5
    assert [o.kind for o in only_periods(tone(1, 5))] == ["period"] * 3
    hann = tiny_discriminator(periods=(), resolution_window="hann")
    assert hann.period is None and len(hann(tone(1, 300))) == 2


@pytest.mark.parametrize("overrides", [{}, {"band_windows": (128, 256), "band_channels": 4}])
def test_gradients_reach_the_input_and_every_parameter(overrides):
    discriminator = tiny_discriminator(**overrides)  # two families, or all three
    real = tone(2, 1500, seed=1)
    fake = tone(2, 1500, seed=2).requires_grad_(True)
    with torch.no_grad():
        real_outputs = discriminator(real)
    fake_outputs = discriminator(fake)
    loss = hinge_generator_loss_by_family(fake_outputs) + feature_matching_loss_by_family(
        real_outputs, fake_outputs
    )
    loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    assert fake.grad.abs().sum() > 0

    discriminator.zero_grad()
    loss = hinge_discriminator_loss_by_family(discriminator(real), discriminator(fake.detach()))
    loss.backward()
    for name, parameter in discriminator.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        # Biases may get exactly 0: with every logit inside the hinge margin, real and fake
        # patches push a bias by +1/N and −1/N through the same (linear) path, which cancel.
        # The weights see different inputs from real and fake audio.
        if not name.endswith("bias"):
            assert parameter.grad.abs().sum() > 0, name


def test_silent_audio_has_finite_gradients():
    discriminator = tiny_discriminator(band_windows=(128,), band_channels=4)
    silence = torch.zeros(1, 1, 600, requires_grad=True)
    hinge_generator_loss_by_family(discriminator(silence)).backward()
    assert torch.isfinite(silence.grad).all()


def test_feature_matching_is_zero_only_for_equal_features():
    discriminator = tiny_discriminator()
    audio = tone(2, 1200)
    same = feature_matching_loss_by_family(discriminator(audio), discriminator(audio.clone()))
    assert same.item() == 0.0
    other = feature_matching_loss_by_family(
        discriminator(audio), discriminator(tone(2, 1200, seed=3))
    )
    assert other.item() > 0


def test_feature_matching_detaches_the_real_side():
    discriminator = tiny_discriminator()
    real = tone(1, 800, seed=1).requires_grad_(True)
    fake = tone(1, 800, seed=2).requires_grad_(True)
    feature_matching_loss_by_family(discriminator(real), discriminator(fake)).backward()
    assert real.grad is None and fake.grad is not None


def output(kind: str, name: str, logit: float, feature: float = 0.0) -> DiscriminatorOutput:
    return DiscriminatorOutput(
        logits=torch.full((1, 1, 2, 2), logit),
        features=[torch.full((1, 2, 2, 2), feature)],
        kind=kind,
        name=name,
    )


def test_losses_average_within_a_family_and_sum_families():
    fake = [
        output("period", "period_2", -1.0, 1.0),
        output("period", "period_3", -3.0, 3.0),
        output("resolution", "resolution_1", 0.5, 2.0),
    ]
    real = [
        output("period", "period_2", 2.0),
        output("period", "period_3", 0.0),
        output("resolution", "resolution_1", 0.0),
    ]
    # Generator −E[D]: periods mean(1, 3) = 2, resolution −0.5.
    assert hinge_generator_loss_by_family(fake).item() == pytest.approx(1.5)
    assert hinge_generator_loss_by_family(fake, {"resolution": 0.1}).item() == pytest.approx(1.95)
    # Discriminator: period_2 0 + 0, period_3 1 + 0 -> mean 0.5; resolution 1 + 1.5 = 2.5.
    assert hinge_discriminator_loss_by_family(real, fake).item() == pytest.approx(3.0)
    # Feature matching, one layer each: periods mean(1, 3) = 2, resolution 2.
    assert feature_matching_loss_by_family(real, fake).item() == pytest.approx(4.0)
    assert feature_matching_loss_by_family(real, fake, {"period": 0.0}).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="'period', 'resolution', 'band', got 'mrd'"):
        hinge_generator_loss_by_family(fake, {"mrd": 0.1})
    # The task logs each family's share (`_per_family`): the shares add up to the whole.
    from mediatok.training.tasks.audio_codec import _per_family

    for loss, outputs in [
        (hinge_generator_loss_by_family, (fake,)),
        (hinge_discriminator_loss_by_family, (real, fake)),
        (feature_matching_loss_by_family, (real, fake)),
    ]:
        shares = _per_family(loss, *outputs)
        assert list(shares) == ["period", "resolution"]
        assert sum(shares.values()).item() == pytest.approx(loss(*outputs).item())


def test_losses_reject_mismatched_outputs():
    real = [output("period", "period_2", 0.0), output("period", "period_3", 0.0)]
    with pytest.raises(ValueError, match="same sub-discriminators"):
        hinge_discriminator_loss_by_family(real, real[::-1])
    with pytest.raises(ValueError, match="at least one"):
        hinge_generator_loss_by_family([])
    with pytest.raises(TypeError, match="list of DiscriminatorOutput"):
        hinge_generator_loss_by_family(real[0])
    short = tiny_discriminator()(tone(1, 700))
    long = tiny_discriminator()(tone(1, 900))
    with pytest.raises(ValueError, match="one shape"):
        feature_matching_loss_by_family(short, long)


def test_mel_loss_zero_grows_with_noise_and_handles_silence():
    mel = MultiScaleMelLoss(SAMPLE_RATE, MEL_SCALES)
    clean = tone(2, 4000)
    assert mel(clean, clean.clone()).item() == 0.0
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    distances = [mel(clean + level * noise, clean).item() for level in (0.003, 0.03, 0.3)]
    assert 0 < distances[0] < distances[1] < distances[2]

    silence = torch.zeros(2, 1, 4000, requires_grad=True)
    assert mel(silence, torch.zeros(2, 1, 4000)).item() == 0.0
    loss = mel(silence, clean)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(silence.grad).all()


def test_mel_loss_gradient_and_layouts():
    mel = MultiScaleMelLoss(SAMPLE_RATE, MEL_SCALES)
    prediction = tone(2, 3000, seed=1).requires_grad_(True)
    target = tone(2, 3000, seed=2)
    loss = mel(prediction, target)
    loss.backward()
    assert prediction.grad.abs().sum() > 0
    # (B, S) and (B, 1, S) give one value; the transforms are built once, as submodules.
    assert mel(prediction[:, 0], target[:, 0]).item() == pytest.approx(loss.item())
    assert len(mel.spectrograms) == len(MEL_SCALES)


def test_default_mel_scales_build_without_empty_filters():
    # 50 / 100 / 200 bands at 512 / 1024 / 2048 points leave no empty filter from 16 to 48 kHz.
    for sample_rate in (16000, 24000, 44100, 48000):
        assert MultiScaleMelLoss(sample_rate).min_length == 1025
    assert DEFAULT_MEL_SCALES[1] == (1024, 256, 100)  # the eval setting of Vocos / WavTokenizer
    with pytest.raises(ValueError, match=r"empty filter.*n_mels=120, n_fft=256 at 24000 Hz"):
        MultiScaleMelLoss(24000, ((256, 64, 120),))


def test_bf16_autocast_gives_finite_fp32_losses():
    discriminator = tiny_discriminator(band_windows=(128,), band_channels=4)
    mel = MultiScaleMelLoss(SAMPLE_RATE, MEL_SCALES)
    real = tone(2, 2000, seed=1)
    fake = tone(2, 2000, seed=2).requires_grad_(True)
    reference = mel(fake, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real_outputs, fake_outputs = discriminator(real), discriminator(fake)
        losses = [
            hinge_discriminator_loss_by_family(real_outputs, fake_outputs),
            hinge_generator_loss_by_family(fake_outputs),
            feature_matching_loss_by_family(real_outputs, fake_outputs),
            mel(fake, real),
        ]
        # The spectrograms the resolution and band discriminators see are fp32 under autocast.
        magnitude = discriminator.resolution.discriminators[0].magnitude(fake)
        spectrum = discriminator.band.discriminators[0].spectrum(fake)
    assert fake_outputs[0].logits.dtype == torch.bfloat16  # convolutions follow autocast
    assert fake_outputs[-1].logits.dtype == torch.bfloat16
    assert magnitude.dtype == spectrum.dtype == torch.float32
    for loss in losses:
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert losses[-1].item() == pytest.approx(reference.item(), rel=1e-6)  # mel ran in fp32
    sum(losses).backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def test_too_short_audio_names_the_minimum():
    with pytest.raises(ValueError, match=r"at least 129 samples.*256-point STFT.*got 128"):
        tiny_discriminator()(tone(1, 128))
    with pytest.raises(ValueError, match=r"at least 1025 samples.*got 1024"):
        AudioDiscriminator()(torch.zeros(1, 1, 1024))
    with pytest.raises(ValueError, match=r"at least 11 samples.*period 11.*got 10"):
        MultiPeriodDiscriminator((2, 11), (4,))(torch.zeros(1, 1, 10))
    with pytest.raises(ValueError, match="at least 65 samples"):
        MultiResolutionDiscriminator(((128, 32, 128),), 4)(torch.zeros(1, 1, 64))
    with pytest.raises(ValueError, match=r"at least 129 samples.*got 100"):
        MultiScaleMelLoss(SAMPLE_RATE, MEL_SCALES)(torch.zeros(1, 1, 100), torch.zeros(1, 1, 100))


def test_bad_input_shapes_raise():
    discriminator = tiny_discriminator()
    with pytest.raises(ValueError, match=r"\(B, 1, S\), got \(2, 1000\)"):
        discriminator(torch.zeros(2, 1000))
    with pytest.raises(TypeError, match="float audio"):
        discriminator(torch.zeros(1, 1, 1000, dtype=torch.int16))
    mel = MultiScaleMelLoss(SAMPLE_RATE, MEL_SCALES)
    with pytest.raises(ValueError, match="one shape"):
        mel(torch.zeros(1, 1, 500), torch.zeros(1, 1, 501))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"periods": (), "resolutions": ()}, "at least one period, resolution or band"),
        ({"periods": (2, 0)}, r"periods\[1\] to be a positive integer, got 0"),
        ({"periods": (2, 3, 2)}, "distinct periods"),
        ({"period_channels": ()}, "period_channels to hold at least one"),
        ({"period_channels": (8, -1)}, r"period_channels\[1\] to be a positive integer"),
        ({"resolutions": ((128, 32),)}, r"resolutions\[0\] as \(n_fft, hop_length, win_length\)"),
        ({"resolutions": ((128, 0, 128),)}, "hop_length to be a positive integer, got 0"),
        ({"resolutions": ((128, 32, 256),)}, "win_length <= n_fft, got 256 > 128"),
        ({"resolution_channels": 0}, "resolution_channels to be a positive integer"),
        ({"resolution_window": "hamming"}, "'rectangular', 'hann', got 'hamming'"),
        ({"band_windows": (128, 0)}, r"band_windows\[1\] to be a positive integer, got 0"),
        ({"band_windows": (2,)}, r"band_windows\[0\] >= 4 \(hop = window // 4\), got 2"),
        ({"band_windows": (128, 256, 128)}, "distinct band_windows"),
        ({"band_windows": (8,)}, r"none in band \(0.0, 0.1\) of the 8-point STFT \(5 bins\)"),
        ({"band_edges": (0.0,)}, "band_edges to hold at least two fractions"),
        ({"band_edges": (0.0, 0.5)}, r"band_edges from 0 to 1 .*got \(0.0, 0.5\)"),
        ({"band_edges": (0.1, 1.0)}, "band_edges from 0 to 1"),
        ({"band_edges": (0.0, 0.5, 0.4, 1.0)}, "strictly increasing band_edges"),
        ({"band_edges": (0.0, "half", 1.0)}, r"band_edges\[1\] to be a number, got 'half'"),
        ({"band_channels": 0}, "band_channels to be a positive integer"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        AudioDiscriminatorConfig(**{**TINY.__dict__, **overrides})


def test_mel_loss_validation():
    with pytest.raises(ValueError, match="sample_rate to be a positive integer, got 0"):
        MultiScaleMelLoss(0)
    with pytest.raises(ValueError, match="at least one"):
        MultiScaleMelLoss(SAMPLE_RATE, ())
    with pytest.raises(ValueError, match=r"hop_length of scale .* got 0"):
        MultiScaleMelLoss(SAMPLE_RATE, ((256, 0, 32),))


def test_state_dict_round_trip_through_safetensors(tmp_path):
    discriminator = tiny_discriminator()
    path = tmp_path / "discriminator.safetensors"
    save_file({k: v.contiguous() for k, v in discriminator.state_dict().items()}, path)
    torch.manual_seed(1)  # a different initialization, overwritten by the load
    fresh = AudioDiscriminator(TINY)
    fresh.load_state_dict(load_file(path))
    audio = tone(1, 700)
    for a, b in zip(discriminator(audio), fresh(audio), strict=True):
        torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)


# The band family (DAC's multi-band complex STFT discriminator), small: two windows, 4 wide.
BAND_WINDOWS = (128, 256)
BANDS_ONLY = {"periods": (), "resolutions": (), "band_windows": BAND_WINDOWS, "band_channels": 4}


@pytest.mark.parametrize(("batch", "length"), [(1, 129), (3, 1001), (2, 2311)])
def test_band_outputs_shapes_and_features(batch, length):
    discriminator = tiny_discriminator(**BANDS_ONLY)
    assert discriminator.min_length == 129  # a centred 256-point STFT
    outputs = discriminator(tone(batch, length))
    assert [(o.kind, o.name) for o in outputs] == [("band", "band_128"), ("band", "band_256")]
    for window, output in zip(BAND_WINDOWS, outputs, strict=True):
        frames = length // (window // 4) + 1  # time is never strided
        bands = band_bins(window, DEFAULT_BAND_EDGES)
        assert len(output.features) == 5 * len(bands)  # five layers per band, band by band
        features = iter(output.features)
        logit_bins = 0
        for start, stop in bands:
            bins = stop - start
            for stride in (1, 2, 2, 2, 1):
                bins = ceil_div(bins, stride)
                assert next(features).shape == (batch, 4, bins, frames)
            logit_bins += bins
        assert output.logits.shape == (batch, 1, logit_bins, frames)
        assert torch.isfinite(output.logits).all()


def test_bands_cover_the_frequency_axis_without_gap_or_overlap():
    for edges in (DEFAULT_BAND_EDGES, (0.0, 0.5, 1.0), (0, 0.3, 0.31, 0.9, 1)):
        for window in (64, 128, 1000, *DAC_BAND_WINDOWS):
            bands = band_bins(window, edges)
            assert len(bands) == len(edges) - 1
            assert bands[0][0] == 0 and bands[-1][1] == window // 2 + 1
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
            assert all(stop > start for start, stop in bands)
    # DAC's bins at 2048 points: the edges times 1025 bins, rounded down.
    assert band_bins(2048, DEFAULT_BAND_EDGES) == [
        (0, 102),
        (102, 256),
        (256, 512),
        (512, 768),
        (768, 1025),
    ]


def test_every_bin_reaches_exactly_its_own_band(monkeypatch):
    sub = MultiBandDiscriminator((128,), DEFAULT_BAND_EDGES, 4).discriminators[0]
    audio = tone(1, 700)
    spectrum = sub.spectrum(audio)  # (1, 2, 65, 23)
    reference = sub(audio).features[::5]  # the first layer of every band
    for index in range(spectrum.shape[2]):
        changed = spectrum.clone()
        changed[:, :, index] += 1.0
        monkeypatch.setattr(sub, "spectrum", lambda _audio, changed=changed: changed)
        features = sub(audio).features[::5]
        hit = [b for b, (x, y) in enumerate(zip(features, reference, strict=True)) if x.ne(y).any()]
        owner = [b for b, (start, stop) in enumerate(sub.bands) if start <= index < stop]
        assert hit == owner and len(owner) == 1, index


def test_band_discriminator_needs_long_enough_audio():
    with pytest.raises(ValueError, match=r"at least 129 samples.*256-point STFT.*got 128"):
        tiny_discriminator(**BANDS_ONLY)(tone(1, 128))
    with pytest.raises(ValueError, match="at least one band window"):
        MultiBandDiscriminator(())


def test_codec_task_step_with_all_three_families():
    from mediatok.training.tasks import AudioCodecTask, AudioDataConfig, AudioLossConfig

    bands = {"band_windows": BAND_WINDOWS, "band_channels": 4}
    loss = AudioLossConfig(discriminator=AudioDiscriminatorConfig(**{**TINY.__dict__, **bands}))
    task = AudioCodecTask("wavtokenizer", TINY_WAVTOKENIZER, AudioDataConfig(), loss)
    torch.manual_seed(0)
    codec = task.build_model()
    discriminator = task.build_discriminator()
    assert discriminator.band is not None
    batch = {"audio": tone(2, 4800).clamp(-1, 1)}  # 0.2 s at 24 kHz

    # The codec's pass, the discriminator frozen as the loop does.
    discriminator.requires_grad_(False)
    loss, logs = task.losses(codec, batch, step=0)
    loss.backward()
    for name in ("adversarial", "feature_matching"):
        families = [logs[f"{name}_{kind}"] for kind in ("period", "resolution", "band")]
        assert torch.isfinite(torch.stack(families)).all()
        torch.testing.assert_close(sum(families), logs[name])
    assert all(p.grad is None for p in discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.parameters())

    # The discriminator's pass: every band stack learns.
    discriminator.requires_grad_(True)
    loss, logs = task.discriminator_losses(codec, discriminator, batch, step=0)
    loss.backward()
    families = [logs[f"discriminator_hinge_{kind}"] for kind in ("period", "resolution", "band")]
    torch.testing.assert_close(sum(families), logs["discriminator_hinge"])
    for name, parameter in discriminator.band.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        if not name.endswith("bias"):  # see test_gradients_reach_the_input_and_every_parameter
            assert parameter.grad.abs().sum() > 0, name
