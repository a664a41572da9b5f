"""Tests for mediatok.config: strict dataclass configs from mappings, YAML files and overrides."""

# Annotations are strings here on purpose: config.py must resolve them with get_type_hints.
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from mediatok.config import (
    ConfigError,
    apply_overrides,
    check_choice,
    config_hash,
    from_dict,
    load_config,
    to_dict,
)


@dataclass
class VQConfig:
    codebook_size: int = 512
    dim: int = 8
    decay: float = 0.99
    use_ema: bool = True
    distance: Literal["l2", "cosine"] = "l2"
    levels: tuple[int, ...] = (8, 5, 5)

    def __post_init__(self) -> None:
        if self.codebook_size < 2:
            raise ValueError(f"expected codebook_size >= 2, got {self.codebook_size}")


@dataclass
class ModelConfig:
    channels: int  # required: no default
    quantizer: VQConfig = field(default_factory=VQConfig)
    discriminator: VQConfig | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    strides: list[int] = field(default_factory=lambda: [2, 2])
    name: str | None = None


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(channels=3))
    seed: int = 0
    out_dir: Path = Path("runs")


@dataclass
class SweepConfig:
    baseline: ModelConfig | None = None  # a section with a required field and no default


# --------------------------------------------------------------------------------------------
# from_dict


def test_from_dict_defaults_and_values() -> None:
    config = from_dict(VQConfig, {"codebook_size": 1024, "distance": "cosine"})
    assert config == VQConfig(codebook_size=1024, distance="cosine")


def test_from_dict_nested_dataclasses() -> None:
    config = from_dict(
        RunConfig,
        {"model": {"channels": 1, "quantizer": {"dim": 4}, "discriminator": {"use_ema": False}}},
    )
    assert config.model.channels == 1
    assert config.model.quantizer == VQConfig(dim=4)
    assert config.model.discriminator == VQConfig(use_ema=False)
    # A nested dataclass that is already built is accepted as is.
    built = from_dict(ModelConfig, {"channels": 2, "quantizer": VQConfig(dim=16)})
    assert built.quantizer.dim == 16


def test_unknown_key_names_path_class_and_closest_key() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"model": {"channels": 3, "quantizer": {"codebok_size": 4}}})
    message = str(info.value)
    assert "unknown key 'model.quantizer.codebok_size' for VQConfig" in message
    assert "did you mean 'codebook_size'?" in message
    assert "valid keys: codebook_size, dim, decay, use_ema, distance, levels" in message


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' for VQConfig; valid keys: ") as info:
        from_dict(VQConfig, {"zzz": 1})
    assert "did you mean" not in str(info.value)


def test_where_prefixes_paths() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'model\.quantizer\.dimm'"):
        from_dict(VQConfig, {"dimm": 3}, where="model.quantizer")


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(ConfigError, match=r"missing required key\(s\) 'channels' for ModelConfig"):
        from_dict(ModelConfig, {"quantizer": {}})
    with pytest.raises(ConfigError, match=r"missing required key\(s\) 'baseline\.channels'"):
        from_dict(SweepConfig, {"baseline": {"strides": [2]}})


def test_nested_mapping_merges_onto_default_section() -> None:
    # RunConfig's default model has channels=3: a file naming only model.quantizer keeps it,
    # because configs hold only what differs from the defaults.
    config = from_dict(RunConfig, {"model": {"quantizer": {"dim": 4}}})
    assert config.model == ModelConfig(channels=3, quantizer=VQConfig(dim=4))


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"codebook_size": "512"}, r"codebook_size: expected int, got '512' \(str\)"),
        ({"codebook_size": 512.0}, r"codebook_size: expected int, got 512\.0 \(float\)"),
        # bool is an int subclass in Python; a config must not confuse them.
        ({"codebook_size": True}, r"codebook_size: expected int, got True \(bool\)"),
        ({"decay": "0.9"}, r"decay: expected float, got '0\.9' \(str\)"),
        ({"decay": False}, r"decay: expected float, got False \(bool\)"),
        ({"dim": None}, r"dim: expected int, got None \(NoneType\)"),
        ({"levels": "888"}, r"levels: expected tuple\[int, \.\.\.\], got '888' \(str\)"),
        ({"levels": [8, "5"]}, r"levels\[1\]: expected int, got '5' \(str\)"),
    ],
)
def test_type_errors_name_path_expected_and_value(data: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_dict(VQConfig, data)


@pytest.mark.parametrize("value", [1, 0, "true", "yes", None])
def test_bool_accepts_only_bools(value: object) -> None:
    with pytest.raises(ConfigError, match=r"use_ema: expected bool"):
        from_dict(VQConfig, {"use_ema": value})
    assert from_dict(VQConfig, {"use_ema": False}).use_ema is False


def test_int_is_accepted_and_converted_for_float() -> None:
    config = from_dict(VQConfig, {"decay": 1})
    assert config.decay == 1.0
    assert type(config.decay) is float


def test_literal_error_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"distance: expected one of 'l2', 'cosine', got 'l1'"):
        from_dict(VQConfig, {"distance": "l1"})


