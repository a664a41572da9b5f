"""Damaged, incomplete and mismatched token files: every error names the file and the problem."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from mediatok.tokens import (
    FORMAT_VERSION,
    TokenDataset,
    TokenFileError,
    TokenSpec,
    TokenWriter,
    merge_manifests,
    read_shard,
)
from mediatok.tokens.shards import write_shard

SPEC = TokenSpec(vocab_sizes=[4096], layout="N")


def at(path: Path, problem: str) -> str:
    """Regex for a `TokenFileError` message: the exact file path, then `problem` (a regex)."""
    return re.escape(f"{path}: ") + problem


def codes_location(path: Path) -> tuple[int, int]:
    """Absolute (begin, end) byte range of the `codes` tensor in a shard file."""
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    begin, end = json.loads(data[8 : 8 + header_size])["codes"]["data_offsets"]
    return 8 + header_size + begin, 8 + header_size + end


def rewrite_metadata(path: Path, change) -> None:
    """Rewrite a shard with `change(metadata_dict)` applied to its mediatok metadata."""
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as file:
        metadata = json.loads(file.metadata()["mediatok"])
    change(metadata)
    save_file(tensors, path, metadata={"mediatok": json.dumps(metadata)})


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    """Six samples of 5..10 tokens in two closed shards of three."""
    rng = np.random.default_rng(0)
    with TokenWriter(tmp_path, SPEC, shard_size=3) as writer:
        for index in range(6):
            writer.add(rng.integers(0, 4096, size=5 + index), key=f"k{index}")
    return tmp_path


def test_truncated_shard(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00001.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TokenFileError, match=at(path, r"truncated file")):
        read_shard(path)
    with pytest.raises(TokenFileError, match=at(path, r"size mismatch")):
        TokenDataset(shard_dir)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(TokenFileError, match=at(path, r"truncated file")):
        read_shard(path)


def test_corrupted_header(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00000.safetensors"
    data = bytearray(path.read_bytes())
    data[8:12] = b"\x00}{]"
    path.write_bytes(bytes(data))
    with pytest.raises(TokenFileError, match=at(path, r"corrupted header: not valid JSON")):
        read_shard(path)


def test_wrong_format_version(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00000.safetensors"
    rewrite_metadata(path, lambda metadata: metadata.update(format_version=7))
    with pytest.raises(
        TokenFileError, match=at(path, f"expected format version {FORMAT_VERSION}, got 7")
    ):
        read_shard(path)


def test_wrong_vocabulary(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00000.safetensors"
    expected = TokenSpec([1024])
    message = (
        r"wrong vocabulary: expected vocab_sizes \[1024\] layout 'N', got vocab_sizes \[4096\]"
    )
    with pytest.raises(TokenFileError, match=at(path, message)):
        read_shard(path, expected)
    with pytest.raises(TokenFileError, match=at(shard_dir / "manifest.json", message)):
        TokenDataset(shard_dir, expected)


def test_bad_offsets_and_dtype(tmp_path: Path) -> None:
    metadata = {
        "format_version": FORMAT_VERSION,
        "spec": SPEC.to_dict(),
        "codec": None,
        "config_hash": None,
        "checkpoint_sha256": None,
        "class_names": None,
        "keys": ["a", "b"],
        "source_stats": None,
        "media_rates": None,
        "replaces": {},
        "rank": 0,
    }
    path = tmp_path / "shard-r000-00000.safetensors"
    codes = np.arange(6, dtype=np.uint16)
    offsets, shapes = np.array([0, 4, 2]), np.array([[4], [-2]])
    write_shard(path, codes, offsets, shapes, None, metadata)  # with valid checksums
    with pytest.raises(TokenFileError, match=at(path, r"bad offsets")):
        read_shard(path)
    write_shard(path, codes.astype(np.int32), offsets, shapes, None, metadata)
    with pytest.raises(
        TokenFileError, match=at(path, r"expected codes of dtype uint16.*got int32")
    ):
        read_shard(path)


@pytest.mark.parametrize(
    ("field", "value", "part"),
    [
        ("shards", None, False),
        ("skipped", {"k": "error"}, False),
        ("num_samples", "6", False),
        ("codec", 3, False),
        ("spec", None, False),
        ("shards", [{"file": "../shard.safetensors"}], False),
        ("world_size", 0, True),
        ("complete", "yes", True),
        ("skipped", [{"key": None, "error": "x"}], True),
    ],
)
def test_manifest_with_a_field_of_the_wrong_type(
    shard_dir: Path, field: str, value, part: bool
) -> None:
    path = shard_dir / ("manifest-r000.json" if part else "manifest.json")
    manifest = json.loads(path.read_text())
    if field == "shards" and value:  # a whole entry, with only its file name wrong
        value = [manifest["shards"][0] | value[0]]
    manifest[field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(TokenFileError, match=at(path, r"corrupted manifest: ")):
        TokenDataset(shard_dir) if not part else merge_manifests(shard_dir)


def test_shard_in_manifest_but_missing(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00001.safetensors"
    path.unlink()
    with pytest.raises(TokenFileError, match=at(path, r"shard listed in manifest.json is missing")):
        TokenDataset(shard_dir)


def test_shard_on_disk_but_in_no_manifest(shard_dir: Path) -> None:
    stray = shard_dir / "shard-r003-00000.safetensors"
    stray.write_bytes((shard_dir / "shard-r000-00000.safetensors").read_bytes())
    with pytest.raises(TokenFileError, match=at(stray, r".*unfinished job; rerun the writer")):
        TokenDataset(shard_dir)


def test_missing_manifest_says_to_rerun_or_to_merge(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"no manifest\.json and no part manifests"):
        TokenDataset(tmp_path)
    TokenWriter(tmp_path, SPEC, rank=0, world_size=2).close()
    # rank 1 never closed: merge_manifests would fail, so the advice is to rerun the encode
    with pytest.raises(TokenFileError) as error:
        TokenDataset(tmp_path)
    assert re.match(
        at(tmp_path, r".*interrupted.*ranks \[1\].*rerun `mediatok encode`"), str(error.value)
    )
    assert "merge_manifests" not in str(error.value)
    unclosed = TokenWriter(tmp_path, SPEC, rank=1, world_size=2)
    unclosed.add(np.arange(5), key="k0")
    unclosed.abort()
    with pytest.raises(TokenFileError, match=r"manifest-r001\.json'\] were not closed\); rerun"):
        TokenDataset(tmp_path)
    TokenWriter(tmp_path, SPEC, rank=1, world_size=2).close()
    # every rank closed, only the merge is missing (a job killed before it)
    with pytest.raises(TokenFileError, match=r"manifest-r000\.json, manifest-r001\.json.*merge_"):
        TokenDataset(tmp_path)
    merge_manifests(tmp_path)
    assert TokenDataset(tmp_path).keys == ["k0"]


def test_verify_catches_a_flipped_code_byte(shard_dir: Path) -> None:
    TokenDataset(shard_dir).verify()
    path = shard_dir / "shard-r000-00001.safetensors"
    begin, _ = codes_location(path)
    data = bytearray(path.read_bytes())
    data[begin + 1] ^= 0xF0  # high byte of the first code: now >= 4096
    path.write_bytes(bytes(data))
    dataset = TokenDataset(shard_dir)  # same size, header intact: opening does not scan
    with pytest.raises(TokenFileError, match=at(path, r"sha256 mismatch")):
        dataset.verify()
    # With the manifest's hash updated, the shard's own checksum still finds the damage.
    manifest_path = shard_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][1]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TokenFileError, match=at(path, r"payload checksum mismatch: 'codes'")):
        TokenDataset(shard_dir).verify()


def rewrite_codes(path: Path, change) -> None:
    """Rewrite a shard with `change(codes)` applied to a copy of its codes and valid checksums,
    as a writer with a bug would, and the manifests' size and hash of it updated."""
    shard = read_shard(path)
    codes = np.array(shard.codes)
    change(codes)
    metadata = {name: value for name, value in shard.metadata.items() if name != "crc32"}
    copies = [None if array is None else np.array(array) for array in (shard.labels,)]
    size, digest = write_shard(
        path,
        codes,
        np.array(shard.offsets),
        np.array(shard.shapes),
        copies[0],
        metadata,
        None if shard.media_lengths is None else np.array(shard.media_lengths),
    )
    for manifest_path in path.parent.glob("manifest*.json"):
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["shards"]:
            if entry["file"] == path.name:
                entry.update(bytes=size, sha256=digest)
        manifest_path.write_text(json.dumps(manifest))


