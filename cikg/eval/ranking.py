"""Block-level ranking kernels: masking, deterministic top-K, hit matrices and metrics from hits.

Every function works on a *block* of users at once (a ``[block, n_items]`` score matrix) with tensor
operations only; :class:`cikg.eval.Evaluator` drives them over blocks so memory is bounded by
``block_size * n_items`` instead of ``n_users * n_items``.

The tie rule and top-K selection live in :mod:`cikg.topk` (shared with ``Recommender.recommend`` and
serving) and are re-exported here.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from ..topk import csr_rows, mask_excluded_, top_items

__all__ = ["METRICS", "csr_rows", "hit_matrix", "mask_excluded_", "metrics_from_hits", "top_items", "truth_keys"]

METRICS = ("recall", "ndcg", "precision", "hit")
"""Metric names understood by :func:`metrics_from_hits`."""


def truth_keys(indptr: torch.Tensor, indices: torch.Tensor, n_items: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys ``user * n_items + item`` of a split, and the distinct items per user.

    Returns:
        ``(keys, n_relevant)``: ``LongTensor [distinct pairs]`` sorted ascending, and ``LongTensor
        [n_users]`` counting each user's distinct ground-truth items.
    """
    n_users = indptr.numel() - 1
    users = torch.repeat_interleave(torch.arange(n_users, device=indptr.device), indptr.diff())
    keys = torch.unique(users * n_items + indices, sorted=True)
    n_relevant = torch.bincount(torch.div(keys, n_items, rounding_mode="floor"), minlength=n_users)
    return keys, n_relevant


def hit_matrix(users: torch.Tensor, items: torch.Tensor, valid: torch.Tensor, keys: torch.Tensor,
               n_items: int) -> torch.Tensor:
    """``BoolTensor [b, k]``: whether ``items[r, j]`` is a ground-truth item of ``users[r]``.

    Membership is one ``searchsorted`` of ``users * n_items + items`` into the sorted truth ``keys``.
    """
    query = users.unsqueeze(1) * n_items + items
    if keys.numel() == 0:
        return torch.zeros_like(valid)
    pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return (keys[pos] == query) & valid


def metrics_from_hits(hits: torch.Tensor, n_relevant: torch.Tensor, ks: Sequence[int],
                      metrics: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Per-user Recall, NDCG, Precision and Hit at every ``k`` from one ranked hit matrix.

    With ``h_j`` the hit indicator at rank ``j`` (0-based) and ``R`` the number of relevant items:
    ``recall@K = sum_{j<K} h_j / R``, ``precision@K = sum_{j<K} h_j / K``, ``hit@K = [sum_{j<K} h_j > 0]``,
    ``ndcg@K = DCG@K / IDCG@K`` with ``DCG@K = sum_{j<K} h_j / log2(j + 2)`` and ``IDCG@K`` the DCG of
    ``min(R, K)`` hits at the top (the binary-relevance NDCG of the LightGCN / KGAT reference code).

    Args:
        hits: ``BoolTensor [b, L]`` ranked hits; ranks beyond ``L`` (``K > n_items``) are misses.
        n_relevant: ``LongTensor [b]``, all ``>= 1``.
        ks: cut-offs; metrics: names from :data:`METRICS`.

    Returns:
        ``{"recall@20": FloatTensor [b], ...}`` for every metric and ``k``.
    """
    max_k = max(ks)
    if hits.size(1) < max_k:
        hits = torch.nn.functional.pad(hits, (0, max_k - hits.size(1)))
    hits = hits[:, :max_k].to(torch.float32)
    discount = 1.0 / torch.log2(torch.arange(max_k, device=hits.device, dtype=torch.float32) + 2.0)
    n_hits = torch.cumsum(hits, 1)
    dcg = torch.cumsum(hits * discount, 1)
    ideal = torch.cumsum(discount, 0)
    relevant = n_relevant.to(torch.float32)
    out: Dict[str, torch.Tensor] = {}
    for name in metrics:
        for k in ks:
            hits_k = n_hits[:, k - 1]
            if name == "recall":
                value = hits_k / relevant
            elif name == "precision":
                value = hits_k / k
            elif name == "hit":
                value = (hits_k > 0).to(torch.float32)
            else:
                value = dcg[:, k - 1] / ideal[n_relevant.clamp(max=k) - 1]
            out[f"{name}@{k}"] = value
    return out

