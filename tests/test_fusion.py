"""The augmentation contract: NodeFeatures artifacts, attaching to the CIKG, the expert adaptor and the fusion layer."""
from __future__ import annotations

import pytest
import torch

from cikg.augment import NodeFeatures
from cikg.errors import CheckpointError, ConfigError, GraphError
from cikg.graph import build_cikg, build_views
from cikg.models import BPRBatch, BPRMFConfig, CIKGRecConfig, LightGCNConfig
from cikg.models.experts import HybridExpertAdaptor
from cikg.models.fusion import FeatureFusion, FusionConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer, load_run_config

SMALL = DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90, synthetic_seed=3)


def _id_features(n: int, width: int) -> torch.Tensor:
    """Row ``i`` encodes ``i / n`` in its first column, so a misplaced row is visible."""
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(n))
    x[:, 0] = torch.arange(n, dtype=torch.float32) / n
    return x


@pytest.fixture()
def featured(small_synthetic):
    d = small_synthetic
    features = NodeFeatures(user=_id_features(d.n_users, 8), item=_id_features(d.n_items, 6),
                            blocks={"user": {"reasoning": 4, "collective": 4}},
                            provenance={"method": "test", "backend": "none", "n_calls": 0})
    return d, features


# ------------------------------------------------------------------------------------------ NodeFeatures
def test_node_features_save_load_attach(featured, tmp_path):
    d, features = featured
    path = features.save(tmp_path / "run")
    assert path == tmp_path / "run" / "features.pt"
    again = NodeFeatures.load(tmp_path / "run")
    assert torch.equal(again.user, features.user) and torch.equal(again.item, features.item)
    assert again.blocks == {"user": {"reasoning": 4, "collective": 4}, "item": {"test": 6}}
    assert again.provenance["method"] == "test" and again.provenance["n_calls"] == 0
    assert torch.equal(again.block("user", "collective"), features.user[:, 4:])

    graph = again.attach(build_cikg(d))
    assert torch.equal(graph["user"].x[:, 0], torch.arange(d.n_users, dtype=torch.float32) / d.n_users)
    assert torch.equal(graph["item"].x[:, 0], torch.arange(d.n_items, dtype=torch.float32) / d.n_items)
    assert graph.meta["features"]["user"]["blocks"] == {"reasoning": 4, "collective": 4}
    assert graph.meta["features"]["item"]["dim"] == 6
    views = build_views(graph, views=())
    assert views.feature_blocks["user"] == {"reasoning": 4, "collective": 4}
    assert torch.equal(views.to("cpu").features["item"], graph["item"].x)


