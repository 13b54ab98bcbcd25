"""Interest structuring: real MiniLM embedding and its cache, clustering, drop thresholds, labels, files."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cikg.errors import CikgError, ConfigError, DatasetError
from cikg.interests import (
    ClusterConfig,
    ClusterMethod,
    EmbeddingCache,
    EmbeddingKind,
    Encoder,
    centroid_distances,
    cluster_vectors,
    fit_interests,
    most_central,
    normalise_phrases,
    read_clustered,
    read_raw_interests,
    save_interests,
    structure_interests,
    tfidf_vectors,
)
from cikg.interests.commands import register_cluster
from cikg.interests.embed import DEFAULT_MODEL_NAME

TOPICS = {
    "scifi": [
        "science fiction",
        "sci-fi novels",
        "space opera",
        "science fiction novels",
        "futuristic space travel",
    ],
    "romance": ["romance", "love stories", "romantic novels", "romance fiction"],
    "cooking": ["cooking", "recipes", "baking bread", "culinary arts"],
}


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine is shared: spinning OpenMP/BLAS threads make KMeans 10-100x slower under load.
    (Per test, so that runtimes loaded later, like torch's libgomp, are capped too.)"""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def encoder():
    return Encoder(show_progress=False)


def topic_pairs(users_per_topic):
    """Users hold two phrases of one topic each: ``users_per_topic`` = {topic: n users}."""
    rows, user = [], 0
    for topic, n in users_per_topic.items():
        phrases = TOPICS.get(topic) or GROUPS[topic]
        for i in range(n):
            rows += [(user, phrases[i % len(phrases)]), (user, phrases[(i + 1) % len(phrases)])]
            user += 1
    return pd.DataFrame(rows, columns=["user", "phrase"])


GROUPS = {
    "history": ["ancient rome", "medieval history", "world war two history", "the roman empire"],
    "gardening": ["gardening", "growing vegetables", "flower gardens"],
    "sports": ["football", "soccer matches", "basketball", "tennis tournaments"],
    "music": ["jazz music", "classical music", "rock bands", "playing guitar"],
}


def clusters_of(clustering, phrases):
    table = clustering.phrases.set_index("phrase")
    return set(table.loc[[p.lower() for p in phrases], "cluster"])


# --------------------------------------------------------------------------------------------- embedding
def test_minilm_vectors_are_normalised_and_semantic(encoder):
    vec = encoder.encode(["science fiction", "sci-fi novels", "love stories", "science fiction"])
    assert vec.shape == (4, 384) and vec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vec[0], vec[3])
    assert vec[0] @ vec[1] > vec[0] @ vec[2] + 0.2


def test_cache_avoids_re_embedding(encoder, tmp_path):
    path = tmp_path / "emb.sqlite"
    first = encoder.with_cache(path)
    a = first.encode(["baking bread", "ancient rome", "baking bread", "gardening"])
    assert first.n_encoded == 3 and first.n_cached == 0
    first.encode(["gardening", "ancient rome", "love stories"])
    assert first.n_encoded == 4 and first.n_cached == 2
    first.cache.close()
    # a new encoder on the same file (a re-run) encodes nothing it has seen, and gets the same vectors
    again = encoder.with_cache(path)
    b = again.encode(["baking bread", "ancient rome", "gardening", "love stories"])
    assert again.n_encoded == 0 and again.n_cached == 4
    np.testing.assert_array_equal(a[[0, 1, 3]], b[:3])
    np.testing.assert_allclose(
        b, encoder.encode(["baking bread", "ancient rome", "gardening", "love stories"]), atol=1e-5
    )
    # vectors are keyed by model name too
    other = Encoder(EmbeddingCache(path), model_name="another-model", show_progress=False)
    other._model = encoder.model
    other.encode(["gardening"])
    assert other.n_encoded == 1 and len(other.cache) == 5


