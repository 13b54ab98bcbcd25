"""experiments/interests.py (issue 15 item 6) on a tiny budget: interests made per source, ledger, resume, table."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cikg.cli import main as cikg_main
from cikg.data import synthetic
from cikg.data.io import save_dataset

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["train.epochs=1", "train.progress=false", "train.threads=1", "model.dim=8", "model.use_transe=false"]


@pytest.fixture(scope="module")
def interests(experiment):
    return experiment("interests")



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved synthetic dataset and a replay file of answers for it (kg-profile's own raw file)."""
    root = tmp_path_factory.mktemp("tiny")
    data = save_dataset(synthetic(120, 150, seed=3), root / "tiny")
    assert cikg_main(["interests", "infer", str(data), "--backend", "kg-profile", "-o", str(root / "answers"),
                      "--no-progress"]) == 0
    return data, root / "answers" / "user_interests_raw.jsonl"


def test_a_tiny_sweep_prepares_each_source_ledgers_resumes_and_tabulates(interests, tiny, tmp_path, monkeypatch,
                                                                         capsys, tracked):
    data, answers = tiny
    before = tracked("interests*")
    out = tmp_path / "runs"
    argv = ["dbbook2014", "--sources", "smollm2", "kg-profile", "none", "--seeds", "0", "--kappa", "40",
            "--answers", str(answers), "--out", str(out), "--set", *TINY, f"data.dataset={data}"]
    assert interests.main(argv) == 0
    assert tracked("interests*") == before  # nothing published
    ledger = json.loads((out / "dbbook2014" / "interests.json").read_text())
    assert sorted(ledger["runs"]) == ["kg-profile|seed0", "none|seed0", "smollm2|seed0"]
    assert sorted(ledger["prepared"]) == ["kg-profile", "smollm2"]
    for source in ("smollm2", "kg-profile"):
        folder = out / "dbbook2014" / "interests" / f"{source}-k40"
        report = json.loads((folder / "report.json").read_text())
        prepared = ledger["prepared"][source]["report"]
        assert prepared["interest_edges"] == report["clustering"]["user_interest_edges"] > 0
        assert prepared["score"]["auc"] == report["score"]["primary"]["auc"] and 0 < prepared["score"]["auc"] < 1
        assert ledger["runs"][f"{source}|seed0"]["settings"]["data.interests"] == f"<out>/interests/{source}-k40"
    # the replayed answers are kg-profile's own, so both sources cluster the same phrases alike
    assert ledger["prepared"]["smollm2"]["report"]["score"] == ledger["prepared"]["kg-profile"]["report"]["score"]
    none = ledger["runs"]["none|seed0"]
    assert none["settings"]["model.use_interests"] is False and none["settings"]["data.interests"] is None
    page = (out / "dbbook2014" / "interests.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| kg-profile"))
    assert f"{ledger['runs']['kg-profile|seed0']['test']['recall@20']:.4f}" in row
    score = ledger["prepared"]["kg-profile"]["report"]["score"]
    assert f"{score['auc']:.3f} ({score['users']:,})" in row
    assert f"{ledger['prepared']['kg-profile']['report']['interest_edges']:,}" in row
    assert "| none (w/o interests)" in page and "popularity (train counts) on the same users: SmolLM2-135M (few-shot, all users) AUC" in page
    assert "Not run yet: GPT-3.5 (authors' file)." in page
    kg, none = ledger["runs"]["kg-profile|seed0"]["test"]["recall@20"], none["test"]["recall@20"]
    assert (f"- kg-profile (offline, not an LLM) against no interests: test Recall@20 {kg - none:+.4f} "
            f"({kg / none - 1:+.1%}); no interval for one side.") in page
    assert "- Predictive score against downstream gain: by score AUC" in page and "2 scored sources" in page

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(interests.base, "run_one", no_training)
    assert interests.main(argv) == 0
    assert json.loads((out / "dbbook2014" / "interests.json").read_text()) == ledger
    capsys.readouterr()
    assert interests.main([*argv, "model.dim=16"]) == 2
    err = capsys.readouterr().err
    assert "runs of other settings" in err and "model.dim: 8 -> 16" in err and "nothing was run" in err


