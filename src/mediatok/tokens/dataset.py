"""`TokenDataset`: random access to a directory of token shards, plus batching for generators.

Opening a dataset reads `manifest.json` and every shard's header and small tensors (offsets,
shapes, labels); codes stay on disk and are memory-mapped on first access, at most
`max_open_shards` at a time (each map holds a file descriptor). The first time a shard is mapped,
the CRC-32 of its tensors is checked against its header (one read of the shard, once per dataset
object), so a flipped bit raises a `TokenFileError` naming the shard instead of feeding a wrong
code to a decoder or a generator. Items are `{"codes": LongTensor (sample shape), "label": int,
"key": str}`.

A sample that a later shard replaces (a source re-encoded because it changed; the shard's
`replaces`) is not served: the dataset holds the newest sample of each key only.

For generator training, `pad_collate` pads flattened samples into a batch and `pack` cuts the
stream of flattened samples, separated by a separator token, into fixed-length blocks.
"""

from __future__ import annotations

import operator
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mediatok.tokens.manifest import (
    MANIFEST_NAME,
    SOURCE_FIELD,
    identity_differences,
    last_job_problems,
    load_manifest,
    part_manifest_paths,
)
from mediatok.tokens.shards import TokenFileError, file_sha256, read_shard
from mediatok.tokens.spec import TokenSpec

__all__ = ["TokenDataset", "pack", "pad_collate"]


@dataclass
class _ShardIndex:
    """What a dataset keeps in memory per shard; the codes are mapped on demand."""

    path: Path
    entry: dict[str, Any]  # the manifest's shard entry
    offsets: np.ndarray  # (n + 1,) int64
    shapes: np.ndarray  # (n, ndim) int64
    keys: list[str]
    media_lengths: np.ndarray | None = None  # (n,) int64, when the shard records them
    media_rates: list[float | None] | None = None  # (n,), when the shard records them
    replaces: dict[str, str] | None = None  # key -> the older shard whose sample it replaces


