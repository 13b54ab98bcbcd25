"""Statistics over seeds and users: mean ± 95% confidence interval, paired tests of two models, and the
relative gain per user-activity group with a bootstrap interval.

* :func:`mean_ci`: the mean of one metric over ``n`` seeds and its Student-t interval
  ``mean ± t_{0.975, n-1} * s / sqrt(n)`` (``s`` the sample std, ``ddof=1``); one seed has no interval.
* :func:`paired_values` pairs the per-user test metrics of model A and model B: user ``u`` of seed ``s`` in A
  with user ``u`` of seed ``s`` in B (seeds both models ran), and pools the seeds. With ``pool="user"`` (the
  default) each user's values are averaged over the seeds first, so the units of the tests are the users
  (independent); ``pool="pairs"`` keeps every (seed, user) pair as a unit (a user then counts once per seed).
* Both tests see the paired differences rounded to :data:`DIFF_DECIMALS` (6) decimals (float32 noise).
* :func:`wilcoxon_test`: the Wilcoxon signed-rank test of the paired differences (``scipy.stats.wilcoxon``,
  two-sided). Zero differences (a user both models score alike, usually 0 and 0) carry no sign: they are
  dropped before ranking (``zero_method="wilcox"``, counted in ``n_zero``); all differences zero gives p = 1.
* :func:`paired_bootstrap`: resample the units with replacement ``resamples`` times (seeded); the interval
  is the percentile interval of the resampled mean differences, the two-sided p-value
  ``(1 + #{|mean* - mean| >= |mean|}) / (resamples + 1)`` (the resampled means centred on the null).
* :func:`group_gains`: per activity group (:func:`cikg.eval.groups.group_members`: ``all``, quartiles,
  ``train<=5``, ``train<=10``), A's relative gain ``mean_A / mean_B - 1`` over B, with the percentile
  interval of the same ratio over users resampled within the group, and the bootstrap p-value of the difference.

Per-user frames (what :func:`cikg.train.read_per_user` returns for a run directory) have the columns
``seed, user, train_degree`` and one column per metric@K.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from scipy import stats as _scipy_stats

from ..errors import CikgError
from .groups import group_members

DIFF_DECIMALS = 6
"""Paired differences are rounded to this many decimals before testing: per-user metrics are float32 (about 7
significant digits), so smaller differences are rounding, and equal differences must tie in Wilcoxon's ranks
(``2/3 - 1/3`` and ``1/3 - 0`` differ in float32)."""
_MAX_ELEMENTS = 1 << 22
"""Resampled indices held at once by the bootstrap (``chunk * n_units``), 16 MiB of int32."""


@dataclass(frozen=True)
class MeanCI:
    """The mean of ``n`` values (one per seed) with its Student-t confidence interval.

    ``half_width`` and ``std`` are ``None`` for ``n == 1``: one seed gives no interval.
    """

    mean: float
    half_width: Optional[float]
    std: Optional[float]
    n: int
    confidence: float = 0.95

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        return None if self.half_width is None else (self.mean - self.half_width, self.mean + self.half_width)

    def cell(self, digits: int = 4) -> str:
        """``"0.2901 ± 0.0012"`` (the half-width), or ``"0.2901"`` for one seed."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def __repr__(self) -> str:
        if self.half_width is None:
            return f"MeanCI({self.mean:.4f}, n=1: no interval)"
        return f"MeanCI({self.cell()}, {self.confidence:.0%} CI over n={self.n})"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t ``confidence`` interval of ``values`` (e.g. one metric over the seeds, ``[n]``)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise CikgError("mean_ci: no values (a row without seeds?)")
    if not 0 < confidence < 1:
        raise CikgError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    if x.size == 1:
        return MeanCI(float(x[0]), None, None, 1, confidence)
    std = float(x.std(ddof=1))
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2, x.size - 1))
    return MeanCI(float(x.mean()), t * std / math.sqrt(x.size), std, int(x.size), confidence)


@dataclass(frozen=True)
class PairedTest:
    """A paired test of model A against model B on one metric.

    Attributes:
        method: ``"wilcoxon"`` or ``"bootstrap"``.
        n: paired units (users, or (seed, user) pairs with ``pool="pairs"``); n_zero: units with zero difference.
        mean_a, mean_b, mean_diff: means over the units (``mean_diff``: of the rounded differences, :data:`DIFF_DECIMALS`).
        ci: the bootstrap's percentile interval of ``mean_diff`` (``None`` for Wilcoxon).
        p_value: two-sided; statistic: Wilcoxon's ``T`` (``None`` for the bootstrap).
        resamples, seed: of the bootstrap.
    """

    metric: str
    method: str
    n: int
    n_zero: int
    mean_a: float
    mean_b: float
    mean_diff: float
    p_value: float
    ci: Optional[Tuple[float, float]] = None
    statistic: Optional[float] = None
    resamples: Optional[int] = None
    seed: Optional[int] = None
    confidence: float = 0.95

    def __repr__(self) -> str:
        interval = "" if self.ci is None else (f", {self.confidence:.0%} CI [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}]"
                                               f" ({self.resamples} resamples, seed {self.seed})")
        return (f"PairedTest({self.method} {self.metric or 'metric'}: A {self.mean_a:.4f} vs B {self.mean_b:.4f}, "
                f"diff {self.mean_diff:+.4f}{interval}, p={format_p(self.p_value)}, n={self.n}, "
                f"zero differences={self.n_zero})")


