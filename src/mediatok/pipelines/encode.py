"""`mediatok encode`: a folder of media into token shards, safely and resumably, on one or many
processes.

Encoding is safe to kill and rerun: finished shards are kept and their files are not encoded
again (Ctrl-C or SIGTERM also keep the samples of the current shard encoded so far). Under
`torchrun`, each rank encodes its share of the files (chosen by a hash of each file's path, so
files added before a rerun move no others) and writes its own shards; rank 0 merges the
manifests at the end. A rerun may use another number of ranks. A token directory holds the
files of one input folder, written by one job at a time (a second job is refused by the
writers' locks).

A rerun also re-encodes every file that changed since it was encoded: each sample records its
source's size and mtime (`source_stats`), and a file whose size or mtime differs now (or whose
label does) is encoded again into a new shard that replaces its old sample (`TokenWriter`'s
`replaces`), so readers see the new codes only. A changed file that cannot be read keeps its
earlier tokens and is reported (`EncodeResult.stale`).

Labels (`labels=`): "folders" makes each file's first-level subfolder its class (the ImageNet
layout), a CSV file names each file's class; class ids are the indices of the sorted class
names, which the manifest records (`TokenDataset.class_names`).

The codec encodes without a process group: the quantizers sum their usage statistics over the
group in every forward, a collective that would deadlock as soon as two ranks encode a different
number of batches (or audio chunks). Ranks meet once, at the end, on a barrier.

Layer 5.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import torch

from mediatok.checkpoint import weights_sha256
from mediatok.codecs import load_codec
from mediatok.config import check_choice, config_hash
from mediatok.modalities import EncodeOptions, modality_of
from mediatok.pipelines.common import Stopped, Terminated, sigterm_stops_between_batches
from mediatok.progress import progress as progress_bar
from mediatok.runtime import barrier, resolve_device, torchrun_rank
from mediatok.tokens import TokenSpec, TokenWriter, merge_manifests, read_shard
from mediatok.tokens.written import WrittenSample, written_samples

__all__ = ["EncodeResult", "class_labels", "encode_folder", "rank_of"]

logger = logging.getLogger(__name__)

# `labels=` value that takes each file's class from its first-level subfolder.
FOLDERS = "folders"


@dataclass
class EncodeResult:
    """What `encode_folder` did, as merged over every rank (on rank 0; other ranks see their
    own share only).

    Attributes:
        directory: the token directory.
        total: files of the modality in the input folder.
        encoded: of those, how many are in the directory now.
        skipped: `{"key", "error"}` of the files that could not be read.
        noun: what the files are ("images", "files").
        reencoded: files encoded again because they changed (size, mtime or label) since an
            earlier run encoded them.
        stale: `{"key", "error"}` of changed files that could not be read: their earlier tokens
            are kept (this rank's).
        class_names: the classes of the labels (label i is `class_names[i]`), or None.
    """

    directory: Path
    total: int
    encoded: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    noun: str = "files"
    reencoded: int = 0
    stale: list[dict[str, str]] = field(default_factory=list)
    class_names: list[str] | None = None


def encode_folder(
    checkpoint: str | os.PathLike,
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: EncodeOptions | None = None,
    shard_size: int = 4096,
    on_error: Literal["skip", "stop"] = "skip",
    device: str = "auto",
    labels: str | os.PathLike | None = None,
) -> EncodeResult:
    """Encode the media files under `folder` (searched recursively) into token shards in `out`.

    Each unreadable file is logged as a warning and listed in the manifest's `skipped`
    (`on_error="skip"`), or stops the job (`"stop"`) with the finished shards kept. A file that
    changed since an earlier run encoded it is encoded again (see the module docstring).

    Args:
        checkpoint: a codec checkpoint directory.
        folder: the media; its files' paths relative to it are the samples' keys.
        out: the token directory (created; an earlier run's is resumed).
        options: batch size, image crop, audio chunking.
        shard_size: samples per shard.
        on_error: "skip" or "stop" at an unreadable file.
        device: "auto", "cpu", "cuda" or "cuda:N" (under torchrun: each rank's own GPU).
        labels: None (no labels); "folders": each file's class is its first-level subfolder
            (a file directly in `folder` is an error); or a CSV file with a header row naming
            the columns `path` (relative to `folder`, `/`-separated) and `class` (other columns
            are ignored). A file with no row is skipped like an unreadable one (listed in
            `skipped`) with `on_error="skip"`, and stops the job before anything is encoded
            with `"stop"`; rows of files that are not in the folder are ignored. See
            `class_labels`.

    Returns:
        What was encoded (see `EncodeResult`).

    Raises:
        Stopped: a file could not be read and `on_error` is "stop"; `Terminated` (a `Stopped`)
            on SIGTERM. What was encoded is kept, and a rerun continues; no `manifest.json`
            claims the directory is complete.
        ValueError, FileNotFoundError: a bad checkpoint, folder, labels or token directory
            (another job writing it, other classes than an earlier run's).
    """
    options = options or EncodeOptions()
    check_choice("on_error", on_error, ("skip", "stop"))
    rank, world = torchrun_rank()
    device = resolve_device(device)
    root = Path(folder)
    codec = load_codec(checkpoint).to(device)
    modality = modality_of(codec)
    if options.num_tokens is not None and not codec.token_spec.geometry.get("prefix_decodable"):
        raise ValueError(
            f"expected a codec whose tokens decode from any prefix for num_tokens (--tokens), "
            f"got {codec.name}, whose token spec does not say prefix_decodable"
        )
    files = modality.list_files(root)
    keys = [path.relative_to(root).as_posix() for path in files]
    class_names, label_of = (None, {}) if labels is None else class_labels(labels, root, keys)
    unlabelled = [key for key in keys if class_names is not None and key not in label_of]
    if unlabelled and on_error == "stop":  # before anything is written
        raise ValueError(
            f"{labels}: expected a row for every file of {root}, got none for "
            f"{len(unlabelled)}: {', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''}"
            " (--on-error skip skips them)"
        )
    writer = TokenWriter(
        out,
        codec.token_spec,
        codec=codec.name,
        config_hash=config_hash(codec.config),
        checkpoint_sha256=weights_sha256(checkpoint),
        shard_size=shard_size,
        rank=rank,
        world_size=world,
        source_dir=str(root.resolve()),  # keys are paths in it: refuse another folder's
        class_names=class_names,
    )
    try:
        # A file's rank follows from its key alone, so files added before a rerun leave the
        # others where they were; and no rank redoes what any rank of any earlier run wrote (a
        # run with another world size, one process after torchrun: `writer.done_keys` is this
        # rank's), unless the file changed since.
        done = written_samples(out, codec.token_spec)
        # Shards of the last finished run: the others (this job's, an interrupted one's) hold
        # the re-encodes to report. Read before any rank merges (rank 0 does, after the barrier).
        finished_shards = _listed_shards(Path(out))
        mine = [
            (path, key)
            for path, key in zip(files, keys, strict=True)
            if rank_of(key, world) == rank
        ]
        stats = {key: _stats(path) for path, key in mine}
        changed = {
            key
            for _, key in mine
            if key in done and _changed(done[key], stats[key], label_of.get(key))
        }
        without_row = set(unlabelled)  # no class to write them with: skipped, if new
        changed -= without_row
        todo = [
            path
            for path, key in mine
            if (key not in done or key in changed) and key not in without_row
        ]
        to_skip = [key for _, key in mine if key in without_row and key not in done]
    except BaseException:
        writer.abort()
        raise
    finished = len(mine) - len(todo) - len(to_skip)
    progress = progress_bar(
        desc="encode", total=len(mine), initial=finished, unit="file", enabled=rank == 0
    )
    stale: list[dict[str, str]] = []
    try:
        with sigterm_stops_between_batches() as check_stop:
            for key in to_skip:
                writer.skip(key, f"no row for it in {labels}")
                logger.warning("no class for %s: no row for it in %s", root / key, labels)
            progress.update(len(to_skip))
            batches = modality.encode_files(codec, todo, device, options)
            for batch in batches:
                for path, message in batch.failures:
                    key = path.relative_to(root).as_posix()
                    if key in done:  # changed, now unreadable: its old sample stays
                        stale.append({"key": key, "error": message})
                        logger.warning(
                            "cannot read %s (changed since it was encoded; its earlier tokens "
                            "are kept): %s",
                            path,
                            message,
                        )
                    else:
                        writer.skip(key, message)
                        logger.warning("cannot read %s: %s", path, message)
                    if on_error == "stop":
                        batches.close()  # stops the audio reader threads now
                        raise Stopped(
                            f"stopped at {path} (on_error='stop', --on-error stop): {message}; "
                            "the finished shards are kept, rerun to continue"
                        )
                for piece in batch.encoded:
                    piece_keys = [path.relative_to(root).as_posix() for path in piece.paths]
                    codes, lengths = _prefix(
                        piece.codes, piece.lengths, options.num_tokens, codec.token_spec
                    )
                    writer.add_batch(
                        codes,
                        labels=None if class_names is None else [label_of[k] for k in piece_keys],
                        keys=piece_keys,
                        lengths=lengths,
                        media_lengths=piece.media_lengths,
                        media_rates=piece.media_rates,
                        source_stats=[stats[key] for key in piece_keys],
                        replaces=[done[key].file if key in done else None for key in piece_keys],
                    )
                progress.update(batch.size)
                check_stop()
    except Terminated:
        writer.abort()
        raise Terminated(
            f"stopped by SIGTERM; the {len(writer.done_keys)} samples this rank finished are "
            f"kept in {out}: rerun the same command to continue"
        ) from None
    except BaseException:
        # Stopped, Ctrl-C, an error: keep what was encoded, but claim no finished directory
        # (no manifest.json for a reader to take for the whole folder).
        writer.abort()
        raise
    else:
        writer.close()
    finally:
        progress.close()
    if world > 1:
        barrier()
        if rank == 0:
            merge_manifests(out)
    result = EncodeResult(Path(out), len(files), 0, noun=modality.noun, class_names=class_names)
    result.stale = stale
    stale_keys = {entry["key"] for entry in stale}
    if rank == 0:  # every rank's work, as merged
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
        current = set(keys)
        result.skipped = list(manifest["skipped"])
        result.encoded = len(files) - sum(entry["key"] in current for entry in result.skipped)
        replaced: set[str] = set()  # every rank's, since the last finished run
        for entry in manifest["shards"]:
            if entry["file"] not in finished_shards:
                replaced.update(read_shard(Path(out) / entry["file"]).replaces)
        result.reencoded = len(replaced & current)
    else:
        result.encoded = len(writer.done_keys)
        result.reencoded = len(changed - stale_keys)
    return result


def _listed_shards(directory: Path) -> set[str]:
    """The shard files that `manifest.json` lists (none without one, or with a damaged one,
    which the merge rewrites)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        return {entry["file"] for entry in manifest["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _stats(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a source file, taken before it is read (a change while it is encoded
    shows at the next run), or None if it cannot be read (its encoding fails and says why)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _changed(sample: WrittenSample, stats: tuple[int, int] | None, label: int | None) -> bool:
    """Whether a written sample is stale: its source's size or mtime, or its label, differ."""
    if sample.source_stats is not None and stats is not None and sample.source_stats != stats:
        return True
    return label is not None and sample.label != label


def class_labels(
    labels: str | os.PathLike, root: Path, keys: list[str]
) -> tuple[list[str], dict[str, int]]:
    """The class names and each file's class id, from its folder or from a CSV file.

    Args:
        labels: "folders" (the class of `cat/x.png` is `cat`) or the path of a CSV file with a
            header row naming the columns `path` and `class` (in any order; other columns are
            ignored), then one row per file: its path relative to `root` (`/`-separated, a
            leading `./` allowed) and its class name. Blank rows are ignored.
        root: the input folder.
        keys: the files' paths relative to `root`.

    Returns:
        (class names, sorted; `{key: class id}`, the id the index of its name). With "folders"
        the classes are the subfolders that hold files; with a CSV, every class a row names.

    Raises:
        ValueError: "folders" with files directly in `root`; a CSV without the header, with an
            empty path or class, or with a path listed twice. FileNotFoundError: no such CSV.
    """
    if os.fspath(labels) == FOLDERS:
        loose = [key for key in keys if "/" not in key]
        if loose:
            raise ValueError(
                f"expected every file of {root} in a class subfolder (--labels folders: a "
                f"file's class is the first folder of its path), got {len(loose)} directly in "
                f"it: {', '.join(loose[:5])}{' ...' if len(loose) > 5 else ''}"
            )
        classes = {key: key.split("/", 1)[0] for key in keys}
    else:
        classes = _read_label_csv(Path(labels))
    names = sorted(set(classes.values()))
    ids = {name: index for index, name in enumerate(names)}
    present = set(keys)
    return names, {key: ids[name] for key, name in classes.items() if key in present}


def _read_label_csv(path: Path) -> dict[str, str]:
    """`{relative path: class name}` from a labels CSV (see `class_labels`)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"expected --labels {FOLDERS} or a CSV file of path,class rows, got {path}, which is "
            "not a file"
        )
    with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a spreadsheet's BOM
        rows = list(csv.reader(file))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if "path" not in header or "class" not in header:
        raise ValueError(
            f"{path}: expected a header row naming the columns 'path' and 'class' (then one row "
            f"per file: its path relative to the input folder, its class), got "
            f"{rows[0] if rows else 'an empty file'}"
        )
    path_column, class_column = header.index("path"), header.index("class")
    classes: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row] + [""] * len(header)
        name, text = cells[class_column], cells[path_column]
        if not name or not text:
            raise ValueError(f"{path}, line {line}: expected a path and a class, got {row}")
        key = PurePosixPath(text).as_posix()  # "./a/b.png" is "a/b.png", as keys are
        if key in classes:
            raise ValueError(f"{path}, line {line}: {text} is listed twice (line {lines[key]})")
        classes[key], lines[key] = name, line
    return classes


def _prefix(
    codes: torch.Tensor, lengths: torch.Tensor | None, keep: int | None, spec: TokenSpec
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `keep` tokens of each sample along the spec's length axis (all: `keep` None),
    and their lengths."""
    if keep is None:
        return codes, lengths
    axis = 1 + spec.length_axis
    kept = torch.full((len(codes),), min(keep, codes.shape[axis]), dtype=torch.int64)
    if lengths is not None:
        kept = torch.minimum(kept, lengths.cpu())
    return codes.narrow(axis, 0, min(keep, codes.shape[axis])), kept


def rank_of(key: str, world: int) -> int:
    """The rank that encodes source `key`: a hash of the key, the same in every run."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % world
