"""Checkpoint directories: safetensors weights, a JSON config, and resumable training state.

Layout of ``<out_dir>/checkpoint/`` (the ``save_pretrained`` / ``from_pretrained`` layout, so a
checkpoint can go to and come from the Hugging Face Hub as it is)::

    config.json                {"mediatok_version", "format_version", **what the caller passes}
    model.safetensors          the model's state dict
    ema.safetensors            the EMA shadow's state dict (when the run keeps one)
    discriminator.safetensors  (when the task has one)
    training_state.pt          optimizers, step, RNG, data position: tensors, dicts, lists,
                               numbers and strings only, so it loads with ``weights_only=True``

Writes are atomic: everything goes into the sibling ``checkpoint.tmp`` first; only a complete
directory is renamed into place. The previous checkpoint is moved to ``checkpoint.old`` for the
instant between the two renames and deleted after, and readers fall back to it, so a job killed
at any point leaves one whole checkpoint. No pickle: weights are safetensors and the training
state refuses anything ``weights_only`` would not load.

Tensors that share memory (tied embeddings) are written once; the other names are recorded as
aliases in the safetensors metadata and restored on load.

Layer 5.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
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
    "get_rng_state",
    "load_checkpoint",
    "load_model_weights",
    "load_training_state",
    "load_weights",
    "resolve_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "unwrap_model",
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
    config: Mapping[str, Any],
    *,
    ema: nn.Module | Mapping[str, Tensor] | None = None,
    discriminator: nn.Module | Mapping[str, Tensor] | None = None,
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically, replacing any previous one.

    Args:
        directory: the checkpoint directory (``<out_dir>/checkpoint``); its parent must exist.
        model: the model (wrappers are unwrapped) or its state dict (``module.`` and
            ``_orig_mod.`` prefixes are stripped).
        config: JSON-ready mapping written to ``config.json`` after ``mediatok_version`` and
            ``format_version`` (the trainer passes ``kind``, ``step``, ``task``, ``train``).
        ema: EMA weights for ``ema.safetensors``, or None.
        discriminator: discriminator weights for ``discriminator.safetensors``, or None.
        training_state: state for ``training_state.pt``, or None for a weights-only checkpoint.

    Returns:
        The directory.

    Raises:
        TypeError: ``config`` is not JSON-ready, or ``training_state`` holds something that
            ``torch.load(weights_only=True)`` refuses. Nothing is replaced then.
    """
    directory = Path(directory)
    text = json.dumps(
        {"mediatok_version": _version(), "format_version": FORMAT_VERSION, **config}, indent=2
    )
    if training_state is not None:
        _check_weights_only(training_state, "")
    temporary = directory.with_name(directory.name + ".tmp")
    previous = directory.with_name(directory.name + ".old")
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


def _existing(directory: str | os.PathLike[str]) -> Path:
    found = resolve_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(f"no checkpoint at {os.fspath(directory)}")
    return found


def load_checkpoint(
    directory: str | os.PathLike[str], *, ema: bool = False, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read a checkpoint's config and weights.

    Args:
        directory: the checkpoint directory.
        ema: read ``ema.safetensors`` instead of ``model.safetensors``.
        device: where to put the tensors.

    Returns:
        ``(config, state_dict)``: the parsed ``config.json`` and name -> tensor.

    Raises:
        FileNotFoundError: no checkpoint there, or ``ema=True`` and it has no EMA weights.
    """
    found = _existing(directory)
    config = json.loads((found / CONFIG_NAME).read_text(encoding="utf-8"))
    path = found / (EMA_NAME if ema else MODEL_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{found} has no {path.name} (was the run trained with EMA?)")
    return config, load_weights(path, device)


def load_model_weights(
    directory: str | os.PathLike[str], model: nn.Module, *, ema: bool = False, strict: bool = True
) -> nn.Module:
    """Load a checkpoint's weights into ``model`` in place.

    Args:
        directory: the checkpoint directory.
        model: a module built from the checkpoint's config (wrappers are unwrapped).
        ema: load the EMA weights rather than the last training weights.
        strict: require the keys to match exactly.

    Returns:
        ``model``.
    """
    _, state = load_checkpoint(directory, ema=ema)
    unwrap_model(model).load_state_dict(state, strict=strict)
    return model


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


def get_rng_state() -> dict[str, Any]:
    """This process's Python, numpy, torch and CUDA RNG states, in types ``weights_only`` loads.

    Returns:
        ``{"python", "numpy", "torch", "cuda"}``; "cuda" (the current device's) is None when
        CUDA is not in use.
    """
    version, python_state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(python_state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (loaded on CPU)."""
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
