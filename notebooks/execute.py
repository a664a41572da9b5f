"""Run the notebooks top to bottom, each in a fresh kernel of this Python (nbclient).

    python notebooks/execute.py                    # every notebooks/*.ipynb, outputs written back
    python notebooks/execute.py notebooks/02-image-tokenizer.ipynb
    MEDIATOK_NOTEBOOK_STEPS=3 python notebooks/execute.py --check   # the tests' short run

`make notebooks` runs the first form: the committed outputs come from it, on a CPU. The tests
(tests/test_notebooks.py) run the last form, which writes nothing back: every training then
takes `MEDIATOK_NOTEBOOK_STEPS` steps, on smaller data, so that a notebook that no longer runs
fails `make test` within its time budget.

The kernel is this interpreter (`sys.executable`, the project's virtual environment), named by
a kernel spec made for the run, so neither a `python3` kernel installed elsewhere nor the PATH
decides which Python runs a notebook.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
KERNEL = "python3"


def execute(
    path: str | os.PathLike,
    *,
    env: dict[str, str] | None = None,
    timeout: int = 900,
    write: bool = False,
):
    """Run the notebook at `path` in a fresh kernel, from its folder.

    Args:
        path: an `.ipynb` file.
        env: variables added to this process's environment for the kernel.
        timeout: seconds a cell may run.
        write: write the executed notebook (its outputs) back to `path`.

    Returns:
        The executed notebook (`nbformat.NotebookNode`).

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised; its traceback is in the message.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="mediatok-kernel-") as kernels:
        spec = Path(kernels) / KERNEL
        spec.mkdir()
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                }
            )
        )
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
        client = NotebookClient(
            notebook,
            km=manager,
            kernel_name=KERNEL,
            timeout=timeout,
            resources={"metadata": {"path": str(path.parent)}},
        )
        environment = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", **(env or {})}
        try:
            client.execute(env=environment)
        finally:  # nbclient shuts down only a kernel manager of its own making
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
    if write:
        nbformat.write(notebook, path)
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the notebooks in fresh kernels.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="write no outputs back")
    args = parser.parse_args()
    for path in args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")):
        began = time.perf_counter()
        execute(path, write=not args.check)
        print(f"{path.name}: {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
