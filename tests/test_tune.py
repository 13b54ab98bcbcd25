"""`cikg tune`: a seeded Optuna study over synthetic 2-epoch runs writes best.yaml and the trials table; a rerun
adds trials up to N without redoing finished ones; a killed trial is run again from its checkpoint; pruning stops
a trial below the median; search spaces are checked, and every experiment config has one."""
from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

from cikg.cli import main
from cikg.config import load_yaml
from cikg.errors import CikgError
from cikg.train import load_run_config
from cikg.train.tune import OptunaPruning, check_space, load_search_space, tune

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data.synthetic_users=200", "data.synthetic_items=60", "data.synthetic_seed=1", "train.epochs=2",
        "train.ks=[10,20]", "train.select=[recall@20]", "train.batch_size=512", "train.progress=false",
        "model.dim=16", "model.layers=1"]
SPACE = "train.lr: {low: 1.0e-3, high: 3.0e-2, log: true}\nmodel.l2: {low: 1.0e-6, high: 1.0e-3, log: true}\n"


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_tune_writes_best_config_and_trials_then_resumes_up_to_n(tmp_path, space, monkeypatch, capsys):
    study_dir = tmp_path / "study"
    first = tune(None, space, 2, study_dir, overrides=BASE, seed=3)
    assert list(first.trials["state"]) == ["COMPLETE", "COMPLETE"]
    runs_before = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (study_dir / "trials").iterdir()}
    assert sorted(runs_before) == ["trial-000", "trial-001"]
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "-", *BASE, "--space", str(space), "--trials", "3", "--study-dir", "study",
                 "--seed", "3"]) == 0
    assert "best config: study/best.yaml" in capsys.readouterr().out
    table = pd.read_csv(study_dir / "trials.csv")
    assert list(table["trial"]) == [0, 1, 2] and set(table["state"]) == {"COMPLETE"}
    assert {"valid recall@20", "train.lr", "model.l2", "best epoch", "epochs", "run dir"} <= set(table.columns)
    for name, mtime in runs_before.items():  # finished trials are not redone
        assert (study_dir / "trials" / name / "metrics.json").stat().st_mtime_ns == mtime
    assert (study_dir / "trials" / "trial-002" / "metrics.json").exists()
    assert len(set(table["train.lr"])) == 3, "a resumed sampler does not replay the first suggestions"
    assert "| trial |" in (study_dir / "trials.md").read_text().replace("|   trial |", "| trial |")
    # best.yaml: the best trial's parameters, selected on valid, loadable by cikg train
    best_row = table.loc[table["valid recall@20"].idxmax()]
    best = load_run_config(study_dir / "best.yaml")
    assert best.train.lr == pytest.approx(best_row["train.lr"]) and best.model.l2 == pytest.approx(best_row["model.l2"])
    assert best.data.synthetic_users == 200 and best.train.epochs == 2
    trial_metrics = pd.read_json(study_dir / "trials" / f"trial-{int(best_row['trial']):03d}" / "metrics.json",
                                 typ="series")
    assert trial_metrics["valid"]["recall@20"] == pytest.approx(best_row["valid recall@20"])
    assert main(["train", str(study_dir / "best.yaml"), "train.epochs=1", "--run-dir", "runs/best"]) == 0
    # the same N again: nothing to do, nothing rerun
    again = tune(None, space, 3, study_dir, overrides=BASE, seed=3)
    assert len(again.trials) == 3


def test_a_killed_trial_runs_again_from_its_checkpoint(tmp_path, space, monkeypatch):
    from cikg.train import trainer as trainer_module

    study_dir = tmp_path / "study"
    real_epoch = trainer_module.Trainer.train_epoch
    calls = {"n": 0}

    def killed_in_epoch_2(self, epoch):
        calls["n"] += 1
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        tune(None, space, 2, study_dir, overrides=BASE)
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", real_epoch)
    result = tune(None, space, 2, study_dir, overrides=BASE)
    assert list(result.trials["state"]) == ["INTERRUPTED", "COMPLETE", "COMPLETE"]
    killed, retry = result.trials.iloc[0], result.trials.iloc[1]
    assert retry["run dir"] == killed["run dir"] and retry["train.lr"] == killed["train.lr"]
    history = pd.read_json(Path(retry["run dir"]) / "metrics.jsonl", lines=True)
    assert list(history["epoch"]) == [1, 2]  # epoch 1 from the checkpoint of the killed process, 2 after resume


