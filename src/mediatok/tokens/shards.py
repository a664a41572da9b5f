"""The token shard format: one safetensors file, read zero-copy and checked on open.

A shard holds N samples as tensors:

- `codes`: 1-D, uint16 or int32 (`TokenSpec.code_dtype`), every sample's codes flattened in
  layout order (C order) and concatenated;
- `offsets`: int64 `(N + 1,)`, `offsets[0] == 0`, sample i is `codes[offsets[i]:offsets[i + 1]]`;
- `shapes`: int64 `(N, ndim)`, the token shape of each sample, so variable-length and multi-axis
  samples reshape back;
- `labels`: optional int64 `(N,)`;
- `media_lengths`: optional int64 `(N,)`, each source's length in the codec's own units at its
  rate (samples for audio, frames for video), so a decoder restores the exact duration that the
  token count gives only to within a hop.

The safetensors `__metadata__` holds one key, `"mediatok"`, whose value is a JSON object:

- `format_version`, `spec` (`TokenSpec.to_dict()`), `codec`, `config_hash`,
  `checkpoint_sha256`, `class_names` (the label names, label i is `class_names[i]`, or null);
- `keys`: one source key per sample; `rank`: the writer's rank;
- `source_stats`: per sample `[size in bytes, mtime in ns]` of its source file when it was
  encoded, or null (for the sample, or for the whole shard), so that a rerun re-encodes a source
  that changed;
- `media_rates`: per sample the source's rate (a video's frames per second) or null, or null for
  the whole shard, so that decoding writes a video back at its source's rate;
- `replaces`: `{key: shard file name}` for the samples of this shard that replace an older
  sample of the same key in that (older) shard: a source re-encoded because it changed. Readers
  drop the replaced sample, so a directory holds one live sample per key. The record lives in
  the new shard itself, so a shard adopted after a kill (renamed, not yet in a manifest) still
  says what it replaces;
- `crc32`: `{"metadata": CRC-32 of this object without `crc32` (JSON, sorted keys, no spaces),
  and one CRC-32 per tensor, of its bytes}`. The metadata's is checked on every open (it guards
  the keys, which no other check covers); the tensors' when asked (`verify_payload=True`), which
  `TokenDataset` does the first time it maps a shard: a flipped bit in the codes is an error
  naming the shard, not a wrong token handed to a decoder or a generator.

We parse the safetensors header ourselves (8-byte little-endian length, JSON, data) rather than
call `safetensors.safe_open`, so that damage is reported as a `TokenFileError` naming the file and
the problem, and so that the codes are an `np.memmap` view: opening a shard reads only its header.
Shards are written by `write_shard` to a temporary name, fsynced, then renamed: a killed job leaves
whole shards or nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mediatok.tokens.spec import TokenSpec

__all__ = [
    "FORMAT_VERSION",
    "ShardData",
    "TokenFileError",
    "atomic_write_json",
    "file_sha256",
    "read_shard",
    "write_shard",
]

# 2: class names, source stats, replaced samples and CRC-32 checksums (nothing was released at
# 1, so a shard of version 1 is refused like any other version, not read).
FORMAT_VERSION = 2
METADATA_KEY = "mediatok"
_METADATA_FIELDS = (
    "format_version",
    "spec",
    "codec",
    "config_hash",
    "checkpoint_sha256",
    "class_names",
    "keys",
    "source_stats",
    "media_rates",
    "replaces",
    "crc32",
)
CHECKSUM_FIELD = "crc32"
# No sane shard header (a few bytes per key) comes near this; a larger length field is damage.
_MAX_HEADER_BYTES = 1 << 30
# safetensors dtype names; stored little-endian whatever the machine.
_DTYPES = {
    "BOOL": "?",
    "U8": "<u1",
    "I8": "<i1",
    "U16": "<u2",
    "I16": "<i2",
    "U32": "<u4",
    "I32": "<i4",
    "U64": "<u8",
    "I64": "<i8",
    "F16": "<f2",
    "F32": "<f4",
    "F64": "<f8",
}


class TokenFileError(ValueError):
    """A token file or directory is damaged, incomplete or not what the caller expects.

    Args:
        path: the file (or directory) at fault; the message starts with it.
        problem: what is wrong, e.g. `"expected format version 1, got 7"`.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Rebuild from both arguments (DataLoader workers send exceptions to the main process).
        return type(self), (str(self.path), self.problem)


