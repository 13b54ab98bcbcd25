"""Contradiction detection: the judge compares validation confidence with and without the knowledge."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import Tensor

from .._shared import csr_rows
from .model import CoCoModel


@torch.no_grad()
def validation_confidence(dataset: Any, users: Tensor, user_vectors: Tensor, item_cf: Tensor,
                          block_size: int = 512) -> Tensor:
    """Mean log-softmax score of each user's validation items among the items not in its train split.

    Returns:
        ``[len(users)]`` (``nan`` for users without a validation item).
    """
    v_indptr, v_indices = dataset.csr("valid")
    t_indptr, t_indices = dataset.csr("train")
    out = torch.full((users.numel(),), float("nan"))
    for start in range(0, users.numel(), block_size):
        batch = users[start:start + block_size]
        scores = user_vectors[start:start + block_size] @ item_cf.t()
        rows, cols = csr_rows(t_indptr, t_indices, batch)
        scores[rows, cols] = float("-inf")
        logp = torch.log_softmax(scores, dim=1)
        rows, cols = csr_rows(v_indptr, v_indices, batch)
        sums = torch.zeros(batch.numel()).index_add_(0, rows, logp[rows, cols])
        counts = torch.bincount(rows, minlength=batch.numel())
        out[start:start + batch.numel()] = torch.where(counts > 0, sums / counts.clamp(min=1), float("nan"))
    return out


@dataclass
class Judgement:
    """The judge's verdict on a set of users.

    Attributes:
        users: ``LongTensor [n]``; with, without: validation confidence with and without the knowledge.
        flagged: ``BoolTensor [n]``: the knowledge lowers confidence by more than the margin.
    """

    users: Tensor
    with_knowledge: Tensor
    without_knowledge: Tensor
    flagged: Tensor

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())

    @property
    def n_judged(self) -> int:
        return int((~torch.isnan(self.with_knowledge)).sum())

    def summary(self) -> Dict[str, float]:
        valid = ~torch.isnan(self.with_knowledge)
        delta = (self.with_knowledge - self.without_knowledge)[valid]
        return {"judged": self.n_judged, "flagged": self.n_flagged,
                "mean_conf_with": float(self.with_knowledge[valid].mean()) if valid.any() else float("nan"),
                "mean_conf_without": float(self.without_knowledge[valid].mean()) if valid.any() else float("nan"),
                "mean_delta": float(delta.mean()) if delta.numel() else float("nan")}


def judge(model: CoCoModel, dataset: Any, users: Tensor, knowledge: Tensor, user_cf: Tensor, item_cf: Tensor,
          margin: float = 0.0) -> Judgement:
    """Compare validation confidence with (:math:`f_u + W k_u`) and without (:math:`f_u`) the knowledge."""
    with torch.no_grad():
        with_k = validation_confidence(dataset, users, model.user_vectors(user_cf[users], knowledge), item_cf)
        without = validation_confidence(dataset, users, user_cf[users], item_cf)
    flagged = (with_k < without - margin) & ~torch.isnan(with_k)
    return Judgement(users, with_k, without, flagged)


def flagged_subset(judgement: Judgement) -> Judgement:
    keep = judgement.flagged
    return Judgement(judgement.users[keep], judgement.with_knowledge[keep], judgement.without_knowledge[keep],
                     judgement.flagged[keep])
