"""What a token directory already holds, for a job that resumes it: the live sample of every
source key, of every rank, and what its source was when it was encoded.

A sample is live unless a later shard replaces it (the shard's `replaces`, see `shards.py`). A
job resumed on more files than before, or with another split of them between ranks, skips
what any rank already wrote (`TokenWriter.done_keys` holds only its own rank's), and
re-encodes a source whose size or mtime differs from its `source_stats`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from mediatok.tokens.manifest import shard_index
from mediatok.tokens.shards import TokenFileError, read_shard
from mediatok.tokens.spec import TokenSpec

__all__ = ["WrittenSample", "written_keys", "written_samples"]


class WrittenSample(NamedTuple):
    """Where a source key's live sample is, and what it was encoded from."""

    file: str  # the shard's file name
    source_stats: tuple[int, int] | None  # (size, mtime_ns) of the source, or None
    label: int | None


def written_samples(
    directory: str | os.PathLike[str], spec: TokenSpec | None = None
) -> dict[str, WrittenSample]:
    """The live sample of every source key in `directory`, of every rank, listed in a manifest
    or not: a sample that a later shard replaces (`replaces`) is not live.

    A job resumed on more files than before, or with another split of them between ranks,
    skips what any rank already wrote (`TokenWriter.done_keys` holds only its own rank's), and
    re-encodes a source whose size or mtime differs from its `source_stats`. Shards are renamed
    into place whole, so reading them while other ranks write is safe.

    Args:
        directory: a token directory; one that does not exist holds no keys.
        spec: the spec the caller expects (vocabulary checked, as `read_shard`), or None.

    Returns:
        `{key: WrittenSample(file, source_stats, label)}`.

    Raises:
        TokenFileError: a damaged shard, one of another vocabulary, or a key with two live
            samples (neither replacing the other).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    found: dict[tuple[str, str], WrittenSample] = {}  # (file, key) -> its sample
    replaced: set[tuple[str, str]] = set()
    for path in sorted(directory.glob("shard-r*-*.safetensors")):
        if shard_index(path.name) is None:
            continue
        shard = read_shard(path, spec)
        labels = [None] * len(shard) if shard.labels is None else shard.labels.tolist()
        for key, stats, label in zip(shard.keys, shard.source_stats, labels, strict=True):
            found[path.name, key] = WrittenSample(path.name, stats, label)
        replaced.update((old, key) for key, old in shard.replaces.items())
    live: dict[str, WrittenSample] = {}
    for (name, key), sample in found.items():
        if (name, key) in replaced:
            continue
        if key in live:
            raise TokenFileError(
                directory,
                f"source key {key!r} has a sample in {live[key].file} and in {name}, neither "
                "replacing the other: the directory was written by two jobs at once, or copied "
                "together from two; encode the folder again into a new directory",
            )
        live[key] = sample
    return live


def written_keys(directory: str | os.PathLike[str], spec: TokenSpec | None = None) -> set[str]:
    """Source keys of every shard in `directory` (`written_samples`'s keys).

    Args:
        directory: a token directory; one that does not exist holds no keys.
        spec: the spec the caller expects, or None.

    Raises:
        TokenFileError: as `written_samples`.
    """
    return set(written_samples(directory, spec))
