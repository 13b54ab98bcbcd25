"""Experiment scripts never overwrite the tracked tables by accident (issue 16, defect 3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["train.epochs=1", "train.progress=false", "data.dataset=synthetic", "data.synthetic_users=80",
        "data.synthetic_items=120", "model.dim=8"]


@pytest.fixture(scope="module")
def scripts(experiment):
    return experiment("run"), experiment("augment")



def test_a_smoke_run_cannot_replace_a_published_row(scripts, capsys, tracked):
    run, _ = scripts
    before = tracked("results.*")
    code = run.main(["dbbook2014", "--models", "lightgcn", "--set", "train.epochs=1", "--publish"])
    assert code == 2
    err = capsys.readouterr().err
    assert "row 'LightGCN' was produced with other settings" in err and "train.epochs: 60 -> 1" in err
    assert "nothing was run" in err
    assert tracked("results.*") == before


def test_a_sweep_writes_its_own_ledger_unless_published(scripts, tmp_path, capsys, tracked):
    run, _ = scripts
    before = tracked("results.*")
    out = tmp_path / "runs"
    assert run.main(["dbbook2014", "--models", "bprmf", "--seeds", "0", "--out", str(out), "--set", *TINY]) == 0
    assert tracked("results.*") == before  # the tracked tables are untouched
    ledger = json.loads((out / "dbbook2014" / "results.json").read_text())
    row = ledger["BPRMF"]
    assert row["seeds"] == [0] and row["settings"]["train.epochs"] == 1 and "train.seed" not in row["settings"]
    assert "--publish" not in row["command"] and "data.synthetic_users=80" in row["command"]
    page = (out / "dbbook2014" / "results.md").read_text()
    assert "| BPRMF " in page and f"{row['mean']['recall@20']:.4f}" in page
    assert (out / "dbbook2014" / "BPRMF-seed0" / "metrics.json").is_file()

    # the same settings with more seeds may extend the row; other settings or fewer seeds may not
    assert run.main(["dbbook2014", "--models", "bprmf", "--seeds", "0", "--out", str(out), "--set", *TINY,
                     "train.lr=0.01"]) == 2
    assert "train.lr: " in capsys.readouterr().err
    assert json.loads((out / "dbbook2014" / "results.json").read_text()) == ledger
    assert run.main(["dbbook2014", "--models", "bprmf", "--seeds", "0", "1", "--out", str(out),
                     "--set", *TINY]) == 0
    assert json.loads((out / "dbbook2014" / "results.json").read_text())["BPRMF"]["seeds"] == [0, 1]
    assert run.main(["dbbook2014", "--models", "bprmf", "--seeds", "1", "--out", str(out), "--set", *TINY]) == 2
    assert "has seeds [0, 1], this sweep only [1]" in capsys.readouterr().err
    assert run.main(["dbbook2014", "--models", "bprmf", "--seeds", "0", "--out", str(out), "--set", *TINY,
                     "train.lr=0.01", "--replace"]) == 0
    replaced = json.loads((out / "dbbook2014" / "results.json").read_text())["BPRMF"]
    assert replaced["settings"]["train.lr"] == 0.01 and replaced["seeds"] == [0]


def test_a_row_written_by_another_sweep_meanwhile_is_kept(scripts, tmp_path, monkeypatch):
    """Two sweeps may share a ledger (one per core): each row is added under the ledger's lock, to the ledger as
    it is then, not as it was when the sweep started."""
    run, _ = scripts
    out = tmp_path / "runs"
    ledger_path = out / "dbbook2014" / "results.json"
    real_run_one = run.run_one

    def run_one_while_another_sweep_lands_a_row(*args, **kwargs):
        with run.locked_ledger(ledger_path, sort=False) as ledger:
            ledger["Other sweep's row"] = {"label": "Other sweep's row"}
        return real_run_one(*args, **kwargs)

    monkeypatch.setattr(run, "run_one", run_one_while_another_sweep_lands_a_row)
    monkeypatch.setattr(run, "render", lambda *args, **kwargs: ("page", ""))  # the foreign row has no figures
    assert run.main(["dbbook2014", "--models", "lightgcn", "bprmf", "--seeds", "0", "--out", str(out),
                     "--set", *TINY]) == 0
    assert list(json.loads(ledger_path.read_text())) == ["Other sweep's row", "LightGCN", "BPRMF"]

def test_missing_trains_only_the_rows_the_ledger_lacks(scripts, tmp_path, monkeypatch):
    run, _ = scripts
    out = tmp_path / "runs"
    argv = ["dbbook2014", "--models", "bprmf", "lightgcn", "--seeds", "0", "--out", str(out), "--set", *TINY]
    assert run.main(argv[:3] + argv[4:]) == 0  # BPRMF alone
    trained = []
    real_run_one = run.run_one
    monkeypatch.setattr(run, "run_one", lambda *a, **k: trained.append((a[1], a[2])) or real_run_one(*a, **k))
    assert run.main([*argv, "--missing"]) == 0
    assert trained == [("lightgcn", 0)]
    assert list(json.loads((out / "dbbook2014" / "results.json").read_text())) == ["BPRMF", "LightGCN"]
    trained.clear()  # more seeds, or other settings, are not "already in"
    assert run.main([*argv[:5], "0", "1", *argv[6:], "--missing"]) == 0
    assert trained == [("bprmf", 0), ("bprmf", 1), ("lightgcn", 0), ("lightgcn", 1)]


def test_a_setting_added_to_cikg_since_a_row_was_recorded_counts_only_off_its_default(scripts):
    """A published row recorded before ``train.init_from`` existed is still "already in" (``--missing`` skips
    it); the same row with the new setting set is another row."""
    run, _ = scripts
    ledger = json.loads((EXPERIMENTS / "dbbook2014" / "results-tuned.json").read_text())
    recorded = {k: v for k, v in ledger["BPRMF"]["settings"].items() if k != "train.init_from"}
    now = run.row_settings("dbbook2014", "tuned/bprmf", [])
    assert "train.init_from" in now and "train.init_from" not in recorded
    assert run.changed_keys(recorded, now) == [] and run.same_settings(recorded, now)
    assert run.already_in({"BPRMF": {**ledger["BPRMF"], "settings": recorded}}, "BPRMF", now, "dbbook2014", [0, 4])
    warm = {**now, "train.init_from": "/runs/bprmf-64"}
    assert run.changed_keys(recorded, warm) == ["train.init_from"] and not run.same_settings(recorded, warm)
    assert run.changed_keys({**recorded, "model.l2": 1.0}, now) == ["model.l2"]
    assert not run.same_settings(None, now)

def test_published_rows_without_recorded_settings_are_resolved_from_their_command(scripts):
    run, _ = scripts
    ledger = json.loads((EXPERIMENTS / "dbbook2014" / "results.json").read_text())
    legacy = {key: value for key, value in ledger["LightGCN"].items() if key != "settings"}
    settings = run.recorded_settings("dbbook2014", legacy)
    assert settings["train.epochs"] == 60 and settings["train.lr"] == 0.005
    same = run.row_settings("dbbook2014", "lightgcn", ["train.epochs=60", "train.lr=0.005"])
    assert run.replacement_conflicts("dbbook2014", ledger, {"LightGCN": same}, [0, 1, 2]) == []


def test_augment_table_refuses_other_training_overrides(scripts, tmp_path):
    """Before augment.json existed, the published page was the record of its overrides; a ledger records both."""
    _, augment = scripts
    page, absent = EXPERIMENTS / "dbbook2014" / "augment.md", tmp_path / "augment.json"
    published = {"overrides": ["train.epochs=60", "train.lr=0.005", "train.progress=false"], "feature_seed": 2024}
    assert augment.other_settings(absent, page, published) is None
    refusal = augment.other_settings(absent, page, {**published, "overrides": ["train.epochs=1"]})
    assert "train.epochs=60 train.lr=0.005" in refusal and "'train.epochs=1'" in refusal
    assert augment.other_settings(absent, tmp_path / "absent.md", {"overrides": ["train.epochs=1"]}) is None
    absent.write_text(json.dumps({"settings": published, "runs": {}}))
    assert augment.other_settings(absent, page, published) is None
    assert "feature_seed: 2024 -> 7" in augment.other_settings(absent, page, {**published, "feature_seed": 7})
    assert augment.recorded_argv(["dbbook2014", "--publish", "--methods", "kar", "--replace"]) == [
        "dbbook2014", "--methods", "kar"]


def test_a_dataset_runs_the_models_it_has_configs_for(scripts, tmp_path, capsys):
    """KGIN needs an item KG: ml1m has no kgin.yaml, its default sweep leaves KGIN out and asking for it fails."""
    run, _ = scripts
    assert "kgin" in run.models_of("dbbook2014") and "kgin" in run.models_of("book-crossing")
    assert "kgin" not in run.models_of("ml1m") and "cikgrec" in run.models_of("ml1m")
    assert "KGIN" not in run.jobs_of(run.parse_args(["ml1m"])) and "KGIN" in run.jobs_of(run.parse_args(["dbbook2014"]))
    assert run.main(["ml1m", "--models", "kgin", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "experiments/ml1m/ has no config for kgin" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing was run


def test_tables_show_intervals_and_the_paired_test_of_cikgrec_against_the_best_baseline(scripts, experiment, tmp_path):
    """Two tiny real runs per model (synthetic data, 1 epoch, seeds 0 and 1): the table shows mean ± the t
    half-width, the p-values of CIKGRec against the strongest baseline recomputed from the run directories,
    and the sparse-gain page beside it; --render-only regenerates both from the ledger alone."""
    import pandas as pd

    from cikg.eval.stats import compare_models, format_p, group_gains, mean_ci
    from cikg.train import read_per_user

    run, _ = scripts
    out = tmp_path / "runs"
    argv = ["dbbook2014", "--models", "bprmf", "lightgcn", "cikgrec", "--seeds", "0", "1", "--out", str(out),
            "--resamples", "500", "--set", *TINY]
    assert run.main(argv) == 0
    folder = out / "dbbook2014"
    ledger = json.loads((folder / "results.json").read_text())
    page = (folder / "results.md").read_text()
    for label in ("BPRMF", "LightGCN", "CIKGRec"):
        expected = mean_ci([seed["recall@20"] for seed in ledger[label]["per_seed"]])
        assert expected.n == 2 and f"| {expected.cell()} " in page
        assert ledger[label]["per_user"] == f"per_user/{label}.csv.gz" and (folder / ledger[label]["per_user"]).is_file()
    best = max(("BPRMF", "LightGCN"), key=lambda label: ledger[label]["mean"]["recall@20"])
    assert run.best_baseline(ledger) == best

    def frames(label):
        return pd.concat([read_per_user(folder / f"{label}-seed{seed}") for seed in (0, 1)])

    table = [line for line in page.splitlines() if line.startswith("| CIKGRec ")][0]
    cells = [c.strip() for c in table.split("|")]
    p_values = [compare_models(frames("CIKGRec"), frames(best), m, resamples=500)[0].p_value
                for m in ("recall@20", "ndcg@20")]
    assert cells[8] == " / ".join(format_p(p) for p in p_values)
    assert "vs best baseline (p, Wilcoxon: R@20 / N@20)" in page and f"against the best baseline ({best}" in page
    assert "best baseline" in [c.strip() for c in [x for x in page.splitlines() if x.startswith(f"| {best} ")][0].split("|")]

    from cikg.train.hardware import describe_hardware

    here = describe_hardware(torch.device("cpu"))  # each run records where it trained; the page says it per row
    assert ledger["CIKGRec"]["hardware"] == [here, here] and f"Hardware (every row): {here}." in page
    assert "2-core CPU shared" not in page  # no longer a claim written into the page by hand

    gains_page = (folder / "results-sparse-gain.md").read_text()
    whole = group_gains(frames("CIKGRec"), frames(best), "recall@20", resamples=500)[0]
    assert whole.group == "all" and whole.n_users == len(read_per_user(folder / "CIKGRec-seed0")) > 0
    assert f"| {whole.cell()} " in gains_page and "Where the claim holds:" in gains_page
    assert "train<=5" in gains_page and "train<=10" in gains_page

    # one command regenerates both pages from the ledger (the run directories are not needed)
    (folder / "results.md").unlink()
    (folder / "results-sparse-gain.md").unlink()
    for seed in (0, 1):
        (folder / f"CIKGRec-seed{seed}" / "per_user_test.csv.gz").unlink()
    assert run.main(["dbbook2014", "--out", str(out), "--render-only", "--resamples", "500"]) == 0
    assert (folder / "results.md").read_text() == page
    assert (folder / "results-sparse-gain.md").read_text() == gains_page

    # collect.py --render does the same for every ledger of a tree, and collects the sparse-gain page too
    import shutil

    root = tmp_path / "tree"
    (root / "dbbook2014").mkdir(parents=True)
    shutil.copy(folder / "results.json", root / "dbbook2014" / "results.json")
    shutil.copytree(folder / "per_user", root / "dbbook2014" / "per_user")
    collect = experiment("collect")
    assert collect.render_ledgers(root, resamples=500) == [root / "dbbook2014" / "results.md"]
    assert (root / "dbbook2014" / "results-sparse-gain.md").read_text() == gains_page
    collected = collect.collect(root=root)
    assert "### Sparse users: CIKGRec over the best baseline (`experiments/dbbook2014/results-sparse-gain.md`)" in collected


def test_rows_without_per_user_files_show_no_p_values(scripts):
    run, _ = scripts
    ledger = json.loads((EXPERIMENTS / "dbbook2014" / "results.json").read_text())
    page, gains = run.render("dbbook2014", ledger, False, EXPERIMENTS / "dbbook2014")  # renders, writes nothing
    assert gains == "" and "No paired test" in page and "vs best baseline" not in page
    row = ledger["CIKGRec"]
    assert f"{row['mean']['recall@20']:.4f} ± {row['std']['recall@20']:.4f}†" in page  # legacy row: std, marked


def test_the_headline_takes_each_models_tuned_row_where_it_has_one(experiment, tmp_path):
    """docs/results.md opens with every model on every dataset: the tuned row where the model has one, else its
    untuned row marked, the best tuned mean of a column in bold, and n/a where the model has no config."""
    collect = experiment("collect")
    from cikg.eval.stats import mean_ci

    def row(*recalls):
        seeds = [{"recall@20": r, "ndcg@20": r / 2} for r in recalls]
        return {"seeds": list(range(len(recalls))), "per_seed": seeds,
                "mean": {m: sum(s[m] for s in seeds) / len(seeds) for m in ("recall@20", "ndcg@20")}}

    folder = tmp_path / "dbbook2014"
    folder.mkdir()
    for model in ("bprmf", "lightgcn", "cikgrec", "simgcl"):  # KGAT, KGIN and LightGCN-CIKG have no config here
        (folder / f"{model}.yaml").write_text("")
    (folder / "results-tuned.json").write_text(json.dumps({"LightGCN": row(0.30, 0.32), "CIKGRec": row(0.29, 0.30)}))
    (folder / "results.json").write_text(json.dumps({"LightGCN": row(0.1, 0.1), "BPRMF": row(0.40, 0.42)}))
    (run,) = collect.experiment_scripts("run")
    table = collect.headline_table(collect.rows_by_dataset(run, tmp_path), run, tmp_path)
    assert list(table.index)[-1] == "CIKGRec" and "KGIN" in table.index
    assert table.loc["LightGCN", "dbbook2014 R@20"] == f"**{mean_ci([0.30, 0.32]).cell()}**"  # tuned beats untuned
    assert table.loc["CIKGRec", "dbbook2014 R@20"] == mean_ci([0.29, 0.30]).cell()
    # the untuned BPR-MF row is shown, marked, and never bold though its mean is the highest
    assert table.loc["BPRMF", "dbbook2014 R@20"] == mean_ci([0.40, 0.42]).cell() + collect.UNTUNED
    assert table.loc["SimGCL", "dbbook2014 N@20"] == "not run" and table.loc["KGIN", "dbbook2014 N@20"] == "n/a"
    assert (table["ml1m R@20"] == "n/a").all()  # nothing configured for it in this tree
    page = collect.headline(tmp_path)
    assert "- dbbook2014: tuned and converged LightGCN, CIKGRec (seeds 0, 1); untuned° BPRMF (seeds 0, 1)." in page
    assert collect.collect(root=tmp_path).index("## Headline") < collect.collect(root=tmp_path).index("## dbbook2014")


def test_docs_results_md_is_what_collect_writes_from_the_pages(experiment):
    """docs/results.md is only ever written by experiments/collect.py: no figure there is missing from (or
    differs from) the experiment pages and notes."""
    collect = experiment("collect")
    expected = collect.collect((EXPERIMENTS / "NOTES.md").read_text())
    assert (EXPERIMENTS.parent / "docs" / "results.md").read_text() == expected, (
        "docs/results.md is stale: run `python experiments/collect.py`")


def test_ablations_draw_the_cl_strength_curve_from_the_gcl_weight_rows(scripts, tmp_path):
    run, _ = scripts
    out = tmp_path / "runs"
    rows = ["CIKGRec", "CIKGRec (gcl_weight=0.1)", "CIKGRec (gcl_weight=0.001)"]
    assert run.main(["dbbook2014", "--ablations", "--only", *rows, "--seeds", "0", "1", "--out", str(out),
                     "--set", *TINY, "model.use_transe=false"]) == 0
    ledger = json.loads((out / "dbbook2014" / "ablations.json").read_text())
    assert ledger["CIKGRec (gcl_weight=0.1)"]["settings"]["model.gcl_weight"] == 0.1
    curve = run.gcl_curve(ledger, "dbbook2014")
    assert list(curve["gcl_weight"]) == [0.001, 0.01, 0.1]  # the full model at the config's weight in between
    assert list(curve["label"]) == ["CIKGRec (gcl_weight=0.001)", "CIKGRec", "CIKGRec (gcl_weight=0.1)"]
    full = ledger["CIKGRec"]["per_seed"]
    assert curve.loc[1, "recall@20"] == pytest.approx(sum(s["recall@20"] for s in full) / 2)
    assert curve.loc[1, "recall@20 ±"] > 0  # two seeds: an interval
    page = (out / "dbbook2014" / "ablations.md").read_text()
    assert "## CL strength: test metrics against gcl_weight" in page and "](ablations-gcl.png)" in page
    assert (out / "dbbook2014" / "ablations-gcl.png").stat().st_size > 10_000
    assert run.gcl_curve({"CIKGRec": ledger["CIKGRec"]}, "dbbook2014").empty  # one point is no curve

    # each ablation row carries its paired test against the full model: the Wilcoxon p over users (each user's
    # metric averaged over the seeds), checked here against scipy on the ledger's per-user files
    import pandas as pd
    from scipy.stats import wilcoxon

    def per_user(label):
        frame = pd.read_csv(out / "dbbook2014" / ledger[label]["per_user"], dtype={"user": str})
        return frame.groupby("user")["recall@20"].mean()

    ablated, full = per_user("CIKGRec (gcl_weight=0.1)"), per_user("CIKGRec")
    difference = (ablated - full.reindex(ablated.index)).round(6)
    expected = wilcoxon(difference, zero_method="wilcox").pvalue  # zeros dropped before ranking
    tests = run.ablation_tests(ledger, out / "dbbook2014", resamples=200)
    assert set(tests) == {"CIKGRec (gcl_weight=0.1)", "CIKGRec (gcl_weight=0.001)"}
    assert tests["CIKGRec (gcl_weight=0.1)"]["recall@20"][0].p_value == pytest.approx(expected)
    row = next(line for line in page.splitlines() if line.startswith("| CIKGRec (gcl_weight=0.1) "))
    assert f"| {run.p_cell(tests['CIKGRec (gcl_weight=0.1)'])} " in row and run.ABLATION_P in page
    assert "| full model " in page and "## Each ablation against the full CIKGRec" in page


def test_every_mask_schedule_and_the_cl_strengths_are_ablation_rows(scripts):
    run, _ = scripts
    for schedule in ("linear", "constant"):
        assert [f"model.increase_type={schedule}"] in run.ABLATIONS.values()
    weights = sorted(float(run.GCL_ROW.fullmatch(label).group(1)) for label in run.ABLATIONS if run.GCL_ROW.fullmatch(label))
    assert len(weights) >= 3 and weights[0] < 0.01 < weights[-1]  # around the published weight


def test_collect_render_redraws_the_sweep_pages_from_their_ledgers(experiment, tmp_path):
    """Every page with a ledger regenerates from it with one command (``collect.py --render``): the published
    interest-source pages are exactly what their ledgers render, and a noise ledger gets its page and plot."""
    import shutil

    collect = experiment("collect")
    root = tmp_path / "tree"
    for dataset in ("dbbook2014", "book-crossing"):
        (root / dataset).mkdir(parents=True)
        shutil.copy(EXPERIMENTS / dataset / "interests.json", root / dataset / "interests.json")
    shutil.copy(EXPERIMENTS / "dbbook2014" / "noise_ledger.json", root / "dbbook2014" / "noise.json")
    written = collect.render_ledgers(root, resamples=200)
    assert sorted(p.relative_to(root).as_posix() for p in written) == [
        "book-crossing/interests.md", "dbbook2014/interests.md", "dbbook2014/noise.md"]
    for dataset in ("dbbook2014", "book-crossing"):
        assert (root / dataset / "interests.md").read_text() == (EXPERIMENTS / dataset / "interests.md").read_text()
    assert "40% noisy" in (root / "dbbook2014" / "noise.md").read_text()
    assert (root / "dbbook2014" / "noise.png").stat().st_size > 10_000
    assert "](../experiments/dbbook2014/noise.png)" in collect.collect(root=root)


def test_the_hardware_paragraph_names_each_machine_with_its_rows(scripts):
    run, _ = scripts
    cpu, gpu = "CPU: AMD EPYC (2 cores, 1 torch thread)", "GPU: NVIDIA H100 80GB HBM3"
    assert run.hardware_lines({"BPRMF": [cpu, cpu], "LightGCN": [cpu]}) == [f"Hardware (every row): {cpu}.", ""]
    lines = run.hardware_lines({"BPRMF": [cpu, None], "CIKGRec": [gpu, gpu], "KGAT": [None]})
    assert lines[2:5] == [f"- {cpu}: BPRMF", f"- {run.UNRECORDED_HARDWARE}: BPRMF, KGAT", f"- {gpu}: CIKGRec"]
