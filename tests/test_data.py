"""The data layer on the four real datasets: counts, text, splits, round trips and bad input."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cikg.data import (
    Dataset,
    carve_validation,
    from_pandas,
    load_dataset,
    resolve_dataset_path,
    save_dataset,
    synthetic,
    to_pandas,
    uri_to_title,
)
from cikg.errors import DatasetError

# (users, items, non-item entities, relations, KG triples, interests, user-interest edges, train+valid, test)
EXPECTED = {
    "dbbook2014": (5576, 2680, 6228, 13, 134223, 381, 6961, 50745, 15216),
    "book-crossing": (6616, 8853, 673, 4, 1137, 244, 19497, 85989, 24673),
    "ml1m": (6040, 3260, 0, 0, 0, 115, 2204, 796389, 202150),
    "amazon-book": (70679, 24915, 0, 0, 0, 0, 0, 652514, 193920),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_dataset_counts(name, request):
    ds = request.getfixturevalue({"dbbook2014": "dbbook", "book-crossing": "bookcrossing", "ml1m": "ml1m",
                                  "amazon-book": "amazon"}[name])
    users, items, entities, relations, triples, interests, ui, train_valid, test = EXPECTED[name]
    assert (ds.n_users, ds.n_items, ds.n_kg_entities, ds.n_relations) == (users, items, entities, relations)
    assert ds.kg.size(1) == triples and ds.has_kg == (triples > 0)
    assert (ds.n_interests, ds.user_interest.size(1)) == (interests, ui)
    assert ds.train.size(1) + ds.valid.size(1) == train_valid
    assert ds.test.size(1) == test
    # the validation split is about 1/8 of train, so train:valid:test is about 7:1:2
    share = ds.valid.size(1) / train_valid
    assert 0.10 < share < 0.20
    assert "KG" in ds.stats().index and ds.stats().loc["users", "value"] == users


def test_kg_absent_is_reported(ml1m, amazon):
    for ds in (ml1m, amazon):
        assert ds.stats().loc["KG", "value"] == "absent"
        assert ds.n_entities == ds.n_items
    assert "kg=absent" in repr(ml1m)


def test_item_text(dbbook, bookcrossing, ml1m, amazon):
    assert dbbook.item_text[0] == "Dragonfly in Amber"
    assert bookcrossing.item_text[1].startswith("Our Dumb Century: The Onion Presents 100 Years")
    assert ml1m.item_text[0] is None and ml1m.item_text[1] == "Jumanji"
    assert all(t is None for t in amazon.item_text[:100])  # Freebase ids are not titles
    assert uri_to_title("http://dbpedia.org/resource/Harry_Potter_and_the_Philosopher%27s_Stone") == \
        "Harry Potter and the Philosopher's Stone"


def test_interest_ids_are_dense_and_original_ids_kept(dbbook, data_dir):
    raw = np.loadtxt(data_dir / "dbbook2014" / "user_interest_clustered.txt", dtype=np.int64)
    assert dbbook.user_interest[1].max() == dbbook.n_interests - 1
    assert sorted(dbbook.interest_ids) == sorted(np.unique(raw[:, 1]).tolist())
    original = torch.tensor(dbbook.interest_ids)[dbbook.user_interest[1]]
    pairs = set(map(tuple, np.stack([dbbook.user_interest[0].numpy(), original.numpy()], 1).tolist()))
    assert pairs == set(map(tuple, raw.tolist()))  # one duplicate line dropped, nothing else lost


def test_history_keeps_file_order(dbbook, data_dir):
    line = (data_dir / "dbbook2014" / "train.txt").read_text().splitlines()[0].split()
    file_items = [int(x) for x in line[1:]]
    history = dbbook.history(0) + dbbook.history(0, "valid")
    assert sorted(history) == sorted(file_items)
    train_order = [i for i in file_items if i in set(dbbook.history(0))]
    assert dbbook.history(0) == train_order
    assert dbbook.history(0, last=3) == train_order[-3:]
    with pytest.raises(DatasetError, match="unknown user 99999"):
        dbbook.history(99999)


def test_validation_split_deterministic_and_disjoint(data_dir):
    a = load_dataset(data_dir / "book-crossing", seed=7)
    b = load_dataset(data_dir / "book-crossing", seed=7)
    c = load_dataset(data_dir / "book-crossing", seed=8)
    assert torch.equal(a.valid, b.valid) and torch.equal(a.train, b.train)
    assert not torch.equal(a.valid, c.valid)
    key = lambda p: set((p[0] * a.n_items + p[1]).tolist())  # noqa: E731
    assert not key(a.train) & key(a.valid)
    assert a.meta["split"] == {"method": "carved from train per user", "fraction": 1 / 8, "seed": 7,
                               "min_train_items": 2}
    # every user with >= 2 train items gives at least one, and nobody loses all train items
    total = torch.bincount(torch.cat([a.train[0], a.valid[0]]), minlength=a.n_users)
    valid = torch.bincount(a.valid[0], minlength=a.n_users)
    assert bool((valid[total >= 2] >= 1).all()) and bool((valid[total < 2] == 0).all())
    assert bool((a.degrees("train")[total >= 1] >= 1).all())


def test_carve_validation_small_case():
    train = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 2]])
    rest, valid = carve_validation(train, 3, fraction=1 / 8, seed=0)
    assert valid.size(1) == 2  # user 0: round(8/8) = 1, user 1: none (1 item), user 2: max(1, round(.25)) = 1
    assert torch.bincount(valid[0], minlength=3).tolist() == [1, 0, 1]
    assert rest.size(1) == 9


@pytest.mark.parametrize("fixture", ["dbbook", "bookcrossing", "ml1m", "amazon"])
def test_round_trip_write_load(fixture, request, tmp_path):
    ds = request.getfixturevalue(fixture)
    again = load_dataset(save_dataset(ds, tmp_path / "copy"))
    assert again.equals(ds)
    assert again.meta["split"] == ds.meta["split"]
    assert again.entity_text == ds.entity_text


@pytest.mark.parametrize("labelled", [False, True])
def test_interest_nodes_without_users_survive_save_and_load(dbbook, labelled, tmp_path):
    """A subset of users drops edges, not interest nodes: the saved list keeps the nodes nobody links to."""
    ds = dbbook.with_interests(dbbook.user_interest[:, dbbook.user_interest[1] >= 3], dbbook.interest_ids,
                               [f"phrase {i}" for i in dbbook.interest_ids] if labelled else None)
    assert int(ds.user_interest[1].min()) == 3  # dense interests 0..2 have no user
    again = load_dataset(save_dataset(ds, tmp_path / "copy"))
    assert again.n_interests == dbbook.n_interests and again.interest_ids == dbbook.interest_ids
    assert torch.equal(again.user_interest, ds.user_interest)
    assert again.interest_labels == ds.interest_labels
    assert again.equals(ds)


def test_pandas_round_trip(bookcrossing):
    frames = to_pandas(bookcrossing)
    assert set(frames) == {"interactions", "items", "users", "kg", "entities", "user_interest", "interests"}
    again = from_pandas(**frames, name="bc")
    for split in ("train", "valid", "test"):
        assert torch.equal(again.split(split), bookcrossing.split(split))
    assert torch.equal(again.user_interest, bookcrossing.user_interest)
    assert again.item_text == bookcrossing.item_text
    assert again.kg.size(1) == bookcrossing.kg.size(1)
    # items keep their ids; other entities are renumbered in order of appearance but name the same things
    assert torch.equal(again.kg[:2], bookcrossing.kg[:2])
    tail_names = lambda d: [d.entity_ids[t] for t in d.kg[2].tolist()]  # noqa: E731
    assert tail_names(again) == tail_names(bookcrossing)
    assert again.entity_text == bookcrossing.entity_text


def test_from_pandas_without_split_carves_test_and_valid():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": rng.integers(0, 50, 2000).astype(str), "item": rng.integers(0, 80, 2000)})
    ds = from_pandas(frame, seed=1)
    n = frame.drop_duplicates().shape[0]
    assert ds.train.size(1) + ds.valid.size(1) + ds.test.size(1) == n
    assert 0.15 < ds.test.size(1) / n < 0.25
    with pytest.raises(DatasetError, match="missing column 'item'"):
        from_pandas(frame.rename(columns={"item": "thing"}))


# ------------------------------------------------------------------------------------------- bad input
def _copy(data_dir: Path, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(data_dir / name, target)
    for f in target.iterdir():
        f.chmod(0o644)
    return target


def _edit_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("content, message, line", [
    ("0 12 x7 4", "non-integer token", 3),
    ("0 12 -4", "negative id", 3),
    ("0 12 1.5", "non-integer token", 3),
    ("0 12 99999999999999", "id too large", 3),
])
def test_malformed_train_line(data_dir, tmp_path, content, message, line):
    path = _copy(data_dir, "book-crossing", tmp_path)
    _edit_line(path / "train.txt", line, content)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path)
    assert err.value.line == line and err.value.path.endswith("train.txt")
    assert f"train.txt:{line}:" in str(err.value)


def test_unknown_test_item_names_file_and_line(data_dir, tmp_path):
    path = _copy(data_dir, "book-crossing", tmp_path)
    _edit_line(path / "test.txt", 5, "4 9000000")
    with pytest.raises(DatasetError, match=r"test.txt:5: unknown item id 9000000.*8853 items"):
        load_dataset(path)


def test_unknown_user_in_interests(data_dir, tmp_path):
    path = _copy(data_dir, "dbbook2014", tmp_path)
    _edit_line(path / "user_interest_clustered.txt", 10, "77777 8942")
    with pytest.raises(DatasetError, match=r"user_interest_clustered.txt:10: unknown user id 77777"):
        load_dataset(path)


def test_kg_wrong_column_count(data_dir, tmp_path):
    path = _copy(data_dir, "book-crossing", tmp_path)
    _edit_line(path / "kg_final.txt", 7, "1 2")
    with pytest.raises(DatasetError, match=r"kg_final.txt:7: expected 3 integers per line, found 2"):
        load_dataset(path)


def test_empty_and_missing_files(data_dir, tmp_path):
    path = _copy(data_dir, "book-crossing", tmp_path)
    (path / "test.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="test.txt: file is empty"):
        load_dataset(path)
    (path / "test.txt").unlink()
    with pytest.raises(DatasetError, match="test.txt: required file is missing"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="no dataset named 'nope'"):
        load_dataset("nope", root=data_dir)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing" / "dir")


def test_duplicates_warn_and_drop(data_dir, tmp_path, caplog):
    path = _copy(data_dir, "book-crossing", tmp_path)
    lines = (path / "train.txt").read_text().splitlines()
    lines.append(lines[0])  # user 0's line again
    (path / "train.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="cikg.data.io"):
        ds = load_dataset(path)
    assert ds.train.size(1) + ds.valid.size(1) == EXPECTED["book-crossing"][7]
    assert any("duplicate pair" in w for w in ds.meta["warnings"])
    assert any("appears on 2 lines" in r.getMessage() for r in caplog.records)


def test_bad_list_files(data_dir, tmp_path):
    path = _copy(data_dir, "book-crossing", tmp_path)
    (path / "user_list.txt").write_bytes(b"org_id remap_id\n276847 0\n\xff\xfe 1\n")
    with pytest.raises(DatasetError, match=r"user_list.txt:3: file is not valid UTF-8"):
        load_dataset(path)
    (path / "user_list.txt").write_text("id something\n1 0\n")
    with pytest.raises(DatasetError, match=r"user_list.txt:1: expected a header"):
        load_dataset(path)


def test_windows_line_endings_and_no_trailing_newline(data_dir, tmp_path):
    path = _copy(data_dir, "book-crossing", tmp_path)
    for name in ("train.txt", "test.txt", "kg_final.txt"):
        text = (path / name).read_text().rstrip("\n")
        (path / name).write_bytes(text.replace("\n", "\r\n").encode())
    ds = load_dataset(path)
    assert ds.train.size(1) + ds.valid.size(1) == EXPECTED["book-crossing"][7]
    assert ds.kg.size(1) == EXPECTED["book-crossing"][4]


def test_dataset_validates_its_tensors():
    with pytest.raises(DatasetError, match="item id outside"):
        Dataset("bad", n_users=2, n_items=2, train=torch.tensor([[0, 1], [0, 5]]), test=torch.tensor([[0], [1]]))
    with pytest.raises(DatasetError, match="sorted by user"):
        Dataset("bad", n_users=2, n_items=2, train=torch.tensor([[1, 0], [0, 1]]), test=torch.tensor([[0], [1]]))


# ------------------------------------------------------------------------------------------- synthetic
def test_synthetic_is_seeded_and_consistent():
    a, b, c = synthetic(500, 120, seed=1), synthetic(500, 120, seed=1), synthetic(500, 120, seed=2)
    assert a.equals(b) and not a.equals(c)
    assert a.n_users == 500 and a.n_items == 120 and a.has_kg and a.has_interests
    assert bool((a.degrees("train") >= 1).all())
    assert a.kg.size(1) == 5 * 120 and a.relation_names == ["genre", "author", "era", "setting", "publisher"]
    assert all(isinstance(t, str) and t for t in a.item_text)


def test_synthetic_interests_beat_popularity():
    """A scorer that knows each user's latent topics beats popularity: the data holds learnable signal."""
    ds = synthetic(1500, 300, seed=0)
    popularity = torch.bincount(ds.train[1], minlength=ds.n_items).float()
    genre_of_item = torch.full((ds.n_items,), -1)
    genre_edges = ds.kg[:, ds.kg[1] == 0]
    genre_of_item[genre_edges[0]] = genre_edges[2] - ds.n_items
    user_topics = torch.zeros(ds.n_users, ds.n_interests)
    user_topics[ds.user_interest[0], ds.user_interest[1]] = 1.0
    informed = user_topics[:, genre_of_item] * popularity + 1e-3 * popularity

    def recall(scores):
        scores = scores.clone()
        scores[ds.train[0], ds.train[1]] = -1e9
        scores[ds.valid[0], ds.valid[1]] = -1e9
        top = torch.topk(scores, 20, dim=1).indices
        hit = torch.zeros(ds.n_users, ds.n_items)
        hit[ds.test[0], ds.test[1]] = 1
        return float((hit.gather(1, top).sum(1) / hit.sum(1).clamp(min=1)).mean())

    assert recall(informed) > 1.5 * recall(popularity.expand(ds.n_users, -1))


