"""`cikg data convert` / `export`: the chronological and random splits, items files, RecBole atomic files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cikg.cli import main
from cikg.data import RandomSplit, TemporalSplit, from_pandas, load_dataset, synthetic, to_pandas
from cikg.data.recbole import export_recbole, read_recbole
from cikg.errors import CikgError, ConfigError, DatasetError


def _ratings(path: Path, rows, header="userId,movieId,timestamp") -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


@pytest.fixture
def three_users(tmp_path) -> Path:
    """The issue's CSV: users a, b, c rate m1..m10 at times 1..10, rows shuffled (file order is not time order)."""
    rng = random.Random(0)
    rows = []
    for user in "abc":
        times = list(range(1, 11))
        rng.shuffle(times)
        rows += [(user, f"m{t}", t) for t in times]
    return _ratings(tmp_path / "ratings.csv", rows)


def _named(dataset, split):
    pairs = dataset.split(split).tolist()
    out = {}
    for u, i in zip(*pairs):
        out.setdefault(dataset.user_ids[u], []).append(dataset.item_ids[i])
    return out


def _convert(*args) -> int:
    return main(["data", "convert", *map(str, args)])


# ---------------------------------------------------------------------------------------------- temporal split
def test_temporal_split_holds_each_users_latest_items(three_users, tmp_path, capsys):
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
                    "-o", tmp_path / "ratio") == 0
    ds = load_dataset(tmp_path / "ratio")
    # default ratio split: test = round(0.2 * 10) = 2 latest, valid = round(8 / 8) = 1 latest of the rest
    assert _named(ds, "test") == {u: ["m9", "m10"] for u in "abc"}
    assert _named(ds, "valid") == {u: ["m8"] for u in "abc"}
    assert _named(ds, "train") == {u: [f"m{t}" for t in range(1, 8)] for u in "abc"}  # in time order
    assert ds.history(0, last=3) == [ds.item_ids.index(f"m{t}") for t in (5, 6, 7)]
    meta = json.loads((tmp_path / "ratio" / "meta.json").read_text())["split"]
    assert meta == {"method": "temporal", "test_fraction": 0.2, "valid_fraction": 0.125, "min_items": 2,
                    "ties": "file order", "time_col": "timestamp", "time_type": "numeric"}
    assert "split: temporal on 'timestamp' (numeric): test = latest 0.2 per user" in capsys.readouterr().out

    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
                    "--test-last", 3, "--valid-last", 2, "-o", tmp_path / "loo") == 0
    loo = load_dataset(tmp_path / "loo")
    assert _named(loo, "test") == {u: ["m8", "m9", "m10"] for u in "abc"}
    assert _named(loo, "valid") == {u: ["m6", "m7"] for u in "abc"}
    assert loo.meta["split"]["test_last"] == 3 and loo.meta["split"]["valid_last"] == 2
    assert main(["data", "stats", str(tmp_path / "loo")]) == 0
    assert "split: temporal on 'timestamp' (numeric): test = last 3 per user, valid = last 2 per user" \
        in capsys.readouterr().out


def test_times_compare_as_numbers_not_strings(tmp_path):
    # as strings "10" < "100" < "9": the latest would be 9
    csv = _ratings(tmp_path / "r.csv", [("u", "x", 9), ("u", "y", 10), ("u", "z", 100), ("u", "w", 2)])
    assert _convert(csv, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
                    "--test-last", 1, "--valid-last", 1, "-o", tmp_path / "d") == 0
    ds = load_dataset(tmp_path / "d")
    assert _named(ds, "test") == {"u": ["z"]} and _named(ds, "valid") == {"u": ["y"]}
    assert _named(ds, "train") == {"u": ["w", "x"]}


def test_datetime_times_and_ties_in_file_order(tmp_path):
    rows = [("u", "late", "2024-03-01T10:00:00+02:00"),   # 08:00 UTC
            ("u", "old", "2023-12-31"),
            ("u", "latest", "2024-03-01T09:30:00Z"),       # 09:30 UTC: after "late" once offsets count
            ("v", "tie1", "2024-01-01"), ("v", "tie2", "2024-01-01"), ("v", "first", "2023-01-01")]
    csv = _ratings(tmp_path / "r.csv", rows)
    assert _convert(csv, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
                    "--test-last", 1, "--valid-fraction", 0, "-o", tmp_path / "d") == 0
    ds = load_dataset(tmp_path / "d")
    assert _named(ds, "test") == {"u": ["latest"], "v": ["tie2"]}  # equal times: the later row is the latest
    assert _named(ds, "train") == {"u": ["old", "late"], "v": ["first", "tie1"]}
    assert ds.meta["split"]["time_type"] == "datetime"