class TokenDataset:
    """Samples of a token directory written by `TokenWriter` and merged into `manifest.json`.

    Args:
        directory: the token directory.
        spec: the spec the caller expects (vocabulary sizes and layout must match), or None to
            accept the stored one.
        max_open_shards: how many shards stay memory-mapped at once (least recently used first
            out); bounds open file descriptors on large datasets.
        verify_payload: check each shard's CRC-32s the first time it is mapped (reads each
            shard once; see the module docstring). Off only to measure what it costs.

    Attributes:
        spec: the stored `TokenSpec`.
        lengths: `(num_samples,)` int64, tokens per sample.
        labels: `(num_samples,)` int64, or None when the samples have no labels.
        class_names: what the labels mean (label i is `class_names[i]`), or None.
        media_lengths: `(num_samples,)` int64 source lengths (samples, frames), or None.
        keys: the source key of every sample.
        skipped: `[{"key", "error"}]`, sources the writers could not read.
        metadata: `format_version`, `codec`, `config_hash`, `checkpoint_sha256`,
            `class_names`, `source_dir` (the folder the keys are paths in, or None) from the
            manifest; `num_samples`, `num_tokens` of the live samples.

    Raises:
        TokenFileError: no manifest, wrong vocabulary, a listed shard missing or of the wrong
            size, a shard on disk that no manifest lists, a shard that replaces a sample no
            listed shard holds, or any damage `read_shard` detects.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        spec: TokenSpec | None = None,
        *,
        max_open_shards: int = 64,
        verify_payload: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.max_open_shards = max(1, max_open_shards)
        self.verify_payload = verify_payload
        manifest_path = self.directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise TokenFileError(self.directory, _no_manifest_problem(self.directory))
        manifest = load_manifest(manifest_path, part=False)
        self.spec: TokenSpec = manifest["spec"]
        if spec is not None and not spec.same_vocabulary(self.spec):
            raise TokenFileError(
                manifest_path,
                f"wrong vocabulary: expected {spec.describe()}, got {self.spec.describe()}",
            )
        self._check_files(manifest, manifest_path)
        indexed = [self._index_shard(entry, manifest) for entry in manifest["shards"]]
        self._shards = [shard for shard, _ in indexed]
        label_arrays = [labels for _, labels in indexed]
        if len({labels is None for labels in label_arrays}) > 1:
            raise TokenFileError(self.directory, "some shards have labels and some do not")
        sizes = [len(shard.keys) for shard in self._shards]
        if sum(sizes) != manifest["num_samples"]:
            raise TokenFileError(
                manifest_path,
                f"num_samples {manifest['num_samples']} but the shards hold {sum(sizes)}",
            )
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])  # (shards + 1,)
        # Stored sample number of each live one; None while every stored sample is live.
        self._live = self._live_samples()
        self.lengths = self._select(
            np.concatenate(
                [np.diff(shard.offsets) for shard in self._shards] or [np.zeros(0, np.int64)]
            )
        )
        self.labels = None
        if label_arrays and label_arrays[0] is not None:
            self.labels = self._select(np.concatenate(label_arrays))
        self.class_names: list[str] | None = manifest["class_names"]
        keys = [key for shard in self._shards for key in shard.keys]
        self.keys = keys if self._live is None else [keys[i] for i in self._live.tolist()]
        media = [shard.media_lengths for shard in self._shards]
        if len({lengths is None for lengths in media}) > 1:
            raise TokenFileError(self.directory, "some shards have media lengths and some not")
        self.media_lengths = None
        if media and media[0] is not None:
            self.media_lengths = self._select(np.concatenate(media))
        self.media_rates = None  # (num_samples,) float64, NaN where a sample records none
        if any(shard.media_rates is not None for shard in self._shards):
            rates = [
                np.nan if rate is None else rate
                for shard in self._shards
                for rate in (shard.media_rates or [None] * len(shard.keys))
            ]
            self.media_rates = self._select(np.array(rates, dtype=np.float64))
        self.skipped: list[dict[str, str]] = manifest["skipped"]
        self.metadata = {
            name: manifest[name]
            for name in (
                "format_version",
                "codec",
                "config_hash",
                "checkpoint_sha256",
                "class_names",
            )
        } | {
            SOURCE_FIELD: manifest.get(SOURCE_FIELD),
            "num_samples": len(self.keys),
            "num_tokens": int(self.lengths.sum()),
        }
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()  # shard number -> codes map
        self._verified: set[int] = set()  # shards whose CRC-32s were checked

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample.

        Args:
            index: in `[-len(self), len(self))`.

        Returns:
            `{"codes": LongTensor of the sample's token shape, "key": str}` plus `"label": int`
            when the dataset has labels, `"media_length": int` (the source's length in
            samples or frames) and `"media_rate": float` (a video's frames per second) when the
            shards record them.
        """
        index = self._normalize(index)
        item: dict[str, Any] = {
            "codes": torch.from_numpy(self.sample_codes(index).astype(np.int64)),
            "key": self.keys[index],
        }
        if self.labels is not None:
            item["label"] = int(self.labels[index])
        if self.media_lengths is not None:
            item["media_length"] = int(self.media_lengths[index])
        if self.media_rates is not None and not np.isnan(self.media_rates[index]):
            item["media_rate"] = float(self.media_rates[index])
        return item

    def sample_codes(self, index: int) -> np.ndarray:
        """Codes of one sample as stored, without conversion.

        Args:
            index: in `[-len(self), len(self))`.

        Returns:
            Read-only array of the sample's token shape, dtype `spec.code_dtype`.
        """
        number, local = self._locate(index)
        shard = self._shards[number]
        start, end = shard.offsets[local], shard.offsets[local + 1]
        return self._codes(number)[start:end].reshape(tuple(shard.shapes[local]))

    def check_codes(self, indices: Sequence[int]) -> None:
        """Cheap vocabulary check of some samples (one min and max per level over all of them),
        for a reader about to use their codes; `verify` scans every shard.

        Args:
            indices: sample indices, each in `[-len(self), len(self))`.

        Raises:
            TokenFileError: naming the shard and the key of the first sample with a code outside
                `[0, vocab size)` of its level.
        """
        samples = [self.sample_codes(index) for index in indices]
        levels = [_levels(codes, self.spec) for codes in samples if codes.size]
        if not levels:
            return
        stacked = np.concatenate(levels, axis=1)  # (Q, tokens of every sample)
        vocab_sizes = np.asarray(self.spec.vocab_sizes)
        if stacked.min() >= 0 and np.all(stacked.max(axis=1) < vocab_sizes):
            return
        for index, codes in zip(indices, samples, strict=True):
            if not codes.size:
                continue
            problem = _codes_problem(_levels(codes, self.spec), self.keys[index], vocab_sizes)
            if problem is not None:
                number, _ = self._locate(index)
                raise TokenFileError(
                    self._shards[number].path,
                    f"{problem}: the shard is damaged; run TokenDataset({str(self.directory)!r})"
                    ".verify() to check every shard",
                )

    def verify(self) -> None:
        """Full scan: recompute every shard's sha256 and CRC-32s and check every code against
        the vocabulary, and that no key has two live samples.

        Raises:
            TokenFileError: naming the first shard whose hash differs from the manifest or whose
                checksums differ from its header, or whose codes fall outside `[0, vocab size)`
                of their level (with the sample's key).
        """
        for shard in self._shards:
            digest = file_sha256(shard.path)
            if digest != shard.entry["sha256"]:
                raise TokenFileError(
                    shard.path,
                    f"sha256 mismatch: manifest says {shard.entry['sha256']}, file has {digest}",
                )
            data = read_shard(shard.path, self.spec, verify_payload=True)
            _check_shard_codes(data.codes, shard, self.spec)
        if len(set(self.keys)) != len(self.keys):
            raise TokenFileError(self.directory, "the same source key appears in several samples")

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get the index, not open maps (which would pickle as full copies).
        return {**self.__dict__, "_open": OrderedDict()}

    # ---------------------------------------------------------------------------------------

    def _normalize(self, index: int) -> int:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return index % len(self)

    def _locate(self, index: int) -> tuple[int, int]:
        """(shard number, sample number in it) of live sample `index`."""
        index = self._normalize(index)
        if self._live is not None:
            index = int(self._live[index])
        number = int(np.searchsorted(self._starts, index, side="right")) - 1
        return number, index - int(self._starts[number])

    def _select(self, values: np.ndarray) -> np.ndarray:
        """The live samples' entries of a per-stored-sample array."""
        return values if self._live is None else values[self._live]

    def _live_samples(self) -> np.ndarray | None:
        """Stored sample numbers of the live samples (those no later shard replaces), `(n,)`
        int64; None when all are live."""
        numbers = {shard.path.name: number for number, shard in enumerate(self._shards)}
        positions: dict[int, dict[str, int]] = {}  # shard number -> key -> sample in it
        replaced: set[int] = set()
        for shard in self._shards:
            for key, old in shard.replaces.items():
                target = numbers.get(old)
                if target is None:
                    raise TokenFileError(
                        shard.path,
                        f"replaces the sample of {key!r} in {old}, which {MANIFEST_NAME} does "
                        "not list",
                    )
                if target not in positions:
                    keys = self._shards[target].keys
                    positions[target] = {name: i for i, name in enumerate(keys)}
                if key not in positions[target]:
                    raise TokenFileError(
                        shard.path, f"replaces the sample of {key!r} in {old}, which holds none"
                    )
                stored = int(self._starts[target]) + positions[target][key]
                if stored in replaced:
                    raise TokenFileError(
                        shard.path,
                        f"replaces the sample of {key!r} in {old}, which another shard replaces "
                        "too: the key would have two live samples",
                    )
                replaced.add(stored)
        if not replaced:
            return None
        return np.setdiff1d(
            np.arange(int(self._starts[-1]), dtype=np.int64), np.fromiter(replaced, np.int64)
        )

    def _codes(self, number: int) -> np.ndarray:
        """The memory-mapped codes of shard `number`, opening it if needed (LRU); its payload
        checksums are checked the first time."""
        if number in self._open:
            self._open.move_to_end(number)
        else:
            verify = self.verify_payload and number not in self._verified
            shard = read_shard(self._shards[number].path, self.spec, verify_payload=verify)
            self._verified.add(number)
            self._open[number] = shard.codes
            while len(self._open) > self.max_open_shards:
                self._open.popitem(last=False)
        return self._open[number]

    def _check_files(self, manifest: dict[str, Any], manifest_path: Path) -> None:
        """Every listed shard is on disk with the listed size, and every shard on disk is listed."""
        listed = set()
        for entry in manifest["shards"]:
            path = self.directory / entry["file"]
            listed.add(entry["file"])
            if not path.is_file():
                raise TokenFileError(path, f"shard listed in {manifest_path.name} is missing")
            size = path.stat().st_size
            if size != entry["bytes"]:
                raise TokenFileError(
                    path,
                    f"size mismatch: {manifest_path.name} says {entry['bytes']} bytes, "
                    f"file has {size}",
                )
        for path in sorted(self.directory.glob("shard-*.safetensors")):
            if path.name not in listed:
                raise TokenFileError(
                    path,
                    f"shard is on disk but not in {manifest_path.name}: probably left by an "
                    "unfinished job; rerun the writer (same directory and rank) to adopt it, "
                    "then close it or run merge_manifests",
                )

    def _index_shard(
        self, entry: dict[str, Any], manifest: dict[str, Any]
    ) -> tuple[_ShardIndex, np.ndarray | None]:
        """Open one shard's header, check it against the manifest, keep its small tensors."""
        path = self.directory / entry["file"]
        data = read_shard(path, self.spec)
        differences = identity_differences({**data.metadata, "spec": data.spec}, manifest)
        if differences:
            raise TokenFileError(path, f"disagrees with {MANIFEST_NAME}: {'; '.join(differences)}")
        if len(data) != entry["num_samples"] or int(data.offsets[-1]) != entry["num_tokens"]:
            raise TokenFileError(
                path,
                f"holds {len(data)} samples and {int(data.offsets[-1])} tokens, "
                f"{MANIFEST_NAME} says {entry['num_samples']} and {entry['num_tokens']}",
            )
        labels = None if data.labels is None else np.array(data.labels)
        # Copies, so that the index does not keep the file mapped.
        index = _ShardIndex(path, entry, np.array(data.offsets), np.array(data.shapes), data.keys)
        index.media_lengths = None if data.media_lengths is None else np.array(data.media_lengths)
        index.media_rates = data.metadata["media_rates"]
        index.replaces = data.replaces
        return index, labels


