"""The interest report (issue 15 items 4, 5, 8): counts, the predictive score on a hand-checkable case, the
proof that test items are never used, the clustering safeguards, and the kappa sweep."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from cikg.data import Dataset
from cikg.interests import ClusterConfig, Encoder, fit_interests
from cikg.interests.report import (
    REPORT_JSON,
    REPORT_MD,
    interest_report,
    phrase_source,
    rank_metrics,
    score_interests,
    write_report,
)

TITLES = ["dragons and wizards: an epic fantasy", "starships of the galaxy, science fiction",
          "kitchen recipes for home cooking", "the detective and the murder mystery",
          "a love story and a wedding, romance", "gardening with flowers and plants"]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(show_progress=False, n_threads=1)


def tiny(test=((0, 1, 2), (5, 3, 4))) -> Dataset:
    """3 users, 6 titled items. User 0: train 1, valid 0 (fantasy); user 1: train 0, valid 2 (cooking);
    user 2: train 2, valid 3 (mystery); test as given."""
    return Dataset(name="tiny", n_users=3, n_items=6, train=torch.tensor([[0, 1, 2], [1, 0, 2]]),
                   valid=torch.tensor([[0, 1, 2], [0, 2, 3]]), test=torch.tensor(test), item_text=list(TITLES))


PHRASES = pd.DataFrame({"user": [0, 0, 1, 2], "phrase": ["Fantasy", "dragons and wizards", "cooking", "romance"]})


def test_rank_metrics_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.5, 0.2], [0.3, 0.3, 0.3, 0.0, 0.0]])
    candidate = torch.tensor([[True, False, True, True, True], [True, True, True, True, False]])
    positive = torch.tensor([[False, False, True, False, False], [True, False, False, False, False]])
    auc, recall = rank_metrics(scores, candidate, positive, k=2)
    # row 0: positive 0.5 vs negatives 0.9, 0.5, 0.2 -> (1 + 0.5) / 3; row 1: 0.3 vs 0.3, 0.3, 0.0 -> 2/3
    np.testing.assert_allclose(auc.numpy(), [1.5 / 3, 2 / 3], atol=1e-6)
    # row 0 top-2: item 0 (0.9), then 2 and 3 tie at 0.5, the lower id first -> item 2, a hit
    np.testing.assert_allclose(recall.numpy(), [1.0, 1.0])


def test_score_on_a_hand_checkable_case(encoder):
    dataset = tiny()
    items = torch.from_numpy(encoder.encode(TITLES))
    score = score_interests(dataset, {"phrases": phrase_source(PHRASES, encoder)}, items,
                            torch.ones(6, dtype=torch.bool), k=1)
    mean, top = score.rows
    assert (mean.interests, mean.pool, top.pool) == ("phrases", "mean", "max")
    assert mean.users == 3 and score.users_with_valid == 3 and score.items_without_text == 0
    # popularity (train counts 1, 1, 1, 0, 0, 0): user 0 (0.5 + 3) / 4, user 1 the same, user 2 (0 + 1) / 4
    assert mean.popularity_auc == pytest.approx((0.875 + 0.875 + 0.25) / 3)
    # top-1 by popularity, ties to the lower id: user 0 gets item 0 (hit), user 1 item 1, user 2 item 0
    assert mean.popularity_recall == pytest.approx(1 / 3)
    # users 0 and 1 name their validation item's topic: AUC 1 and a hit; user 2 says romance, not mystery
    per_user = []
    for user in range(3):
        alone = PHRASES[PHRASES["user"] == user]
        row = score_interests(dataset, {"p": phrase_source(alone, encoder)}, items, torch.ones(6, dtype=torch.bool),
                              k=1).rows[0]
        per_user.append((row.auc, row.recall))
    assert per_user[0] == (1.0, 1.0) and per_user[1] == (1.0, 1.0)
    assert per_user[2][0] < 1.0 and per_user[2][1] == 0.0
    assert mean.auc == pytest.approx(np.mean([a for a, _ in per_user]), abs=1e-6)
    assert mean.auc > mean.popularity_auc


def test_score_never_uses_test_items(encoder):
    items = torch.from_numpy(encoder.encode(TITLES))
    source = {"phrases": phrase_source(PHRASES, encoder)}
    rows = [score_interests(tiny(test), source, items, torch.ones(6, dtype=torch.bool), k=2).rows
            for test in (((0, 1, 2), (5, 3, 4)), ((0, 0, 1, 2), (3, 4, 5, 0)), ((1,), (4,)))]
    assert rows[0] == rows[1] == rows[2]


def test_items_without_text_are_not_ranked(encoder):
    dataset = tiny()
    dataset.item_text[5] = None
    report_items = torch.from_numpy(encoder.encode(TITLES))
    has_text = torch.tensor([True] * 5 + [False])
    score = score_interests(dataset, {"phrases": phrase_source(PHRASES, encoder)}, report_items, has_text, k=1)
    assert score.items_without_text == 1
    # item 5 is no candidate: users 0 and 1 (0.5 + 2) / 3 by popularity; user 2 (0 + 0.5 * 1) / 3
    assert score.rows[0].popularity_auc == pytest.approx((2.5 / 3 + 2.5 / 3 + 0.5 / 3) / 3)


def write_raw(directory, records):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "user_interests_raw.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


RECORDS = [
    {"user": 0, "user_id": "u0", "phrases": ["Fantasy", "dragons and wizards"], "status": "ok", "structured": True,
     "echoes": ["Dragons and Wizards: an Epic Fantasy"]},
    {"user": 1, "user_id": "u1", "phrases": ["cooking"], "status": "ok", "structured": False, "echoes": []},
    {"user": 2, "user_id": "u2", "phrases": [], "raw": "I cannot tell", "status": "unparsable",
     "structured": False, "echoes": []},
]


def test_report_counts_and_files(encoder, tmp_path):
    write_raw(tmp_path, RECORDS)
    report = interest_report(tiny(), tmp_path, encoder, k=1)
    assert report.answers == {"ok": 2, "unparsable": 1, "failed": 0, "skipped": 0, "total": 3}
    assert report.structured == 1 and report.echoes == 1 and report.echo_rate == pytest.approx(1 / 4)
    assert report.phrases_per_user.tolist() == [2, 1, 0]
    assert report.distinct_phrases == 3 and report.users_with_phrases == 2 and report.n_users == 3
    assert report.clustering is None and report.score is not None
    # user 2 has no phrase: scored are users 0 and 1, both AUC 1 (their phrases match their valid items)
    row = report.score.primary
    assert (row.interests, row.users, row.auc, row.recall) == ("phrases", 2, 1.0, 1.0)
    paths = write_report(report)
    saved = json.loads(paths[REPORT_JSON].read_text())
    assert saved["answers"]["unparsable"] == 1 and saved["score"]["primary"]["auc"] == 1.0
    assert saved["phrases_per_user"]["histogram"][:3] == [1, 1, 1]
    text = paths[REPORT_MD].read_text()
    assert "echo rate 25.0%" in text and "popularity" in text and "report_score.png" in text
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths.values())


def test_report_without_optional_fields_and_without_dataset(tmp_path):
    write_raw(tmp_path, [{k: v for k, v in r.items() if k not in ("structured", "echoes")} for r in RECORDS])
    report = interest_report(None, tmp_path)
    assert report.structured is None and report.echoes is None and report.echo_rate is None
    assert report.score is None and report.n_users == 3
    assert "structured" not in report.lines()[0] and "echo" not in report.lines()[0]


# ------------------------------------------------------------------------------------------ safeguards
TOPIC_PHRASES = {"scifi": ["science fiction", "space opera", "sci-fi novels"],
                 "romance": ["romance", "love stories", "romantic novels"],
                 "cooking": ["cooking", "recipes", "baking bread"],
                 "gardening": ["gardening", "growing flowers", "houseplants"]}


def topic_users(sizes):
    rows, user = [], 0
    for topic, n in sizes.items():
        for _ in range(n):
            rows += [(user, p) for p in TOPIC_PHRASES[topic][:2]]
            user += 1
    return pd.DataFrame(rows, columns=["user", "phrase"])


def test_popularity_cap_has_a_floor_on_small_user_sets(encoder, caplog):
    pairs = topic_users({"scifi": 6, "romance": 6, "cooking": 6, "gardening": 2})  # 20 users
    with caplog.at_level(logging.WARNING, logger="cikg.interests.cluster"):
        plain = fit_interests(pairs, ClusterConfig(kappa=4, min_cap_users=1), encoder=encoder)
    # the plain 1/5 cap is 4 users: the three shared topics are dropped, 2 of 20 users keep an interest
    assert plain.dropped == {"too_few_users": 0, "too_many_users": 3} and plain.n_interests == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "reach only 2 of 20 users" in warnings[0] and "3 held by >= 4 users (the popularity cap" in warnings[0]
    assert "--max-user-fraction" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cikg.interests.cluster"):
        floored = fit_interests(pairs, ClusterConfig(kappa=4), encoder=encoder)  # cap max(4, 10) = 10 users
    assert floored.n_interests == 4 and floored.dropped == {"too_few_users": 0, "too_many_users": 0}
    assert floored.summary()["popularity_cap_users"] == 10
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_no_interest_kept_names_the_minimum_size(encoder, caplog):
    pairs = topic_users({"scifi": 6, "romance": 6, "cooking": 6, "gardening": 2})
    with caplog.at_level(logging.WARNING, logger="cikg.interests.cluster"):
        fit = fit_interests(pairs, ClusterConfig(kappa=4, min_users=7), encoder=encoder)
    assert fit.n_interests == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("no interest kept: of the 4 clusters, 4 held by < 7 users (the minimum size")
    assert "--min-users" in warning


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """A saved 20-user dataset with titles and a raw interest file of four topics."""
    from cikg.data import save_dataset, synthetic

    root = tmp_path_factory.mktemp("small")
    save_dataset(synthetic(20, 30, seed=1, with_interests=False), root / "data")
    pairs = topic_users({"scifi": 6, "romance": 6, "cooking": 6, "gardening": 2})
    write_raw(root / "int", [{"user": int(u), "user_id": str(u), "phrases": list(g["phrase"]), "status": "ok"}
                             for u, g in pairs.groupby("user")])
    return root


def test_cluster_cli_refuses_an_empty_result_in_one_line(small_dir, capsys, caplog):
    from cikg.cli import main

    with caplog.at_level(logging.WARNING, logger="cikg"):
        rc = main(["interests", "cluster", str(small_dir / "int"), "--kappa", "2", "--min-cap-users", "1",
                   "--dataset", str(small_dir / "data"), "--threads", "1"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the error line says it, once
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("cikg: error:")]
    assert "no interest kept" in line and "popularity cap" in line and "--max-user-fraction" in line
    assert "nothing written" in line and not (small_dir / "int" / "user_interest_clustered.txt").exists()


def test_cluster_cli_writes_the_report(small_dir, capsys, caplog):
    from cikg.cli import main

    # the plain 1/5 cap (4 of 20 users) keeps 1 interest for 2 users: written, with one warning line
    with caplog.at_level(logging.WARNING, logger="cikg"):
        assert main(["interests", "cluster", str(small_dir / "int"), "--kappa", "4", "--min-cap-users", "1",
                     "--dataset", str(small_dir / "data"), "--threads", "1"]) == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "reach only 2 of 20 users" in warning and "--max-user-fraction" in warning
    assert "1 kept of kappa=4 (3 over the popularity cap of 4 users" in capsys.readouterr().out
    rc = main(["interests", "cluster", str(small_dir / "int"), "--kappa", "4", "--dataset", str(small_dir / "data"),
               "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "4 kept of kappa=4" in out and "score clusters/mean" in out
    saved = json.loads((small_dir / "int" / REPORT_JSON).read_text())
    assert saved["clustering"]["interests"] == 4 and saved["clustering"]["users_with_interest"] == 20
    assert [c["reason"] for c in saved["cluster_sizes"]] == ["kept"] * 4
    assert {r["interests"] for r in saved["score"]["rows"]} == {"phrases", "clusters"}
    assert (small_dir / "int" / "report_cluster_sizes.png").is_file()


def test_graph_build_says_an_interest_file_holds_no_edges(small_dir, tmp_path, capsys):
    from cikg.cli import main

    (tmp_path / "user_interest_clustered.txt").write_text("\n")  # what cluster wrote before it refused
    rc = main(["graph", "build", str(small_dir / "data"), "--interests", str(tmp_path), "-o", str(tmp_path / "g.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("cikg: error:")]
    assert "holds no user-interest edges" in line and "no interest nodes" in line and "--no-interests" in line
    assert not (tmp_path / "g.pt").exists()


# ------------------------------------------------------------------------------------------ kappa sweep
def test_sweep_two_kappas_one_epoch_resumes(tmp_path, encoder, caplog):
    from cikg.data import synthetic
    from cikg.errors import ConfigError
    from cikg.llm import KGProfileBackend, infer_interests
    from cikg.models import CIKGRecConfig
    from cikg.train import TrainConfig
    from cikg.train.sweep import LEDGER, PLOT, TABLE_CSV, parse_kappas, sweep_kappa

    assert parse_kappas("50:400:50") == list(range(50, 401, 50)) and parse_kappas("8,4") == [4, 8]
    with pytest.raises(ConfigError, match="kappa"):
        parse_kappas("9:3")
    dataset = synthetic(120, 60, seed=2, with_interests=False)
    pairs = infer_interests(dataset, KGProfileBackend(dataset)).frame
    cluster = ClusterConfig(kappa=2, max_user_fraction=0.5, n_threads=1)
    train = TrainConfig(epochs=1, patience=0, ks=(20,), select=("recall@20",), batch_size=512, threads=1)
    model = CIKGRecConfig(total_epoch=2, use_transe=False, layers=1)
    table = sweep_kappa(dataset, pairs, [4, 8], tmp_path, cluster=cluster, model=model, train=train, encoder=encoder)
    assert table["kappa"].tolist() == [4, 8] and set(table["status"]) <= {"ok", "no interests"}
    done = table[table["status"] == "ok"]
    assert len(done) >= 1 and done["valid_recall@20"].between(0, 1).all() and done["score_auc"].between(0, 1).all()
    assert (done["best_epoch"] == 1).all()
    assert (tmp_path / TABLE_CSV).is_file() and (tmp_path / PLOT).is_file()
    ledger = json.loads((tmp_path / LEDGER).read_text())
    assert sorted(ledger["rows"]) == ["4", "8"]
    # a re-run trains nothing: every kappa is in the ledger
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("kappa-*/**/*") if p.is_file()}
    assert stamps  # the trained kappas' run directories
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cikg.train.sweep"):
        again = sweep_kappa(dataset, pairs, [4, 8], tmp_path, cluster=cluster, model=model, train=train,
                            encoder=encoder)
    pd.testing.assert_frame_equal(again, table)
    assert sum("done before" in r.getMessage() for r in caplog.records) == 2
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("kappa-*/**/*") if p.is_file()} == stamps
    # other settings in the same directory are refused, naming what differs
    with pytest.raises(ConfigError, match="train"):
        sweep_kappa(dataset, pairs, [4], tmp_path, cluster=cluster, model=model,
                    train=dataclasses_replace(train, epochs=2), encoder=encoder)


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_item_texts_with_kg_neighbours():
    from cikg.errors import ConfigError
    from cikg.interests.report import item_texts

    titles = list(TITLES)
    titles[2] = None
    dataset = Dataset(name="tiny-kg", n_users=3, n_items=6, train=torch.tensor([[0, 1, 2], [1, 0, 2]]),
                      valid=torch.tensor([[0, 1, 2], [0, 2, 3]]), test=torch.tensor([[0], [5]]), item_text=titles,
                      n_entities=9, n_relations=2,
                      kg=torch.tensor([[0, 0, 7, 2, 1], [0, 1, 1, 0, 0], [6, 8, 0, 6, 3]]),
                      entity_text=titles + ["Epic fantasy", "Tolkien Estate", "12345"])
    assert item_texts(dataset) == titles
    texts = item_texts(dataset, "title+kg")
    # item 0: forward edges to 6 and 8 (an opaque number: unnamed), a backward edge from 7; item-item edges no
    assert texts[0] == TITLES[0] + " — Epic fantasy, Tolkien Estate"
    assert texts[2] == "Epic fantasy" and texts[1] == TITLES[1] and texts[5] == TITLES[5]
    with pytest.raises(ConfigError, match="item_text"):
        item_texts(dataset, "kg")


def test_infer_writes_the_counts_and_report_cli_adds_the_score(tmp_path, capsys):
    from cikg.cli import main
    from cikg.data import save_dataset, synthetic

    save_dataset(synthetic(40, 30, seed=3, with_interests=False), tmp_path / "data")
    out = tmp_path / "int"
    assert main(["interests", "infer", str(tmp_path / "data"), "--backend", "kg-profile", "-o", str(out)]) == 0
    assert "report: " in capsys.readouterr().out
    saved = json.loads((out / REPORT_JSON).read_text())
    assert saved["answers"]["ok"] == 40 and saved["score"] is None and saved["clustering"] is None
    assert main(["interests", "report", str(out), "--threads", "1", "--k", "5"]) == 0
    printed = capsys.readouterr().out
    assert "score phrases/mean: AUC" in printed and "Recall@5" in printed
    saved = json.loads((out / REPORT_JSON).read_text())
    assert saved["score"]["k"] == 5 and saved["score"]["primary"]["interests"] == "phrases"
    # a run directory without a dataset record: --no-score still reports the counts
    (out / "llm_summary.json").unlink()
    assert main(["interests", "report", str(out)]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["interests", "report", str(out), "--no-score"]) == 0


def test_interest_report_is_the_same_whatever_the_test_split(encoder, tmp_path):
    write_raw(tmp_path, RECORDS)
    scores = [interest_report(tiny(test), tmp_path, encoder, k=2).score.to_dict()
              for test in (((0, 1, 2), (5, 3, 4)), ((0, 1, 1, 2, 2), (2, 2, 3, 0, 1)))]
    assert scores[0] == scores[1]


def test_report_leaves_out_a_clustering_older_than_the_phrases(encoder, tmp_path, caplog):
    import os

    from cikg.interests import save_interests

    pairs = topic_users({"scifi": 6, "romance": 6, "cooking": 6, "gardening": 2})
    write_raw(tmp_path, [{"user": int(u), "phrases": list(g["phrase"]), "status": "ok"} for u, g in pairs.groupby("user")])
    save_interests(fit_interests(pairs, ClusterConfig(kappa=4), encoder=encoder), tmp_path)
    assert interest_report(None, tmp_path).clustering["interests"] == 4
    later = (tmp_path / "interests_summary.json").stat().st_mtime + 5
    os.utime(tmp_path / "user_interests_raw.jsonl", (later, later))  # a new infer after the cluster
    with caplog.at_level(logging.WARNING, logger="cikg.interests.report"):
        report = interest_report(None, tmp_path)
    assert report.clustering is None and report.clusters.empty
    assert any("older than user_interests_raw.jsonl" in r.getMessage() for r in caplog.records)
