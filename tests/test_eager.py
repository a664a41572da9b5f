"""`mediatok.nn.eager`: eager inside a compiled model, and no dynamo import until first use."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mediatok.nn import eager


def test_importing_mediatok_does_not_import_dynamo() -> None:
    # `torch.compiler.disable` at import time cost ~1 s of every `mediatok` command.
    script = "import sys, mediatok.api, mediatok.cli; print('torch._dynamo' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("first_call", ["traced", "eager"])
def test_an_eager_function_runs_on_every_call_of_a_compiled_one(first_call: str) -> None:
    calls = []

    @eager
    def doubled(x: torch.Tensor) -> torch.Tensor:
        calls.append((torch.compiler.is_compiling(), x.sum().item()))
        return x * 2

    if first_call == "eager":
        doubled(torch.zeros(3))
    compiled = torch.compile(lambda x: doubled(x + 1) - 1, backend="eager")
    outputs = [compiled(torch.full((3,), float(i))) for i in range(3)]

    # Traced into, `doubled` would see `is_compiling()` true.
    assert calls[-3:] == [(False, 3.0), (False, 6.0), (False, 9.0)]
    assert len(calls) == 3 + (first_call == "eager")
    for i, out in enumerate(outputs):
        assert torch.equal(out, torch.full((3,), 2.0 * (i + 1) - 1))
    assert doubled.__name__ == "doubled"
