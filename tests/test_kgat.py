"""KGAT: shapes, CKG triples, attention, TransR loss and sampling, training on synthetic data, no-KG runs."""
from __future__ import annotations

import math

import pytest
import torch
from model_helpers import views_of

from cikg.data import Dataset, synthetic
from cikg.errors import ConfigError
from cikg.models.base import BPRBatch
from cikg.models.kgat import KGATConfig, KGBatch, build, collaborative_kg_triples
from cikg.models.propagation import SparseMM


@pytest.fixture(scope="module")
def data():
    return synthetic(400, 120)


@pytest.fixture(scope="module")
def tiny():
    """2 users, 2 items, 1 other entity; item 0 -r0-> entity 2, item 1 -r0-> entity 2, item 0 -r1-> item 1."""
    return Dataset(name="tiny", n_users=2, n_items=2, n_entities=3, n_relations=2,
                   train=torch.tensor([[0, 0, 1], [0, 1, 1]]), test=torch.tensor([[1], [0]]),
                   kg=torch.tensor([[0, 1, 0], [0, 0, 1], [2, 2, 1]]))


def _rows_of(csr: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(csr.size(0)), csr.crow_indices().diff())


def _row_sums(csr: torch.Tensor) -> torch.Tensor:
    return torch.zeros(csr.size(0)).index_add_(0, _rows_of(csr), csr.values())


# ---------------------------------------------------------------------------------------------- structure
def test_ckg_triples_hold_kg_inverse_and_interactions(tiny):
    triples, n_relations, uses_kg = collaborative_kg_triples(views_of(tiny))
    assert uses_kg and n_relations == 2 * 2 + 2
    got = {tuple(t) for t in triples.t().tolist()}
    u = 2  # entity e is node 2 + e
    expected = {(u + 0, 0, u + 2), (u + 1, 0, u + 2), (u + 0, 1, u + 1),  # KG
                (u + 2, 2, u + 0), (u + 2, 2, u + 1), (u + 1, 3, u + 0),  # inverse KG
                (0, 4, u + 0), (0, 4, u + 1), (1, 4, u + 1),  # interact
                (u + 0, 5, 0), (u + 1, 5, 0), (u + 1, 5, 1)}  # interacted
    assert got == expected and triples.size(1) == len(expected)


def test_embed_and_score_shapes(data):
    model = build(views_of(data))
    user_emb, item_emb = model.embed()
    assert user_emb.shape == (400, 64 + 64 + 32 + 16) and item_emb.shape == (120, 176)
    assert model.out_dim == 176
    scores = model.score(torch.tensor([0, 5, 7]))
    assert scores.shape == (3, 120) and torch.isfinite(scores).all()
    top = model.recommend(torch.arange(4), k=20, exclude=data.csr("train"))
    assert top.shape == (4, 20)
    assert "aggregator='bi-interaction'" in repr(model) and "relations=12" in repr(model)


def test_layers_after_the_first_are_unit_norm(data):
    model = build(views_of(data)).eval()
    final = model.propagate()
    dims = (64,) + model.config.layer_sizes
    parts = torch.split(final, dims, dim=1)
    assert torch.equal(parts[0], model.node_embedding.detach())
    for part in parts[1:]:
        assert torch.allclose(part.norm(dim=1), torch.ones(part.size(0)), atol=1e-5)


@pytest.mark.parametrize("aggregator", ["gcn", "graphsage"])
def test_other_aggregators(data, aggregator):
    model = build(views_of(data), KGATConfig(aggregator=aggregator, layer_sizes=(32, 16),
                                                 message_dropout=(0.0, 0.0)))
    assert model.bi_linear is None
    assert model.linear[0].in_features == (128 if aggregator == "graphsage" else 64)
    total, terms = model.loss(BPRBatch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])))
    total.backward()
    assert model.embed()[0].shape == (400, 64 + 32 + 16) and model.linear[1].weight.grad is not None


