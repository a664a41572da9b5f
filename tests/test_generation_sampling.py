"""`SampleSettings` and `SampleConfig`: the one check of sampling settings, and what depends on
the generator (`check_for`). The draw helpers are tested in test_generation_ar.py."""

from __future__ import annotations

import dataclasses

import pytest

from mediatok.config import ConfigError, apply_overrides, from_dict, to_dict
from mediatok.generation import GeneratedCodes, SampleConfig, SampleSettings
from mediatok.generation.sampling import MASKED_STEPS


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"temperature": float("inf")},
            r"expected a finite temperature >= 0 \(0: greedy\), got inf",
        ),
        ({"temperature": -1.0}, r"expected a finite temperature >= 0 \(0: greedy\), got -1.0"),
        ({"temperature": "hot"}, r"expected a finite temperature >= 0 \(0: greedy\), got hot"),
        ({"cfg_scale": float("nan")}, r"expected a finite cfg_scale \(1: no guidance\), got nan"),
        ({"cfg_schedule": "cosine"}, "expected cfg_schedule to be one of 'constant', 'linear'"),
        ({"top_k": 0}, "expected top_k >= 1 or None, got 0"),
        ({"top_k": 2.5}, "expected top_k >= 1 or None, got 2.5"),
        ({"top_p": 0.0}, r"expected top_p in \(0, 1\] or None, got 0.0"),
        ({"top_p": float("nan")}, r"expected top_p in \(0, 1\] or None, got nan"),
        ({"steps": 0}, "expected steps to be an int >= 1 or None, got 0"),
        ({"steps": True}, "expected steps to be an int >= 1 or None, got True"),
        (
            {"choice_temperature": float("inf")},
            "expected a finite choice_temperature >= 0, got inf",
        ),
        ({"choice_temperature": -0.5}, "expected a finite choice_temperature >= 0, got -0.5"),
        ({"compile": "fast"}, "expected compile True, False or one of 'default', .*got 'fast'"),
    ],
)
def test_every_bad_value_is_refused_where_it_enters(settings, message):
    with pytest.raises(ValueError, match=message):
        SampleSettings(**settings)
    with pytest.raises(ValueError, match=message):
        SampleConfig(**settings)


def test_good_values_pass_and_the_settings_are_frozen():
    settings = SampleSettings(
        cfg_scale=-2.0,  # any finite scale guides
        cfg_schedule="linear",
        temperature=0.0,
        top_k=1,
        top_p=1.0,
        steps=1,
        choice_temperature=0.0,
        compile="reduce-overhead",
    )
    assert settings.masked_steps == 1
    assert SampleSettings().masked_steps == MASKED_STEPS == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.temperature = 2.0


def test_check_for_holds_the_checks_that_depend_on_the_generator():
    SampleSettings(top_p=0.9, compile=True).check_for("ar", num_tokens=4, conditional=False)
    SampleSettings(steps=4, cfg_scale=2.0).check_for("masked", num_tokens=4, conditional=True)
    cases = [
        (
            SampleSettings(steps=4),
            "ar",
            r"expected no steps for an 'ar' generator \(steps, --steps on the command line, "
            r"are the decoding steps of masked generators only\), got steps=4",
        ),
        (SampleSettings(compile=True), "masked", "expected compile: false for a masked generator"),
        (SampleSettings(compile="default"), "masked", r"\(AR only\), got 'default'"),
        (
            SampleSettings(top_p=0.9),
            "masked",
            r"expected top_p: null for a masked generator \(AR only\), got 0.9",
        ),
        (SampleSettings(steps=17), "masked", r"expected steps to be an int in \[1, 16\], got 17"),
        (SampleSettings(cfg_scale=2.0), "ar", r"for CFG, got cfg_scale=2.0, cfg_schedule="),
        (SampleSettings(cfg_scale=0.5), "masked", r"expected labels \(of a class-conditional"),
    ]
    for settings, generator, message in cases:
        with pytest.raises(ValueError, match=message):
            settings.check_for(generator, num_tokens=16, conditional=False)
    # the default steps count against the token count too
    with pytest.raises(ValueError, match=r"expected steps to be an int in \[1, 6\], got 8"):
        SampleSettings().check_for("masked", num_tokens=6, conditional=False)
    with pytest.raises(ValueError, match="expected generator to be one of 'ar', 'masked'"):
        SampleSettings().check_for("gpt", num_tokens=6, conditional=False)
    # guidance at scale 1 is none, whatever the schedule: no labels needed
    SampleSettings(cfg_schedule="linear").check_for("ar", num_tokens=6, conditional=False)


def test_sample_config_is_a_strict_config_section():
    config = from_dict(SampleConfig, {"cfg_scale": 2, "top_k": 50, "num_samples": 6})
    assert config.cfg_scale == 2.0 and isinstance(config.cfg_scale, float)
    assert to_dict(config)["num_samples"] == 6
    overridden = apply_overrides(config, ["temperature=0.5", "compile=true", "precision=bf16"])
    assert (overridden.temperature, overridden.compile, overridden.precision) == (0.5, True, "bf16")
    assert overridden.cfg_scale == 2.0  # untouched fields are kept
    assert apply_overrides(config, ["compile=default"]).compile == "default"
    with pytest.raises(ConfigError, match="did you mean 'top_k'"):
        from_dict(SampleConfig, {"topk": 5})
    with pytest.raises(ValueError, match="finite temperature"):
        apply_overrides(config, ["temperature=.inf"])  # the checks run again
    with pytest.raises(ValueError, match="expected num_samples >= 1, got 0"):
        SampleConfig(num_samples=0)
    with pytest.raises(ValueError, match="expected precision to be one of 'auto', 'bf16', 'fp32'"):
        SampleConfig(precision="fp16")
    # the settings alone, for `generate`
    settings = overridden.settings()
    assert type(settings) is SampleSettings
    fields = {field.name for field in dataclasses.fields(SampleSettings)}
    assert dataclasses.asdict(settings) == {
        name: value for name, value in dataclasses.asdict(overridden).items() if name in fields
    }
    assert fields == set(dataclasses.asdict(overridden)) - {"num_samples", "precision"}


def test_generated_codes_unpack_as_codes_and_lengths():
    codes, lengths = GeneratedCodes(codes="c")
    assert (codes, lengths) == ("c", None)
    assert GeneratedCodes("c", "l").lengths == "l"
