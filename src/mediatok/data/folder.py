"""What the image and audio readers share: the read error, per-item seeds, and a dataset over a
directory's files that skips or stops at an unreadable one.

Layer 3.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

ON_ERROR = ("skip", "stop")

logger = logging.getLogger("mediatok.data")


class MediaReadError(ValueError):
    """A media file cannot be read or decoded (`ImageReadError`, `AudioReadError`).

    Args:
        path: the file at fault; the message starts with it.
        problem: what went wrong, e.g. `"truncated or damaged JPEG data (...)"`.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[MediaReadError], tuple[Path, str]]:
        # The default pickling replays `cls(message)`, which this signature rejects; multiprocess
        # pipelines pickle exceptions.
        return type(self), (self.path, self.problem)


def list_files(root: str | os.PathLike[str], extensions: Iterable[str], noun: str) -> list[Path]:
    """Every file under `root` with one of `extensions`, recursively, in a deterministic order
    (`list_images` and `list_audio`).

    Files and directories whose names start with a dot are skipped (`.git`, `.ipynb_checkpoints`,
    macOS `._photo.jpg` resource forks, which carry a media suffix but are not media).
    Symbolic links to files are listed; links to directories are not followed (no cycles).

    Args:
        root: the directory to search.
        extensions: file suffixes to keep, matched case-insensitively; `"jpg"` and `".jpg"` both
            work.
        noun: what the files are, for the errors ("images", "audio files").

    Returns:
        Paths `root / relative`, sorted by their relative path's components, so the order does
        not depend on the file system.

    Raises:
        ValueError: `root` is missing or not a directory, or holds no matching file; the message
            names the directory and the extensions looked for.
    """
    root = Path(root)
    wanted = normalize_extensions(extensions)
    looked_for = ", ".join(sorted(wanted))
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise ValueError(
            f"expected a directory of {noun} ({looked_for}), got {root}, which {problem}"
        )
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found += [
            Path(directory, name)
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in wanted
        ]
    if not found:
        raise ValueError(f"no {noun} ({looked_for}) under {root}, searched recursively")
    return sorted(found, key=lambda path: path.relative_to(root).parts)


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """Lower-case suffixes with a leading dot; a single string is one extension."""
    if isinstance(extensions, str):
        extensions = (extensions,)
    normalized = frozenset(
        (extension if extension.startswith(".") else f".{extension}").lower()
        for extension in extensions
    )
    if not normalized or "." in normalized:
        raise ValueError(f"expected file extensions such as '.png', got {extensions!r}")
    return normalized


def item_seed(seed: int, epoch: int, index: int, draw: int = 0) -> int:
    """A 64-bit seed mixed from `(seed, epoch, index)`, and `draw` when it is not 0 (the copies
    of an item that `Repeated` shows several times an epoch); neighbours give unrelated
    streams."""
    key = (epoch, index) if draw == 0 else (epoch, index, draw)
    sequence = np.random.SeedSequence(seed, spawn_key=key)
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


class MediaFolder(Dataset):
    """Base of `ImageFolder` and `AudioFolder`: the files of `root`, read one per item.

    A file that cannot be read either stops the job (`on_error="stop"`: the reader's
    `MediaReadError` naming it) or is skipped (`"skip"`): a warning on the `"mediatok.data"`
    logger names it, it is appended to `skipped`, and the item is the next readable file in
    listing order (wrapping around), so the substitution is deterministic. Known-bad files are
    not read again. Subclasses set `noun` and implement `_read(path)` and
    `_item(data, index, draw)`.

    Args:
        root: the directory.
        paths: its files, in listing order.
        on_error: `"skip"` or `"stop"`.
        seed: non-negative base seed of random crops (see `item_seed`).
    """

    noun: ClassVar[str]  # one file's kind in messages: "image", "audio file"

    def __init__(
        self, root: str | os.PathLike[str], paths: list[Path], on_error: str, seed: int
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"expected on_error to be one of {ON_ERROR}, got {on_error!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"expected seed to be a non-negative int, got {seed!r}")
        self.root = Path(root)
        self.on_error = on_error
        self.seed = seed
        self.epoch = 0
        self.paths = paths
        self.keys = [path.relative_to(self.root).as_posix() for path in self.paths]
        self.skipped: list[Path] = []
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Use the random crops of `epoch` (a non-negative int) from now on."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"expected epoch to be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def generator(self, index: int, draw: int = 0) -> torch.Generator:
        """The random generator of item `index` (its copy `draw`) in the current epoch."""
        return torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index, draw))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item `index`, or the next readable one (see the class docstring)."""
        return self.get(index)

    def get(self, index: int, draw: int = 0) -> dict[str, Any]:
        """Item `index` with the random crop of its copy `draw` this epoch (`Repeated` shows
        copy d of item i at index i + d·len), or the next readable item.

        Raises:
            IndexError: index out of range.
            MediaReadError: with `on_error="stop"`, the file cannot be read.
            ValueError: with `on_error="skip"`, no file in the directory can be read.
        """
        index = operator.index(index)
        count = len(self.paths)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for {count} {self.noun}s in {self.root}")
        index %= count
        for offset in range(count):
            candidate = (index + offset) % count
            if candidate in self._unreadable:
                continue
            try:
                data = self._read(self.paths[candidate])
            except MediaReadError as error:
                if self.on_error == "stop":
                    raise
                self._unreadable.add(candidate)
                self.skipped.append(self.paths[candidate])
                logger.warning("skipping an unreadable %s: %s", self.noun, error)
                continue
            return self._item(data, candidate, draw)
        raise ValueError(
            f"no readable {self.noun} in {self.root}: all {count} files failed to decode "
            f"(first: {self.skipped[0] if self.skipped else '?'})"
        )

    def _read(self, path: Path) -> torch.Tensor:
        raise NotImplementedError

    def _item(self, data: torch.Tensor, index: int, draw: int) -> dict[str, Any]:
        raise NotImplementedError


class Repeated(Dataset):
    """`dataset` seen `times` times per epoch: index i reads item i mod len, as copy i // len.

    A dataset with `get(index, draw)` (`ImageFolder`, `AudioFolder`) gives each copy its own
    random crop; any other dataset's item is read as it is.
    """

    def __init__(self, dataset: Dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, index: int) -> Any:
        count = len(self.dataset)
        if not 0 <= index < count * self.times:
            raise IndexError(f"index {index} out of range for {count} items × {self.times}")
        item, draw = index % count, index // count
        if hasattr(self.dataset, "get"):
            return self.dataset.get(item, draw)
        return self.dataset[item]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
