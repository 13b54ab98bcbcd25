"""Run directories reopen whatever created them, from any working directory (issue 16, defects 2 and 6)."""
from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cikg.cli import main
from cikg.data import from_pandas, save_dataset, synthetic
from cikg.errors import CheckpointError
from cikg.graph import build_cikg, build_views
from cikg.models import LightGCNConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer, load_run


def _config(dataset: str = "synthetic", lr: float = 5e-3, epochs: int = 2) -> RunConfig:
    return RunConfig(model=LightGCNConfig(dim=16, layers=2),
                     data=DataConfig(dataset=dataset),
                     train=TrainConfig(epochs=epochs, lr=lr, batch_size=512, seed=0, progress=False))


def _small():
    return synthetic(n_users=80, n_items=120, seed=3)


def _evaluated_recall(run_dir: Path, capsys) -> float:
    """``cikg evaluate RUN_DIR``'s test Recall@20 (the second column of its 'recall@20' line)."""
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.split() and line.split()[0] == "recall@20")
    return float(line.split()[2])


def test_readme_python_run_reopens_with_cikg_evaluate_from_another_directory(tmp_path, monkeypatch, capsys):
    dataset = _small()  # the README's shape: a dataset built in Python, config.data left at its default
    run_dir = tmp_path / "runs" / "quick"
    result = Trainer(_config(), run_dir, dataset=dataset, views=build_views(build_cikg(dataset))).fit()
    record = json.loads((run_dir / "dataset.json").read_text())
    assert record["kind"] == "synthetic" and (record["n_users"], record["n_items"]) == (80, 120)
    assert "synthetic_users: 80" in (run_dir / "config.yaml").read_text()  # not the default 2000 users
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _evaluated_recall(run_dir, capsys) == pytest.approx(result.test["recall@20"], abs=1e-4)
    reopened = load_run(run_dir)
    assert (reopened.dataset.n_users, reopened.dataset.n_items) == (80, 120)
    assert reopened.dataset.equals(dataset)


def test_in_memory_dataset_is_saved_into_the_run_and_reopens(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": [f"u{u}" for u in rng.integers(0, 50, 1500)],
                          "item": [f"i{i}" for i in rng.integers(0, 110, 1500)]}).drop_duplicates()
    dataset = from_pandas(frame, name="frames")
    run_dir = tmp_path / "run"
    result = Trainer(_config(), run_dir, dataset=dataset).fit()
    record = json.loads((run_dir / "dataset.json").read_text())
    assert record["kind"] == "saved" and record["path"] == "dataset" and "train.txt" in record["files"]
    moved = tmp_path / "moved"
    run_dir.rename(moved)  # the copy is named relative to the run: a moved run still reopens
    assert _evaluated_recall(moved, capsys) == pytest.approx(result.test["recall@20"], abs=1e-4)
    assert load_run(moved).dataset.user_ids == dataset.user_ids


def test_relative_dataset_path_is_recorded_absolute_and_reopens_elsewhere(tmp_path, monkeypatch, capsys):
    save_dataset(_small(), tmp_path / "data" / "small")
    monkeypatch.chdir(tmp_path)
    result = Trainer(_config(dataset="data/small"), "runs/rel").fit()
    config_text = (tmp_path / "runs" / "rel" / "config.yaml").read_text()
    assert str((tmp_path / "data" / "small").resolve()) in config_text
    assert json.loads((tmp_path / "runs" / "rel" / "dataset.json").read_text())["kind"] == "directory"
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert _evaluated_recall(tmp_path / "runs" / "rel", capsys) == pytest.approx(result.test["recall@20"], abs=1e-4)


def test_changed_data_file_is_refused_naming_the_file(tmp_path, capsys):
    save_dataset(_small(), tmp_path / "small")
    run_dir = tmp_path / "run"
    Trainer(_config(dataset=str(tmp_path / "small")), run_dir).fit()
    with open(tmp_path / "small" / "train.txt", "a") as fh:
        fh.write("0 1 2\n")
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.txt changed" in err[0] and "dataset.json" in err[0]


