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


def _execute(path: Path, tmp_path: Path, monkeypatch, **env: str):
    """Run the notebook in a fresh python3 kernel (the venv's; it inherits this environment); returns it."""
    for key, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "TMPDIR": str(tmp_path), "MPLBACKEND": "Agg", **env}.items():
        monkeypatch.setenv(key, value)
    for key in {"CIKG_LLM_BASE_URL", "CIKG_REPLAY"} - set(env):  # the offline path unless a test asks otherwise
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # the failing cell and its traceback
        pytest.fail(f"{path.name}: {err}")
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, errors
    warnings = [output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                for output in cell.get("outputs", []) if output.get("name") == "stderr"
                and "IProgress not found" in output.get("text", "")]
    assert not warnings, f"{path.name}: tqdm has no ipywidgets in the kernel: {warnings[0][:200]}"
    return notebook


def _figures(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    started = time.perf_counter()
    notebook = _execute(path, tmp_path, monkeypatch)
    images = _figures(notebook)
    assert images >= 1, f"{path.name} drew no figure"
    if path.stem == "03_train_and_compare":  # the trainer's epoch bar, a widget, with the metrics it shows
        widgets = json.dumps(notebook.metadata.get("widgets", {}))
        assert "recall@20=" in widgets and "best=" in widgets and "loss=" in widgets
    print(f"{path.name}: {time.perf_counter() - started:.1f}s, {images} figures, python {sys.version.split()[0]}")


def test_interests_notebook_against_a_server(tmp_path, monkeypatch):
    """02 with CIKG_LLM_BASE_URL set: the OpenAI backend inside the kernel's running event loop, against the
    OpenAI-compatible test server (the real llama.cpp one is the `llm` marker's)."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from llm_fault_server import FaultServer

    with FaultServer() as server:
        notebook = _execute(ROOT / "notebooks" / "02_interests.ipynb", tmp_path, monkeypatch,
                            CIKG_LLM_BASE_URL=server.base_url, CIKG_LLM_MODEL="test-model")
        assert len(server.requests) == 20  # USERS = range(20) with a server
    text = "".join(output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
                   for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", []))
    assert "openai:test-model" in text and "Fantasy, Mystery novels" in text
