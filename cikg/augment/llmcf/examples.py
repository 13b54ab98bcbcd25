"""Labelled ``(user, item, label)`` training examples sampled from the train split (the CoT dataset's rows)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ...errors import DatasetError
from .._shared import in_sorted, train_keys


@dataclass
class Examples:
    """Sampled ``(user, item, label)`` examples, each a ``LongTensor [n]`` (``labels`` 1 or 0)."""

    users: Tensor
    items: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.users.numel())

    def subset(self, index: Tensor) -> "Examples":
        return Examples(self.users[index], self.items[index], self.labels[index])


def sample_examples(dataset: Any, n_examples: int, neg_ratio: float = 1.0, seed: int = 2024,
                    users: Optional[Sequence[int]] = None) -> Examples:
    """Sample labelled examples from the train split (seeded, vectorised).

    Positives are distinct train pairs drawn uniformly; each negative pairs the user of a drawn train pair
    (so users appear as often as they interact) with a uniform item outside the user's train items.

    Args:
        users: restrict to these users (default: all).

    Returns:
        :class:`Examples` sorted by (user, item), positives and negatives interleaved.
    """
    generator = torch.Generator().manual_seed(seed)
    pairs = dataset.train
    if users is not None:
        keep = torch.zeros(dataset.n_users, dtype=torch.bool)
        keep[torch.as_tensor(list(users), dtype=torch.long)] = True
        pairs = pairs[:, keep[pairs[0]]]
    if pairs.size(1) == 0:
        raise DatasetError(f"{dataset.name}: no train interaction to sample examples from")
    n_pos = max(1, min(int(round(n_examples / (1.0 + neg_ratio))), pairs.size(1)))
    n_neg = max(0, min(n_examples - n_pos, int(round(n_pos * neg_ratio))) if neg_ratio > 0 else 0)
    pos = pairs[:, torch.randperm(pairs.size(1), generator=generator)[:n_pos]]
    pos = torch.unique(pos[0] * dataset.n_items + pos[1])
    known = train_keys(dataset)
    neg_users = pairs[0, torch.randint(pairs.size(1), (n_neg,), generator=generator)]
    neg = torch.empty(0, dtype=torch.long)
    todo = neg_users
    for _ in range(20):  # rejection rounds; each keeps the draws that miss the train set
        if todo.numel() == 0:
            break
        items = torch.randint(dataset.n_items, (todo.numel(),), generator=generator)
        keys = todo * dataset.n_items + items
        hit = in_sorted(known, keys)
        neg = torch.cat([neg, keys[~hit]])
        todo = todo[hit]
    neg = torch.unique(neg)
    neg = neg[~torch.isin(neg, pos)]
    keys = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(pos.numel(), dtype=torch.long), torch.zeros(neg.numel(), dtype=torch.long)])
    order = torch.argsort(keys)
    keys, labels = keys[order], labels[order]
    return Examples(keys // dataset.n_items, keys % dataset.n_items, labels)


def example_id(dataset: Any, user: int, item: int) -> str:
    """The id of one example in requests and replay files: ``"<original user id>|<original item id>"``."""
    return f"{dataset.user_ids[user]}|{dataset.item_ids[item]}"
