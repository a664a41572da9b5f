"""`mediatok decode`: token shards back to media files, one per source, and the writer of
decoded samples that `mediatok sample` and training's evaluations share.

Each source key decodes to the same relative path with the modality's suffix (`sub/a.jpg` ->
`sub/a.png`), at its source's length where the shards recorded it (audio durations). Decoding
into a folder again decodes only what is new or changed: `.mediatok-decode.json` there records,
for each file, the key it was decoded from, a digest of its codes and the sha256 of the weights
of the checkpoint that decoded it (`mediatok.checkpoint.weights_sha256`), so a file keeps its
name across reruns, and one that another checkpoint decoded (a retrained decoder) is decoded
again.

Tokens that another checkpoint encoded (the shards record its weights' sha256) are refused
unless `force=True` (`--force`): a checkpoint of the same codec with other weights decodes them
into plausible-looking garbage, unless it is a decoder retrained for that encoder's codes.

Layer 5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from mediatok.checkpoint import weights_sha256
from mediatok.codecs import Codec
from mediatok.modalities import DecodeOptions, modality_of
from mediatok.modalities.base import codec_settings
from mediatok.pipelines.common import check_decodes, load_decoding_codec
from mediatok.progress import progress
from mediatok.runtime import resolve_device
from mediatok.tokens import TokenDataset, TokenFileError
from mediatok.tokens.shards import atomic_write_json

__all__ = ["DECODE_INDEX", "DecodeResult", "decode_folder", "write_decoded"]

logger = logging.getLogger(__name__)

DECODE_INDEX = ".mediatok-decode.json"  # in the output folder: key -> file, codes, checkpoint
DECODE_INDEX_VERSION = 2  # 1: no checkpoint per file (such files are decoded again)
_DECODE_INDEX_SECONDS = 10.0  # at most this much decoding is redone after a kill


@dataclass
class DecodeResult:
    """What `decode_folder` did.

    Attributes:
        directory: the output folder.
        written: files decoded by this call.
        total: samples in the token directory (the others were decoded before, from the same
            codes by the same checkpoint).
        noun: what the files are ("images", "files").
        redecoded: of `written`, files that another checkpoint (or one the index does not name)
            had decoded into the folder before, decoded again with this one.
    """

    directory: Path
    written: int
    total: int
    noun: str
    redecoded: int = 0

    def summary(self) -> str:
        """What `mediatok decode` prints: "decoded 3 images into out (47 already there; 3
        decoded before by another checkpoint, replaced)"."""
        text = (
            f"decoded {self.written} {self.noun} into {self.directory} "
            f"({self.total - self.written} already there"
        )
        if self.redecoded:
            text += f"; {self.redecoded} decoded before by another checkpoint, replaced"
        return text + ")"


