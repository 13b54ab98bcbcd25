"""KGAT (BPR-MF init): the experiment scripts train the run a config starts from (``train.init_from``) once, from
``<model>-init.yaml`` beside the config, before the rows or the study that need it."""
from __future__ import annotations

import yaml

from cikg.train import load_run_config

SYNTHETIC = {"dataset": "synthetic", "synthetic_users": 60, "synthetic_items": 120, "synthetic_seed": 3}
TRAIN = {"epochs": 2, "batch_size": 256, "lr": 0.01, "ks": [5, 10], "select": ["recall@5"], "progress": False}


def _write(path, config):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))


def test_the_init_run_is_trained_once_with_its_own_seed_and_budget_then_the_row_starts_from_it(experiment, tmp_path,
                                                                                               monkeypatch):
    run = experiment("run")
    monkeypatch.setattr(run, "HERE", tmp_path / "experiments")
    init_dir = tmp_path / "runs" / "init" / "bprmf-16"
    folder = tmp_path / "experiments" / "dbbook2014"
    _write(folder / "kgat-mf-init.yaml", {"data": SYNTHETIC, "model": {"name": "bprmf", "dim": 16},
                                          "train": {**TRAIN, "seed": 2024}})
    _write(folder / "tuned" / "kgat-mf.yaml", {
        "data": SYNTHETIC, "model": {"name": "kgat", "dim": 16, "relation_dim": 8, "layer_sizes": [8],
                                     "message_dropout": [0.0]},
        "train": {**TRAIN, "init_from": str(init_dir)}})
    overrides = ["train.threads=1", "train.epochs=1"]
    metrics = run.run_one("dbbook2014", "tuned/kgat-mf", 7, overrides, tmp_path / "out", "KGAT (BPR-MF init)")
    recorded = yaml.safe_load((init_dir / "config.yaml").read_text())["train"]
    assert (recorded["seed"], recorded["epochs"], recorded["threads"]) == (2024, 2, 1)  # not the row's seed, budget
    row = yaml.safe_load((tmp_path / "out" / "dbbook2014" / "KGAT_(BPR-MF_init)-seed7" / "config.yaml").read_text())
    assert row["train"]["init_from"] == str(init_dir) and row["train"]["seed"] == 7 and metrics["best_epoch"] == 1
    trained = (init_dir / "best_model.pt").stat().st_mtime_ns
    config = load_run_config(folder / "tuned" / "kgat-mf.yaml")
    run.ensure_init_run("dbbook2014", "tuned/kgat-mf", config, overrides)  # already trained: left alone
    assert (init_dir / "best_model.pt").stat().st_mtime_ns == trained


def test_every_dataset_with_kgat_has_kgat_mf_and_the_run_it_starts_from(experiment):
    run = experiment("run")
    for dataset in ("dbbook2014", "book-crossing", "ml1m"):
        config = load_run_config(run.HERE / dataset / "kgat-mf.yaml")
        init = load_run_config(run.HERE / dataset / "kgat-mf-init.yaml")
        plain = load_run_config(run.HERE / dataset / "kgat.yaml")
        assert config.train.init_from == f"runs/init/{dataset}/bprmf-64"
        assert (init.model.dim, config.model.dim) == (64, 64) and init.data == config.data
        assert config.model == plain.model  # the same KGAT; only its start differs
        assert (run.HERE / dataset / "kgat-mf.space.yaml").read_text().split("\n", 2)[2] == \
            (run.HERE / dataset / "kgat.space.yaml").read_text().split("\n", 1)[1]