# ---------------------------------------------------------------------------------------------- attention
def test_initial_matrix_is_relationwise_random_walk(tiny):
    model = build(views_of(tiny))
    assert model.on_epoch_start(0) == {}  # the first epoch keeps the original's initial Laplacian
    sums = _row_sums(model.attention_matrix())
    # rows: user0 (interact), user1, item0 (r0, r1, interacted), item1 (r0, inv r1, interacted),
    # entity2 (inv r0)
    assert sums.tolist() == pytest.approx([1, 1, 3, 3, 1])


def test_attention_rows_sum_to_one_and_match_hand_computation(tiny, data):
    model = build(views_of(data))
    logged = model.on_epoch_start(1)
    matrix = model.attention_matrix()
    sums = _row_sums(matrix)
    has_edges = model.head_ptr.diff() > 0
    assert torch.allclose(sums[has_edges], torch.ones(int(has_edges.sum())), atol=1e-5)
    assert torch.all(sums[~has_edges] == 0)
    assert 0 < logged["attention_entropy"] < math.log(model.n_nodes)

    model = build(views_of(tiny))
    model.refresh_attention()
    emb, rel_emb, proj = model.node_embedding.detach(), model.relation_embedding.detach(), \
        model.relation_projection.detach()
    head = 2  # item 0: (r0 -> entity 2), (r1 -> item 1), (interacted -> user 0)
    triples = [(0, 4), (1, 3), (5, 0)]
    scores = torch.stack([(proj[r].t() @ emb[t]) @ torch.tanh(proj[r].t() @ emb[head] + rel_emb[r])
                          for r, t in triples])
    expected = torch.softmax(scores, 0)
    dense = model.attention_matrix().to_dense()
    assert torch.allclose(dense[head, [4, 3, 0]], expected, atol=1e-6)
    assert torch.allclose(model.attention_matrix(transpose=True).to_dense(), dense.t())


def test_transposed_spmm_gradient_is_the_dense_one():
    torch.manual_seed(0)
    dense = torch.rand(6, 6) * (torch.rand(6, 6) < 0.5)
    x = torch.randn(6, 3, requires_grad=True)
    out = SparseMM.apply(dense.to_sparse_csr(), dense.t().to_sparse_csr(), x)
    out.pow(2).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    (dense @ x_ref).pow(2).sum().backward()
    assert torch.allclose(out, dense @ x.detach(), atol=1e-6)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)


# ---------------------------------------------------------------------------------------------- TransR
def test_transr_loss_matches_hand_computation(tiny):
    config = KGATConfig(dim=4, relation_dim=3, layer_sizes=(2,), message_dropout=(0.0,), kg_l2=0.5)
    model = build(views_of(tiny), config)
    batch = KGBatch(heads=torch.tensor([2, 3]), relations=torch.tensor([0, 5]), tails=torch.tensor([4, 1]),
                    neg_tails=torch.tensor([3, 2]))
    total, terms = model.kg_loss(batch)
    emb, rel_emb, proj = (p.detach().double() for p in
                          (model.node_embedding, model.relation_embedding, model.relation_projection))
    ranking, squares = 0.0, 0.0
    columns = (x.tolist() for x in (batch.heads, batch.relations, batch.tails, batch.neg_tails))
    for h, r, t, n in zip(*columns, strict=True):
        wh, wt, wn, er = proj[r].t() @ emb[h], proj[r].t() @ emb[t], proj[r].t() @ emb[n], rel_emb[r]
        g_pos = float(((wh + er - wt) ** 2).sum())
        g_neg = float(((wh + er - wn) ** 2).sum())
        ranking += -math.log(1.0 / (1.0 + math.exp(-(g_neg - g_pos))))
        squares += float(sum((v ** 2).sum() for v in (wh, er, wt, wn)))
    assert terms["transr"].item() == pytest.approx(ranking / 2, rel=1e-5)
    assert terms["kg_l2"].item() == pytest.approx(0.5 * squares / (2 * 2), rel=1e-5)
    assert total.item() == pytest.approx(ranking / 2 + 0.5 * squares / 4, rel=1e-5)


