"""The CTR protocol: AUC / Logloss against scikit-learn, GAUC by hand, the negatives, the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from cikg.cli import main
from cikg.data import synthetic
from cikg.errors import CikgError
from cikg.eval.ctr import (
    CTRNegatives,
    auc,
    ctr_seed,
    evaluate_ctr,
    gauc,
    load_or_sample_negatives,
    logloss,
    negatives_path,
    sample_ctr_negatives,
)
from cikg.graph import build_cikg, build_views
from cikg.models import BPRMF, LightGCN, LightGCNConfig


@pytest.fixture(scope="module")
def dataset():
    return synthetic(300, 90, seed=3)


@pytest.mark.parametrize("seed, levels", [(0, None), (1, 4), (2, 2)])  # levels: few distinct scores = ties
def test_auc_and_logloss_equal_scikit_learn(seed, levels):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(500, generator=g) * 3
    if levels is not None:
        scores = torch.randint(levels, (500,), generator=g).float() - 1
    labels = torch.rand(500, generator=g) < 0.3
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    probabilities = torch.sigmoid(scores.double()).clamp(1e-7, 1 - 1e-7).numpy()
    assert logloss(scores, labels) == pytest.approx(log_loss(labels.numpy(), probabilities), rel=1e-9)


def test_logloss_clips_saturated_scores():
    value = logloss(torch.tensor([100.0, -100.0]), torch.tensor([0, 1]))
    assert value == pytest.approx(-torch.log(torch.tensor(1e-7, dtype=torch.float64)).item(), rel=1e-6)


def test_gauc_by_hand_weights_positives_and_skips_one_class_users():
    # user 0: pos 3 | neg 1, 2      -> AUC 1, weight 1
    # user 1: pos 1, 2 | neg 2, 5   -> pairs (1>2 no, 1>5 no, 2=2 half, 2>5 no): 0.5 / 4 = 0.125, weight 2
    # user 2: positives only        -> skipped; user 3: negatives only -> skipped
    scores = torch.tensor([3., 1., 2., 1., 2., 2., 5., 9., 4.])
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 0])
    users = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 3])
    value, skipped = gauc(scores, labels, users)
    assert skipped == 2
    assert value == pytest.approx((1 * 1.0 + 2 * 0.125) / 3)
    with pytest.raises(CikgError, match="both positive and negative"):
        auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))


def test_negatives_never_hit_interactions_have_the_ratio_and_are_distinct(dataset):
    negatives = sample_ctr_negatives(dataset, 4)
    n = dataset.n_items
    keys = negatives.users * n + negatives.items
    assert torch.unique(keys).numel() == keys.numel()  # no pair twice
    seen = torch.cat([dataset.split(s)[0] * n + dataset.split(s)[1] for s in ("train", "valid", "test")])
    assert not bool(torch.isin(keys, seen).any())
    per_user = torch.bincount(negatives.users, minlength=dataset.n_users)
    wanted = 4 * torch.bincount(dataset.test[0], minlength=dataset.n_users)
    unseen = n - torch.bincount(torch.unique(seen) // n, minlength=dataset.n_users)
    assert torch.equal(per_user, torch.minimum(wanted, unseen))
    assert bool((per_user == wanted).float().mean() > 0.5)


def test_users_with_few_unseen_items_get_all_of_them():
    # user 0 saw 8 of 10 items and has 2 test positives: ratio 4 wants 8 negatives, only 2 exist
    train = torch.tensor([[0] * 6 + [1, 1], [0, 1, 2, 3, 4, 5, 0, 1]])
    test = torch.tensor([[0, 0, 1], [6, 7, 2]])
    from cikg.data import Dataset

    tiny = Dataset("tiny", 2, 10, train, test)
    negatives = sample_ctr_negatives(tiny, 4)
    assert negatives.n_short_users == 1
    assert negatives.items[negatives.users == 0].tolist() == [8, 9]
    assert len(negatives.items[negatives.users == 1]) == 4
    assert not bool(torch.isin(negatives.items[negatives.users == 1], torch.tensor([0, 1, 2])).any())


def test_same_seed_same_negatives_other_ratio_other_seed(dataset):
    first, second = sample_ctr_negatives(dataset, 1), sample_ctr_negatives(dataset, 1)
    assert torch.equal(first.users, second.users) and torch.equal(first.items, second.items)
    assert first.seed == ctr_seed(dataset.name, 1) != ctr_seed(dataset.name, 4)
    other = sample_ctr_negatives(dataset, 1, seed=first.seed + 1)
    assert not torch.equal(first.items, other.items)


def test_every_model_is_scored_on_the_same_saved_pairs(dataset, tmp_path, monkeypatch):
    views = build_views(build_cikg(dataset), views=[])
    saved = load_or_sample_negatives(dataset, 4, tmp_path)
    path = negatives_path(tmp_path, dataset, 4)
    assert path.exists()
    seen_pairs = []
    import cikg.eval.ctr as ctr

    original = ctr.pair_scores

    def recording(model, users, items, block=1 << 16):
        seen_pairs.append((users.clone(), items.clone()))
        return original(model, users, items, block)

    monkeypatch.setattr(ctr, "pair_scores", recording)
    torch.manual_seed(0)  # a different model and a different training seed must not change the pairs
    results = []
    for model in (BPRMF(dataset.n_users, dataset.n_items), LightGCN(views, LightGCNConfig(layers=2))):
        torch.manual_seed(123)
        results.append(evaluate_ctr(model, dataset, negatives=load_or_sample_negatives(dataset, 4, tmp_path)))
    assert all(torch.equal(a, b) for a, b in zip(*seen_pairs))
    assert torch.equal(seen_pairs[0][1][dataset.test.size(1):], saved.items)
    assert results[0].n_negatives == len(saved) and results[0].n_positives == dataset.test.size(1)
    assert 0.3 < results[0].auc < 0.7  # untrained embeddings: about chance


def test_saved_negatives_are_checked_against_the_splits(dataset, tmp_path):
    negatives = sample_ctr_negatives(dataset, 1)
    path = negatives.save(tmp_path / "neg.pt")
    loaded = CTRNegatives.load(path, dataset)
    assert torch.equal(loaded.items, negatives.items) and loaded.ratio == 1
    other = synthetic(300, 90, seed=4)
    with pytest.raises(CikgError, match="fingerprints differ"):
        CTRNegatives.load(path, other)
    (tmp_path / "junk.pt").write_text("not a tensor file")
    with pytest.raises(CikgError, match="junk.pt: not a CTR negative set"):
        CTRNegatives.load(tmp_path / "junk.pt")
    with pytest.raises(CikgError, match="positive integer"):
        sample_ctr_negatives(dataset, 0)


def test_cli_evaluate_protocol_ctr_on_a_trained_synthetic_run(tmp_path, capsys):
    run = tmp_path / "runs" / "lightgcn-synthetic"
    assert main(["train", "-", "model.name=lightgcn", "model.dim=16", "model.layers=2", "data.dataset=synthetic",
                 "data.synthetic_users=300", "data.synthetic_items=90", "data.synthetic_seed=3",
                 "train.epochs=4", "train.lr=0.02", "train.batch_size=256", "train.ks=[20]", "train.threads=1",
                 "train.progress=false", "train.select=[recall@20]", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "ctr"]) == 0
    out = capsys.readouterr().out
    assert "1:1" in out and "1:4" in out and "gauc" in out and "logloss" in out
    written = json.loads((run / "ctr_metrics.json").read_text())
    assert set(written) == {"1:1", "1:4"}
    for row in written.values():
        assert 0.6 < row["auc"] <= 1.0 and 0.5 < row["gauc"] <= 1.0 and row["logloss"] > 0  # trained: above chance
    saved = sorted(p.name for p in (tmp_path / "runs" / "ctr_negatives").iterdir())
    assert len(saved) == 2 and saved[0].startswith("synthetic-300u-90i-s3-ctr1to1-")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "ctr_negatives").iterdir()}
    assert main(["evaluate", str(run), "--protocol", "ctr"]) == 0  # reuses the saved pairs: same figures
    assert json.loads((run / "ctr_metrics.json").read_text()) == written
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "ctr_negatives").iterdir()}
    assert main(["evaluate", str(run)]) == 0  # the top-K protocol stays the default
    assert "recall@20" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", str(run), "--protocol", "bogus"])
