"""Short training runs on the synthetic dataset: the BPR loss falls and the models beat popularity."""
from __future__ import annotations

import pytest
import torch

from cikg.data import synthetic
from cikg.graph import build_cikg, build_views
from cikg.models import BPRBatch, CIKGRec, CIKGRecConfig, LightGCN, LightGCNConfig

STEPS, BATCH, K = 30, 512, 20


@pytest.fixture(scope="module")
def data():
    dataset = synthetic(600, 200, seed=1)
    return dataset, build_views(build_cikg(dataset), views=[])


def recall_at_k(dataset, scores: torch.Tensor, k: int = K) -> float:
    """Mean Recall@k over test users, train items masked (a small dense check, fine at 600 × 200)."""
    indptr, items = dataset.csr("train")
    rows = torch.repeat_interleave(torch.arange(dataset.n_users), indptr.diff())
    scores = scores.clone()
    scores[rows, items] = float("-inf")
    relevant = torch.zeros(dataset.n_users, dataset.n_items, dtype=torch.bool)
    relevant[dataset.test[0], dataset.test[1]] = True
    hits = relevant.gather(1, scores.topk(k, dim=1).indices).sum(1).float()
    n_relevant = relevant.sum(1).float()
    has = n_relevant > 0
    return float((hits[has] / n_relevant[has].clamp_max(k)).mean())


def train_briefly(model, dataset, lr: float = 0.05):
    """A plain Adam loop over uniformly sampled BPR triples; returns the BPR loss of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    model.on_epoch_start(0, generator)
    losses = []
    for _ in range(STEPS):
        idx = torch.randint(dataset.train.size(1), (BATCH,), generator=generator)
        batch = BPRBatch(dataset.train[0, idx], dataset.train[1, idx],
                         torch.randint(dataset.n_items, (BATCH,), generator=generator))
        total, terms = model.loss(batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(terms["bpr"]))
    model.eval()
    return losses


@pytest.mark.parametrize("name, make", [
    ("lightgcn", lambda d, v: LightGCN(v, LightGCNConfig())),
    ("cikgrec", lambda d, v: CIKGRec(v, CIKGRecConfig(l2=1e-4))),
])
def test_short_training_lowers_bpr_and_beats_popularity(data, name, make):
    dataset, views = data
    torch.manual_seed(0)
    model = make(dataset, views)
    losses = train_briefly(model, dataset)
    assert losses[0] == pytest.approx(0.693, abs=0.01)  # log 2 at initialisation
    assert sum(losses[-5:]) / 5 < 0.45, losses
    popularity = torch.bincount(dataset.train[1], minlength=dataset.n_items).float()
    pop_recall = recall_at_k(dataset, popularity.expand(dataset.n_users, -1))
    with torch.no_grad():
        users, items = model.embed()
    model_recall = recall_at_k(dataset, users @ items.t())
    assert model_recall > 1.5 * pop_recall, (name, model_recall, pop_recall)