def test_synthetic_scales_vectorised():
    ds = synthetic(50_000, 5_000, seed=0)
    assert ds.n_users == 50_000 and ds.train.size(1) > 500_000


def test_original_ids_with_number_words_round_trip(tmp_path):
    """"Apollo 13 7 Apollo 13" cannot be split at the remap id: ids with whitespace are written tab-separated."""
    items = pd.DataFrame({"item": [f"Apollo {i}" for i in range(20)], "text": [f"Title\t{i}" for i in range(20)]})
    kg = pd.DataFrame({"head": items["item"], "relation": "written by", "tail": [f"Author {i % 3}" for i in range(20)]})
    rows = [(f"user {u}", f"Apollo {(u + k) % 20}") for u in range(30) for k in range(6)]
    ds = from_pandas(pd.DataFrame(rows, columns=["user", "item"]), kg=kg, items=items, seed=0)
    back = load_dataset(save_dataset(ds, tmp_path / "d"))
    assert back.equals(ds)
    assert back.entity_ids[-3:] == ["Author 0", "Author 1", "Author 2"] and back.user_ids[:2] == ["user 0", "user 1"]
    assert back.item_text[:2] == ["Title\t0", "Title\t1"] and back.relation_ids == ["written by"]


def test_a_bare_name_is_the_named_dataset_unless_a_folder_here_holds_a_dataset(tmp_path, monkeypatch):
    root = tmp_path / "data"
    save_dataset(synthetic(n_users=30, n_items=40, seed=1), root / "tiny")
    here = tmp_path / "experiments"
    (here / "tiny").mkdir(parents=True)
    (here / "tiny" / "cikgrec.yaml").write_text("model: {name: cikgrec}\n")  # configs, not a dataset
    monkeypatch.chdir(here)
    assert resolve_dataset_path("tiny", root=root) == root / "tiny"
    assert load_dataset("tiny", root=root).n_users == 30
    save_dataset(synthetic(n_users=20, n_items=40, seed=1), here / "tiny")  # now a dataset here: it wins
    assert resolve_dataset_path("tiny", root=root) == Path("tiny")
    assert load_dataset("tiny", root=root).n_users == 20
