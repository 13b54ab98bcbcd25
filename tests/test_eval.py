"""Full-ranking evaluation against a slow, obviously correct per-user Python reference."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cikg.errors import CikgError, ConfigError
from cikg.eval import Evaluator, activity_groups, csr_rows, evaluate_embeddings, top_items

DATA = Path(os.environ.get("CIKG_DATA", Path(__file__).parents[1].parent / "shared" / "data"))


# ---------------------------------------------------------------------- reference (tests only)
def reference_metrics(scores: np.ndarray, truth: list, excluded: list, ks, users=None) -> dict:
    """Per-user loop: rank candidates by (-score, item id), then count hits in the top K."""
    out: dict = {}
    users = range(scores.shape[0]) if users is None else users
    for u in users:
        if not truth[u]:
            continue
        candidates = [i for i in range(scores.shape[1]) if i not in excluded[u]]
        ranked = sorted(candidates, key=lambda i: (-float(scores[u, i]), i))
        for k in ks:
            hits = [item in truth[u] for item in ranked[:k]]
            dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
            idcg = sum(1 / math.log2(j + 2) for j in range(min(len(truth[u]), k)))
            row = {"recall": sum(hits) / len(truth[u]), "precision": sum(hits) / k,
                   "hit": float(any(hits)), "ndcg": dcg / idcg}
            for name, value in row.items():
                out.setdefault(f"{name}@{k}", {})[u] = value
    return out


def to_csr(sets: list):
    counts = torch.tensor([len(s) for s in sets])
    indptr = torch.zeros(len(sets) + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    flat = [i for s in sets for i in s]
    return indptr, torch.tensor(flat, dtype=torch.long)


def random_case(seed: int, n_users: int, n_items: int, score_kind: str):
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        n_train = int(rng.integers(0, n_items - 1))
        n_valid = int(rng.integers(0, 3))
        n_test = 0 if u % 5 == 0 else int(rng.integers(1, 6))  # every 5th user has no test items
        train.append(set(items[:n_train].tolist()))
        valid.append(set(items[n_train:n_train + n_valid].tolist()))
        test.append(set(items[n_train + n_valid:n_train + n_valid + n_test].tolist()))
    if score_kind == "continuous":
        scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    elif score_kind == "ties":
        scores = rng.integers(0, 3, (n_users, n_items)).astype(np.float32)
    else:  # "constant": every item ties
        scores = np.zeros((n_users, n_items), dtype=np.float32)
    return scores, train, valid, test


def assert_matches(result, expected: dict):
    assert set(result.per_user) == set(expected)
    users = result.users.tolist()
    for name, by_user in expected.items():
        assert users == sorted(by_user), name
        want = np.array([by_user[u] for u in users])
        np.testing.assert_allclose(result.per_user[name].numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert result.means[name] == pytest.approx(want.mean(), rel=1e-5, abs=1e-7)


# ---------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("score_kind", ["continuous", "ties", "constant"])
@pytest.mark.parametrize("block_size", [1, 7, 1000])
def test_matches_reference(seed, score_kind, block_size):
    n_users, n_items = 23, 17
    scores, train, valid, test = random_case(seed, n_users, n_items, score_kind)
    ks = (1, 3, 10, 40)  # 40 > n_items: K larger than any candidate list
    table = torch.from_numpy(scores)
    result = Evaluator(ks=ks, block_size=block_size, progress=False).evaluate(
        lambda users: table[users], to_csr(test), [to_csr(train), to_csr(valid)])
    excluded = [a | b for a, b in zip(train, valid)]
    assert_matches(result, reference_metrics(scores, test, excluded, ks))
    assert result.n_without_truth == sum(1 for s in test if not s)


@pytest.mark.parametrize("score_kind", ["continuous", "ties"])
def test_blocks_equal_one_block(score_kind):
    scores, train, valid, test = random_case(7, 61, 29, score_kind)
    table = torch.from_numpy(scores)
    one = Evaluator(ks=(5, 20), block_size=10_000, progress=False).evaluate(
        lambda u: table[u], to_csr(test), [to_csr(train)])
    for block_size in (2, 13, 60):  # 61 users: every block size splits them unevenly
        other = Evaluator(ks=(5, 20), block_size=block_size, progress=False).evaluate(
            lambda u: table[u], to_csr(test), [to_csr(train)])
        assert torch.equal(one.users, other.users)
        for name in one.per_user:
            assert torch.equal(one.per_user[name], other.per_user[name]), (block_size, name)


def test_user_subset_repeats_and_order():
    scores, train, _, test = random_case(3, 30, 20, "ties")
    table = torch.from_numpy(scores)
    users = torch.tensor([17, 3, 3, 25, 0, 12, 29])  # 0 and 25 have no test items
    result = Evaluator(ks=(2, 5), block_size=3, progress=False).evaluate(
        lambda u: table[u], to_csr(test), [to_csr(train)], users=users)
    assert_matches(result, reference_metrics(scores, test, train, (2, 5), users=[3, 12, 17, 29]))
    assert result.n_without_truth == 2


def test_hand_computed_example():
    # items 0..5; user 0 truth {1, 4}; train {0}; scores rank 5 > 1 > 2 = 3 > 4 (2 before 3 by id)
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 6.0, 10.0]])
    # ranking after masking item 0: 5, 1, 2, 3, 4, i.e. hits at ranks 1 and 4 (0-based)
    result = Evaluator(ks=(1, 2, 5), block_size=4, progress=False).evaluate(
        lambda u: scores[u], to_csr([{1, 4}]), [to_csr([{0}])])
    idcg2 = 1 + 1 / math.log2(3)
    assert result["recall@1"] == 0 and result["recall@2"] == 0.5 and result["recall@5"] == 1.0
    assert result["precision@2"] == 0.5 and result["precision@5"] == pytest.approx(0.4)
    assert result["hit@1"] == 0 and result["hit@2"] == 1
    assert result["ndcg@2"] == pytest.approx((1 / math.log2(3)) / idcg2)
    assert result["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / idcg2)


def test_tie_rule_lower_item_id_first():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 3.0, 2.0],
                           [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    items, valid = top_items(scores, 3)
    assert items.tolist() == [[1, 2, 4], [0, 1, 2]]
    assert bool(valid.all())
    masked = scores.clone()
    masked[0, [1, 2]] = float("-inf")
    items, valid = top_items(masked, 7)
    assert items[0].tolist() == [4, 5, 6, 0, 3, 1, 2]
    assert valid[0].tolist() == [True] * 5 + [False] * 2


def test_item_in_train_and_test_counts_but_never_hits():
    scores = torch.tensor([[0.0, 5.0, 1.0]])
    result = Evaluator(ks=(3,), progress=False).evaluate(lambda u: scores[u], to_csr([{1, 2}]), [to_csr([{1}])])
    assert result["recall@3"] == 0.5 and result["hit@3"] == 1.0


def test_evaluate_embeddings_and_frames():
    torch.manual_seed(0)
    user_emb, item_emb = torch.randn(40, 8), torch.randn(15, 8)
    _, train, _, test = random_case(5, 40, 15, "continuous")
    evaluator = Evaluator(ks=(5, 10), block_size=9, metrics=("recall", "ndcg"), progress=False)
    result = evaluate_embeddings(user_emb, item_emb, to_csr(test), [to_csr(train)], evaluator=evaluator)
    expected = reference_metrics((user_emb @ item_emb.T).numpy(), test, train, (5, 10))
    assert_matches(result, {k: v for k, v in expected.items() if k.split("@")[0] in ("recall", "ndcg")})
    assert list(result.to_dict()) == ["recall@5", "recall@10", "ndcg@5", "ndcg@10"]
    frame = result.to_frame()
    assert list(frame.columns) == ["user", "recall@5", "recall@10", "ndcg@5", "ndcg@10"]
    assert len(frame) == result.n_users == 32
    assert frame["ndcg@10"].mean() == pytest.approx(result["ndcg@10"], rel=1e-6)
    assert "recall@5=" in repr(result)


def test_activity_groups_match_pandas():
    scores, train, _, test = random_case(11, 80, 30, "continuous")
    table = torch.from_numpy(scores)
    result = Evaluator(ks=(10,), block_size=16, progress=False).evaluate(lambda u: table[u], to_csr(test),
                                                                        [to_csr(train)])
    counts = torch.tensor([len(s) for s in train])
    groups = activity_groups(result, counts, n_quantiles=4, sparse_max=(5, 12))
    frame = result.to_frame()
    frame["train"] = counts[result.users].numpy()
    frame["q"] = pd.qcut(frame["train"], 4, labels=False, duplicates="drop")
    by_q = frame.groupby("q")
    assert groups["group"].tolist()[:1] == ["all"]
    quant = groups[groups["group"].str.startswith("Q")]
    assert quant["n_users"].tolist() == by_q.size().tolist()
    np.testing.assert_allclose(quant["recall@10"], by_q["recall@10"].mean(), rtol=1e-6)
    assert quant["min_train"].tolist() == by_q["train"].min().tolist()
    assert quant["max_train"].tolist() == by_q["train"].max().tolist()
    sparse = groups.set_index("group").loc["train<=12"]
    assert sparse["n_users"] == (frame["train"] <= 12).sum()
    assert sparse["ndcg@10"] == pytest.approx(frame.loc[frame["train"] <= 12, "ndcg@10"].mean())
    assert groups.set_index("group").loc["all", "n_users"] == result.n_users


def test_csr_rows_gathers_in_user_order():
    indptr, indices = to_csr([[4, 2], [], [7], [1, 1, 3]])
    row, col = csr_rows(indptr, indices, torch.tensor([3, 0, 1, 3]))
    assert row.tolist() == [0, 0, 0, 1, 1, 3, 3, 3] and col.tolist() == [1, 1, 3, 4, 2, 1, 1, 3]


# ---------------------------------------------------------------------- bad input
def test_bad_config_and_input():
    with pytest.raises(ConfigError, match="ks"):
        Evaluator(ks=(0, 5))
    with pytest.raises(ConfigError, match="metrics"):
        Evaluator(metrics=("mrr",))
    with pytest.raises(ConfigError, match="block_size"):
        Evaluator(block_size=0)
    table = torch.zeros(3, 4)
    truth = to_csr([{1}, {2}, {3}])
    evaluator = Evaluator(progress=False)
    with pytest.raises(CikgError, match="user 5"):
        evaluator.evaluate(lambda u: table[u], truth, users=torch.tensor([0, 5]))
    with pytest.raises(CikgError, match="indptr"):
        evaluator.evaluate(lambda u: table[u], truth, [to_csr([{1}])])
    with pytest.raises(CikgError, match="item id"):
        evaluator.evaluate(lambda u: table[u], truth, [to_csr([{9}, set(), set()])])
    with pytest.raises(CikgError, match="shape"):
        evaluator.evaluate(lambda u: table[:1], truth)
    nan_table = table.clone()
    nan_table[1, 2] = float("nan")
    with pytest.raises(CikgError, match="NaN"):
        evaluator.evaluate(lambda u: nan_table[u], truth)


# ---------------------------------------------------------------------- real dataset size
@pytest.mark.skipif(not (DATA / "dbbook2014" / "train.txt").exists(), reason="dbbook2014 not available")
def test_dbbook2014_random_embeddings_against_reference():
    from cikg.data import load_dataset

    data = load_dataset(DATA / "dbbook2014")
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(data.n_users, 64, generator=gen)
    item_emb = torch.randn(data.n_items, 64, generator=gen)
    excludes = [data.csr("train"), data.csr("valid")]
    result = evaluate_embeddings(user_emb, item_emb, data.csr("test"), excludes,
                                 evaluator=Evaluator(block_size=512, progress=False))
    assert result.n_users + result.n_without_truth == data.n_users
    sample = torch.randperm(data.n_users, generator=gen)[:60].tolist()
    truth = [set(data.history(u, "test")) if u in sample else set() for u in range(data.n_users)]
    excluded = [set(data.history(u, "train")) | set(data.history(u, "valid")) if u in sample else set()
                for u in range(data.n_users)]
    scores = (user_emb @ item_emb.T).numpy()
    expected = reference_metrics(scores, truth, excluded, (20, 50, 100), users=sorted(sample))
    position = {u: p for p, u in enumerate(result.users.tolist())}
    for name, by_user in expected.items():
        got = np.array([float(result.per_user[name][position[u]]) for u in by_user])
        np.testing.assert_allclose(got, np.array(list(by_user.values())), rtol=1e-5, atol=1e-6, err_msg=name)


def test_view_returned_by_score_fn_is_not_modified():
    table = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    before = table.clone()
    evaluator = Evaluator(ks=(2,), block_size=3, progress=False)
    result = evaluator.evaluate(lambda u: table[int(u[0]):int(u[-1]) + 1], to_csr([{1}, {2}, {3}]),
                                [to_csr([{3}, {3}, {0}])])
    assert torch.equal(table, before)
    assert result.per_user["hit@2"].tolist() == [1.0, 1.0, 1.0]