def test_interrupted_encoding_resumes_from_the_cache(encoder, tmp_path):
    class FailsOnSecondBatch:
        def __init__(self, model):
            self.model, self.calls = model, 0

        def encode(self, texts, **kwargs):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return self.model.encode(texts, **kwargs)

    texts = ["chess openings", "jazz piano", "mountain hiking", "sailing", "watercolour painting"]
    broken = encoder.with_cache(tmp_path / "c.sqlite")
    broken.batch_size = 2
    broken._model = FailsOnSecondBatch(encoder.model)
    with pytest.raises(KeyboardInterrupt):
        broken.encode(texts)
    assert len(broken.cache) == 2  # the first batch was committed before the interruption
    broken.cache.close()
    resumed = encoder.with_cache(tmp_path / "c.sqlite")
    vectors = resumed.encode(texts)
    assert resumed.n_cached == 2 and resumed.n_encoded == 3
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=1e-5)


def test_fit_interests_encodes_only_new_phrases(encoder, tmp_path):
    enc = encoder.with_cache(tmp_path / "c.sqlite")
    pairs = topic_pairs({"scifi": 5, "romance": 5, "cooking": 5})
    config = ClusterConfig(kappa=3, max_user_fraction=0.5)
    fit_interests(pairs, config, encoder=enc)
    assert enc.n_encoded == pairs["phrase"].nunique() == 13
    more = pd.concat([pairs, pd.DataFrame({"user": [0, 1], "phrase": ["Space Opera.", "galactic empires"]})])
    fit_interests(more, config, encoder=enc)
    assert enc.n_encoded == 14  # "Space Opera." normalises to a cached phrase; one new phrase


def test_tfidf_vectors():
    x = tfidf_vectors(["roman history", "history of rome", "baking bread", "bread recipes", "!!"])
    assert sp.issparse(x) and x.shape[0] == 5
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    np.testing.assert_allclose(norms, [1, 1, 1, 1, 0], atol=1e-6)
    vocab_pairs = (x @ x.T).toarray()
    assert vocab_pairs[0, 1] > 0 and vocab_pairs[0, 2] == 0 and vocab_pairs[2, 3] > 0


# --------------------------------------------------------------------------------------------- clustering
@pytest.mark.parametrize("method", ["kmeans", "minibatch", "agglomerative"])
def test_minilm_groups_obvious_topics(encoder, method):
    pairs = topic_pairs({"scifi": 6, "romance": 6, "cooking": 6})
    fit = fit_interests(pairs, ClusterConfig(kappa=3, method=method, max_user_fraction=0.5), encoder=encoder)
    found = [clusters_of(fit, phrases) for phrases in TOPICS.values()]
    assert all(len(c) == 1 for c in found), fit.phrases[["phrase", "cluster"]]
    assert sorted(c.pop() for c in found) == [0, 1, 2]
    assert fit.method is ClusterMethod(method) and fit.n_interests == 3


def test_drop_thresholds_and_dense_ids(encoder):
    # 20 users: history 10, gardening 4 (= 1/5: dropped with the plain cap, no floor), music 3, sports 2,
    # cooking 1 (singleton: dropped)
    pairs = topic_pairs({"history": 10, "gardening": 4, "music": 3, "sports": 2, "cooking": 1})
    fit = fit_interests(pairs, ClusterConfig(kappa=5, min_cap_users=1), encoder=encoder, id_offset=100)
    assert fit.n_users == 20
    assert fit.dropped == {"too_few_users": 1, "too_many_users": 2}
    assert fit.n_interests == 2 and fit.labels and fit.interest_ids == [100, 101]
    assert clusters_of(fit, GROUPS["music"]) == {0} and clusters_of(fit, GROUPS["sports"][:3]) == {1}
    for gone in (GROUPS["history"], GROUPS["gardening"], TOPICS["cooking"][:2]):
        assert clusters_of(fit, gone) == {-1}
    np.testing.assert_array_equal(fit.interest_users, [3, 2])
    assert set(fit.edges[1].tolist()) == {0, 1}
    np.testing.assert_array_equal(np.bincount(fit.edges[1]), fit.interest_users)
    assert fit.edges[0].tolist() == [14, 15, 16, 17, 18]  # music users 14-16, sports 17-18
    # every user is listed, with the phrases as given; dropped interests are not assigned
    assert len(fit.assignments) == 20 and fit.assignments.loc[0, "clusters"] == []
    assert fit.assignments.loc[14, "clusters"] == [0] and len(fit.assignments.loc[14, "phrases"]) == 2

    # both thresholds are settings: keep singletons and anything held by less than 60% of users
    loose = fit_interests(pairs, ClusterConfig(kappa=5, min_users=1, max_user_fraction=0.6), encoder=encoder)
    assert loose.n_interests == 5 and loose.dropped == {"too_few_users": 0, "too_many_users": 0}
    np.testing.assert_array_equal(loose.interest_users, [10, 4, 3, 2, 1])  # dense ids: most held first
    assert clusters_of(loose, GROUPS["history"]) == {0} and clusters_of(loose, TOPICS["cooking"][:2]) == {4}
    assert "interests=5" in repr(loose) and "kappa=5" in repr(loose)


