"""The Python in the docs runs: every ```python block of docs/tutorial.md (default suite) and README.md (slow)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _blocks(path: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))


def _run(path: Path, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_blocks(path), str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def test_tutorial_runs(tmp_path, monkeypatch):
    namespace = _run(ROOT / "docs" / "tutorial.md", tmp_path, monkeypatch)
    dataset = namespace["dataset"]
    assert dataset.n_users == 400 and dataset.n_items == 120 and dataset.n_interests >= 2
    assert (tmp_path / "runs" / "tutorial" / "cikgrec" / "metrics.json").exists()


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    namespace = _run(ROOT / "README.md", tmp_path, monkeypatch)
    assert namespace["result"].test["recall@20"] > 0
