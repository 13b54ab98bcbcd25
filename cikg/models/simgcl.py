"""SimGCL (Yu et al., SIGIR 2022, arXiv 2112.08679) and SGL-ED (Wu et al., SIGIR 2021) over LightGCN.

The self-supervised collaborative-filtering baseline: LightGCN trained with BPR plus an in-batch InfoNCE
between two *views* of every node, with no interests and no KG, so it separates the gain of
"contrastive learning" from the gain of the CIKG's interests.

SimGCL (``augmentation="noise"``) makes each view by adding, after every propagation layer, a random
uniform vector sign-matched to the embedding and scaled to norm :math:`\\epsilon`
(:func:`~cikg.models.propagation.simgcl_noise`):

.. math::
    e^{(k)\\prime} = \\hat{A} e^{(k-1)\\prime} + \\epsilon\\, \\mathrm{sign}(\\hat{A} e^{(k-1)\\prime}) \\odot
    \\frac{\\Delta}{\\lVert \\Delta \\rVert_2}, \\qquad \\Delta \\sim U[0, 1)^d,

and SGL-ED (``augmentation="edge_dropout"``) propagates each view over its own edge-dropped graph, redrawn
once per epoch. The loss of a batch is

.. math::
    \\mathcal{L} = \\mathcal{L}_{BPR} + \\lambda\\,(\\mathcal{L}^{user}_{NCE} + \\mathcal{L}^{item}_{NCE})
    + \\beta \\lVert E^{(0)}_{batch} \\rVert^2, \\quad
    \\mathcal{L}^{user}_{NCE} = \\frac{1}{|U_b|}\\sum_{u \\in U_b} -\\log
    \\frac{\\exp(\\cos(z'_u, z''_u)/\\tau)}{\\sum_{v \\in U_b} \\exp(\\cos(z'_u, z''_v)/\\tau)},

over the batch's unique users :math:`U_b` (and likewise its unique positive items). Scoring uses the
clean (un-noised, full-graph) propagation.

Defaults are the paper's settings: :math:`\\epsilon = 0.1`, :math:`\\tau = 0.2`, 3 layers and
:math:`\\lambda = 0.5`, its Yelp2018 value (also the authors' SELFRec default); the paper tunes
:math:`\\lambda` per dataset (its sensitivity study spans 0.01-5), so set ``cl_weight`` from a study on a
new dataset. As in the paper and its released code, the layer-0 embedding is left out of the layer mean
(``include_ego=False``); ``include_ego=True`` gives LightGCN's mean over layers 0..K. SGL's published
settings are an edge-dropout rate of 0.1, :math:`\\tau = 0.2` and :math:`\\lambda = 0.1`.

Deviation: the L2 term is on the batch's ego embeddings with :math:`\\beta` = ``l2`` (cikg's LightGCN
convention), where the release regularises the propagated ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Tuple

import torch
from torch import Tensor

from .. import checks
from ..errors import ConfigError
from ..graph import GraphViews
from .base import BPRBatch, LossTerms
from .cikgrec import info_nce
from .lightgcn import LightGCN, LightGCNConfig
from .propagation import EdgeDropout, LGPropagation, simgcl_noise


class Augmentation(checks.Choice):
    """How the two contrastive views differ."""

    NOISE = "noise"  # SimGCL: random noise of norm eps added per layer
    EDGE_DROPOUT = "edge_dropout"  # SGL-ED: each view drops its own edges


AUGMENTATIONS = tuple(a.value for a in Augmentation)


@dataclass
class SimGCLConfig(LightGCNConfig):
    """Settings of :class:`SimGCL` (those of :class:`~cikg.models.LightGCNConfig` plus the contrastive ones).

    Attributes:
        eps: norm :math:`\\epsilon` of the noise added per layer (``augmentation="noise"``).
        temperature: InfoNCE temperature :math:`\\tau`.
        cl_weight: weight :math:`\\lambda` of the contrastive term (users + items).
        augmentation: ``noise`` (SimGCL) or ``edge_dropout`` (SGL-ED).
        view_edge_dropout: share of undirected edges each SGL view drops, redrawn per epoch.
        include_ego: average layers 0..K (LightGCN) instead of 1..K (the paper's choice).
        cl_max_logits: block the InfoNCE when users × users exceeds this (same value, bounded memory).
    """

    eps: float = 0.1
    temperature: float = 0.2
    cl_weight: float = 0.5
    augmentation: Augmentation = Augmentation.NOISE
    view_edge_dropout: float = 0.1
    include_ego: bool = False
    cl_max_logits: Optional[int] = None
    CONSTRAINTS: ClassVar[checks.Constraints] = LightGCNConfig.CONSTRAINTS + (
        checks.non_negative("eps", "cl_weight"), checks.positive("temperature"),
        checks.choice(Augmentation, "augmentation"), checks.probability("view_edge_dropout"),
        checks.positive_int("cl_max_logits", optional=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.include_ego is False and self.layers == 0:
            raise ConfigError("layers=0 leaves nothing to average without the layer-0 embedding; set "
                              "include_ego=true or layers >= 1", "layers")

    def build(self, views: GraphViews) -> "SimGCL":
        return SimGCL(views, self)


class SimGCL(LightGCN):
    """LightGCN with a noise (SimGCL) or edge-dropout (SGL-ED) contrastive term.

    Args:
        views: the CIKG's node index and edges; ``config.view`` picks the graph (``collaborative`` is the
            published model).
        config: :class:`SimGCLConfig`.

    Shapes:
        ``embedding.weight``: ``[views.n_nodes, dim]``; :meth:`embed` returns ``[n_users, dim]``,
        ``[n_items, dim]``; :meth:`contrastive_views` returns two ``[n_nodes, dim]``.
    """

    config: SimGCLConfig

    def __init__(self, views: GraphViews, config: Optional[SimGCLConfig] = None):
        config = config or SimGCLConfig()
        super().__init__(views, config)
        k = config.layers
        weights = [1.0 / (k + 1)] * (k + 1) if config.include_ego else [0.0] + [1.0 / k] * k
        self.propagation = LGPropagation(k, weights, message_dropout=config.message_dropout)
        self.view_propagation = LGPropagation(k, weights)
        self._generator: Optional[torch.Generator] = None
        self._view_dropout: Optional[EdgeDropout] = None
        self._view_adjs: Optional[Tuple[Tensor, Tensor]] = None

    def on_epoch_start(self, epoch: int, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        logged = super().on_epoch_start(epoch, generator)
        self._generator = generator
        if self.config.augmentation is Augmentation.EDGE_DROPOUT:
            self.resample_views(generator)
        return logged

    def resample_views(self, generator: Optional[torch.Generator] = None) -> None:
        """Draw SGL's two edge-dropped graphs (once per epoch)."""
        full = self.full_adjacency()
        if self._view_dropout is None or self._view_dropout.rows.device != full.device:
            self._view_dropout = EdgeDropout(full)
        p = self.config.view_edge_dropout
        self._view_adjs = (self._view_dropout.sample(p, generator), self._view_dropout.sample(p, generator))

    def contrastive_views(self, ego: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The two augmented propagations of every node ``([n_nodes, dim], [n_nodes, dim])``."""
        ego = self.ego() if ego is None else ego
        c = self.config
        if c.augmentation is Augmentation.NOISE:
            adj = self.full_adjacency()
            return tuple(self.view_propagation(ego, adj, perturb=simgcl_noise(c.eps, self._generator))
                         for _ in range(2))
        if self._view_adjs is None or self._view_adjs[0].device != ego.device:
            self.resample_views(self._generator)
        return tuple(self.view_propagation(ego, adj) for adj in self._view_adjs)

    def contrastive_loss(self, users: Tensor, items: Tensor, ego: Optional[Tensor] = None) -> Tensor:
        """In-batch InfoNCE of the unique ``users`` plus that of the unique ``items`` (a scalar)."""
        c = self.config
        first, second = self.contrastive_views(ego)
        total = first.new_zeros(())
        for nodes in (torch.unique(users), torch.unique(items) + self.item_offset):
            targets = torch.arange(nodes.numel(), device=nodes.device)
            total = total + info_nce(first[nodes], second[nodes], targets, c.temperature, c.cl_max_logits)
        return total

    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:
        total, terms = super().loss(batch)  # BPR on the clean propagation + L2 of the ego rows
        cl = self.contrastive_loss(batch.users, batch.pos) if self.config.cl_weight > 0.0 else total.new_zeros(())
        return total + self.config.cl_weight * cl, {**terms, "cl": cl.detach()}

    def __repr__(self) -> str:
        c = self.config
        aug = f"eps={c.eps}" if c.augmentation is Augmentation.NOISE else f"view_edge_dropout={c.view_edge_dropout}"
        return (f"SimGCL(augmentation={c.augmentation}, {aug}, view={self.view.value}, "
                f"nodes={self.embedding.num_embeddings}, dim={c.dim}, layers={c.layers}, "
                f"include_ego={c.include_ego}, temperature={c.temperature}, cl_weight={c.cl_weight}, l2={c.l2})")
