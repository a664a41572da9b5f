"""Strict typed configs: dataclasses in, dataclasses out.

Every part of mediatok configures itself with a plain dataclass that lives next to the code it
configures. This module is the one place that turns mappings (YAML files, CLI overrides,
``config.json`` in a checkpoint) into those dataclasses and back, strictly:

- an unknown key is an error that names the full dotted key, the dataclass and the closest valid
  key, so a typo never silently falls back to a default;
- every value is checked against the field's annotation (``int``, ``float``, ``bool``, ``str``,
  ``Literal[...]``, ``X | None``, ``tuple[...]``, ``list[...]``, ``dict[...]``, ``Path`` and nested
  dataclasses) and converted where the conversion is lossless (``int`` to ``float``, a YAML list
  to a tuple);
- missing required fields are named.

YAML files hold only what differs from the dataclass defaults; overrides are ``key.sub=value``
strings whose value is read as YAML. ``config_hash`` fingerprints a resolved config so that token
shards can record which codec configuration produced them.

Layer 1: the standard library and PyYAML only.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_config",
    "check_choice",
    "check_positive_int",
    "config_hash",
    "from_dict",
    "load_config",
    "read_config_file",
    "to_dict",
]

T = TypeVar("T")

# Longest repr of an offending value quoted in an error; a whole list of 10k numbers helps no one.
_MAX_REPR = 80


class ConfigError(ValueError):
    """A config mapping, file or override does not match its dataclass."""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``; for ``__post_init__`` checks.

    Args:
        name: what the value is, as the user knows it (``"distance"``).
        value: the value that came.
        choices: the valid values.

    Raises:
        ValueError: ``expected distance to be one of 'l2', 'cosine', got 'l1'``.
    """
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"expected {name} to be one of {listed}, got {value!r}")


def check_positive_int(name: str, value: Any) -> None:
    """Raise unless ``value`` is an ``int`` >= 1 (a ``bool`` is not); for argument checks.

    Args:
        name: what the value is, as the user knows it (``"codebook_size"``).
        value: the value that came.

    Raises:
        ValueError: ``expected codebook_size to be a positive integer, got 0``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} to be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------
# mapping -> dataclass


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, strictly and recursively.

    Args:
        cls: a dataclass type.
        data: field name -> value; fields left out take their defaults. Values for fields typed
            as a dataclass (or ``X | None`` of one) may be mappings, built recursively on top of
            the field's default section, so a mapping holds only what differs (a ``dict`` field,
            by contrast, is replaced whole).
        where: dotted prefix of ``data`` inside a larger config (``"model"``), used in errors.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: on an unknown key (naming the closest valid one), a value of the wrong type,
            a missing required field, or a ``ValueError`` from the dataclass's ``__post_init__``.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    return _build(cls, data, where, base=None)


def _build(cls: type[T], data: Any, where: str, base: T | None) -> T:
    """``from_dict`` on top of ``base``: keys in ``data`` replace those of ``base``.

    Args:
        cls: a dataclass type.
        data: the mapping to check and apply.
        where: dotted path of ``data``, for errors.
        base: an instance whose values fill the keys ``data`` leaves out; ``None`` to use the
            class defaults (and require the fields that have none).

    Returns:
        A new instance of ``cls``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_at(where)}expected a mapping for {cls.__name__}, got {_show(data)}")
    fields = _init_fields(cls)
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{_at(where)}keys must be strings, got {_show(key)}")
        if key not in fields:
            raise ConfigError(_unknown_key_message(_join(where, key), key, cls))
        # The value a nested mapping is merged onto: what `base` holds, else the field default.
        current = getattr(base, key) if base is not None else _default(fields[key])
        kwargs[key] = _convert(value, hints[key], _join(where, key), base=current)

    if base is not None:
        kept = {name: getattr(base, name) for name in fields if name not in kwargs}
        return _construct(cls, where, lambda: cls(**kept, **kwargs))
    missing = [
        name
        for name, field in fields.items()
        if name not in kwargs
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        listed = ", ".join(repr(_join(where, name)) for name in missing)
        raise ConfigError(f"missing required key(s) {listed} for {cls.__name__}")
    return _construct(cls, where, lambda: cls(**kwargs))


def _default(field: dataclasses.Field[Any]) -> Any:
    """The default value of ``field``, or ``None`` when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _convert(value: Any, tp: Any, path: str, base: Any = None) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in the annotated type.

    Args:
        value: a value from YAML, JSON or Python.
        tp: the field's evaluated annotation.
        path: dotted key of the value, for errors.
        base: the value being replaced; a mapping for a dataclass is merged onto it when it is
            an instance of that dataclass.

    Returns:
        ``value``, converted where lossless (int -> float, list <-> tuple, str -> Path,
        mapping -> dataclass).
    """
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(path, tp, value)

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Literal:
        # `True == 1` in Python, so compare the type too: Literal[1] must not accept True.
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise _type_error(path, tp, value)

    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1 and not _is_leaf(options[0]):
            # `Section | None`, `tuple[int, ...] | None`: the error from inside (a nested
            # unknown key, a bad element) says more than "expected X | None".
            return _convert(value, options[0], path, base)
        for option in options:
            try:
                return _convert(value, option, path, base)
            except ConfigError:
                continue
        raise _type_error(path, tp, value)

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build(tp, value, path, base if isinstance(base, tp) else None)
        raise _type_error(path, tp, value)

    # bool is a subclass of int: check it first and never let 0/1 or "yes" through.
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(path, tp, value)
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _type_error(path, tp, value)

    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, tp, value)
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _type_error(path, tp, value, note=f"length {len(args)}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))

    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, tp, value)
        item = args[0] if args else Any
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]

    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(path, tp, value)
        key_tp, value_tp = args if args else (Any, Any)
        return {
            _convert(k, key_tp, f"{path} key {k!r}"): _convert(v, value_tp, _join(path, str(k)))
            for k, v in value.items()
        }

    if isinstance(tp, type):
        # Any other class (an Enum, a user type): accept instances only, no coercion.
        if isinstance(value, tp):
            return value
        raise _type_error(path, tp, value)
    raise TypeError(f"{_at(path)}unsupported config annotation {tp!r}")