def test_sequences_convert_to_annotated_type() -> None:
    config = from_dict(ModelConfig, {"channels": 3, "quantizer": {"levels": [4, 4]}})
    assert config.quantizer.levels == (4, 4)
    assert isinstance(config.quantizer.levels, tuple)
    config = from_dict(ModelConfig, {"channels": 3, "strides": (4, 2)})
    assert config.strides == [4, 2]
    assert isinstance(config.strides, list)


def test_optional_dict_and_path_fields() -> None:
    config = from_dict(
        RunConfig,
        {
            "model": {"channels": 1, "name": None, "loss_weights": {"mel": 45, "adv": 1.0}},
            "out_dir": "/tmp/x",
        },
    )
    assert config.model.name is None
    assert config.model.loss_weights == {"mel": 45.0, "adv": 1.0}
    assert config.out_dir == Path("/tmp/x")
    with pytest.raises(ConfigError, match=r"model\.loss_weights\.mel: expected float"):
        from_dict(ModelConfig, {"channels": 1, "loss_weights": {"mel": "high"}}, where="model")
    with pytest.raises(ConfigError, match=r"model\.name: expected str \| None, got 3 \(int\)"):
        from_dict(RunConfig, {"model": {"channels": 1, "name": 3}})


def test_optional_dataclass_reports_the_nested_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'discriminator\.decy'.*'decay'"):
        from_dict(ModelConfig, {"channels": 1, "discriminator": {"decy": 0.5}})


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"model\.quantizer: expected VQConfig, got 3 \(int\)"):
        from_dict(RunConfig, {"model": {"channels": 1, "quantizer": 3}})
    with pytest.raises(ConfigError, match=r"expected a mapping for VQConfig, got \[1\] \(list\)"):
        from_dict(VQConfig, [1])  # type: ignore[arg-type]


def test_post_init_value_error_becomes_config_error_with_path() -> None:
    with pytest.raises(ConfigError, match=r"model\.quantizer: invalid VQConfig: expected codebook"):
        from_dict(RunConfig, {"model": {"channels": 1, "quantizer": {"codebook_size": 1}}})


def test_init_false_fields_are_not_settable() -> None:
    @dataclass
    class Derived:
        size: int = 2
        area: int = field(init=False)

        def __post_init__(self) -> None:
            self.area = self.size * self.size

    assert from_dict(Derived, {"size": 3}).area == 9
    with pytest.raises(ConfigError, match="unknown key 'area'"):
        from_dict(Derived, {"area": 4})
    assert to_dict(Derived(size=3)) == {"size": 3}


def test_from_dict_rejects_non_dataclass() -> None:
    with pytest.raises(TypeError, match="expected a dataclass type"):
        from_dict(dict, {})


# --------------------------------------------------------------------------------------------
# to_dict, config_hash


def test_to_dict_is_json_ready_and_round_trips() -> None:
    config = RunConfig(model=ModelConfig(channels=2, discriminator=VQConfig(levels=(3, 3))))
    data = to_dict(config)
    assert data["model"]["quantizer"]["levels"] == [8, 5, 5]
    assert data["model"]["discriminator"]["levels"] == [3, 3]
    assert data["out_dir"] == "runs"
    assert json.loads(json.dumps(data)) == data
    assert from_dict(RunConfig, data) == config