@pytest.mark.parametrize("bad, line, message", [
    ("yesterday", 3, "'yesterday' is neither a number nor an ISO 8601 date (expected a number"),
    ("", 3, "no time given"),
])
def test_bad_time_names_file_column_and_line(tmp_path, capsys, bad, line, message):
    csv = _ratings(tmp_path / "r.csv", [("u", "x", 1), ("u", "y", bad), ("u", "z", 3)])
    assert _convert(csv, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
                    "-o", tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert f"{csv}:{line}: time column 'timestamp', line {line}: {message}" in err
    assert not (tmp_path / "d").exists()


def test_random_split_is_an_explicit_seeded_option(three_users, tmp_path, capsys):
    common = [three_users, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
              "--split", "random", "--test-last", 2]
    assert _convert(*common, "--seed", 3, "-o", tmp_path / "a") == 0
    assert _convert(*common, "--seed", 3, "-o", tmp_path / "b") == 0
    assert _convert(*common, "--seed", 4, "-o", tmp_path / "c") == 0
    a, b, c = (load_dataset(tmp_path / n) for n in "abc")
    assert torch.equal(a.test, b.test) and not torch.equal(a.test, c.test)
    assert {len(v) for v in _named(a, "test").values()} == {2}
    assert a.meta["split"] == {"method": "random", "test_last": 2, "valid_fraction": 0.125, "seed": 3,
                               "min_items": 2, "time_col": "timestamp", "time_type": "numeric"}
    # the held-out items are not the latest ones for every user (they are random), but train keeps time order
    assert any(items != ["m9", "m10"] for items in _named(a, "test").values())
    for items in _named(a, "train").values():
        assert items == sorted(items, key=lambda m: int(m[1:]))
    # without a time column, random is the default; temporal without one is refused
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "-o", tmp_path / "d") == 0
    assert load_dataset(tmp_path / "d").meta["split"]["method"] == "random"
    capsys.readouterr()
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--split", "temporal",
                    "-o", tmp_path / "e") == 2
    assert "--split temporal needs --time-col" in capsys.readouterr().err
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--test-fraction", 1.5,
                    "-o", tmp_path / "f") == 2
    assert "cikg: error: --test-fraction: a share must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_from_pandas_time_col_and_splitters():
    frame = pd.DataFrame({"user": ["a"] * 5 + ["b"] * 3, "item": list("vwxyz") + list("xyz"),
                          "when": [5, 1, 4, 2, 3, 30, 10, 20]})
    ds = from_pandas(frame, time_col="when", splitter=TemporalSplit(test=1, valid=1))
    assert _named(ds, "test") == {"a": ["v"], "b": ["x"]} and _named(ds, "valid") == {"a": ["x"], "b": ["z"]}
    assert _named(ds, "train") == {"a": ["w", "y", "z"], "b": ["y"]}
    # the default with time_col is temporal by share; without it, seeded random, as before
    assert from_pandas(frame, time_col="when").meta["split"]["method"] == "temporal"
    assert from_pandas(frame).meta["split"]["method"] == "random"
    with pytest.raises(DatasetError, match="temporal split needs time_col"):
        from_pandas(frame, splitter=TemporalSplit())
    with pytest.raises(ConfigError, match="share must be in"):
        TemporalSplit(test=1.5)
    with pytest.raises(ConfigError, match="count must be >= 0"):
        RandomSplit(valid=-1)
    assert repr(TemporalSplit(test=1, valid=1)) == "TemporalSplit(test=1, valid=1, min_items=2)"


def test_random_split_reproduces_the_previous_carve():
    """RandomSplit(0.2, 1/8, seed) is the carve from_pandas made before TemporalSplit existed."""
    from cikg.data import carve_validation

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": rng.integers(0, 40, 900).astype(str), "item": rng.integers(0, 70, 900)})
    ds = from_pandas(frame, seed=5)
    frame = frame.drop_duplicates()
    codes_u, _ = pd.factorize(frame["user"])
    codes_i, _ = pd.factorize(frame["item"])
    order = np.argsort(codes_u, kind="stable")
    pairs = torch.from_numpy(np.stack([codes_u[order], codes_i[order]]))
    rest, test = carve_validation(pairs, 40, 0.2, 5)
    train, valid = carve_validation(rest, 40, 1 / 8, 6)
    assert torch.equal(ds.test, test) and torch.equal(ds.valid, valid) and torch.equal(ds.train, train)


