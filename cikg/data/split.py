"""Seeded, per-user validation split carved out of train."""
from __future__ import annotations

from typing import Tuple

import torch


def carve_validation(train: torch.Tensor, n_users: int, fraction: float = 1 / 8, seed: int = 2024,
                     min_train_items: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move a random ``fraction`` of each user's train items into a validation split.

    Users with at least ``min_train_items`` train items give ``max(1, round(fraction * n_u))`` items; the
    others keep everything in train. File order is kept inside each user in both outputs. Deterministic
    for ``seed``.

    Args:
        train: ``[2, n]`` (user, item) pairs sorted by user.
    Returns:
        ``(train, valid)``, both ``[2, *]`` sorted by user.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"valid fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or train.size(1) == 0:
        return train, torch.empty((2, 0), dtype=torch.long)
    users = train[0]
    counts = torch.bincount(users, minlength=n_users)
    n_valid = torch.clamp(torch.round(counts.double() * fraction).long(), min=1)
    n_valid[counts < min_train_items] = 0
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(train.size(1), generator=generator, dtype=torch.float64)
    # rank of each pair inside its user by random key: sort by (user, key)
    order = torch.argsort(users.double() * 2.0 + keys, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(train.size(1)) - starts[users[order]]
    is_valid = rank < n_valid[users]
    return train[:, ~is_valid].contiguous(), train[:, is_valid].contiguous()
