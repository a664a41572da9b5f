"""Every YAML under configs/ loads strictly and builds its model (on the meta device: no memory)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mediatok.codecs import build_codec
from mediatok.config import load_config
from mediatok.generation import build_generator
from mediatok.tokens import TokenSpec
from mediatok.training.run import load_run_config
from mediatok.training.tasks import ImageCodecRunConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_loads_and_builds(path):
    config = load_run_config(path)
    if config.task == "generator":  # the spec comes from shards: a stand-in; built on the CPU
        window = config.data.window or 128
        model = build_generator(config.generator, config.model, TokenSpec([4096]), (window,))
        assert sum(p.numel() for p in model.parameters()) > 0
        return
    with torch.device("meta"):
        codec = build_codec(config.codec, config.model)
    assert codec.token_spec.vocab_sizes


def test_paper_sizes():
    root = CONFIGS[0].parents[1]
    expected = {
        "titok-s-128.yaml": (512, 128),
        "titok-b-64.yaml": (768, 64),
        "titok-l-32.yaml": (1024, 32),
    }
    for name, (width, tokens) in expected.items():
        model = load_config(ImageCodecRunConfig, root / "image" / name).model
        with torch.device("meta"):
            codec = build_codec("titok", model)
        assert (codec.config.width, codec.config.num_tokens) == (width, tokens)
