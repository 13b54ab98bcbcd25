"""KAR and REKI on a real dbbook2014 subset: prompts, the offline kg-profile and replay backends, encoding, node ids,
collective extraction (clusters, shared knowledge, incremental assignment, call counts), the CLI, and training."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from cikg.augment import NodeFeatures
from cikg.augment.kar import KAR, KARConfig, item_requests, user_requests
from cikg.augment.reki import REKI, REKIConfig, call_counts, load_groups
from cikg.cli import main
from cikg.errors import ConfigError, LLMError
from cikg.llm import ReplayBackend
from cikg.llm.kgprofile import KGProfileBackend, KGProfileConfig
from cikg.llm.prompts import titles_of
from cikg.models import LightGCNConfig
from cikg.models.fusion import FusionConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer

N_USERS, N_ITEMS = 300, 400


def subset(dataset, n_users: int, n_items: int):
    """The first ``n_users`` users of a real dataset and their ``n_items`` most frequent train items (remapped to
    ``0..n_items-1``, as the first KG entities; the other items become plain KG entities)."""
    users_train = dataset.train[:, dataset.train[0] < n_users]
    degree = torch.bincount(users_train[1], minlength=dataset.n_items)
    selected = torch.sort(torch.argsort(degree, descending=True, stable=True)[:n_items]).values
    rest = torch.ones(dataset.n_entities, dtype=torch.bool)
    rest[selected] = False
    order = torch.cat([selected, rest.nonzero().flatten()])  # new entity id -> old
    new_of_old = torch.empty_like(order)
    new_of_old[order] = torch.arange(order.numel())
    chosen = torch.zeros(dataset.n_items, dtype=torch.bool)
    chosen[selected] = True

    def keep(pairs):
        pairs = pairs[:, (pairs[0] < n_users) & chosen[pairs[1]]]
        return torch.stack([pairs[0], new_of_old[pairs[1]]]).contiguous()

    old = order.tolist()
    return dataclasses.replace(
        dataset, name=f"{dataset.name}[:{n_users},top{n_items}]", n_users=n_users, n_items=n_items,
        train=keep(dataset.train), valid=keep(dataset.valid), test=keep(dataset.test),
        kg=torch.stack([new_of_old[dataset.kg[0]], dataset.kg[1], new_of_old[dataset.kg[2]]]),
        user_ids=dataset.user_ids[:n_users], item_ids=[dataset.item_ids[o] for o in old[:n_items]],
        entity_ids=[dataset.entity_ids[o] for o in old], entity_text=[dataset.entity_text[o] for o in old],
        item_text=[dataset.item_text[o] for o in old[:n_items]],
        user_interest=dataset.user_interest[:, dataset.user_interest[0] < n_users].contiguous(), _csr_cache={})


@pytest.fixture(scope="module")
def small(dbbook):
    return subset(dbbook, N_USERS, N_ITEMS)


@pytest.fixture(scope="module")
def encoder():
    from cikg.embed import Encoder

    return Encoder(None, n_threads=1, show_progress=False)


@pytest.fixture(scope="module")
def kar_run(small, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("kar")
    augmenter = KAR(KARConfig(history_len=10), KGProfileBackend(small, KGProfileConfig(history_len=10)), encoder, out)
    return augmenter, augmenter.fit(small), out


# ------------------------------------------------------------------------------------------- prompts, backend
def test_kar_prompts_name_factors_and_titles(small):
    users, skipped_users = user_requests(small, ("genre", "era"), "books", 10)
    items, skipped_items = item_requests(small, ("genre", "era"), "books")
    assert len(users) + len(skipped_users) == N_USERS and len(users) > 0.9 * N_USERS
    assert all(not titles_of(small, small.history(u, last=10)) for u in skipped_users)
    assert len(items) + len(skipped_items) == N_ITEMS
    first = users[0]
    text = first.message_dicts[1]["content"]
    assert "genre, era" in text and small.item_text[small.history(first.user, last=10)[-1]] in text
    assert first.user_id == f"user:{small.user_ids[first.user]}" and dict(first.extra)["node"] == "user"
    assert items[0].user_id == f"item:{small.item_ids[items[0].user]}"
    assert small.item_text[items[0].user] in items[0].message_dicts[1]["content"]


def test_kg_profile_answers_items_with_their_own_facts_and_groups_with_their_histories(small):
    backend = KGProfileBackend(small, KGProfileConfig(history_len=10))
    items, _ = item_requests(small, ("genre",), "books", items=range(40))
    matrix, _, names, _ = backend.features()
    dense = matrix.to_dense()
    for request, answer in zip(items, backend.complete_many(items), strict=True):
        own = {names[c] for c in dense[request.user].nonzero().flatten().tolist()}
        if answer.ok:
            phrases = {e["phrase"] for e in answer.meta["evidence"]}
            assert phrases and phrases <= own and answer.text == ", ".join(e["phrase"] for e in answer.meta["evidence"])
        else:
            assert not own
    users, _ = user_requests(small, ("genre",), "books", 10, users=range(20))
    plain = backend.profiles([r.user for r in users])
    assert [c.text for c in backend.complete_many(users)] == [", ".join(p for p, _, _ in prof) for prof in plain]


# ------------------------------------------------------------------------------------------- KAR
def test_kar_features_sit_on_their_node_ids(small, encoder, kar_run):
    _, features, out = kar_run
    assert features.user.shape == (N_USERS, 384) and features.item.shape == (N_ITEMS, 384)
    assert features.blocks == {"user": {"reasoning": 384}, "item": {"factual": 384}}
    p = features.provenance
    users, _ = user_requests(small, ("x",), "books", 10)
    items, _ = item_requests(small, ("x",), "books")
    assert p["n_calls"] == len(users) + len(items) and p["not_an_llm"] and p["backend"] == "kg-profile"
    assert p["encoder"] == "sentence-transformers/all-MiniLM-L6-v2" and p["factor_source"] == "default"
    answers = {json.loads(line)["user_id"]: json.loads(line) for line in (out / "answers.jsonl").open()}
    user = users[5].user
    expected = torch.as_tensor(encoder.encode([answers[f"user:{small.user_ids[user]}"]["raw"]]))[0]
    assert torch.allclose(features.user[user], expected)
    missing = [u for u in range(N_USERS) if f"user:{small.user_ids[u]}" not in answers]
    assert missing and torch.all(features.user[missing] == 0)  # users with no train item in the subset
    assert p["missing_users"] == len(missing)
    saved = NodeFeatures.load(out)
    assert torch.equal(saved.user, features.user) and saved.provenance == features.provenance


def test_kar_replays_its_answers_without_a_backend_call(small, encoder, kar_run, tmp_path):
    _, features, out = kar_run
    again = KAR(KARConfig(history_len=10), ReplayBackend(out / "answers.jsonl"), encoder).fit(small)
    assert torch.equal(again.user, features.user) and torch.equal(again.item, features.item)
    assert again.provenance["n_sent"] == 0 and again.provenance["not_an_llm"]  # replayed kg-profile answers
    lines = (out / "answers.jsonl").read_text().splitlines()
    (tmp_path / "partial.jsonl").write_text("\n".join(lines[1:]) + "\n")
    first = json.loads(lines[0])["user_id"]
    with pytest.raises(LLMError, match=first.split(":")[1]):
        KAR(KARConfig(history_len=10), ReplayBackend(tmp_path / "partial.jsonl"), encoder).fit(small)


# ------------------------------------------------------------------------------------------- REKI
def test_reki_collective_shares_group_knowledge_and_counts_calls(small, encoder, tmp_path):
    config = REKIConfig(history_len=10, n_user_groups=8, n_item_groups=6, sample_size=5, seed=1)
    reki = REKI(config, KGProfileBackend(small, KGProfileConfig(history_len=10)), encoder, tmp_path)
    features = reki.fit(small)
    groups = reki.user_groups
    assert features.blocks == {"user": {"reasoning_collective": 384}, "item": {"factual_collective": 384}}
    assert groups.n_groups == 8 and reki.item_groups.n_groups == 6
    p = features.provenance
    frame = call_counts(small, [6, 8, 1000], KARConfig(history_len=10))
    assert p["collective_calls"] == p["n_calls"] <= 8 + 6
    assert frame.set_index("groups").loc[1000, "calls"] == N_USERS + N_ITEMS
    assert frame["calls"].iloc[0] == len(user_requests(small, ("x",), "books", 10)[0]) + len(
        item_requests(small, ("x",), "books")[0])
    assert frame.set_index("groups").loc[8, "calls"] == 16 and frame["share"].iloc[0] == 1.0
    # members share their group's vector: at most one distinct user vector per group
    for g in range(groups.n_groups):
        rows = features.user[groups.labels == g]
        assert torch.allclose(rows, rows[:1].expand_as(rows))
    assert torch.unique(features.user, dim=0).size(0) <= groups.n_groups
    # incremental: the nearest centroid is each member's own group; a centroid maps to itself
    from cikg.augment.reki import representations

    user_x, _ = representations(small, config, encoder)
    assert torch.equal(groups.assign(user_x), groups.labels)
    assert torch.equal(groups.assign(groups.centroids), torch.arange(groups.n_groups))
    assert torch.equal(groups.vectors(user_x[:7]), features.user[:7])
    loaded_users, _ = load_groups(tmp_path)
    assert torch.equal(loaded_users.knowledge, groups.knowledge)


def test_reki_both_trains_with_the_expert_adaptor(small, encoder, kar_run, tmp_path):
    """Individual + collective blocks through the hybrid experts: training runs, the BPR loss falls."""
    _, kar_features, kar_out = kar_run
    reki = REKI(REKIConfig(mode="both", history_len=10, n_user_groups=8, n_item_groups=8, seed=1),
                ReplayBackend(kar_out / "answers.jsonl"), encoder, tmp_path / "reki")
    with pytest.raises(LLMError):  # the KAR replay has no group answers: a clear error, not zeros
        reki.fit(small)
    reki.backend = KGProfileBackend(small, KGProfileConfig(history_len=10))
    features = reki.fit(small)
    assert list(features.blocks["user"]) == ["reasoning", "reasoning_collective"]
    assert torch.equal(features.block("user", "reasoning"), kar_features.user)
    fusion = FusionConfig(mode="add", adaptor="experts", n_shared=1, n_dedicated=1, hidden=16, reduce=16)
    config = RunConfig(data=DataConfig(features=str(tmp_path / "reki")),
                       model=LightGCNConfig(dim=16, layers=1, features=fusion),
                       train=TrainConfig(epochs=8, batch_size=256, lr=1e-2, ks=(10, 20), seed=3, patience=0,
                                         progress=False))
    trainer = Trainer(config, tmp_path / "run", dataset=small)
    assert set(trainer.model.fusion.experts.gate) == {"reasoning", "reasoning_collective", "factual",
                                                      "factual_collective"}
    trainer.fit()
    bpr = [r["bpr"] for r in trainer.history]
    assert bpr[-1] < 0.6 * bpr[0], bpr


@pytest.mark.parametrize("method", ["kar", "reki"])
def test_a_graph_of_another_dataset_is_refused_before_any_llm_call(small, dbbook, encoder, method, tmp_path):
    from cikg.errors import GraphError
    from cikg.graph import build_cikg

    class Counting(KGProfileBackend):
        calls = 0

        def complete_many(self, requests):
            Counting.calls += len(requests)
            return super().complete_many(requests)

    augmenter = (KAR(KARConfig(), Counting(small), encoder, tmp_path) if method == "kar"
                 else REKI(REKIConfig(n_user_groups=5, n_item_groups=5), Counting(small), encoder, tmp_path))
    with pytest.raises(GraphError, match=re.escape(f"the graph has {dbbook.n_users} users, {small.name} has {N_USERS}")):
        augmenter.fit(small, build_cikg(dbbook))
    assert Counting.calls == 0 and not (tmp_path / "features.pt").exists()


def test_reki_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        REKIConfig(mode="clustered")
    assert err.value.key == "mode"
    with pytest.raises(ConfigError) as err:
        REKIConfig(n_user_groups=0)
    assert err.value.key == "n_user_groups"
    with pytest.raises(ConfigError) as err:
        KARConfig(domain="music")
    assert err.value.key == "domain"


# ------------------------------------------------------------------------------------------- CLI
def test_cli_augment_then_train(small, tmp_path, capsys):
    from cikg.data import save_dataset

    data = save_dataset(small, tmp_path / "data")
    cache = tmp_path / "emb.sqlite"
    rc = main(["augment", "kar", str(data), "-o", str(tmp_path / "kar"), "--history-len", "10",
               "--embedding-cache", str(cache), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "not an LLM" in out and "features.pt" in out
    features = NodeFeatures.load(tmp_path / "kar")
    assert features.user.shape == (N_USERS, 384) and features.provenance["method"] == "kar"
    rc = main(["augment", "reki", str(data), "-o", str(tmp_path / "reki"), "--groups", "5", "--backend", "replay",
               "--replay", str(tmp_path / "kar" / "answers.jsonl"), "--mode", "individual",
               "--embedding-cache", str(cache), "--no-progress"])
    assert rc == 0
    assert torch.equal(NodeFeatures.load(tmp_path / "reki").user, features.user)
    assert main(["augment", "reki", str(data), "-o", str(tmp_path / "x"), "--call-counts", "5,50"]) == 0
    table = capsys.readouterr().out
    assert "individual" in table and "collective" in table
    assert main(["augment", "kar", str(tmp_path / "nope"), "-o", str(tmp_path / "y")]) == 2
    rc = main(["train", "-", f"data.dataset={data}", f"data.features={tmp_path / 'kar'}", "model.features.mode=add",
               "model.dim=16", "model.layers=1", "train.epochs=2", "train.ks=[10,20]", "train.progress=false",
               "--run-dir", str(tmp_path / "run")])
    assert rc == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["test"]["recall@20"] >= 0.0
    assert "fusion.linear.user.weight" in torch.load(tmp_path / "run" / "best_model.pt", weights_only=True)
