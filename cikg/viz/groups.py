"""Bars of a test metric per user-activity group (:func:`cikg.eval.activity_groups` frames)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..errors import CikgError
from ._common import PathLike, finish, thousands


def group_label(row: Mapping) -> str:
    """``"Q1\\n6–11 · n=213"``, ``"≤5\\nn=0"``: the group, the train-interaction range it spans, its users."""
    name = str(row["group"])
    if name.startswith("train<="):
        name = "≤" + name[len("train<="):]
    if "n_users" not in row:
        return name
    n, low, high = row["n_users"], row.get("min_train"), row.get("max_train")
    if not n or pd.isna(low) or pd.isna(high):
        return f"{name}\nn={thousands(n or 0)}"
    span = f"{int(low)}" if int(low) == int(high) else f"{int(low)}–{int(high)}"
    return f"{name}\n{span} · n={thousands(n)}"


def _kind(group: str) -> str:
    return "all" if group == "all" else "sparse" if group.startswith("train<=") else "quantile"


def _shared_groups(groups: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The group rows of the first model, checked to be the same users in every other model."""
    first_name, first = next(iter(groups.items()))
    for name, frame in groups.items():
        if list(frame["group"]) != list(first["group"]) or (
                "n_users" in first and list(frame["n_users"]) != list(first["n_users"])):
            raise CikgError(f"user groups of {name!r} differ from those of {first_name!r} (different test users "
                            "or split): bars would compare different users")
    return first


def plot_groups(groups: Dict[str, pd.DataFrame], metric: str = "recall@20", path: Optional[PathLike] = None):
    """Bars of ``metric`` per user-activity group for several models (``{model: activity_groups frame}``).

    Each group is labelled with the train-interaction range of its users and their number; ``all``, the
    quantile groups and the (overlapping) sparse groups are set apart by dotted separators.
    """
    if not groups:
        raise CikgError("plot_groups needs at least one model's groups")
    reference = _shared_groups(groups)
    for name, frame in groups.items():
        if metric not in frame:
            metrics = [c for c in frame.columns if "@" in str(c)]
            raise CikgError(f"groups of {name!r} have no {metric}; they have: {', '.join(metrics)}")
    names: List[str] = list(reference["group"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) * max(2, len(groups)) + 1.5), 4.0))
    width = 0.8 / len(groups)
    for k, (model, frame) in enumerate(groups.items()):
        values = frame[metric].to_numpy(dtype=float)
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, np.nan_to_num(values), width, label=model)
    for i, row in reference.reset_index(drop=True).iterrows():
        if not row.get("n_users", 1):
            ax.annotate("no users", (i, 0), xytext=(0, 4), textcoords="offset points", rotation=90, ha="center",
                        va="bottom", fontsize=8, color="0.4")
    kinds = [_kind(name) for name in names]
    for i in range(1, len(names)):
        if kinds[i] != kinds[i - 1]:
            ax.axvline(i - 0.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_xticks(x, [group_label(row) for _, row in reference.iterrows()], fontsize=8)
    ax.set_xlabel("user group: train interactions of its users · number of test users"
                  + ("\n(Q = quantiles of train interactions; ≤t groups overlap them)" if "sparse" in kinds else ""),
                  fontsize=8)
    ax.set_ylabel(f"test {metric} (mean over users)")
    ax.set_title(f"test {metric} by user activity")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return finish(fig, path)
