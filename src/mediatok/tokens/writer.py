"""`TokenWriter`: append samples' codes to a directory of token shards, resumably.

Each rank of a job writes its own shards (`shard-r{rank:03d}-{index:05d}.safetensors`) and its own
part manifest (`manifest-r{rank:03d}.json`, rewritten atomically after every shard). Nothing is
ever appended in place: a shard is written whole to a temporary name and renamed, so a killed job
leaves whole shards, and the samples it had not flushed yet are redone by the rerun.

Resume: a writer opened on a directory that already holds this rank's shards loads them, so
`done_keys` tells the caller which inputs to skip; a shard renamed into place but missing from the
part manifest (killed between the two) is checked and adopted; leftover temporary files are
deleted.

One writer per rank at a time: a writer holds its rank's lock file (`lock.py`) while it is open,
and a second one is refused with `TokenWriterBusy` before it touches anything.

Replacing: a sample added with `replaces=SHARD` (the shard that holds the key's current sample,
as `written.written_samples` reports it) supersedes that older sample; the new shard records it,
and readers see only the newest sample of each key. `mediatok encode` does this for a source
that changed since it was encoded (its `source_stats`, size and mtime, differ).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from mediatok.tokens.lock import RankLock
from mediatok.tokens.manifest import (
    MANIFEST_NAME,
    SOURCE_FIELD,
    identity_differences,
    load_manifest,
    merge_manifests,
    part_manifest_name,
    part_manifest_paths,
    shard_differences,
    shard_entry,
    shard_index,
    shard_name,
)
from mediatok.tokens.samples import (
    Sample,
    check_codes,
    check_label,
    check_media_length,
    check_media_rate,
    check_source_stats,
    to_numpy,
    trim,
)
from mediatok.tokens.shards import (
    FORMAT_VERSION,
    TokenFileError,
    atomic_write_json,
    file_sha256,
    read_shard,
    write_shard,
)
from mediatok.tokens.spec import TokenSpec

__all__ = ["TokenWriter"]


class TokenWriter:
    """Write samples' codes to token shards in `directory`.

    Args:
        directory: created if needed; shared by every rank of a job.
        spec: what the codes mean; stored in every shard and manifest.
        codec: name of the codec that produced the codes, or None.
        config_hash: hash of the codec's resolved config (`mediatok.config.config_hash`), or None.
        checkpoint_sha256: sha256 of the codec checkpoint, or None.
        shard_size: samples per shard (the last shard of each rank may hold fewer).
        rank: this writer's rank, 0 <= rank < world_size.
        world_size: number of writer ranks; with 1, `close()` also writes `manifest.json`.
        source_dir: the folder that the keys are paths in (`mediatok encode`'s input), recorded
            in the manifests; None when the keys are not paths (or not said).
        class_names: what the labels mean, label i is `class_names[i]` (distinct strings), or
            None. With names, every sample needs a label in `[0, len(class_names))`.

    Raises:
        ValueError: bad arguments, a directory path that is an existing file, or a directory
            that holds tokens of another spec, codec, config hash, checkpoint or class names, or
            keys of another source folder (the message names the directory and both values).
        TokenWriterBusy: (a `TokenFileError`) another open writer holds this rank of the
            directory, in this process or another.
        TokenFileError: this rank's existing shards are damaged or missing.

    Example:
        >>> with TokenWriter(path, TokenSpec(vocab_sizes=[4096])) as writer:  # doctest: +SKIP
        ...     for key, image in inputs:
        ...         if key not in writer.done_keys:
        ...             writer.add(codec.encode(image).codes[0], key=key)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        spec: TokenSpec,
        *,
        codec: str | None = None,
        config_hash: str | None = None,
        checkpoint_sha256: str | None = None,
        shard_size: int = 4096,
        rank: int = 0,
        world_size: int = 1,
        source_dir: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(spec, TokenSpec):
            raise TypeError(f"expected spec to be a TokenSpec, got {type(spec).__name__}")
        if shard_size < 1:
            raise ValueError(f"expected shard_size >= 1, got {shard_size}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"expected 0 <= rank < world_size, got rank {rank}, world size {world_size}"
            )
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(
                f"expected {self.directory} to be a token directory (or a path to create one), "
                "got an existing file; choose another path"
            )
        self.spec = spec
        # Recorded as text in the manifests; a wrong type fails here, not at the first flush.
        if not (source_dir is None or isinstance(source_dir, str | os.PathLike)):
            raise TypeError(
                f"expected source_dir to be a path or None, got {type(source_dir).__name__}"
            )
        self.source_dir = None if source_dir is None else str(Path(source_dir))
        self.class_names = _check_class_names(class_names)
        self.rank = rank
        self.world_size = world_size
        self.shard_size = shard_size
        self._identity = {
            "spec": spec,
            "codec": codec,
            "config_hash": config_hash,
            "checkpoint_sha256": checkpoint_sha256,
            "class_names": self.class_names,
        }
        self._shards: list[dict[str, Any]] = []  # this rank's part-manifest entries
        self._skipped: dict[str, str] = {}  # key -> error, in the order they came
        self._done: dict[str, str] = {}  # key in a flushed shard -> that shard's file name
        self._done_view: frozenset[str] | None = None
        self._foreign: dict[str, frozenset[str]] = {}  # other shards' keys, for `replaces`
        self._pending: list[Sample] = []
        self._pending_keys: set[str] = set()
        self._has_labels: bool | None = None  # decided by the first sample
        self._has_media_lengths: bool | None = None  # likewise
        self._next_index = 0
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        # Before anything is read or deleted: the temporary files are another live writer's.
        self._lock = RankLock(self.directory, rank)
        self._lock.acquire()
        try:
            self._remove_temporary_files()
            self._check_other_manifests()
            self._resume()
        except BaseException:
            self._lock.release()
            raise
        self._count = len(self._done)  # running counter for default keys

    # ---------------------------------------------------------------------------------------
    # public API

    @property
    def done_keys(self) -> frozenset[str]:
        """Keys of the samples already flushed to shards (by this rank), including earlier runs."""
        if self._done_view is None:
            self._done_view = frozenset(self._done)
        return self._done_view

    def add(
        self,
        codes: Any,
        label: int | None = None,
        key: str | None = None,
        media_length: int | None = None,
        *,
        source_stats: tuple[int, int] | None = None,
        replaces: str | None = None,
        media_rate: float | None = None,
    ) -> None:
        """Add one sample.

        Args:
            codes: integer array or tensor in the spec's layout, e.g. `(N,)`, `(H, W)` or `(Q, T)`
                with Q equal to the number of levels. Any integer dtype; copied.
            label: class label, or None. Either every sample of a directory has one or none does.
            key: source key (file name, dataset index...); defaults to a running counter,
                `"r{rank}-{n}"` when world_size > 1. Must not repeat.
            media_length: the source's length in the codec's units (audio samples at the
                codec's rate), so decoding restores its exact duration; None if not recorded.
                Like labels: every sample of a directory has one or none does.
            source_stats: `(size in bytes, mtime in ns)` of the source file, taken before it
                was read, so that a rerun can tell a changed source; None if not a file.
            replaces: the shard file that holds this key's current sample, which this one
                replaces (`written.written_samples(directory)[key].file`); None for a new key.
            media_rate: the source's rate (a video's frames per second), so that decoding
                writes it back at that rate; None if not recorded.

        Raises:
            ValueError: float codes, a wrong number of axes or levels, codes out of
                `[0, vocab_size)` of their level, a key already written (and not replaced) or
                one `replaces` does not hold, labels on some samples only, a label out of
                `class_names`.
        """
        self._check_open()
        sample = self._prepare(
            codes, label, key, self._count, media_length, source_stats, replaces, media_rate
        )
        self._check_new_keys([sample])
        self._append([sample])

    def add_batch(
        self,
        codes: Any,
        labels: Any = None,
        keys: Sequence[str] | None = None,
        lengths: Any = None,
        media_lengths: Any = None,
        *,
        source_stats: Sequence[tuple[int, int] | None] | None = None,
        replaces: Sequence[str | None] | None = None,
        media_rates: Any = None,
    ) -> None:
        """Add a batch of samples; all of them or, on an error, none.

        Args:
            codes: `(B, *sample_shape)` integer array or tensor.
            labels: `(B,)` integers, or None.
            keys: B source keys, or None for running-counter keys.
            lengths: `(B,)` integers, or None. Sample b keeps only its first `lengths[b]` entries
                along `spec.length_axis`, the first axis that is not Q (N for `"N"` and `"Q N"`,
                T for `"Q T"` and `"T H W"`, H for `"H W"`): for variable-length codecs whose
                batch is padded.
            media_lengths: `(B,)` source lengths (see `add`), or None.
            source_stats: B `(size, mtime_ns)` pairs or Nones (see `add`), or None.
            replaces: B shard file names or Nones (see `add`), or None.
            media_rates: `(B,)` source rates (see `add`), or None.

        Raises:
            ValueError: as `add`, or arguments whose batch sizes disagree.
        """
        self._check_open()
        codes = to_numpy(codes)
        if codes.ndim != self.spec.ndim + 1:
            raise ValueError(
                f"expected a batch of codes with {self.spec.ndim + 1} axes "
                f"(B, {self.spec.layout}), got shape {codes.shape}"
            )
        batch_size = len(codes)
        if labels is not None:
            labels = to_numpy(labels).reshape(-1)
        if lengths is not None:
            lengths = to_numpy(lengths).reshape(-1)
        if media_lengths is not None:
            media_lengths = to_numpy(media_lengths).reshape(-1)
        if media_rates is not None:
            media_rates = to_numpy(media_rates).reshape(-1)
        per_sample = {
            "labels": labels,
            "keys": keys,
            "lengths": lengths,
            "media_lengths": media_lengths,
            "source_stats": source_stats,
            "replaces": replaces,
            "media_rates": media_rates,
        }
        for name, values in per_sample.items():
            if values is not None and len(values) != batch_size:
                raise ValueError(f"expected {batch_size} {name}, got {len(values)}")
        samples = []
        for index in range(batch_size):
            sample = codes[index]
            if lengths is not None:
                sample = trim(sample, lengths[index], self.spec)
            samples.append(
                self._prepare(
                    sample,
                    None if labels is None else labels[index],
                    None if keys is None else keys[index],
                    self._count + index,
                    None if media_lengths is None else media_lengths[index],
                    None if source_stats is None else source_stats[index],
                    None if replaces is None else replaces[index],
                    None if media_rates is None else media_rates[index],
                )
            )
        self._check_new_keys(samples)
        self._append(samples)

    def skip(self, key: str, error: str) -> None:
        """Record a source that could not be read; it lands in the manifest's `skipped` list.

        A skipped key is not in `done_keys`, so a rerun retries it; skipping it again replaces
        the entry, and adding it later removes it.

        Args:
            key: the source key.
            error: why it was skipped (the exception text).
        """
        self._check_open()
        if not isinstance(key, str) or not isinstance(error, str):
            raise TypeError(f"expected key and error strings, got {key!r}, {error!r}")
        if key in self._done or key in self._pending_keys:
            raise ValueError(f"key {key!r} was already written to {self.directory}")
        self._skipped.pop(key, None)
        self._skipped[key] = error

    def close(self) -> None:
        """Flush the last partial shard and mark this rank complete in its part manifest.

        With world_size == 1 this also writes `manifest.json` (`merge_manifests`); with more
        ranks, call `merge_manifests(directory)` on one rank after a barrier. Releases the
        rank's lock. Idempotent.
        """
        if self._closed:
            return
        try:
            if self._pending:
                self._flush(self._pending)
            self._write_part_manifest(complete=True)
            self._closed = True
            if self.world_size == 1:
                merge_manifests(self.directory)
        finally:
            self._lock.release()

    def abort(self) -> None:
        """End a job that failed or was stopped: flush the samples added so far (finished work is
        kept) but leave this rank unfinished, so that no `manifest.json` claims the directory is
        complete; a rerun resumes and finishes it. Idempotent; a no-op after `close()`."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending:
                self._flush(self._pending)
            else:
                self._write_part_manifest(complete=False)
        finally:
            self._lock.release()

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # A failed job ends as if killed: unflushed samples are redone by the rerun and no
            # manifest.json claims the directory is finished.
            self._closed = True
            self._lock.release()

    # ---------------------------------------------------------------------------------------
    # checking samples

    def _prepare(
        self,
        codes: Any,
        label: Any,
        key: str | None,
        number: int,
        media_length: Any = None,
        source_stats: Any = None,
        replaces: Any = None,
        media_rate: Any = None,
    ) -> Sample:
        """Check one sample and convert it to the stored form; changes no state."""
        label = check_label(label)
        media_length = check_media_length(media_length)
        media_rate = check_media_rate(media_rate)
        source_stats = check_source_stats(source_stats)
        if replaces is not None and (not isinstance(replaces, str) or not shard_index(replaces)):
            raise ValueError(
                "expected replaces to name a shard file of this directory "
                f"(shard-r000-00000.safetensors), got {replaces!r}"
            )
        if self.class_names is not None and not (
            label is not None and 0 <= label < len(self.class_names)
        ):
            raise ValueError(
                f"expected a label in [0, {len(self.class_names)}) (an index of this writer's "
                f"{len(self.class_names)} class names), got {label!r}"
            )
        for name, value, has in (
            ("label", label, self._has_labels),
            ("media length", media_length, self._has_media_lengths),
        ):
            if has is not None and (value is not None) != has:
                state = f"have {name}s" if has else f"have no {name}s"
                raise ValueError(
                    f"this writer's samples {state}; every sample must match, got {name} {value!r}"
                )
        if key is None:
            key = str(number) if self.world_size == 1 else f"r{self.rank}-{number}"
        elif not isinstance(key, str):
            raise TypeError(f"expected key to be a string, got {type(key).__name__}")
        flat, shape = check_codes(codes, self.spec)
        return Sample(flat, shape, label, key, media_length, media_rate, source_stats, replaces)

    def _check_new_keys(self, samples: list[Sample]) -> None:
        keys = [sample.key for sample in samples]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate keys within one batch: {keys}")
        for sample in samples:
            key, old = sample.key, sample.replaces
            if key in self._pending_keys:
                raise ValueError(
                    f"key {key!r} was already written to {self.directory} by this writer"
                )
            if old is None and key in self._done:
                raise ValueError(
                    f"key {key!r} was already written to {self.directory}; "
                    "skip the inputs in writer.done_keys, or pass replaces= the shard that "
                    "holds it to replace it"
                )
            if old is None:
                continue
            # This rank's shards are all loaded (`_done`); another rank's is read to check (a
            # key of this rank's may have been replaced there, by a job with another world size).
            if shard_index(old)[0] == self.rank:
                if self._done.get(key) != old:
                    where = f"is in {self._done[key]}" if key in self._done else "has no sample"
                    raise ValueError(
                        f"key {key!r} {where} of this rank in {self.directory}, got "
                        f"replaces={old!r}"
                    )
            elif key not in self._keys_of(old):
                raise ValueError(f"{self.directory / old} holds no sample {key!r} to replace")

    def _keys_of(self, name: str) -> frozenset[str]:
        """The keys of shard `name` of the directory (cached), none if it does not exist."""
        if name not in self._foreign:
            path = self.directory / name
            keys = read_shard(path, self.spec).keys if path.is_file() else []
            self._foreign[name] = frozenset(keys)
        return self._foreign[name]

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"this TokenWriter on {self.directory} is closed")

    # ---------------------------------------------------------------------------------------
    # writing

    def _append(self, samples: list[Sample]) -> None:
        if samples:
            self._has_labels = samples[0].label is not None
            self._has_media_lengths = samples[0].media_length is not None
        for sample in samples:
            self._skipped.pop(sample.key, None)
        self._pending.extend(samples)
        self._pending_keys.update(sample.key for sample in samples)
        self._count += len(samples)
        while len(self._pending) >= self.shard_size:
            self._flush(self._pending[: self.shard_size])

    def _flush(self, samples: list[Sample]) -> None:
        """Write `samples` (the head of the pending list) as the next shard."""
        sizes = [sample.codes.size for sample in samples]
        offsets = np.zeros(len(samples) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(sizes)
        shapes = np.array([sample.shape for sample in samples], dtype=np.int64)
        labels = None
        if self._has_labels:
            labels = np.array([sample.label for sample in samples], dtype=np.int64)
        media_lengths = None
        if self._has_media_lengths:
            media_lengths = np.array([s.media_length for s in samples], dtype=np.int64)
        keys = [sample.key for sample in samples]
        stats = [None if s.source_stats is None else list(s.source_stats) for s in samples]
        rates = [s.media_rate for s in samples]
        metadata = {
            "format_version": FORMAT_VERSION,
            **self._identity,
            "spec": self.spec.to_dict(),
            "keys": keys,
            "source_stats": stats if any(entry is not None for entry in stats) else None,
            "media_rates": rates if any(rate is not None for rate in rates) else None,
            "replaces": {s.key: s.replaces for s in samples if s.replaces is not None},
            "rank": self.rank,
        }
        name = shard_name(self.rank, self._next_index)
        size, digest = write_shard(
            self.directory / name,
            np.concatenate([sample.codes for sample in samples]),
            offsets,
            shapes.reshape(len(samples), self.spec.ndim),
            labels,
            metadata,
            media_lengths,
        )
        self._next_index += 1
        self._shards.append(shard_entry(name, len(samples), int(offsets[-1]), size, digest))
        self._done.update(dict.fromkeys(keys, name))
        self._done_view = None
        self._pending_keys.difference_update(keys)
        del self._pending[: len(samples)]
        self._write_part_manifest(complete=False)

    def _write_part_manifest(self, *, complete: bool) -> None:
        atomic_write_json(
            self.directory / part_manifest_name(self.rank),
            {
                "format_version": FORMAT_VERSION,
                **self._identity,
                "spec": self.spec.to_dict(),
                "rank": self.rank,
                "world_size": self.world_size,
                SOURCE_FIELD: self.source_dir,
                "complete": complete,
                "shards": self._shards,
                "skipped": [{"key": key, "error": error} for key, error in self._skipped.items()],
            },
        )

    # ---------------------------------------------------------------------------------------
    # opening an existing directory

    def _remove_temporary_files(self) -> None:
        # Only this rank's: other ranks may be writing theirs right now.
        for pattern in (
            f".tmp-shard-r{self.rank:03d}-*",
            f".tmp-{part_manifest_name(self.rank)}-*",
        ):
            for leftover in self.directory.glob(pattern):
                leftover.unlink(missing_ok=True)

    def _check_other_manifests(self) -> None:
        """Refuse a directory whose manifests were written with another identity."""
        for path in [self.directory / MANIFEST_NAME, *part_manifest_paths(self.directory)]:
            if path.is_file():
                existing = load_manifest(path, part=path.name != MANIFEST_NAME)
                differences = identity_differences(existing, self._identity)
                if differences:
                    raise ValueError(
                        f"{self.directory} holds tokens written with another setup ({path.name} "
                        f"vs this writer): {'; '.join(differences)}; write to a new directory"
                    )
                source = existing.get(SOURCE_FIELD)
                if None not in (source, self.source_dir) and source != self.source_dir:
                    # Keys are paths in the source folder: another folder's `a.png` is not this
                    # one's, and would be taken for done.
                    raise ValueError(
                        f"{self.directory} holds tokens of the files in {source} ({path.name}); "
                        f"expected files of that folder, got {self.source_dir}: write the "
                        "tokens of another folder to a new directory"
                    )

    def _resume(self) -> None:
        """Load this rank's shards (listed or orphaned) so that `done_keys` and indices continue."""
        part_path = self.directory / part_manifest_name(self.rank)
        if part_path.is_file():
            part = load_manifest(part_path, part=True)
            self._shards = part["shards"]
            self._skipped = {entry["key"]: entry["error"] for entry in part["skipped"]}
            if self.source_dir is None:  # a writer told nothing keeps what was recorded
                self.source_dir = part.get(SOURCE_FIELD)
        listed = {entry["file"] for entry in self._shards}
        for entry in self._shards:
            path = self.directory / entry["file"]
            if not path.is_file():
                raise TokenFileError(path, f"listed in {part_path.name} but missing on disk")
            if path.stat().st_size != entry["bytes"]:
                raise TokenFileError(
                    path,
                    f"size mismatch: {part_path.name} says {entry['bytes']} bytes, "
                    f"file has {path.stat().st_size}",
                )
            self._load_shard(path)
        orphans = sorted(
            path
            for path in self.directory.glob(f"shard-r{self.rank:03d}-*.safetensors")
            if path.name not in listed and shard_index(path.name) is not None
        )
        for path in orphans:
            # Renamed into place, then killed before the manifest was written: the rename came
            # after fsync, so the file is whole; check it anyway, payload too, before trusting it.
            num_samples, num_tokens = self._load_shard(path, verify_payload=True)
            entry = shard_entry(
                path.name, num_samples, num_tokens, path.stat().st_size, file_sha256(path)
            )
            self._shards.append(entry)
        indices = [shard_index(entry["file"]) for entry in self._shards]
        self._next_index = 1 + max((index for _, index in filter(None, indices)), default=-1)
        if orphans:
            self._write_part_manifest(complete=False)

    def _load_shard(self, path: Path, verify_payload: bool = False) -> tuple[int, int]:
        """Check one of this rank's shards (loaded in the order they were written) and take its
        keys; returns (samples, tokens)."""
        shard = read_shard(path, self.spec, verify_payload=verify_payload)
        differences = shard_differences(shard, self._identity, self.rank)
        if differences:
            raise TokenFileError(
                path,
                f"written by another setup (this shard vs this writer): {'; '.join(differences)}; "
                "write to a new directory",
            )
        # A key may repeat only where this shard replaces the sample that an earlier one holds.
        duplicates = {
            key for key in shard.keys if key in self._done and shard.replaces.get(key) is None
        }
        if duplicates:
            raise TokenFileError(path, f"keys also in another shard: {sorted(duplicates)[:5]}")
        if self._has_labels is not None and self._has_labels != (shard.labels is not None):
            raise TokenFileError(path, "some shards of this rank have labels and some do not")
        self._has_labels = shard.labels is not None
        has_media_lengths = shard.media_lengths is not None
        if self._has_media_lengths not in (None, has_media_lengths):
            raise TokenFileError(path, "some shards of this rank have media lengths, some not")
        self._has_media_lengths = has_media_lengths
        self._done.update(dict.fromkeys(shard.keys, path.name))
        return len(shard), int(shard.offsets[-1])


def _check_class_names(names: Sequence[str] | None) -> list[str] | None:
    """`names` as a list of distinct non-empty strings, or None."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"expected class_names a sequence of non-empty strings, got {names!r}")
    names = list(names)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"expected distinct class names, got {repeated} more than once")
    return names
