"""The interest map: phrase embeddings projected to 2-D, coloured by cluster, largest clusters labelled."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.transforms import Bbox

from ..errors import CikgError
from ._common import PathLike, finish, thousands

_LABEL_PAD_PX = 3.0  # clearance kept around each placed label (its white box reaches past the glyphs)


def _project(x: np.ndarray, seed: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``[n, 2]`` PCA coordinates and the share of variance of each component (``None`` when n <= 2)."""
    from sklearn.decomposition import PCA

    if len(x) <= 2:
        return np.zeros((len(x), 2)), None
    pca = PCA(n_components=2, random_state=seed)
    return pca.fit_transform(x), pca.explained_variance_ratio_


def plot_interest_map(embeddings: Union[np.ndarray, torch.Tensor], clusters: Iterable[int],
                      labels: Optional[Dict[int, str]] = None, path: Optional[PathLike] = None, seed: int = 0,
                      max_clusters: int = 12):
    """2-D PCA map of phrase embeddings, coloured by cluster.

    The ``max_clusters`` largest clusters get a colour, a legend entry (label and number of phrases) and a
    label near their centre, moved aside (with a leader line) where it would overlap another and left out
    where no free place is found; the other clusters are drawn in grey as one legend entry.

    Args:
        embeddings: ``[n_phrases, dim]`` phrase vectors.
        clusters: the cluster id of each phrase (``n_phrases`` ints).
        labels: ``{cluster: label}``; clusters without one are called ``cluster k``.
        max_clusters: how many clusters are coloured and labelled (at most 20, the colours that stay apart).
    """
    x = embeddings.detach().cpu().numpy() if torch.is_tensor(embeddings) else np.asarray(embeddings)
    clusters = np.asarray(list(clusters), dtype=np.int64)
    if len(x) != len(clusters):
        raise CikgError(f"plot_interest_map: {len(x)} embeddings but {len(clusters)} cluster ids")
    if not 1 <= max_clusters <= 20:
        raise CikgError(f"max_clusters must be in 1..20, got {max_clusters}")
    labels = labels or {}
    xy, variance = _project(x, seed)
    ids, sizes = np.unique(clusters, return_counts=True)
    shown = ids[np.argsort(-sizes, kind="stable")][:max_clusters]
    fig, ax = plt.subplots(figsize=(9.2, 5.8))
    other = ~np.isin(clusters, shown)
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=8, color="0.82",
                   label=f"{len(ids) - len(shown)} smaller clusters ({thousands(other.sum())})")
    palette = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    names = {int(c): labels.get(int(c), f"cluster {int(c)}") for c in shown}
    centres = []
    for k, cluster in enumerate(shown):
        member = clusters == cluster
        ax.scatter(xy[member, 0], xy[member, 1], s=12, alpha=0.8, color=palette(k),
                   label=f"{_short(names[int(cluster)])} ({thousands(member.sum())})")
        centres.append((names[int(cluster)], xy[member].mean(0)))
    axis = ["PC1", "PC2"] if variance is None else [f"PC{i + 1} ({v:.0%} of variance)" for i, v in enumerate(variance)]
    ax.set_xlabel(f"{axis[0]} of the phrase embeddings")
    ax.set_ylabel(axis[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"interest phrases: PCA of their embeddings ({thousands(len(x))} phrases, {len(ids)} clusters)")
    ax.legend(title="cluster (phrases)", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
              markerscale=1.5, frameon=False)
    fig.tight_layout()
    if labels:
        place_labels(ax, [(_short(name), centre) for name, centre in centres])
    return finish(fig, path, layout=False)


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _offsets(width: float, height: float, rings: int = 10) -> List[Tuple[float, float]]:
    """Candidate pixel offsets from a label's anchor: the anchor, then rings of growing distance."""
    out = [(0.0, 0.0)]
    for r in range(1, rings + 1):
        dy, dx = 1.2 * height * r, 0.55 * width * r
        out += [(0, dy), (0, -dy), (dx, 0), (-dx, 0), (dx, dy), (-dx, dy), (dx, -dy), (-dx, -dy)]
    return out


def place_labels(ax, items: Sequence[Tuple[str, Sequence[float]]], fontsize: float = 7) -> List:
    """Greedy de-overlap: each ``(text, (x, y))`` in order goes at the first free candidate place inside the
    axes (no bounding box overlapping an earlier label's); a moved label gets a leader line to its anchor and
    a label with no free place is left out. Call after the figure's layout is final. Returns the texts."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.set_xlim(ax.get_xlim())  # freeze the view: leader lines must not rescale it under placed labels
    ax.set_ylim(ax.get_ylim())
    frame = ax.get_window_extent(renderer)
    placed: List[Bbox] = []
    texts = []
    for text, (cx, cy) in items:
        px, py = ax.transData.transform((cx, cy))
        artist = ax.text(cx, cy, text, ha="center", va="center", fontsize=fontsize, zorder=5,
                         bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.75))
        box = artist.get_window_extent(renderer).padded(_LABEL_PAD_PX)
        spot = next(((dx, dy) for dx, dy in _offsets(box.width, box.height)
                     if _free(box.translated(dx, dy), frame, placed)), None)
        if spot is None:
            artist.remove()
            continue
        placed.append(box.translated(*spot))
        if spot != (0.0, 0.0):
            tx, ty = ax.transData.inverted().transform((px + spot[0], py + spot[1]))
            artist.set_position((tx, ty))
            ax.plot([cx, tx], [cy, ty], color="0.3", linewidth=0.6, zorder=4)
        texts.append(artist)
    return texts


def _free(box: Bbox, frame: Bbox, placed: List[Bbox]) -> bool:
    inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    return inside and not any(box.overlaps(other) for other in placed)
