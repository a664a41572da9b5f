"""Manifests of a token directory: one part manifest per writer rank, and the merged one.

```
tokens/
  shard-r000-00000.safetensors   shard-r000-00001.safetensors   shard-r001-00000.safetensors ...
  manifest-r000.json  manifest-r001.json     # one per rank, rewritten atomically after each shard
  manifest.json                              # merge_manifests(): what TokenDataset opens
  .lock-r000  .lock-r001                     # held by the live writer of each rank (writer.py)
```

A part manifest holds the writer's identity (`spec`, `codec`, `config_hash`,
`checkpoint_sha256`, `class_names`), its `rank`, `world_size`, whether the writer was
`complete`ly closed, its `shards` (`file`, `num_samples`, `num_tokens`, `bytes`, `sha256`) and
the `skipped` sources (`key`, `error`), and optionally `source_dir`, the folder the keys are paths
in (`mediatok encode`'s input, resolved). The merged manifest holds the identity, `source_dir`,
`num_samples`, `num_tokens` and the shards and skipped sources of every rank. `num_samples` and
`num_tokens` count what the shards store, samples that a re-encode replaced included (see
`shards.py`, `replaces`); `TokenDataset` serves only the live ones.

A directory may be resumed by a job with another number of ranks. Every job has a rank 0, so
rank 0's part manifest gives the world size of the last job; part manifests of higher ranks are
left by an earlier job with more ranks. Their shards are whole and are kept, closed or not: the
later job skipped every key that any shard holds (`written.written_keys`) and wrote the rest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mediatok.tokens.shards import (
    FORMAT_VERSION,
    TokenFileError,
    atomic_write_json,
    file_sha256,
    read_shard,
)
from mediatok.tokens.spec import TokenSpec

__all__ = [
    "IDENTITY_FIELDS",
    "MANIFEST_NAME",
    "SOURCE_FIELD",
    "identity_differences",
    "last_job_problems",
    "load_manifest",
    "merge_manifests",
    "part_manifest_name",
    "part_manifest_paths",
    "shard_differences",
    "shard_entry",
    "shard_index",
    "shard_name",
]

MANIFEST_NAME = "manifest.json"
# What must agree between every shard and manifest of one directory. `class_names` too: label i
# means class_names[i], so a rerun with other classes (a class folder added) would mix ids.
IDENTITY_FIELDS = ("spec", "codec", "config_hash", "checkpoint_sha256", "class_names")
# Optional (absent in directories written before it, or by a writer given no source folder).
SOURCE_FIELD = "source_dir"
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
        TokenFileError: unreadable JSON, another format version, missing fields or fields of
            the wrong type.
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
    _check_field_types(path, manifest, part=part)
    try:
        manifest["spec"] = TokenSpec.from_dict(manifest["spec"])
    except (ValueError, TypeError) as error:
        raise TokenFileError(path, f"corrupted manifest: bad spec ({error})") from None
    return manifest


def _check_field_types(path: Path, manifest: dict[str, Any], *, part: bool) -> None:
    """Raise TokenFileError naming the first field of `manifest` with a value of the wrong type."""

    def count(value: Any) -> bool:  # bool is an int, but no count
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def text_or_none(value: Any) -> bool:
        return value is None or isinstance(value, str)

    def names_or_none(value: Any) -> bool:
        return value is None or (
            isinstance(value, list) and all(isinstance(name, str) for name in value)
        )

    def file_name(value: Any) -> bool:  # a name in the directory, never a path out of it
        return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value

    checks: dict[str, tuple[Any, str]] = {
        "spec": (lambda value: isinstance(value, dict), "a JSON object"),
        "codec": (text_or_none, "a string or null"),
        "config_hash": (text_or_none, "a string or null"),
        "checkpoint_sha256": (text_or_none, "a string or null"),
        "class_names": (names_or_none, "a list of strings or null"),
        SOURCE_FIELD: (text_or_none, "a string or null"),
        "shards": (lambda value: isinstance(value, list), "a list"),
        "skipped": (lambda value: isinstance(value, list), "a list"),
    }
    if part:
        checks |= {
            "rank": (count, "an integer >= 0"),
            "world_size": (lambda value: count(value) and value >= 1, "an integer >= 1"),
            "complete": (lambda value: isinstance(value, bool), "true or false"),
        }
    else:
        checks |= {
            "num_samples": (count, "an integer >= 0"),
            "num_tokens": (count, "an integer >= 0"),
        }
    for name, (valid, expected) in checks.items():
        if name in manifest and not valid(manifest[name]):
            raise TokenFileError(
                path,
                f"corrupted manifest: expected {name!r} to be {expected}, got {manifest[name]!r}",
            )
    shard_checks = {
        "file": file_name,
        "num_samples": count,
        "num_tokens": count,
        "bytes": count,
        "sha256": lambda value: isinstance(value, str),
    }
    for entry in manifest["shards"]:
        if not isinstance(entry, dict) or not all(
            name in entry and valid(entry[name]) for name, valid in shard_checks.items()
        ):
            raise TokenFileError(path, f"corrupted manifest: bad shard entry {entry!r}")
    for entry in manifest["skipped"]:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(name), str) for name in ("key", "error")
        ):
            raise TokenFileError(path, f"corrupted manifest: bad skipped entry {entry!r}")


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
            if name == "class_names":
                differences.append(_class_names_difference(old_value, new_value))
                continue
            differences.append(f"{name} {old_value!r} vs {new_value!r}")
    return differences


def _class_names_difference(old: list[str] | None, new: list[str] | None) -> str:
    """`class_names` of both sides, shortened for a thousand ImageNet classes, and why they
    must agree."""

    def short(names: list[str] | None) -> str:
        if names is None or len(names) <= 8:
            return repr(names)
        return f"{len(names)} classes [{', '.join(map(repr, names[:3]))}, ...]"

    text = f"class_names {short(old)} vs {short(new)}"
    if old is not None and new is not None:
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        text += f" (added {added[:5]}, removed {removed[:5]})" if added or removed else ""
    return text + " (a label is an index of the class names: other classes renumber them)"


def last_job_problems(paths: list[Path], parts: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """What keeps the last job's part manifests from being merged.

    Args:
        paths: the part manifests (`part_manifest_paths`).
        parts: them loaded (`load_manifest(..., part=True)`).

    Returns:
        (world size of the last job: rank 0's, else the largest recorded; a description of each
        of its ranks with no part manifest or one it did not close, empty when all closed).
    """
    by_rank = {part["rank"]: (path, part) for path, part in zip(paths, parts)}
    if 0 in by_rank:
        world_size = by_rank[0][1]["world_size"]
    else:
        world_size = max(part["world_size"] for part in parts)
    problems = []
    missing = [rank for rank in range(world_size) if rank not in by_rank]
    if missing:
        problems.append(f"no part manifest for ranks {missing} of world size {world_size}")
    # A rank of the last job that is not closed, or whose part is still an earlier job's.
    unfinished = [
        path.name
        for rank, (path, part) in sorted(by_rank.items())
        if rank < world_size and not (part["complete"] and part["world_size"] == world_size)
    ]
    if unfinished:
        problems.append(f"writers of {unfinished} were not closed")
    return world_size, problems


def merge_manifests(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Build `manifest.json` from the part manifests of every writer rank.

    For a multi-rank job, call this on one rank after a barrier, once every rank closed its
    `TokenWriter`. A single-rank writer calls it itself on `close()`. The ranks of the last job
    (rank 0's world size) must all be closed; shards of higher ranks, left by an earlier job with
    more ranks (see the module docstring), are kept, adopting those whose part manifest does not
    list them (killed between the rename and the manifest write).

    Args:
        directory: the token directory.

    Returns:
        The merged manifest as written (spec as a plain dict).

    Raises:
        TokenFileError: no part manifests; parts that disagree on spec, codec, config hash,
            checkpoint, class names or source folder; a rank of the last job missing or not
            closed; a listed shard missing on disk; a damaged shard of an earlier job.
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
    sources = sorted({part.get(SOURCE_FIELD) for part in parts} - {None})
    if len(sources) > 1:
        raise TokenFileError(
            directory, f"part manifests were written from different source folders: {sources}"
        )
    world_size, problems = last_job_problems(paths, parts)
    if problems:
        raise TokenFileError(
            directory,
            f"{'; '.join(problems)}: rerun them (they resume) and merge after every rank has "
            "closed its writer (behind a barrier)",
        )
    shards = [entry for part in parts for entry in part["shards"]]
    shards += _earlier_job_orphans(
        directory, first, world_size, {entry["file"] for entry in shards}
    )
    shards.sort(key=_shard_sort_key)
    for entry in shards:
        if not (directory / entry["file"]).is_file():
            raise TokenFileError(directory / entry["file"], "listed in a part manifest but missing")
    manifest = {
        "format_version": FORMAT_VERSION,
        "spec": first["spec"].to_dict(),
        "codec": first["codec"],
        "config_hash": first["config_hash"],
        "checkpoint_sha256": first["checkpoint_sha256"],
        "class_names": first["class_names"],
        SOURCE_FIELD: sources[0] if sources else None,
        "num_samples": sum(entry["num_samples"] for entry in shards),
        "num_tokens": sum(entry["num_tokens"] for entry in shards),
        "shards": shards,
        "skipped": _skipped(directory, parts, shards),
    }
    # A merge killed mid-write leaves its temporary file behind; only one process merges.
    for leftover in directory.glob(f".tmp-{MANIFEST_NAME}-*"):
        leftover.unlink(missing_ok=True)
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def shard_entry(name: str, num_samples: int, num_tokens: int, size: int, digest: str) -> dict:
    """A part or merged manifest's entry for one shard file."""
    return {
        "file": name,
        "num_samples": num_samples,
        "num_tokens": num_tokens,
        "bytes": size,
        "sha256": digest,
    }


