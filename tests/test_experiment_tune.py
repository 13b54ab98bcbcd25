"""experiments/tune.py and run.py --tuned (issue 17 item 2) on a tiny budget: a study per model under one budget,
the tuned configs it writes, their training over seeds, and the refusals of a published table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.progress=false", "train.threads=1", "data.dataset=synthetic", "data.synthetic_users=80",
        "data.synthetic_items=120", "model.dim=8"]


@pytest.fixture
def tree(experiment, tmp_path, monkeypatch):
    """``(tune, run, experiments folder)``: the scripts pointed at a copy of dbbook2014's configs and spaces."""
    tune, run = experiment("tune"), experiment("run")
    folder = tmp_path / "experiments" / "dbbook2014"
    folder.mkdir(parents=True)
    for model in ("lightgcn", "bprmf"):
        for suffix in (".yaml", ".space.yaml"):
            shutil.copy(ROOT / "experiments" / "dbbook2014" / f"{model}{suffix}", folder)
    (tmp_path / "graphs").mkdir()
    shutil.copy(ROOT / "graphs" / "dbbook2014.yaml", tmp_path / "graphs")
    monkeypatch.setattr(run, "HERE", tmp_path / "experiments")
    monkeypatch.setattr(tune, "HERE", tmp_path / "experiments")
    return tune, run, folder


def test_studies_write_tuned_configs_that_run_py_trains(tree, tmp_path, capsys, tracked):
    tune, run, folder = tree
    before = {**tracked("tun*"), **tracked("tuned/*")}  # the published studies and configs, if any
    argv = ["dbbook2014", "--models", "bprmf", "lightgcn", "--trials", "3", "--trial-set", "train.epochs=2",
            "--set", *TINY, "--out", str(tmp_path / "runs"), "--publish"]
    assert tune.main(argv) == 0
    ledger = json.loads((folder / "tuning.json").read_text())
    assert set(ledger) == {"bprmf", "lightgcn"}
    for model, record in ledger.items():
        assert record["trials"] == 3 and sum(record["states"].values()) == 3
        assert record["hardware"].startswith("CPU: ") and record["hardware"].endswith(", 1 torch thread)")
        assert record["budget"] == {"trials": 3, "set": TINY[2:], "trial_set": ["train.epochs=2"], "seed": 0,
                                    "prune_warmup": tune.PRUNE_WARMUP}
        trials = (tmp_path / "runs" / "dbbook2014" / model / "study" / "trials.csv").read_text()
        assert f"{record['best_value']:.6g}"[:5] in trials  # the best value is one of the study's trials
        text = (folder / "tuned" / f"{model}.yaml").read_text()
        assert text.startswith(f"# {record['model']} on dbbook2014, tuned: the best of 3 trials")
        config = yaml.safe_load(text)
        assert config["train"]["epochs"] == tune.NO_CAP and config["train"]["patience"] == 10
        assert config["data"]["dataset"] == "synthetic" and config["data"]["synthetic_users"] == 80  # --set is kept
        assert config["train"]["threads"] is None and config["train"]["progress"] is True  # but its run-only keys
        for key, value in record["best_params"].items():
            section, name = key.split(".")
            assert config[section][name] == pytest.approx(value)
    page = (folder / "tuning.md").read_text()
    assert "| BPRMF " in page and "| LightGCN " in page and "3 trials; `train.epochs=2`" in page
    assert f"Hardware (every row): {ledger['bprmf']['hardware']}." in page
    assert {**tracked("tun*"), **tracked("tuned/*")} == before

    # a resumed sweep runs no trial again: the studies hold their 3 finished trials
    assert tune.main(argv) == 0
    assert json.loads((folder / "tuning.json").read_text()) == ledger
    # ... nor on a fresh machine: the published copy of each study resumes it
    assert (folder / "tuned" / "lightgcn.study.db").stat().st_size > 10_000
    shutil.rmtree(tmp_path / "runs")
    assert tune.main(argv) == 0
    assert json.loads((folder / "tuning.json").read_text()) == ledger
    assert not (tmp_path / "runs" / "dbbook2014" / "lightgcn" / "study" / "trials").exists()  # nothing trained

    # other threads are the same budget; other trials are not, and may not join a published ledger
    threads = [a.replace("train.threads=1", "train.threads=2") for a in argv]
    config = (folder / "tuned" / "bprmf.yaml").read_text()
    assert threads != argv and tune.main(threads) == 0
    # ... and a call that runs no trial keeps the record of the call that ran them (its command, its machine)
    assert json.loads((folder / "tuning.json").read_text()) == ledger
    assert (folder / "tuned" / "bprmf.yaml").read_text() == config
    capsys.readouterr()
    assert tune.main([*argv[:5], "5", *argv[6:]]) == 2
    err = capsys.readouterr().err
    assert "studies under another budget" in err and "trials: 3 instead of 5" in err
    assert tune.main([*argv, "--prune-warmup", "3"]) == 2
    assert f"prune_warmup: {tune.PRUNE_WARMUP} instead of 3" in capsys.readouterr().err

    # run.py --tuned trains the tuned configs over the seeds into results-tuned.json
    out = tmp_path / "runs-tuned"
    assert run.main(["dbbook2014", "--tuned", "--seeds", "0", "1", "--set", "train.epochs=2", "--out", str(out)]) == 0
    results = json.loads((out / "dbbook2014" / "results-tuned.json").read_text())
    assert set(results) == {"BPRMF", "LightGCN"} and results["LightGCN"]["seeds"] == [0, 1]
    assert results["LightGCN"]["settings"]["train.lr"] == pytest.approx(ledger["lightgcn"]["best_params"]["train.lr"])
    assert (out / "tuned" / "dbbook2014" / "LightGCN-seed1" / "metrics.json").is_file()
    page = (out / "dbbook2014" / "results-tuned.md").read_text()
    assert page.startswith("# dbbook2014: results, tuned and converged") and "tuned/*.yaml" in page