def _no_manifest_problem(directory: Path) -> str:
    paths = part_manifest_paths(directory)
    if not paths:
        return (
            f"no {MANIFEST_NAME} and no part manifests: not a token directory written by "
            "TokenWriter"
        )
    _, problems = last_job_problems(paths, [load_manifest(path, part=True) for path in paths])
    if problems:
        return (
            f"no {MANIFEST_NAME}: encoding was interrupted ({'; '.join(problems)}); rerun "
            "`mediatok encode` with the same arguments to finish it (it resumes where it "
            "stopped); for your own TokenWriter, reopen and close it on each such rank"
        )
    names = ", ".join(path.name for path in paths)
    return (
        f"no {MANIFEST_NAME}, but every writer rank has closed its part manifest ({names}): run "
        "mediatok.tokens.merge_manifests on this directory"
    )


def _levels(codes: np.ndarray, spec: TokenSpec) -> np.ndarray:
    """A sample's codes as `(Q, tokens per level)`, Q = 1 for a spec of one level."""
    if spec.level_axis is None:
        return codes.reshape(1, -1)
    return np.moveaxis(codes, spec.level_axis, 0).reshape(spec.num_levels, -1)


def _codes_problem(levels: np.ndarray, key: str, vocab_sizes: np.ndarray) -> str | None:
    """Describe the first code of `levels` `(Q, tokens)` outside its level's vocabulary."""
    bad = (levels < 0) | (levels >= vocab_sizes[:, None])
    if not bad.any():
        return None
    level, column = (int(i[0]) for i in np.nonzero(bad))
    where = f" at level {level}" if len(vocab_sizes) > 1 else ""
    return (
        f"code {levels[level, column]} of sample {key!r}{where} is out of range: "
        f"expected [0, {vocab_sizes[level]})"
    )