def decode_folder(
    checkpoint: str | os.PathLike,
    tokens: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: DecodeOptions | None = None,
    device: str = "auto",
    force: bool = False,
) -> DecodeResult:
    """Decode every sample of a token directory into a media file under `out`.

    A file decoded before into `out` from the same codes by a checkpoint with the same weights
    is kept; every other file is decoded (again), so decoding with a retrained decoder replaces
    what the old one wrote.

    Args:
        checkpoint: the codec checkpoint that encoded the tokens.
        tokens: a token directory written by `encode_folder`.
        out: the output folder (created).
        options: batch size, file format, audio chunking.
        device: "auto", "cpu", "cuda" or "cuda:N".
        force: decode tokens that another checkpoint of the same codec encoded (a decoder
            retrained on that encoder's codes); refused otherwise.

    Returns:
        What was decoded (see `DecodeResult`).

    Raises:
        ValueError: `out` is a file; a generator checkpoint, or a codec that does not decode
            these tokens (another codec, vocabulary, layout or geometry); tokens encoded by
            another checkpoint without `force`; sources that would decode to one file; a
            damaged decode index.
        TokenFileError: a damaged shard, or a key that is not a relative path inside `out`.
    """
    options = options or DecodeOptions()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"expected -o {out} to be a folder (or a path to create one), got an existing file"
        )
    device = resolve_device(device)
    codec = load_decoding_codec(checkpoint, device)
    dataset = TokenDataset(tokens)
    check_decodes(
        codec,
        dataset.spec,
        checkpoint,
        f"the tokens in {dataset.directory}",
        written_by=dataset.metadata["codec"],
    )
    sha256 = weights_sha256(checkpoint)
    encoder = dataset.metadata["checkpoint_sha256"]
    if encoder not in (None, sha256):
        if not force:
            raise ValueError(
                f"{dataset.directory} was encoded by another checkpoint of {codec.name} "
                f"(weights sha256 {encoder[:12]}...) than {checkpoint} ({sha256[:12]}...); "
                "decode with the checkpoint that encoded them, or, for a decoder retrained on "
                "that encoder's codes, pass force=True (--force)"
            )
        logger.info("decoding tokens of checkpoint %s... with %s", encoder[:12], checkpoint)
    modality = modality_of(codec)
    suffix = modality.suffix(options.format)
    codec_settings(codec, options.codec_settings)  # one the codec does not take: refused now
    index_path = out / DECODE_INDEX
    decoded = _read_decode_index(index_path)  # key -> {"file", "codes", "checkpoint"}
    recorded = {key: entry["file"] for key, entry in decoded.items()}
    names = _targets(dataset.directory, out, dataset.keys, suffix, recorded)

    def is_current(i: int) -> bool:  # decoded before into its file, from the same codes
        entry = decoded.get(dataset.keys[i])
        return (
            entry is not None
            and entry["file"] == names[i]
            and (out / names[i]).is_file()
            and entry["codes"] == _codes_digest(dataset, i)
            and entry.get("checkpoint") == sha256
        )

    def by_another_checkpoint(i: int) -> bool:  # its file holds another checkpoint's decode
        entry = decoded.get(dataset.keys[i])
        return (
            entry is not None
            and entry["file"] == names[i]
            and (out / names[i]).is_file()
            and entry.get("checkpoint") != sha256
        )

    lengths = [int(length) for length in dataset.lengths]
    indices = [i for i in modality.decode_order(lengths) if not is_current(i)]
    redecoded = sum(by_another_checkpoint(i) for i in indices)
    written, saved = 0, time.monotonic()
    try:
        batches = range(0, len(indices), options.batch_size)
        for start in progress(batches, desc="decode", unit="batch"):
            batch = indices[start : start + options.batch_size]
            dataset.check_codes(batch)  # a damaged shard: its name, not the quantizer's error
            items = [dataset[i] for i in batch]
            media = modality.decode(
                codec,
                [item["codes"] for item in items],
                [item.get("media_length") for item in items],
                device,
                options,
            )
            for i, item, sample in zip(batch, items, media, strict=True):
                modality.write(out / names[i], sample, codec.token_spec, item.get("media_rate"))
                decoded[dataset.keys[i]] = {
                    "file": names[i],
                    "codes": _codes_digest(dataset, i),
                    "checkpoint": sha256,
                }
            written += len(batch)
            if time.monotonic() - saved > _DECODE_INDEX_SECONDS:
                _write_decode_index(index_path, decoded)
                saved = time.monotonic()
    finally:  # also when stopped: the files written so far are not decoded again
        if written:
            _write_decode_index(index_path, decoded)
    return DecodeResult(out, written, len(dataset), modality.noun, redecoded)


def write_decoded(
    codec: Codec,
    codes: torch.Tensor,
    directory: str | os.PathLike,
    names: Sequence[str],
    lengths: torch.Tensor | None = None,
    *,
    options: DecodeOptions | None = None,
) -> list[Path]:
    """Decode a batch of samples with `codec` and write one file per row, in the modality's
    format (PNG for images, WAV or FLAC for audio).

    Args:
        codec: the codec the codes belong to (see `check_decodes`).
        codes: `(B, *token_shape)` int64.
        directory: created if needed.
        names: B file names without suffix.
        lengths: `(B,)` valid tokens per row along the spec's length axis, for variable-length
            samples (an AR sample that ended early): each row is decoded from its tokens alone
            (an audio decoder's attention would hear the padding after the end) and its media
            ends there.
        options: batch size, format, chunking.

    Returns:
        The written paths.
    """
    options = options or DecodeOptions()
    modality = modality_of(codec)
    suffix = modality.suffix(options.format)
    codec_settings(codec, options.codec_settings)  # one the codec does not take: refused now
    samples = list(codes)  # (*token_shape) each
    if lengths is not None:  # each row's own tokens: the padding after its end stays out
        axis = codec.token_spec.length_axis
        samples = [row.narrow(axis, 0, int(n)) for row, n in zip(samples, lengths, strict=True)]
    device = next(codec.parameters()).device
    paths = []
    for start in range(0, len(samples), options.batch_size):
        rows = slice(start, start + options.batch_size)
        media = modality.decode(codec, samples[rows], [None] * len(samples[rows]), device, options)
        for name, sample in zip(names[rows], media, strict=True):
            path = Path(directory) / f"{name}{suffix}"
            modality.write(path, sample, codec.token_spec)
            paths.append(path)
    return paths


