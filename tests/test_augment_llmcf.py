"""LLM-CF on a real subset of dbbook2014: examples, offline CoT, replay, exact retrieval, ICT pre-training."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cikg.augment import llmcf
from cikg.augment.base import NodeFeatures
from cikg.augment.llmcf import (
    CoTProfileBackend,
    ICTModule,
    LLMCFConfig,
    build_cot_dataset,
    cf_embeddings,
    generate_cot,
    retrieve,
    sample_examples,
)
from cikg.errors import ConfigError, GraphError
from cikg.llm import ReplayBackend

N_USERS = 300


def user_subset(dataset, n_users: int):
    """The first ``n_users`` users of a real dataset with all their interactions (items and KG unchanged)."""
    def keep(pairs):
        return pairs[:, pairs[0] < n_users].contiguous()

    return dataclasses.replace(dataset, name=f"{dataset.name}[:{n_users}]", n_users=n_users,
                               train=keep(dataset.train), valid=keep(dataset.valid), test=keep(dataset.test),
                               user_interest=keep(dataset.user_interest), user_ids=dataset.user_ids[:n_users],
                               _csr_cache={})


@pytest.fixture(scope="module")
def small(dbbook):
    return user_subset(dbbook, N_USERS)


@pytest.fixture(scope="module")
def encoder():
    from cikg.embed import Encoder

    return Encoder(None, n_threads=1, show_progress=False)


@pytest.fixture(scope="module")
def cot_run(small, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("llmcf")
    examples = sample_examples(small, 240, seed=7)
    answers = generate_cot(small, examples, CoTProfileBackend(small), history_len=10, domain="books", out_dir=out)
    cf = cf_embeddings(small, 16)
    cot = build_cot_dataset(small, examples, answers, encoder, cf)
    return out, examples, answers, cf, cot


def test_examples_are_labelled_from_the_train_split_and_seeded(small):
    examples = sample_examples(small, 400, neg_ratio=1.0, seed=3)
    train = set(zip(small.train[0].tolist(), small.train[1].tolist(), strict=True))
    pairs = list(zip(examples.users.tolist(), examples.items.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs) > 350
    for pair, label in zip(pairs, examples.labels.tolist(), strict=True):
        assert (pair in train) == bool(label), pair
    assert 0.4 < examples.labels.float().mean() < 0.6
    again = sample_examples(small, 400, neg_ratio=1.0, seed=3)
    assert torch.equal(again.users, examples.users) and torch.equal(again.items, examples.items)
    assert not torch.equal(sample_examples(small, 400, seed=4).items, examples.items)


def test_offline_cot_answers_are_item_aware_recorded_and_replayable(small, cot_run):
    out, examples, answers, _, _ = cot_run
    assert answers.summary.not_an_llm and bool(answers.ok.all())
    lines = [json.loads(line) for line in (out / llmcf.EXAMPLES_FILE).read_text().splitlines()]
    assert len(lines) == len(examples)
    first = lines[0]
    assert first["user_id"] == f"{small.user_ids[first['user']]}|{small.item_ids[first['item']]}"
    # the four steps, and the target's title in step 2 (the answer depends on the item, not only the user)
    for line in lines[:20]:
        assert all(f"{step}." in line["raw"] for step in (1, 2, 3, 4))
        assert llmcf.item_title(small, line["item"]) in line["raw"]
        assert "label" not in line["raw"].lower()
    same_user = [line for line in lines if line["user"] == lines[0]["user"]]
    if len({line["item"] for line in same_user}) > 1:
        assert len({line["raw"] for line in same_user}) > 1
    # the JSONL is a replay file: a replay backend answers the same requests with the same texts
    replayed = generate_cot(small, examples, ReplayBackend(out / llmcf.EXAMPLES_FILE), domain="books")
    assert [r["raw"] for r in replayed.records] == [line["raw"] for line in lines]
    assert replayed.summary.not_an_llm and all(r["not_an_llm"] for r in replayed.records)  # label survives


def test_the_prompt_never_shows_the_label(small):
    examples = sample_examples(small, 20, seed=1)
    requests = llmcf.build_cot_requests(small, examples)
    assert {dict(r.extra)["label"] for r in requests} == {0, 1}
    by_label = {}
    for r in requests:
        text = " ".join(m["content"] for m in r.message_dicts)
        assert "Target item:" in text and "User history:" in text
        by_label.setdefault(dict(r.extra)["label"], text)
    assert not any(word in by_label[1].lower() for word in ("liked it", "label", "clicked"))


def test_cot_dataset_holds_embeddings_cf_features_and_labels(small, cot_run, tmp_path):
    _, examples, _, (user_cf, item_cf), cot = cot_run
    assert cot.cot.shape == (len(examples), 384)
    assert torch.allclose(cot.cot.norm(dim=1), torch.ones(len(examples)), atol=1e-4)
    assert torch.equal(cot.user_cf, user_cf[examples.users]) and torch.equal(cot.item_cf, item_cf[examples.items])
    assert torch.equal(cot.labels, examples.labels)
    loaded = llmcf.CoTDataset.load(cot.save(tmp_path / llmcf.DATASET_FILE))
    assert torch.equal(loaded.cot, cot.cot) and loaded.meta["not_an_llm"] is True


def test_retrieval_equals_a_brute_force_reference():
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(37, 8, generator=generator), torch.randn(50, 8, generator=generator)
    q_owner = torch.arange(37) % 9
    k_owner = torch.randint(0, 9, (50,), generator=generator)
    index, score = retrieve(queries, keys, k=4, block_size=5, query_owner=q_owner, key_owner=k_owner)
    for q in range(37):
        allowed = [(float(queries[q] @ keys[e]), e) for e in range(50) if k_owner[e] != q_owner[q]]
        best = sorted(allowed, key=lambda t: -t[0])[:4]
        assert index[q].tolist() == [e for _, e in best]
        assert torch.allclose(score[q], torch.tensor([s for s, _ in best]), atol=1e-5)
    # fewer allowed keys than k: the missing slots are -1
    index, score = retrieve(queries[:2], keys[:3], k=4, query_owner=torch.tensor([0, 1]),
                            key_owner=torch.tensor([0, 1, 2]))
    assert index[0].tolist()[2:] == [-1, -1] and torch.isinf(score[0, 2:]).all()
    assert set(index[0, :2].tolist()) == {1, 2}


def test_context_never_holds_the_users_own_examples(small, encoder, cot_run):
    _, _, _, (user_cf, _), cot = cot_run
    user_text = llmcf.user_text_embeddings(small, encoder, 10)
    context = llmcf.retrieve_context(cot, user_text, user_cf, k=4, text_weight=0.5)
    assert context.index.shape == (N_USERS, 4)
    owners = cot.users[context.index.clamp(min=0)]
    assert not bool(((owners == torch.arange(N_USERS)[:, None]) & (context.index >= 0)).any())
    assert bool((context.score[:, :-1] >= context.score[:, 1:]).all())


def test_ict_module_pretrains_and_gives_one_vector_per_user(small, encoder, cot_run):
    _, _, _, (user_cf, _), cot = cot_run
    config = LLMCFConfig(dim=32, heads=2, layers=1, epochs=12, patience=12, batch_size=64, dropout=0.0, seed=5)
    user_text = llmcf.user_text_embeddings(small, encoder, 10)
    context = llmcf.retrieve_context(cot, user_text, user_cf, config.k, config.text_weight)
    torch.manual_seed(0)
    module = ICTModule(user_text.size(1), user_cf.size(1), config.dim, config.heads, config.layers, config.dropout,
                       config.k)
    run = llmcf.pretrain_ict(module, cot, context, user_text, user_cf, config)
    losses = [h["train_bce"] for h in run.history]
    assert losses[-1] < losses[0] - 0.05, losses
    assert run.n_holdout == 24 and run.best_epoch >= 1
    features = llmcf.ict_user_features(module, cot, context, user_text, user_cf, block_size=64)
    assert features.shape == (N_USERS, 32) and torch.isfinite(features).all()
    # row u is user u's own vector: recomputing users 5 and 17 alone gives the same rows
    users = torch.tensor([17, 5])
    alone = module(*llmcf._context_tensors(cot, context, users), user_text[users], user_cf[users])
    assert torch.allclose(alone, features[users], atol=1e-5)


def test_bad_settings_and_shapes_are_named():
    with pytest.raises(ConfigError, match="'k'"):
        LLMCFConfig(k=0)
    with pytest.raises(ConfigError, match="'heads'"):
        LLMCFConfig(dim=30, heads=4)
    with pytest.raises(ConfigError, match="'text_weight'"):
        LLMCFConfig(text_weight=1.5)


def test_cf_features_must_match_the_dataset(small):
    with pytest.raises(GraphError, match=r"\[300, d\]"):
        llmcf.check_cf(small, (torch.zeros(10, 4), torch.zeros(small.n_items, 4)))


def test_augmenter_attaches_user_features_to_the_right_nodes(small, encoder, tmp_path):
    from cikg.graph import build_cikg

    graph = build_cikg(small)
    augmenter = llmcf.LLMCF(LLMCFConfig(n_examples=200, dim=16, heads=2, layers=1, epochs=3, seed=11),
                            encoder=encoder, out_dir=tmp_path)
    with pytest.raises(GraphError, match="before fit"):
        augmenter.attach(graph)
    fitted = augmenter.fit(small, graph)
    features = fitted.user
    assert features.shape == (N_USERS, 16) and fitted.item is None and fitted.blocks == {"user": {"llmcf": 16}}
    augmenter.attach(graph)
    assert torch.equal(graph["user"].x, features)
    meta = graph.meta["features"]["user"]
    assert meta["method"] == "llmcf" and meta["not_an_llm"] is True and meta["dim"] == 16
    assert meta["template"] == "llmcf-cot" and meta["examples"] > 150 and meta["llm_model"] == "cot-profile"
    assert meta["n_calls"] == meta["examples"] and meta["prompt_tokens"] == 0
    loaded = NodeFeatures.load(fitted.save(tmp_path))
    assert torch.equal(loaded.user, features) and loaded.provenance["method"] == "llmcf"
    # row u belongs to user u: recompute two users from the stored context
    result = augmenter.result
    users = torch.tensor([N_USERS - 1, 0])
    user_text = llmcf.user_text_embeddings(small, encoder, 10, users.tolist())
    cf_users = llmcf.cf_embeddings(small, 64, 11)[0][users]
    with torch.no_grad():
        alone = result.module(*llmcf._context_tensors(result.cot, result.context, users), user_text, cf_users)
    assert torch.allclose(torch.nn.functional.normalize(alone, dim=1), graph["user"].x[users], atol=1e-5)
    assert torch.allclose(graph["user"].x.norm(dim=1), torch.ones(N_USERS), atol=1e-5)
    assert (tmp_path / llmcf.DATASET_FILE).is_file() and (tmp_path / "llmcf_summary.json").is_file()


@pytest.mark.llm
def test_real_llm_chain_of_thought_feeds_the_cot_dataset(small, encoder, tmp_path):
    """SmolLM2 through llama.cpp answers LLM-CF prompts; the answers are cached, encoded and replayable."""
    from cikg.llm import LLMConfig, OpenAIBackend
    from cikg.llm.serve import ServeConfig, llama_cpp_available, llama_server

    if not llama_cpp_available():
        pytest.skip("needs the local-llm extra (llama-cpp-python[server])")
    examples = sample_examples(small, 8, seed=2)
    with llama_server(ServeConfig(n_threads=2)) as server:
        config = LLMConfig(model="smollm2", base_url=server.base_url, concurrency=2, max_tokens=96, timeout=180,
                           progress=False)
        backend = OpenAIBackend(config, tmp_path / "cache.sqlite")
        answers = generate_cot(small, examples, backend, domain="books", out_dir=tmp_path)
        assert backend.summary().sent == len(examples) and backend.summary().completion_tokens > 0
        again = OpenAIBackend(config, tmp_path / "cache.sqlite")
        generate_cot(small, examples, again, domain="books")
        assert again.summary().sent == 0  # every answer came from the cache
    assert bool(answers.ok.all()) and not answers.summary.not_an_llm
    assert len({r["raw"] for r in answers.records}) > 1
    cot = build_cot_dataset(small, examples, answers, encoder, cf_embeddings(small, 8))
    assert cot.cot.shape == (len(examples), 384) and cot.meta["not_an_llm"] is False
    replayed = generate_cot(small, examples, ReplayBackend(tmp_path / llmcf.EXAMPLES_FILE), domain="books")
    assert [r["raw"] for r in replayed.records] == [r["raw"] for r in answers.records]
