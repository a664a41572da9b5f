"""Shared test settings."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cli_errors_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mediatok.cli.main` prints a user's mistake on one line; tests want the exception, to
    check its type and message (test_cli.py checks the one-line form by unsetting this)."""
    monkeypatch.setenv("MEDIATOK_TRACEBACK", "1")
