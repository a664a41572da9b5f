"""Checkpoint directories: the one reader and writer of them, for codecs, generators and the
trainer's resume state.

Layout of a checkpoint directory (the ``save_pretrained`` / ``from_pretrained`` layout, so a
checkpoint can go to and come from the Hugging Face Hub as it is)::

    config.json                {"mediatok_version", "format_version", "kind", "run",
                                "step", "world_size"}
    model.safetensors          the model's state dict
    ema.safetensors            the EMA shadow's state dict (when the run keeps one)
    discriminator.safetensors  (when the training task has one)
    training_state.pt          optimizers, step, RNG, data position: tensors, dicts, lists,
                               numbers and strings only, so it loads with ``weights_only=True``

``kind`` says what the weights are ("codec", "generator"); ``run`` is the run config that
describes them, each setting stored once: at least the registry name and the model's resolved
config (``{"codec": "titok", "model": {...}}``); a checkpoint written by training holds the
whole run (data, losses or sampling settings, and ``train``, the loop's settings); ``step`` and
``world_size`` are the trainer's (None for ``save_pretrained``). Every writer writes this one
layout and every reader reads it, whoever wrote the directory.

Writes are atomic: everything goes into the sibling ``<name>.tmp`` first; only a complete
directory is renamed into place. The previous checkpoint is moved to ``<name>.old`` for the
instant between the two renames and deleted after, and readers fall back to it, so a job killed
at any point leaves one whole checkpoint. No pickle: weights are safetensors and the training
state refuses anything ``weights_only`` would not load.

Tensors that share memory (tied embeddings) are written once; the other names are recorded as
aliases in the safetensors metadata and restored by every reader.

Layer 3: torch, safetensors and the standard library; it never imports a model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

__all__ = [
    "CONFIG_NAME",
    "DISCRIMINATOR_NAME",
    "EMA_NAME",
    "MODEL_NAME",
    "TRAINING_STATE_NAME",
    "CheckpointConfig",
    "load_checkpoint",
    "load_model",
    "load_training_state",
    "load_weights",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "unwrap_model",
    "weights_sha256",
]

CONFIG_NAME = "config.json"
MODEL_NAME = "model.safetensors"
EMA_NAME = "ema.safetensors"
DISCRIMINATOR_NAME = "discriminator.safetensors"
TRAINING_STATE_NAME = "training_state.pt"
FORMAT_VERSION = 1
# Key in the safetensors metadata: JSON {alias name: stored name} for tensors that share memory.
_ALIASES_KEY = "mediatok_aliases"
# Prefixes that DDP (`module.`) and torch.compile (`_orig_mod.`) put in front of every key.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class CheckpointConfig:
    """What ``config.json`` holds.

    Attributes:
        kind: what the weights are: "codec" or "generator" (a training task may name another).
        run: the run config that describes the model: at least its registry name and resolved
            config (``"codec"`` or ``"generator"``, and ``"model"``); a trained checkpoint
            holds the whole run, ``"train"`` included.
        step: optimizer steps done, for a checkpoint written by training; else None.
        world_size: ranks of the training job; else None.
        mediatok_version: the version that wrote it.
        format_version: of this layout.
    """

    kind: str
    run: Mapping[str, Any] = field(default_factory=dict)
    step: int | None = None
    world_size: int | None = None
    mediatok_version: str = "unknown"
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {
                "mediatok_version": self.mediatok_version,
                "format_version": self.format_version,
                "kind": self.kind,
                "run": self.run,
                "step": self.step,
                "world_size": self.world_size,
            },
            indent=2,
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP and ``torch.compile`` wrappers, in any nesting.

    Args:
        model: a module, a ``DistributedDataParallel`` or an ``OptimizedModule``.

    Returns:
        The innermost module, whose state-dict keys carry no wrapper prefix.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def _plain_state(weights: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict without wrapper prefixes, from a module or a mapping."""
    if isinstance(weights, nn.Module):
        return dict(unwrap_model(weights).state_dict())
    state = dict(weights)
    for prefix in _WRAPPER_PREFIXES:
        # Strip only when every key has it: a model may own a submodule called `module`.
        while state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _write_weights(path: Path, weights: nn.Module | Mapping[str, Tensor]) -> None:
    """Write a state dict as safetensors, storing tensors that share memory once."""
    state = _plain_state(weights)
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first_of: dict[tuple[Any, ...], str] = {}
    storages: dict[int, int] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"{path.name}: state entry {name!r} is a {type(tensor).__name__}, not a tensor; "
                "safetensors holds tensors only"
            )
        tensor = tensor.detach()
        if tensor.numel() > 0:
            ptr = tensor.untyped_storage().data_ptr()
            view = (ptr, tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
            if view in first_of:
                aliases[name] = first_of[view]
                continue
            first_of[view] = name
            storages[ptr] = storages.get(ptr, 0) + 1
        tensors[name] = tensor
    # Distinct views of one storage (a fused qkv split into slices) cannot be aliased: copy them.
    for name, tensor in tensors.items():
        shared = tensor.numel() > 0 and storages[tensor.untyped_storage().data_ptr()] > 1
        tensors[name] = (tensor.clone() if shared else tensor).contiguous().cpu()
    metadata = {"format": "pt"}
    if aliases:
        metadata[_ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)


def load_weights(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    """Read a safetensors file written by :func:`save_checkpoint`, aliases restored.

    Args:
        path: a ``.safetensors`` file.
        device: where to put the tensors.

    Returns:
        name -> tensor; aliased names refer to the same tensor as their source.
    """
    with safe_open(os.fspath(path), framework="pt", device=str(device)) as file:
        state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        metadata = file.metadata() or {}
    for alias, source in json.loads(metadata.get(_ALIASES_KEY, "{}")).items():
        state[alias] = state[source]
    return state


def _check_weights_only(value: Any, where: str) -> None:
    """Raise unless ``torch.load(weights_only=True)`` will load ``value``."""
    if isinstance(value, Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"training state {where}: key {key!r} is not a str or int")
            _check_weights_only(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_weights_only(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"training state {where}: a {type(value).__name__} would not load with "
        "weights_only=True; keep to tensors, dicts, lists, numbers and strings"
    )


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk so a rename never publishes unwritten data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return  # Windows cannot open a directory; its renames are durable enough there
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version() -> str:
    # importlib.metadata rather than `mediatok.__version__`: the package root is layer 6.
    try:
        return importlib.metadata.version("mediatok")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module | Mapping[str, Tensor],
    *,
    kind: str,
    run: Mapping[str, Any],
    step: int | None = None,
    world_size: int | None = None,
    ema: nn.Module | Mapping[str, Tensor] | None = None,
    discriminator: nn.Module | Mapping[str, Tensor] | None = None,
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically, replacing any previous one.

    Args:
        directory: the checkpoint directory (``<out_dir>/checkpoint``); its parent is created.
        model: the model (wrappers are unwrapped) or its state dict (``module.`` and
            ``_orig_mod.`` prefixes are stripped).
        kind: what the weights are ("codec", "generator", or a training task's own kind).
        run: the JSON-ready run config that describes the model (see `CheckpointConfig`).
        step, world_size: the trainer's, or None.
        ema: EMA weights for ``ema.safetensors``, or None.
        discriminator: discriminator weights for ``discriminator.safetensors``, or None.
        training_state: state for ``training_state.pt``, or None for a weights-only checkpoint.

    Returns:
        The directory.

    Raises:
        TypeError: ``run`` is not JSON-ready, or ``training_state`` holds something that
            ``torch.load(weights_only=True)`` refuses. Nothing is replaced then.
    """
    directory = Path(directory)
    config = CheckpointConfig(kind, dict(run), step, world_size, _version())
    text = config.to_json()
    if training_state is not None:
        _check_weights_only(training_state, "")
    temporary = directory.with_name(directory.name + ".tmp")
    previous = directory.with_name(directory.name + ".old")
    directory.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(temporary, ignore_errors=True)  # left by a job killed mid-write
    temporary.mkdir(parents=False)
    try:
        _write_weights(temporary / MODEL_NAME, model)
        if ema is not None:
            _write_weights(temporary / EMA_NAME, ema)
        if discriminator is not None:
            _write_weights(temporary / DISCRIMINATOR_NAME, discriminator)
        if training_state is not None:
            torch.save(dict(training_state), temporary / TRAINING_STATE_NAME)
        (temporary / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
        for path in temporary.iterdir():
            _fsync(path)
        _fsync(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if directory.exists():
        # A stale `.old` only survives a crash after the new checkpoint was already in place.
        shutil.rmtree(previous, ignore_errors=True)
        directory.rename(previous)
    temporary.rename(directory)
    _fsync(directory.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


def resolve_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint at ``directory``, or the previous one if a save was cut short.

    Args:
        directory: a checkpoint directory as passed to :func:`save_checkpoint`.

    Returns:
        ``directory`` if it exists, else its ``.old`` sibling if that exists, else None.
    """
    directory = Path(directory)
    if directory.is_dir():
        return directory
    previous = directory.with_name(directory.name + ".old")
    return previous if previous.is_dir() else None


def _existing(directory: str | os.PathLike[str], kind: str | None = None) -> Path:
    """The directory to read (see `resolve_checkpoint`), or a FileNotFoundError."""
    found = resolve_checkpoint(directory)
    if found is None or not (found / CONFIG_NAME).is_file():
        what = "a checkpoint" if kind is None else f"a {kind} checkpoint"
        raise FileNotFoundError(f"{os.fspath(directory)}: not {what} (no {CONFIG_NAME})")
    return found


def read_checkpoint(directory: str | os.PathLike[str], kind: str | None = None) -> CheckpointConfig:
    """Read a checkpoint's ``config.json``.

    Args:
        directory: the checkpoint directory.
        kind: the kind the caller expects ("codec", "generator"), or None for any.

    Returns:
        The `CheckpointConfig`.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: a ``config.json`` that is not this layout, or of another kind; the message
            names the file.
    """
    path = _existing(directory, kind) / CONFIG_NAME
    what = "a checkpoint's" if kind is None else f"a {kind} checkpoint's"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: expected {what} config, got a damaged file ({error})") from None
    fields = {"kind": str, "run": dict}
    if not isinstance(data, dict) or not all(
        isinstance(data.get(name), tp) for name, tp in fields.items()
    ):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path}: expected {what} config ('kind' and 'run', as save_pretrained and "
            f"mediatok train write it), got {got}"
        )
    if kind is not None and data["kind"] != kind:
        raise ValueError(
            f"{path}: expected a {kind} checkpoint (kind {kind!r}), got kind {data['kind']!r}"
        )
    return CheckpointConfig(
        kind=data["kind"],
        run=data["run"],
        step=data.get("step"),
        world_size=data.get("world_size"),
        mediatok_version=data.get("mediatok_version", "unknown"),
        format_version=data.get("format_version", FORMAT_VERSION),
    )


def load_checkpoint(
    directory: str | os.PathLike[str], *, ema: bool = False, device: str | torch.device = "cpu"
) -> tuple[CheckpointConfig, dict[str, Tensor]]:
    """Read a checkpoint's config and one of its weight files.

    Args:
        directory: the checkpoint directory.
        ema: read ``ema.safetensors`` instead of ``model.safetensors``.
        device: where to put the tensors.

    Returns:
        ``(config, state_dict)``.

    Raises:
        FileNotFoundError: no checkpoint there, or ``ema=True`` and it has no EMA weights.
    """
    config = read_checkpoint(directory)
    path = _existing(directory) / (EMA_NAME if ema else MODEL_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name} (was the run trained with EMA?)")
    return config, load_weights(path, device)


def _weights_file(directory: Path, kind: str, ema: bool) -> Path:
    """The weights a model loads: EMA when asked for and present, else the training weights."""
    path = directory / (EMA_NAME if ema and (directory / EMA_NAME).is_file() else MODEL_NAME)
    if not path.is_file():
        found = ", ".join(sorted(entry.name for entry in directory.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"{directory}: expected the {kind}'s weights in {path.name} beside {CONFIG_NAME}, "
            f"got no such file (the directory holds {found})"
        )
    return path


def load_model(
    directory: str | os.PathLike[str], model: nn.Module, *, ema: bool = True, what: str = "model"
) -> nn.Module:
    """Load a checkpoint's weights into ``model`` in place, strictly.

    Args:
        directory: the checkpoint directory.
        model: a module built from the checkpoint's config (wrappers are unwrapped).
        ema: load the EMA weights when the checkpoint has them; False: the last training
            weights.
        what: the model as the error messages name it ("codec 'titok'").

    Returns:
        ``model``.

    Raises:
        FileNotFoundError: no checkpoint, or no weights file to load (the message lists what
            the directory holds).
        ValueError: weights of other names or shapes than ``model``'s.
    """
    config = read_checkpoint(directory)
    path = _weights_file(_existing(directory), config.kind, ema)
    state = load_weights(path)
    try:
        missing, unexpected = unwrap_model(model).load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that differ from the config's
        raise ValueError(f"{path}: weights do not fit {what}: {error}") from error
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit {what}: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}"
        )
    return model


def weights_sha256(directory: str | os.PathLike[str]) -> str:
    """sha256 of the weights a loader reads (the EMA weights if present), which token shards
    record to name the checkpoint that wrote them."""
    config = read_checkpoint(directory)
    digest = hashlib.sha256()
    with _weights_file(_existing(directory), config.kind, ema=True).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_training_state(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read ``training_state.pt`` with ``weights_only=True``.

    Args:
        directory: the checkpoint directory.
        map_location: where to put the tensors. Keep "cpu" when the state holds RNG states,
            which torch only accepts as CPU tensors.

    Returns:
        The mapping passed to :func:`save_checkpoint` as ``training_state``.
    """
    path = _existing(directory) / TRAINING_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {TRAINING_STATE_NAME}: weights only")
    return torch.load(path, map_location=map_location, weights_only=True)
