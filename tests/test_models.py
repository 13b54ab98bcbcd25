"""Models: propagation (custom SpMM, LGPropagation vs PyG, edge dropout), configs, loss pieces, ablations."""
from __future__ import annotations

import math

import pytest
import torch
from model_helpers import batch_of
from torch_geometric.nn import LGConv
from torch_geometric.utils import add_self_loops, to_undirected

from cikg.errors import ConfigError
from cikg.graph import View, build_cikg, build_views, normalized_adjacency
from cikg.models import (
    BPRMF,
    MODEL_CONFIGS,
    BPRMFConfig,
    CIKGRec,
    CIKGRecConfig,
    EdgeDropout,
    LGPropagation,
    LightGCN,
    LightGCNConfig,
    info_nce,
    mask_rate_schedule,
    sce_loss,
    simgcl_noise,
    spmm,
)
from cikg.models.cikgrec import INTERACTED, TransETriples


def random_graph(n_nodes: int = 12, n_edges: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(n_nodes, (2, n_edges), generator=g)
    edges = edges[:, edges[0] != edges[1]]
    return to_undirected(edges, num_nodes=n_nodes)


@pytest.fixture(scope="module")
def views(small_synthetic):
    return build_views(build_cikg(small_synthetic), views=[])




# ------------------------------------------------------------------------------------ propagation
def test_symmetric_spmm_forward_and_backward_equal_dense_autograd():
    edges = random_graph()
    adj = normalized_adjacency(edges, 12, self_loops=True, edge_weight_dtype=torch.float64)
    dense = adj.to_dense()
    assert torch.allclose(dense, dense.t())
    x = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(12, 5, dtype=torch.float64)
    (spmm(adj, x) * upstream).sum().backward()
    grad_custom = x.grad.clone()
    x.grad = None
    x_dense = x.detach().clone().requires_grad_(True)
    out_dense = dense @ x_dense
    (out_dense * upstream).sum().backward()
    assert torch.allclose(spmm(adj, x.detach()), out_dense.detach())
    assert torch.allclose(grad_custom, x_dense.grad)
    # and torch's own numerical check through the autograd Function
    assert torch.autograd.gradcheck(lambda t: spmm(adj, t), (torch.randn(12, 3, dtype=torch.float64,
                                                                             requires_grad=True),))


@pytest.mark.parametrize("self_loops", [False, True])
def test_lgpropagation_equals_pyg_lgconv_mean_of_layers(self_loops):
    n, layers = 15, 3
    edges = random_graph(n, 40, seed=1)
    x = torch.randn(n, 8)
    ours = LGPropagation(layers)(x, normalized_adjacency(edges, n, self_loops))
    conv = LGConv(normalize=True)
    pyg_edges = add_self_loops(edges, num_nodes=n)[0] if self_loops else edges
    h, outs = x, [x]
    for _ in range(layers):
        h = conv(h, pyg_edges)
        outs.append(h)
    assert torch.allclose(ours, torch.stack(outs).mean(0), atol=1e-6)


def test_lgpropagation_layer_weights_dropout_and_perturb_hook():
    edges = random_graph()
    adj = normalized_adjacency(edges, 12)
    x = torch.randn(12, 4)
    last_only = LGPropagation(2, layer_weights=[0.0, 0.0, 1.0])(x, adj)
    assert torch.allclose(last_only, torch.sparse.mm(adj, torch.sparse.mm(adj, x)), atol=1e-6)
    with pytest.raises(ValueError, match="3 values"):
        LGPropagation(2, layer_weights=[1.0, 0.0])
    calls = []
    LGPropagation(3)(x, adj, perturb=lambda h, k: calls.append(k) or h)
    assert calls == [1, 2, 3]
    prop = LGPropagation(2, message_dropout=0.5)
    prop.eval()
    assert torch.equal(prop(x, adj), LGPropagation(2)(x, adj))
    prop.train()
    assert not torch.allclose(prop(x, adj), LGPropagation(2)(x, adj))


def test_simgcl_noise_has_norm_eps_and_keeps_signs():
    x = torch.randn(50, 16)
    perturbed = simgcl_noise(0.1, torch.Generator().manual_seed(0))(x, 1)
    delta = perturbed - x
    assert torch.allclose(delta.norm(dim=1), torch.full((50,), 0.1), atol=1e-5)
    assert bool(((delta * x) >= 0).all())  # noise points the same way as each coordinate's sign


def test_edge_dropout_drops_undirected_pairs_keeps_self_loops_and_renormalises():
    n = 200
    edges = random_graph(n, 3000, seed=2)
    adj = normalized_adjacency(edges, n, self_loops=True)
    dropper = EdgeDropout(adj)
    assert dropper.sample(0.0).to_dense().allclose(adj.to_dense())
    dropped = dropper.sample(0.3, torch.Generator().manual_seed(4)).to_dense()
    again = dropper.sample(0.3, torch.Generator().manual_seed(4)).to_dense()
    assert torch.equal(dropped, again)
    assert torch.equal(dropped, dropped.t())  # both directions dropped together
    binary = (dropped > 0).float()
    assert torch.equal(binary.diagonal(), torch.ones(n))  # self-loops kept
    off_before = int((adj.to_dense() > 0).sum()) - n
    off_after = int(binary.sum()) - n
    assert 0.6 < off_after / off_before < 0.8
    degree = binary.sum(1)
    assert torch.allclose(dropped, binary / torch.sqrt(degree[:, None] * degree[None, :]), atol=1e-6)


# ----------------------------------------------------------------------------------- loss pieces
def test_mask_rate_schedule_exp_linear_and_cap():
    assert mask_rate_schedule(0, 0.05, 0.75, 150, "exp") == pytest.approx(0.05)
    assert mask_rate_schedule(75, 0.05, 0.75, 150, "exp") == pytest.approx(0.05 * 15 ** 0.5)
    assert mask_rate_schedule(150, 0.05, 0.75, 150, "exp") == pytest.approx(0.75)
    assert mask_rate_schedule(400, 0.05, 0.75, 150, "exp") == 0.75
    assert mask_rate_schedule(30, 0.1, 0.5, 100, "linear") == pytest.approx(0.22)
    assert mask_rate_schedule(100, 0.1, 0.5, 100, "linear") == pytest.approx(0.5)
    assert mask_rate_schedule(250, 0.1, 0.5, 100, "linear") == 0.5
    assert [mask_rate_schedule(t, 0.3, 0.75, 150, "constant") for t in (0, 75, 400)] == [0.3, 0.3, 0.3]


def test_sce_loss_matches_hand_computation():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    # cosines: 0 and 1/sqrt(2); SCE alpha=2: mean((1-0)^2, (1-0.7071)^2)
    expected = (1.0 + (1 - 1 / math.sqrt(2)) ** 2) / 2
    assert float(sce_loss(x, y, 2.0)) == pytest.approx(expected, rel=1e-6)
    assert float(sce_loss(x, y, 1.0)) == pytest.approx((1.0 + 1 - 1 / math.sqrt(2)) / 2, rel=1e-6)


def test_info_nce_matches_hand_computation():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    candidates = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positive = torch.tensor([0, 2])
    tau = 0.5
    c = 1 / math.sqrt(2)
    # row 0 cosines (1, 0, c), positive 1; row 1 cosines (0, 1, c), positive c
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0) + math.exp(c / tau)))
    l1 = -math.log(math.exp(c / tau) / (math.exp(0) + math.exp(1 / tau) + math.exp(c / tau)))
    assert float(info_nce(anchor, candidates, positive, tau)) == pytest.approx((l0 + l1) / 2, rel=1e-6)


