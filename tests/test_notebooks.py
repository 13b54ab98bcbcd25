"""Every notebook in notebooks/ runs top to bottom (nbclient, the venv's python3 kernel), so none of them rots.

The notebooks are committed without outputs; they write their artifacts under a temporary directory.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {"01_explore_cikg.ipynb", "02_interests.ipynb", "03_train_and_compare.ipynb"}


def test_the_notebooks_exist_and_have_no_outputs():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, \
                    f"{path.name}: commit notebooks without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    # the venv's interpreter runs the kernel (the "python3" kernelspec resolves to sys.executable's env when the
    # kernel is started from it); one thread each, offline, artifacts under tmp_path
    for key, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "TMPDIR": str(tmp_path), "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, value)
    for key in ("CIKG_LLM_BASE_URL", "CIKG_REPLAY"):  # the offline path is the one under test
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # the failing cell and its traceback
        pytest.fail(f"{path.name}: {err}")
    seconds = time.perf_counter() - started
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, errors
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                 for output in cell.get("outputs", []))
    assert images >= 1, f"{path.name} drew no figure"
    print(f"{path.name}: {seconds:.1f}s, {images} figures, python {sys.version.split()[0]}")
