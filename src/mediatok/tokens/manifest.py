"""Manifests of a token directory: one part manifest per writer rank, and the merged one.

```
tokens/
  shard-r000-00000.safetensors   shard-r000-00001.safetensors   shard-r001-00000.safetensors ...
  manifest-r000.json  manifest-r001.json     # one per rank, rewritten atomically after each shard
  manifest.json                              # merge_manifests(): what TokenDataset opens
```

A part manifest holds the writer's identity (`spec`, `codec`, `config_hash`,
`checkpoint_sha256`), its `rank`, `world_size`, whether the writer was `complete`ly closed, its
`shards` (`file`, `num_samples`, `num_tokens`, `bytes`, `sha256`) and the `skipped` sources
(`key`, `error`). The merged manifest holds the identity, `num_samples`, `num_tokens` and the
shards and skipped sources of every rank.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mediatok.tokens.shards import FORMAT_VERSION, TokenFileError, atomic_write_json
from mediatok.tokens.spec import TokenSpec

__all__ = [
    "IDENTITY_FIELDS",
    "MANIFEST_NAME",
    "identity_differences",
    "load_manifest",
    "merge_manifests",
    "part_manifest_name",
    "part_manifest_paths",
    "shard_index",
    "shard_name",
]

MANIFEST_NAME = "manifest.json"
# What must agree between every shard and manifest of one directory.
IDENTITY_FIELDS = ("spec", "codec", "config_hash", "checkpoint_sha256")
_PART_FIELDS = ("rank", "world_size", "complete", "shards", "skipped")
_MERGED_FIELDS = ("num_samples", "num_tokens", "shards", "skipped")
_SHARD_FIELDS = ("file", "num_samples", "num_tokens", "bytes", "sha256")
_PART_PATTERN = re.compile(r"manifest-r(\d{3,})\.json")
_SHARD_PATTERN = re.compile(r"shard-r(\d{3,})-(\d{5,})\.safetensors")


def shard_name(rank: int, index: int) -> str:
    """File name of shard `index` of writer `rank`: `shard-r000-00000.safetensors`."""
    return f"shard-r{rank:03d}-{index:05d}.safetensors"


def shard_index(name: str) -> tuple[int, int] | None:
    """(rank, index) parsed from a shard file name, or None for another name."""
    match = _SHARD_PATTERN.fullmatch(name)
    return None if match is None else (int(match[1]), int(match[2]))


def part_manifest_name(rank: int) -> str:
    """File name of the part manifest of writer `rank`: `manifest-r000.json`."""
    return f"manifest-r{rank:03d}.json"


def part_manifest_paths(directory: Path) -> list[Path]:
    """Every part manifest in `directory`, sorted by rank."""
    paths = [
        path for path in directory.glob("manifest-r*.json") if _PART_PATTERN.fullmatch(path.name)
    ]
    return sorted(paths, key=lambda path: int(_PART_PATTERN.fullmatch(path.name)[1]))


def load_manifest(path: Path, *, part: bool) -> dict[str, Any]:
    """Read a part or merged manifest and check its fields.

    Args:
        path: the JSON file.
        part: True for a part manifest (`manifest-r*.json`), False for `manifest.json`.

    Returns:
        The manifest with `spec` as a `TokenSpec`.

    Raises:
        TokenFileError: unreadable JSON, another format version, or missing fields.
    """
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenFileError(path, f"corrupted manifest: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise TokenFileError(path, "corrupted manifest: expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise TokenFileError(path, f"expected format version {FORMAT_VERSION}, got {version!r}")
    required = IDENTITY_FIELDS + (_PART_FIELDS if part else _MERGED_FIELDS)
    missing = [name for name in required if name not in manifest]
    if missing:
        raise TokenFileError(path, f"corrupted manifest: missing {missing}")
    for entry in manifest["shards"]:
        if not isinstance(entry, dict) or any(name not in entry for name in _SHARD_FIELDS):
            raise TokenFileError(path, f"corrupted manifest: bad shard entry {entry!r}")
    try:
        manifest["spec"] = TokenSpec.from_dict(manifest["spec"])
    except ValueError as error:
        raise TokenFileError(path, f"corrupted manifest: bad spec ({error})") from None
    return manifest


def identity_differences(existing: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Describe every identity field on which two manifests (or a manifest and a writer) differ.

    Args:
        existing: mapping with `IDENTITY_FIELDS` (spec as a `TokenSpec`).
        new: the same for the other side.

    Returns:
        Lines like `"codec 'wavtokenizer' vs 'titok'"`; empty when they agree.
    """
    differences = []
    for name in IDENTITY_FIELDS:
        old_value, new_value = existing[name], new[name]
        if old_value != new_value:
            if name == "spec":
                old_value, new_value = old_value.to_dict(), new_value.to_dict()
            differences.append(f"{name} {old_value!r} vs {new_value!r}")
    return differences


def merge_manifests(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Build `manifest.json` from the part manifests of every writer rank.

    For a multi-rank job, call this on one rank after a barrier, once every rank closed its
    `TokenWriter`. A single-rank writer calls it itself on `close()`.

    Args:
        directory: the token directory.

    Returns:
        The merged manifest as written (spec as a plain dict).

    Raises:
        TokenFileError: no part manifests; parts that disagree on spec, codec, config hash or
            checkpoint; a rank's part missing or not closed; a listed shard missing on disk.
    """
    directory = Path(directory)
    paths = part_manifest_paths(directory)
    if not paths:
        raise TokenFileError(
            directory, "no part manifests (manifest-r*.json) to merge: no TokenWriter wrote here"
        )
    parts = [load_manifest(path, part=True) for path in paths]
    first_path, first = paths[0], parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        differences = identity_differences(first, part)
        if differences:
            raise TokenFileError(
                path, f"disagrees with {first_path.name}: " + "; ".join(differences)
            )
    world_size = max(part["world_size"] for part in parts)
    missing = sorted(set(range(world_size)) - {part["rank"] for part in parts})
    if missing:
        raise TokenFileError(
            directory,
            f"no part manifest for ranks {missing} of world size {world_size}: "
            "merge after every rank has closed its writer (behind a barrier)",
        )
    unfinished = [path.name for path, part in zip(paths, parts) if not part["complete"]]
    if unfinished:
        raise TokenFileError(
            directory,
            f"writers of {unfinished} were not closed: rerun them (they resume) and "
            "merge after every rank has closed its writer",
        )
    shards = sorted((entry for part in parts for entry in part["shards"]), key=_shard_sort_key)
    for entry in shards:
        if not (directory / entry["file"]).is_file():
            raise TokenFileError(directory / entry["file"], "listed in a part manifest but missing")
    manifest = {
        "format_version": FORMAT_VERSION,
        "spec": first["spec"].to_dict(),
        "codec": first["codec"],
        "config_hash": first["config_hash"],
        "checkpoint_sha256": first["checkpoint_sha256"],
        "num_samples": sum(entry["num_samples"] for entry in shards),
        "num_tokens": sum(entry["num_tokens"] for entry in shards),
        "shards": shards,
        "skipped": [entry for part in parts for entry in part["skipped"]],
    }
    # A merge killed mid-write leaves its temporary file behind; only one process merges.
    for leftover in directory.glob(f".tmp-{MANIFEST_NAME}-*"):
        leftover.unlink(missing_ok=True)
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def _shard_sort_key(entry: dict[str, Any]) -> tuple[int, int, str]:
    """Sort shards by (rank, index); names that do not parse go last, by name."""
    parsed = shard_index(entry["file"])
    return (*parsed, entry["file"]) if parsed else (1 << 62, 0, entry["file"])
