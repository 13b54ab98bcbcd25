"""experiments/augment.py: method names, the table it writes from finished runs and feature provenance."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from cikg.augment import NodeFeatures

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def augment_script(experiment):
    return experiment("augment")


def test_method_names_parse_and_unknown_names_are_refused(augment_script):
    assert augment_script.method_of("none").build is None
    assert augment_script.method_of("reki-col:50").label == "REKI collective, 50 groups"
    assert augment_script.method_of("reki-col-llm:10").label == "REKI collective, 10 groups, real LLM"
    assert augment_script.method_of("kar").fusion == augment_script.EXPERTS
    with pytest.raises(SystemExit, match="unknown method 'kr'"):
        augment_script.method_of("kr")
    gated = augment_script.method_of("reki-col:50+gate")
    assert gated.label == "REKI collective, 50 groups, zero-init gate"
    assert gated.fusion == [*augment_script.EXPERTS, "model.features.gate=true"]
    assert augment_script.features_of("reki-col:50+gate") == "reki-col:50"  # the same features, not a rebuild
    assert augment_script.features_path(Path("f"), "reki-col:50+gate") == Path("f/reki-col-50")
    assert augment_script.run_dir_label("cikgrec", "reki-col:50+gate") == "cikgrec-reki-col-50-gate"
    with pytest.raises(SystemExit, match="no features to gate"):
        augment_script.method_of("none+gate")


def _finished_run(folder: Path, seed: int, recall: float) -> None:
    folder.mkdir(parents=True)
    test = {"recall@20": recall, "ndcg@20": recall / 2, "recall@50": recall * 1.5, "ndcg@50": recall * 0.6}
    (folder / "metrics.json").write_text(json.dumps({"test": test, "best_epoch": 10 + seed, "seed": seed}))


def _record(augment_script, runs: Path, features: Path, **args) -> dict:
    ledger = {}
    augment_script.record_runs(ledger, argparse.Namespace(**args), runs, features, "python experiments/augment.py x")
    return ledger


def test_report_means_seeds_and_shows_the_extraction_cost(augment_script, tmp_path):
    from cikg.eval.stats import mean_ci

    runs, features = tmp_path / "runs", tmp_path / "features"
    for seed, recall in ((0, 0.20), (1, 0.22)):
        _finished_run(runs / f"lightgcn-none-seed{seed}", seed, recall)
    _finished_run(runs / "cikgrec-reki-col-llm-10-seed0", 0, 0.30)
    provenance = {"method": "reki", "llm_model": "smollm2", "not_an_llm": False, "n_calls": 19,
                  "prompt_tokens": 3090, "completion_tokens": 1702, "seconds": 55.0, "encode_seconds": 2.5}
    NodeFeatures(user=torch.ones(3, 4), provenance=provenance).save(features / "reki-col-llm-10")
    ledger = _record(augment_script, runs, features, models=["lightgcn", "cikgrec"],
                     methods=["none", "reki-col-llm:10"], seeds=[0, 1, 2])
    assert sorted(ledger["runs"]) == ["cikgrec|reki-col-llm:10|seed0", "lightgcn|none|seed0", "lightgcn|none|seed1"]
    table = augment_script.table(ledger).splitlines()
    assert len(table) == 4  # header, rule, two rows: the runs that do not exist are left out
    plain, llm = table[2], table[3]
    assert f"| {mean_ci([0.20, 0.22]).cell()} " in plain and "| 10, 11 " in plain and "| 0, 1 " in plain
    assert "0.2100 ± 0.1271" in plain  # the 95% t half-width of two seeds: 12.706 * 0.01414 / sqrt(2)
    cells = [c.strip() for c in llm.split("|")]
    assert cells[3] == "0.3000" and "±" not in llm  # one seed: no spread shown
    assert cells[7:10] == ["–", "–", "–"]  # no weights in these run directories: no CTR figures
    assert cells[12:15] == ["smollm2", "19", "4792"]  # a real LLM: no "(not an LLM)" label; calls, tokens


def test_report_gives_each_finished_run_its_ctr_figures_as_cikg_evaluate_does(augment_script, tmp_path, capsys):
    from cikg.cli import main
    from cikg.eval.stats import mean_ci

    runs = tmp_path / "runs"
    for seed in (0, 1):
        assert main(["train", "-", "model.name=lightgcn", "model.dim=16", "data.dataset=synthetic",
                     "data.synthetic_users=200", "data.synthetic_items=150", "train.epochs=3", "train.lr=0.02",
                     "train.threads=1", "train.progress=false", f"train.seed={seed}",
                     "--run-dir", str(runs / f"lightgcn-none-seed{seed}")]) == 0
    ledger = _record(augment_script, runs, tmp_path / "features", models=["lightgcn"], methods=["none"], seeds=[0, 1])
    table = augment_script.table(ledger).splitlines()
    header = [c.strip() for c in table[0].split("|")]
    cells = dict(zip(header, [c.strip() for c in table[2].split("|")]))
    kept = [json.loads((runs / f"lightgcn-none-seed{s}" / "ctr_metrics.json").read_text()) for s in (0, 1)]
    for column, (ratio, metric) in {"AUC 1:1": ("1:1", "auc"), "AUC 1:4": ("1:4", "auc"),
                                    "Logloss 1:4": ("1:4", "logloss")}.items():
        assert cells[column] == mean_ci([k[ratio][metric] for k in kept]).cell()
        assert ledger["runs"]["lightgcn|none|seed1"]["ctr"][column.lower()] == kept[1][ratio][metric]
    assert 0.5 < kept[0]["1:4"]["auc"] < 1
    capsys.readouterr()
    assert main(["evaluate", str(runs / "lightgcn-none-seed0"), "--protocol", "ctr"]) == 0  # the same pairs, kept
    assert f"{kept[0]['1:4']['auc']:.4f}" in capsys.readouterr().out


def test_the_ledger_keeps_runs_whose_directories_are_gone_and_renders_the_page_alone(augment_script, tmp_path,
                                                                                      capsys):
    """Two real tiny runs (synthetic data, 1 epoch) recorded by two commands, the first run's directory deleted
    between them (a later session on a fresh machine): the page holds both seeds, and --render-only rewrites it
    from the ledger alone; a command with other training overrides is refused before it trains."""
    import shutil

    out = tmp_path / "runs"
    tiny = ["train.epochs=1", "train.progress=false", "data.dataset=synthetic", "data.synthetic_users=80",
            "data.synthetic_items=120", "model.dim=8"]
    base = ["dbbook2014", "--methods", "none", "--models", "lightgcn", "--steps", "train", "report",
            "--out", str(out), "--set", *tiny]
    assert augment_script.main([*base, "--seeds", "0", "--note", "ran on 2 cores"]) == 0
    first = json.loads((out / "dbbook2014" / "augment.json").read_text())
    shutil.rmtree(out / "dbbook2014" / "lightgcn-none-seed0")
    assert augment_script.main([*base, "--seeds", "1"]) == 0
    ledger = json.loads((out / "dbbook2014" / "augment.json").read_text())
    assert ledger["runs"]["lightgcn|none|seed0"] == first["runs"]["lightgcn|none|seed0"]
    assert ledger["settings"] == {"overrides": tiny, "feature_seed": 2024} and ledger["note"] == "ran on 2 cores"
    assert [r["groups"] for r in ledger["call_counts"]] == [None, 10, 50, 200, 1000]  # kept for the render
    assert re.search(r"\| individual \| +– \|", (out / "dbbook2014" / "augment.md").read_text())
    page = (out / "dbbook2014" / "augment.md").read_text()
    recalls = [ledger["runs"][f"lightgcn|none|seed{s}"]["test"]["recall@20"] for s in (0, 1)]
    from cikg.eval.stats import mean_ci

    assert f"| {mean_ci(recalls).cell()} " in page and "| 0, 1 " in page and "ran on 2 cores" in page
    assert "--seeds 0 --note" not in page and "Command: `python experiments/augment.py dbbook2014" in page
    (out / "dbbook2014" / "augment.md").unlink()
    shutil.rmtree(out / "dbbook2014" / "lightgcn-none-seed1")
    assert augment_script.main(["dbbook2014", "--render-only", "--out", str(out)]) == 0
    assert (out / "dbbook2014" / "augment.md").read_text() == page
    root = tmp_path / "experiments"  # collect.py --render renders it too
    (root / "dbbook2014").mkdir(parents=True)
    shutil.copy(out / "dbbook2014" / "augment.json", root / "dbbook2014")
    import collect

    assert collect.render_ledgers(root, resamples=100) == [root / "dbbook2014" / "augment.md"]
    assert (root / "dbbook2014" / "augment.md").read_text() == page
    capsys.readouterr()
    assert augment_script.main([*base[:-len(tiny)], *tiny, "train.lr=0.5", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "train.lr=0.5" in err and "nothing was run" in err and len(err.strip().splitlines()) == 1
    assert not (out / "dbbook2014" / "lightgcn-none-seed2").exists()
    assert json.loads((out / "dbbook2014" / "augment.json").read_text()) == ledger


def test_the_recorded_command_drops_the_note_and_the_steps(augment_script):
    argv = ["dbbook2014", "--methods", "none", "kar", "--steps", "train", "report", "--note", "ran on 2 cores",
            "--seeds", "0", "1"]
    assert augment_script.recorded_argv(argv) == ["dbbook2014", "--methods", "none", "kar", "--seeds", "0", "1"]
    assert augment_script.recorded_argv(["book-crossing", "--note", "x"]) == ["book-crossing"]


@pytest.mark.slow
def test_recorded_real_llm_answers_answer_the_prompts_built_now(dbbook, tmp_path):
    """The SmolLM2 replay file of the experiments is matched by cache key (same prompts, same generation
    parameters), not merely by group id: a changed clustering or template would make it stale."""
    from cikg.augment.reki import REKI, REKIConfig
    from cikg.embed import Encoder
    from cikg.llm import ReplayBackend
    from cikg.llm.client import LLMConfig

    class KeyCheckingReplay(ReplayBackend):
        def complete_many(self, requests):
            self.matched = getattr(self, "matched", []) + [self.config.key_of(r) in self.by_key for r in requests]
            return super().complete_many(requests)

    replay = KeyCheckingReplay(EXPERIMENTS / "dbbook2014" / "augment_answers" / "reki-col-llm-10.jsonl",
                               LLMConfig(model="smollm2", max_tokens=96))  # augment.py's reki-col-llm settings
    config = REKIConfig(history_len=20, mode="collective", n_user_groups=10, n_item_groups=10, seed=2024)
    features = REKI(config, replay, Encoder(tmp_path / "emb.sqlite", show_progress=False), tmp_path).fit(dbbook)
    assert len(replay.matched) == 19 and all(replay.matched)
    assert features.provenance["llm_model"] == "smollm2" and not features.provenance["not_an_llm"]
    assert features.user.shape == (dbbook.n_users, 384) and features.item.shape[0] == dbbook.n_items
