"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _cli_errors_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mediatok.cli.main` prints a user's mistake on one line; tests want the exception, to
    check its type and message (test_cli.py checks the one-line form by unsetting this)."""
    monkeypatch.setenv("MEDIATOK_TRACEBACK", "1")


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny models gain nothing from more, and on a shared
    two-core machine the OpenMP barriers of a second thread made such tests 50x slower. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