def test_node_features_reject_bad_input(featured, tmp_path):
    d, features = featured
    with pytest.raises(GraphError, match="user or item"):
        NodeFeatures()
    with pytest.raises(GraphError, match="do not add up"):
        NodeFeatures(user=torch.zeros(3, 5), blocks={"user": {"a": 2, "b": 2}})
    bad = torch.zeros(4, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(GraphError, match="user 2"):
        NodeFeatures(user=bad)
    with pytest.raises(GraphError, match=r"shape \[300, dim\]"):
        NodeFeatures(user=torch.zeros(299, 4)).attach(build_cikg(d))
    with pytest.raises(CheckpointError, match="no such node-features file"):
        NodeFeatures.load(tmp_path / "missing")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        NodeFeatures.load(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------ experts
def test_expert_adaptor_gates_and_gradients():
    torch.manual_seed(0)
    adaptor = HybridExpertAdaptor({"reasoning": 12, "factual": 12}, out_dim=5, n_shared=2, n_dedicated=3, hidden=16)
    x = torch.randn(7, 12)
    gates = adaptor.gates(x, "reasoning")
    assert gates.shape == (7, 5) and torch.allclose(gates.sum(-1), torch.ones(7))
    adaptor(x, "reasoning").pow(2).sum().backward()
    assert all(p.grad is not None for p in adaptor.shared.parameters())
    assert all(p.grad is not None for p in adaptor.dedicated["reasoning"].parameters())
    assert all(p.grad is None for p in adaptor.dedicated["factual"].parameters())
    assert adaptor(x, "factual").shape == (7, 5)
    with pytest.raises(ConfigError, match="one width"):
        HybridExpertAdaptor({"a": 3, "b": 4}, 2, n_shared=1)
    assert HybridExpertAdaptor({"a": 3, "b": 4}, 2, n_shared=0, n_dedicated=1)(torch.zeros(1, 4), "b").shape == (1, 2)


def test_expert_adaptor_learns_a_mapping():
    """Trained alone on a fixed target per knowledge type, the adaptor's loss falls by an order of magnitude."""
    torch.manual_seed(1)
    adaptor = HybridExpertAdaptor({"r": 16, "f": 16}, out_dim=4, n_shared=1, n_dedicated=1, hidden=32)
    x = {k: torch.randn(64, 16) for k in "rf"}
    target = {k: torch.tanh(x[k] @ torch.randn(16, 4)) for k in "rf"}
    optimizer = torch.optim.Adam(adaptor.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = sum((adaptor(x[k], k) - target[k]).pow(2).mean() for k in "rf")
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]


# ------------------------------------------------------------------------------------------ fusion
def test_fusion_rows_land_on_their_nodes(featured):
    d, features = featured
    views = build_views(features.attach(build_cikg(d)), views=())
    fusion = FeatureFusion(FusionConfig(mode="features"), views.features, 16, views.feature_blocks, views.offsets)
    ego = torch.randn(views.n_nodes, 16)
    out = fusion(ego)
    users, items = views.node_slice("user"), views.node_slice("item")
    assert torch.allclose(out[users], fusion.linear["user"](features.user))
    assert torch.allclose(out[items], fusion.linear["item"](features.item))
    rest = torch.ones(views.n_nodes, dtype=torch.bool)
    rest[users] = rest[items] = False
    assert torch.equal(out[rest], ego[rest])
    added = FeatureFusion(FusionConfig(mode="add", node_types=("item",)), views.features, 16, None, views.offsets)
    out = added(ego)
    assert torch.equal(out[users], ego[users])
    assert torch.allclose(out[items], ego[items] + added.linear["item"](features.item))
    index = torch.tensor([5, 0, 7])
    assert torch.allclose(added.fuse("item", ego[items][index], index), out[items][index])
    experts = FeatureFusion(FusionConfig(mode="add", adaptor="experts", n_shared=0, reduce=3), views.features, 16,
                            views.feature_blocks, views.offsets)
    assert experts.blocks == {"user": {"reasoning": 3, "collective": 3}, "item": {"test": 3}}
    assert experts(ego).shape == ego.shape


@pytest.mark.parametrize("config_cls", [LightGCNConfig, CIKGRecConfig, BPRMFConfig])
def test_fusion_none_is_the_plain_model(featured, config_cls):
    d, features = featured
    plain_views = build_views(build_cikg(d), views=())
    featured_views = build_views(features.attach(build_cikg(d)), views=())
    batch = BPRBatch(torch.arange(0, 64), torch.randint(0, d.n_items, (64,), generator=torch.Generator().manual_seed(0)),
                     torch.randint(0, d.n_items, (64,), generator=torch.Generator().manual_seed(1)))
    results = []
    for views, config in ((plain_views, config_cls(dim=16)), (featured_views, config_cls(dim=16))):
        torch.manual_seed(3)
        model = config.build(views)
        assert model.fusion is None
        torch.manual_seed(4)
        results.append((model.state_dict(), model.loss(batch)[0].item(), model.embed()[0]))
    assert results[0][0].keys() == results[1][0].keys()
    assert all(torch.equal(results[0][0][k], results[1][0][k]) for k in results[0][0])
    assert results[0][1] == results[1][1]
    assert torch.equal(results[0][2], results[1][2])


@pytest.mark.parametrize("config_cls", [LightGCNConfig, CIKGRecConfig, BPRMFConfig])
def test_models_fuse_and_backpropagate_into_the_adaptor(featured, config_cls):
    d, features = featured
    views = build_views(features.attach(build_cikg(d)), views=())
    model = config_cls(dim=16, features=FusionConfig(mode="add", adaptor="experts", n_shared=1, n_dedicated=1,
                                                     hidden=8, reduce=4)).build(views)
    batch = BPRBatch(torch.arange(32), torch.arange(32) % d.n_items, (torch.arange(32) + 7) % d.n_items)
    total, _ = model.loss(batch)
    total.backward()
    keys = [k.removeprefix("encoder.") for k in model.state_dict()]  # CIKGRec: its LightGCN encoder's fusion
    assert any(k.startswith("fusion.experts.gate.reasoning") for k in keys)
    assert not any(k.startswith("fusion.x_") for k in keys)  # features come from the artifact
    assert model.fusion.experts.gate["reasoning"].weight.grad.abs().sum() > 0
    assert model.fusion.experts.gate["test"].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="no features"):
        config_cls(dim=16, features=FusionConfig(mode="add")).build(build_views(build_cikg(d), views=()))


@pytest.mark.parametrize("adaptor", ["linear", "experts"])
@pytest.mark.parametrize("config_cls", [LightGCNConfig, CIKGRecConfig, BPRMFConfig])
def test_gated_fusion_starts_as_the_plain_model_and_learns_to_let_features_in(featured, config_cls, adaptor):
    d, features = featured
    views = build_views(features.attach(build_cikg(d)), views=())
    fusion = FusionConfig(mode="add", adaptor=adaptor, gate=True, n_shared=1, n_dedicated=1, hidden=8, reduce=4)
    model = config_cls(dim=16, features=fusion).build(views)
    assert "gate=True" in repr(model.fusion)
    batch = BPRBatch(torch.arange(32), torch.arange(32) % d.n_items, (torch.arange(32) + 7) % d.n_items)
    gated = model.embed()
    host = getattr(model, "encoder", model)  # CIKGRec's fusion is its LightGCN encoder's
    layer, host.fusion = host.fusion, None
    plain = model.embed()
    host.fusion = layer
    assert all(torch.allclose(a, b) for a, b in zip(gated, plain))  # a zero gate: exactly the plain model

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(batch)[0].backward()
    assert model.fusion.gate["user"].grad.abs().sum() > 0 and model.fusion.gate["item"].grad.abs().sum() > 0
    adaptor_params = [p for n, p in model.fusion.named_parameters() if not n.startswith("gate")]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in adaptor_params)  # nothing flows in yet
    optimizer.step()
    optimizer.zero_grad()
    model.loss(batch)[0].backward()
    assert sum(float(p.grad.abs().sum()) for p in adaptor_params if p.grad is not None) > 0  # now it does
    assert not torch.allclose(model.embed()[0], plain[0])
    with pytest.raises(ConfigError) as err:
        FusionConfig(mode="features", gate=True)
    assert err.value.key == "gate"
    assert load_run_config(None, ["model.features.mode=add", "model.features.gate=true"]).model.features.gate