def test_refused_resume_leaves_config_yaml_unchanged_and_overwrite_starts_afresh(tmp_path):
    dataset = _small()
    run_dir = tmp_path / "run"
    Trainer(_config(), run_dir, dataset=dataset).fit()
    before = (run_dir / "config.yaml").read_bytes()
    assert (run_dir / "tensorboard").is_dir()
    with pytest.raises(CheckpointError, match="lr"):
        Trainer(_config(lr=1e-3), run_dir, dataset=dataset).fit()
    assert (run_dir / "config.yaml").read_bytes() == before
    with pytest.raises(CheckpointError, match="overwrite=True"):
        Trainer(_config(lr=1e-3), run_dir, dataset=dataset).fit(resume=False)
    assert (run_dir / "config.yaml").read_bytes() == before

    stale = {p.name for p in (run_dir / "tensorboard").iterdir()}
    result = Trainer(_config(lr=1e-3, epochs=3), run_dir, dataset=dataset).fit(overwrite=True)
    assert "lr: 0.001" in (run_dir / "config.yaml").read_text()
    assert result.epochs_run == 3
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not stale & {p.name for p in (run_dir / "tensorboard").iterdir()}  # the old curves are gone


def test_refitting_a_finished_run_returns_its_result_without_training(tmp_path):
    dataset = _small()
    run_dir = tmp_path / "run"
    first = Trainer(_config(), run_dir, dataset=dataset).fit()
    checkpoint_time = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    again = Trainer(_config(), run_dir, dataset=dataset).fit()  # a re-run notebook cell
    assert again.test == pytest.approx(first.test)
    assert (again.best_epoch, again.epochs_run) == (first.best_epoch, first.epochs_run)
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == checkpoint_time


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_trainer_shows_epoch_progress_with_metrics_without_logging_setup(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    Trainer(_config(epochs=3), tmp_path / "run", dataset=_small(), progress=True).fit()
    shown = terminal.getvalue()
    assert "3/3" in shown and "epoch" in shown
    assert "recall@20=" in shown and "loss=" in shown and "best=" in shown


def test_progress_is_silent_when_switched_off(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    Trainer(_config(epochs=2), tmp_path / "run", dataset=_small(), progress=False).fit()
    assert "epoch" not in terminal.getvalue()


def test_subset_with_interest_nodes_no_user_links_to_reopens(tmp_path, capsys):
    """The CI failure of stop 22: a user subset keeps every interest node but not every edge."""
    full = synthetic(n_users=80, n_items=120, seed=3)
    keep = full.user_interest[1] >= 2  # dense interests 0 and 1 lose their users
    dataset = full.with_interests(full.user_interest[:, keep], full.interest_ids)
    run_dir = tmp_path / "run"
    result = Trainer(_config(), run_dir, dataset=dataset).fit()
    assert json.loads((run_dir / "dataset.json").read_text())["kind"] == "saved"
    assert load_run(run_dir).dataset.n_interests == full.n_interests
    assert _evaluated_recall(run_dir, capsys) == pytest.approx(result.test["recall@20"], abs=1e-4)


def test_dataset_that_does_not_survive_saving_is_refused_naming_the_field(tmp_path):
    full = synthetic(n_users=80, n_items=120, seed=3)
    padded = dataclasses.replace(full, item_text=["  padded title  ", *full.item_text[1:]], _csr_cache={})
    with pytest.raises(CheckpointError, match=r"differ after reloading: item_text"):
        Trainer(_config(), tmp_path / "run", dataset=padded).fit()
    assert not (tmp_path / "run" / "dataset").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the reopening of a GPU run without CUDA")
def test_a_run_trained_on_a_gpu_reopens_on_a_machine_without_cuda(tmp_path, capsys):
    dataset = _small()
    run_dir = tmp_path / "gpu-run"
    result = Trainer(_config(), run_dir, dataset=dataset).fit()
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("device: cpu", "device: cuda"))  # as written on the GPU machine
    assert "device: cuda" in config.read_text()
    reopened = load_run(run_dir)
    assert str(reopened.device) == "cpu"
    assert reopened.evaluate("test").to_dict()["recall@20"] == pytest.approx(result.test["recall@20"], abs=1e-6)
    assert _evaluated_recall(run_dir, capsys) == pytest.approx(result.test["recall@20"], abs=1e-4)
    assert main(["recommend", str(run_dir), "--users", dataset.user_ids[0], "-k", "3", "--device", "cpu"]) == 0
    assert main(["evaluate", str(run_dir), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(Exception, match="expected cpu, cuda, cuda:N or auto, got 'tpu'"):
        load_run(run_dir, device="tpu")
