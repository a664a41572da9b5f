"""Generators over token shards: autoregressive (`ar`) and masked (`masked`) transformers.

A generator knows only a `TokenSpec`, never a codec class (DESIGN.md § Layers): one code path
serves 1-D image tokens, 2-D grids, residual levels and audio tokens. Both speak one dialect:
`build_<kind>(config, spec, token_shape)` builds one (`build_generator(name, ...)` by registry
name), calling the model is the training loss (`model(codes, labels, lengths)`), and
`model.generate(num_samples, labels, settings)` returns `GeneratedCodes`, the settings being a
`SampleSettings` that checked its values where they entered. `load_generator(path)` loads a
checkpoint that `mediatok train` wrote (`read_generator_run(path)`: what it records).
"""

from __future__ import annotations

from mediatok.generation.ar import (
    ARConfig,
    ARTransformer,
    build_ar_transformer,
    resolve_variable_length,
)
from mediatok.generation.engine import ARDecodeEngine
from mediatok.generation.load import GeneratorRun, load_generator, read_generator_run
from mediatok.generation.masked import MaskedConfig, MaskedTransformer, build_masked_transformer
from mediatok.generation.registry import GENERATORS, build_generator
from mediatok.generation.sampling import GeneratedCodes, SampleConfig, SampleSettings
from mediatok.generation.sequence import SequenceLayout

__all__ = [
    "GENERATORS",
    "ARConfig",
    "ARDecodeEngine",
    "ARTransformer",
    "GeneratedCodes",
    "GeneratorRun",
    "MaskedConfig",
    "MaskedTransformer",
    "SampleConfig",
    "SampleSettings",
    "SequenceLayout",
    "build_ar_transformer",
    "build_generator",
    "build_masked_transformer",
    "load_generator",
    "read_generator_run",
    "resolve_variable_length",
]
