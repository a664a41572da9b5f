"""One live writer per rank of a token directory: an advisory lock file per rank.

Two jobs writing one directory with the same rank (two `mediatok encode` runs of different
folders into one `-o`) would each rewrite the rank's part manifest over the other's and number
their shards alike: both would report success over a corrupt directory. A `TokenWriter` therefore
holds an exclusive `flock` on `.lock-r{rank:03d}` in the directory from its start to its
`close()` or `abort()`; a second writer of that rank is refused before it touches a file, with
the process that holds the lock named (pid, host, start time, written into the lock file).

Ranks of one job lock different files, so torchrun's ranks write side by side as before. The lock
belongs to an open file, not to a process: two writers in one process are refused as two
processes are, and the operating system drops it when the process dies (kill -9 included), so a
rerun after a crash never finds a stale lock. The lock file itself stays (deleting it could let
two writers lock two different files of one name).

`flock` is POSIX (Linux, macOS; on NFS, Linux maps it to byte-range locks that the server
arbitrates). Without `fcntl` (Windows), or on a file system that refuses locks, the writer logs
a warning and runs unlocked: nothing then stops a second job, so run one job per directory.

Layer 3: the standard library only.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO

from mediatok.tokens.shards import TokenFileError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["RankLock", "TokenWriterBusy", "lock_name"]

logger = logging.getLogger(__name__)

# errno values of a lock that another open file holds (EWOULDBLOCK == EAGAIN on Linux).
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}


def lock_name(rank: int) -> str:
    """File name of rank `rank`'s lock: `.lock-r000`."""
    return f".lock-r{rank:03d}"


class TokenWriterBusy(TokenFileError):
    """Another live `TokenWriter` writes this rank of the directory.

    Args:
        directory: the token directory.
        rank: the rank asked for.
        holder: who holds it, as recorded in the lock file ("pid 123 on host-a since ..."), or
            "" when it recorded nothing readable.
    """

    def __init__(self, directory: str | os.PathLike[str], rank: int, holder: str) -> None:
        self.rank, self.holder = rank, holder
        who = f" ({holder})" if holder else ""
        super().__init__(
            directory,
            f"another writer is writing rank {rank} of this token directory right now{who}; "
            "two jobs writing one directory would corrupt it: wait for that one to finish (then "
            "rerun, it resumes), or write to another directory",
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, str]]:
        return type(self), (str(self.path), self.rank, self.holder)


class RankLock:
    """The exclusive lock of one rank of a token directory (see the module docstring).

    Args:
        directory: the token directory (must exist).
        rank: the writer's rank.
    """

    def __init__(self, directory: Path, rank: int) -> None:
        self.directory, self.rank = Path(directory), rank
        self.path = self.directory / lock_name(rank)
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise at once.

        Raises:
            TokenWriterBusy: another open file holds it (this process's or another's).
        """
        if self._file is not None:
            return
        if fcntl is None:
            logger.warning(
                "%s: no file locks on this platform (no fcntl): a second job writing rank %d of "
                "this directory would not be refused; run one job per directory",
                self.directory,
                self.rank,
            )
            return
        # A file object, not a bare descriptor: a writer dropped without close() is collected
        # and its file closed, which releases the lock.
        file = open(self.path, "a+b")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(file) if error.errno in _HELD else ""
            file.close()
            if error.errno in _HELD:
                raise TokenWriterBusy(self.directory, self.rank, holder) from None
            logger.warning(
                "%s: cannot lock %s (%s): a second job writing rank %d of this directory would "
                "not be refused; run one job per directory",
                self.directory,
                self.path.name,
                error.strerror,
                self.rank,
            )
            return
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": started}
        file.truncate(0)
        file.write(json.dumps(record).encode("utf-8"))
        file.flush()
        self._file = file

    def release(self) -> None:
        """Drop the lock (idempotent); the file stays."""
        file, self._file = self._file, None
        if file is not None:
            file.close()  # closing the last descriptor of the open file releases the flock


def _holder(file: IO[bytes]) -> str:
    """Who holds the lock, as its holder wrote it into the file; "" if unreadable."""
    try:
        file.seek(0)
        record = json.loads(file.read(4096).decode("utf-8"))
        return f"pid {record['pid']} on {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
