"""Knowledge-graph building blocks shared by the KG models (CIKGRec's TransE, KGAT's TransR).

:class:`TripleStore` holds directed triples :math:`(h, r, t)` over one node index, sorted by head, as
buffers (so ``.to(device)`` moves them with the model). It answers "is this a true triple?" with one
``searchsorted`` of the key :math:`(h R + r) N + t` into the sorted keys, and draws the training batches
both releases use: a head uniform among the heads that have triples, one of its triples uniform, and a
corrupted tail uniform in a per-row range, redrawn (only where needed) while it forms a true triple.

:func:`translation_distance` is the score both translation models rank with:
:math:`\\lVert h + r - t \\rVert_2^2` (TransE on the embeddings; TransR on the relation-projected ones).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .rng import random_integers, uniform_random

#: Rounds of redrawing corrupted tails that happen to form true triples (a clash left after them stays).
CORRUPTION_ROUNDS = 20


def translation_distance(head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
    """:math:`\\lVert h + r - t \\rVert_2^2` per row (``[B, d]`` each -> ``[B]``)."""
    return (head + relation - tail).pow(2).sum(-1)


class TripleStore(nn.Module):
    """Directed triples over ``n_nodes`` nodes and ``n_relations`` relations, sorted by head.

    Args:
        head, relation, tail: ``LongTensor [T]`` each. The order inside one head is kept (stable sort), so a
            caller decides which triple an offset inside a head's block picks.
        n_nodes, n_relations: sizes of the node and relation index (keys are ``(h R + r) N + t``).

    Buffers (not saved in ``state_dict``: they are rebuilt from the graph):
        ``head``, ``relation``, ``tail`` ``[T]``; ``head_nodes`` ``[H]`` (heads with triples, ascending),
        ``head_start`` / ``head_count`` ``[H]`` (their block in the sorted triples); ``keys`` ``[T]`` sorted.
    """

    def __init__(self, head: Tensor, relation: Tensor, tail: Tensor, n_nodes: int, n_relations: int):
        super().__init__()
        if not head.numel() == relation.numel() == tail.numel():
            raise ValueError(f"head, relation and tail differ in length: {head.numel()}, {relation.numel()}, "
                             f"{tail.numel()}")
        self.n_nodes, self.n_relations = int(n_nodes), int(n_relations)
        order = torch.argsort(head, stable=True)
        head, relation, tail = head[order], relation[order], tail[order]
        head_nodes, counts = torch.unique_consecutive(head, return_counts=True)
        for name, value in (("head", head), ("relation", relation), ("tail", tail), ("head_nodes", head_nodes),
                            ("head_start", torch.cumsum(counts, 0) - counts), ("head_count", counts),
                            ("keys", torch.sort(self.key(head, relation, tail)).values)):
            self.register_buffer(name, value, persistent=False)

    def __len__(self) -> int:
        return int(self.head.numel())

    @property
    def device(self) -> torch.device:
        return self.head.device

    def key(self, head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
        """The sortable key :math:`(h R + r) N + t` of each triple."""
        return (head * self.n_relations + relation) * self.n_nodes + tail

    def is_true(self, head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
        """``BoolTensor [B]``: whether each ``(head, relation, tail)`` is one of the stored triples."""
        if not len(self):
            return torch.zeros_like(head, dtype=torch.bool)
        key = self.key(head, relation, tail)
        pos = torch.searchsorted(self.keys, key).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == key

    def sample(self, size: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """``(head, relation, tail)`` ``[size]`` each: heads uniform among those with triples, then one of
        the head's triples uniform."""
        which = random_integers(self.head_nodes.numel(), size, self.device, generator)
        count = self.head_count[which]
        offset = (uniform_random((size,), self.device, generator, torch.float64) * count).long().clamp_max(count - 1)
        index = self.head_start[which] + offset
        return self.head[index], self.relation[index], self.tail[index]

    def corrupt_tails(self, head: Tensor, relation: Tensor, low: Tensor, span: Tensor,
                      generator: Optional[torch.Generator] = None, rounds: int = CORRUPTION_ROUNDS) -> Tensor:
        """A tail per row uniform in ``low[j] .. low[j] + span[j] - 1``, redrawn while ``(head, relation,
        tail)`` is a true triple (only the clashing rows, at most ``rounds`` times).

        Args:
            head, relation: ``LongTensor [B]``; low, span: ``LongTensor [B]`` (or broadcastable) ranges.
        """
        low, span = torch.broadcast_to(low, head.shape), torch.broadcast_to(span, head.shape)
        todo = torch.arange(head.numel(), device=self.device)
        tail = torch.empty_like(head)
        for _ in range(rounds):
            u = uniform_random((todo.numel(),), self.device, generator, torch.float64)
            tail[todo] = low[todo] + (u * span[todo]).long().clamp_max(span[todo] - 1)
            todo = todo[self.is_true(head[todo], relation[todo], tail[todo])]
            if todo.numel() == 0:
                break
        return tail

    def extra_repr(self) -> str:
        return f"triples={len(self)}, heads={self.head_nodes.numel()}, nodes={self.n_nodes}, " \
               f"relations={self.n_relations}"
