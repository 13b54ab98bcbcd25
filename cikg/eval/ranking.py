"""Block-level ranking kernels: masking, deterministic top-K, hit matrices and metrics from hits.

Every function works on a *block* of users at once (a ``[block, n_items]`` score matrix) with tensor
operations only; :class:`cikg.eval.Evaluator` drives them over blocks so memory is bounded by
``block_size * n_items`` instead of ``n_users * n_items``.

Tie rule (deterministic, documented once here and followed by the tests' reference):
    items are ranked by score descending and, among equal scores, by item id ascending (the lower id
    ranks first). ``-inf`` marks an item that is not a candidate (excluded: e.g. a training item); such
    items never count as hits and never occupy a ranked position that matters, so when ``K`` exceeds the
    number of candidates the tail of the list simply holds no hits.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from ..errors import CikgError

METRICS = ("recall", "ndcg", "precision", "hit")
"""Metric names understood by :func:`metrics_from_hits`."""


def csr_rows(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gather the CSR rows of ``users`` into flat ``(row, column)`` tensors.

    Args:
        indptr: ``LongTensor [n_rows + 1]``; row ``r`` owns ``indices[indptr[r]:indptr[r + 1]]``.
        indices: ``LongTensor [nnz]``.
        users: ``LongTensor [b]`` rows to gather, in any order (repeats allowed).

    Returns:
        ``(row, column)``, both ``LongTensor [sum of the rows' lengths]``; ``row`` is the *position*
        of the user in ``users`` (``0 .. b-1``), ``column`` the stored index.
    """
    starts = indptr[users]
    counts = indptr[users + 1] - starts
    row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), counts)
    first_of_row = torch.cumsum(counts, 0) - counts
    offsets = torch.arange(row.numel(), device=users.device) - first_of_row[row] + starts[row]
    return row, indices[offsets]


def mask_excluded_(scores: torch.Tensor, row: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """Set ``scores[row, item] = -inf`` in place through one flat index (``row * n_items + item``)."""
    if row.numel():
        flat = row * scores.size(1) + item
        scores.view(-1).index_fill_(0, flat, float("-inf"))
    return scores


def _order_by_score_then_id(values: torch.Tensor, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row of a small ``[b, k]`` selection by score descending, then item id ascending."""
    items, by_id = torch.sort(items, dim=1)
    values = torch.gather(values, 1, by_id)
    values, by_score = torch.sort(values, dim=1, descending=True, stable=True)
    return values, torch.gather(items, 1, by_score)


def top_items(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The top ``min(k, n_items)`` items per row under the module's tie rule.

    One ``torch.topk`` at ``k + 1`` finds the candidates; a row whose ``k``-th and ``(k+1)``-th scores
    are equal (and finite) has a tie across the cut, and only those rows are fully sorted (stable, so the
    lower item id wins). All other rows only have their ``k`` selected items re-sorted.

    Args:
        scores: ``FloatTensor [b, n_items]``; ``-inf`` marks non-candidates.
        k: list length, ``>= 1``.

    Returns:
        ``(items, valid)``: ``LongTensor [b, min(k, n_items)]`` ranked item ids, and a ``BoolTensor`` of the
        same shape that is ``False`` where the ranked item is a non-candidate (score ``-inf``).

    Raises:
        CikgError: when a score is NaN.
    """
    n_items = scores.size(1)
    k_eff = min(k, n_items)
    probe = min(k_eff + 1, n_items)
    values, items = torch.topk(scores, probe, dim=1, largest=True, sorted=True)
    if values.numel() and bool(torch.isnan(values[:, 0]).any()):  # topk ranks NaN above everything
        raise CikgError("evaluation scores contain NaN; the model produced invalid scores")
    if probe > k_eff:
        cut = values[:, k_eff - 1]
        tied = (values[:, k_eff] == cut) & (cut != float("-inf"))
        values, items = values[:, :k_eff], items[:, :k_eff]
    else:
        tied = torch.zeros(scores.size(0), dtype=torch.bool, device=scores.device)
    values, items = _order_by_score_then_id(values, items)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        full_values, full_items = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], items[rows] = full_values[:, :k_eff], full_items[:, :k_eff]
    return items, values != float("-inf")


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

