"""`GeneratorTask`: trains an autoregressive or masked generator on token shards, in the one loop.

The shards are what `mediatok encode` wrote with any codec; the generator sees only their
`TokenSpec` (DESIGN.md § Layers). Samples of one shape train as they are; variable-length
shards (audio, 1-D variable-length codecs) are cut into windows of `data.window` tokens along the
spec's length axis. Class labels are used when the shards have them.

`prepare_generator_run` resolves what the run config leaves to the shards before anything
trains, and checks it: the spec and token shape, the number of classes, whether an AR model may
end a sample early (`model.variable_length`, when the YAML does not say: a 1-D model of L tokens
is variable-length iff some training sample has fewer than L tokens, `resolve_variable_length`),
the sampling settings and the codec. The checkpoint records the resolved run, so `mediatok
sample` needs no shards.

Layout: batches `{"codes": (B, *token_shape) int64, "lengths": (B,), "labels": (B,)?}`.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mediatok.codecs import Codec
from mediatok.config import from_dict, to_dict
from mediatok.data.folder import item_seed
from mediatok.generation import (
    GENERATORS,
    SampleConfig,
    build_generator,
    resolve_variable_length,
)
from mediatok.pipelines import check_decodes, write_decoded
from mediatok.pipelines.common import load_decoding_codec
from mediatok.tokens import TokenDataset, TokenSpec
from mediatok.training.base import Task, TrainConfig, is_main_process


@dataclass
class GeneratorDataConfig:
    """Which token shards train the generator.

    Attributes:
        tokens: a directory written by `mediatok encode`.
        window: tokens per training sequence along the length axis, for shards whose samples
            differ in length (random windows; shorter samples are padded and their padding is
            not trained on). None: every sample must have the same token shape.
    """

    tokens: str = "demo-output/image/tokens"
    window: int | None = None

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError(f"expected window >= 1 or None, got {self.window}")


class TokenWindows(Dataset):
    """Samples of a `TokenDataset` as fixed-shape training items.

    Items are `{"codes": (*token_shape) int64, "length": int, "label": int?}`; `length` counts
    the real positions along the spec's length axis (the rest is padding with code 0).
    """

    def __init__(
        self,
        tokens: TokenDataset,
        token_shape: tuple[int, ...],
        window: int | None,
        seed: int = 0,
    ):
        self.tokens, self.token_shape, self.window, self.seed = tokens, token_shape, window, seed
        self.axis = tokens.spec.length_axis
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)
        if index < 0:
            index += len(self)  # the window's seed must not depend on how the index was written
        item = self.tokens[index]
        codes = item["codes"]
        if self.window is None:
            if tuple(codes.shape) != self.token_shape:
                raise ValueError(
                    f"{self.tokens.directory}: sample {item['key']!r} has token shape "
                    f"{tuple(codes.shape)}, expected {self.token_shape} like the first; set "
                    f"data.window to train on windows of variable-length samples"
                )
            length = codes.shape[self.axis]
        else:
            # Windows cut the length axis only; every other axis must already match.
            other = [size for axis, size in enumerate(codes.shape) if axis != self.axis]
            expected = [size for axis, size in enumerate(self.token_shape) if axis != self.axis]
            if other != expected:
                raise ValueError(
                    f"{self.tokens.directory}: sample {item['key']!r} has token shape "
                    f"{tuple(codes.shape)}, expected {self.token_shape} except along the length "
                    f"axis {self.tokens.spec.axes[self.axis]!r} (axis {self.axis}) that "
                    f"data.window cuts"
                )
            length = codes.shape[self.axis]
            if length > self.window:
                generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
                start = int(torch.randint(length - self.window + 1, (), generator=generator))
                codes = codes.narrow(self.axis, start, self.window)
                length = self.window
            elif length < self.window:
                pad = list(codes.shape)
                pad[self.axis] = self.window - length
                codes = torch.cat([codes, codes.new_zeros(pad)], dim=self.axis)
        out = {"codes": codes, "length": length}
        if "label" in item:
            out["label"] = item["label"]
        return out


class GeneratorTask(Task):
    """Trains generator `generator` ("ar" or "masked") with config overrides `model` on
    samples of `token_shape` under `spec`."""

    kind = "generator"

    def __init__(
        self,
        generator: str,
        model: dict[str, Any],
        spec: TokenSpec,
        token_shape: tuple[int, ...],
        data: GeneratorDataConfig,
        sample: SampleConfig,
        codec: str | None = None,
        seed: int = 0,
    ):
        self.generator_name, self.model_config = generator, model
        self.spec, self.token_shape = spec, tuple(token_shape)
        self.data, self.sample, self.codec_path, self.seed = data, sample, codec, seed
        self._codec = None

    def build_model(self) -> nn.Module:
        return build_generator(self.generator_name, self.model_config, self.spec, self.token_shape)

    def dataset(self) -> Dataset:
        tokens = TokenDataset(self.data.tokens, self.spec)
        return TokenWindows(tokens, self.token_shape, self.data.window, self.seed)

    def losses(self, model: nn.Module, batch: dict, step: int):
        # `model.num_classes: 0` trains an unconditional generator, on labelled shards too.
        labels = batch.get("label") if self.model_config.get("num_classes") else None
        loss = model(batch["codes"], labels=labels, lengths=batch["length"])
        return loss, {"cross_entropy": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str | Path) -> dict[str, float]:
        """Draw `sample.num_samples` samples (classes in turn when conditional); decode and write
        them under `samples-<step>/` when the run names a codec."""
        device = next(model.parameters()).device
        count = self.sample.num_samples
        num_classes = model.config.num_classes
        labels = torch.arange(count, device=device) % num_classes if num_classes else None
        generator = torch.Generator(device).manual_seed(self.seed)
        out = model.generate(count, labels, self.sample.settings(), generator=generator)
        metrics = {"distinct_codes": float(out.codes.unique().numel())}
        if self.codec_path and is_main_process():
            names = [f"sample-{i:03d}" for i in range(count)]
            folder = Path(out_dir) / f"samples-{step:07d}"
            # AR samples end at their end token (lengths); masked ones fill the shape (None)
            write_decoded(self.codec_on(device), out.codes, folder, names, out.lengths)
        return metrics

    def codec_on(self, device: torch.device) -> Codec:
        """The run's codec on `device`, loaded and checked against the shards' spec once."""
        if self._codec is None:
            codec = load_decoding_codec(self.codec_path, torch.device("cpu"))
            self._codec = check_decodes(
                codec,
                self.spec,
                self.codec_path,
                "the generator's tokens",
                advice="name the codec whose tokens the generator trains on",
            )
        return self._codec.to(device)


@dataclass
class GeneratorRunConfig:
    """Train a generator on token shards (`task: generator`).

    Attributes:
        task: "generator".
        generator: "ar" (autoregressive) or "masked" (MaskGIT-style).
        model: the generator's config fields that differ from its defaults.
        data: the token shards.
        sample: how samples are drawn at evaluation and by `mediatok sample` by default.
        codec: the codec checkpoint that wrote the shards, to decode samples (optional here;
            `mediatok sample --codec` can name one later). Saved with the checkpoint as an
            absolute path, so that `mediatok sample` finds it from any directory.
        spec, token_shape: filled in from the shards when training starts and saved with the
            checkpoint, so sampling needs no shards.
        class_names: what the shards' labels mean (label i is `class_names[i]`, as `mediatok
            encode --labels` recorded them), filled in from the shards and saved with the
            checkpoint, so that `mediatok sample --class NAME` works; None without names.
        train: the loop's settings.
    """

    task: Literal["generator"] = "generator"
    generator: Literal["ar", "masked"] = "ar"
    model: dict[str, Any] = field(default_factory=dict)
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    codec: str | None = None
    spec: dict[str, Any] | None = None
    token_shape: list[int] | None = None
    class_names: list[str] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


def prepare_generator_run(config: GeneratorRunConfig) -> tuple[GeneratorRunConfig, GeneratorTask]:
    """The run config with what the shards decide filled in, and the task that trains it.

    Everything is checked here, before the first step: the shards (the run's spec when resumed;
    one shape, or `data.window`), the classes, the sampling settings used at each evaluation,
    and the codec.

    Raises:
        ValueError: naming the shards or the setting at fault.
    """
    if config.generator not in GENERATORS:
        raise ValueError(
            f"unknown generator {config.generator!r}; known: {', '.join(sorted(GENERATORS))}"
        )
    tokens = TokenDataset(config.data.tokens)
    if len(tokens) == 0:
        raise ValueError(f"{config.data.tokens}: no samples to train on")
    spec = tokens.spec
    recorded = None if config.spec is None else TokenSpec.from_dict(config.spec)
    if recorded is not None and recorded != spec:
        # Same vocabulary: the difference is in the order or geometry, which only the full form
        # shows.
        same = recorded.same_vocabulary(spec)
        expected = recorded.to_dict() if same else recorded.describe()
        got = spec.to_dict() if same else spec.describe()
        raise ValueError(
            f"{config.data.tokens}: expected token shards of the run's spec, {expected}; got "
            f"{got}; point data.tokens at the shards the run was started on, or start a new run"
        )
    shape = list(tokens[0]["codes"].shape)
    if config.data.window is not None:
        shape[spec.length_axis] = config.data.window
    elif len(set(tokens.lengths.tolist())) > 1:
        raise ValueError(
            f"{config.data.tokens}: samples differ in length ({int(tokens.lengths.min())} to "
            f"{int(tokens.lengths.max())} tokens); set data.window to train on windows"
        )
    class_names = tokens.class_names
    if config.class_names is not None and config.class_names != class_names:
        raise ValueError(
            f"{config.data.tokens}: expected token shards of the run's classes "
            f"{config.class_names}, got {class_names}; point data.tokens at the shards the run "
            "was started on, or start a new run"
        )
    model = dict(config.model)
    if tokens.labels is not None and "num_classes" not in model:
        # Every named class, also one that no sample has; else up to the largest label.
        known = len(class_names) if class_names is not None else 0
        model["num_classes"] = max(known, int(tokens.labels.max()) + 1)
    config_class = GENERATORS[config.generator][0]
    if "variable_length" in _field_names(config_class) and "variable_length" not in model:
        # Decided from the shards here, so the checkpoint's config records it for sampling.
        model["variable_length"] = resolve_variable_length(spec, shape, tokens.lengths)
    model_config = from_dict(config_class, model, where="model")
    classes = model_config.num_classes
    if tokens.labels is None and classes:
        # An AR model would train the null class alone without a word (and then sample classes
        # it never saw), a masked one would stop at the first batch.
        raise ValueError(
            f"{config.data.tokens}: model.num_classes={classes} needs shards with labels, got "
            "shards without; set model.num_classes: 0 (unconditional), or write shards with "
            "labels"
        )
    if tokens.labels is not None and classes:
        # Label `num_classes` is the null class's row: an AR model would train it unconditional
        # without a word, a masked one would stop at the batch that holds it.
        low, high = int(tokens.labels.min()), int(tokens.labels.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"{config.data.tokens}: the shards hold labels {low} up to {high}, beyond "
                f"model.num_classes={classes} (classes 0 to {classes - 1}); set "
                f"model.num_classes to at least {high + 1}, or leave it out to take it from "
                "the shards"
            )
    # Sampling settings are used first at the first evaluation: check them now, not after
    # eval_every steps of training.
    try:
        config.sample.check_for(
            config.generator,
            num_tokens=math.prod(shape) if config.train.eval_every > 0 else None,
            conditional=bool(classes),
        )
    except ValueError as error:
        raise ValueError(f"{config.data.tokens}: sample: {error}") from None
    # Relative to where training runs: `mediatok sample` may run anywhere.
    codec = None if config.codec is None else os.fspath(Path(config.codec).resolve())
    config = dataclasses.replace(
        config,
        model=to_dict(model_config),
        spec=spec.to_dict(),
        token_shape=shape,
        codec=codec,
        class_names=class_names,
    )
    task = GeneratorTask(
        config.generator,
        config.model,
        spec,
        tuple(shape),
        config.data,
        config.sample,
        codec=config.codec,
        seed=config.train.seed,
    )
    if config.codec is not None:  # a wrong codec is reported now, not at the first evaluation
        task.codec_on(torch.device("cpu"))
    return config, task


def _field_names(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls)}