# --------------------------------------------------------------------------------------------
# dataclass -> mapping, hash


def to_dict(obj: Any) -> dict[str, Any]:
    """Turn a config dataclass into a JSON-ready plain dict, recursively.

    Only fields that ``__init__`` takes are written (derived ``init=False`` fields are
    recomputed on load), so ``from_dict(type(c), to_dict(c)) == c``.

    Args:
        obj: a dataclass instance.

    Returns:
        field name -> value with nested dataclasses as dicts, tuples as lists and paths as
        strings.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"expected a dataclass instance, got {_show(obj)}")
    return _plain(obj, type(obj).__name__)


def _plain(value: Any, path: str) -> Any:
    """JSON-ready copy of one value; ``path`` names it in errors."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            name: _plain(getattr(value, name), _join(path, name))
            for name in _init_fields(type(value))
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{path}: {_show(value)} is not JSON-ready")


def config_hash(obj: Any) -> str:
    """Fingerprint a config: sha256 of its canonical JSON.

    Canonical means sorted keys and no whitespace, so the hash depends only on the values and is
    the same in every process and on every machine.

    Args:
        obj: a dataclass instance.

    Returns:
        64 lowercase hex digits.
    """
    text = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# overrides and files


def apply_overrides(obj: T, overrides: Sequence[str]) -> T:
    """Return a copy of ``obj`` with ``key.sub=value`` overrides applied in order.

    The value is read with ``yaml.safe_load`` (``3``, ``0.5``, ``true``, ``[8, 8, 8]``, ``null``,
    ``{dim: 8}``, bare strings) and type-checked like :func:`from_dict`. ``obj`` is not mutated;
    sections on the path are rebuilt with ``dataclasses.replace`` so ``__post_init__`` checks
    run again.

    Args:
        obj: a dataclass instance.
        overrides: strings such as ``"model.codebook_size=4096"``.

    Returns:
        A new instance of ``type(obj)``.

    Raises:
        ConfigError: on a malformed override, an unknown key (naming the closest valid one), a
            value of the wrong type or YAML that does not parse; the message starts with the
            override.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"expected a dataclass instance, got {_show(obj)}")
    if isinstance(overrides, str):
        # A lone string would otherwise be applied character by character.
        raise TypeError("expected a sequence of 'key=value' strings, got a single str")
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected 'key.sub=value'")
        try:
            value = yaml.load(text, Loader=_StrictLoader)  # safe: a SafeLoader subclass
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: value is not valid YAML: {error}") from None
        try:
            obj = _set_path(obj, type(obj), key.split("."), value, "")
        except ConfigError as error:
            raise ConfigError(f"override {override!r}: {error}") from None
    return obj


def _set_path(current: Any, tp: Any, parts: list[str], value: Any, path: str) -> Any:
    """Return ``current`` (of annotation ``tp``) with ``value`` set at ``parts`` below it."""
    if not parts:
        return _convert(value, tp, path, base=current)
    name, rest = parts[0], parts[1:]
    if dataclasses.is_dataclass(current) and not isinstance(current, type):
        cls = type(current)
        if name not in _init_fields(cls):
            raise ConfigError(_unknown_key_message(_join(path, name), name, cls))
        updated = _set_path(
            getattr(current, name), _type_hints(cls)[name], rest, value, _join(path, name)
        )
        return _construct(cls, path, lambda: dataclasses.replace(current, **{name: updated}))
    # A mapping in a free-form section (`model.quantizer.options` under `model: dict[str, Any]`)
    # is walked as `dict[str, Any]`; what it may hold is checked where it is used.
    free = isinstance(current, dict) and _strip_optional(tp) is Any
    if isinstance(current, dict) and (free or typing.get_origin(_strip_optional(tp)) is dict):
        key_tp, value_tp = (str, Any) if free else typing.get_args(_strip_optional(tp))
        # Keys on the command line are text; read them as YAML only for non-str keys (int ids).
        key = name if key_tp in (str, Any) else _convert(yaml.safe_load(name), key_tp, path)
        if rest and key not in current:
            raise ConfigError(
                f"{_at(path)}no entry {name!r}; entries: {', '.join(map(str, current))}"
            )
        updated = _set_path(current.get(key), value_tp, rest, value, _join(path, name))
        return {**current, key: updated}
    if current is None:
        raise ConfigError(
            f"cannot set {_join(path, '.'.join(parts))!r}: {path!r} is None; "
            f"set the whole section instead, e.g. {path}={{{parts[0]}: ...}}"
        )
    raise ConfigError(
        f"cannot set {_join(path, '.'.join(parts))!r}: {path!r} holds {_show(current)}, "
        "not a config section"
    )


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a mapping, strictly (duplicate keys are rejected; plain
    PyYAML keeps the last one silently). An empty file is an empty mapping.

    Raises:
        ConfigError: naming the file, on YAML syntax errors or a top level that is not a
            mapping.
        FileNotFoundError: when the file does not exist.
    """
    name = os.fspath(path)
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: invalid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{name}: expected a mapping of config keys at the top level, got {_show(data)}"
        )
    return dict(data)


