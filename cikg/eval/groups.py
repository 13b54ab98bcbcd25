"""Metrics per group of users by activity (number of training interactions): the sparse-user analysis.

Two kinds of group, reported together:

* **quantile groups** ``Q1 .. Qn``: boundaries at the ``1/n, 2/n, ...`` quantiles of the evaluated users'
  train counts; group ``Qg`` holds the users with ``edge[g-1] < count <= edge[g]`` (right-closed, as
  ``pandas.qcut``). Heavy ties can make boundaries coincide; empty groups are dropped.
* **sparse groups** ``train<=t`` for every threshold ``t``, the paper-style "sparse users" rows
  (CIKGRec and KGAT report users with few interactions separately).

An ``all`` row repeats the overall means, so a table reads on its own.
"""
from __future__ import annotations

from typing import Dict, Sequence

import pandas as pd
import torch

from ..errors import CikgError
from .evaluator import EvalResult


def group_members(counts: torch.Tensor, n_quantiles: int = 4,
                  sparse_max: Sequence[int] = (5, 10)) -> Dict[str, torch.Tensor]:
    """Which users fall in each activity group (the one definition of the groups, see the module docstring).

    Args:
        counts: ``LongTensor [n]`` train interactions of the ``n`` evaluated users (the quantile edges are
            taken over them).
        n_quantiles, sparse_max: as in :func:`activity_groups`.

    Returns:
        ``{"all": BoolTensor [n], "Q1": ..., "Q<n_quantiles>": ..., "train<=5": ..., ...}`` in that order;
        quantile groups nobody falls in are included (empty masks), the caller drops them.
    """
    if n_quantiles < 1:
        raise CikgError(f"n_quantiles must be >= 1, got {n_quantiles}")
    counts = torch.as_tensor(counts, dtype=torch.long).cpu()
    members = {"all": torch.ones_like(counts, dtype=torch.bool)}
    if counts.numel():
        q = torch.arange(1, n_quantiles, dtype=torch.float64) / n_quantiles
        edges = torch.quantile(counts.double(), q).floor().long()
        group = torch.bucketize(counts, edges, right=False)
        members.update({f"Q{g + 1}": group == g for g in range(n_quantiles)})
    members.update({f"train<={t}": counts <= t for t in sparse_max})
    return members


def activity_groups(result: EvalResult, train_counts: torch.Tensor, n_quantiles: int = 4,
                    sparse_max: Sequence[int] = (5, 10)) -> pd.DataFrame:
    """Mean metrics per user-activity group.

    Args:
        result: an :class:`EvalResult` (its ``users`` and ``per_user`` metrics are grouped).
        train_counts: ``LongTensor [n_users]`` train interactions per user (e.g. ``indptr.diff()`` of the
            train CSR, or ``Dataset.degrees("train")``).
        n_quantiles: number of quantile groups (4: quartiles).
        sparse_max: thresholds ``t``: one extra row per ``t`` with the users having ``count <= t``.

    Returns:
        DataFrame with columns ``group, n_users, min_train, max_train`` and one column per metric@K.
    """
    counts = torch.as_tensor(train_counts, dtype=torch.long).cpu()
    if result.users.numel() and int(result.users.max()) >= counts.numel():
        raise CikgError(f"train_counts has {counts.numel()} users but the result holds user "
                        f"{int(result.users.max())}")
    counts = counts[result.users]
    names = list(result.per_user)
    values = torch.stack([result.per_user[name].double() for name in names], 1) if names else torch.empty(0, 0)
    rows = [_row(name, member, counts, values, names)
            for name, member in group_members(counts, n_quantiles, sparse_max).items()]
    frame = pd.DataFrame([row for row in rows if row["n_users"] > 0 or row["group"].startswith("train<=")])
    return frame.reset_index(drop=True)


def _row(name: str, member: torch.Tensor, counts: torch.Tensor, values: torch.Tensor, names: list) -> dict:
    n = int(member.sum())
    row = {"group": name, "n_users": n,
           "min_train": int(counts[member].min()) if n else None,
           "max_train": int(counts[member].max()) if n else None}
    means = values[member].mean(0) if n else torch.full((len(names),), float("nan"), dtype=torch.float64)
    row.update({metric: float(mean) for metric, mean in zip(names, means)})
    return row
