"""KGIN: shapes, the KG with inverses, aggregation against dense matrices, one layer by hand, the distance
correlation by hand and against its definition, node dropout, training on synthetic data, config errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from model_helpers import short_synthetic_run, views_of

from cikg.data import Dataset, synthetic
from cikg.errors import ConfigError, GraphError
from cikg.models import KGIN, MODEL_CONFIGS, BPRBatch, KGINConfig
from cikg.models.kgin import (
    build,
    distance_correlation,
    group_mean_matrix,
    grouped_relational_aggregation,
    independence_loss,
    intent_aggregation,
    kgin_graph,
    normalize_rows,
    relational_aggregation,
)
from cikg.models.propagation import SparseMatrix
from cikg.train import run_config_from_dict


@pytest.fixture(scope="module")
def data():
    return synthetic(400, 120)


@pytest.fixture(scope="module")
def tiny():
    """2 users, 3 items, 1 other entity (id 3), 2 relations: item 0 -r0-> 3, item 1 -r0-> 3, item 2 -r1-> item 1;
    user 0 has items 0 and 1, user 1 has item 2."""
    return Dataset(name="tiny", n_users=2, n_items=3, n_entities=4, n_relations=2,
                   train=torch.tensor([[0, 0, 1], [0, 1, 2]]), test=torch.tensor([[1], [0]]),
                   kg=torch.tensor([[0, 1, 2], [0, 0, 1], [3, 3, 1]]))


def batch_of(dataset, size: int = 64, seed: int = 0) -> BPRBatch:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(dataset.train.size(1), (size,), generator=g)
    return BPRBatch(dataset.train[0, idx], dataset.train[1, idx], torch.randint(dataset.n_items, (size,), generator=g))


def naive_dcor(a: torch.Tensor, b: torch.Tensor) -> float:
    """Distance correlation from its definition, one element at a time (float64)."""
    n = len(a)

    def centred(x):
        d = [[abs(float(x[j]) - float(x[k])) for k in range(n)] for j in range(n)]
        row = [sum(r) / n for r in d]
        grand = sum(row) / n
        return [[d[j][k] - row[j] - row[k] + grand for k in range(n)] for j in range(n)]

    A, B = centred(a), centred(b)
    dcov2 = lambda X, Y: sum(X[j][k] * Y[j][k] for j in range(n) for k in range(n)) / n ** 2  # noqa: E731
    return math.sqrt(dcov2(A, B)) / math.sqrt(math.sqrt(dcov2(A, A) * dcov2(B, B)))


# ---------------------------------------------------------------------------------------------- structure
def test_kg_holds_each_triple_and_its_inverse(tiny):
    kg, n_relations, interactions = kgin_graph(views_of(tiny))
    assert n_relations == 4
    assert {tuple(t) for t in kg.t().tolist()} == {(0, 0, 3), (1, 0, 3), (2, 1, 1),  # KG
                                                   (3, 2, 0), (3, 2, 1), (1, 3, 2)}  # inverses (r + R)
    assert kg.size(1) == 6
    assert sorted(map(tuple, interactions.t().tolist())) == [(0, 0), (0, 1), (1, 2)]


def test_shapes_terms_registration_and_scores_are_dot_products(data):
    assert MODEL_CONFIGS["kgin"] is KGINConfig
    model = MODEL_CONFIGS["kgin"]().build(views_of(data))
    assert isinstance(model, KGIN) and model.n_relations == 2 * data.n_relations
    assert model.n_triples == 2 * data.kg.size(1)  # synthetic triples are unique
    user_emb, item_emb = model.embed()
    assert user_emb.shape == (400, 64) and item_emb.shape == (120, 64)
    assert model.intents().shape == (4, 64)
    users = torch.tensor([0, 5, 7, 399])
    assert torch.allclose(model.score(users), user_emb[users] @ item_emb.t(), atol=1e-6)
    nodes = model.node_embeddings()
    assert set(nodes) == {"user", "item", "entity"} and nodes["entity"].shape == (data.n_kg_entities, 64)
    assert torch.equal(nodes["item"], item_emb.detach())
    top = model.recommend(torch.arange(4), k=20, exclude=data.csr("train"))
    assert top.shape == (4, 20)
    model.train()
    model.on_epoch_start(0, torch.Generator().manual_seed(0))
    total, terms = model.loss(batch_of(data))
    assert set(terms) == {"bpr", "l2", "independence"} and all(torch.isfinite(v) for v in terms.values())
    c = model.config
    expected = terms["bpr"] + c.l2 * terms["l2"] + c.sim_regularity * terms["independence"]
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-6)
    total.backward()
    for p in (model.embedding, model.relation_embedding, model.intent_logits):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert "intents=4" in repr(model) and "independence=distance/intents" in repr(model)


# ---------------------------------------------------------------------------------------------- two paths
def test_relational_aggregation_equals_dense_matrices(tiny, data):
    for dataset in (tiny, data):
        kg, n_relations, _ = kgin_graph(views_of(dataset))
        n = dataset.n_entities
        torch.manual_seed(0)
        entity, relation = torch.randn(n, 5, dtype=torch.float64), torch.randn(n_relations, 5, dtype=torch.float64)
        got = relational_aggregation(entity, relation, kg[0], kg[1], kg[2])
        adjacency = torch.zeros(n_relations, n, n, dtype=torch.float64)
        adjacency[kg[1], kg[0], kg[2]] = 1.0  # A_r[h, t]
        total = sum(adjacency[r] @ (entity * relation[r]) for r in range(n_relations))
        degree = adjacency.sum((0, 2)).clamp_min(1.0)
        assert torch.allclose(got, total / degree.unsqueeze(1), atol=1e-12)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_grouped_aggregation_agrees_with_the_per_edge_form_in_values_and_gradients(tiny, data, rate):
    for dataset in (tiny, data):
        model = build(views_of(dataset), KGINConfig(dim=6))
        s = model.sample_structure(rate, torch.Generator().manual_seed(2))
        n = dataset.n_entities
        torch.manual_seed(0)
        entity = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
        relation = torch.randn(model.n_relations, 6, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(n, 6, dtype=torch.float64)
        group_mean = group_mean_matrix(s.heads, s.tails, s.groups, model.group_heads.numel(), n, torch.float64)
        grouped = grouped_relational_aggregation(entity, relation, group_mean, model.group_heads,
                                                 model.group_relations)
        grads = torch.autograd.grad((grouped * weight).sum(), (entity, relation))
        per_edge = relational_aggregation(entity, relation, s.heads, s.relations, s.tails)
        expected = torch.autograd.grad((per_edge * weight).sum(), (entity, relation))
        assert torch.allclose(grouped, per_edge, atol=1e-12)
        for got, want in zip(grads, expected):
            assert torch.allclose(got, want, atol=1e-12), (got - want).abs().max()
    assert model.group_heads.numel() < model.n_triples  # groups share a head and a relation


def test_each_group_is_one_head_and_one_relation(data):
    model = build(views_of(data))
    assert torch.equal(model.group_heads[model.kg_groups], model.kg_heads)
    assert torch.equal(model.group_relations[model.kg_groups], model.kg_relations)
    keys = model.group_heads * model.n_relations + model.group_relations
    assert torch.unique(keys).numel() == keys.numel()


def test_sparse_matrix_products_equal_dense_ones_with_gradients():
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.tensor([2, 0, 2, 1, 4]), torch.tensor([1, 3, 0, 1, 2])
    values = torch.rand(5, generator=g, dtype=torch.float64)
    matrix = SparseMatrix(rows, cols, values, 5, 4)
    dense = torch.zeros(5, 4, dtype=torch.float64)
    dense[rows, cols] = values
    x = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = matrix @ x
    assert y.shape == (5, 3) and torch.allclose(y, dense @ x)
    (grad,) = torch.autograd.grad(y.pow(2).sum(), x)
    assert torch.allclose(grad, dense.t() @ (2 * (dense @ x)))
    with torch.no_grad():
        assert torch.allclose(matrix @ x, dense @ x)
    assert torch.allclose(matrix @ x.detach().float(), (dense @ x).float())  # values follow x's dtype
    with pytest.raises(ValueError, match=r"\[5, 4\] sparse matrix by \[3, 3\]"):
        matrix @ torch.zeros(3, 3)


def test_user_aggregation_equals_dense_mean_matrix(data):
    model = build(views_of(data), KGINConfig(dim=8, node_dropout=0.0, message_dropout=0.0))
    s = model.full_structure()
    torch.manual_seed(1)
    user, item, intents = torch.randn(400, 8), torch.randn(120, 8), torch.randn(4, 8)
    interaction_mean = SparseMatrix(s.users, s.items, s.weights, 400, 120)
    got = intent_aggregation(user, item, intents, interaction_mean)
    interactions = torch.zeros(400, 120)
    interactions[data.train[0], data.train[1]] = 1.0
    mean = (interactions / interactions.sum(1, keepdim=True).clamp_min(1.0)) @ item
    beta = torch.exp(user @ intents.t())
    beta = beta / beta.sum(1, keepdim=True)
    expected = mean * sum(beta[:, p: p + 1] * intents[p] for p in range(4))
    assert torch.allclose(got, expected, atol=1e-5)
    residual = intent_aggregation(user, item, intents, interaction_mean, residual=True)
    assert torch.allclose(residual, expected + mean, atol=1e-5)


def test_one_layer_on_a_tiny_graph_by_hand(tiny):
    model = build(views_of(tiny), KGINConfig(dim=2, layers=1, n_intents=2, node_dropout=0.0,
                                                 message_dropout=0.0))
    with torch.no_grad():
        # users u0, u1 | items 0, 1, 2 | entity 3
        model.embedding.copy_(torch.tensor([[1., 0.], [0., 1.], [1., 0.], [0., 1.], [1., 1.], [2., -1.]]))
        model.relation_embedding.copy_(torch.tensor([[1., 2.], [0., 1.], [2., 0.], [1., 1.]]))  # r0, r1, r0^-1, r1^-1
        model.intent_logits.copy_(torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4]])))
    e_p = [(0.875, 1.375), (1.1, 0.8)]  # 0.5 r0 + 0.25 r1 + 0.125 r2 + 0.125 r3; 0.1 r0 + 0.2 r1 + 0.3 r2 + 0.4 r3
    assert torch.allclose(model.intents(), torch.tensor(e_p), atol=1e-6)
    # entities: item 0 <- (r0, e3) = [2,-2]; item 1 <- mean((r0, e3), (r1^-1, item 2)) = mean([2,-2], [1,1]);
    # item 2 <- (r1, item 1) = [0, 1]; e3 <- mean((r0^-1, item 0), (r0^-1, item 1)) = mean([2, 0], [0, 0])
    layer_entities = [(2.0, -2.0), (1.5, -0.5), (0.0, 1.0), (1.0, 0.0)]

    def user_layer(user, mean):
        logits = [user[0] * p[0] + user[1] * p[1] for p in e_p]
        z = sum(math.exp(x) for x in logits)
        beta = [math.exp(x) / z for x in logits]
        mix = [sum(b * p[k] for b, p in zip(beta, e_p)) for k in range(2)]
        return (mix[0] * mean[0], mix[1] * mean[1])

    layer_users = [user_layer((1.0, 0.0), (0.5, 0.5)), user_layer((0.0, 1.0), (1.0, 1.0))]

    def unit(v):
        norm = math.hypot(*v)
        return (v[0] / norm, v[1] / norm)

    ego = model.embedding.detach()
    expected_users = torch.stack([ego[u] + torch.tensor(unit(v)) for u, v in enumerate(layer_users)])
    expected_entities = torch.stack([ego[2 + e] + torch.tensor(unit(v)) for e, v in enumerate(layer_entities)])
    users, entities = model.propagate()
    assert torch.allclose(users, expected_users, atol=1e-6)
    assert torch.allclose(entities, expected_entities, atol=1e-6)
    assert torch.allclose(model.score(torch.tensor([0, 1])), expected_users @ expected_entities[:3].t(), atol=1e-6)


# ---------------------------------------------------------------------------------------------- independence
def test_distance_correlation_by_hand_and_against_its_definition():
    # x = (0, 1, 2), y = (0, 1, 0): dCov^2 = 8/81, dVar^2 = 40/81 and 16/81, so dCor = 10^(-1/4)
    x = torch.tensor([[0., 1., 2.], [0., 1., 0.]], dtype=torch.float64)
    assert float(distance_correlation(x, eps=0.0)[0, 1]) == pytest.approx(10 ** -0.25, rel=1e-9)
    torch.manual_seed(0)
    rows = torch.randn(4, 9, dtype=torch.float64)
    rows[3] = rows[0] ** 2  # dependent, not linearly
    got = distance_correlation(rows, eps=0.0)
    for p in range(4):
        for q in range(4):
            assert float(got[p, q]) == pytest.approx(naive_dcor(rows[p], rows[q]), rel=1e-9)
    assert torch.allclose(got, got.t()) and torch.allclose(got.diagonal(), torch.ones(4, dtype=torch.float64))


def test_independence_of_identical_intents_is_one_and_of_independent_ones_near_zero():
    torch.manual_seed(0)
    same = torch.randn(64).repeat(4, 1)
    assert torch.allclose(distance_correlation(same), torch.ones(4, 4), atol=1e-4)
    assert float(independence_loss(same)) == pytest.approx(6.0, abs=1e-3)  # 4 * 3 / 2 pairs
    affine = torch.stack([same[0], -2 * same[0] + 5])
    assert float(distance_correlation(affine)[0, 1]) == pytest.approx(1.0, abs=1e-4)
    independent = torch.randn(3, 1500, dtype=torch.float64)  # dCor's bias shrinks with the samples
    off = distance_correlation(independent)[torch.triu_indices(3, 3, 1).unbind()]
    assert float(off.max()) < 0.1, off
    # cosine variant: squared cosine, 0 for orthogonal rows, 1 for (anti)parallel ones
    rows = torch.tensor([[1., 0., 0.], [0., 2., 0.], [-3., 0., 0.]])
    assert float(independence_loss(rows, "cosine")) == pytest.approx(1.0, abs=1e-6)
    assert float(independence_loss(rows[:1])) == 0.0
    with pytest.raises(ConfigError, match="independence"):
        independence_loss(rows, "mi")


def test_independence_targets_and_gradients(data):
    views = views_of(data)
    torch.manual_seed(0)
    model = build(views, KGINConfig(dim=16))
    intents_loss = model.independence()
    assert float(intents_loss.detach()) == pytest.approx(float(independence_loss(model.intents().detach())), rel=1e-6)
    intents_loss.backward()
    assert float(model.intent_logits.grad.abs().sum()) > 0 and float(model.relation_embedding.grad.abs().sum()) > 0
    torch.manual_seed(0)
    release = build(views, KGINConfig(dim=16, independence_on="attention", independence="cosine"))
    with torch.no_grad():
        assert float(release.independence()) == pytest.approx(
            float(independence_loss(release.intent_logits, "cosine")), rel=1e-6)
    terms = build(views, KGINConfig(sim_regularity=0.0)).eval().loss(batch_of(data))[1]
    assert float(terms["independence"]) == 0.0


def test_training_on_the_independence_loss_alone_makes_intents_independent(data):
    torch.manual_seed(0)
    model = build(views_of(data), KGINConfig(dim=16))
    optimiser = torch.optim.Adam([model.intent_logits, model.relation_embedding], lr=0.05)
    losses = []
    for _ in range(60):
        loss = model.independence()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[0] > 4.0 and losses[-1] < 0.5 * losses[0], losses  # near-uniform attention at init: alike intents


# ---------------------------------------------------------------------------------------------- dropout
def test_node_dropout_keeps_its_share_and_scoring_uses_the_whole_graph(data):
    torch.manual_seed(0)
    model = build(views_of(data))
    s = model.sample_structure(0.5, torch.Generator().manual_seed(0))
    t = model.n_triples
    assert s.heads.numel() == t - t // 2
    keys = lambda h, r, x: set(((h * 100 + r) * 1000 + x).tolist())  # noqa: E731
    assert keys(s.heads, s.relations, s.tails) <= keys(model.kg_heads, model.kg_relations, model.kg_tails)
    n = model.inter_users.numel()
    assert abs(s.users.numel() - n / 2) < 4 * math.sqrt(n / 4)
    assert torch.allclose(s.weights, 2.0 / torch.bincount(model.inter_users, minlength=400)[s.users].float())
    assert model.sample_structure(0.0).heads is model.kg_heads
    batch = batch_of(data)
    model.train()
    model.on_epoch_start(0, torch.Generator().manual_seed(3))
    first, second = model.loss(batch)[0].detach(), model.loss(batch)[0].detach()
    assert float(first) != float(second)  # redrawn every batch
    scores = model.score(torch.arange(8))
    model.eval()
    assert torch.equal(model.score(torch.arange(8)), scores)  # no dropout in scoring, in either mode
    assert model.loss(batch)[0].item() == model.loss(batch)[0].item()


# ---------------------------------------------------------------------------------------------- training
def test_short_training_on_synthetic_lowers_the_loss_and_beats_random(tmp_path):
    trainer, before, result = short_synthetic_run({"name": "kgin", "dim": 32, "layers": 2}, 0.005, tmp_path / "run")
    bpr = [record["bpr"] for record in trainer.history]
    assert bpr[-1] < 0.8 * bpr[0], bpr
    assert result.valid["recall@20"] > before + 0.05, (before, result.valid)
    assert result.valid["recall@20"] > 2 * 20 / 120, result.valid  # random ranking: about 20 / n_items


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, key", [
    ({"dim": 0}, "dim"), ({"layers": 0}, "layers"), ({"n_intents": 0}, "n_intents"), ({"n_intents": 2.5}, "n_intents"),
    ({"l2": -1e-5}, "l2"), ({"sim_regularity": -1.0}, "sim_regularity"), ({"independence": "mi"}, "independence"),
    ({"independence_on": "relations"}, "independence_on"), ({"node_dropout": 1.0}, "node_dropout"),
    ({"message_dropout": -0.1}, "message_dropout"), ({"user_residual": "yes"}, "user_residual"),
])
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        KGINConfig(**kwargs)
    assert err.value.key == key and key in str(err.value)


def test_a_yaml_config_builds_kgin_and_bad_keys_name_themselves(tmp_path):
    config = run_config_from_dict({"data": {"dataset": "synthetic", "synthetic_users": 50, "synthetic_items": 30},
                                   "model": {"name": "kgin", "n_intents": 2, "independence": "cosine"}})
    assert isinstance(config.model, KGINConfig) and config.model.n_intents == 2
    with pytest.raises(ConfigError, match="sim_regularity"):
        run_config_from_dict({"model": {"name": "kgin", "sim_regularity": -1}})


def test_without_a_kg_or_with_another_dataset_it_refuses(data, tiny):
    no_kg = Dataset(name="no-kg", n_users=data.n_users, n_items=data.n_items, train=data.train, test=data.test)
    with pytest.raises(GraphError, match="no-kg.*has none"):
        build(views_of(no_kg))
    with pytest.raises(GraphError, match="has none.*kg: true"):
        build(views_of(data, include_kg=False))
    assert KGINConfig().build(views_of(tiny)).n_users == tiny.n_users  # the graph alone builds it


def test_state_dict_round_trip_scores_the_same(data, tmp_path):
    views = views_of(data)
    torch.manual_seed(0)
    model = build(views)
    torch.save(model.state_dict(), tmp_path / "kgin.pt")
    torch.manual_seed(1)
    restored = build(views)
    restored.load_state_dict(torch.load(tmp_path / "kgin.pt", weights_only=True))
    users = torch.arange(10)
    assert torch.equal(restored.score(users), model.score(users))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(data):
    model = build(views_of(data).to("cuda"))
    assert model.embedding.is_cuda and model.kg_heads.is_cuda
    model.train()
    model.on_epoch_start(0, torch.Generator(device="cuda").manual_seed(0))
    total, _ = model.loss(batch_of(data).to("cuda"))
    total.backward()
    cpu = build(views_of(data))
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    assert torch.allclose(model.score(torch.arange(5, device="cuda")).cpu(), cpu.score(torch.arange(5)), atol=1e-4)


def test_the_dbbook2014_experiment_config_builds_kgin_on_the_real_kg(dbbook):
    from cikg.train import load_run_config

    config = load_run_config(Path(__file__).resolve().parents[1] / "experiments" / "dbbook2014" / "kgin.yaml", [])
    assert config.model == KGINConfig() and config.train.lr == 1e-4 and config.train.batch_size == 1024
    model = config.model.build(views_of(dbbook))
    assert model.n_relations == 2 * dbbook.n_relations and model.n_entities == dbbook.n_entities
    assert model.n_triples == torch.unique(dbbook.kg, dim=1).size(1) * 2  # each triple and its inverse
    model.train()
    model.on_epoch_start(0, torch.Generator().manual_seed(0))
    total, terms = model.loss(batch_of(dbbook, 256))
    total.backward()
    assert torch.isfinite(total) and float(terms["bpr"]) == pytest.approx(math.log(2), abs=0.05)


def test_normalize_rows_is_f_normalize_but_passes_no_gradient_into_a_zero_row():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], requires_grad=True)
    y = normalize_rows(x)
    assert torch.allclose(y, torch.nn.functional.normalize(x, dim=1))
    y.backward(torch.ones_like(y))
    reference = x.detach().clone().requires_grad_(True)
    torch.nn.functional.normalize(reference, dim=1).backward(torch.ones_like(y))
    assert torch.allclose(x.grad[[0, 2]], reference.grad[[0, 2]])
    assert torch.equal(x.grad[1], torch.zeros(2)) and reference.grad[1].abs().min() == 1e12  # F.normalize: 1/eps


def test_four_layers_on_book_crossing_keep_finite_gradients(bookcrossing):
    """book-crossing's KG leaves thousands of entities as all-zero rows at each layer; chained over four layers
    ``F.normalize`` turned their gradients into inf and the relation embeddings' into NaN (a study's trial)."""
    torch.manual_seed(0)
    model = build(views_of(bookcrossing), KGINConfig(dim=16, layers=4, n_intents=4))
    loss, _ = model.loss(batch_of(bookcrossing, size=1024))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