def test_negative_tails_are_entities_and_not_true_triples(data):
    model = build(views_of(data), KGATConfig(kg_batch_size=1000))
    generator = torch.Generator().manual_seed(0)
    batches = list(model.kg_batches(generator, epoch=0))
    assert len(batches) == model.n_triples // 1000 + 1
    batch = batches[0]
    assert len(batch) == 1000
    assert bool(((batch.neg_tails >= 400) & (batch.neg_tails < 400 + data.n_entities)).all())
    true = {tuple(t) for t in torch.stack([model.heads, model.relations, model.tails]).t().tolist()}
    for b in batches:
        heads, relations = b.heads.tolist(), b.relations.tolist()
        assert all(t in true for t in zip(heads, relations, b.tails.tolist(), strict=True))
        assert not any(t in true for t in zip(heads, relations, b.neg_tails.tolist(), strict=True))
    # every kind of triple is sampled: KG, inverse KG, interact, interacted
    assert set(torch.cat([b.relations for b in batches]).tolist()) == set(range(12))
    again = next(model.kg_batches(torch.Generator().manual_seed(0)))
    assert torch.equal(again.neg_tails, batch.neg_tails) and torch.equal(again.heads, batch.heads)


def test_auxiliary_task_trains_transr(data):
    torch.manual_seed(0)
    model = build(views_of(data), KGATConfig(kg_lr=0.01, kg_batch_size=512))
    (task,) = model.auxiliary_tasks()
    assert task.name == "transr" and task.lr == 0.01
    assert {id(p) for p in task.parameters} == {id(model.node_embedding), id(model.relation_embedding),
                                                 id(model.relation_projection)}
    optimiser = torch.optim.Adam(task.parameters, lr=task.lr)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for epoch in range(3):
        for batch in task.batches(generator, epoch):
            total, terms = task.loss(batch)
            optimiser.zero_grad()
            total.backward()
            optimiser.step()
            losses.append(terms["transr"].item())
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0]


# ---------------------------------------------------------------------------------------------- training
def _recall_at_20(top: torch.Tensor, dataset) -> float:
    test = torch.zeros(dataset.n_users, dataset.n_items, dtype=torch.bool)
    test[dataset.test[0], dataset.test[1]] = True
    hits = test.gather(1, top).sum(1).float()
    n_test = test.sum(1)
    return float((hits[n_test > 0] / n_test[n_test > 0]).mean())


