"""Using a trained run: cikg.load_model, `cikg recommend`, `cikg export` (parquet + FAISS) and `cikg serve`
(uvicorn started for real on 127.0.0.1, hit by httpx)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cikg
from cikg.cli import main
from cikg.serving import TrainedModel, UnknownIdError

ROOT = Path(__file__).resolve().parents[1]
K = 7


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A LightGCN-CIKG run (users, items, entities and interests all propagated) on a small synthetic set."""
    from cikg.models import LightGCNCIKGConfig
    from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer

    config = RunConfig(data=DataConfig(dataset="synthetic", synthetic_users=200, synthetic_items=60),
                       model=LightGCNCIKGConfig(dim=16),
                       train=TrainConfig(epochs=2, ks=(10, 20), threads=1, progress=False, seed=0))
    path = tmp_path_factory.mktemp("serving") / "run"
    Trainer(config, path).fit(resume=False)
    return path


@pytest.fixture(scope="session")
def trained(run_dir) -> TrainedModel:
    return cikg.load_model(run_dir)


def _embed(trained: TrainedModel):
    with torch.no_grad():
        return tuple(t.detach() for t in trained.model.embed())


def _reference_top(trained: TrainedModel, user: str, k: int, exclude_seen: bool = True):
    """Top-k item ids of one user computed apart from the library: numpy lexsort (score desc, id asc)."""
    dataset = trained.dataset
    u = dataset.user_ids.index(user)
    user_emb, item_emb = (t.numpy() for t in _embed(trained))
    scores = item_emb @ user_emb[u]
    if exclude_seen:
        seen = np.concatenate([dataset.history(u, "train"), dataset.history(u, "valid")]).astype(int)
        scores[seen] = -np.inf
    order = np.lexsort((np.arange(scores.size), -scores))
    order = order[np.isfinite(scores[order])][:k]
    return [dataset.item_ids[i] for i in order], scores[order]


# ---------------------------------------------------------------------------------------------- Python API
def test_load_model_repr_names_run_model_and_dataset(trained, run_dir):
    text = repr(trained)
    assert str(run_dir) in text and "lightgcn-cikg" in text and "LightGCN" in text
    assert trained.dataset.name in text and "users=200" in text and "items=60" in text
    assert trained.node_types == ("user", "item", "entity", "interest")


def test_recommend_matches_an_independent_ranking_with_seen_items_excluded(trained):
    users = ["u3", "u0", "u150", "u3"]  # order and repeats are kept
    recs = trained.recommend(users, k=K)
    assert list(recs.columns) == ["user", "rank", "item", "score", "item_text"]
    assert list(recs["user"].drop_duplicates()) == ["u3", "u0", "u150"] and len(recs) == 4 * K
    dataset = trained.dataset
    for position, user in enumerate(users):
        rows = recs.iloc[position * K:(position + 1) * K]
        expected_items, expected_scores = _reference_top(trained, user, K)
        assert rows["user"].tolist() == [user] * K and rows["rank"].tolist() == list(range(1, K + 1))
        assert rows["item"].tolist() == expected_items
        np.testing.assert_allclose(rows["score"].to_numpy(), expected_scores, rtol=1e-5, atol=1e-7)
        u = dataset.user_ids.index(user)
        seen = {dataset.item_ids[i] for i in dataset.history(u, "train") + dataset.history(u, "valid")}
        assert seen and not seen & set(rows["item"])
        assert rows["item_text"].tolist() == [dataset.item_text[dataset.item_ids.index(i)] for i in rows["item"]]


def test_include_seen_ranks_every_item_and_int_ids_are_their_text(trained):
    kept = trained.recommend("u0", k=60, exclude_seen=False)
    assert sorted(kept["item"]) == sorted(trained.dataset.item_ids)
    assert kept["item"].tolist() == _reference_top(trained, "u0", 60, exclude_seen=False)[0]
    unseen = trained.recommend("u0", k=60)
    n_seen = len(trained.dataset.history(0, "train")) + len(trained.dataset.history(0, "valid"))
    assert len(unseen) == 60 - n_seen  # fewer rows than k when fewer items are left


def test_recommend_all_users_blocks_agree_with_one_block(run_dir):
    small_blocks = cikg.load_model(run_dir, block_size=7).recommend(k=5)
    one_block = cikg.load_model(run_dir, block_size=10_000).recommend(k=5)
    assert small_blocks["user"].nunique() == 200 and len(small_blocks) == 1000
    pd.testing.assert_frame_equal(small_blocks, one_block)


