"""Progress bars: one style (tqdm) for every job a user waits on — encode, decode, eval,
training, sampling.

A bar shows only on a terminal: under a log file, a scheduler's output or a notebook (whose
stderr is not a terminal) it stays silent, as tqdm's `disable=None` does; `quiet()` silences
every bar in a block of code (`mediatok --quiet`). Rank-dependent jobs pass `enabled=False` on
the ranks that should not draw.

>>> with quiet():
...     for _ in progress(range(3), desc="nothing shown"):
...         pass

Layer 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from tqdm import tqdm

__all__ = ["is_quiet", "progress", "quiet"]

_QUIET: ContextVar[bool] = ContextVar("mediatok_quiet", default=False)


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str | None = None,
    total: float | None = None,
    unit: str = "it",
    enabled: bool = True,
    **options: Any,
) -> tqdm:
    """A tqdm bar in mediatok's one style: on a terminal only, never under `quiet()`.

    Args:
        iterable: what to iterate over (None: call `update` by hand).
        desc: the bar's label ("encode", "eval").
        total: the expected count (None: `len(iterable)` where it has one).
        unit: what is counted ("file", "sample", "step").
        enabled: False hides the bar (ranks other than 0).
        **options: other tqdm options (`initial`, `leave`).
    """
    disable = True if _QUIET.get() or not enabled else None  # None: off unless a terminal
    return tqdm(
        iterable, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True, **options
    )


def is_quiet() -> bool:
    """Whether progress is silenced here (`quiet()`)."""
    return _QUIET.get()


@contextmanager
def quiet(silent: bool = True) -> Iterator[None]:
    """Silence every progress bar (and the training's progress lines) inside the block.

    Args:
        silent: False leaves them as they are (for `with quiet(args.quiet):`).
    """
    token = _QUIET.set(silent or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)