def test_a_published_tuned_table_needs_five_seeds_and_the_configs_as_they_are(tree, capsys):
    _, run, folder = tree
    (folder / "tuned").mkdir()
    shutil.copy(folder / "bprmf.yaml", folder / "tuned" / "bprmf.yaml")
    assert run.main(["dbbook2014", "--tuned", "--seeds", "0", "1", "2", "--set", "train.lr=0.1", "--publish"]) == 2
    err = capsys.readouterr().err
    assert "lack [3, 4]" in err and "--set train.lr=0.1 changes the tuned configs" in err
    assert run.main(["dbbook2014", "--tuned", "--models", "lightgcn"]) == 2
    assert "tuned/ has no config for lightgcn (run experiments/tune.py first)" in capsys.readouterr().err
    assert not (folder / "results-tuned.json").exists()


def test_a_model_without_a_search_space_is_refused(tree, capsys):
    tune, _, folder = tree
    (folder / "bprmf.space.yaml").unlink()
    assert tune.main(["dbbook2014", "--models", "bprmf", "--trials", "1"]) == 2
    assert "no config or search space for bprmf" in capsys.readouterr().err


def test_ablations_of_the_tuned_cikgrec_use_its_tuned_config(tree, tmp_path, capsys):
    _, run, folder = tree
    assert run.main(["dbbook2014", "--ablations", "--tuned", "--only", "CIKGRec w/o UIR"]) == 2
    assert "tuned/ has no config for cikgrec (run experiments/tune.py first)" in capsys.readouterr().err
    (folder / "tuned").mkdir()
    shutil.copy(ROOT / "experiments" / "dbbook2014" / "cikgrec.yaml", folder / "tuned" / "cikgrec.yaml")
    text = (folder / "tuned" / "cikgrec.yaml").read_text().replace("gcl_weight: 0.01", "gcl_weight: 0.02")
    (folder / "tuned" / "cikgrec.yaml").write_text(text.replace("../../graphs", "../../../graphs"))
    out = tmp_path / "runs"
    assert run.main(["dbbook2014", "--ablations", "--tuned", "--only", "CIKGRec w/o UIR", "--seeds", "0",
                     "--out", str(out), "--set", *TINY, "train.epochs=1", "model.use_transe=false"]) == 0
    row = json.loads((out / "dbbook2014" / "ablations-tuned.json").read_text())["CIKGRec w/o UIR"]
    assert row["settings"]["model.gcl_weight"] == 0.02 and row["settings"]["model.use_uir"] is False
    page = (out / "dbbook2014" / "ablations-tuned.md").read_text()
    assert page.startswith("# dbbook2014: CIKGRec ablations, tuned and converged")


