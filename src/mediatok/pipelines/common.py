"""What the pipelines share: how a batch job stops, and the check that a codec decodes tokens.

Layer 5.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from mediatok.checkpoint import read_checkpoint
from mediatok.codecs import Codec, load_codec
from mediatok.tokens import TokenSpec

__all__ = [
    "Stopped",
    "Terminated",
    "check_decodes",
    "load_decoding_codec",
    "sigterm_stops_between_batches",
]


class Stopped(Exception):
    """A batch job stopped before its end, keeping what it finished (a file it could not read
    with `on_error="stop"`); the message says what stopped it and how to continue."""

    exit_status = 1


class Terminated(Stopped):
    """SIGTERM arrived during a batch job (raised between two batches, like a KeyboardInterrupt
    that waits for the batch in flight)."""

    exit_status = 128 + signal.SIGTERM


@contextmanager
def sigterm_stops_between_batches() -> Iterator[Callable[[], None]]:
    """While a batch job runs, SIGTERM (kill, timeout, SLURM preemption, torchrun's teardown)
    stops it as Ctrl-C does, so that the job keeps what it did so far. Yields a check, called
    after each batch, that raises `Terminated` once a SIGTERM came. The handler only sets a
    flag, so no exception lands in the middle of a file write; the previous handler is restored
    on exit. Outside the main thread (where no handler can be installed), or where SIGTERM is
    ignored, the check never raises."""
    received: list[int] = []

    def check() -> None:
        if received:
            raise Terminated("stopped by SIGTERM")

    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield check
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield check
    finally:
        # None: a handler installed from C, which Python cannot reinstall; the default then
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def load_decoding_codec(checkpoint: str | os.PathLike, device: torch.device) -> Codec:
    """The codec at `checkpoint` on `device`, in eval mode.

    Raises:
        ValueError: a checkpoint of another kind (a generator's), saying so.
    """
    kind = read_checkpoint(checkpoint).kind
    if kind != "codec":
        raise ValueError(f"{checkpoint}: expected a codec checkpoint to decode with, got a {kind}")
    return load_codec(checkpoint).to(device)


def check_decodes(
    codec: Codec,
    spec: TokenSpec,
    where: str | os.PathLike,
    what: str,
    *,
    written_by: str | None = None,
    advice: str = "decode with the checkpoint that encoded them",
) -> Codec:
    """`codec` if it decodes tokens of `spec`; else a `ValueError` naming `where` and `what`.

    Tokens of another vocabulary would decode into plausible-looking garbage, those of another
    layout or geometry (`TokenSpec.describe_mismatch`: two image sizes; 75 and 40 tokens per
    second share a vocabulary) into media of the wrong size or speed, and those another codec
    wrote (`written_by`, which a spec does not record) into noise.

    Args:
        codec: the codec (`load_decoding_codec`).
        spec: the spec of the tokens.
        where: the codec checkpoint, for the message.
        what: the tokens, for the message ("the tokens in tokens/").
        written_by: the name of the codec that wrote the tokens, when recorded.
        advice: what the message tells the user to do.
    """
    problems = []
    if written_by is not None and written_by != codec.name:
        problems.append(f"expected tokens of {codec.name}, got tokens of {written_by}")
    mismatch = codec.token_spec.describe_mismatch(spec)
    if mismatch is not None:
        problems.append(mismatch)
    if problems:
        raise ValueError(f"{where} cannot decode {what}: {'; '.join(problems)}; {advice}")
    return codec