def test_answers_that_changed_since_the_runs_are_refused_then_made_again_with_replace(interests, tiny, tmp_path, capsys):
    data, recorded = tiny
    answers = tmp_path / "answers.jsonl"
    shutil.copy(recorded, answers)
    out = tmp_path / "runs"
    argv = ["dbbook2014", "--sources", "smollm2", "--seeds", "0", "--kappa", "30", "--answers", str(answers),
            "--out", str(out), "--set", *TINY, f"data.dataset={data}"]
    assert interests.main(argv) == 0
    ledger = json.loads((out / "dbbook2014" / "interests.json").read_text())
    first = ledger["prepared"]["smollm2"]
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    for record in records:  # answers recorded again, shorter: two interests each
        record["raw"] = ", ".join(record["raw"].split(", ")[:2])
    answers.write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    assert interests.main(argv) == 2
    assert "the smollm2 runs were trained on other recorded answers" in capsys.readouterr().err
    assert json.loads((out / "dbbook2014" / "interests.json").read_text()) == ledger
    assert interests.main([*argv, "--replace"]) == 0
    again = json.loads((out / "dbbook2014" / "interests.json").read_text())["prepared"]["smollm2"]
    assert again["answers_sha256"] != first["answers_sha256"]
    assert again["report"]["distinct_phrases"] < first["report"]["distinct_phrases"]  # made from the new answers


def test_publish_refuses_anything_but_the_full_protocol(interests, capsys, tmp_path, tracked):
    before = tracked("interests*")
    assert interests.main(["dbbook2014", "--sources", "none", "--seeds", "0", "--set", *TINY, "--publish"]) == 2
    err = capsys.readouterr().err
    assert "needs the full protocol" in err
    assert "lack [1, 2]" in err and "train.epochs: 1 instead of 60" in err and "nothing was run" in err
    assert tracked("interests*") == before
    args = interests.parse_args(["dbbook2014", "--set", "train.epochs=60", "train.lr=0.005", "train.threads=1"])
    assert interests.protocol_problems(args) == []
    assert interests.main(["dbbook2014", "--sources", "smollm2", "--answers", str(tmp_path / "missing.jsonl"),
                           "--out", str(tmp_path)]) == 2
    assert "no recorded SmolLM2 answers" in capsys.readouterr().err


def test_the_gpt35_row_is_taken_from_the_published_results_only_at_the_same_settings(interests, tmp_path,
                                                                                      monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("the published row was trained again")

    monkeypatch.setattr(interests.base, "run_one", no_training)
    published = json.loads((EXPERIMENTS / "dbbook2014" / "results.json").read_text())["CIKGRec"]
    budget = ["train.epochs=60", "train.lr=0.005", "train.threads=1", "train.progress=false"]
    assert interests.main(["dbbook2014", "--sources", "gpt35", "--reuse-published", "--out", str(tmp_path),
                           "--set", *budget]) == 0
    page = (tmp_path / "dbbook2014" / "interests.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| GPT-3.5"))
    assert f"{published['mean']['recall@20']:.4f} ± {published['std']['recall@20']:.4f}†" in row
    assert "n/a (ids only)" in row and "0, 1, 2" in row and published["command"] in page
    assert "| 6,961 (3,783) " in row  # the authors' 6,962 pairs less one duplicate (../shared/data/README.md)
    capsys.readouterr()
    assert interests.main(["dbbook2014", "--sources", "gpt35", "--reuse-published", "--out", str(tmp_path / "b"),
                           "--set", *TINY]) == 2
    assert re.search("ran with other settings .*train.epochs: 60 -> 1.*nothing was taken", capsys.readouterr().err)
    assert not (tmp_path / "b").exists()
