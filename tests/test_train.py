"""Config loading, the training loop, early stopping on validation, resume after a kill, the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cikg.cli import main
from cikg.config import parse_overrides
from cikg.errors import CheckpointError, CikgError, ConfigError
from cikg.models import CIKGRecConfig, LightGCNConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer, load_run_config

SMALL = DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90, synthetic_seed=3)


def _config(model=None, **train):
    settings = dict(epochs=4, batch_size=512, lr=5e-3, patience=10, ks=(10, 20), seed=5, progress=False)
    settings.update(train)
    return RunConfig(data=SMALL, model=model or LightGCNConfig(layers=2, dim=16), train=TrainConfig(**settings))


# ------------------------------------------------------------------------------------------- config
def test_overrides_are_typed_and_nested(tmp_path):
    assert parse_overrides(["train.lr=5e-4", "model.layers=2", "data.dataset=ml1m"]) == {
        "train": {"lr": 5e-4}, "model": {"layers": 2}, "data": {"dataset": "ml1m"}}
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  name: cikgrec\n  layers: 4\ntrain:\n  lr: 8.0e-4\n  ks: [20, 50]\n")
    config = load_run_config(path, ["train.lr=1e-3", "model.cl_anchor=collaborative"])
    assert isinstance(config.model, CIKGRecConfig) and config.model.layers == 4
    assert config.model.cl_anchor == "collaborative"
    assert config.train.lr == 1e-3 and config.train.ks == (20, 50)
    assert config.model_name == "cikgrec"
    again = load_run_config(None, [])
    assert again.model_name == "lightgcn"


@pytest.mark.parametrize("overrides, key, message", [
    (["train.lrr=0.1"], "train.lrr", "unknown key"),
    (["train.lr=-0.1"], "train.lr", "expected a number > 0"),
    (["train.epochs=ten"], "train.epochs", "expected an integer"),
    (["model.name=nope"], "model.name", "unknown model"),
    (["model.name=cikgrec", "model.max_mask_rate=1.5"], "model.max_mask_rate", r"mask rate in \(0, 1\]"),
    (["train.select=[recall@30]"], "train.select", "not a metric@K"),
    (["data.valid_fraction=1.2"], "data.valid_fraction", "fraction"),
    (["bogus=1"], "bogus", "unknown key"),
])
def test_bad_configs_name_the_key(overrides, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(None, overrides)
    assert err.value.key == key


def test_bad_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_run_config(path)


def test_k_above_item_count_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="exceeds the 90 items"):
        Trainer(_config(ks=(20, 100)), tmp_path / "run")


# ------------------------------------------------------------------------------------------- training
def test_fit_writes_the_run_directory_and_selects_on_valid(tmp_path):
    trainer = Trainer(_config(), tmp_path / "run")
    result = trainer.fit()
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "checkpoint.pt", "best_model.pt", "metrics.jsonl", "metrics.json", "groups.csv"} <= files
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert {"loss", "bpr", "l2", "valid_recall@20", "valid_ndcg@20"} <= set(history[0])
    best = max(history, key=lambda h: h["valid_recall@20"] + h["valid_ndcg@20"])
    assert result.best_epoch == best["epoch"]
    assert result.valid["recall@20"] == pytest.approx(best["valid_recall@20"], abs=1e-9)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seed"] == 5 and metrics["selected_on"].startswith("valid")
    assert 0.0 < metrics["test"]["recall@20"] <= 1.0
    assert history[-1]["loss"] < history[0]["loss"]


def test_early_stopping_uses_patience(tmp_path):
    config = _config(epochs=30, patience=2, lr=0.2)  # a huge learning rate plateaus fast
    result = Trainer(config, tmp_path / "run").fit()
    assert result.epochs_run < 30
    assert result.epochs_run - result.best_epoch == 2


def test_resume_after_interruption_gives_identical_metrics(tmp_path, monkeypatch):
    config = _config(CIKGRecConfig(dim=16, layers=2, total_epoch=4, transe_batch_size=256), epochs=4)
    reference = Trainer(config, tmp_path / "reference").fit()

    interrupted = Trainer(config, tmp_path / "killed")
    original = interrupted.train_epoch

    def dies_in_epoch_3(epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # as a kill mid-epoch: epoch 2's checkpoint is the last one written
        return original(epoch)

    monkeypatch.setattr(interrupted, "train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["epoch"] == 2
    resumed = Trainer(config, tmp_path / "killed").fit()
    assert resumed.best_epoch == reference.best_epoch
    assert resumed.test == reference.test and resumed.valid == reference.valid
    history = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(h)["epoch"] for h in history] == [1, 2, 3, 4]


def test_resume_refuses_a_different_config_naming_the_setting(tmp_path):
    Trainer(_config(epochs=1), tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match=r"different configuration \(train.lr: 0.005 -> 0.01\)"):
        Trainer(_config(epochs=1, lr=0.01), tmp_path / "run").fit()


def test_a_setting_added_after_the_checkpoint_resumes_at_its_default(tmp_path):
    """A checkpoint from before a config field existed (here CIKGRec's cl_max_logits) still resumes."""
    model = CIKGRecConfig(dim=16, layers=1, total_epoch=4, transe_batch_size=256)
    reference = Trainer(_config(model, epochs=2), tmp_path / "reference").fit()
    Trainer(_config(model, epochs=1), tmp_path / "old").fit()
    path = tmp_path / "old" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["model"]["cl_max_logits"]  # as written by the older cikg
    state["config"]["train"]["epochs"] = 2
    torch.save(state, path)
    resumed = Trainer(_config(model, epochs=2), tmp_path / "old").fit()
    assert resumed.test == reference.test
    changed = CIKGRecConfig(dim=16, layers=1, total_epoch=4, transe_batch_size=256, cl_max_logits=1000)
    # the resumed run re-wrote its checkpoint with the setting present; changing it now is refused
    with pytest.raises(CheckpointError, match=r"model.cl_max_logits: 67108864 -> 1000"):
        Trainer(_config(changed, epochs=2), tmp_path / "old").fit()


# ------------------------------------------------------------------------------------------- CLI
def test_cli_data_stats_real_dataset(capsys):
    assert main(["data", "stats", "book-crossing"]) == 0
    out = capsys.readouterr().out
    assert "users=6616" in out and "user__has_interest__interest" in out and "19497" in out


def test_cli_errors_are_one_line_with_exit_2(capsys, tmp_path):
    assert main(["data", "stats", "no-such-dataset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no dataset named 'no-such-dataset'" in err[0]
    assert main(["train", "-", "train.lrr=1"]) == 2
    assert "config key 'train.lrr': unknown key" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.txt").write_text("0 1 2\n1 x\n")
    (bad / "test.txt").write_text("0 3\n")
    assert main(["data", "stats", str(bad)]) == 2
    assert f"{bad / 'train.txt'}:2: non-integer token" in capsys.readouterr().err
    with pytest.raises(CikgError):
        main(["--debug", "data", "stats", "no-such-dataset"])


def test_cli_train_evaluate_graph(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "-", "data.synthetic_users=300", "data.synthetic_items=90", "train.epochs=2",
            "train.ks=[10,20]", "train.progress=false", "model.dim=16", "--run-dir", str(run_dir), "--plots"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "recall@20" in out and (run_dir / "loss_terms.png").stat().st_size > 1000
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert f"{saved['test']['recall@20']:.4f}" in out and "Q1" in out
    graph_file = tmp_path / "bc.pt"
    assert main(["graph", "build", "book-crossing", "-o", str(graph_file)]) == 0
    assert main(["graph", "stats", str(graph_file)]) == 0
    assert main(["graph", "export", str(graph_file), "--user", "3", "-o", str(tmp_path / "u3.graphml")]) == 0
    assert (tmp_path / "u3.graphml").read_text().count("<node ") > 3
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_sigkill_and_resume_subprocess(tmp_path):
    """A real `cikg train` process killed with SIGKILL mid-run resumes to the uninterrupted metrics."""
    base = [sys.executable, "-m", "cikg", "train", "-", "data.synthetic_users=600", "data.synthetic_items=150",
            "model.name=cikgrec", "model.dim=32", "model.total_epoch=8", "train.epochs=8", "train.ks=[20]",
            "train.select=[recall@20]", "train.progress=false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(base + ["--run-dir", str(tmp_path / "ref")], check=True, env=env, capture_output=True)
    for _ in range(3):  # kill several times at different moments
        proc = subprocess.Popen(base + ["--run-dir", str(tmp_path / "killed")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        start_epoch = _epochs_done(tmp_path / "killed")
        while time.time() < deadline and _epochs_done(tmp_path / "killed") < start_epoch + 2 and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(base + ["--run-dir", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert got["test"] == ref["test"] and got["best_epoch"] == ref["best_epoch"]


def _epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0
