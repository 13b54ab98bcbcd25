"""Models of your own: the docs/models.md example registered through `cikg train --import`, reopened by
`cikg evaluate --import` (and recommend, export); a `cikg.models` entry point of an installed package; registration errors."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from cikg.cli import main
from cikg.errors import ConfigError
from cikg.models import MODEL_CONFIGS, register_model
from cikg.train import TrainConfig, Trainer, load_run_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.synthetic_users=300", "data.synthetic_items=90", "train.ks=[10,20]", "train.threads=1"]


def _doc_example() -> str:
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "models.md").read_text(), flags=re.S)
    return block


@pytest.fixture
def isolated(monkeypatch):
    """Registrations and imports of a test do not leak into the next one."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = dict(MODEL_CONFIGS)
    modules = set(sys.modules)
    yield
    MODEL_CONFIGS.clear()
    MODEL_CONFIGS.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith(("my_models", "epmf_pkg")):
            del sys.modules[name]


def test_docs_example_trains_and_evaluates_through_import(tmp_path, monkeypatch, isolated, capsys):
    assert 25 <= len(_doc_example().strip().splitlines()) <= 45
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_models.py").write_text(_doc_example())
    argv = ["train", "-", "model.name=biasmf", "model.dim=16", "train.epochs=3", *SMALL, "--import", "my_models",
            "--run-dir", "runs/biasmf"]
    assert main(argv) == 0
    run = tmp_path / "runs" / "biasmf"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "biasmf" and metrics["epochs_run"] == 3
    assert metrics["valid"]["recall@20"] > 20 / 90 * 0.5  # it learns: random ranking gets ~20/90 of 1 item
    assert "name: biasmf" in (run / "config.yaml").read_text() and "dim: 16" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["evaluate", "runs/biasmf", "--import", "my_models.py"]) == 0
    assert "biasmf on synthetic" in capsys.readouterr().out
    assert main(["recommend", "runs/biasmf", "--users", "u0", "-k", "3", "--import", "my_models.py"]) == 0
    ranked = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[1]) for row in ranked] == [("u0", "1"), ("u0", "2"), ("u0", "3")]
    assert main(["export", "runs/biasmf", "-o", "exported", "--import", "my_models"]) == 0
    assert (tmp_path / "exported" / "items.faiss").is_file()
    MODEL_CONFIGS.pop("biasmf")
    assert main(["evaluate", "runs/biasmf"]) == 2
    assert "--import MODULE" in capsys.readouterr().err


def test_import_errors_are_one_line(tmp_path, monkeypatch, isolated, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-", "--import", "no_such_module"]) == 2
    assert "no module named 'no_such_module'" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    assert main(["train", "-", "--import", "broken.py"]) == 2
    assert "importing it failed (RuntimeError: boom)" in capsys.readouterr().err


def test_entry_point_of_an_installed_package(tmp_path, monkeypatch, isolated):
    site = tmp_path / "site"
    package = site / "epmf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_doc_example().replace('@register_model("biasmf")\n', ""))
    dist = site / "epmf_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epmf-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cikg.models]\nepmf = epmf_pkg:BiasMFConfig\n")
    monkeypatch.syspath_prepend(str(site))
    assert "epmf" not in MODEL_CONFIGS
    config = load_run_config(None, ["model.name=epmf", "model.dim=8", *SMALL])
    assert type(config.model).__name__ == "BiasMFConfig" and config.model_name == "epmf"
    config.train = TrainConfig(epochs=1, ks=(10, 20), progress=False)
    result = Trainer(config, tmp_path / "run", trackers=[]).fit()
    assert result.epochs_run == 1 and 0 <= result.valid["recall@20"] <= 1


def test_register_model_checks_what_it_is_given(isolated):
    with pytest.raises(ConfigError, match="not a model config"):
        register_model("nope", int)
    with pytest.raises(ConfigError, match="already registered as cikg.models.lightgcn.LightGCNConfig"):
        register_model("lightgcn", MODEL_CONFIGS["bprmf"])