# Tensors a shard may lack: labels for unlabeled data, media lengths for codecs without them.
_OPTIONAL_TENSORS = ("labels", "media_lengths")


@dataclass
class ShardData:
    """One opened shard (see the module docstring for the tensors).

    Attributes:
        path: the shard file.
        spec: the `TokenSpec` stored in the shard.
        codes: `(L,)` uint16 or int32, read-only memory map.
        offsets: `(N + 1,)` int64.
        shapes: `(N, ndim)` int64.
        labels: `(N,)` int64, or None when the shard has no labels.
        media_lengths: `(N,)` int64 source lengths, or None.
        metadata: the `"mediatok"` metadata object (format_version, spec, codec, config_hash,
            checkpoint_sha256, class_names, keys, source_stats, replaces, crc32, rank).
    """

    path: Path
    spec: TokenSpec
    codes: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    labels: np.ndarray | None
    media_lengths: np.ndarray | None
    metadata: dict[str, Any]

    @property
    def keys(self) -> list[str]:
        """Source key of each sample, `(N,)`."""
        return self.metadata["keys"]

    @property
    def source_stats(self) -> list[tuple[int, int] | None]:
        """Per sample, `(size, mtime_ns)` of its source file when it was encoded, or None."""
        stats = self.metadata["source_stats"]
        if stats is None:
            return [None] * len(self)
        return [None if entry is None else (entry[0], entry[1]) for entry in stats]

    @property
    def media_rates(self) -> list[float | None]:
        """Per sample, its source's rate (a video's frames per second), or None."""
        rates = self.metadata["media_rates"]
        return [None] * len(self) if rates is None else list(rates)

    @property
    def replaces(self) -> dict[str, str]:
        """`{key: older shard file name}`: the samples this shard's samples replace."""
        return self.metadata["replaces"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sample(self, index: int) -> np.ndarray:
        """Codes of sample `index` in its token shape (a read-only view, no copy).

        Args:
            index: 0 <= index < len(self).

        Returns:
            `shapes[index]`-shaped array of the stored code dtype.
        """
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.codes[start:end].reshape(tuple(self.shapes[index]))


def read_shard(
    path: str | os.PathLike[str], spec: TokenSpec | None = None, *, verify_payload: bool = False
) -> ShardData:
    """Open a shard zero-copy and check it.

    Checks: the file is as long as its header says (truncation), the header is valid JSON with
    every field (corruption), the format version, the metadata's checksum, the vocabulary against
    `spec`, the dtypes and shapes of every tensor, and that offsets start at 0, never decrease,
    end at `len(codes)` and agree with `shapes`. With `verify_payload`, also every tensor's
    CRC-32 (this reads the whole file). Codes are not compared with the vocabulary;
    `TokenDataset.verify` does that.

    Args:
        path: the `.safetensors` shard.
        spec: the spec the caller expects; only vocabulary sizes and layout must match (order and
            geometry are taken from the file). None accepts any spec.
        verify_payload: check the CRC-32 of every tensor's bytes against the header's.

    Returns:
        The opened shard; its arrays are views of one read-only memory map of the file.

    Raises:
        TokenFileError: naming the file and the problem.
    """
    path = Path(path)
    header, data_start, file_size = _read_header(path)
    metadata = _parse_metadata(path, header)
    stored_spec = metadata["spec"]
    if spec is not None and not spec.same_vocabulary(stored_spec):
        raise TokenFileError(
            path, f"wrong vocabulary: expected {spec.describe()}, got {stored_spec.describe()}"
        )
    num_samples = len(metadata["keys"])
    expected = {
        "codes": (stored_spec.code_dtype, None),
        "offsets": (np.dtype(np.int64), (num_samples + 1,)),
        "shapes": (np.dtype(np.int64), (num_samples, stored_spec.ndim)),
        "labels": (np.dtype(np.int64), (num_samples,)),
        "media_lengths": (np.dtype(np.int64), (num_samples,)),
    }
    # Map the whole file once; every tensor is a view into it (one file descriptor per shard).
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, shape) in expected.items():
        if name not in header:
            if name in _OPTIONAL_TENSORS:
                continue
            raise TokenFileError(path, f"corrupted header: no {name!r} tensor")
        array = _tensor_view(path, raw, header[name], data_start, file_size, name)
        if array.dtype != dtype:
            raise TokenFileError(
                path,
                f"expected {name} of dtype {dtype} for {stored_spec.describe()}, got {array.dtype}",
            )
        if shape is not None and array.shape != shape:
            raise TokenFileError(path, f"expected {name} of shape {shape}, got {array.shape}")
        arrays[name] = array
    codes, offsets, shapes = arrays["codes"], arrays["offsets"], arrays["shapes"]
    if codes.ndim != 1:
        raise TokenFileError(path, f"expected 1-D codes, got shape {codes.shape}")
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(codes):
        raise TokenFileError(
            path,
            f"bad offsets: expected non-decreasing from 0 to len(codes) = {len(codes)}, "
            f"got first {offsets[0]}, last {offsets[-1]}",
        )
    if np.any(shapes < 0) or not np.array_equal(np.prod(shapes, axis=1), np.diff(offsets)):
        raise TokenFileError(path, "bad shapes: sample shapes do not match the offsets")
    checksums = metadata[CHECKSUM_FIELD]
    if set(checksums) - {"metadata"} != set(arrays):
        raise TokenFileError(
            path,
            f"corrupted header: expected a checksum for each of the tensors {sorted(arrays)}, "
            f"got checksums for {sorted(set(checksums) - {'metadata'})}",
        )
    if verify_payload:
        for name, array in arrays.items():
            _check_payload(path, name, array, checksums[name])
    return ShardData(
        path=path,
        spec=stored_spec,
        codes=codes,
        offsets=offsets,
        shapes=shapes,
        labels=arrays.get("labels"),
        media_lengths=arrays.get("media_lengths"),
        metadata={**metadata, "spec": stored_spec.to_dict()},
    )


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """Read and parse the safetensors header.

    Returns:
        (header dict, byte offset where tensor data starts, file size).
    """
    try:
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            if len(prefix) < 8:
                raise TokenFileError(
                    path,
                    f"truncated file: {file_size} bytes, shorter than the 8-byte header length",
                )
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > _MAX_HEADER_BYTES:
                raise TokenFileError(path, f"corrupted header: header length {header_size} bytes")
            if header_size > file_size - 8:
                raise TokenFileError(
                    path,
                    f"truncated file: header says {header_size} bytes, "
                    f"only {file_size - 8} follow the length prefix",
                )
            text = file.read(header_size)
    except FileNotFoundError:
        raise TokenFileError(path, "shard file does not exist") from None
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenFileError(path, f"corrupted header: not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise TokenFileError(path, "corrupted header: expected a JSON object")
    return header, 8 + header_size, file_size


def _parse_metadata(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """Parse and check the `"mediatok"` metadata; `spec` comes back as a `TokenSpec`."""
    try:
        metadata = json.loads(header["__metadata__"][METADATA_KEY])
    except (KeyError, TypeError):
        raise TokenFileError(path, f"corrupted header: no {METADATA_KEY!r} metadata") from None
    except json.JSONDecodeError as error:
        raise TokenFileError(path, f"corrupted header: metadata is not JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise TokenFileError(path, "corrupted header: metadata is not a JSON object")
    # The version first: a shard of another version is refused as such, not for the fields it
    # lacks.
    version = metadata.get("format_version")
    if "format_version" in metadata and version != FORMAT_VERSION:
        raise TokenFileError(path, f"expected format version {FORMAT_VERSION}, got {version!r}")
    missing = [name for name in _METADATA_FIELDS if name not in metadata]
    if missing:
        raise TokenFileError(path, f"corrupted header: metadata is missing {missing}")
    checksums = metadata[CHECKSUM_FIELD]
    if not isinstance(checksums, dict) or not all(
        isinstance(value, int) and not isinstance(value, bool) for value in checksums.values()
    ):
        raise TokenFileError(path, f"corrupted header: bad checksums {checksums!r}")
    recorded, computed = checksums.get("metadata"), metadata_crc32(metadata)
    if recorded != computed:
        raise TokenFileError(
            path,
            f"metadata checksum mismatch: the header records crc32 {_hex(recorded)}, its "
            f"metadata has {_hex(computed)}; {_DAMAGED}",
        )
    keys = metadata["keys"]
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise TokenFileError(path, "corrupted header: metadata keys are not a list of strings")
    _check_sample_fields(path, metadata, len(keys))
    try:
        metadata["spec"] = TokenSpec.from_dict(metadata["spec"])
    except ValueError as error:
        raise TokenFileError(path, f"corrupted header: bad spec ({error})") from None
    return metadata


# What a damaged file calls for: a re-encode cannot repair it in place (its keys count as done).
_DAMAGED = (
    "the file is damaged (a flipped bit on disk or in a copy); restore it from a good copy, or "
    "encode its sources again into a new directory"
)


def _hex(value: Any) -> str:
    return f"{value:08x}" if isinstance(value, int) else repr(value)


def metadata_crc32(metadata: dict[str, Any]) -> int:
    """CRC-32 of a shard's metadata without its `crc32` field: of its JSON with sorted keys and
    no spaces, which a JSON round trip leaves as it was (so the reader recomputes the writer's).

    Args:
        metadata: the plain-JSON metadata object (`spec` as a dict or a `TokenSpec`).
    """
    body = {name: value for name, value in metadata.items() if name != CHECKSUM_FIELD}
    if isinstance(body.get("spec"), TokenSpec):
        body["spec"] = body["spec"].to_dict()
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return zlib.crc32(text.encode("utf-8"))


def _check_sample_fields(path: Path, metadata: dict[str, Any], num_samples: int) -> None:
    """Check the types of `class_names`, `source_stats`, `media_rates` and `replaces`."""

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    names = metadata["class_names"]
    if names is not None and not (
        isinstance(names, list) and all(isinstance(name, str) for name in names)
    ):
        raise TokenFileError(path, f"corrupted header: bad class_names {names!r}")
    stats = metadata["source_stats"]
    if stats is not None and not (
        isinstance(stats, list)
        and len(stats) == num_samples
        and all(
            entry is None
            or (isinstance(entry, list) and len(entry) == 2 and all(map(integer, entry)))
            for entry in stats
        )
    ):
        raise TokenFileError(
            path,
            f"corrupted header: expected source_stats null or {num_samples} entries of "
            "[size, mtime_ns] or null",
        )
    rates = metadata["media_rates"]
    if rates is not None and not (
        isinstance(rates, list)
        and len(rates) == num_samples
        and all(
            rate is None
            or (
                isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate < math.inf
            )
            for rate in rates
        )
    ):
        raise TokenFileError(
            path,
            f"corrupted header: expected media_rates null or {num_samples} numbers > 0 or null",
        )
    replaces = metadata["replaces"]
    if not isinstance(replaces, dict) or not all(
        isinstance(name, str) and name not in ("", ".", "..", path.name) and "/" not in name
        for name in replaces.values()
    ):
        raise TokenFileError(
            path,
            f"corrupted header: expected replaces to map keys to other shard files, got "
            f"{replaces!r}",
        )
    unknown = set(replaces) - set(metadata["keys"]) if replaces else set()
    if unknown:
        raise TokenFileError(
            path,
            f"corrupted header: replaces names keys this shard does not hold: "
            f"{sorted(unknown)[:5]}",
        )


def _check_payload(path: Path, name: str, array: np.ndarray, recorded: int) -> None:
    """Raise TokenFileError unless the CRC-32 of `array`'s bytes is `recorded`."""
    computed = zlib.crc32(np.ascontiguousarray(array).view(np.uint8))
    if computed != recorded:
        raise TokenFileError(
            path,
            f"payload checksum mismatch: {name!r} has crc32 {_hex(computed)}, the header "
            f"records {_hex(recorded)}; {_DAMAGED}",
        )


def _tensor_view(
    path: Path, raw: np.ndarray, entry: Any, data_start: int, file_size: int, name: str
) -> np.ndarray:
    """View one header entry's bytes as an array, checking dtype, extent and truncation."""
    try:
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        shape = tuple(int(size) for size in entry["shape"])
        begin, end = (int(offset) for offset in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise TokenFileError(path, f"corrupted header: bad entry for {name!r}: {entry!r}") from None
    if any(size < 0 for size in shape):
        raise TokenFileError(path, f"corrupted header: {name!r} has a negative size {shape}")
    if end < begin or end - begin != dtype.itemsize * math.prod(shape):
        raise TokenFileError(path, f"corrupted header: {name!r} extent does not match its shape")
    if data_start + end > file_size:
        raise TokenFileError(
            path,
            f"truncated file: {name!r} ends at byte {data_start + end}, file has {file_size} bytes",
        )
    return raw[data_start + begin : data_start + end].view(dtype).reshape(shape)


def write_shard(
    path: Path,
    codes: np.ndarray,
    offsets: np.ndarray,
    shapes: np.ndarray,
    labels: np.ndarray | None,
    metadata: dict[str, Any],
    media_lengths: np.ndarray | None = None,
) -> tuple[int, str]:
    """Write a shard atomically: temporary name in the same directory, fsync, rename.

    Args:
        path: final file name.
        codes: `(L,)` in the spec's code dtype.
        offsets: `(N + 1,)` int64.
        shapes: `(N, ndim)` int64.
        labels: `(N,)` int64 or None.
        metadata: the `"mediatok"` metadata object (plain JSON) without `crc32`, which is
            computed here.
        media_lengths: `(N,)` int64 or None.

    Returns:
        (size in bytes, sha256 hex digest) of the written file.
    """
    from safetensors.numpy import save

    tensors = {"codes": codes, "offsets": offsets, "shapes": shapes}
    if labels is not None:
        tensors["labels"] = labels
    if media_lengths is not None:
        tensors["media_lengths"] = media_lengths
    # Little-endian, as safetensors stores them, so the reader's CRC of the mapped bytes matches.
    tensors = {
        name: np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        for name, array in tensors.items()
    }
    checksums = {"metadata": metadata_crc32(metadata)}
    checksums |= {name: zlib.crc32(array.view(np.uint8)) for name, array in tensors.items()}
    metadata = {**metadata, CHECKSUM_FIELD: checksums}
    # Serialized here and written with `open`, not `save_file`, which creates its file with
    # mode 0600 whatever the umask: shards get the mode of any other file (0644 under umask 022).
    data = save(tensors, metadata={METADATA_KEY: json.dumps(metadata)})
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)
    return len(data), hashlib.sha256(data).hexdigest()


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to `path` atomically (temporary file, fsync, rename)."""
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=1)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