def test_label_is_the_most_central_phrase(encoder):
    pairs = topic_pairs({"scifi": 6, "romance": 6, "cooking": 6})
    fit = fit_interests(pairs, ClusterConfig(kappa=3, max_user_fraction=0.5), encoder=encoder)
    for cluster, label in enumerate(fit.labels):
        members = fit.phrases.loc[fit.phrases["cluster"] == cluster, "phrase"].tolist()
        vec = encoder.encode(members)
        distance = np.linalg.norm(vec - vec.mean(0), axis=1)
        assert label == members[int(np.argmin(distance))]
        assert (fit.phrases.loc[fit.phrases["cluster"] == cluster, "label"] == label).all()


def test_centroid_distances_and_most_central_by_hand():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.4, 0.0], [5.0, 5.0], [7.0, 5.0]])
    labels = np.array([0, 0, 0, 1, 1])
    d = centroid_distances(x, labels, 2)
    np.testing.assert_allclose(d, [1.4 / 3, 1.6 / 3, 0.2 / 3, 1.0, 1.0], atol=1e-9)
    np.testing.assert_array_equal(most_central(labels, d, 2), [2, 3])  # tie -> lower index
    np.testing.assert_allclose(centroid_distances(sp.csr_matrix(x), labels, 2), d, atol=1e-9)


@pytest.mark.parametrize("method", ["kmeans", "minibatch", "agglomerative"])
def test_silhouette_search_finds_planted_kappa(method):
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(
        n_samples=600, centers=6, n_features=16, cluster_std=0.6, center_box=(-20, 20), random_state=7
    )
    fitted = cluster_vectors(x, ClusterConfig(kappa_range=(2, 10), method=method, silhouette_sample=400))
    curve = fitted.curve
    assert curve["kappa"].tolist() == list(range(2, 11))
    assert fitted.kappa == 6 == int(curve.loc[curve["silhouette"].idxmax(), "kappa"])
    assert curve["silhouette"].max() > 0.6 and np.unique(fitted.labels).size == 6


def test_search_is_seeded_and_stepped():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    config = ClusterConfig(kappa_range=(2, 12), kappa_step=5, seed=3, silhouette_sample=100)
    a, b = cluster_vectors(x, config), cluster_vectors(x, config)
    assert a.curve["kappa"].tolist() == [2, 7, 12]
    pd.testing.assert_frame_equal(a.curve, b.curve)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_tfidf_path_clusters_by_shared_words():
    pairs = pd.DataFrame(
        {
            "user": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
            "phrase": [
                "roman history",
                "history of rome",
                "roman history",
                "rome history",
                "history of rome",
                "rome history",
                "bread baking",
                "baking bread recipes",
                "bread recipes",
                "bread baking",
                "baking bread recipes",
                "bread recipes",
            ],
        }
    )
    fit = fit_interests(pairs, ClusterConfig(kappa=2, embedding="tfidf", max_user_fraction=0.6))
    assert fit.config.embedding is EmbeddingKind.TFIDF
    assert fit.n_interests == 2
    assert clusters_of(fit, ["roman history", "history of rome", "rome history"]) != clusters_of(
        fit, ["bread baking", "bread recipes", "baking bread recipes"]
    )
    assert all(
        len(c) == 1
        for c in (
            clusters_of(fit, ["roman history", "history of rome", "rome history"]),
            clusters_of(fit, ["bread baking", "bread recipes"]),
        )
    )
    assert fit.edges.shape == (2, 6)


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({}, "kappa"),
        ({"kappa": 5, "kappa_range": (2, 6)}, "kappa"),
        ({"kappa": 1}, "kappa"),
        ({"kappa_range": (6, 2)}, "kappa_range"),
        ({"kappa": 4, "method": "dbscan"}, "method"),
        ({"kappa": 4, "embedding": "word2vec"}, "embedding"),
        ({"kappa": 4, "max_user_fraction": 0}, "max_user_fraction"),
        ({"kappa": 4, "min_users": 0}, "min_users"),
        ({"kappa": 4, "seed": -1}, "seed"),
        ({"kappa": 4, "n_threads": 0}, "n_threads"),
    ],
)
def test_config_is_validated_early(kwargs, key):
    with pytest.raises(ConfigError) as err:
        ClusterConfig(**kwargs)
    assert err.value.key == key
    assert "expected" in str(err.value) or "exactly one" in str(err.value)


