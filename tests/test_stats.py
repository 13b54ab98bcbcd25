"""cikg.eval.stats (intervals over seeds, paired tests over users, gains per activity group) checked against
hand-computed values and scipy; and the per-user test metrics a run directory holds."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from cikg.cli import main
from cikg.errors import CikgError
from cikg.eval.stats import (
    bootstrap_means,
    compare_models,
    group_gains,
    mean_ci,
    paired_bootstrap,
    paired_values,
    wilcoxon_test,
)
from cikg.train import PER_USER_FILE, read_per_user


# ---------------------------------------------------------------------------------------------- over seeds
def test_mean_ci_is_the_student_t_interval_and_one_seed_has_none():
    ci = mean_ci([0.20, 0.22, 0.24])
    # s = 0.02, t(0.975, 2) = 4.302653, half-width = t * s / sqrt(3)
    assert ci.mean == pytest.approx(0.22) and ci.std == pytest.approx(0.02)
    assert ci.half_width == pytest.approx(4.302652729749462 * 0.02 / math.sqrt(3))
    assert ci.interval == pytest.approx((0.22 - ci.half_width, 0.22 + ci.half_width))
    assert ci.cell() == "0.2200 ± 0.0497" and "95% CI over n=3" in repr(ci)
    one = mean_ci([0.3])
    assert one.half_width is None and one.interval is None and one.cell() == "0.3000"
    assert "n=1: no interval" in repr(one)
    with pytest.raises(CikgError, match="no values"):
        mean_ci([])


# ---------------------------------------------------------------------------------------------- paired tests
def test_wilcoxon_matches_the_exact_distribution_by_hand():
    # all 8 differences positive: T- = 0, exact two-sided p = 2 / 2^8
    up = wilcoxon_test(np.arange(1, 9) + 1.0, np.ones(8), "recall@20")
    assert up.p_value == pytest.approx(2 / 256) and up.statistic == 0 and up.n_zero == 0
    # differences 1, 2, -3, 4, 5 and a zero (dropped): T- = 3; P(T <= 3) = 5 / 32 for n = 5 -> p = 10 / 32
    mixed = wilcoxon_test([1, 2, 0, 4, 5, 7], [0, 0, 3, 0, 0, 7])
    assert mixed.p_value == pytest.approx(10 / 32) and mixed.statistic == 3 and mixed.n_zero == 1 and mixed.n == 6
    assert mixed.mean_diff == pytest.approx(9 / 6)
    # a large tied sample: the same p as scipy on the non-zero differences (normal approximation)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 500) / 4, rng.integers(0, 4, 500) / 4 * 0.9
    diff = a - b
    assert wilcoxon_test(a, b).p_value == pytest.approx(scipy_stats.wilcoxon(diff[diff != 0]).pvalue)


def test_identical_models_give_p_one_and_a_constant_difference_its_own_interval():
    x = np.random.default_rng(1).random(200)
    for test in (wilcoxon_test(x, x), paired_bootstrap(x, x, resamples=500)):
        assert test.p_value == 1.0 and test.mean_diff == 0 and test.n_zero == 200
    constant = paired_bootstrap(x + 0.05, x, resamples=2000, seed=3)
    assert constant.ci == pytest.approx((0.05, 0.05)) and constant.mean_diff == pytest.approx(0.05)
    assert constant.p_value == pytest.approx(1 / 2001)  # no resample is as far from 0.05 as 0.05 is from 0
    assert "bootstrap" in repr(constant) and "p=5.0e-04" in repr(constant)


def test_paired_bootstrap_is_seeded_and_agrees_with_the_normal_theory():
    rng = np.random.default_rng(2)
    b = rng.random(2000)
    a = b + rng.normal(0.01, 0.1, 2000)
    first, again = paired_bootstrap(a, b, seed=7), paired_bootstrap(a, b, seed=7)
    assert first == again and paired_bootstrap(a, b, seed=8).ci != first.ci
    se = (a - b).std(ddof=1) / math.sqrt(2000)
    mean = (a - b).mean()
    assert first.ci == pytest.approx((mean - 1.96 * se, mean + 1.96 * se), abs=0.2 * se)
    z_p = 2 * scipy_stats.norm.sf(abs(mean) / se)
    assert first.p_value == pytest.approx(z_p, abs=0.01)
    # the chunked resampling equals one draw of every index at once
    values = np.arange(5.0)[:, None]
    index = np.random.default_rng(4).integers(0, 5, size=(3, 5), dtype=np.int32)
    assert bootstrap_means(values, 3, 4)[:, 0] == pytest.approx(values[index, 0].mean(1))


def _frame(seed, users, degree, recall):
    return pd.DataFrame({"seed": seed, "user": [str(u) for u in users], "train_degree": degree,
                         "recall@20": recall})


def test_pairing_is_by_seed_and_user_pooled_per_user():
    a = pd.concat([_frame(0, [1, 2, 3], [2, 8, 30], [0.5, 0.0, 1.0]), _frame(1, [3, 1, 2], [30, 2, 8], [0.0, 1.0, 0.5])])
    b = pd.concat([_frame(0, [2, 1, 3], [8, 2, 30], [0.5, 0.0, 0.0]), _frame(1, [1, 2, 3], [2, 8, 30], [0.0, 0.0, 0.0]),
                   _frame(2, [1, 2, 3], [2, 8, 30], [0.9, 0.9, 0.9])])  # seed 2: A has none, left out
    va, vb, degree = paired_values(a, b, "recall@20")
    assert va.tolist() == [0.75, 0.25, 0.5] and vb.tolist() == [0.0, 0.25, 0.0] and degree.tolist() == [2, 8, 30]
    pa, pb, _ = paired_values(a, b, "recall@20", pool="pairs")
    assert pa.tolist() == [0.5, 0.0, 1.0, 1.0, 0.5, 0.0] and pb.tolist() == [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(CikgError, match="only in B"):
        paired_values(a, pd.concat([b, _frame(0, [9], [3], [0.1])]), "recall@20")
    with pytest.raises(CikgError, match="share no seed"):
        paired_values(a, b[b["seed"] == 2], "recall@20")
    with pytest.raises(CikgError, match="lacks column"):
        paired_values(a, b, "ndcg@20")


def test_group_gains_per_activity_group_with_intervals():
    rng = np.random.default_rng(5)
    n = 400
    degree = rng.integers(1, 40, n)
    base = rng.random(n) * 0.5 + 0.1
    lift = np.where(degree <= 5, 1.2, 1.0)  # A is 20% better on the sparse users only
    a = _frame(0, range(n), degree, base * lift)
    b = _frame(0, range(n), degree, base)
    gains = {g.group: g for g in group_gains(a, b, "recall@20", resamples=2000)}
    assert list(gains)[:1] == ["all"] and {"Q1", "Q4", "train<=5", "train<=10"} <= set(gains)
    sparse = gains["train<=5"]
    assert sparse.n_users == int((degree <= 5).sum()) and sparse.max_train <= 5
    assert sparse.gain == pytest.approx(0.2) and sparse.ci == pytest.approx((0.2, 0.2))
    assert sparse.p_value < 0.01 and sparse.cell() == "+20.00% [+20.00%, +20.00%]"
    q4 = gains["Q4"]
    assert q4.gain == pytest.approx(0.0) and q4.p_value == 1.0  # no user of Q4 has <= 5 train items
    assert 0 < gains["all"].gain < 0.2
    none = group_gains(a, b, "recall@20", sparse_max=(0,), resamples=10)
    assert none[-1].group == "train<=0" and none[-1].n_users == 0 and none[-1].cell() == "no users"


# ---------------------------------------------------------------------------------------------- run directories
TINY = ["data.dataset=synthetic", "data.synthetic_users=120", "data.synthetic_items=60", "data.synthetic_seed=3",
        "model.dim=8", "train.epochs=1", "train.batch_size=256", "train.ks=[10,20]",
        "train.threads=1", "train.progress=false"]


def test_a_run_writes_per_user_metrics_that_average_to_its_test_metrics(tmp_path, capsys):
    runs = {}
    for model in ("lightgcn", "bprmf"):
        runs[model] = tmp_path / model
        assert main(["train", "-", f"model.name={model}", *TINY, "--run-dir", str(runs[model])]) == 0
    capsys.readouterr()
    per_user = read_per_user(runs["lightgcn"])
    metrics = json.loads((runs["lightgcn"] / "metrics.json").read_text())
    assert len(per_user) == metrics["n_test_users"] and set(per_user["seed"]) == {metrics["seed"]}
    assert {"user", "user_index", "train_degree", "recall@20", "ndcg@10"} <= set(per_user.columns)
    for name, value in metrics["test"].items():
        assert per_user[name].mean() == pytest.approx(value, abs=1e-12), name
    assert (per_user["train_degree"] > 0).all()
    assert (per_user["user"] == "u" + per_user["user_index"].astype(str)).all()  # the dataset's own user ids

    # a run from before the file existed: `cikg evaluate` writes the same file
    written = (runs["lightgcn"] / PER_USER_FILE).read_bytes()
    (runs["lightgcn"] / PER_USER_FILE).unlink()
    with pytest.raises(CikgError, match="cikg evaluate"):
        read_per_user(runs["lightgcn"])
    assert main(["evaluate", str(runs["lightgcn"]), "--no-per-user"]) == 0
    assert not (runs["lightgcn"] / PER_USER_FILE).exists()
    assert main(["evaluate", str(runs["lightgcn"])]) == 0
    assert PER_USER_FILE in capsys.readouterr().out
    assert (runs["lightgcn"] / PER_USER_FILE).read_bytes() == written  # deterministic, byte for byte

    wilcoxon, bootstrap = compare_models(per_user, read_per_user(runs["bprmf"]), "recall@20", resamples=1000)
    assert wilcoxon.n == bootstrap.n == len(per_user)
    assert bootstrap.mean_diff == pytest.approx(
        metrics["test"]["recall@20"] - json.loads((runs["bprmf"] / "metrics.json").read_text())["test"]["recall@20"],
        abs=1e-6)
    assert bootstrap.ci[0] <= bootstrap.mean_diff <= bootstrap.ci[1] and 0 < wilcoxon.p_value <= 1