# ---------------------------------------------------------------------------------------------- items file
ITEMS = """movieId,title,genres,director
m1,The First Film,Drama|Romance,Ann Lee
m2,Second Story,Drama,Ann Lee
m3,Third Time,Comedy,Bo Kim
m4,Fourth Wall,Comedy| Drama ,Bo Kim
m5,Fifth Element,Sci-Fi,Cy Dow
m6,Sixth Sense,Thriller,Cy Dow
m7,Seventh Seal,Drama,Ann Lee
m8,Eighth Day,Drama,
m9,Ninth Gate,Thriller|Horror,Bo Kim
m11,Never Watched,Drama,Ann Lee
"""


def test_items_file_gives_text_and_kg(three_users, tmp_path, capsys):
    (tmp_path / "items.csv").write_text(ITEMS)
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp",
                    "--items", tmp_path / "items.csv", "--title-col", "title", "--attr-cols", "genres,director",
                    "-o", tmp_path / "d") == 0
    out = capsys.readouterr().out
    assert "1 item(s) never occur in the interactions, dropped" in out and "e.g. m11" in out
    assert "1 interacted item(s) are not in it and have no text or attributes; e.g. m10" in out
    ds = load_dataset(tmp_path / "d")
    assert ds.n_items == 10 and "m11" not in ds.item_ids
    assert ds.item_text[ds.item_ids.index("m1")] == "The First Film" and ds.item_text[ds.item_ids.index("m10")] is None
    kg = to_pandas(ds)["kg"]
    triples = set(map(tuple, kg.to_numpy()))
    assert len(triples) == ds.kg.size(1) == 12 + 8  # genres: 9 items, 3 with two; director: 8 items
    assert {("m1", "genres", "genres:Drama"), ("m1", "genres", "genres:Romance"), ("m1", "director", "director:Ann Lee"),
            ("m4", "genres", "genres:Drama"), ("m9", "genres", "genres:Horror")} <= triples
    assert not any(h == "m8" and r == "director" for h, r, _ in triples)  # an empty cell gives no triple
    horror = ds.entity_ids.index("genres:Horror")
    assert ds.entity_text[horror] == "Horror" and ds.relation_ids == ["genres", "director"]
    assert ds.meta["items"] == {"items_in_file": 10, "unused_items": 1, "kept_unused": False,
                                "items_missing_from_file": 1}

    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--items", tmp_path / "items.csv",
                    "--text-col", "title", "--keep-unused-items", "-o", tmp_path / "kept") == 0
    kept = load_dataset(tmp_path / "kept")
    assert kept.n_items == 11 and kept.item_text[kept.item_ids.index("m11")] == "Never Watched" and not kept.has_kg


def test_items_file_lets_interests_infer_reach_every_user(three_users, tmp_path, capsys, caplog):
    (tmp_path / "items.csv").write_text(ITEMS)
    base = [three_users, "--user-col", "userId", "--item-col", "movieId", "--time-col", "timestamp"]
    assert _convert(*base, "-o", tmp_path / "bare") == 0
    assert _convert(*base, "--items", tmp_path / "items.csv", "--title-col", "title", "--attr-cols", "genres,director",
                    "-o", tmp_path / "full") == 0

    def statuses(out):
        return [json.loads(line)["status"] for line in (out / "user_interests_raw.jsonl").read_text().splitlines()]

    main(["interests", "infer", str(tmp_path / "bare"), "--backend", "kg-profile", "--users", "5",
          "-o", str(tmp_path / "int-bare")])
    assert statuses(tmp_path / "int-bare") == ["skipped"] * 3
    assert "--items items.csv --item-id-col movieId --title-col title" in caplog.text
    assert main(["interests", "infer", str(tmp_path / "full"), "--backend", "kg-profile", "--users", "5",
                 "-o", str(tmp_path / "int-full")]) == 0
    assert statuses(tmp_path / "int-full") == ["ok"] * 3
    phrases = json.loads((tmp_path / "int-full" / "user_interests_raw.jsonl").read_text().splitlines()[0])["phrases"]
    assert "drama" in phrases and "ann lee" in phrases