def test_bad_pairs_are_named():
    with pytest.raises(DatasetError, match="lacks column"):
        fit_interests(pd.DataFrame({"user": [0]}), ClusterConfig(kappa=2, embedding="tfidf"))
    with pytest.raises(DatasetError, match="row 1: user -3"):
        fit_interests(
            pd.DataFrame({"user": [0, -3], "phrase": ["a", "b"]}), ClusterConfig(kappa=2, embedding="tfidf")
        )
    with pytest.raises(DatasetError, match=r"row 1 \(user 1\): phrase 7"):
        fit_interests(
            pd.DataFrame({"user": [0, 1], "phrase": ["a", 7]}), ClusterConfig(kappa=2, embedding="tfidf")
        )
    with pytest.raises(ConfigError, match="kappa=9 exceeds the 3 distinct"):
        fit_interests(
            pd.DataFrame({"user": [0, 1, 2], "phrase": ["a b", "c d", "e f"]}),
            ClusterConfig(kappa=9, embedding="tfidf"),
        )


# --------------------------------------------------------------------------------------------- files
def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def raw_records(pairs):
    grouped = pairs.groupby("user")["phrase"].agg(list)
    return [
        {
            "user": int(u),
            "user_id": f"u{u}",
            "phrases": p,
            "raw": ", ".join(p),
            "status": "ok",
            "backend": "test",
        }
        for u, p in grouped.items()
    ]