def test_the_page_names_the_studies_still_to_run_and_how_far_each_got(tree):
    import optuna

    tune, _, folder = tree
    (folder / "tuned").mkdir()
    storage = f"sqlite:///{folder / 'tuned' / 'lightgcn.study.db'}"
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # not a finished trial
    page = tune.render("dbbook2014", {})
    assert "Not tuned yet: BPRMF (no trial yet), LightGCN (2 trials kept)." in page
    record = {"model": "LightGCN", "metric": "recall@20", "best_value": 0.2, "best_params": {"train.lr": 0.001},
              "trials": 2, "states": {"COMPLETE": 2}, "minutes": 0.1, "command": "python experiments/tune.py",
              "budget": {"trials": 2, "trial_set": ["train.epochs=2"], "set": [], "seed": 0, "prune_warmup": 10}}
    assert "Not tuned yet: BPRMF (no trial yet)." in tune.render("dbbook2014", {"lightgcn": record})
    assert "Not tuned yet" not in tune.render("dbbook2014", {"lightgcn": record, "bprmf": {**record, "model": "BPRMF"}})


def test_render_only_rewrites_the_page_from_the_ledger_and_runs_no_trial(tree, monkeypatch):
    tune, _, folder = tree
    monkeypatch.setattr(tune, "tune", lambda *a, **k: pytest.fail("--render-only ran a study"))
    record = {"model": "LightGCN", "metric": "recall@20", "best_value": 0.2, "best_params": {"train.lr": 0.001},
              "trials": 2, "states": {"COMPLETE": 2}, "minutes": 0.1, "command": "python experiments/tune.py x",
              "budget": {"trials": 2, "trial_set": ["train.epochs=2"], "set": [], "seed": 0, "prune_warmup": 10}}
    (folder / "tuning.json").write_text(json.dumps({"lightgcn": record}))
    assert tune.main(["dbbook2014", "--render-only", "--publish"]) == 0
    page = (folder / "tuning.md").read_text()
    assert "| LightGCN" in page and "0.2000" in page and "Not tuned yet: BPRMF (no trial yet)." in page
    assert not (folder / "tuned").exists()  # no study was kept either
    assert json.loads((folder / "tuning.json").read_text()) == {"lightgcn": record}


