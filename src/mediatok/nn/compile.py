"""`eager`: code that runs eagerly inside a `torch.compile`d model, at no import cost."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["eager"]

F = TypeVar("F", bound=Callable)


def eager(fn: F) -> F:
    """`fn`, run eagerly even inside a compiled model: dynamo breaks the graph around the call
    instead of tracing into it, as with `torch.compiler.disable(fn)`.

    The difference is when: `torch.compiler.disable` imports `torch._dynamo` (about 1 s, most of
    `import mediatok`) where it decorates, so this wraps `fn` at its first call instead. A process
    that never compiles never imports dynamo. When the first call is itself traced, dynamo breaks
    the graph once more, on the wrapping; the result is the same.
    """
    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call  # type: ignore[return-value]