def test_read_raw_interests_jsonl(tmp_path):
    path = tmp_path / "user_interests_raw.jsonl"
    write_jsonl(
        path,
        [
            {
                "user": 3,
                "user_id": "77",
                "phrases": ["Sci-Fi", " space opera "],
                "raw": "x",
                "status": "ok",
                "backend": "b",
            },
            {"user": 1, "user_id": "12", "phrases": [], "raw": "", "status": "unparsed", "backend": "b"},
            {"user": 3, "user_id": "77", "phrases": ["romance"], "raw": "y", "status": "ok", "backend": "b"},
        ],
    )
    frame = read_raw_interests(tmp_path)
    assert frame.to_dict("list") == {"user": [1, 3], "user_id": ["12", "77"], "phrase": [None, "romance"]}
    path.write_text('{"user": 0, "phrases": ["a"]}\n{"user": 1, "phrases": ["b"\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"user_interests_raw.jsonl:2: not valid JSON"):
        read_raw_interests(path)
    path.write_text('{"user": 0, "phrases": "a, b"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r":1: user 0: field 'phrases' must be a list"):
        read_raw_interests(path)
    path.write_text('{"user": "zero", "phrases": []}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r":1: field 'user' must be"):
        read_raw_interests(path)


def test_outputs_round_trip(encoder, tmp_path, small_synthetic):
    from cikg.data import load_interests

    pairs = topic_pairs({"history": 10, "gardening": 4, "music": 3, "sports": 2, "cooking": 1})
    records = raw_records(pairs) + [
        {"user": 40, "user_id": "u40", "phrases": [], "raw": "?", "status": "empty", "backend": "test"}
    ]
    write_jsonl(tmp_path / "user_interests_raw.jsonl", records)
    result = structure_interests(
        tmp_path,
        ClusterConfig(kappa_range=(4, 6)),
        dataset=small_synthetic,
        encoder=encoder,
        out_dir=tmp_path,
    )
    fit = result.clustering
    offset = small_synthetic.n_entities
    assert fit.id_offset == offset and fit.silhouette is not None and len(fit.silhouette) == 3

    table = read_clustered(tmp_path)
    np.testing.assert_array_equal(table, np.stack([fit.edges[0], fit.edges[1] + offset], axis=1))
    lines = (tmp_path / "user_interest_clustered.txt").read_text().splitlines()
    assert lines[0] == f"{fit.edges[0, 0]} {fit.edges[1, 0] + offset}"
    labels = (tmp_path / "interest_list.txt").read_text(encoding="utf-8").splitlines()
    assert labels[0] == "org_id remap_id label" and labels[1] == f"{offset} 0 {fit.labels[0]}"

    phrases = pd.read_parquet(tmp_path / "interests.parquet")
    assert {"phrase", "cluster", "label", "n_users"} <= set(phrases.columns)
    pd.testing.assert_frame_equal(phrases, fit.phrases, check_dtype=False)
    users = pd.read_parquet(tmp_path / "user_interests.parquet")
    assert users["user"].tolist() == sorted(pairs["user"].unique().tolist() + [40])
    assert users.set_index("user").loc[40, "clusters"].tolist() == []
    assert users.set_index("user").loc[40, "user_id"] == "u40"
    assert [list(c) for c in users["clusters"]] == fit.assignments["clusters"].tolist()
    curve = pd.read_csv(tmp_path / "silhouette.csv")
    assert curve["kappa"].tolist() == [4, 5, 6]
    summary = json.loads((tmp_path / "interests_summary.json").read_text())
    assert summary["interests"] == fit.n_interests and summary["kappa"] == fit.kappa

    # the dataset layer reads the files back to the same dataset that to_dataset() gives
    updated = result.dataset
    reread = load_interests(small_synthetic, tmp_path)
    assert updated.n_interests == reread.n_interests == fit.n_interests
    assert updated.interest_ids == reread.interest_ids == [offset + i for i in range(fit.n_interests)]
    assert updated.interest_labels == reread.interest_labels == fit.labels
    assert bool((updated.user_interest == reread.user_interest).all())


def test_to_dataset_rejects_unknown_users(encoder, small_synthetic):
    pairs = topic_pairs({"scifi": 3, "romance": 3})
    pairs["user"] += small_synthetic.n_users - 2
    fit = fit_interests(pairs, ClusterConfig(kappa=2, max_user_fraction=0.9), encoder=encoder)
    with pytest.raises(CikgError, match=f"has only {small_synthetic.n_users} users"):
        fit.to_dataset(small_synthetic)


# --------------------------------------------------------------------------------------------- command
def run_command(argv):
    parser = argparse.ArgumentParser()
    register_cluster(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cluster_command(tmp_path, data_dir, capsys):
    pairs = topic_pairs({"music": 6, "sports": 6, "cooking": 6, "history": 5})
    write_jsonl(tmp_path / "user_interests_raw.jsonl", raw_records(pairs))
    (tmp_path / "meta.json").write_text(json.dumps({"dataset": str(data_dir / "dbbook2014")}))
    assert (
        run_command(
            ["cluster", str(tmp_path), "--search", "3:5", "--max-user-fraction", "0.3", "--threads", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "kappa=4" in out and "silhouette by kappa: 3:" in out and "id offset 8908" in out
    table = read_clustered(tmp_path)
    assert table[:, 1].min() == 8908 and table[:, 1].max() == 8908 + 3
    cache = EmbeddingCache(tmp_path / "embedding_cache.sqlite")
    phrases = list(pairs["phrase"].unique())
    assert len(cache.get(DEFAULT_MODEL_NAME, phrases)) == len(phrases)
    assert len(cache) > len(phrases)  # and the item titles, which the report's predictive score embeds
    assert "score clusters/mean" in out and (tmp_path / "report.md").is_file()
    cache.close()

    with pytest.raises(DatasetError, match="no dataset named 'nonexistent_dataset_name'"):
        run_command(["cluster", str(tmp_path), "--kappa", "4", "--dataset", "nonexistent_dataset_name"])
    with pytest.raises(SystemExit):
        run_command(["cluster", str(tmp_path), "--search", "3-5"])
    with pytest.raises(DatasetError, match="run directory not found"):
        run_command(["cluster", str(tmp_path / "nowhere"), "--kappa", "3"])
    (tmp_path / "user_interests_raw.jsonl").unlink()
    with pytest.raises(DatasetError, match="interest file not found"):
        run_command(["cluster", str(tmp_path), "--kappa", "3"])


# --------------------------------------------------------------------------------------------- real data
def dbbook_title_pairs(dataset, n_users=300, last=5):
    """dbbook2014 item titles (last URI segment of item_list.txt) of users' last train items, as phrases."""
    rows = [
        (user, dataset.item_text[item])
        for user in range(n_users)
        for item in dataset.history(user, last=last)
        if dataset.item_text[item]
    ]
    return pd.DataFrame(rows, columns=["user", "phrase"])


@pytest.mark.parametrize("embedding", ["minilm", "tfidf"])
def test_dbbook_titles_as_phrases(dbbook, encoder, embedding, tmp_path):
    from cikg.data import load_interests

    pairs = dbbook_title_pairs(dbbook)
    assert len(pairs) > 1000
    config = ClusterConfig(kappa_range=(20, 60), kappa_step=20, embedding=embedding)
    fit = fit_interests(pairs, config, encoder=encoder, id_offset=dbbook.n_entities)
    n_phrases = normalise_phrases(pairs["phrase"]).nunique()
    assert len(fit.phrases) == n_phrases > 700 and fit.n_users == 300
    assert fit.kappa in (20, 40, 60) and fit.silhouette["kappa"].tolist() == [20, 40, 60]
    assert fit.kappa == int(fit.silhouette.loc[fit.silhouette["silhouette"].idxmax(), "kappa"])

    # every kept interest is held by 2 .. < 60 users (a fifth of 300), dense ids 0..n-1, most held first
    assert fit.n_interests + sum(fit.dropped.values()) == fit.kappa
    np.testing.assert_array_equal(np.unique(fit.edges[1]), np.arange(fit.n_interests))
    held = np.bincount(fit.edges[1], minlength=fit.n_interests)
    np.testing.assert_array_equal(held, fit.interest_users)
    assert held.min() >= 2 and held.max() < 60 and (np.diff(held) <= 0).all()

    # a user holds exactly the kept clusters of the user's phrases
    keyed = pairs.assign(key=normalise_phrases(pairs["phrase"])).merge(
        fit.phrases[["phrase", "cluster"]], left_on="key", right_on="phrase"
    )
    expected = keyed[keyed["cluster"] >= 0].groupby("user")["cluster"].agg(lambda c: sorted(set(c)))
    got = fit.assignments.set_index("user")["clusters"]
    assert all(got[u] == expected.get(u, []) for u in got.index)

    # labels are member phrases with the smallest distance to their cluster mean
    kept = fit.phrases[fit.phrases["kept"]]
    central = kept.sort_values(["cluster", "distance"], kind="stable").groupby("cluster")["phrase"].first()
    assert central.tolist() == fit.labels

    updated = fit.to_dataset(dbbook)
    save_interests(fit, tmp_path)
    reread = load_interests(dbbook, tmp_path)
    assert updated.n_interests == reread.n_interests == fit.n_interests
    assert reread.interest_ids[0] == dbbook.n_entities == 8908
    assert reread.interest_labels == fit.labels
    assert bool((updated.user_interest == reread.user_interest).all())


def test_cli_reads_the_llm_run_directory(tmp_path, data_dir, capsys):
    from cikg.cli import main
    from cikg.interests.io import RAW_FILE as READ_FILE
    from cikg.llm import RAW_FILE

    assert READ_FILE == RAW_FILE
    pairs = topic_pairs({"music": 6, "sports": 6, "cooking": 6, "history": 5})
    records = raw_records(pairs)
    records[0]["raw"] = None  # as the LLM layer writes for skipped users
    write_jsonl(tmp_path / RAW_FILE, records)
    (tmp_path / "llm_summary.json").write_text(json.dumps({"dataset": "dbbook2014", "parse": {}}))
    rc = main(
        [
            "interests",
            "cluster",
            str(tmp_path),
            "--kappa",
            "4",
            "--embedding",
            "tfidf",
            "--max-user-fraction",
            "0.3",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    assert "dataset: dbbook2014; id offset 8908" in capsys.readouterr().out
    assert read_clustered(tmp_path)[:, 1].min() == 8908
    (tmp_path / "llm_summary.json").write_text(json.dumps({"dataset": "synthetic-run-42"}))
    assert main(["interests", "cluster", str(tmp_path), "--kappa", "4", "--embedding", "tfidf"]) == 2
    assert "pass --dataset" in capsys.readouterr().err
