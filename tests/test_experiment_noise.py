"""experiments/noise.py (issue 15 item 7) on a tiny budget: the ledger, the resume and the table it writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["train.epochs=1", "train.progress=false", "train.threads=1", "data.dataset=synthetic",
        "data.synthetic_users=80", "data.synthetic_items=120", "model.dim=8"]


@pytest.fixture(scope="module")
def noise(experiment):
    return experiment("noise")



def test_a_tiny_sweep_ledgers_resumes_and_tabulates(noise, tmp_path, monkeypatch, capsys, tracked):
    before = tracked("noise*")
    out = tmp_path / "runs"
    argv = ["dbbook2014", "--rates", "0", "0.4", "--variants", "uir", "no-uir", "--seeds", "0", "--out", str(out),
            "--set", *TINY]
    assert noise.main(argv) == 0
    assert tracked("noise*") == before  # nothing published
    ledger = json.loads((out / "dbbook2014" / "noise.json").read_text())
    assert sorted(ledger) == ["no-uir|none|0|seed0", "no-uir|replace|0.4|seed0", "uir|none|0|seed0",
                              "uir|replace|0.4|seed0"]
    noisy = ledger["uir|replace|0.4|seed0"]
    p = noisy["perturbation"]
    assert p["mode"] == "replace" and p["rate"] == 0.4 and p["seed"] == 0
    assert p["replaced"] == round(0.4 * p["edges_before"]) > 0 and p["edges_after"] == p["edges_before"]
    assert ledger["uir|none|0|seed0"]["perturbation"] is None
    assert noisy["settings"]["train.epochs"] == 1 and noisy["settings"]["data.interests"] is None  # the axis, not a setting
    assert ledger["no-uir|replace|0.4|seed0"]["settings"]["model.use_uir"] is False
    assert (out / "dbbook2014" / "interests" / "replace-0.4-seed0" / "perturb.json").is_file()
    page = (out / "dbbook2014" / "noise.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| CIKGRec w/o UIR"))
    assert f"{ledger['no-uir|none|0|seed0']['test']['recall@20']:.4f}" in row
    assert f"{ledger['no-uir|replace|0.4|seed0']['test']['recall@20']:.4f}" in row
    assert "0% noisy" in page and "40% noisy" in page and "train<=10" in page
    assert f"{noisy['sparse_recall@20']:.4f}" in page
    assert (out / "dbbook2014" / "noise.png").stat().st_size > 10_000

    # resume: the second call finds every run in the ledger and trains nothing
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(noise.base, "run_one", no_training)
    assert noise.main(argv) == 0
    assert json.loads((out / "dbbook2014" / "noise.json").read_text()) == ledger
    capsys.readouterr()

    # other settings on the same ledger are refused before training
    assert noise.main([*argv, "model.dim=16"]) == 2
    err = capsys.readouterr().err
    assert "runs of other settings" in err and "model.dim: 8 -> 16" in err and "nothing was run" in err


def test_publish_refuses_anything_but_the_full_protocol(noise, capsys, tracked):
    before = tracked("noise*")
    assert noise.main(["dbbook2014", "--rates", "0", "0.4", "--seeds", "0", "--set", *TINY, "--publish"]) == 2
    err = capsys.readouterr().err
    assert "needs the full protocol" in err and "lack [0.2, 0.6]" in err and "lack [1, 2]" in err
    assert "train.epochs: 1 instead of 60" in err and "nothing was run" in err
    assert tracked("noise*") == before
    args = noise.parse_args(["dbbook2014", "--set", "train.epochs=60", "train.lr=0.005", "train.threads=1"])
    assert noise.protocol_problems(args) == []


def test_rate_zero_is_one_run_whatever_the_mode(noise):
    assert noise.run_key("uir", "replace", 0.0, 1) == noise.run_key("uir", "drop", 0.0, 1) == "uir|none|0|seed1"
    assert noise.run_key("no-uir", "add", 0.2, 0) == "no-uir|add|0.2|seed0"


def test_shards_split_the_sweep_seed_by_seed_without_overlap(noise):
    full = noise.parse_args(["dbbook2014"])
    assert noise.sweep_cells(full)[:5] == [(0, 0.0), (0, 0.2), (0, 0.4), (0, 0.6), (1, 0.0)]
    shards = [noise.sweep_cells(noise.parse_args(["dbbook2014", "--shard", f"{k}/3"])) for k in (1, 2, 3)]
    assert sorted(cell for shard in shards for cell in shard) == sorted(noise.sweep_cells(full))
    assert [len(s) for s in shards] == [4, 4, 4] and shards[1][:2] == [(0, 0.2), (1, 0.0)]
    assert noise.protocol_problems(noise.parse_args(
        ["dbbook2014", "--shard", "2/2", "--set", "train.epochs=60", "train.lr=0.005"])) == []


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1", "a/b"])
def test_a_bad_shard_is_refused_naming_the_form(noise, bad, capsys):
    with pytest.raises(SystemExit) as stop:
        noise.parse_args(["dbbook2014", "--shard", bad])
    assert stop.value.code == 2 and "K/N" in capsys.readouterr().err


def test_cells_are_the_mean_and_the_half_width_of_the_95_percent_interval(noise):
    from cikg.eval.stats import mean_ci

    def record(variant, rate, seed, recall):
        return {"variant": variant, "label": noise.VARIANTS[variant][0], "mode": "replace" if rate else "none",
                "rate": rate, "seed": seed, "test": {"recall@20": recall, "ndcg@20": recall / 2},
                "sparse_recall@20": recall, "best_epoch": 10, "minutes": 1.0}

    recalls = [0.25, 0.26, 0.28]
    ledger = {f"k{s}": record("uir", 0.2, s, r) for s, r in enumerate(recalls)}
    ledger["one"] = record("no-uir", 0.2, 0, 0.3)
    frame = noise.summary_frame(ledger, "replace").set_index("variant")
    assert frame.loc["uir", "recall_hw"] == pytest.approx(mean_ci(recalls).half_width)
    assert frame.loc["no-uir", "recall_hw"] == 0.0
    table = noise._cells(frame.reset_index(), "recall", "recall_hw")
    assert table.loc["CIKGRec (UIR, exp schedule)", "20% noisy"] == mean_ci(recalls).cell()
    assert table.loc["CIKGRec w/o UIR", "20% noisy"] == "0.3000"  # one seed: no interval


def test_what_it_shows_pairs_the_losses_by_seed_and_judges_the_robustness_claim(noise):
    from cikg.eval.stats import mean_ci

    def record(variant, rate, seed, recall):
        return {"variant": variant, "label": noise.VARIANTS[variant][0], "mode": "replace" if rate else "none",
                "rate": rate, "seed": seed, "test": {"recall@20": recall, "ndcg@20": recall / 2},
                "sparse_recall@20": recall - 0.01, "best_epoch": 10, "minutes": 1.0}

    clean = {0: 0.290, 1: 0.288, 2: 0.292}
    loss = {"uir": {0: 0.010, 1: 0.012, 2: 0.011}, "no-uir": {0: 0.020, 1: 0.023, 2: 0.021}}
    ledger = {f"{v}{r}{s}": record(v, r, s, clean[s] - (loss[v][s] if r else 0.0))
              for v in loss for r in (0.0, 0.6) for s in clean}
    lines = noise.reading(ledger, "replace")
    text = "\n".join(lines)
    assert lines[0] == "## What it shows"
    assert f"CIKGRec (UIR, exp schedule), Recall@20: 60% noise costs {mean_ci(list(loss['uir'].values())).cell()}" in text
    gap = [loss["no-uir"][s] - loss["uir"][s] for s in clean]
    assert f"robustness of CIKGRec (UIR, exp schedule) (loss w/o UIR minus loss with it, paired by seed): " \
           f"{mean_ci(gap).cell()}; UIR loses less: the robustness claim holds." in text
    loss["uir"] = {0: 0.021, 1: 0.022, 2: 0.020}
    ledger = {f"{v}{r}{s}": record(v, r, s, clean[s] - (loss[v][s] if r else 0.0))
              for v in loss for r in (0.0, 0.6) for s in clean}
    assert "the interval spans 0: no robustness shown" in "\n".join(noise.reading(ledger, "replace"))
    assert noise.reading({k: v for k, v in ledger.items() if v["rate"] == 0}, "replace") == []  # no noisy runs yet


def test_render_only_draws_the_page_from_the_ledger_and_trains_nothing(noise, tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("--render-only trained")

    monkeypatch.setattr(noise.base, "run_one", no_training)
    out = tmp_path / "runs"
    assert noise.main(["dbbook2014", "--render-only", "--out", str(out), "--set", *TINY]) == 0
    assert "No finished run yet." in (out / "dbbook2014" / "noise.md").read_text()
    assert not (out / "dbbook2014" / "noise.png").exists()
    ledger = json.loads((EXPERIMENTS / "dbbook2014" / "noise_ledger.json").read_text())  # the 8-epoch indication
    (out / "dbbook2014" / "noise.json").write_text(json.dumps(ledger))
    argv = ["dbbook2014", "--render-only", "--out", str(out), "--set", "train.epochs=8", "train.lr=0.005",
            "train.threads=1", "train.progress=false"]
    assert noise.main(argv) == 0
    page = (out / "dbbook2014" / "noise.md").read_text()
    assert "40% noisy" in page and "## What it shows" in page and "seeds 0, 1" in page
    assert (out / "dbbook2014" / "noise.png").stat().st_size > 10_000