def test_config_hash_is_sha256_of_canonical_json() -> None:
    import hashlib

    config = VQConfig()
    canonical = json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"))
    assert config_hash(config) == hashlib.sha256(canonical.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", config_hash(config))


def test_config_hash_is_stable_and_sensitive() -> None:
    base = RunConfig()
    assert config_hash(base) == config_hash(RunConfig())
    # The same values reached another way (a YAML int for a float) hash the same.
    assert config_hash(from_dict(VQConfig, {"decay": 1})) == config_hash(VQConfig(decay=1.0))
    changed = [
        apply_overrides(base, ["seed=1"]),
        apply_overrides(base, ["model.quantizer.levels=[8, 5]"]),
        apply_overrides(base, ["model.quantizer.decay=0.98"]),
        apply_overrides(base, ["model.discriminator={dim: 8}"]),
    ]
    hashes = {config_hash(base), *(config_hash(c) for c in changed)}
    assert len(hashes) == 1 + len(changed)


def test_config_hash_is_pinned() -> None:
    # Token shards store this hash: a change to the canonical form would orphan every shard
    # written before it, so pin one value (it also proves the hash does not vary between runs).
    assert (
        config_hash(VQConfig())
        == "e72f4e4227b7d3cb3bda30518ba70ad152442d9d5e81b6956acdfc935f79b911"
    )


# --------------------------------------------------------------------------------------------
# apply_overrides


def test_overrides_parse_yaml_values() -> None:
    base = RunConfig()
    config = apply_overrides(
        base,
        [
            "seed=3",
            "model.quantizer.decay=0.5",
            "model.quantizer.use_ema=false",
            "model.quantizer.levels=[8, 8, 8]",
            "model.quantizer.distance=cosine",
            "model.name=encoder one",
            "model.loss_weights.mel=45",
            "out_dir=/data/run",
        ],
    )
    assert config.seed == 3
    assert config.model.quantizer == VQConfig(
        decay=0.5, use_ema=False, levels=(8, 8, 8), distance="cosine"
    )
    assert config.model.name == "encoder one"
    assert config.model.loss_weights == {"mel": 45.0}
    assert config.out_dir == Path("/data/run")
    # Later overrides win; null sets an optional field back to None.
    assert apply_overrides(config, ["seed=4", "seed=5"]).seed == 5
    assert apply_overrides(config, ["model.name=null"]).model.name is None


def test_overrides_do_not_mutate_input() -> None:
    base = RunConfig()
    snapshot = to_dict(base)
    config = apply_overrides(base, ["model.quantizer.dim=32", "model.loss_weights.adv=1"])
    assert to_dict(base) == snapshot
    assert config.model.quantizer.dim == 32
    assert config is not base


def test_override_can_set_an_optional_section_as_a_mapping() -> None:
    config = apply_overrides(RunConfig(), ["model.discriminator={dim: 4}"])
    assert config.model.discriminator == VQConfig(dim=4)
    # Once the section exists, its keys can be set one by one.
    config = apply_overrides(config, ["model.discriminator.dim=6"])
    assert config.model.discriminator == VQConfig(dim=6)
    # A mapping for an existing section changes only the keys it names.
    config = apply_overrides(config, ["model.discriminator={decay: 0.5}"])
    assert config.model.discriminator == VQConfig(dim=6, decay=0.5)


def test_overrides_reach_into_free_form_mappings() -> None:
    # A codec run's `model` is a free-form mapping: its nested options must be settable
    # (`model.quantizer.options.codebook_size=512` was "not a config section").
    @dataclass
    class Run:
        model: dict[str, Any] = field(
            default_factory=lambda: {"quantizer": {"kind": "vq", "options": {"codebook_size": 8}}}
        )

    config = apply_overrides(
        Run(),
        ["model.quantizer.options.codebook_size=512", "model.quantizer.options.decay=0.9"],
    )
    assert config.model["quantizer"] == {
        "kind": "vq",
        "options": {"codebook_size": 512, "decay": 0.9},
    }
    assert Run().model["quantizer"]["options"] == {"codebook_size": 8}  # not mutated
    with pytest.raises(ConfigError, match=r"no entry 'optoins'; entries: kind, options"):
        apply_overrides(Run(), ["model.quantizer.optoins.decay=0.9"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("seed", r"override 'seed': expected 'key\.sub=value'"),
        ("=3", r"override '=3': expected 'key\.sub=value'"),
        (
            "model.quantizer.codebok_size=4",
            r"unknown key 'model\.quantizer\.codebok_size' for VQConfig; "
            r"did you mean 'codebook_size'\?",
        ),
        ("modle.channels=4", r"unknown key 'modle' for RunConfig; did you mean 'model'\?"),
        ("model.quantizer.use_ema=1", r"model\.quantizer\.use_ema: expected bool, got 1 \(int\)"),
        ("model.quantizer.levels=8", r"levels: expected tuple\[int, \.\.\.\], got 8 \(int\)"),
        ("model.quantizer.distance=l1", r"expected one of 'l2', 'cosine', got 'l1'"),
        ("model.quantizer.levels=[8, 8", r"value is not valid YAML"),
        ("model.discriminator.dim=4", r"'model\.discriminator' is None; set the whole section"),
        ("seed.value=4", r"cannot set 'seed\.value': 'seed' holds 0 \(int\), not a config"),
        ("model.quantizer.codebook_size=1", r"invalid VQConfig: expected codebook_size >= 2"),
    ],
)
def test_bad_overrides_raise(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(RunConfig(), [override])


def test_overrides_reject_a_single_string() -> None:
    with pytest.raises(TypeError, match="single str"):
        apply_overrides(RunConfig(), "seed=1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# load_config


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_holds_only_differences(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  quantizer:\n    codebook_size: 4096\n    levels: [4, 4]\n")
    config = load_config(RunConfig, path)
    assert config == RunConfig(
        model=ModelConfig(channels=3, quantizer=VQConfig(codebook_size=4096, levels=(4, 4)))
    )


def test_load_config_applies_overrides_after_file(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nmodel: {quantizer: {dim: 4}}\n")
    config = load_config(RunConfig, path, ["seed=2", "model.quantizer.decay=0.9"])
    assert (config.seed, config.model.quantizer.dim, config.model.quantizer.decay) == (2, 4, 0.9)


def test_load_config_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(RunConfig, write(tmp_path, "# nothing differs\n")) == RunConfig()


def test_load_config_unknown_key_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  quantizer:\n    codebok_size: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, path)
    assert str(info.value).startswith(f"{path}: unknown key 'model.quantizer.codebok_size'")
    assert "did you mean 'codebook_size'?" in str(info.value)


def test_load_config_type_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: one\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: seed: expected int, got 'one'")):
        load_config(RunConfig, path)


def test_load_config_relative_path_is_named_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", "sed: 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: unknown key 'sed'.*'seed'"):
        load_config(RunConfig, "configs/x.yaml")


@pytest.mark.parametrize("text", ["- seed\n- 1\n", "just a string\n", "3\n"])
def test_load_config_top_level_must_be_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: expected a mapping")):
        load_config(RunConfig, path)


def test_load_config_yaml_syntax_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  quantizer: {dim: 4\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid YAML")):
        load_config(RunConfig, path)


def test_load_config_rejects_duplicate_keys(tmp_path: Path) -> None:
    # Plain PyYAML keeps the last of two equal keys; a strict config must not.
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid YAML")) as info:
        load_config(RunConfig, path)
    assert "duplicate key 'seed'" in str(info.value)


def test_load_config_bad_override_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match=r"override 'sed=2': unknown key 'sed'"):
        load_config(RunConfig, path, ["sed=2"])


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(RunConfig, tmp_path / "absent.yaml")


# --------------------------------------------------------------------------------------------
# check_choice


def test_check_choice() -> None:
    check_choice("distance", "l2", ("l2", "cosine"))
    with pytest.raises(
        ValueError, match=r"expected distance to be one of 'l2', 'cosine', got 'l1'"
    ):
        check_choice("distance", "l1", ("l2", "cosine"))


def test_dataclass_replace_is_what_overrides_build_on() -> None:
    # apply_overrides rebuilds with dataclasses.replace, so frozen configs work too.
    @dataclass(frozen=True)
    class Frozen:
        size: int = 1

    assert apply_overrides(Frozen(), ["size=2"]) == dataclasses.replace(Frozen(), size=2)
