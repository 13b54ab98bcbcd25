"""Vectorised BPR sampling: validity on real data, uniformity, determinism, sharding."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cikg.errors import CikgError, DatasetError
from cikg.train.sampling import BPRSampler

DATA = Path(os.environ.get("CIKG_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
DBBOOK_TRAIN = DATA / "dbbook2014" / "train.txt"


def read_train_pairs(path: Path):
    """The KGAT adjacency file read directly: ``user item item ...`` per line."""
    users, items = [], []
    for line in path.read_text().splitlines():
        ids = [int(x) for x in line.split()]
        users += [ids[0]] * (len(ids) - 1)
        items += ids[1:]
    return torch.tensor([users, items])


def epoch_triples(sampler: BPRSampler, seed: int):
    batches = list(sampler.epoch(torch.Generator().manual_seed(seed)))
    return batches, [torch.cat(column) for column in zip(*batches)] if batches else None


@pytest.mark.skipif(not DBBOOK_TRAIN.exists(), reason="dbbook2014 not available")
def test_dbbook2014_no_negative_is_a_train_item():
    pairs = read_train_pairs(DBBOOK_TRAIN)
    n_users, n_items = int(pairs[0].max()) + 1, 2680
    sampler = BPRSampler(pairs, n_users, n_items, batch_size=1024)
    batches, (users, pos, neg) = epoch_triples(sampler, seed=0)
    assert len(batches) == len(sampler) == -(-pairs.size(1) // 1024)
    assert all(b.users.numel() <= 1024 for b in batches)
    train_sets = [set() for _ in range(n_users)]
    for u, i in pairs.t().tolist():
        train_sets[u].add(i)
    assert not any(j in train_sets[u] for u, j in zip(users.tolist(), neg.tolist()))
    assert int(neg.min()) >= 0 and int(neg.max()) < n_items
    # every positive pair is visited exactly once, in a shuffled order
    key = lambda u, i: (u * n_items + i).sort().values  # noqa: E731
    assert torch.equal(key(users, pos), key(pairs[0], pairs[1]))
    assert not torch.equal(users, pairs[0])


@pytest.mark.parametrize("max_rounds", [16, 0])  # 0: every negative comes from the exact draw
def test_negatives_uniform_over_free_items(max_rounds):
    n_items, train_items = 10, [0, 3, 4]
    pairs = torch.tensor([[0] * len(train_items), train_items])
    sampler = BPRSampler(pairs, 1, n_items, max_rounds=max_rounds)
    n_draws = 70_000
    neg = sampler.sample_negatives(torch.zeros(n_draws, dtype=torch.long), torch.Generator().manual_seed(1))
    counts = torch.bincount(neg, minlength=n_items).double()
    assert counts[train_items].sum() == 0
    free = counts[[i for i in range(n_items) if i not in train_items]]
    expected = n_draws / free.numel()
    chi2 = float(((free - expected) ** 2 / expected).sum())
    assert chi2 < 22.46  # chi-square critical value, 6 degrees of freedom, p = 0.001


def test_exact_draw_for_almost_full_user():
    n_items = 50
    full_but_one = [i for i in range(n_items) if i != 37]
    pairs = torch.tensor([[0] * 49 + [1, 1], full_but_one + [5, 6]])
    sampler = BPRSampler(pairs, 2, n_items, max_rounds=2)
    neg = sampler.sample_negatives(torch.tensor([0] * 200 + [1] * 200), torch.Generator().manual_seed(0))
    assert neg[:200].eq(37).all()
    assert not bool(sampler.is_train_item(torch.ones(200, dtype=torch.long), neg[200:]).any())


def test_user_with_every_item_is_named():
    pairs = torch.tensor([[0, 0, 2, 2, 2], [1, 2, 0, 1, 2]])
    sampler = BPRSampler(pairs, 3, 3)
    with pytest.raises(DatasetError, match="user 2 has interacted with all 3 items"):
        list(sampler.epoch(torch.Generator().manual_seed(0)))


def random_pairs(seed: int, n_users: int = 50, n_items: int = 40):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=int(rng.integers(1, 10)), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return torch.tensor([users, items]), n_users, n_items


def test_deterministic_per_seed():
    pairs, n_users, n_items = random_pairs(0)
    sampler = BPRSampler(pairs, n_users, n_items, batch_size=32)
    _, first = epoch_triples(sampler, 123)
    _, again = epoch_triples(sampler, 123)
    _, other = epoch_triples(sampler, 124)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[2], other[2])


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_shards_disjoint_covering_and_in_step(world_size):
    pairs, n_users, n_items = random_pairs(1)
    n = pairs.size(1)
    keys, lengths = [], set()
    for rank in range(world_size):
        sampler = BPRSampler(pairs, n_users, n_items, batch_size=16, rank=rank, world_size=world_size)
        batches, (users, pos, neg) = epoch_triples(sampler, seed=9)
        lengths.add(len(batches))
        assert len(batches) == len(sampler)
        assert not bool(sampler.is_train_item(users, neg).any())
        keys.append(set((users * n_items + pos).tolist()))
        assert len(keys[-1]) == users.numel() == sampler.shard_size()
    assert len(lengths) == 1  # every rank runs the same number of batches
    assert sum(len(k) for k in keys) == n
    assert set().union(*keys) == set((pairs[0] * n_items + pairs[1]).tolist())


def test_from_csr_and_bad_arguments():
    pairs, n_users, n_items = random_pairs(2)
    indptr = torch.zeros(n_users + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(pairs[0], minlength=n_users), 0)
    sampler = BPRSampler.from_csr(indptr, pairs[1], n_items, batch_size=8)
    assert torch.equal(sampler.users, pairs[0]) and sampler.n_positives == pairs.size(1)
    assert "positives=" in repr(sampler)
    with pytest.raises(CikgError, match="rank"):
        BPRSampler(pairs, n_users, n_items, rank=2, world_size=2)
    with pytest.raises(CikgError, match="items in 0"):
        BPRSampler(pairs, n_users, 3)
    with pytest.raises(CikgError, match="LongTensor"):
        BPRSampler(pairs.float(), n_users, n_items)