def test_a_widened_space_needs_restart_which_reruns_the_study_once_and_keeps_the_old_summary(tree, tmp_path, capsys):
    tune, _, folder = tree
    argv = ["dbbook2014", "--models", "bprmf", "--trials", "2", "--trial-set", "train.epochs=1", "--set", *TINY,
            "--out", str(tmp_path / "runs"), "--publish"]
    space = folder / "bprmf.space.yaml"
    space.write_text("model.dim: {low: 8, high: 9, step: 1}\ntrain.lr: {low: 1.0e-3, high: 2.0e-3}\n")
    assert tune.main(argv) == 0
    first = json.loads((folder / "tuning.json").read_text())["bprmf"]
    side = {8: "low", 9: "high"}[first["best_params"]["model.dim"]]  # either value is at an edge
    assert first["edges"].get("model.dim") == side and set(first["edges"]) <= {"model.dim", "train.lr"}
    assert f"At an edge of its range (the best value in the outer 10% of the range, on its scale; the optimum may " \
           f"lie beyond, so such a range is widened and its study run again with `--restart`): BPRMF `model.dim` " \
           f"({side})" in (folder / "tuning.md").read_text()

    space.write_text("model.dim: {low: 4, high: 16, step: 1}\ntrain.lr: {low: 1.0e-3, high: 2.0e-2}\n")
    assert "(widened since: its study is run again)." in tune.render("dbbook2014", {"bprmf": first})
    capsys.readouterr()
    assert tune.main(argv) == 2  # the kept study ran over the old space: never resumed silently
    assert "search space of bprmf changed since its published study; --restart bprmf" in capsys.readouterr().err
    assert json.loads((folder / "tuning.json").read_text())["bprmf"] == first

    study_dir = tmp_path / "runs" / "dbbook2014" / "bprmf" / "study"
    old_runs = sorted((study_dir / "trials").iterdir())
    # a restart cut after its first trial (as the end of a session cuts it): the next call resumes the new study
    tune.restart_study(study_dir, folder / "tuned" / "bprmf.study.db")
    tune.tune(folder / "bprmf.yaml", space, 1, study_dir, overrides=[*TINY, "train.epochs=1"], seed=0)
    cut = (study_dir / "trials" / "trial-000" / "metrics.json").stat().st_mtime_ns
    assert tune.main([*argv, "--restart", "bprmf"]) == 0
    assert (study_dir / "trials" / "trial-000" / "metrics.json").stat().st_mtime_ns == cut  # resumed, not redone
    second = json.loads((folder / "tuning.json").read_text())["bprmf"]
    assert second["trials"] == 2 and second["space_sha256"] != first["space_sha256"]
    assert second["superseded"] == [{key: first[key] for key in ("best_value", "best_params", "edges", "trials",
                                                                 "minutes", "space_sha256", "command")}
                                    | {"superseded": []}]
    new_runs = sorted((study_dir / "trials").iterdir())
    assert [p.name for p in new_runs] == [p.name for p in old_runs]  # trial-000, trial-001 again, trained anew
    assert tune.study_space(folder / "tuned" / "bprmf.study.db") == second["space_sha256"]
    # the tuned config is the best on valid of both studies (the first's best lies inside the widened space)
    own = second.get("study_best", second)
    assert second["best_value"] == max(first["best_value"], own["best_value"])
    assert ("study_best" in second) == (first["best_value"] > own["best_value"])
    tuned = yaml.safe_load((folder / "tuned" / "bprmf.yaml").read_text())
    assert tuned["model"]["dim"] == second["best_params"]["model.dim"]
    assert (folder / "tuned" / "bprmf.yaml").read_text().startswith("# BPRMF on dbbook2014, tuned: the best of 4 "
                                                                     "trials of 2 studies")
    chosen = 1 if "study_best" in second else 2
    page = (folder / "tuning.md").read_text()
    assert (f"- BPRMF: study 1 over the space `{first['space_sha256'][:12]}`: 2 trials, best valid "
            f"{first['best_value']:.4f}") in page
    assert f"The tuned config is the best on valid of all 4 trials: study {chosen}'s." in page

    # --restart again (a lane's command line keeps it): the new study is the current one, nothing runs again
    assert tune.main([*argv, "--restart", "bprmf"]) == 0
    assert json.loads((folder / "tuning.json").read_text())["bprmf"] == second


def test_a_widened_study_keeps_an_earlier_better_best_and_names_its_own(tree, tmp_path):
    tune, _, _ = tree
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 1.0e-4, high: 5.0e-2, log: true}\n")
    first = {"model": "BPRMF", "best_value": 0.25, "best_params": {"train.lr": 0.009}, "edges": {"train.lr": "high"},
             "trials": 20, "space_sha256": "a" * 64, "minutes": 1.0, "command": "c1"}
    second = {"model": "BPRMF", "best_value": 0.23, "best_params": {"train.lr": 0.002}, "edges": {}, "trials": 20,
              "space_sha256": "b" * 64, "minutes": 1.0, "command": "c2", "superseded": [tune.superseded_summary(first)]}
    tune.select_across_studies(second, tune.load_search_space(space))
    assert second["best_value"] == 0.25 and second["best_params"] == {"train.lr": 0.009}
    assert second["study_best"] == {"best_value": 0.23, "best_params": {"train.lr": 0.002}}
    assert second["edges"] == {}  # 0.009 lies inside the widened range
    third = {"model": "BPRMF", "best_value": 0.24, "best_params": {"train.lr": 0.003}, "edges": {}, "trials": 20,
             "space_sha256": "c" * 64, "minutes": 1.0, "command": "c3", "superseded": [tune.superseded_summary(second)]}
    tune.select_across_studies(third, tune.load_search_space(space))
    assert third["best_value"] == 0.25 and [tune.own_best(s)[0] for s in tune.studies_of(third)] == [0.25, 0.23, 0.24]
    (line,) = [x for x in tune.superseded_lines({"bprmf": third}) if x.startswith("- BPRMF")]
    assert "study 1 over the space `aaaaaaaaaaaa`: 20 trials, best valid 0.2500 with `train.lr=0.009`, at an edge: " \
           "`train.lr` (high); study 2 over the space `bbbbbbbbbbbb`: 20 trials, best valid 0.2300" in line
    assert line.endswith("The tuned config is the best on valid of all 60 trials: study 1's.")