@dataclass(frozen=True)
class GroupGain:
    """A's relative gain over B in one activity group: ``gain = mean_a / mean_b - 1`` with its interval."""

    group: str
    n_users: int
    min_train: Optional[int]
    max_train: Optional[int]
    mean_a: float
    mean_b: float
    gain: float
    ci: Optional[Tuple[float, float]]
    p_value: float

    def cell(self) -> str:
        """``"+4.12% [+1.03%, +7.40%]"``; a group nobody falls in (or with B at 0) says so."""
        if self.n_users == 0:
            return "no users"
        if not math.isfinite(self.gain):
            return "B scores 0"
        return f"{self.gain:+.2%} [{self.ci[0]:+.2%}, {self.ci[1]:+.2%}]" if self.ci else f"{self.gain:+.2%}"

    def __repr__(self) -> str:
        return f"GroupGain({self.group}, n={self.n_users}: {self.cell()}, p={format_p(self.p_value)})"


def format_p(p: float) -> str:
    """A p-value for a table: ``0.031``, ``2.1e-05``, ``n/a`` (NaN: no users)."""
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


# ---------------------------------------------------------------------------------------------- pairing
def paired_values(a: pd.DataFrame, b: pd.DataFrame, metric: str,
                  pool: str = "user") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align the per-user metrics of two models: ``(a_values [n], b_values [n], train_degree [n])``.

    Args:
        a, b: per-user frames (columns ``seed, user, train_degree, <metric>``), each of one or more seeds.
        metric: e.g. ``"recall@20"``.
        pool: ``"user"``: one unit per user, its values averaged over the shared seeds; ``"pairs"``: one unit
            per (seed, user).

    Raises:
        CikgError: a column is missing, the models share no seed, or a shared seed's users differ (different
            test sets: not pairable).
    """
    for name, frame in (("A", a), ("B", b)):
        missing = [c for c in ("seed", "user", "train_degree", metric) if c not in frame.columns]
        if missing:
            raise CikgError(f"per-user frame of model {name} lacks column(s) {missing}; it has {list(frame.columns)}")
    if pool not in ("user", "pairs"):
        raise CikgError(f"pool must be 'user' or 'pairs', got {pool!r}")
    seeds = sorted(set(a["seed"]) & set(b["seed"]))
    if not seeds:
        raise CikgError(f"models A (seeds {sorted(set(a['seed']))}) and B (seeds {sorted(set(b['seed']))}) share "
                        "no seed: nothing to pair")
    keys = ["seed", "user"]
    left = a[a["seed"].isin(seeds)][[*keys, "train_degree", metric]]
    right = b[b["seed"].isin(seeds)][[*keys, metric]]
    merged = left.merge(right, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    unpaired = merged[merged["_merge"] != "both"]
    if len(unpaired):
        first = unpaired.iloc[0]
        side = "A" if first["_merge"] == "left_only" else "B"
        raise CikgError(f"{len(unpaired)} (seed, user) pairs are in one model only (e.g. user {first['user']!r} of "
                        f"seed {first['seed']} only in {side}): the runs were tested on different users")
    merged = merged.sort_values(keys)
    if pool == "user":
        merged = merged.groupby("user", sort=True).agg(
            a=(f"{metric}_a", "mean"), b=(f"{metric}_b", "mean"), train_degree=("train_degree", "first"))
        return merged["a"].to_numpy(np.float64), merged["b"].to_numpy(np.float64), merged["train_degree"].to_numpy()
    return (merged[f"{metric}_a"].to_numpy(np.float64), merged[f"{metric}_b"].to_numpy(np.float64),
            merged["train_degree"].to_numpy())


def _check_pair(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise CikgError(f"a paired test needs two equally long, non-empty vectors, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise CikgError("a paired test got a NaN or infinite metric value")
    return a, b


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` rounded to :data:`DIFF_DECIMALS` decimals (what both tests see)."""
    return np.round(a - b, DIFF_DECIMALS)