@pytest.mark.parametrize("tau", [0.2, 0.01])  # shifted by the norm bound / by the row maximum (1/tau > 40)
def test_info_nce_matches_torch_cross_entropy_value_and_gradients(tau):
    g = torch.Generator().manual_seed(3)
    anchor = torch.randn(9, 5, generator=g, dtype=torch.float64)
    anchor[4] = 0.0  # a zero row: every logit 0
    anchor.requires_grad_()
    candidates = torch.randn(23, 5, generator=g, dtype=torch.float64, requires_grad=True)
    positive = torch.tensor([0, 3, 3, 22, 12, 0, 7, 7, 1])
    reference = torch.nn.functional.cross_entropy(
        torch.nn.functional.normalize(anchor, dim=-1) @ torch.nn.functional.normalize(candidates, dim=-1).t() / tau,
        positive)
    fused = info_nce(anchor, candidates, positive, tau)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip(torch.autograd.grad(fused, (anchor, candidates)),
                         torch.autograd.grad(reference, (anchor, candidates))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_info_nce_refuses_a_second_backward_through_one_graph():
    anchor, candidates = torch.randn(4, 3, requires_grad=True), torch.randn(6, 3)
    loss = info_nce(anchor, candidates, torch.tensor([0, 1, 2, 3]), 0.5)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


@pytest.mark.parametrize("max_logits", [1, 7 * 5, 7 * 13, 7 * 40])  # one candidate per block ... all but one block
def test_blocked_info_nce_matches_dense_value_and_gradients(max_logits):
    g = torch.Generator().manual_seed(max_logits)
    anchor = torch.randn(7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(41, 6, generator=g, dtype=torch.float64, requires_grad=True)
    positive = torch.tensor([0, 3, 3, 40, 12, 0, 39])  # repeated positives and the last candidate
    dense = info_nce(anchor, candidates, positive, 0.2)
    blocked = info_nce(anchor, candidates, positive, 0.2, max_logits=max_logits)
    dense_grads = torch.autograd.grad(dense, (anchor, candidates))
    blocked_grads = torch.autograd.grad(blocked, (anchor, candidates))
    assert blocked.item() == pytest.approx(dense.item(), rel=1e-12)
    for got, want in zip(blocked_grads, dense_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_cikgrec_blocked_contrastive_loss_equals_dense(small_synthetic, views):
    dense = CIKGRec(views, CIKGRecConfig(dim=16, layers=1))
    blocked = CIKGRec(views, CIKGRecConfig(dim=16, layers=1, cl_max_logits=500))
    blocked.load_state_dict(dense.state_dict())
    users, items = torch.arange(0, 60, 3), torch.arange(0, 60, 2)
    losses = []
    for model in (dense, blocked):
        model._generator = torch.Generator().manual_seed(0)  # the same SimGCL noise in both
        terms = model.contrastive_losses(users, items)
        grad = torch.autograd.grad(sum(terms.values()), model.embedding.weight)[0]
        losses.append((terms, grad))
    (a, grad_a), (b, grad_b) = losses
    assert set(a) == set(b) == {"cl_user", "cl_item"}
    for key in a:
        assert b[key].item() == pytest.approx(a[key].item(), rel=1e-5)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("cls, kwargs, key", [
    (BPRMFConfig, {"dim": 0}, "dim"),
    (BPRMFConfig, {"l2": -1.0}, "l2"),
    (LightGCNConfig, {"view": "bogus"}, "view"),
    (LightGCNConfig, {"edge_dropout": 1.0}, "edge_dropout"),
    (CIKGRecConfig, {"dim": -4}, "dim"),
    (CIKGRecConfig, {"transe_lr": -0.1}, "transe_lr"),
    (CIKGRecConfig, {"min_mask_rate": 0.0}, "min_mask_rate"),
    (CIKGRecConfig, {"max_mask_rate": 1.5}, "max_mask_rate"),
    (CIKGRecConfig, {"min_mask_rate": 0.8, "max_mask_rate": 0.5}, "min_mask_rate"),
    (CIKGRecConfig, {"cl_anchor": "kg"}, "cl_anchor"),
    (CIKGRecConfig, {"increase_type": "log"}, "increase_type"),
    (CIKGRecConfig, {"gcl_temp": 0.0}, "gcl_temp"),
    (CIKGRecConfig, {"replace_rate": 1.0}, "replace_rate"),
])
def test_configs_fail_early_naming_the_key(cls, kwargs, key):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert err.value.key == key and key in str(err.value)


def test_model_configs_build_every_model(small_synthetic, views):
    assert {"bprmf", "lightgcn", "cikgrec"} <= set(MODEL_CONFIGS)
    for name in ("bprmf", "lightgcn", "lightgcn-cikg", "cikgrec"):
        model = MODEL_CONFIGS[name]().build(views)
        user_emb, item_emb = model.embed()
        assert user_emb.shape == (small_synthetic.n_users, 64) and item_emb.shape == (small_synthetic.n_items, 64)
        users = torch.arange(7)
        assert model.score(users).shape == (7, small_synthetic.n_items)
        assert model.recommend(users, k=5, exclude=small_synthetic.csr("train")).shape == (7, 5)
        total, terms = model.loss(batch_of(small_synthetic))
        assert total.dim() == 0 and torch.isfinite(total) and {"bpr", "l2"} <= set(terms)
        assert repr(model).startswith(type(model).__name__ + "(") and "dim=64" in repr(model)


@pytest.mark.parametrize("make", [
    lambda d, v: BPRMF(d.n_users, d.n_items),
    lambda d, v: LightGCN(v, LightGCNConfig(view="full")),
    lambda d, v: CIKGRec(v),
])
def test_reset_parameters_is_reproducible(small_synthetic, views, make):
    model = make(small_synthetic, views)
    torch.manual_seed(5)
    model.reset_parameters()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.manual_seed(5)
    model.reset_parameters()
    for key, value in model.state_dict().items():
        assert torch.equal(value, first[key]), key


def test_lightgcn_memory_grows_with_nodes_and_edge_dropout_once_per_epoch(small_synthetic, views):
    model = LightGCN(views, LightGCNConfig(edge_dropout=0.2))
    assert model.embedding.num_embeddings == views.n_nodes
    model.on_epoch_start(0, torch.Generator().manual_seed(0))
    adj = model.training_adjacency()
    assert adj._nnz() < model.full_adjacency()._nnz()
    model.loss(batch_of(small_synthetic))
    assert model.training_adjacency() is adj  # the same graph for every batch of the epoch
    model.on_epoch_start(1, torch.Generator().manual_seed(1))
    assert model.training_adjacency() is not adj


# ------------------------------------------------------------------------------------------ CIKGRec
def test_cikgrec_mask_rate_follows_epochs_and_checkpoint_state(small_synthetic, views):
    model = CIKGRec(views, CIKGRecConfig(total_epoch=10, min_mask_rate=0.1, max_mask_rate=0.8))
    assert model.on_epoch_start(5)["mask_rate"] == pytest.approx(0.1 * 8 ** 0.5)
    state = model.state_for_checkpoint()
    other = CIKGRec(views, CIKGRecConfig(total_epoch=10, min_mask_rate=0.1, max_mask_rate=0.8))
    other.load_checkpoint_state(state)
    assert other.mask_rate == model.mask_rate and other.epoch == 5


def test_transe_negatives_are_never_interests_nor_true_triples(small_synthetic, views):
    triples = TransETriples(views, use_kg=True)
    assert triples.n_relations == 2 + 2 * small_synthetic.n_relations
    assert len(triples) == 2 * small_synthetic.train.size(1) + 2 * torch.unique(small_synthetic.kg, dim=1).size(1)
    head, rel, tail, neg = triples.batch(20000, torch.Generator().manual_seed(0))
    interests = views.node_slice("interest")
    assert not bool(((neg >= interests.start) & (neg < interests.stop)).any())
    assert not bool(triples.is_true(head, rel, neg).any())
    assert bool(triples.is_true(head, rel, tail).all())
    to_user = rel == INTERACTED
    assert bool((neg[to_user] < views.counts["user"]).all())
    assert bool((neg[~to_user] >= views.offsets["item"]).all())
    assert set(rel.unique().tolist()) == set(range(triples.n_relations))


def test_transe_auxiliary_task_lowers_its_loss(small_synthetic, views):
    torch.manual_seed(0)
    model = CIKGRec(views, CIKGRecConfig(transe_batch_size=512, transe_batches=20))
    (task,) = model.auxiliary_tasks()
    assert task.name == "transe" and task.lr == model.config.transe_lr
    optimizer = torch.optim.Adam(task.parameters, lr=0.01)
    means = []
    for epoch in range(3):
        values = []
        for batch in task.batches(torch.Generator().manual_seed(epoch), epoch):
            total, terms = task.loss(batch)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            values.append(float(terms["transe"]))
        means.append(sum(values) / len(values))
    assert means[-1] < means[0]


@pytest.mark.parametrize("switch, gone", [
    ({}, set()),
    ({"use_uir": False}, {"uir"}),
    ({"use_cl": False}, {"cl_user", "cl_item"}),
    ({"use_interests": False}, {"uir", "cl_user"}),
    ({"use_kg": False}, {"cl_item"}),
])
def test_each_ablation_switch_changes_the_terms(small_synthetic, views, switch, gone):
    model = CIKGRec(views, CIKGRecConfig(**switch))
    model.on_epoch_start(0, torch.Generator().manual_seed(0))
    _, terms = model.loss(batch_of(small_synthetic))
    assert set(terms) == {"bpr", "l2", "uir", "cl_user", "cl_item"} - gone
    if switch.get("use_interests") is False:
        assert model.encoder_view is View.KG
    if switch.get("use_kg") is False:
        assert model.encoder_view is View.INTEREST
        assert model.triples.n_relations == 2  # TransE on interactions only
    assert bool(model.auxiliary_tasks()) is True
    assert not CIKGRec(views, CIKGRecConfig(use_transe=False)).auxiliary_tasks()


def test_cikgrec_without_kg_in_the_graph_runs_without_item_contrast(small_synthetic):
    views = build_views(build_cikg(small_synthetic, include_kg=False), views=[])
    model = CIKGRec(views)
    _, terms = model.loss(batch_of(small_synthetic))
    assert set(terms) == {"bpr", "l2", "uir", "cl_user"} and model.encoder_view is View.INTEREST


def test_cl_anchor_setting_picks_view_one(small_synthetic, views):
    batch = batch_of(small_synthetic)
    values = {}
    for anchor in ("collaborative", "full"):
        torch.manual_seed(0)
        model = CIKGRec(views, CIKGRecConfig(cl_anchor=anchor, eps=0.0, use_uir=False))
        assert model.anchor_view is (View.COLLABORATIVE if anchor == "collaborative" else View.FULL)
        _, terms = model.loss(batch)
        values[anchor] = float(terms["cl_user"])
    assert values["collaborative"] != pytest.approx(values["full"])


def test_uir_gradient_reaches_mask_token_and_decoder(small_synthetic, views):
    model = CIKGRec(views, CIKGRecConfig(min_mask_rate=0.5, max_mask_rate=0.5))
    model.on_epoch_start(0, torch.Generator().manual_seed(0))
    loss = model.interest_reconstruction_loss()
    loss.backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert model.encoder_to_decoder.weight.grad.abs().sum() > 0
    assert 0.0 < float(loss.detach()) < 2.0 ** 2


def test_cikgrec_on_dbbook_one_step_all_terms_finite(dbbook):
    views = build_views(build_cikg(dbbook), views=[])
    torch.manual_seed(0)
    model = CIKGRecConfig().build(views)
    model.on_epoch_start(0, torch.Generator().manual_seed(0))
    total, terms = model.loss(batch_of(dbbook, 1024))
    total.backward()
    assert set(terms) == {"bpr", "l2", "uir", "cl_user", "cl_item"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["cl_user"] > 0 and terms["cl_item"] > 0
    assert model.embedding.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_models_run_on_cuda(small_synthetic, views):
    device = torch.device("cuda")
    cuda_views = views.to(device)
    for model in (LightGCN(cuda_views, LightGCNConfig(view="full", edge_dropout=0.1)),
                  CIKGRec(cuda_views, small_synthetic, CIKGRecConfig(edge_dropout=0.1))):
        model = model.to(device)
        model.on_epoch_start(0, torch.Generator().manual_seed(0))
        total, _ = model.loss(batch_of(small_synthetic).to(device))
        total.backward()
        assert total.device.type == "cuda"
        for task in model.auxiliary_tasks():
            batch = next(iter(task.batches(torch.Generator().manual_seed(0), 0)))
            task.loss(batch)[0].backward()


@pytest.mark.parametrize("name", ["bprmf", "lightgcn", "lightgcn-cikg", "simgcl", "kgat", "kgin", "cikgrec"])
def test_every_builtin_model_stands_on_the_graph_alone_and_moves_it(name, small_synthetic):
    """Config.build(graph): no Dataset; `.double()` casts the graph the model keeps with its parameters."""
    from cikg.models.registry import build_model

    views = build_views(build_cikg(small_synthetic))
    model = build_model(MODEL_CONFIGS[name](), views)
    model.double()
    user_emb, item_emb = model.embed()
    assert user_emb.dtype == torch.float64 and item_emb.shape[0] == small_synthetic.n_items
    if model.graph is not None:
        assert model.graph is not views and all(a.dtype == torch.float64 for a in model.graph.adjacency.values())
        assert all(a.dtype == torch.float32 for a in views.adjacency.values())  # the caller's graph is untouched
        assert model.graph.kg_triples.dtype == torch.long


def test_a_config_with_the_older_two_argument_build_still_gets_the_dataset(small_synthetic, caplog):
    from dataclasses import dataclass

    from cikg.models import BPRMF
    from cikg.models.registry import build_model

    @dataclass
    class OldStyle:
        dim: int = 8

        def build(self, views, dataset):
            return BPRMF(dataset.n_users, dataset.n_items)

    views = build_views(build_cikg(small_synthetic))
    with caplog.at_level("WARNING"):
        model = build_model(OldStyle(), views, small_synthetic)
    assert model.n_users == small_synthetic.n_users
    assert "build(graph)" in caplog.text


def test_cikgrec_composes_a_lightgcn_encoder_and_loads_checkpoints_from_before(small_synthetic):
    """CIKGRec's recommendation encoder is a LightGCN over its encoder view (one propagation code path), and a
    state dict written before the encoder was a module (top-level ``embedding.weight``) loads into it."""
    views = build_views(build_cikg(small_synthetic), views=())
    torch.manual_seed(0)
    model = CIKGRecConfig(dim=16, layers=2, use_transe=False).build(views)
    assert isinstance(model.encoder, LightGCN) and model.encoder.view is model.encoder_view
    assert model.embedding is model.encoder.embedding
    lightgcn = LightGCNConfig(dim=16, layers=2, view=model.encoder_view, self_loops=True).build(views)
    lightgcn.embedding.weight.data.copy_(model.embedding.weight.data)
    model.eval(), lightgcn.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.embed(), lightgcn.embed()))
    old = {("embedding.weight" if k == "encoder.embedding.weight" else k): v for k, v in model.state_dict().items()}
    assert "embedding.weight" in old and "encoder.embedding.weight" not in old
    torch.manual_seed(1)
    again = CIKGRecConfig(dim=16, layers=2, use_transe=False).build(views)
    again.load_state_dict(old)
    assert torch.equal(again.embedding.weight, model.embedding.weight)
