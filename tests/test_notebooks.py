"""Every notebook runs top to bottom with the small settings (KDLIB_SMALL=1); a cell error fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def ensure_kernel() -> None:
    """This interpreter's ipykernel as `python3` (installed into its prefix when the spec is missing)."""
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch, tmp_path):
    ensure_kernel()
    monkeypatch.setenv("KDLIB_SMALL", "1")  # the kernel inherits this process's environment
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' throwaway stores and files go with the test
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(NOTEBOOKS)}}, allow_errors=False
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    assert all(cell.get("outputs") is not None for cell in nb.cells if cell.cell_type == "code")
