"""experiments/augment.py: method names, the table it writes from finished runs and feature provenance."""
from __future__ import annotations

import argparse
import json
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


def test_report_means_seeds_and_shows_the_extraction_cost(augment_script, tmp_path):
    runs, features = tmp_path / "runs", tmp_path / "features"
    for seed, recall in ((0, 0.20), (1, 0.22)):
        _finished_run(runs / f"lightgcn-none-seed{seed}", seed, recall)
    _finished_run(runs / "cikgrec-reki-col-llm-10-seed0", 0, 0.30)
    provenance = {"method": "reki", "llm_model": "smollm2", "not_an_llm": False, "n_calls": 19,
                  "prompt_tokens": 3090, "completion_tokens": 1702, "seconds": 55.0, "encode_seconds": 2.5}
    NodeFeatures(user=torch.ones(3, 4), provenance=provenance).save(features / "reki-col-llm-10")
    args = argparse.Namespace(models=["lightgcn", "cikgrec"], methods=["none", "reki-col-llm:10"], seeds=[0, 1, 2])
    table = augment_script.report(args, "dbbook2014", runs, features).splitlines()
    assert len(table) == 4  # header, rule, two rows: the runs that do not exist are left out
    plain, llm = table[2], table[3]
    assert "0.2100 ± 0.0100" in plain and "| 10, 11 " in plain and "| 0, 1 " in plain
    cells = [c.strip() for c in llm.split("|")]
    assert cells[3] == "0.3000" and "±" not in llm  # one seed: no spread shown
    assert cells[7:10] == ["–", "–", "–"]  # no weights in these run directories: no CTR figures
    assert cells[12:15] == ["smollm2", "19", "4792"]  # a real LLM: no "(not an LLM)" label; calls, tokens


def test_report_gives_each_finished_run_its_ctr_figures_as_cikg_evaluate_does(augment_script, tmp_path, capsys):
    from cikg.cli import main

    runs = tmp_path / "runs"
    for seed in (0, 1):
        assert main(["train", "-", "model.name=lightgcn", "model.dim=16", "data.dataset=synthetic",
                     "data.synthetic_users=200", "data.synthetic_items=150", "train.epochs=3", "train.lr=0.02",
                     "train.threads=1", "train.progress=false", f"train.seed={seed}",
                     "--run-dir", str(runs / f"lightgcn-none-seed{seed}")]) == 0
    args = argparse.Namespace(models=["lightgcn"], methods=["none"], seeds=[0, 1])
    table = augment_script.report(args, "synthetic", runs, tmp_path / "features").splitlines()
    header = [c.strip() for c in table[0].split("|")]
    cells = dict(zip(header, [c.strip() for c in table[2].split("|")]))
    kept = [json.loads((runs / f"lightgcn-none-seed{s}" / "ctr_metrics.json").read_text()) for s in (0, 1)]
    for column, (ratio, metric) in {"AUC 1:1": ("1:1", "auc"), "AUC 1:4": ("1:4", "auc"),
                                    "Logloss 1:4": ("1:4", "logloss")}.items():
        values = [k[ratio][metric] for k in kept]
        mean, std = sum(values) / 2, abs(values[0] - values[1]) / 2
        assert cells[column] == f"{mean:.4f} ± {std:.4f}"
    assert 0.5 < kept[0]["1:4"]["auc"] < 1
    capsys.readouterr()
    assert main(["evaluate", str(runs / "lightgcn-none-seed0"), "--protocol", "ctr"]) == 0  # the same pairs, kept
    assert f"{kept[0]['1:4']['auc']:.4f}" in capsys.readouterr().out


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