def build_config(
    cls: type[T],
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    source: str | os.PathLike[str] | None = None,
) -> T:
    """``from_dict(cls, data)``, then ``overrides``: a config file's mapping made a config.

    Args:
        cls: a dataclass type.
        data: what `read_config_file` read.
        overrides: ``key.sub=value`` strings, see :func:`apply_overrides`.
        source: the file ``data`` came from, named in errors.

    Raises:
        ConfigError: every error of :func:`from_dict` (naming ``source``) and of
            :func:`apply_overrides`.
    """
    try:
        config = from_dict(cls, data)
    except ConfigError as error:
        if source is None:
            raise
        raise ConfigError(f"{os.fspath(source)}: {error}") from None
    return apply_overrides(config, overrides)


def load_config(cls: type[T], path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> T:
    """Read a YAML config file into ``cls``, then apply ``overrides``.

    The file holds a mapping with only what differs from the dataclass defaults; an empty file
    means all defaults.

    Args:
        cls: a dataclass type.
        path: the YAML file.
        overrides: ``key.sub=value`` strings applied after the file, see
            :func:`apply_overrides`.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: naming the file, on YAML syntax errors, a top level that is not a mapping,
            and every error of :func:`from_dict`.
        FileNotFoundError: when the file does not exist.
    """
    return build_config(cls, read_config_file(path), overrides, source=path)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1, which PyYAML follows, reads `1e-4` (no dot) as a string; YAML 1.2 and everyone
# writing a learning rate read a float. Added after the int resolver, so `10` stays an int.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# --------------------------------------------------------------------------------------------
# helpers


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # get_type_hints evaluates string annotations, so `from __future__ import annotations`
    # in the module that defines `cls` works; cached because it is slow and classes are fixed.
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    # init=False fields are derived in __post_init__: setting them from a file would be ignored
    # or fight the derivation, so they count as unknown keys.
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _construct(cls: type[T], where: str, build: Callable[[], T]) -> T:
    """Run ``build`` and turn a ``__post_init__`` ValueError into a ConfigError with the path."""
    try:
        return build()
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{_at(where)}invalid {cls.__name__}: {error}") from error


def _unknown_key_message(full_key: str, key: str, cls: type) -> str:
    valid = list(_init_fields(cls))
    message = f"unknown key {full_key!r} for {cls.__name__}"
    close = difflib.get_close_matches(key, valid, n=1)
    message += f"; did you mean {close[0]!r}?" if close else ";"
    return f"{message} valid keys: {', '.join(valid) or '(none)'}"


def _is_leaf(tp: Any) -> bool:
    """Whether ``tp`` is a plain value type (int, str, Literal) rather than a container/section."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return True
    return origin is None and not dataclasses.is_dataclass(tp) and tp not in (tuple, list, dict)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def _type_error(path: str, tp: Any, value: Any, note: str = "") -> ConfigError:
    expected = _describe(tp) + (f" of {note}" if note else "")
    return ConfigError(f"{_at(path)}expected {expected}, got {_show(value)}")


def _describe(tp: Any) -> str:
    """Readable name of an annotation: ``int | None``, ``one of 'l2', 'cosine'``."""
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        # Spell a Literal inside a union as its values: "'auto' | int", not "one of 'auto' | int".
        return " | ".join(
            " | ".join(repr(c) for c in typing.get_args(a))
            if typing.get_origin(a) is Literal
            else _describe(a)
            for a in typing.get_args(tp)
        )
    if isinstance(tp, type) and origin is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _at(path: str) -> str:
    return f"{path}: " if path else ""
