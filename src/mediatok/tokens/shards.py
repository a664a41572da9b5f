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
`format_version`, `spec` (`TokenSpec.to_dict()`), `codec`, `config_hash`, `checkpoint_sha256`,
`keys` (one source key per sample) and `rank`.

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

FORMAT_VERSION = 1
METADATA_KEY = "mediatok"
_METADATA_FIELDS = ("format_version", "spec", "codec", "config_hash", "checkpoint_sha256", "keys")
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
            checkpoint_sha256, keys, rank).
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


def read_shard(path: str | os.PathLike[str], spec: TokenSpec | None = None) -> ShardData:
    """Open a shard zero-copy and check it.

    Checks: the file is as long as its header says (truncation), the header is valid JSON with
    every field (corruption), the format version, the vocabulary against `spec`, the dtypes and
    shapes of every tensor, and that offsets start at 0, never decrease, end at `len(codes)` and
    agree with `shapes`. Codes are not scanned; `TokenDataset.verify` does that.

    Args:
        path: the `.safetensors` shard.
        spec: the spec the caller expects; only vocabulary sizes and layout must match (order and
            geometry are taken from the file). None accepts any spec.

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
    missing = [name for name in _METADATA_FIELDS if name not in metadata]
    if missing:
        raise TokenFileError(path, f"corrupted header: metadata is missing {missing}")
    version = metadata["format_version"]
    if version != FORMAT_VERSION:
        raise TokenFileError(path, f"expected format version {FORMAT_VERSION}, got {version!r}")
    keys = metadata["keys"]
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise TokenFileError(path, "corrupted header: metadata keys are not a list of strings")
    try:
        metadata["spec"] = TokenSpec.from_dict(metadata["spec"])
    except ValueError as error:
        raise TokenFileError(path, f"corrupted header: bad spec ({error})") from None
    return metadata


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
        metadata: the `"mediatok"` metadata object (plain JSON).
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
