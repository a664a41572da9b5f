"""`mediatok encode`: a folder of media into token shards, safely and resumably, on one or many
processes.

Encoding is safe to kill and rerun: finished shards are kept and their files are not encoded
again (Ctrl-C or SIGTERM also keep the samples of the current shard encoded so far). Under
`torchrun`, each rank encodes its share of the files (chosen by a hash of each file's path, so
files added before a rerun move no others) and writes its own shards; rank 0 merges the
manifests at the end. A rerun may use another number of ranks. A token directory holds the
files of one input folder.

The codec encodes without a process group: the quantizers sum their usage statistics over the
group in every forward, a collective that would deadlock as soon as two ranks encode a different
number of batches (or audio chunks). Ranks meet once, at the end, on a barrier.

Layer 5.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from mediatok.checkpoint import weights_sha256
from mediatok.codecs import load_codec
from mediatok.config import check_choice, config_hash
from mediatok.modalities import EncodeOptions, modality_of
from mediatok.pipelines.common import Stopped, Terminated, sigterm_stops_between_batches
from mediatok.runtime import barrier, resolve_device, torchrun_rank
from mediatok.tokens import TokenWriter, merge_manifests
from mediatok.tokens.writer import written_keys

__all__ = ["EncodeResult", "encode_folder", "rank_of"]

logger = logging.getLogger(__name__)


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
    """

    directory: Path
    total: int
    encoded: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    noun: str = "files"


def encode_folder(
    checkpoint: str | os.PathLike,
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: EncodeOptions | None = None,
    shard_size: int = 4096,
    on_error: Literal["skip", "stop"] = "skip",
    device: str = "auto",
) -> EncodeResult:
    """Encode the media files under `folder` (searched recursively) into token shards in `out`.

    Each unreadable file is logged as a warning and listed in the manifest's `skipped`
    (`on_error="skip"`), or stops the job (`"stop"`) with the finished shards kept.

    Args:
        checkpoint: a codec checkpoint directory.
        folder: the media; its files' paths relative to it are the samples' keys.
        out: the token directory (created; an earlier run's is resumed).
        options: batch size, image crop, audio chunking.
        shard_size: samples per shard.
        on_error: "skip" or "stop" at an unreadable file.
        device: "auto", "cpu", "cuda" or "cuda:N" (under torchrun: each rank's own GPU).

    Returns:
        What was encoded (see `EncodeResult`).

    Raises:
        Stopped: a file could not be read and `on_error` is "stop"; `Terminated` (a `Stopped`)
            on SIGTERM. What was encoded is kept, and a rerun continues; no `manifest.json`
            claims the directory is complete.
        ValueError, FileNotFoundError: a bad checkpoint, folder or token directory.
    """
    options = options or EncodeOptions()
    check_choice("on_error", on_error, ("skip", "stop"))
    rank, world = torchrun_rank()
    device = resolve_device(device)
    codec = load_codec(checkpoint).to(device)
    modality = modality_of(codec)
    root = Path(folder)
    files = modality.list_files(root)
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
    )
    keys = [path.relative_to(root).as_posix() for path in files]
    # A file's rank follows from its key alone, so files added before a rerun leave the others
    # where they were; and no rank redoes what any rank of any earlier run wrote (a run with
    # another world size, a single process after torchrun: `writer.done_keys` is this rank's).
    done = written_keys(out, codec.token_spec)
    mine = [rank_of(key, world) == rank for key in keys]
    todo = [path for path, key, ok in zip(files, keys, mine, strict=True) if ok and key not in done]
    finished = sum(key in done for key, ok in zip(keys, mine, strict=True) if ok)
    progress = tqdm(
        total=finished + len(todo), initial=finished, desc="encode", unit="file",
        disable=rank != 0 or None,
    )  # fmt: skip
    try:
        with sigterm_stops_between_batches() as check_stop:
            batches = modality.encode_files(codec, todo, device, options)
            for batch in batches:
                for path, message in batch.failures:
                    writer.skip(path.relative_to(root).as_posix(), message)
                    logger.warning("cannot read %s: %s", path, message)
                    if on_error == "stop":
                        batches.close()  # stops the audio reader threads now
                        raise Stopped(
                            f"stopped at {path} (on_error='stop', --on-error stop): {message}; "
                            "the finished shards are kept, rerun to continue"
                        )
                for piece in batch.encoded:
                    writer.add_batch(
                        piece.codes,
                        keys=[path.relative_to(root).as_posix() for path in piece.paths],
                        lengths=piece.lengths,
                        media_lengths=piece.media_lengths,
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
    result = EncodeResult(Path(out), len(files), 0, noun=modality.noun)
    if rank == 0:  # every rank's work, as merged
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
        current = set(keys)
        result.skipped = list(manifest["skipped"])
        result.encoded = len(files) - sum(entry["key"] in current for entry in result.skipped)
    else:
        result.encoded = len(writer.done_keys)
    return result


def rank_of(key: str, world: int) -> int:
    """The rank that encodes source `key`: a hash of the key, the same in every run."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % world
