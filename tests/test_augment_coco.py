"""CoCo on a real subset of dbbook2014 with the shipped MiniLM transformer: VQ, straight-through, judge, LoRA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_augment_llmcf import user_subset

from cikg.augment import coco
from cikg.augment.coco import CoCoConfig, CoCoModel, VQSelector
from cikg.augment.llmcf import cf_embeddings
from cikg.errors import ConfigError

N_USERS = 160


@pytest.fixture(scope="module")
def small(dbbook):
    return user_subset(dbbook, N_USERS)


@pytest.fixture(scope="module")
def lm():
    return coco.load_lm()


@pytest.fixture(scope="module")
def cf(small):
    return cf_embeddings(small, 16)


def test_vq_picks_the_nearest_entry_and_its_losses():
    torch.manual_seed(0)
    selector = VQSelector(in_dim=8, n_codes=6, prompt_len=2, embed_dim=5, hidden=16, scale=0.5)
    f = torch.randn(40, 8)
    selector.init_codebook(f, torch.Generator().manual_seed(1))
    with torch.no_grad():
        selector.codebook.add_(torch.randn_like(selector.codebook) * 0.3)
    out = selector(f)
    z = selector.encode(f)
    reference = torch.cdist(z, selector.codebook).argmin(1)
    assert torch.equal(out.index, reference)
    assert out.prompt.shape == (40, 2, 5)
    assert torch.allclose(out.prompt.reshape(40, -1), selector.codebook[reference])  # value of the code
    expected = ((selector.codebook[reference] - z) ** 2).mean()
    assert torch.allclose(out.codebook_loss, expected) and torch.allclose(out.commitment_loss, expected)
    # each prompt vector has the token-embedding scale
    assert torch.allclose(z.view(40, 2, 5).std(-1, unbiased=False), torch.full((40, 2), 0.5), atol=1e-3)


def test_straight_through_gradients_reach_the_selector_and_losses_reach_the_codebook():
    torch.manual_seed(0)
    selector = VQSelector(in_dim=8, n_codes=4, prompt_len=2, embed_dim=6, hidden=16)
    f = torch.randn(10, 8)
    out = selector(f)
    (out.prompt * torch.randn_like(out.prompt)).sum().backward()
    assert selector.mlp[1].weight.grad is not None and selector.mlp[1].weight.grad.abs().sum() > 0
    assert selector.codebook.grad is None  # the task loss reaches the codebook only through its own term
    selector.zero_grad()
    out = selector(f)
    out.codebook_loss.backward()
    used = torch.zeros(4, dtype=torch.bool)
    used[out.index] = True
    grad = selector.codebook.grad.abs().sum(1)
    assert bool((grad[used] > 0).all()) and bool((grad[~used] == 0).all())
    assert selector.mlp[1].weight.grad is None or selector.mlp[1].weight.grad.abs().sum() == 0
    selector.zero_grad()
    selector(f).commitment_loss.backward()
    assert selector.codebook.grad is None or selector.codebook.grad.abs().sum() == 0
    assert selector.mlp[1].weight.grad.abs().sum() > 0


def test_soft_prompt_enters_the_transformer_through_inputs_embeds(small, lm):
    model, tokenizer = lm
    ids, mask = coco.tokenize_histories(small, tokenizer, [0, 1, 2], history_len=5, max_tokens=24)
    encoder = coco.SoftPromptEncoder(model, prefix=1)
    hidden = model.get_input_embeddings().weight.size(1)
    prompt = torch.randn(3, 4, hidden) * 0.05
    with torch.no_grad():
        a = encoder(ids, mask, prompt)
        b = encoder(ids, mask, prompt.flip(0))
        # an empty-prompt pass equals the plain model's masked mean over the same tokens
        plain = model(input_ids=ids, attention_mask=mask).last_hidden_state
        c = encoder(ids, mask, prompt[:, :0])
    assert a.shape == (3, hidden)
    assert not torch.allclose(a, b)  # the prompt changes the knowledge vector
    ref = (plain * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(c, ref, atol=1e-5)


def test_selector_training_lowers_the_loss_and_uses_the_codebook(small, lm, cf):
    config = CoCoConfig(n_codes=4, prompt_len=2, epochs=3, batch_size=32, max_tokens=24, lr=3e-3, seed=1)
    model_lm, tokenizer = lm
    users = torch.arange(64)
    ids, mask = coco.tokenize_histories(small, tokenizer, users.tolist(), config.history_len, config.max_tokens + 1)
    text = coco.UserText(users, ids, mask)
    model = CoCoModel(model_lm, cf[0].size(1), config)
    history = coco.train_selector(model, small, text, cf[0], cf[1], config)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert history[0]["codes_used"] >= 2
    knowledge, codes = coco.knowledge_vectors(model, text, cf[0], users[[5, 9]])
    assert knowledge.shape == (2, 384) and codes.shape == (2,)


def test_validation_confidence_matches_a_direct_computation(small, cf):
    users = torch.tensor([3, 11, 40])
    vectors = cf[0][users] + 0.1
    conf = coco.validation_confidence(small, users, vectors, cf[1], block_size=2)
    for row, user in enumerate(users.tolist()):
        scores = vectors[row] @ cf[1].t()
        scores[small.history(user, "train")] = float("-inf")
        valid = small.history(user, "valid")
        expected = torch.log_softmax(scores, 0)[valid].mean() if valid else torch.tensor(float("nan"))
        assert torch.allclose(conf[row], expected, atol=1e-5, equal_nan=True)


def test_lora_changes_only_the_adapter_weights(small, cf):
    config = CoCoConfig(n_codes=4, prompt_len=2, epochs=1, batch_size=16, max_tokens=16, lora_r=4, lora_epochs=1,
                        lora_lr=1e-2, seed=2)
    model_lm, tokenizer = coco.load_lm()  # a fresh copy: LoRA wraps it in place
    users = torch.arange(32)
    ids, mask = coco.tokenize_histories(small, tokenizer, users.tolist(), config.history_len, config.max_tokens + 1)
    text = coco.UserText(users, ids, mask)
    model = CoCoModel(model_lm, cf[0].size(1), config)
    coco.train_selector(model, small, text, cf[0], cf[1], config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base_before = {n: p.detach().clone() for n, p in model.encoder.lm.named_parameters()}
    coco.add_lora(model, config)
    adapters = coco.lora_parameters(model)
    assert adapters and all(("lora_A" in n) or ("lora_B" in n) for n in adapters)
    trainable = {n for n, p in model.encoder.lm.named_parameters() if p.requires_grad}
    assert trainable == set(adapters)
    coco.train_selector(model, small, text, cf[0], cf[1], config, users=users[:16], lora=True)
    after = coco.lora_parameters(model)
    assert any(not torch.equal(after[n], adapters[n]) for n in adapters if "lora_B" in n)
    # every base weight of the LM, the selector, the codebook and W are unchanged
    for name, value in model.encoder.lm.named_parameters():
        if "lora_" in name:
            continue
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, base_before[base_name]), name
    for name in ("selector.codebook", "project.weight", "selector.mlp.1.weight"):
        assert torch.equal(dict(model.named_parameters())[name], before[name]), name


def test_run_coco_judges_flags_and_reports(small, cf):
    config = CoCoConfig(n_codes=4, prompt_len=2, epochs=1, batch_size=32, max_tokens=24, lora_r=4, lora_epochs=1,
                        seed=3)
    users = list(range(0, N_USERS, 2))
    result = coco.run_coco(small, config, cf, users=users)
    knowledge, report = result.knowledge, result.report
    assert knowledge.shape == (len(users), 384) and torch.isfinite(knowledge).all()
    full = result.user_features(N_USERS)
    assert torch.equal(full[users], knowledge) and not full[1::2].any()  # rows are the users' node ids
    assert result.provenance["flagged"] == report.flagged_before and result.provenance["method"] == "coco"
    # reports name the model, not this machine's site-packages path (kept apart for reloading)
    assert result.provenance["llm_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (Path(result.provenance["lm_path"]) / "config.json").is_file()
    assert sum(report.code_usage) == len(users)
    judged_users = sum(1 for u in users if small.history(u, "valid"))
    assert report.before["judged"] == judged_users
    assert 0 <= report.flagged_before <= judged_users
    if report.flagged_before:
        assert report.lora and report.after["judged"] == report.flagged_before
        assert 0 <= report.still_flagged <= report.flagged_before
    assert any("flagged" in line for line in report.lines())


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="'n_codes'"):
        CoCoConfig(n_codes=0)
    with pytest.raises(ConfigError, match="'model'"):
        coco.load_lm("/nonexistent/model/dir")
    with pytest.raises(ConfigError, match="'lora_targets'"):
        CoCoConfig(lora_targets=())


def test_augmenter_attaches_knowledge_to_the_right_nodes(small, cf, tmp_path):
    from cikg.graph import build_cikg

    graph = build_cikg(small)
    users = [7, 3, 120]
    augmenter = coco.CoCo(CoCoConfig(n_codes=2, prompt_len=2, epochs=1, max_tokens=16, lora_epochs=0, seed=4),
                          cf=cf, users=users, out_dir=tmp_path)
    features = augmenter.fit(small, graph).user
    augmenter.attach(graph)
    assert graph["user"].x.shape == (N_USERS, 384)
    assert torch.allclose(graph["user"].x[users], torch.nn.functional.normalize(augmenter.result.knowledge, dim=1))
    others = torch.ones(N_USERS, dtype=torch.bool)
    others[users] = False
    assert not graph["user"].x[others].any() and torch.equal(features, graph["user"].x)
    meta = graph.meta["features"]["user"]
    assert meta["method"] == "coco" and meta["users"] == 3 and meta["lora"] is None
    assert (tmp_path / "coco_summary.json").is_file()


def _augment_parser():
    import argparse

    from cikg.augment import commands

    parser = argparse.ArgumentParser(prog="cikg augment")
    sub = parser.add_subparsers()
    commands.add_llmcf(sub)
    commands.add_coco(sub)
    return parser


@pytest.mark.slow
def test_cli_writes_features_and_a_graph_with_them(tmp_path):
    from cikg.graph import load_graph

    args = _augment_parser().parse_args(["coco", "dbbook2014", "-o", str(tmp_path), "--users", "40", "--epochs", "1",
                                         "--lora-epochs", "1", "--codes", "4", "--graph", "--no-progress"])
    assert args.func(args) == 0
    from cikg.augment.base import NodeFeatures

    saved = NodeFeatures.load(tmp_path)
    graph = load_graph(tmp_path / "graph.pt")
    assert torch.equal(graph["user"].x, saved.user) and saved.user[:40].abs().sum() > 0
    assert graph.meta["features"]["user"]["method"] == "coco"


@pytest.mark.slow
def test_cli_llmcf_replays_its_own_answers(tmp_path):
    parser = _augment_parser()
    first = parser.parse_args(["llmcf", "dbbook2014", "-o", str(tmp_path / "a"), "--examples", "200", "--epochs", "2",
                               "--no-progress"])
    assert first.func(first) == 0
    again = parser.parse_args(["llmcf", "dbbook2014", "-o", str(tmp_path / "b"), "--examples", "200", "--epochs",
                               "2", "--backend", "replay", "--replay", str(tmp_path / "a" / "cot_examples.jsonl"),
                               "--no-progress"])
    assert again.func(again) == 0
    import json

    a = [json.loads(line) for line in (tmp_path / "a" / "cot_examples.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "cot_examples.jsonl").read_text().splitlines()]
    assert [r["raw"] for r in a] == [r["raw"] for r in b] and len(a) > 150
    assert all(r["not_an_llm"] for r in b) and {r["source"] for r in b} == {"replay:cot_examples.jsonl"}