def test_unknown_ids_and_bad_k_are_named(trained):
    with pytest.raises(UnknownIdError, match="unknown user id 'nobody'.*200 users") as err:
        trained.recommend(["u1", "nobody"])
    assert err.value.ids == ["nobody"]
    with pytest.raises(UnknownIdError, match="unknown item id 'i999'"):
        trained.score(["u1"], items=["i1", "i999"])
    with pytest.raises(cikg.CikgError, match="k must be a positive integer, got 0"):
        trained.recommend("u1", k=0)


def test_ties_go_to_the_lower_item_id():
    """All scores equal: the ranking is the unseen items in ascending dense id, as in the evaluation."""
    from cikg.data import synthetic
    from cikg.models import BPRMF

    dataset = synthetic(30, 24, seed=1)
    model = BPRMF(dataset.n_users, dataset.n_items)
    with torch.no_grad():
        model.user_emb.weight.fill_(1.0)
        model.item_emb.weight.fill_(0.5)
    recs = TrainedModel(model, dataset).recommend("u4", k=5)
    seen = set(dataset.history(4, "train") + dataset.history(4, "valid"))
    assert recs["item"].tolist() == [dataset.item_ids[i] for i in range(24) if i not in seen][:5]
    assert (recs["score"] == recs["score"].iloc[0]).all()


def test_score_and_embeddings_are_keyed_by_original_ids(trained):
    user_emb, item_emb = _embed(trained)
    users, items = trained.user_embeddings(), trained.item_embeddings()
    assert users.index.name == "user" and users.index[5] == "u5" and list(users.columns[:2]) == ["e0", "e1"]
    np.testing.assert_allclose(users.to_numpy(), user_emb.numpy(), rtol=1e-6)
    np.testing.assert_allclose(items.loc[["i9"]].to_numpy(), item_emb[9:10].numpy(), rtol=1e-6)
    scores = trained.score(["u2", "u8"], items=["i4", "i1"])
    assert list(scores.index) == ["u2", "u8"] and list(scores.columns) == ["i4", "i1"]
    np.testing.assert_allclose(scores.to_numpy(), (user_emb[[2, 8]] @ item_emb[[4, 1]].t()).numpy(), rtol=1e-5)
    assert trained.score("u2").shape == (1, 60)
    interests = trained.embeddings_frame("interest")
    assert list(interests.index) == [str(i) for i in trained.dataset.interest_ids]
    assert len(trained.embeddings_frame("entity")) == trained.dataset.n_kg_entities


def test_collaborative_lightgcn_has_no_entity_embeddings(small_synthetic):
    from cikg.graph import build_cikg, build_views
    from cikg.models import LightGCNConfig

    views = build_views(build_cikg(small_synthetic), views=())
    model = TrainedModel(LightGCNConfig(dim=8).build(views), small_synthetic)
    assert model.node_types == ("user", "item")
    with pytest.raises(cikg.CikgError, match="no entity embeddings; it has user, item"):
        model.embeddings_frame("entity")


@pytest.mark.parametrize("name,expected", [("bprmf", ("user", "item")), ("kgat", ("user", "item", "entity")),
                                           ("kgin", ("user", "item", "entity")),
                                           ("cikgrec", ("user", "item", "entity", "interest"))])
def test_each_model_exposes_the_node_types_it_trains(small_synthetic, name, expected):
    """node_embeddings rows are the model's final embeddings: user/item equal embed(), and the scores are
    their inner products (what FAISS and fold-in rely on)."""
    from cikg.graph import build_cikg, build_views
    from cikg.models import MODEL_CONFIGS

    views = build_views(build_cikg(small_synthetic), views=())
    config = MODEL_CONFIGS[name](dim=8) if name != "cikgrec" else MODEL_CONFIGS[name](dim=8, use_transe=False)
    model = TrainedModel(config.build(views, small_synthetic), small_synthetic)
    assert model.node_types == expected and model.inner_product
    with torch.no_grad():
        user_emb, item_emb = model.model.embed()
    np.testing.assert_allclose(model.user_embeddings().to_numpy(), user_emb.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.item_embeddings().to_numpy(), item_emb.detach().numpy(), rtol=1e-6)
    if "entity" in expected:
        assert len(model.embeddings_frame("entity")) == small_synthetic.n_kg_entities
    if "interest" in expected:
        assert len(model.embeddings_frame("interest")) == small_synthetic.n_interests


