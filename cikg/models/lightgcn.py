"""LightGCN (He et al., SIGIR 2020, arXiv 2002.02126) over any view of the CIKG.

One embedding table covers the global node index of the views (``[users | items | entities |
interests]``); propagation is :class:`~cikg.models.propagation.LGPropagation` over the view's normalised
adjacency, so memory grows with nodes and edges, never users × items:

.. math::
    Z = \\frac{1}{K+1} \\sum_{k=0}^{K} \\hat{A}^k E, \\qquad \\hat{y}_{ui} = z_u^\\top z_i,

trained with BPR plus :math:`\\lambda` times the L2 of the batch's ego embeddings. ``view="collaborative"``
is the classic baseline (nodes outside the view are isolated and unused); ``view="full"`` is
``LightGCN-CIKG``: users, items, KG entities and interests in one propagation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import checks
from ..errors import ConfigError
from ..graph import VIEW_PARTS, GraphViews, View
from .base import BPRBatch, LossTerms, Recommender, bpr_loss, l2_reg
from .fusion import FusionConfig, build_fusion
from .propagation import EdgeDropout, LGPropagation

logger = logging.getLogger(__name__)


@dataclass
class LightGCNConfig:
    """Settings of :class:`LightGCN`.

    Attributes:
        dim: embedding size.
        layers: propagation layers :math:`K`.
        l2: weight :math:`\\lambda` of the L2 on the batch's ego embeddings.
        view: the graph to propagate over: ``collaborative``, ``interest``, ``kg`` or ``full``.
        self_loops: add :math:`I` to the adjacency before normalising.
        edge_dropout: share of undirected edges dropped, resampled once per epoch (0 = off).
        message_dropout: dropout on the ego embeddings before propagation (0 = off).
        features: how node features (``graph[t].x``) are fused into the ego embeddings
            (:class:`~cikg.models.fusion.FusionConfig`; ``mode: none`` = plain LightGCN).
    """

    dim: int = 64
    layers: int = 3
    l2: float = 1e-4
    view: View = View.COLLABORATIVE
    self_loops: bool = False
    edge_dropout: float = 0.0
    message_dropout: float = 0.0
    features: FusionConfig = field(default_factory=FusionConfig)
    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("dim"), checks.non_negative_int("layers"), checks.non_negative("l2"),
        checks.choice(View, "view"), checks.probability("edge_dropout", "message_dropout"))

    def __post_init__(self) -> None:
        checks.check(self)

    def build(self, views: GraphViews) -> "LightGCN":
        return LightGCN(views, self)


@dataclass
class LightGCNCIKGConfig(LightGCNConfig):
    """``LightGCN-CIKG``: :class:`LightGCN` over the full CIKG (users, items, entities, interests)."""

    view: str = "full"


class LightGCN(Recommender):
    """LightGCN over ``config.view`` of ``views``.

    Args:
        views: the graph (:func:`cikg.graph.build_views`), kept as ``self.graph``; its adjacency of
            ``config.view`` (with ``config.self_loops``) is built once and moves with the model.
        config: :class:`LightGCNConfig`.

    Shapes:
        ``embedding.weight``: ``[views.n_nodes, dim]``; :meth:`embed` returns ``[n_users, dim]``,
        ``[n_items, dim]``.
    """

    def __init__(self, views: GraphViews, config: Optional[LightGCNConfig] = None):
        super().__init__()
        self.config = config or LightGCNConfig()
        self.view = self.config.view
        if self.view is not View.COLLABORATIVE and views.edge_index(self.view).size(1) == \
                views.edge_index(View.COLLABORATIVE).size(1):
            logger.warning("LightGCN view %r adds no edges to the collaborative graph here", self.view.value)
        self.n_users, self.n_items = views.counts["user"], views.counts["item"]
        if self.n_users < 1 or self.n_items < 1:
            raise ConfigError(f"the graph has {self.n_users} users and {self.n_items} items", "view")
        self.item_offset = views.offsets["item"]
        self.node_slices = {t: views.node_slice(t) for t in ("user", "item")}  # the types the view trains
        for node_type, edges in (("entity", "kg"), ("interest", "interest")):
            if edges in VIEW_PARTS[self.view] and edges in views.edges and views.counts[node_type] > 0:
                self.node_slices[node_type] = views.node_slice(node_type)
        self.graph = views
        self.embedding = nn.Embedding(views.n_nodes, self.config.dim)
        self.propagation = LGPropagation(self.config.layers, message_dropout=self.config.message_dropout)
        self.fusion = build_fusion(self.config.features, views, self.config.dim)
        self._edge_dropout: Optional[EdgeDropout] = None
        self._train_adj: Optional[Tensor] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.embedding.weight)
        if self.fusion is not None:
            self.fusion.reset_parameters()
        self._train_adj = None

    def id_embeddings(self) -> Tuple[Tensor, Tensor]:
        weight = self.embedding.weight  # the global index of the views
        return weight[:self.n_users], weight[self.item_offset:self.item_offset + self.n_items]

    def ego(self) -> Tensor:
        """Layer-0 embeddings ``[n_nodes, dim]``: the ID table, fused with node features when configured."""
        weight = self.embedding.weight
        return weight if self.fusion is None else self.fusion(weight)

    def full_adjacency(self) -> Tensor:
        return self.graph.adj(self.view, self.config.self_loops)

    def training_adjacency(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """The adjacency of this epoch: the full one, or its edge-dropped sample (drawn once per epoch)."""
        if self.config.edge_dropout == 0.0:
            return self.full_adjacency()
        if self._train_adj is None or self._train_adj.device != self.embedding.weight.device:
            self.resample_edges(generator)
        return self._train_adj

    def resample_edges(self, generator: Optional[torch.Generator] = None) -> None:
        full = self.full_adjacency()
        if self._edge_dropout is None or self._edge_dropout.rows.device != full.device:
            self._edge_dropout = EdgeDropout(full)
        self._train_adj = self._edge_dropout.sample(self.config.edge_dropout, generator)

    def on_epoch_start(self, epoch: int, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        if self.config.edge_dropout > 0.0:
            self.resample_edges(generator)
        return {}

    def propagate(self, adj: Optional[Tensor] = None) -> Tensor:
        """Final embeddings of every node ``[n_nodes, dim]`` (over the full adjacency by default)."""
        return self.propagation(self.ego(), self.full_adjacency() if adj is None else adj)

    def embed(self) -> Tuple[Tensor, Tensor]:
        out = self.propagate()
        return out[: self.n_users], out[self.item_offset: self.item_offset + self.n_items]

    @torch.no_grad()
    def node_embeddings(self) -> Dict[str, Tensor]:
        out = self.propagate()
        return {node_type: out[rows] for node_type, rows in self.node_slices.items()}

    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:
        ego = self.ego()
        out = self.propagation(ego, self.training_adjacency() if self.training else self.full_adjacency())
        pos, neg = batch.pos + self.item_offset, batch.neg + self.item_offset
        users = out[batch.users]
        bpr = bpr_loss((users * out[pos]).sum(-1), (users * out[neg]).sum(-1))
        l2 = l2_reg(ego[batch.users], ego[pos], ego[neg])
        return bpr + self.config.l2 * l2, {"bpr": bpr.detach(), "l2": l2.detach()}

    def __repr__(self) -> str:
        c = self.config
        return (f"LightGCN(view={self.view.value}, nodes={self.embedding.num_embeddings}, dim={c.dim}, "
                f"layers={c.layers}, l2={c.l2}, self_loops={c.self_loops}, edge_dropout={c.edge_dropout}, "
                f"message_dropout={c.message_dropout}"
                + (f", features={c.features.mode}/{c.features.adaptor})" if self.fusion is not None else ")"))
