"""SimGCL / SGL-ED: shapes, the views against the clean propagation, the InfoNCE by hand, noise norms, training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import batch_of, short_synthetic_run

from cikg.errors import ConfigError
from cikg.graph import build_cikg, build_views
from cikg.models import MODEL_CONFIGS, LightGCN, LightGCNConfig, SimGCL, SimGCLConfig


@pytest.fixture(scope="module")
def views(small_synthetic):
    return build_views(build_cikg(small_synthetic), views=[])




def naive_info_nce(first: torch.Tensor, second: torch.Tensor, tau: float) -> torch.Tensor:
    """-mean_b log(exp(cos(a_b, c_b)/tau) / sum_m exp(cos(a_b, c_m)/tau)), one anchor at a time."""
    terms = []
    for b in range(first.size(0)):
        sims = torch.stack([F.cosine_similarity(first[b], second[m], dim=0) for m in range(second.size(0))]) / tau
        terms.append(-(sims[b] - torch.log(torch.exp(sims).sum())))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("augmentation", ["noise", "edge_dropout"])
def test_simgcl_shapes_terms_and_registration(small_synthetic, views, augmentation):
    model = MODEL_CONFIGS["simgcl"](augmentation=augmentation).build(views)
    assert isinstance(model, SimGCL)
    users, items = model.embed()
    assert users.shape == (small_synthetic.n_users, 64) and items.shape == (small_synthetic.n_items, 64)
    assert model.score(torch.arange(5)).shape == (5, small_synthetic.n_items)
    model.train()
    model.on_epoch_start(1, torch.Generator().manual_seed(0))
    first, second = model.contrastive_views()
    assert first.shape == second.shape == (views.n_nodes, 64) and not torch.allclose(first, second)
    total, terms = model.loss(batch_of(small_synthetic))
    assert set(terms) == {"bpr", "cl", "l2"} and all(torch.isfinite(v) for v in terms.values())
    expected = terms["bpr"] + model.config.l2 * terms["l2"] + model.config.cl_weight * terms["cl"]
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    total.backward()
    assert model.embedding.weight.grad is not None and repr(model).startswith("SimGCL(augmentation=" + augmentation)


def test_eps_zero_views_equal_clean_propagation_and_cl_equals_hand_infonce(small_synthetic, views):
    torch.manual_seed(0)
    model = SimGCL(views, SimGCLConfig(eps=0.0, temperature=0.3))
    model.train()
    model.on_epoch_start(1, torch.Generator().manual_seed(0))
    clean = model.propagate()
    first, second = model.contrastive_views()
    assert torch.allclose(first, clean, atol=1e-6) and torch.allclose(second, clean, atol=1e-6)
    # the clean propagation leaves layer 0 out: the mean of A^1..A^3 E
    ego, adj = model.embedding.weight, model.full_adjacency().to_dense()
    by_hand = sum(torch.linalg.matrix_power(adj, k) @ ego for k in (1, 2, 3)) / 3
    assert torch.allclose(clean, by_hand, atol=1e-5)
    users = torch.tensor([4, 1, 4, 7, 1])
    items = torch.tensor([3, 3, 0])
    cl = model.contrastive_loss(users, items)
    u, i = torch.tensor([1, 4, 7]), torch.tensor([0, 3]) + model.item_offset
    expected = naive_info_nce(clean[u], clean[u], 0.3) + naive_info_nce(clean[i], clean[i], 0.3)
    assert cl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_include_ego_gives_lightgcn_embeddings(small_synthetic, views):
    torch.manual_seed(3)
    simgcl = SimGCL(views, SimGCLConfig(include_ego=True))
    torch.manual_seed(3)
    lightgcn = LightGCN(views, LightGCNConfig())
    for a, b in zip(simgcl.embed(), lightgcn.embed()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("max_logits", [None, 7])
def test_blocked_and_dense_cl_agree_with_naive(small_synthetic, views, max_logits):
    torch.manual_seed(1)
    model = SimGCL(views, SimGCLConfig(cl_max_logits=max_logits))
    model.train()
    users, items = torch.arange(6), torch.arange(5)
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731 - the same noise for both paths
    model.on_epoch_start(1, gen())
    cl = model.contrastive_loss(users, items)
    model.on_epoch_start(1, gen())
    first, second = model.contrastive_views()
    i = items + model.item_offset
    expected = naive_info_nce(first[users], second[users], 0.2) + naive_info_nce(first[i], second[i], 0.2)
    assert cl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_noise_has_norm_eps_per_row_at_every_layer(small_synthetic, views):
    torch.manual_seed(2)
    model = SimGCL(views, SimGCLConfig(eps=0.25, layers=2))
    model.on_epoch_start(1, torch.Generator().manual_seed(0))
    recorded = []
    from cikg.models import propagation

    original = propagation.simgcl_noise

    def recording_noise(eps, generator=None):
        perturb = original(eps, generator)

        def hook(x, layer):
            out = perturb(x, layer)
            recorded.append((layer, x, out))
            return out
        return hook

    import cikg.models.simgcl as module
    module.simgcl_noise, saved = recording_noise, module.simgcl_noise
    try:
        model.contrastive_views()
    finally:
        module.simgcl_noise = saved
    assert sorted({layer for layer, _, _ in recorded}) == [1, 2] and len(recorded) == 4  # 2 views × 2 layers
    for _, x, out in recorded:
        rows = (x != 0).all(dim=1)  # sign(0) = 0 shortens a row's noise
        assert rows.sum() > 0
        norms = (out - x)[rows].norm(dim=1)
        assert torch.allclose(norms, torch.full_like(norms, 0.25), atol=1e-5)
        assert bool((torch.sign(out - x)[x != 0] == torch.sign(x)[x != 0]).all())


def test_edge_dropout_views_are_drawn_once_per_epoch(small_synthetic, views):
    model = SimGCL(views, SimGCLConfig(augmentation="edge_dropout", view_edge_dropout=0.3))
    model.train()
    model.on_epoch_start(1, torch.Generator().manual_seed(0))
    first_adj, second_adj = model._view_adjs
    full = model.full_adjacency()._nnz()
    assert first_adj._nnz() < full and second_adj._nnz() < full
    assert not torch.equal(first_adj.col_indices(), second_adj.col_indices()) or \
        not torch.equal(first_adj.crow_indices(), second_adj.crow_indices())
    model.loss(batch_of(small_synthetic))
    assert model._view_adjs[0] is first_adj
    model.on_epoch_start(2, torch.Generator().manual_seed(1))
    assert model._view_adjs[0] is not first_adj


@pytest.mark.parametrize("kwargs, key", [
    ({"temperature": 0.0}, "temperature"), ({"eps": -0.1}, "eps"), ({"augmentation": "mixup"}, "augmentation"),
    ({"view_edge_dropout": 1.0}, "view_edge_dropout"), ({"layers": 0}, "layers"), ({"cl_weight": -1}, "cl_weight"),
])
def test_simgcl_config_fails_early_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        SimGCLConfig(**kwargs)
    assert err.value.key == key


def test_short_training_on_synthetic_improves_valid_recall(tmp_path):
    trainer, before, result = short_synthetic_run({"name": "simgcl", "dim": 32, "layers": 2}, 0.01, tmp_path / "run")
    cl = [record["cl"] for record in trainer.history]
    assert result.valid["recall@20"] > before + 0.02, (before, result.valid)
    assert cl[-1] < cl[0], cl  # the views align over training