def test_fold_in_is_the_mean_of_the_given_items_and_excludes_them(trained):
    item_emb = _embed(trained)[1]
    given = ["i3", "i10", "i42"]
    recs = trained.recommend_for_items(given, k=K)
    scores = (item_emb[[3, 10, 42]].mean(0) @ item_emb.t()).numpy()
    scores[[3, 10, 42]] = -np.inf
    order = np.lexsort((np.arange(60), -scores))[:K]
    assert recs["item"].tolist() == [f"i{i}" for i in order] and recs["rank"].tolist() == list(range(1, K + 1))
    similar = trained.similar_items("i3", k=K)
    unit = torch.nn.functional.normalize(item_emb, dim=1)
    cosine = (unit[3] @ unit.t()).numpy()
    cosine[3] = -np.inf
    assert similar["item"].tolist() == [f"i{i}" for i in np.lexsort((np.arange(60), -cosine))[:K]]
    assert similar["score"].max() <= 1.0 + 1e-6


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_recommend_writes_csv_and_parquet(trained, run_dir, tmp_path, capsys):
    out = tmp_path / "recs.csv"
    assert main(["recommend", str(run_dir), "--users", "u3,u0", "-k", str(K), "-o", str(out)]) == 0
    frame = pd.read_csv(out)
    pd.testing.assert_frame_equal(frame, trained.recommend(["u3", "u0"], k=K), check_dtype=False)
    users_file = tmp_path / "users.txt"
    users_file.write_text("# users to score\nu5\n\nu6\n")
    assert main(["recommend", str(run_dir), "--users-file", str(users_file), "-o", str(tmp_path / "r.parquet"),
                 "--include-seen", "-k", "3"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"),
                                  trained.recommend(["u5", "u6"], k=3, exclude_seen=False))
    assert main(["recommend", str(run_dir), "--all", "-k", "2", "-o", str(tmp_path / "all.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "all.csv")) == 400
    assert "wrote 400 recommendations for 200 users (seen items excluded)" in capsys.readouterr().out


def test_cli_recommend_errors_are_one_line(run_dir, tmp_path, capsys):
    users_file = tmp_path / "users.txt"
    users_file.write_text("u5\nghost\n")
    assert main(["recommend", str(run_dir), "--users-file", str(users_file)]) == 2
    assert f"{users_file}:2: unknown user id 'ghost'" in capsys.readouterr().err
    assert main(["recommend", str(run_dir), "--users", "u1", "-o", str(tmp_path / "r.json")]) == 2
    assert "expected a .csv or .parquet output file" in capsys.readouterr().err
    assert main(["recommend", str(tmp_path), "--users", "u1"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["recommend", str(run_dir), "--users", "u1", "-k", "0"]) == 2
    with pytest.raises(SystemExit):  # exactly one of --users / --users-file / --all
        main(["recommend", str(run_dir)])


def test_cli_serve_on_a_busy_port_is_one_line(run_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


def test_export_parquet_and_faiss_top_k_equals_exact_top_k(trained, run_dir, tmp_path):
    import faiss

    out = tmp_path / "export"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    users, items = pd.read_parquet(out / "users.parquet"), pd.read_parquet(out / "items.parquet")
    assert users["user"].tolist() == trained.dataset.user_ids and items["item"].tolist() == trained.dataset.item_ids
    assert items["item_text"].tolist() == trained.dataset.item_text
    entities, interests = pd.read_parquet(out / "entities.parquet"), pd.read_parquet(out / "interests.parquet")
    assert entities["entity"].tolist() == trained.dataset.entity_ids[60:]
    assert interests["label"].tolist() == trained.dataset.interest_labels
    index = faiss.read_index(str(out / "items.faiss"))
    assert index.ntotal == 60 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    vectors = users.filter(regex=r"^e\d+$").to_numpy(dtype=np.float32)
    distances, labels = index.search(np.ascontiguousarray(vectors), 10)
    exact = trained.recommend(k=10, exclude_seen=False)
    assert (items["item"].to_numpy()[labels].reshape(-1) == exact["item"].to_numpy()).all()
    np.testing.assert_allclose(distances.reshape(-1), exact["score"].to_numpy(), rtol=1e-4, atol=1e-6)
    manifest = __import__("json").loads((out / "export.json").read_text())
    assert manifest["model"] == "lightgcn-cikg" and manifest["dim"] == 16
    assert manifest["files"]["items.faiss"]["type"] == "IndexFlatIP"


# ---------------------------------------------------------------------------------------------- HTTP
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained):
    """uvicorn serving the app for real on 127.0.0.1 (a free port), in a thread of this process."""
    import uvicorn

    from cikg.serving.app import create_app

    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(create_app(trained), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def test_http_health_and_recommend_answer_from_the_model(server, trained):
    import httpx

    with httpx.Client(base_url=server, timeout=10) as client:
        health = client.get("/health").json()
        assert health == {"status": "ok", "run": str(trained.run_dir), "model": "lightgcn-cikg",
                          "dataset": trained.dataset.name, "users": 200, "items": 60, "dim": 16}
        body = client.get("/recommend", params={"user": "u3", "k": K}).json()
        expected = trained.recommend("u3", k=K)
        assert body["user"] == "u3" and body["k"] == K
        assert [r["item"] for r in body["items"]] == expected["item"].tolist()
        assert [r["rank"] for r in body["items"]] == list(range(1, K + 1))
        np.testing.assert_allclose([r["score"] for r in body["items"]], expected["score"], rtol=1e-6)
        assert body["items"][0]["item_text"] == expected["item_text"].iloc[0]
        kept = client.get("/recommend", params={"user": "u3", "k": 60, "include_seen": "true"}).json()
        assert len(kept["items"]) == 60


def test_http_fold_in_and_similar_items(server, trained):
    import httpx

    with httpx.Client(base_url=server, timeout=10) as client:
        response = client.post("/recommend", json={"items": ["i3", "i10", "i42"], "k": K})
        assert response.status_code == 200
        assert [r["item"] for r in response.json()["items"]] == \
            trained.recommend_for_items(["i3", "i10", "i42"], k=K)["item"].tolist()
        similar = client.get("/similar-items", params={"item": "i3", "k": 4}).json()
        assert [r["item"] for r in similar["items"]] == trained.similar_items("i3", k=4)["item"].tolist()
        assert client.get("/similar-items", params={"item": "i3"}).json()["k"] == 10  # the default k


@pytest.mark.parametrize("method,path,kwargs,status,text", [
    ("GET", "/recommend", {"params": {"user": "nobody"}}, 404, "unknown user id 'nobody'"),
    ("GET", "/similar-items", {"params": {"item": "i999"}}, 404, "unknown item id 'i999'"),
    ("POST", "/recommend", {"json": {"items": ["i1", "ghost"]}}, 404, "unknown item id 'ghost'"),
    ("GET", "/recommend", {"params": {"user": "u1", "k": 0}}, 422, "greater than or equal to 1"),
    ("GET", "/recommend", {"params": {"user": "u1", "k": 61}}, 422, "less than or equal to 60"),
    ("GET", "/recommend", {"params": {"user": "u1", "k": "ten"}}, 422, "valid integer"),
    ("GET", "/recommend", {"params": {}}, 422, "user"),
    ("POST", "/recommend", {"json": {"items": []}}, 422, "at least 1 item"),
    ("POST", "/recommend", {"json": {"k": 3}}, 422, "items"),
    ("GET", "/similar-items", {"params": {"item": "i1", "k": -2}}, 422, "greater than or equal to 1"),
])
def test_http_errors(server, method, path, kwargs, status, text):
    import httpx

    response = httpx.request(method, server + path, timeout=10, **kwargs)
    assert response.status_code == status, response.text
    assert text in response.text


@pytest.mark.parametrize("stop", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])  # one process start is ~10 s idle, a minute on busy cores
def test_cikg_serve_subprocess_answers_and_stops_on_signal(run_dir, trained, tmp_path, stop):
    import httpx

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cikg", "serve", str(run_dir), "--port", str(port),
                             "--threads", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "cikg serve did not come up"
            time.sleep(0.2)
        body = httpx.get(url + "/recommend", params={"user": "u0", "k": 5}, timeout=10).json()
        assert [r["item"] for r in body["items"]] == trained.recommend("u0", k=5)["item"].tolist()
        assert httpx.get(url + "/recommend", params={"user": "zz"}, timeout=10).status_code == 404
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert f"on http://127.0.0.1:{port}" in text and "Shutting down" in text and f"stopped by {stop.name}" in text
