"""BPR-MF: matrix factorisation trained with the BPR loss (Rendle et al., UAI 2009, arXiv 1205.2618).

.. math::
    \\hat{y}_{ui} = e_u^\\top e_i, \\qquad
    L = -\\tfrac{1}{B} \\sum_{(u,i,j)} \\log \\sigma(\\hat{y}_{ui} - \\hat{y}_{uj})
        + \\lambda \\tfrac{1}{2B} (\\lVert e_u \\rVert^2 + \\lVert e_i \\rVert^2 + \\lVert e_j \\rVert^2)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Tuple

from torch import Tensor, nn

from .. import checks
from ..graph import GraphViews
from .base import BPRBatch, LossTerms, Recommender, bpr_loss, l2_reg
from .fusion import FusionConfig, build_fusion


@dataclass
class BPRMFConfig:
    """Settings of :class:`BPRMF`.

    Attributes:
        dim: embedding size.
        l2: weight :math:`\\lambda` of the L2 on the batch's embeddings.
        features: how node features are fused into the embeddings (:class:`~cikg.models.fusion.FusionConfig`).
    """

    dim: int = 64
    l2: float = 1e-4
    features: FusionConfig = field(default_factory=FusionConfig)
    CONSTRAINTS: ClassVar[checks.Constraints] = (checks.positive_int("dim"), checks.non_negative("l2"))

    def __post_init__(self) -> None:
        checks.check(self)

    def build(self, views: GraphViews) -> "BPRMF":
        return BPRMF(views.n_users, views.n_items, self, views)


class BPRMF(Recommender):
    """Users and items as free embeddings ``[n_users, dim]`` and ``[n_items, dim]``; score = inner product."""

    def __init__(self, n_users: int, n_items: int, config: Optional[BPRMFConfig] = None,
                 views: Optional[GraphViews] = None):
        super().__init__()
        if n_users < 1 or n_items < 1:
            raise ValueError(f"need at least one user and one item, got {n_users} users, {n_items} items")
        self.config = config or BPRMFConfig()
        self.n_users, self.n_items = n_users, n_items
        self.user_emb = nn.Embedding(n_users, self.config.dim)
        self.item_emb = nn.Embedding(n_items, self.config.dim)
        self.fusion = build_fusion(self.config.features, views, self.config.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        if self.fusion is not None:
            self.fusion.reset_parameters()

    def id_embeddings(self) -> Tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def embed(self) -> Tuple[Tensor, Tensor]:
        if self.fusion is None:
            return self.user_emb.weight, self.item_emb.weight
        return self.fusion.fuse("user", self.user_emb.weight), self.fusion.fuse("item", self.item_emb.weight)

    def _rows(self, node_type: str, table: nn.Embedding, index: Tensor) -> Tensor:
        rows = table(index)
        return rows if self.fusion is None else self.fusion.fuse(node_type, rows, index)

    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:
        users = self._rows("user", self.user_emb, batch.users)
        pos, neg = self._rows("item", self.item_emb, batch.pos), self._rows("item", self.item_emb, batch.neg)
        bpr = bpr_loss((users * pos).sum(-1), (users * neg).sum(-1))
        l2 = l2_reg(users, pos, neg)
        return bpr + self.config.l2 * l2, {"bpr": bpr.detach(), "l2": l2.detach()}

    def __repr__(self) -> str:
        return f"BPRMF(users={self.n_users}, items={self.n_items}, dim={self.config.dim}, l2={self.config.l2})"
