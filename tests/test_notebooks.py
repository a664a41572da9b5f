"""The notebooks run top to bottom in a fresh kernel of this Python (notebooks/execute.py, as
`make notebooks` runs them), every training cut to a few steps (`MEDIATOK_NOTEBOOK_STEPS`) so
that all six fit the test budget; and the committed notebooks carry the outputs of a whole,
normal run, so that a reader sees the plots without running anything."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "01-quantizers",
    "02-image-tokenizer",
    "03-audio-codec",
    "04-generation",
    "05-video",
    "06-flextok",
]
STEPS = "3"  # every training in a notebook, under test


def _executor():
    spec = importlib.util.spec_from_file_location("execute", ROOT / "notebooks" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.execute


def _code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return "".join(output.get("data", {}).get("text/plain", ""))


def test_the_six_notebooks_are_there():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """One output folder for the module: notebook 4 uses notebook 2's tokenizer (and trains its
    own when run alone)."""
    return tmp_path_factory.mktemp("notebook-output")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_notebook_runs_in_a_fresh_kernel(path, output):
    environment = {
        "MEDIATOK_NOTEBOOK_STEPS": STEPS,
        "MEDIATOK_NOTEBOOK_OUTPUT": str(output),
        "OMP_NUM_THREADS": "1",  # tiny models: a second thread only waits (conftest.one_thread)
    }
    notebook = _executor()(path, env=environment, timeout=300)  # a cell that raises fails here
    outputs = [output for cell in _code_cells(notebook) for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert f"every training cut to {STEPS} steps" in _text(outputs[-1])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_committed_notebook_holds_a_whole_runs_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    cells = _code_cells(notebook)
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), (
        "run it top to bottom: make notebooks"
    )
    outputs = [output for cell in cells for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the plots
    last = _text(outputs[-1])
    assert re.match(r"this notebook ran in \d+ s$", last.strip()), (
        f"expected the closing line of a normal run (no MEDIATOK_NOTEBOOK_STEPS), got {last!r}"
    )
    text = "".join(_text(output) for output in outputs)
    assert "/tmp/" not in text and str(ROOT) not in text, "a machine's own path in the outputs"