def _check_shard_codes(codes: np.ndarray, shard: _ShardIndex, spec: TokenSpec) -> None:
    """Raise TokenFileError at the first code outside its level's vocabulary."""
    if spec.level_axis is None:
        # One level: one vectorised comparison over the whole shard.
        bad = np.flatnonzero((codes < 0) | (codes >= spec.vocab_sizes[0]))
        if bad.size:
            position = int(bad[0])
            sample = int(np.searchsorted(shard.offsets, position, side="right")) - 1
            raise TokenFileError(
                shard.path,
                f"code {codes[position]} of sample {shard.keys[sample]!r} is out of range: "
                f"expected [0, {spec.vocab_sizes[0]})",
            )
        return
    vocab_sizes = np.asarray(spec.vocab_sizes)
    for sample, key in enumerate(shard.keys):
        start, end = shard.offsets[sample], shard.offsets[sample + 1]
        if start == end:
            continue
        levels = _levels(codes[start:end].reshape(tuple(shard.shapes[sample])), spec)
        problem = _codes_problem(levels, key, vocab_sizes)
        if problem is not None:
            raise TokenFileError(shard.path, problem)


def pad_collate(batch: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Collate `TokenDataset` items into a padded batch of flattened samples.

    Args:
        batch: B items, each with `codes` of any token shape, `key` and optionally `label`.
        pad_id: filler after each sample's tokens (a code the model never predicts, or one that
            the loss masks with `lengths`).

    Returns:
        `{"codes": (B, L_max) int64, samples flattened in layout order and right-padded,
        "lengths": (B,) int64, "keys": list of B str}` plus `"labels": (B,) int64` when the
        items have labels.

    Raises:
        ValueError: an empty batch, or labels on some items only.
    """
    if not batch:
        raise ValueError("expected at least one item to collate, got an empty batch")
    flat = [torch.as_tensor(item["codes"]).reshape(-1) for item in batch]
    lengths = torch.tensor([len(codes) for codes in flat], dtype=torch.int64)
    codes = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.int64)  # (B, L_max)
    for row, sample in enumerate(flat):
        codes[row, : len(sample)] = sample
    collated: dict[str, Any] = {
        "codes": codes,
        "lengths": lengths,
        "keys": [item.get("key") for item in batch],
    }
    with_labels = sum("label" in item for item in batch)
    if with_labels not in (0, len(batch)):
        raise ValueError(
            f"expected labels on every item or none, got {with_labels} of {len(batch)}"
        )
    if with_labels:
        collated["labels"] = torch.tensor([int(item["label"]) for item in batch], dtype=torch.int64)
    return collated


def pack(
    dataset: TokenDataset,
    seq_len: int,
    separator_id: int,
    *,
    indices: Sequence[int] | None = None,
) -> Iterator[torch.Tensor]:
    """Concatenate flattened samples, each followed by `separator_id`, into fixed-length blocks.

    The stream is `s0 tokens, sep, s1 tokens, sep, ...` cut every `seq_len` tokens; a sample may
    straddle two blocks, and the last, incomplete block is dropped.

    Args:
        dataset: the samples.
        seq_len: tokens per block, >= 1.
        separator_id: token placed after every sample (usually a reserved id, e.g. the largest
            vocabulary size, that no codec emits).
        indices: the order of samples (e.g. a shuffled permutation per epoch); default all, in
            order.

    Returns:
        An iterator of `(seq_len,)` int64 tensors.
    """
    if seq_len < 1:
        raise ValueError(f"expected seq_len >= 1, got {seq_len}")
    order = range(len(dataset)) if indices is None else indices
    return _packed_blocks(dataset, seq_len, operator.index(separator_id), order)


def _packed_blocks(
    dataset: TokenDataset, seq_len: int, separator_id: int, order: Sequence[int]
) -> Iterator[torch.Tensor]:
    separator = np.array([separator_id], dtype=np.int64)
    pieces: list[np.ndarray] = []
    buffered = 0
    for index in order:
        pieces += [dataset.sample_codes(index).reshape(-1).astype(np.int64), separator]
        buffered += pieces[-2].size + 1
        if buffered < seq_len:
            continue
        stream = np.concatenate(pieces)
        num_blocks = len(stream) // seq_len
        blocks = stream[: num_blocks * seq_len].reshape(
            num_blocks, seq_len
        )  # (num_blocks, seq_len)
        yield from torch.from_numpy(blocks).unbind(0)
        pieces = [stream[num_blocks * seq_len :]]
        buffered = pieces[0].size