def test_items_file_errors(three_users, tmp_path, capsys):
    (tmp_path / "items.csv").write_text("movieId,title\nm1,A\nm1,B\n")
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--items", tmp_path / "items.csv",
                    "--title-col", "title", "-o", tmp_path / "d") == 2
    assert "items.csv: item id 'm1' appears more than once in column 'movieId'" in capsys.readouterr().err
    assert _convert(three_users, "--user-col", "userId", "--item-col", "movieId", "--items", tmp_path / "items.csv",
                    "--title-col", "name", "-o", tmp_path / "d") == 2
    assert "missing column(s) ['name']; found ['movieId', 'title']" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- RecBole
def _named_triples(dataset):
    return sorted(map(tuple, to_pandas(dataset)["kg"].to_numpy()))


def _same_dataset(a, b):
    for split in ("train", "valid", "test"):
        assert _named(a, split) == _named(b, split), split
        assert torch.equal(a.split(split), b.split(split)), split
    assert a.user_ids == b.user_ids and a.item_ids == b.item_ids
    assert a.item_text == b.item_text
    assert _named_triples(a) == _named_triples(b)
    assert torch.equal(a.user_interest, b.user_interest) and a.interest_ids == b.interest_ids


def test_recbole_round_trip_dbbook2014(dbbook, tmp_path):
    assert main(["data", "export", str(dbbook.meta["source"]), "--to", "recbole", "-o", str(tmp_path / "rb" / "db")]) == 0
    names = sorted(p.name for p in (tmp_path / "rb" / "db").iterdir())
    assert names == ["db.item", "db.kg", "db.link", "db.test.inter", "db.train.inter", "db.user", "db.valid.inter"]
    header = (tmp_path / "rb" / "db" / "db.train.inter").read_text().splitlines()[0]
    assert header == "user_id:token\titem_id:token"
    assert main(["data", "convert", "--from", "recbole", str(tmp_path / "rb" / "db"), "-o", str(tmp_path / "back")]) == 0
    back = load_dataset(tmp_path / "back")
    _same_dataset(dbbook, back)
    assert back.meta["split"]["method"] == "given"
    assert back.meta["split"]["files"] == ["db.train.inter", "db.valid.inter", "db.test.inter"]


def test_recbole_round_trip_synthetic_in_python(tmp_path):
    ds = synthetic(200, 80, seed=3)
    export_recbole(ds, tmp_path / "syn")
    back, _ = read_recbole(tmp_path / "syn")
    _same_dataset(ds, back)
    assert back.entity_text[ds.n_items:] == back.entity_ids[ds.n_items:]  # entity tokens are their names


def test_recbole_atomic_files_by_hand(tmp_path):
    """An ml-100k-like dataset: one .inter with typed fields and timestamps, .item with a title and genres."""
    root = tmp_path / "toy"
    root.mkdir()
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows += [f"{u}\t{i}\t4\t{100 * u + (7 * i) % 10}" for u in (1, 2) for i in range(1, 7)]
    (root / "toy.inter").write_text("\n".join(rows) + "\n")
    (root / "toy.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                   + "".join(f"{i}\tFilm \"{i}\" Part\t199{i}\tDrama Comedy\n" for i in range(1, 7))
                                   + "9\tUnseen\t1999\tHorror\n")
    back, coverage = read_recbole(root, splitter=TemporalSplit(test=1, valid=1), attr_fields=["class", "release_year"])
    # latest per user: times 100*u + (7*i) % 10 -> i=3 is 1, i=6 is 2, ..., i=4 gives 8, i=1 gives 7
    assert _named(back, "test") == {"1": ["4"], "2": ["4"]} and _named(back, "valid") == {"1": ["1"], "2": ["1"]}
    assert back.meta["split"]["time_col"] == "timestamp" and back.meta["split"]["files"] == ["toy.inter"]
    assert back.item_text[back.item_ids.index("3")] == 'Film "3" Part'
    assert "9" in back.item_ids and coverage.unused == ["9"]  # .item's items are kept, as RecBole does
    triples = set(_named_triples(back))
    assert {("1", "class", "class:Drama"), ("1", "class", "class:Comedy"), ("1", "release_year", "release_year:1991"),
            ("9", "class", "class:Horror")} <= triples
    (root / "toy.item").unlink()
    with pytest.raises(DatasetError, match=r"toy.item: no such file, but a title or attribute fields"):
        read_recbole(root, attr_fields=["class"])
    (root / "toy.inter").write_text("user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DatasetError, match=r"toy.inter:1: header field 'user_id' is not 'name:type'"):
        read_recbole(root)
    with pytest.raises(CikgError, match="RecBole dataset directory not found"):
        read_recbole(tmp_path / "missing")