# ---------------------------------------------------------------------------------------------- tests
def wilcoxon_test(a: Sequence[float], b: Sequence[float], metric: str = "") -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (``[n]`` paired values), zero differences dropped.

    ``scipy.stats.wilcoxon`` chooses the exact distribution for small ``n`` without ties and the normal
    approximation (tie-corrected) otherwise.
    """
    a, b = _check_pair(a, b)
    diff = paired_differences(a, b)
    n_zero = int((diff == 0).sum())
    if n_zero == diff.size:  # no signed difference at all: nothing speaks against "alike"
        statistic, p_value = 0.0, 1.0
    else:
        result = _scipy_stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return PairedTest(metric, "wilcoxon", int(diff.size), n_zero, float(a.mean()), float(b.mean()),
                      float(diff.mean()), p_value, statistic=statistic)


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Column means of ``values [n, k]`` over rows resampled with replacement: ``[resamples, k]``.

    Vectorised over resamples in chunks of ``_MAX_ELEMENTS // n`` (memory bounded, result independent of
    the chunking only through the seed and ``n``).
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0 or resamples < 1:
        raise CikgError(f"bootstrap needs >= 1 unit and >= 1 resample, got {n} and {resamples}")
    rng = np.random.default_rng(seed)
    columns = [np.ascontiguousarray(values[:, j]) for j in range(values.shape[1])]
    out = np.empty((resamples, values.shape[1]))
    chunk = max(1, _MAX_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)  # the same rows for every column
        for j, column in enumerate(columns):  # a gather per column: ~15x faster than values[index] of rows
            out[start:stop, j] = column[index].mean(axis=1)
    return out


def _bootstrap_p(resampled: np.ndarray, observed: float) -> float:
    """Two-sided p of ``observed`` against the resampled statistics centred on 0 (the null)."""
    extreme = np.abs(resampled - observed) >= abs(observed)
    return float((1 + extreme.sum()) / (resampled.size + 1))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], metric: str = "", resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> PairedTest:
    """Paired bootstrap of the mean difference ``mean(a - b)`` over units resampled with replacement."""
    a, b = _check_pair(a, b)
    diff = paired_differences(a, b)
    means = bootstrap_means(diff[:, None], resamples, seed)[:, 0]
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    observed = float(diff.mean())
    return PairedTest(metric, "bootstrap", int(diff.size), int((diff == 0).sum()), float(a.mean()), float(b.mean()),
                      observed, _bootstrap_p(means, observed), ci=(float(low), float(high)),
                      resamples=resamples, seed=seed, confidence=confidence)


def compare_models(a: pd.DataFrame, b: pd.DataFrame, metric: str, pool: str = "user", resamples: int = 10_000,
                   seed: int = 0) -> Tuple[PairedTest, PairedTest]:
    """Wilcoxon and paired bootstrap of model A against model B from their per-user frames."""
    values_a, values_b, _ = paired_values(a, b, metric, pool)
    return (wilcoxon_test(values_a, values_b, metric),
            paired_bootstrap(values_a, values_b, metric, resamples=resamples, seed=seed))


def group_gains(a: pd.DataFrame, b: pd.DataFrame, metric: str, n_quantiles: int = 4,
                sparse_max: Sequence[int] = (5, 10), resamples: int = 10_000, seed: int = 0,
                confidence: float = 0.95) -> List[GroupGain]:
    """A's relative gain over B per activity group (users pooled over the shared seeds, ``pool="user"``).

    Groups are those of :func:`cikg.eval.activity_groups` over the paired users' train degrees. Within each
    group users are resampled (seeded, the same draw for A and B); the interval is the percentile interval of
    ``mean_A* / mean_B* - 1``, the p-value the bootstrap p of ``mean_A - mean_B``.
    """
    values_a, values_b, degree = paired_values(a, b, metric, "user")
    members = group_members(torch.as_tensor(degree.astype(np.int64)), n_quantiles, sparse_max)
    tail = (1 - confidence) / 2
    out = []
    for offset, (name, member) in enumerate(members.items()):
        mask = member.numpy()
        n = int(mask.sum())
        if n == 0:
            if name.startswith("Q"):
                continue  # coinciding quartile edges (as activity_groups drops them)
            out.append(GroupGain(name, 0, None, None, math.nan, math.nan, math.nan, None, math.nan))
            continue
        ga, gb = values_a[mask], values_b[mask]
        mean_a, mean_b = float(ga.mean()), float(gb.mean())
        means = bootstrap_means(np.stack([ga, gb], 1), resamples, seed + offset)
        p_value = _bootstrap_p(means[:, 0] - means[:, 1], mean_a - mean_b)
        if mean_b > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = means[:, 0] / means[:, 1] - 1
            ratios = ratios[np.isfinite(ratios)]
            low, high = np.quantile(ratios, [tail, 1 - tail]) if ratios.size else (math.nan, math.nan)
            gain, ci = mean_a / mean_b - 1, (float(low), float(high))
        else:
            gain, ci = math.nan, None
        degrees = degree[mask]
        out.append(GroupGain(name, n, int(degrees.min()), int(degrees.max()), mean_a, mean_b, gain, ci, p_value))
    return out
