"""Top-K selection under cikg's one tie rule, and CSR masking: the kernel that evaluation, a model's
``recommend`` and serving all rank with, so the three can never disagree on an order.

Tie rule (deterministic, documented once here and followed by the tests' reference):
    items are ranked by score descending and, among equal scores, by item id ascending (the lower id
    ranks first). ``-inf`` marks an item that is not a candidate (excluded: e.g. a training item); such
    items never count as hits and never occupy a ranked position that matters, so when ``K`` exceeds the
    number of candidates the tail of the list simply holds no hits.

It sits below :mod:`cikg.models` and :mod:`cikg.eval` (it imports only torch and :mod:`cikg.errors`).
"""
from __future__ import annotations

from typing import Tuple

import torch

from .errors import DivergedError


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
        DivergedError: when a score is NaN.
    """
    n_items = scores.size(1)
    k_eff = min(k, n_items)
    probe = min(k_eff + 1, n_items)
    values, items = torch.topk(scores, probe, dim=1, largest=True, sorted=True)
    if values.numel() and bool(torch.isnan(values[:, 0]).any()):  # topk ranks NaN above everything
        raise DivergedError("evaluation scores contain NaN; the model produced invalid scores (did training "
                            "diverge? a lower learning rate or stronger regularisation may help)")
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
