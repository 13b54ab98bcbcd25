"""Experiment tracking: TensorBoard event files of every run (read back with EventAccumulator), no epoch twice
after a kill and a resume, MLflow params/metrics/artifacts (read back with MlflowClient), `--mlflow` on the CLI."""
from __future__ import annotations

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cikg.cli import main
from cikg.models import CIKGRecConfig, LightGCNConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer
from cikg.train.tracking import MLflowTracker, TensorBoardTracker

SMALL = DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90, synthetic_seed=3)


def _config(model=None, **train):
    settings = dict(epochs=3, batch_size=512, lr=5e-3, patience=10, ks=(10, 20), seed=5, progress=False)
    settings.update(train)
    return RunConfig(data=SMALL, model=model or LightGCNConfig(layers=2, dim=16), train=TrainConfig(**settings))


def _events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return events


def _series(events: EventAccumulator, tag: str):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _same(series, expected, rel=1e-6):
    """Steps equal, values equal to float32 precision (event files store float32)."""
    assert [s for s, _ in series] == [s for s, _ in expected]
    assert [v for _, v in series] == pytest.approx([v for _, v in expected], rel=rel, abs=1e-9)


def test_every_run_writes_tensorboard_events_of_every_term(tmp_path):
    config = _config(CIKGRecConfig(dim=16, layers=2, use_transe=False), epochs=3, lr=2e-3)
    result = Trainer(config, tmp_path / "run").fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tags = set(_events(tmp_path / "run").Tags()["scalars"])
    terms = {k for k in history[0] if k not in ("epoch", "seconds", "train_seconds", "mask_rate")
             and not k.startswith("valid_")}
    assert {"bpr", "uir", "l2", "loss"} <= terms and any(t.startswith("cl") for t in terms)
    assert {f"loss/{t}" for t in terms} <= tags
    assert {"valid/recall@20", "valid/ndcg@10", "schedule/mask_rate", "train/lr", "time/epoch_seconds",
            "final/test_recall@20"} <= tags
    events = _events(tmp_path / "run")
    for term in ("bpr", "uir", "mask_rate", "valid_recall@20"):
        tag = {"mask_rate": "schedule/mask_rate", "valid_recall@20": "valid/recall@20"}.get(term, f"loss/{term}")
        _same(_series(events, tag), [(r["epoch"], r[term]) for r in history])
    assert history[-1]["mask_rate"] > history[0]["mask_rate"] > 0
    _same(_series(events, "train/lr"), [(1, 2e-3), (2, 2e-3), (3, 2e-3)])
    _same(_series(events, "final/test_recall@20"), [(result.best_epoch, result.test["recall@20"])])


def test_no_trackers_writes_no_events(tmp_path):
    Trainer(_config(epochs=1), tmp_path / "run", trackers=[]).fit()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_resumed_run_logs_each_epoch_once(tmp_path, monkeypatch):
    """Killed after epoch 2 was logged but before its checkpoint: the re-run epoch 2 replaces the first one."""
    run_dir = tmp_path / "run"
    first = Trainer(_config(epochs=4), run_dir)
    saves = {"n": 0}
    real_save = first.save_checkpoint

    def dies_saving_epoch_2():
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt  # epoch 2 reached TensorBoard, its checkpoint never did
        real_save()

    monkeypatch.setattr(first, "save_checkpoint", dies_saving_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    first.tracking.trackers[0].writer.close()
    assert [s for s, _ in _series(_events(run_dir), "loss/bpr")] == [1, 2]
    Trainer(_config(epochs=4), run_dir).fit()
    events = _events(run_dir)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("loss/bpr", "bpr"), ("valid/recall@20", "valid_recall@20"), ("time/epoch_seconds", "seconds")):
        _same(_series(events, tag), [(r["epoch"], r[key]) for r in history])
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # epoch 2 re-run: its new seconds are the ones kept
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2


def _mlflow_client(uri):
    import os

    from mlflow.tracking import MlflowClient

    assert os.environ.get("MLFLOW_ALLOW_FILE_STORE") == "true", "set by the tracker for a file store"

    return MlflowClient(tracking_uri=uri)


def test_mlflow_logs_params_metrics_artifacts_and_resumes_the_same_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    run_dir = tmp_path / "run"
    first = Trainer(_config(epochs=3), run_dir, trackers=[MLflowTracker(uri, experiment="tests")])
    real_train = first.train_epoch

    def dies_in_epoch_3(epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return real_train(epoch)

    monkeypatch.setattr(first, "train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    result = Trainer(_config(epochs=3), run_dir, trackers=[TensorBoardTracker(), MLflowTracker(uri, "tests")]).fit()
    client = _mlflow_client(uri)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "the resumed run continues the MLflow run, it does not open a second one"
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.lr"] == "0.005" and run.data.params["model.name"] == "lightgcn"
    assert run.data.params["data.synthetic_users"] == "300" and run.data.params["train.ks"] == "[10, 20]"
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    recall = client.get_metric_history(run.info.run_id, "valid/recall_at_20")
    _same(sorted((m.step, m.value) for m in recall), [(r["epoch"], r["valid_recall@20"]) for r in history])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/bpr")] == [1, 2, 3]
    assert run.data.metrics["final/test_recall_at_20"] == pytest.approx(result.test["recall@20"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"metrics.json", "config.yaml"}
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == run.info.run_id


def test_cli_mlflow_default_file_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "-", "data.synthetic_users=300", "data.synthetic_items=90", "train.epochs=1",
            "train.ks=[10,20]", "train.threads=1", "--run-dir", "runs/cli", "--mlflow"]
    assert main(args) == 0
    client = _mlflow_client("file:./mlruns")
    (run,) = client.search_runs([client.get_experiment_by_name("cikg").experiment_id])
    assert run.data.params["model.name"] == "lightgcn" and "valid/recall_at_20" in run.data.metrics
    assert (tmp_path / "mlruns").is_dir() and list((tmp_path / "runs/cli/tensorboard").iterdir())


def test_cli_mlflow_missing_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: import mlflow raises ImportError
    assert main(["train", "-", "train.epochs=1", "--run-dir", "runs/x", "--mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'cikg[tracking]'" in err
    assert not (tmp_path / "runs/x").exists(), "refused before any work"


def test_file_store_uris_are_made_absolute(tmp_path, monkeypatch):
    """MLflow caches a store per URI: a relative file store would stay bound to the first working directory."""
    from cikg.train.tracking import absolute_store_uri

    monkeypatch.chdir(tmp_path)
    expected = (tmp_path / "mlruns").resolve().as_uri()
    assert absolute_store_uri("file:./mlruns") == expected == absolute_store_uri("mlruns")
    assert absolute_store_uri(expected) == expected
    assert absolute_store_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert absolute_store_uri("http://host:5000") == "http://host:5000"


def test_a_resumed_writer_starts_a_later_second_than_the_killed_one(tmp_path):
    """Event files of one second and one process sort by their counter as text ("10" before "9"): a resumed
    writer waits for the next second, so its file sorts after the killed run's whatever the counters."""
    import time

    from cikg.train.tracking import wait_for_a_later_second

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.1.9").write_bytes(b"")
    wait_for_a_later_second(tmp_path)
    assert time.time() >= now + 1
    started = time.time()
    wait_for_a_later_second(tmp_path / "absent")  # nothing written yet: no wait
    assert time.time() - started < 0.1
