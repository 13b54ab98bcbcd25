"""Vectorised BPR sampling: a whole epoch of (user, positive, negative) triples on tensors.

BPR (Rendle et al., 2009) trains on triples ``(u, i, j)`` with ``i`` an observed item of ``u`` and ``j``
an item ``u`` has not interacted with. One epoch visits every observed ``(u, i)`` pair once in a shuffled
order and pairs it with one negative drawn uniformly from the items outside ``u``'s training set.

Negatives are drawn for a whole shard at once: draw ``j ~ U{0..n_items-1}`` for every pair, test
membership of ``u * n_items + j`` in the sorted keys of the training pairs with one ``searchsorted``,
redraw only the rejected ones, and repeat. After ``max_rounds`` rounds the few that are still rejected
(users who hold almost every item) are drawn exactly instead: ``r ~ U{0..n_items-deg(u)-1}`` is mapped to
the ``r``-th item the user has *not* interacted with, again by one ``searchsorted``. Either way the
negative is uniform over the user's non-interacted items.

Sharding for ``torch.distributed``: every rank shuffles with the same generator seed, takes the
disjoint slice ``perm[rank::world_size]`` (together the ranks cover the epoch exactly), and splits it into
the same number of batches on every rank so that collective calls stay in step.

Example::

    sampler = BPRSampler(dataset.train, dataset.n_users, dataset.n_items, batch_size=2048)
    for users, pos, neg in sampler.epoch(torch.Generator().manual_seed(epoch_seed)):
        loss = model.bpr_loss(users, pos, neg)
"""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import torch

from ..errors import CikgError, DatasetError
from ..models.base import BPRBatch

log = logging.getLogger(__name__)