def test_verify_finds_a_code_out_of_the_vocabulary_under_valid_checksums(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00001.safetensors"
    rewrite_codes(path, lambda codes: codes.__setitem__(6, 5000))  # k3's 7th code (k3 has 8)
    dataset = TokenDataset(shard_dir)
    with pytest.raises(TokenFileError, match=at(path, r"code 5000 of sample 'k3' is out of range")):
        dataset.verify()
    with pytest.raises(TokenFileError, match=at(path, r"code 5000 of sample 'k3' .*\.verify\(\)")):
        dataset.check_codes([3])


def test_a_flipped_bit_in_the_codes_is_caught_when_its_shard_is_first_read(
    shard_dir: Path,
) -> None:
    """A bit flipped on disk used to reach decode and train: the code stays in the vocabulary,
    the header stays intact, and only `verify()` (which no command calls) hashed the file."""
    path = shard_dir / "shard-r000-00001.safetensors"  # samples k3, k4, k5
    begin, _ = codes_location(path)
    data = bytearray(path.read_bytes())
    original = int.from_bytes(data[begin : begin + 2], "little")
    data[begin] ^= 0x01  # the lowest bit of k3's first code: still a valid code
    path.write_bytes(bytes(data))
    dataset = TokenDataset(shard_dir)  # opening reads headers only
    assert dataset[0]["key"] == "k0"  # another shard: fine
    message = at(path, r"payload checksum mismatch: 'codes' has crc32 [0-9a-f]{8}, the header ")
    for index in (3, 5):  # every sample of the damaged shard, the first access and later ones
        with pytest.raises(TokenFileError, match=message + r".*the file is damaged"):
            dataset[index]
    with pytest.raises(TokenFileError, match=message):
        read_shard(path, verify_payload=True)
    # The check is what stops it: without it the damaged code comes out as a valid one.
    unchecked = TokenDataset(shard_dir, verify_payload=False)[3]["codes"]
    assert int(unchecked[0]) == original ^ 1 and 0 <= int(unchecked[0]) < 4096


def test_a_changed_key_in_a_header_is_caught_on_open(shard_dir: Path) -> None:
    path = shard_dir / "shard-r000-00001.safetensors"
    data = path.read_bytes()
    key = b'\\"k4\\"'  # the metadata is a JSON string inside the JSON header
    assert data.count(key) == 1
    path.write_bytes(data.replace(key, key.replace(b"4", b"9")))  # valid JSON, same size
    with pytest.raises(TokenFileError, match=at(path, r"metadata checksum mismatch")):
        read_shard(path)
    with pytest.raises(TokenFileError, match=at(path, r"metadata checksum mismatch")):
        TokenDataset(shard_dir)


@pytest.mark.parametrize(
    ("shape", "empty"),
    [
        ([-2, -2], False),  # two negative sizes multiply to the right count
        ([2**32, 2**32], True),  # a count that overflows int64 to 0 must not match 0 bytes
    ],
)
def test_impossible_tensor_shape(shard_dir: Path, shape: list[int], empty: bool) -> None:
    path = shard_dir / "shard-r000-00000.safetensors"
    data = bytearray(path.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    assert header["offsets"]["shape"] == [4]  # offsets of three samples
    header["offsets"]["shape"] = shape
    if empty:
        begin = header["offsets"]["data_offsets"][0]
        header["offsets"]["data_offsets"] = [begin, begin]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(data[8 + header_size :]))
    with pytest.raises(TokenFileError, match=at(path, r"corrupted header: .*'offsets'")):
        read_shard(path)