def shard_differences(shard: Any, identity: dict[str, Any], rank: int) -> list[str]:
    """How a shard read back (`read_shard`) differs from the writer `identity` and `rank` it
    should have: the identity fields (`identity_differences`), then the rank."""
    differences = identity_differences({**shard.metadata, "spec": shard.spec}, identity)
    if shard.metadata.get("rank") != rank:
        differences.append(f"rank {shard.metadata.get('rank')!r} vs {rank!r}")
    return differences


def _earlier_job_orphans(
    directory: Path, identity: dict[str, Any], world_size: int, listed: set[str]
) -> list[dict[str, Any]]:
    """Entries for the shards of ranks >= `world_size` (an earlier job's) that no part manifest
    lists, each checked as the writer checks its own orphans."""
    entries = []
    for path in sorted(directory.glob("shard-r*-*.safetensors")):
        parsed = shard_index(path.name)
        if parsed is None or parsed[0] < world_size or path.name in listed:
            continue
        shard = read_shard(path, identity["spec"], verify_payload=True)  # whole, being read
        differences = shard_differences(shard, identity, parsed[0])
        if differences:
            raise TokenFileError(
                path,
                "written by another setup (this shard vs the part manifests): "
                + "; ".join(differences),
            )
        size, digest = path.stat().st_size, file_sha256(path)
        entries.append(shard_entry(path.name, len(shard), int(shard.offsets[-1]), size, digest))
    return entries


def _skipped(
    directory: Path, parts: list[dict[str, Any]], shards: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Every rank's skipped sources, once each, without those that a shard holds: after a change
    of world size, a key that one rank skipped may have moved to another rank that encoded it."""
    skipped = {entry["key"]: entry for part in parts for entry in part["skipped"]}
    if skipped and len(parts) > 1:
        for entry in shards:
            for key in read_shard(directory / entry["file"]).keys:
                skipped.pop(key, None)
    return list(skipped.values())


def _shard_sort_key(entry: dict[str, Any]) -> tuple[int, int, str]:
    """Sort shards by (rank, index); names that do not parse go last, by name."""
    parsed = shard_index(entry["file"])
    return (*parsed, entry["file"]) if parsed else (1 << 62, 0, entry["file"])