class BPRSampler:
    """Epochs of shuffled BPR triples with uniform negatives, optionally one shard per rank.

    Args:
        train: ``LongTensor [2, n]`` (user, item) training pairs (any order; duplicates are kept as
            positives but counted once for rejection).
        n_users, n_items: id ranges.
        batch_size: the most triples per batch; a shard is split into ``len(self)`` batches of nearly
            equal size (the same count on every rank, so with more ranks than positives a batch can be empty).
        rank, world_size: this process's shard of each epoch (``0 <= rank < world_size``).
        max_rounds: rejection rounds before the stragglers are drawn exactly.
    """

    def __init__(self, train: torch.Tensor, n_users: int, n_items: int, batch_size: int = 2048, *,
                 rank: int = 0, world_size: int = 1, max_rounds: int = 16):
        if train.dim() != 2 or train.size(0) != 2 or train.dtype != torch.long:
            raise CikgError(f"train must be a LongTensor [2, n] of (user, item), got {train.dtype} "
                            f"{tuple(train.shape)}")
        if batch_size < 1:
            raise CikgError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise CikgError(f"expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if train.size(1) and (int(train[0].min()) < 0 or int(train[0].max()) >= n_users
                              or int(train[1].min()) < 0 or int(train[1].max()) >= n_items):
            raise CikgError(f"train pairs must have users in 0..{n_users - 1} and items in 0..{n_items - 1}")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.batch_size, self.rank, self.world_size, self.max_rounds = batch_size, rank, world_size, max_rounds
        by_user = torch.argsort(train[0], stable=True)  # keep the pairs grouped by user (see epoch)
        self.users, self.items = train[0][by_user], train[1][by_user]
        # fitted state: sorted unique keys u * n_items + i, their per-user offsets and the users' degrees
        self.keys = torch.unique(self.users * self.n_items + self.items, sorted=True)
        key_users = torch.div(self.keys, self.n_items, rounding_mode="floor")
        self.degree = torch.bincount(key_users, minlength=self.n_users)
        self.row_start = torch.cumsum(self.degree, 0) - self.degree
        rank_in_row = torch.arange(self.keys.numel()) - self.row_start[key_users]
        # gap key: u * n_items + (item - its rank in the row) is sorted and maps a free-item index to an item
        self.gap_keys = self.keys - rank_in_row

    @classmethod
    def from_csr(cls, indptr: torch.Tensor, indices: torch.Tensor, n_items: int, **kwargs) -> "BPRSampler":
        """Build from a train CSR ``(indptr [n_users + 1], indices)``."""
        n_users = indptr.numel() - 1
        users = torch.repeat_interleave(torch.arange(n_users), indptr.diff())
        return cls(torch.stack([users, indices]), n_users, n_items, **kwargs)

    # ------------------------------------------------------------------ epochs
    @property
    def n_positives(self) -> int:
        return int(self.users.numel())

    def shard_size(self, rank: Optional[int] = None) -> int:
        rank = self.rank if rank is None else rank
        return len(range(rank, self.n_positives, self.world_size))

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        return -(-self.shard_size(0) // self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[BPRBatch]:
        """Yield this rank's mini-batches of one epoch.

        The permutation is drawn from ``generator`` (seed it identically on every rank); the negatives
        of this rank come from a generator derived from it and the rank, so a run is reproducible for a
        given seed, rank and world size.
        """
        perm = torch.randperm(self.n_positives, generator=generator)
        shard = perm[self.rank::self.world_size]
        base_seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        neg_gen = torch.Generator().manual_seed(base_seed + self.rank)
        # draw negatives with the shard in stored (user-sorted) order: the membership searches then walk
        # the sorted keys nearly in order, about 4x faster than in shuffled order
        if self.world_size == 1:
            neg = self.sample_negatives(self.users, neg_gen)[shard]
        else:
            ordered, order = torch.sort(shard)
            neg = torch.empty_like(shard)
            neg[order] = self.sample_negatives(self.users[ordered], neg_gen)
        users, pos = self.users[shard], self.items[shard]
        n_batches = len(self)
        if n_batches == 0:
            return
        for batch in zip(*(torch.tensor_split(t, n_batches) for t in (users, pos, neg))):
            yield BPRBatch(*batch)

    # ------------------------------------------------------------------ negatives
    def sample_negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One uniform negative item per entry of ``users`` (``LongTensor [m]``), never a train item."""
        full = self.degree[users] >= self.n_items
        if bool(full.any()):
            user = int(users[full][0])
            raise DatasetError(f"user {user} has interacted with all {self.n_items} items in the training "
                               "split, so no negative item exists for BPR sampling")
        neg = torch.randint(self.n_items, (users.numel(),), generator=generator)
        todo = torch.arange(users.numel())
        for _ in range(self.max_rounds):
            todo = todo[self.is_train_item(users[todo], neg[todo])]
            if todo.numel() == 0:
                return neg
            neg[todo] = torch.randint(self.n_items, (todo.numel(),), generator=generator)
        todo = todo[self.is_train_item(users[todo], neg[todo])]
        if todo.numel():
            log.debug("%d negatives still rejected after %d rounds; drawing them exactly", todo.numel(),
                      self.max_rounds)
            neg[todo] = self._exact_negatives(users[todo], generator)
        return neg

    def is_train_item(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``BoolTensor``: whether each ``(users[k], items[k])`` is a training pair."""
        query = users * self.n_items + items
        if self.keys.numel() == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == query

    def _exact_negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw ``r`` uniform over each user's free items and return the ``r``-th free item.

        With the user's sorted train items ``s_0 < s_1 < ...``, the ``r``-th free item is ``r + j`` where
        ``j`` counts the ``s_t`` with ``s_t - t <= r``: one ``searchsorted`` in the sorted ``gap_keys``.
        """
        n_free = (self.n_items - self.degree[users]).double()
        r = torch.floor(torch.rand(users.numel(), generator=generator, dtype=torch.float64) * n_free).long()
        r = torch.minimum(r, n_free.long() - 1)
        before = torch.searchsorted(self.gap_keys, users * self.n_items + r, right=True) - self.row_start[users]
        return r + before

    def __repr__(self) -> str:
        return (f"BPRSampler(users={self.n_users}, items={self.n_items}, positives={self.n_positives}, "
                f"batch_size={self.batch_size}, rank={self.rank}/{self.world_size})")
