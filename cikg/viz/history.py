"""Per-epoch curves of a run's ``metrics.jsonl``: loss terms, validation metrics, the UIR mask schedule."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..errors import CikgError
from ._common import PathLike, epoch_axis, finish, mark_selected_epoch

# per-epoch values that are not losses: the epoch, timings and the schedules models return from
# on_epoch_start (CIKGRec's mask rate, KGAT's attention entropy)
_NOT_LOSSES = {"epoch", "seconds", "train_seconds", "mask_rate", "attention_entropy"}
TOTAL = "loss"


def read_history(run_dir: PathLike) -> pd.DataFrame:
    """A run's ``metrics.jsonl`` as a frame (one row per epoch)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return pd.DataFrame([json.loads(line) for line in lines if line.strip()])


def loss_terms(history: pd.DataFrame) -> List[str]:
    """The loss columns of a history: the weighted total ``loss`` first, then every term the model logged."""
    terms = [c for c in history.columns if c not in _NOT_LOSSES and not c.startswith("valid_") and c != TOTAL]
    return ([TOTAL] if TOTAL in history else []) + terms


def plot_loss_terms(history: pd.DataFrame, path: Optional[PathLike] = None, title: str = "loss terms",
                    best_epoch: Optional[int] = None, ncols: int = 3):
    """One panel per loss term (linear scale, so a term that is 0 in some epochs shows 0 there).

    Terms are logged unweighted (the mean over batches of each term); the total panel is the weighted sum
    the optimiser minimised, so panels differ in scale by design. ``best_epoch`` (the epoch selected on
    validation) is marked on every panel.
    """
    terms = loss_terms(history)
    if not terms:
        raise CikgError(f"no loss columns in the history (columns: {', '.join(map(str, history.columns))})")
    ncols = max(1, min(ncols, len(terms)))
    nrows = math.ceil(len(terms) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.5 * nrows + 0.6), squeeze=False, sharex=True)
    epochs = history["epoch"].to_numpy()
    for ax, term in zip(axes.flat, terms):
        values = history[term].astype(float).to_numpy()
        colour = "black" if term == TOTAL else None
        ax.plot(epochs, values, marker=".", label=term, color=colour)
        ax.set_title("total (weighted sum)" if term == TOTAL else term, fontsize=10)
        ax.set_ylabel("mean over batches", fontsize=8)
        if np.isfinite(values).any() and np.nanmin(values) >= 0:
            ax.set_ylim(bottom=0)  # a term that vanishes reads as 0, not as a small positive number
        mark_selected_epoch(ax, best_epoch)
        epoch_axis(ax)
    for ax in axes.flat[len(terms):]:
        ax.remove()
    subtitle = "each term unweighted; total = weighted sum minimised"
    if best_epoch:
        subtitle += f"; dotted: epoch {int(best_epoch)}, selected on valid"
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10)
    return finish(fig, path)


def plot_valid_metrics(histories: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("recall@20", "ndcg@20"),
                       path: Optional[PathLike] = None, best_epochs: Optional[Mapping[str, int]] = None):
    """Validation metrics per epoch for one or several runs (``{label: history}``).

    ``best_epochs`` (``{label: epoch}``) marks each run's epoch selected on validation with a star.
    """
    best_epochs = dict(best_epochs or {})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        column = f"valid_{metric}"
        if not any(column in history for history in histories.values()):
            logged = sorted({c[len("valid_"):] for h in histories.values() for c in h.columns if c.startswith("valid_")})
            raise CikgError(f"no run logged validation {metric}; logged: {', '.join(logged) or 'none'}")
        for label, history in histories.items():
            if column not in history:
                continue
            rows = history.dropna(subset=[column])
            (line,) = ax.plot(rows["epoch"], rows[column], marker=".", label=label)
            best = best_epochs.get(label)
            if best and (rows["epoch"] == best).any():
                ax.plot([best], rows.loc[rows["epoch"] == best, column].iloc[:1], marker="*", markersize=13,
                        color=line.get_color(), markeredgecolor="black", linestyle="none")
                line.set_label(f"{label} (selected: epoch {int(best)})")
        epoch_axis(ax)
        ax.set_ylabel(metric)
        ax.set_title(f"validation {metric}")
        ax.legend(fontsize=8)
    if best_epochs:
        fig.suptitle("validation split (model selection); ★ = selected epoch", fontsize=10)
    return finish(fig, path)


def plot_mask_schedule(rates: Sequence[float], path: Optional[PathLike] = None, title: str = "UIR mask rate",
                       n_interests: Optional[int] = None):
    """The mask rate per epoch (e.g. ``[model.mask_rate_at(e) for e in range(E)]`` or from a history).

    With ``n_interests`` the share actually masked, ``floor(rate * n) / n``, is drawn too: with few interest
    nodes the first epochs mask none, and UIR is 0 there.
    """
    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    epochs = np.arange(1, len(rates) + 1)
    ax.plot(epochs, rates, marker=".", label="scheduled rate")
    if n_interests:
        masked = np.floor(np.asarray(rates, dtype=float) * n_interests) / n_interests
        ax.step(epochs, masked, where="mid", color="tab:red", linewidth=1,
                label=f"masked in practice (of {n_interests:,} interests)")
        ax.legend(fontsize=8, loc="upper left")
    epoch_axis(ax)
    ax.set_ylabel("share of interest nodes masked")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    return finish(fig, path)
