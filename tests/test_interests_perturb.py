"""``cikg interests perturb`` / :func:`cikg.interests.perturb.perturb_interests`: exact counts, no duplicates,
seeded draws, replace never keeps an interest, rate 0 is the identity, and clear errors (issue 15 item 7)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cikg._io import sha256_file
from cikg.cli import main
from cikg.data import load_interests
from cikg.errors import ConfigError, DatasetError
from cikg.interests.perturb import kth_absent, perturb_interests

# users 0..3, interests 10..14 (14 held by nobody); 6 edges
HAND = np.array([[0, 10], [0, 11], [1, 10], [2, 12], [3, 11], [3, 12]])
VOCAB = [10, 11, 12, 13, 14]


def _pairs(edges: np.ndarray) -> set:
    return {(int(u), int(i)) for u, i in edges}


def _by_user(edges: np.ndarray) -> dict:
    out: dict = {}
    for u, i in edges:
        out.setdefault(int(u), set()).add(int(i))
    return out


def test_kth_absent_matches_brute_force():
    rng = np.random.default_rng(0)
    present = np.unique(rng.integers(0, 60, size=25))
    absent = np.setdiff1d(np.arange(200), present)
    ranks = np.arange(100)
    assert kth_absent(present, ranks).tolist() == absent[:100].tolist()
    assert kth_absent(np.zeros(0, dtype=np.int64), np.array([0, 3])).tolist() == [0, 3]


def test_exact_counts_on_a_hand_case():
    drop = perturb_interests(HAND, "drop", 0.5, seed=0, interest_ids=VOCAB)
    assert len(drop.edges) == 3 and _pairs(drop.edges) < _pairs(HAND)
    assert drop.counts == {"edges_before": 6, "dropped": 3, "replaced": 0, "added": 0, "edges_after": 3,
                           "users_with_interest_before": 4,
                           "users_with_interest_after": len(set(drop.edges[:, 0].tolist()))}

    replace = perturb_interests(HAND, "replace", 0.5, seed=0, interest_ids=VOCAB)
    assert len(replace.edges) == 6 and len(_pairs(replace.edges)) == 6
    assert len(_pairs(HAND) - _pairs(replace.edges)) == 3 and replace.counts["replaced"] == 3
    before, after = _by_user(HAND), _by_user(replace.edges)
    assert {u: len(s) for u, s in after.items()} == {u: len(s) for u, s in before.items()}  # degrees kept
    for user, interests in after.items():
        assert (interests - before[user]) <= set(VOCAB)

    add = perturb_interests(HAND, "add", 0.5, seed=0, interest_ids=VOCAB)
    assert len(add.edges) == 9 and _pairs(HAND) < _pairs(add.edges) and add.counts["added"] == 3
    assert set(add.edges[:, 0].tolist()) <= {0, 1, 2, 3} and set(add.edges[:, 1].tolist()) <= set(VOCAB)
    # round(rate * E): 0.25 * 6 = 1.5 -> 2
    assert perturb_interests(HAND, "drop", 0.25, seed=0).counts["dropped"] == 2


def test_add_at_full_rate_can_fill_every_free_pair_and_no_more():
    edges = np.array([[0, 0], [1, 1], [1, 2]])  # 2 users x 3 interests: 3 free pairs
    full = perturb_interests(edges, "add", 1.0, seed=4)
    assert _pairs(full.edges) == {(u, i) for u in range(2) for i in range(3)}
    with pytest.raises(DatasetError, match="cannot add 4 edges: only 2"):  # 4 edges, 6 pairs
        perturb_interests(np.array([[0, 0], [0, 1], [1, 1], [1, 2]]), "add", 1.0, seed=4)


def test_replace_at_rate_one_never_keeps_an_interest_nor_makes_duplicates(small_synthetic):
    result = perturb_interests(small_synthetic, "replace", 1.0, seed=7)
    before = _by_user(small_synthetic.user_interest.T.numpy())
    after = _by_user(result.dataset.user_interest.T.numpy())
    assert after.keys() == before.keys()
    for user in before:
        assert len(after[user]) == len(before[user]) and not after[user] & before[user]
    edges = result.dataset.user_interest
    assert edges.size(1) == small_synthetic.user_interest.size(1) == result.counts["replaced"]
    assert len(set(map(tuple, edges.T.tolist()))) == edges.size(1)


def test_replace_draws_the_new_interest_uniformly_from_those_not_held():
    counts = np.zeros(5, dtype=int)
    for seed in range(400):
        new = perturb_interests(np.array([[0, 2]]), "replace", 1.0, seed=seed, interest_ids=range(5)).edges
        counts[new[0, 1]] += 1
    assert counts[2] == 0 and counts.sum() == 400
    assert counts[[0, 1, 3, 4]].min() > 70  # about 100 each


def test_a_user_who_holds_every_interest_cannot_be_rewired():
    edges = np.array([[0, 0], [0, 1], [1, 0]])
    with pytest.raises(DatasetError, match="user 0 holds 2 of the 2 interests"):
        perturb_interests(edges, "replace", 1.0, seed=0)


def test_seeds_reproduce_and_differ(small_synthetic):
    for mode in ("drop", "replace", "add"):
        a = perturb_interests(small_synthetic, mode, 0.3, seed=1)
        b = perturb_interests(small_synthetic, mode, 0.3, seed=1)
        c = perturb_interests(small_synthetic, mode, 0.3, seed=2)
        assert np.array_equal(a.edges, b.edges) and not np.array_equal(a.edges, c.edges)


def test_rate_zero_is_the_identity_and_id_spaces_are_kept(small_synthetic):
    original = np.sort(small_synthetic.user_interest.numpy().T.copy().view("i8,i8"), axis=0)
    for mode in ("drop", "replace", "add"):
        same = perturb_interests(small_synthetic, mode, 0.0, seed=3).dataset
        assert np.array_equal(np.sort(same.user_interest.numpy().T.copy().view("i8,i8"), axis=0), original)
        noisy = perturb_interests(small_synthetic, mode, 0.5, seed=3).dataset
        assert (noisy.n_users, noisy.n_interests, noisy.interest_ids) == (
            small_synthetic.n_users, small_synthetic.n_interests, small_synthetic.interest_ids)
        assert int(noisy.user_interest[0].max()) < noisy.n_users
        assert int(noisy.user_interest[1].max()) < noisy.n_interests


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), True, "0.2"])
def test_rates_outside_zero_one_are_refused(rate):
    with pytest.raises(ConfigError, match="rate"):
        perturb_interests(HAND, "drop", rate, seed=0)


def test_bad_mode_and_bad_tables_are_refused():
    with pytest.raises(ConfigError, match="unknown perturbation 'swap'"):
        perturb_interests(HAND, "swap", 0.1, seed=0)
    with pytest.raises(DatasetError, match="duplicate user-interest edge .user 0, interest 10"):
        perturb_interests(np.array([[0, 10], [0, 10]]), "drop", 0.5, seed=0)
    with pytest.raises(DatasetError, match="interest 12 is not in the interest vocabulary"):
        perturb_interests(HAND, "drop", 0.5, seed=0, interest_ids=[10, 11])
    with pytest.raises(DatasetError, match="no interests to perturb"):
        perturb_interests(np.zeros((0, 2), dtype=int), "add", 0.5, seed=0)
    with pytest.raises(DatasetError, match=r"\[n, 2\]"):
        perturb_interests(np.zeros((3, 3), dtype=int), "drop", 0.5, seed=0)


def _dataset_dir(dataset, path: Path) -> Path:
    from cikg.data import save_dataset

    return save_dataset(dataset, path)


def test_cli_writes_the_files_and_a_record_that_reads_back(small_synthetic, tmp_path, capsys):
    src = _dataset_dir(small_synthetic, tmp_path / "ds")
    out = tmp_path / "noisy"
    assert main(["interests", "perturb", str(src), "-o", str(out), "--mode", "drop", "--rate", "0.95",
                 "--seed", "5"]) == 0
    assert "edges (" in capsys.readouterr().out
    record = json.loads((out / "perturb.json").read_text())
    e = small_synthetic.user_interest.size(1)
    assert record["mode"] == "drop" and record["rate"] == 0.95 and record["seed"] == 5
    k = round(0.95 * e)
    assert record["edges_before"] == e and record["dropped"] == k and record["edges_after"] == e - k
    assert record["source_sha256"] == sha256_file(src / "user_interest_clustered.txt")
    # interests that lost every edge stay nodes (interest_list.txt keeps the vocabulary): id space unchanged
    back = load_interests(small_synthetic, out)
    assert back.user_interest[1].unique().numel() < small_synthetic.n_interests
    assert back.n_interests == small_synthetic.n_interests and back.user_interest.size(1) == e - k
    assert back.interest_ids == small_synthetic.interest_ids

    again = tmp_path / "replaced"
    assert main(["interests", "perturb", str(src / "user_interest_clustered.txt"), "-o", str(again), "--mode",
                 "replace", "--rate", "0.4"]) == 0
    back = load_interests(small_synthetic, again)
    assert back.user_interest.size(1) == e and back.interest_ids == small_synthetic.interest_ids
    assert json.loads((again / "perturb.json").read_text())["replaced"] == round(0.4 * e)


def _one_error_line(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cikg: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_errors_are_one_line_naming_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "user_interest_clustered.txt"
    bad.write_text("0 5\n1 6 7\n")
    line = _one_error_line(["interests", "perturb", str(bad), "-o", str(tmp_path / "o"), "--mode", "add",
                            "--rate", "0.5"], capsys)
    assert f"{bad}:2" in line and "expected 2 integers per line" in line
    line = _one_error_line(["interests", "perturb", str(tmp_path / "none.txt"), "-o", str(tmp_path / "o"),
                            "--mode", "add", "--rate", "0.5"], capsys)
    assert "none.txt" in line and "not found" in line
    bad.write_text("0 5\n1 6\n")
    line = _one_error_line(["interests", "perturb", str(bad), "-o", str(tmp_path / "o"), "--mode", "drop",
                            "--rate", "1.5"], capsys)
    assert "--rate" in line and "1.5" in line
    line = _one_error_line(["interests", "perturb", str(bad), "-o", str(tmp_path), "--mode", "drop",
                            "--rate", "0.5"], capsys)
    assert "holds the source" in line
