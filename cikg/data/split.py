"""Per-user hold-out splits: seeded random (:class:`RandomSplit`) or chronological (:class:`TemporalSplit`).

A hold-out size is either a count (``int``: the user's last / N random items) or a share (``float`` in
``[0, 1)``: ``max(1, round(share * n_u))`` items), as in scikit-learn's ``test_size``. Users with fewer than
``min_items`` items keep everything, and every user keeps at least one item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError

Size = Union[int, float]


def check_size(size: Size, key: str) -> None:
    """A hold-out size: an ``int >= 0`` (items per user) or a ``float`` share in ``[0, 1)``."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise ConfigError(f"expected an item count (int >= 0) or a share (float in [0, 1)), got {size!r}", key=key)
    if isinstance(size, int) and size < 0:
        raise ConfigError(f"an item count must be >= 0, got {size}", key=key)
    if isinstance(size, float) and not 0.0 <= size < 1.0:
        raise ConfigError(f"a share must be in [0, 1), got {size}", key=key)


def holdout_counts(counts: torch.Tensor, size: Size, min_items: int = 2) -> torch.Tensor:
    """Items to hold out per user, given each user's item ``counts``."""
    if isinstance(size, int):
        n = torch.full_like(counts, size)
    elif size == 0.0:
        n = torch.zeros_like(counts)
    else:
        n = torch.clamp(torch.round(counts.double() * size).long(), min=1)
    n = torch.minimum(n, torch.clamp(counts - 1, min=0))
    n[counts < min_items] = 0
    return n


def _rank_in_user(users: torch.Tensor, order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Rank of each pair inside its user when the pairs are visited in ``order`` (sorted by user)."""
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(users.numel()) - starts[users[order]]
    return rank


def carve_random(pairs: torch.Tensor, n_users: int, size: Size, seed: int,
                 min_items: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move a seeded random ``size`` of each user's pairs out: ``(rest, held)``, file order kept in both."""
    counts = torch.bincount(pairs[0], minlength=n_users)
    n_hold = holdout_counts(counts, size, min_items)
    if pairs.size(1) == 0 or int(n_hold.sum()) == 0:
        return pairs, torch.empty((2, 0), dtype=torch.long)
    users = pairs[0]
    keys = torch.rand(pairs.size(1), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    order = torch.argsort(users.double() * 2.0 + keys, stable=True)  # by (user, random key)
    is_held = _rank_in_user(users, order, counts) < n_hold[users]
    return pairs[:, ~is_held].contiguous(), pairs[:, is_held].contiguous()


def carve_latest(pairs: torch.Tensor, n_users: int, size: Size,
                 min_items: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move the last ``size`` of each user's pairs out: ``(rest, held)``.

    ``pairs`` must be sorted by user and in time order inside each user (see :func:`chronological_order`),
    so the held pairs are each user's latest ones.
    """
    counts = torch.bincount(pairs[0], minlength=n_users)
    n_hold = holdout_counts(counts, size, min_items)
    if pairs.size(1) == 0 or int(n_hold.sum()) == 0:
        return pairs, torch.empty((2, 0), dtype=torch.long)
    users = pairs[0]
    starts = torch.cumsum(counts, 0) - counts
    from_end = counts[users] - 1 - (torch.arange(users.numel()) - starts[users])
    is_held = from_end < n_hold[users]
    return pairs[:, ~is_held].contiguous(), pairs[:, is_held].contiguous()


def chronological_order(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by (user, time); equal times keep their row order (a stable tie-break)."""
    return np.lexsort((np.arange(users.size), times, users))


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
    return carve_random(train, n_users, float(fraction), seed, min_train_items)


def _size_meta(prefix: str, size: Size) -> Dict[str, Any]:
    return {f"{prefix}_last": size} if isinstance(size, int) else {f"{prefix}_fraction": size}


@dataclass(frozen=True)
class RandomSplit:
    """Seeded random hold-out per user: ``test`` items out of all, then ``valid`` out of the rest.

    Args:
        test, valid: an item count per user (``int``) or a share (``float`` in ``[0, 1)``).
        seed: test uses ``seed``, valid ``seed + 1``.
        min_items: users with fewer items keep all of them in train.
    """

    test: Size = 0.2
    valid: Size = 1 / 8
    seed: int = 2024
    min_items: int = 2

    def __post_init__(self) -> None:
        check_size(self.test, "test")
        check_size(self.valid, "valid")

    def carve(self, pairs: torch.Tensor, n_users: int) -> Dict[str, torch.Tensor]:
        """``{"train", "valid", "test"}`` out of ``pairs`` ``[2, n]`` sorted by user."""
        rest, test = carve_random(pairs, n_users, self.test, self.seed, self.min_items)
        train, valid = carve_random(rest, n_users, self.valid, self.seed + 1, self.min_items)
        return {"train": train, "valid": valid, "test": test}

    def describe(self) -> Dict[str, Any]:
        return {"method": "random", **_size_meta("test", self.test), **_size_meta("valid", self.valid),
                "seed": self.seed, "min_items": self.min_items}


@dataclass(frozen=True)
class TemporalSplit:
    """Chronological hold-out per user: each user's latest ``test`` items, then the latest ``valid`` of the rest.

    ``TemporalSplit(test=1, valid=1)`` is leave-one-out; ``TemporalSplit(test=0.2)`` a per-user ratio split.
    The pairs must be in time order inside each user (:func:`chronological_order`; ties keep file order).
    """

    test: Size = 0.2
    valid: Size = 1 / 8
    min_items: int = 2

    def __post_init__(self) -> None:
        check_size(self.test, "test")
        check_size(self.valid, "valid")

    def carve(self, pairs: torch.Tensor, n_users: int) -> Dict[str, torch.Tensor]:
        """``{"train", "valid", "test"}`` out of ``pairs`` ``[2, n]`` sorted by user, in time order."""
        rest, test = carve_latest(pairs, n_users, self.test, self.min_items)
        train, valid = carve_latest(rest, n_users, self.valid, self.min_items)
        return {"train": train, "valid": valid, "test": test}

    def describe(self) -> Dict[str, Any]:
        return {"method": "temporal", **_size_meta("test", self.test), **_size_meta("valid", self.valid),
                "min_items": self.min_items, "ties": "file order"}


def describe_split(meta: Dict[str, Any]) -> str:
    """One line for ``meta["split"]``: ``temporal on 'timestamp' (numeric): test = last 1 per user, ...``."""
    method = str(meta.get("method", "unknown"))
    head = method
    if meta.get("time_col"):
        head += f" on {meta['time_col']!r}" + (f" ({meta['time_type']})" if meta.get("time_type") else "")
    parts = []
    for split in ("test", "valid"):
        if f"{split}_last" in meta:
            parts.append(f"{split} = last {meta[f'{split}_last']} per user" if method == "temporal"
                         else f"{split} = {meta[f'{split}_last']} random per user")
        elif f"{split}_fraction" in meta:
            share = f"{float(meta[f'{split}_fraction']):.3g}"
            parts.append(f"{split} = latest {share} per user" if method == "temporal" else f"{split} = {share} per user")
    if "fraction" in meta:
        parts.append(f"valid = {float(meta['fraction']):.3g} of train per user")
    if "seed" in meta:
        parts.append(f"seed {meta['seed']}")
    if meta.get("files"):
        parts.append("from " + ", ".join(map(str, meta["files"])))
    return head + (": " + ", ".join(parts) if parts else "")
