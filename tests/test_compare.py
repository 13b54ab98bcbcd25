"""`cikg runs compare`: the config keys that differ, valid/test metrics from metrics.json, curves from
metrics.jsonl, and clear errors for what is not a run directory."""
from __future__ import annotations

import json

import pytest

from cikg.cli import main
from cikg.errors import CikgError
from cikg.train.compare import compare_runs

BASE = ["train.epochs=2", "data.synthetic_users=200", "data.synthetic_items=60", "train.ks=[10,20]",
        "train.threads=1", "model.dim=16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("lgcn", ["model.layers=1"]), ("lgcn-lr", ["model.layers=2", "train.lr=0.01"]),
                        ("mf", ["model.name=bprmf"])):
        assert main(["train", "-", *BASE, *extra, "--run-dir", str(root / name)]) == 0
    return root


def test_table_holds_differing_keys_and_metrics(runs):
    frame = compare_runs([runs / "lgcn", runs / "lgcn-lr", runs / "mf"], metrics=["recall@20"])
    assert list(frame["run"]) == ["lgcn", "lgcn-lr", "mf"]
    differing = [c for c in frame.columns if "." in c]
    # keys only LightGCN has (view, self_loops, ...) are equal where they apply: not differences
    assert differing == ["model.name", "model.layers", "train.lr"]
    assert list(frame["train.lr"]) == ["0.001", "0.01", "0.001"]  # as written in config.yaml
    assert list(frame["model.layers"]) == ["1", "2", ""]  # bprmf has no layers
    for run in ("lgcn", "lgcn-lr", "mf"):
        metrics = json.loads((runs / run / "metrics.json").read_text())
        row = frame[frame["run"] == run].iloc[0]
        assert row["valid recall@20"] == pytest.approx(metrics["valid"]["recall@20"])
        assert row["test recall@20"] == pytest.approx(metrics["test"]["recall@20"])
        assert row["best epoch"] == metrics["best_epoch"]
    assert "data.dataset" not in frame.columns and "train.epochs" not in frame.columns
    same_model = compare_runs([runs / "lgcn", runs / "lgcn-lr"], metrics=["recall@20"])
    assert list(same_model.columns[:5]) == ["run", "model", "model.layers", "train.lr", "best epoch"]


def test_cli_writes_markdown_and_plot(runs, tmp_path, capsys):
    table, plot = tmp_path / "cmp.md", tmp_path / "cmp.png"
    assert main(["runs", "compare", str(runs / "lgcn"), str(runs / "lgcn-lr"), "--metric", "recall@20",
                 "--metric", "ndcg@10", "-o", str(table), "--plot", str(plot)]) == 0
    text = table.read_text()
    assert text.splitlines()[0].split("|")[1].strip() == "run"
    assert "valid recall@20" in text and "test ndcg@10" in text and "train.lr" in text
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lgcn-lr" in capsys.readouterr().out


def test_plot_stars_each_runs_selected_epoch(runs):
    from cikg.train.compare import plot_compare

    fig = plot_compare([runs / "lgcn", runs / "mf"], metrics=["recall@20"])
    stars = {line.get_label(): float(line.get_xdata()[0]) for line in fig.axes[0].get_lines()
             if line.get_marker() == "*"}
    expected = [json.loads((runs / r / "metrics.json").read_text())["best_epoch"] for r in ("lgcn", "mf")]
    assert sorted(stars.values()) == sorted(float(e) for e in expected) and len(stars) == 2


def test_errors_name_the_directory_or_metric(runs, tmp_path):
    with pytest.raises(CikgError, match="not a run directory"):
        compare_runs([runs / "lgcn", tmp_path])
    with pytest.raises(CikgError, match="no run has metric 'recall@50'"):
        compare_runs([runs / "lgcn"], metrics=["recall@50"])
    assert main(["runs", "compare", str(tmp_path / "nope")]) == 2