def test_pruning_stops_a_trial_below_the_median(tmp_path):
    """The pruning tracker reports valid recall@20 per epoch; against a far better earlier trial it prunes."""
    from cikg.train import Trainer

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}))
    trial = study.ask()
    config = load_run_config(None, [*BASE, "train.epochs=4"])
    run_dir = tmp_path / "pruned"
    with pytest.raises(optuna.TrialPruned, match="below the median"):
        Trainer(config, run_dir, trackers=[OptunaPruning(trial, "recall@20")]).fit()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    pruned = study.trials[-1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert list(pruned.intermediate_values) == [1] and 0 < pruned.intermediate_values[1] < 1.0
    assert pruned.user_attrs["epochs_run"] == 1
    assert not (run_dir / "metrics.json").exists()


def test_pruned_trials_in_a_study(tmp_path, space):
    """With pruning from the second trial on, a study whose later trials fall below the median records them PRUNED."""
    result = tune(None, space, 6, tmp_path / "study", overrides=[*BASE, "train.epochs=3"], seed=0,
                  prune_startup=1)
    states = list(result.trials["state"])
    assert states[0] == "COMPLETE" and set(states) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states, states
    pruned = result.trials[result.trials["state"] == "PRUNED"]
    assert (pruned["epochs"] < 3).all()  # stopped early; the value is the last one reported
    assert (pruned["valid recall@20"] < result.trials["valid recall@20"].iloc[0]).all()


@pytest.mark.parametrize("text, message", [
    ("train.lrr: {low: 0.001, high: 0.01}", "unknown key"),
    ("train.lr: {low: 0.01, high: 0.001}", "low < high"),
    ("train.lr: {low: 0, high: 0.01, log: true}", "low > 0"),
    ("train.lr: {low: 0.001}", "needs both low and high"),
    ("train.lr: {choices: []}", "non-empty list"),
    ("train.lr: {low: 0.001, high: 0.01, lg: true}", "unknown field 'lg'"),
    ("model.layers: {low: 1, high: 3, step: 1}\ntrain.epochs: {choices: [0, 1]}", "positive integer"),
])
def test_bad_spaces_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(CikgError, match=message) as err:
        check_space(load_search_space(path), None, [], path)
    assert str(path) in str(err.value)


EXPERIMENT_MODELS = ["bprmf", "lightgcn", "lightgcn-cikg", "kgat", "kgat-mf", "cikgrec", "simgcl", "kgin"]
KG_ONLY = {"kgin": ["ml1m"]}
"""Models that need an item KG, and the experiment datasets without one (no config there)."""


def test_every_model_config_of_the_experiments_is_in_the_list():
    """A model config added to experiments/ without a search space fails here (augment-* reuse their backbone's;
    <model>-init.yaml is the run a model starts from, trained once, not tuned)."""
    stems = {p.stem for p in (ROOT / "experiments").glob("*/*.yaml") if not p.name.endswith(".space.yaml")
             and not p.name.startswith("augment-") and not p.name.endswith("-init.yaml")}
    assert stems == set(EXPERIMENT_MODELS)


@pytest.mark.parametrize("dataset", ["dbbook2014", "book-crossing", "ml1m"])
def test_every_experiment_config_has_a_valid_search_space(dataset):
    for model in EXPERIMENT_MODELS:
        config = ROOT / "experiments" / dataset / f"{model}.yaml"
        space_path = config.with_suffix(".space.yaml")
        if dataset in KG_ONLY.get(model, []):
            assert not config.exists() and not space_path.exists(), config
            continue
        space = load_search_space(space_path)
        check_space(space, config, [], space_path)
        keys = {p.key for p in space}
        assert {"train.lr", "model.l2"} <= keys, space_path
        assert len(keys) >= 3, f"{space_path}: lr, l2 and the model's own knobs"
        if model == "simgcl":
            assert {"model.cl_weight", "model.eps"} <= keys
        if model == "kgin":
            assert {"model.n_intents", "model.sim_regularity"} <= keys
        if model == "cikgrec":
            assert {"model.uir_weight", "model.gcl_weight", "model.gcl_temp", "model.min_mask_rate",
                    "model.max_mask_rate"} <= keys
        assert set(load_yaml(space_path)) == keys


def test_a_trial_left_running_by_a_dead_process_is_run_again(tmp_path, space):
    """SIGKILL leaves the trial RUNNING in study.db: the next run closes it and runs its parameters again."""
    study_dir = tmp_path / "study"
    tune(None, space, 1, study_dir, overrides=BASE)
    study = optuna.load_study(study_name="cikg-tune", storage=f"sqlite:///{study_dir / 'study.db'}")
    distributions = study.trials[0].distributions
    orphan = study.ask(distributions)  # as a process that died in the middle of this trial
    orphan.set_user_attr("run_dir", str(study_dir / "trials" / f"trial-{orphan.number:03d}"))
    params = dict(orphan.params)
    result = tune(None, space, 2, study_dir, overrides=BASE)
    assert list(result.trials["state"]) == ["COMPLETE", "INTERRUPTED", "COMPLETE"]
    retry = result.trials.iloc[2]
    assert retry["train.lr"] == pytest.approx(params["train.lr"]) and retry["run dir"] == result.trials.iloc[1]["run dir"]


def test_tune_with_mlflow_makes_every_trial_an_mlflow_run(tmp_path, space, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    assert main(["tune", "-", *BASE, "--space", str(space), "--trials", "2", "--study-dir", "study",
                 "--mlflow"]) == 0
    client = MlflowClient(tracking_uri="file:./mlruns")
    runs = client.search_runs([client.get_experiment_by_name("cikg-tune").experiment_id])
    table = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert sorted(r.info.run_name for r in runs) == ["trial-000", "trial-001"]
    by_name = {r.info.run_name: r for r in runs}
    for _, row in table.iterrows():
        run = by_name[f"trial-{int(row['trial']):03d}"]
        assert float(run.data.params["train.lr"]) == pytest.approx(row["train.lr"])
        assert run.data.metrics["final/valid_recall_at_20"] == pytest.approx(row["valid recall@20"])


@pytest.mark.parametrize("spec, value, edge", [
    ({"low": 1e-4, "high": 1e-2, "log": True}, 9.0e-3, "high"),  # 0.98 of the log range
    ({"low": 1e-4, "high": 1e-2, "log": True}, 5.5e-3, None),  # 0.87: inside
    ({"low": 1e-4, "high": 1e-2, "log": True}, 1.3e-4, "low"),  # 0.06
    ({"low": 1e-4, "high": 1e-2}, 9.0e-3, None),  # 0.90 - 1e-4 / 0.0099 on a linear scale: inside
    ({"low": 1e-4, "high": 1e-2}, 9.5e-3, "high"),
    ({"low": 1, "high": 3, "step": 1}, 3, "high"),
    ({"low": 1, "high": 4, "step": 1}, 3, None),
    ({"low": 1, "high": 4, "step": 1}, 1, "low"),
    ({"low": 0.0, "high": 0.3}, 0.0, None),  # no dropout: a floor, not an edge
    ({"low": 0.0, "high": 0.3}, 0.29, "high"),
    ({"choices": [1, 2]}, 2, None),
])
def test_a_best_value_near_a_bound_is_at_the_edge(tmp_path, spec, value, edge):
    from cikg.train.tune import edges_of

    path = tmp_path / "space.yaml"
    path.write_text(f"train.lr: {spec}\n".replace("'", ""))
    (param,) = load_search_space(path)
    assert param.edge(value) == edge
    assert edges_of([param], {"train.lr": value, "model.l2": 1.0}) == ({"train.lr": edge} if edge else {})


def test_a_study_reports_its_edges_and_refuses_another_space(tmp_path, space, capsys, monkeypatch, caplog):
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text("model.layers: {low: 1, high: 2, step: 1}\n")  # either value is at an edge
    result = tune(None, narrow, 1, tmp_path / "study", overrides=BASE, seed=0)
    side = {1: "low", 2: "high"}[result.best_params["model.layers"]]
    assert result.edges == {"model.layers": side}
    assert f"lies at the {side} edge of its range [1, 2]" in caplog.text
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "-", *BASE, "--space", str(narrow), "--trials", "1", "--study-dir", "study"]) == 0
    assert f"at the edge of its range (the optimum may lie beyond; widen it and tune in a new --study-dir): " \
           f"model.layers ({side})" in capsys.readouterr().out
    with pytest.raises(CikgError, match=r"study.db: the study ran over another search space than .*space.yaml"):
        tune(None, space, 2, tmp_path / "study", overrides=BASE, seed=0)
    assert len(tune(None, narrow, 1, tmp_path / "study", overrides=BASE, seed=0).trials) == 1  # its own space: fine


def test_a_diverging_trial_fails_and_the_study_goes_on(tmp_path):
    """A learning rate of 1e30 makes the embeddings overflow in epoch 1 (a NaN loss): that trial is recorded as
    failed, counts towards the budget, and the study selects among the others (book-crossing's KGIN study ended
    at such a trial before)."""
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {choices: [1.0e+30, 1.0e-2]}\n")
    result = tune(None, space, 4, tmp_path / "study", overrides=BASE, seed=0)
    states = dict(zip(result.trials["train.lr"], result.trials["state"]))
    assert set(result.trials["state"]) == {"FAIL", "COMPLETE"} and len(result.trials) == 4
    assert states[1.0e30] == "FAIL" and states[1.0e-2] == "COMPLETE"
    assert result.best_params == {"train.lr": 1.0e-2}


def test_a_diverging_run_names_the_model_epoch_and_loss(tmp_path):
    from cikg.errors import DivergedError
    from cikg.train import Trainer

    config = load_run_config(None, [*BASE, "model.name=lightgcn", "train.lr=1e30"])
    with pytest.raises(DivergedError, match=r"lightgcn on synthetic.*epoch 1: the loss is nan; training diverged"):
        Trainer(config, tmp_path / "run", trackers=[]).fit()
