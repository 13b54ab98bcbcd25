"""Plots with matplotlib: loss terms and validation metrics per epoch, the mask-rate schedule, sparse-user
group bars, the interest cluster map and degree distributions per node type.

Every function returns the ``Figure`` (shown inline in notebooks) and writes a PNG when ``path`` is given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import matplotlib

# files only, never a window, unless a notebook chose a backend that shows figures inline (matplotlib >= 3.9
# names `%matplotlib inline` "inline", older ones "module://matplotlib_inline.backend_inline")
_NOTEBOOK_BACKENDS = ("inline", "nbagg", "widget", "ipympl")
if not any(name in matplotlib.get_backend().lower() for name in _NOTEBOOK_BACKENDS):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

PathLike = Union[str, Path]
_NOT_LOSSES = {"epoch", "seconds", "train_seconds", "mask_rate"}


def _finish(fig, path: Optional[PathLike]):
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def read_history(run_dir: PathLike) -> pd.DataFrame:
    """A run's ``metrics.jsonl`` as a frame (one row per epoch)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return pd.DataFrame([json.loads(line) for line in lines if line.strip()])


def plot_loss_terms(history: pd.DataFrame, path: Optional[PathLike] = None, title: str = "loss terms"):
    """Each loss term per epoch on its own axis scale (log), so BPR, UIR and CL read side by side."""
    terms = [c for c in history.columns if c not in _NOT_LOSSES and not c.startswith("valid_")]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for term in terms:
        values = history[term].astype(float)
        if (values > 0).all():
            ax.plot(history["epoch"], values, marker=".", label=term)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean over batches")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_valid_metrics(histories: Dict[str, pd.DataFrame], metrics: Sequence[str] = ("recall@20", "ndcg@20"),
                       path: Optional[PathLike] = None):
    """Validation metrics per epoch for one or several runs (``{label: history}``)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, history in histories.items():
            column = f"valid_{metric}"
            if column in history:
                rows = history.dropna(subset=[column])
                ax.plot(rows["epoch"], rows[column], marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(f"valid {metric}")
        ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_mask_schedule(rates: Sequence[float], path: Optional[PathLike] = None, title: str = "UIR mask rate"):
    """The mask rate per epoch (e.g. ``[model.mask_rate_at(e) for e in range(E)]`` or from a history)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(rates) + 1), rates, marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mask rate")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    return _finish(fig, path)


def plot_groups(groups: Dict[str, pd.DataFrame], metric: str = "recall@20", path: Optional[PathLike] = None):
    """Bars of ``metric`` per user-activity group for several models (``{model: activity_groups frame}``)."""
    labels: List[str] = list(next(iter(groups.values()))["group"])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels) * max(1, len(groups)) / 2), 3.6))
    width = 0.8 / max(len(groups), 1)
    for k, (name, frame) in enumerate(groups.items()):
        values = frame.set_index("group").reindex(labels)[metric].to_numpy(dtype=float)
        ax.bar(np.arange(len(labels)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + width * (len(groups) - 1) / 2, labels, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"test {metric} by user activity (train interactions)")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_interest_map(embeddings: Union[np.ndarray, torch.Tensor], clusters: Iterable[int],
                      labels: Optional[Dict[int, str]] = None, path: Optional[PathLike] = None, seed: int = 0):
    """2-D PCA map of phrase embeddings coloured by cluster, with each cluster's label at its centre."""
    from sklearn.decomposition import PCA

    x = embeddings.detach().cpu().numpy() if torch.is_tensor(embeddings) else np.asarray(embeddings)
    clusters = np.asarray(list(clusters))
    xy = PCA(n_components=2, random_state=seed).fit_transform(x) if len(x) > 2 else np.zeros((len(x), 2))
    fig, ax = plt.subplots(figsize=(6.4, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab20", s=12, alpha=0.8)
    for cluster in np.unique(clusters):
        if labels and int(cluster) in labels:
            cx, cy = xy[clusters == cluster].mean(0)
            ax.annotate(labels[int(cluster)], (cx, cy), fontsize=7, ha="center")
    ax.set_title("interest phrases (PCA of embeddings), coloured by cluster")
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(fig, path)


def plot_degrees(graph, path: Optional[PathLike] = None):
    """Degree distribution (log-log) of each node type of a CIKG ``HeteroData``."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    degree: Dict[str, torch.Tensor] = {t: torch.zeros(graph[t].num_nodes, dtype=torch.long) for t in graph.node_types}
    for src, rel, dst in graph.edge_types:
        if rel.startswith("rev_"):
            continue
        e = graph[src, rel, dst].edge_index
        degree[src] += torch.bincount(e[0], minlength=graph[src].num_nodes)
        degree[dst] += torch.bincount(e[1], minlength=graph[dst].num_nodes)
    for node_type, values in degree.items():
        values = values[values > 0]
        if values.numel():
            counts = torch.bincount(values)
            ks = torch.nonzero(counts).flatten()
            ax.loglog(ks.numpy(), counts[ks].numpy(), ".", label=f"{node_type} ({values.numel()})")
    ax.set_xlabel("degree")
    ax.set_ylabel("nodes")
    ax.set_title("degree distribution per node type")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_run(run_dir: PathLike) -> List[Path]:
    """Write ``loss_terms.png``, ``valid_metrics.png`` (and ``mask_rate.png``, ``groups.png`` when the
    run has them) into ``run_dir``; returns the paths."""
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    out = [run_dir / "loss_terms.png", run_dir / "valid_metrics.png"]
    plot_loss_terms(history, out[0])
    plot_valid_metrics({run_dir.name: history}, path=out[1])
    if "mask_rate" in history:
        out.append(run_dir / "mask_rate.png")
        plot_mask_schedule(history["mask_rate"].tolist(), out[-1])
    if (run_dir / "groups.csv").exists():
        out.append(run_dir / "groups.png")
        plot_groups({run_dir.name: pd.read_csv(run_dir / "groups.csv")}, path=out[-1])
    plt.close("all")
    return out


__all__ = ["plot_degrees", "plot_groups", "plot_interest_map", "plot_loss_terms", "plot_mask_schedule",
           "plot_run", "plot_valid_metrics", "read_history"]