def _read_decode_index(path: Path) -> dict[str, dict[str, str]]:
    """The files that earlier decodes into this folder wrote: key -> `{"file": path relative to
    the folder, "codes": _codes_digest, "checkpoint": the decoder's weights sha256}` (no
    "checkpoint" in a version-1 index: those files are decoded again); empty when there is no
    index yet."""
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        files = None
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("codes"), str)
        and isinstance(entry.get("file"), str)
        and isinstance(entry.get("checkpoint", ""), str)
        and _is_relative_inside(entry["file"])
        for entry in files.values()
    ):
        raise ValueError(
            f"{path}: expected the index that `mediatok decode` keeps (each key's file, codes "
            "digest and checkpoint), got a damaged file; delete it (every file is then decoded "
            "again)"
        )
    return files


def _write_decode_index(path: Path, files: dict[str, dict[str, str]]) -> None:
    """Write the decode index atomically (see `_read_decode_index`)."""
    atomic_write_json(path, {"format_version": DECODE_INDEX_VERSION, "files": files})


def _codes_digest(dataset: TokenDataset, index: int) -> str:
    """A digest of what sample `index` decodes from: its codes, their shape, its media length
    (and its media rate, where the shards record one)."""
    codes = dataset.sample_codes(index).astype("<i8")
    media_length = None if dataset.media_lengths is None else int(dataset.media_lengths[index])
    described: list = [list(codes.shape), media_length]
    if dataset.media_rates is not None and not math.isnan(dataset.media_rates[index]):
        described.append(float(dataset.media_rates[index]))
    digest = hashlib.sha256(json.dumps(described).encode())
    digest.update(codes.tobytes())
    return digest.hexdigest()[:32]


def _is_relative_inside(name: str) -> bool:
    """Whether `name` is a relative path that stays inside the folder it is joined to."""
    path = PurePosixPath(name)
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts


def _targets(
    tokens: Path, out: Path, keys: list[str], suffix: str, recorded: dict[str, str]
) -> list[str]:
    """Where the media decoded from each source key goes, relative to `out`: the same relative
    path with the new suffix (`sub/a.jpg` -> `sub/a.png`). Sources that would share a file
    (`a.jpg` and `a.png`, `a.wav` and `a.flac`) keep their whole name and gain the suffix
    (`a.jpg.png`), except one that already has it (`a.png` stays), so that no decoded file
    overwrites another. A key that an earlier decode wrote (`recorded`: key -> file) keeps its
    file, and no other key gets that file, so that names do not change when keys are added.

    Raises:
        TokenFileError: a key that is empty, absolute or has a `..` (it would be written outside
            `out`), naming the token directory and the key.
        ValueError: sources that would still decode to one file.
    """
    for key in keys:
        if not _is_relative_inside(key):
            raise TokenFileError(
                tokens,
                f"sample key {key!r} is not a relative path inside the output folder (it is "
                f"empty, absolute or has '..'): decoding writes each sample to {out}/KEY and "
                "refuses to write elsewhere",
            )
    owner = {file: key for key, file in recorded.items()}  # files that earlier decodes wrote
    plain = [PurePosixPath(key).with_suffix(suffix).as_posix() for key in keys]
    counts = Counter(plain)
    targets = []
    for key, path in zip(keys, plain, strict=True):
        earlier = recorded.get(key)
        if earlier is not None and PurePosixPath(earlier).suffix == suffix:
            targets.append(earlier)
            continue
        candidates = [f"{key}{suffix}"]
        if counts[path] == 1 or PurePosixPath(key).suffix == suffix:
            candidates.insert(0, path)
        free = [name for name in candidates if owner.get(name, key) == key]
        targets.append(free[0] if free else candidates[0])
    if len(set(targets)) != len(targets) or any(
        owner.get(name, key) != key for key, name in zip(keys, targets, strict=True)
    ):
        counts = Counter(targets)
        clashes = [
            key
            for key, name in zip(keys, targets, strict=True)
            if counts[name] > 1 or owner.get(name, key) != key
        ]
        raise ValueError(
            f"sources {clashes[:4]} would decode to the same file in {out} as another source; "
            "rename one of them and encode again, or decode to another folder"
        )
    return targets