def _train(model, dataset, steps=40, lr=0.01, batch_size=1024, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    (task,) = model.auxiliary_tasks()
    kg_optimiser = torch.optim.Adam(task.parameters, lr=lr)
    users, items = dataset.train
    losses = []
    model.train()
    for step in range(steps):
        if step % 10 == 0:
            model.on_epoch_start(step // 10, generator)
        pick = torch.randint(users.numel(), (batch_size,), generator=generator)
        neg = torch.randint(dataset.n_items, (batch_size,), generator=generator)
        total, terms = model.loss(BPRBatch(users[pick], items[pick], neg))
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(terms["bpr"].item())
        kg_total, _ = task.loss(model.sample_kg_batch(batch_size, generator))
        kg_optimiser.zero_grad()
        kg_total.backward()
        kg_optimiser.step()
    return losses


def test_training_lowers_bpr_and_beats_popularity(data):
    torch.manual_seed(0)
    model = build(views_of(data))
    losses = _train(model, data)
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5
    model.eval()
    indptr, indices = data.csr("train")
    recall = _recall_at_20(model.recommend(torch.arange(data.n_users), 20, exclude=(indptr, indices)), data)
    popularity = torch.bincount(data.train[1], minlength=data.n_items).float().repeat(data.n_users, 1)
    popularity[torch.repeat_interleave(torch.arange(data.n_users), indptr.diff()), indices] = -1.0
    pop_recall = _recall_at_20(popularity.topk(20).indices, data)
    assert recall > pop_recall + 0.1, (recall, pop_recall)


def test_without_kg_degrades_to_attentive_cf(data):
    no_kg = Dataset(name="no-kg", n_users=data.n_users, n_items=data.n_items, train=data.train,
                    valid=data.valid, test=data.test)
    assert not no_kg.has_kg
    torch.manual_seed(0)
    model = build(views_of(no_kg))
    assert model.n_relations == 2 and model.n_entities == data.n_items
    assert set(model.relations.tolist()) == {0, 1}
    assert model.n_triples == 2 * data.train.size(1)
    losses = _train(model, no_kg, steps=20)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    batch = model.sample_kg_batch(256, torch.Generator().manual_seed(0))
    assert bool(((batch.neg_tails >= data.n_users) & (batch.neg_tails < data.n_users + data.n_items)).all())
    assert model.embed()[1].shape == (data.n_items, 176)

    # a KG dataset whose graph was built without the KG behaves the same way
    model = build(views_of(data, include_kg=False))
    assert model.n_relations == 2 and model.n_nodes == data.n_users + data.n_items


def test_state_dict_round_trip_keeps_the_attention(data, tmp_path):
    views = views_of(data)
    torch.manual_seed(0)
    model = build(views)
    model.on_epoch_start(1)
    torch.save(model.state_dict(), tmp_path / "kgat.pt")
    torch.manual_seed(1)
    restored = build(views)
    assert not torch.equal(restored.attention, model.attention)
    restored.load_state_dict(torch.load(tmp_path / "kgat.pt", weights_only=True))
    users = torch.arange(10)
    assert torch.equal(restored.eval().score(users), model.eval().score(users))


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, key", [
    ({"dim": 0}, "dim"), ({"relation_dim": -1}, "relation_dim"), ({"layer_sizes": ()}, "layer_sizes"),
    ({"message_dropout": (0.1, 0.1)}, "message_dropout"),
    ({"message_dropout": (0.1, 1.0, 0.1)}, "message_dropout"),
    ({"l2": -1e-3}, "l2"), ({"kg_lr": 0.0}, "kg_lr"), ({"kg_batch_size": 0}, "kg_batch_size"),
    ({"aggregator": "mean"}, "aggregator"),
])
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        KGATConfig(**kwargs)
    assert err.value.key == key and key in str(err.value)


def test_config_builds_the_model_and_is_registered(data):
    from cikg.models import MODEL_CONFIGS

    assert MODEL_CONFIGS["kgat"] is KGATConfig
    config = KGATConfig(layer_sizes=[32], message_dropout=[0.0])
    assert config.layer_sizes == (32,)
    model = config.build(views_of(data))
    assert model.config is config and model.out_dim == 96
    assert torch.equal(config.build(views_of(data)).triples.keys, model.triples.keys)  # the graph alone decides


def test_the_graph_alone_builds_kgat_with_the_dataset_counts(data):
    model = build(views_of(data))
    assert (model.n_users, model.n_items, model.n_entities) == (data.n_users, data.n_items, data.n_entities)
    assert model.n_relations == 2 * data.n_relations + 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(data):
    model = build(views_of(data).to("cuda"))
    assert model.node_embedding.is_cuda and model.heads.is_cuda
    model.on_epoch_start(1)
    batch = BPRBatch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])).to("cuda")
    total, _ = model.loss(batch)
    total.backward()
    kg_total, _ = model.kg_loss(model.sample_kg_batch(64, torch.Generator().manual_seed(0)))
    kg_total.backward()
    assert model.score(torch.tensor([0], device="cuda")).is_cuda