def test_fusion_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        load_run_config(None, ["model.features.mode=concat"])
    assert err.value.key == "model.features.mode"
    with pytest.raises(ConfigError) as err:
        load_run_config(None, ["model.name=cikgrec", "model.features.dropout=1.5"])
    assert err.value.key == "model.features.dropout"
    plain = load_run_config(None, []).to_dict()
    assert "features" not in plain["model"] and "features" not in plain["data"]  # old configs/checkpoints resume


def test_trainer_uses_features_and_checkpoints_the_adaptor(small_synthetic, tmp_path):
    """Features only (no ID embeddings for users/items) still train: the BPR loss falls, weights hold the adaptor."""
    d = small_synthetic
    # informative features: each user's normalised train-item histogram, each item's one-hot
    counts = torch.zeros(d.n_users, d.n_items)
    counts[d.train[0], d.train[1]] = 1.0
    users = torch.nn.functional.normalize(counts, dim=1)
    NodeFeatures(user=users, item=torch.eye(d.n_items), provenance={"method": "history"}).save(tmp_path / "feat")
    config = RunConfig(data=DataConfig(**{**SMALL.__dict__, "features": str(tmp_path / "feat")}),
                       model=LightGCNConfig(dim=16, layers=1, features=FusionConfig(mode="features")),
                       train=TrainConfig(epochs=6, batch_size=512, lr=1e-2, ks=(10, 20), seed=5, progress=False))
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.model.fusion is not None and trainer.views.features["user"].shape == (d.n_users, d.n_items)
    result = trainer.fit()
    bpr = [r["bpr"] for r in trainer.history]
    assert bpr[-1] < 0.7 * bpr[0]
    assert result.valid["recall@20"] > 0.05
    weights = torch.load(tmp_path / "run" / "best_model.pt", weights_only=True)
    assert {"fusion.linear.user.weight", "fusion.linear.item.weight"} <= set(weights)
    assert "features" in (tmp_path / "run" / "config.yaml").read_text()

    no_features = RunConfig(data=SMALL, model=LightGCNConfig(dim=16, features=FusionConfig(mode="add")),
                            train=config.train)
    with pytest.raises(ConfigError) as err:
        Trainer(no_features, tmp_path / "run2")
    assert err.value.key == "data.features"
