"""KGIN: Knowledge Graph-based Intent Network (Wang et al., WWW 2021, arXiv 2102.07057), an item-KG baseline.

KGIN explains each interaction by *intents*: :math:`P` latent reasons, each an attentive combination of the
KG's relations, and it propagates over the item KG along relational paths. Interests are not used.

**Node index.** One embedding table ``[n_users + n_entities, dim]``: user ``u`` is row ``u``, KG entity ``e``
(item ``i`` is entity ``i``) is row ``n_users + e`` (the index of :class:`cikg.graph.GraphViews` without the
interests). The KG holds each triple :math:`(h, r, t)` and its inverse :math:`(t, r + R, h)`, so there are
:math:`2R` relations with embeddings :math:`e_r \\in \\mathbb{R}^d`.

**Intents.** With learnable logits :math:`w \\in \\mathbb{R}^{P \\times 2R}`,

.. math::
    e_p = \\sum_r \\mathrm{softmax}_r(w_{pr})\\, e_r .

**Relational path-aware aggregation** (:func:`grouped_relational_aggregation`, :func:`intent_aggregation`): layer
:math:`l + 1` of an entity is the mean of its KG neighbours' messages, element-wise products with the
relation, and a user aggregates her items through the intents,

.. math::
    e_i^{(l+1)} = \\frac{1}{|N_i|} \\sum_{(r, v) \\in N_i} e_r \\odot e_v^{(l)}, \\qquad
    e_u^{(l+1)} = \\Big(\\sum_p \\beta(u, p)\\, e_p\\Big) \\odot \\frac{1}{|N_u|} \\sum_{i \\in N_u} e_i^{(l)},
    \\qquad \\beta(u, p) = \\mathrm{softmax}_p(e_p^\\top e_u^{(l)}),

each layer output passes message dropout and is L2-normalised (as in the authors' release), and the final
representation is the sum :math:`e^* = e^{(0)} + \\sum_{l=1}^{L} \\hat e^{(l)}`. Users and items are scored
by :math:`{e_u^*}^\\top e_i^*`. An entity with no KG neighbour gets a zero message (its layers are zero).

**Loss** of a batch:
:math:`\\mathcal{L}_{BPR} + \\lambda_2\\, \\mathrm{L2}(e^*_{batch}) + \\lambda_{ind}\\, \\mathcal{L}_{IND}` with
the L2 on the batch's final rows (:func:`~cikg.models.base.l2_reg`, the release's convention) and the
independence loss over all pairs of intents (:func:`independence_loss`), the distance correlation
:math:`\\sum_{p < p'} \\mathrm{dCor}(e_p, e_{p'})` by default (``independence="cosine"``: the squared
cosine). As in the release, a vector's components are the samples of the distance correlation.
The returned terms are ``bpr``, ``l2`` (unweighted) and ``independence`` (unweighted).

**Node dropout** (training only, redrawn every batch as in the release): a share ``node_dropout`` of the KG
edges is left out (the mean is over the remaining neighbours) and each interaction is dropped with that
probability (the kept ones rescaled by :math:`1 / (1 - p)`).

Defaults are the paper's / release's published settings: ``dim`` 64, 3 layers (context hops), 4 intents,
``l2`` 1e-5, ``sim_regularity`` 1e-4, distance correlation, node dropout 0.5, message dropout 0.1 (and
lr 1e-4, batch 1024: ``train.lr`` / ``train.batch_size`` in the experiment configs).

Differences from the authors' release, documented: the release computes the independence loss on the
attention logits :math:`w_p` (``independence_on="attention"``) where the paper's equations use the intent
embeddings :math:`e_p` (the default here); the release adds the items' mean back to the user message
(:math:`e_u^{(l+1)} = m_u \\odot (1 + \\sum_p \\beta e_p)`, ``user_residual=True``); and the release's
attention query is a separate table of intent vectors, where here (the paper's Eq. 7) it is :math:`e_p`.

KGIN needs an item KG: without one (ml1m, or views built without the KG) it refuses with a
:class:`~cikg.errors.GraphError`; its intents are combinations of KG relations and have nothing to combine.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from ..errors import GraphError
from ..graph import GraphViews
from .base import BPRBatch, LossTerms, Recommender, bpr_loss, l2_reg
from .propagation import SparseMatrix
from .rng import random_permutation, uniform_random

logger = logging.getLogger(__name__)

#: Added under square roots of the distance correlation (finite gradients where a covariance is 0).
DCOR_EPS = 1e-8


class Independence(checks.Choice):
    """The intent independence measure (:func:`independence_loss`)."""

    DISTANCE = "distance"  # distance correlation, the paper's default
    COSINE = "cosine"  # squared cosine


class IndependenceOn(checks.Choice):
    """What the independence loss is computed on."""

    INTENTS = "intents"  # the intent embeddings (the paper's equations)
    ATTENTION = "attention"  # the intents' attention logits (the authors' release)


@dataclass
class KGINConfig:
    """Settings of :class:`KGIN` (defaults: the paper's / the authors' release's published settings).

    Attributes:
        dim: embedding size of users, entities, relations and intents.
        layers: propagation layers (the paper's context hops).
        n_intents: number of user intents :math:`P`.
        l2: weight of the L2 penalty on the batch's final user/item representations.
        sim_regularity: weight :math:`\\lambda_{ind}` of the intent independence loss.
        independence: ``distance`` (distance correlation, the paper's default) or ``cosine`` (squared cosine).
        independence_on: ``intents`` (the intent embeddings, the paper) or ``attention`` (the intents'
            relation logits, the release).
        node_dropout: share of KG edges and interactions left out of each training batch's propagation.
        message_dropout: dropout on every layer's output (training only).
        user_residual: add the items' mean to the user message, as the release does.
    """

    dim: int = 64
    layers: int = 3
    n_intents: int = 4
    l2: float = 1e-5
    sim_regularity: float = 1e-4
    independence: Independence = Independence.DISTANCE
    independence_on: IndependenceOn = IndependenceOn.INTENTS
    node_dropout: float = 0.5
    message_dropout: float = 0.1
    user_residual: bool = False

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("dim", "layers", "n_intents"), checks.non_negative("l2", "sim_regularity"),
        checks.choice(Independence, "independence"), checks.choice(IndependenceOn, "independence_on"),
        checks.probability("node_dropout", "message_dropout"), checks.boolean("user_residual"))

    def __post_init__(self) -> None:
        checks.check(self)

    def build(self, views: GraphViews) -> "KGIN":
        return build(views, self)


class Structure(NamedTuple):
    """The graph one propagation runs over: KG edges ``heads``/``relations``/``tails`` ``[T]`` (entity ids,
    inverses included) with the id of their (head, relation) group ``groups`` ``[T]`` (the model's
    ``group_heads``/``group_relations``), and interactions ``users``/``items`` ``[N]`` with their weights
    ``[N]``."""

    heads: Tensor
    relations: Tensor
    tails: Tensor
    groups: Tensor
    users: Tensor
    items: Tensor
    weights: Tensor


# ---------------------------------------------------------------------------------------------- the maths
def relational_aggregation(entity: Tensor, relation: Tensor, heads: Tensor, relations: Tensor, tails: Tensor
                           ) -> Tensor:
    """:math:`\\frac{1}{|N_h|}\\sum_{(h, r, t)} e_r \\odot e_t` for every entity ``h`` (zero without neighbours).

    The per-edge form, kept as the reference that :func:`grouped_relational_aggregation` (what the model runs)
    is tested against.

    Shapes:
        ``entity``: ``[E, d]``; ``relation``: ``[n_relations, d]``; ``heads``, ``relations``, ``tails``:
        ``[T]``; output ``[E, d]``.
    """
    n = entity.size(0)
    messages = entity.index_select(0, tails) * relation.index_select(0, relations)
    total = entity.new_zeros(n, entity.size(1)).index_add(0, heads, messages)
    degree = torch.bincount(heads, minlength=n).clamp_min(1).to(entity.dtype)
    return total / degree.unsqueeze(1)


def group_mean_matrix(heads: Tensor, tails: Tensor, groups: Tensor, n_groups: int, n_entities: int,
                      dtype: torch.dtype = torch.float32) -> SparseMatrix:
    """The sparse ``[G, E]`` matrix with :math:`1/|N_h|` at (group of the edge, tail) for every KG edge
    ``(h, r, t)``: its product with the entities sums each (head, relation) group's tails, scaled by the
    head's degree. ``heads``, ``tails``, ``groups``: ``[T]``."""
    inverse_degree = 1.0 / torch.bincount(heads, minlength=n_entities).clamp_min(1).to(dtype)
    return SparseMatrix(groups, tails, inverse_degree[heads], n_groups, n_entities)


def grouped_relational_aggregation(entity: Tensor, relation: Tensor, group_mean: SparseMatrix,
                                   group_heads: Tensor, group_relations: Tensor) -> Tensor:
    """:func:`relational_aggregation` computed per (head, relation) group ``g = (h, r)``:

    .. math::
        e_h^{(l+1)} = \\sum_{g = (h, r)} e_r \\odot \\frac{1}{|N_h|} \\sum_{t \\in N_g} e_t ,

    the inner sums one sparse product with ``group_mean`` (:func:`group_mean_matrix`), and the relation
    multiplying a row per group rather than per edge: dbbook2014's KG has 24k groups for 268k edges, which
    makes a KGIN training step several times faster than the per-edge form (``benchmarks/bench_kgin.py``).

    Shapes:
        ``entity``: ``[E, d]``; ``relation``: ``[n_relations, d]``; ``group_mean``: ``[G, E]``;
        ``group_heads``, ``group_relations``: ``[G]``; output ``[E, d]``.
    """
    messages = (group_mean @ entity) * relation.index_select(0, group_relations)  # [G, d]
    return entity.new_zeros(entity.shape).index_add(0, group_heads, messages)


def intent_aggregation(user: Tensor, item: Tensor, intents: Tensor, interaction_mean: SparseMatrix,
                       residual: bool = False) -> Tensor:
    """:math:`(\\sum_p \\beta(u, p) e_p) \\odot m_u` with :math:`m_u = \\sum_{(u, i)} w_{ui} e_i` (the mean over
    the user's items for :math:`w_{ui} = 1/|N_u|`; ``interaction_mean`` holds the :math:`w_{ui}`) and
    :math:`\\beta = \\mathrm{softmax}_p(e_p^\\top e_u)`; plus :math:`m_u` with ``residual``.

    Shapes:
        ``user``: ``[U, d]``; ``item``: ``[I, d]``; ``intents``: ``[P, d]``; ``interaction_mean``:
        ``[U, I]``; output ``[U, d]``.
    """
    mean = interaction_mean @ item
    beta = torch.softmax(user @ intents.t(), dim=1)  # [U, P]
    out = mean * (beta @ intents)
    return out + mean if residual else out


def distance_correlation(x: Tensor, eps: float = DCOR_EPS) -> Tensor:
    """Pairwise distance correlation of the rows of ``x`` ``[P, n]`` (each row ``n`` samples of a scalar):
    ``[P, P]``, 1 on the diagonal, in ``[0, 1]``, 0 only for independent rows (in the limit of many samples).

    :math:`\\mathrm{dCor}(a, b) = \\mathrm{dCov}(a, b) / \\sqrt{\\mathrm{dCov}(a, a)\\, \\mathrm{dCov}(b, b)}`
    with :math:`\\mathrm{dCov}^2(a, b) = \\frac{1}{n^2}\\sum_{jk} A_{jk} B_{jk}` over the double-centred
    distance matrices :math:`A_{jk} = |a_j - a_k| - \\bar a_{j\\cdot} - \\bar a_{\\cdot k} + \\bar a_{\\cdot\\cdot}`.
    """
    dist = (x.unsqueeze(2) - x.unsqueeze(1)).abs()  # [P, n, n]
    centred = dist - dist.mean(1, keepdim=True) - dist.mean(2, keepdim=True) + dist.mean((1, 2), keepdim=True)
    n = x.size(1)
    dcov = torch.sqrt(torch.einsum("pjk,qjk->pq", centred, centred).clamp_min(0.0) / (n * n) + eps)
    diag = dcov.diagonal()
    return dcov / torch.sqrt(diag.unsqueeze(1) * diag.unsqueeze(0) + eps)


def normalize_rows(x: Tensor) -> Tensor:
    """``F.normalize(x, dim=1)`` whose gradient is 0 at an all-zero row (an entity with no KG edge, or whose
    neighbours all were such rows) instead of ``grad / eps``: chained over layers, ``F.normalize`` multiplies such
    a row's gradient by ``1/eps = 1e12`` per layer, which overflows float32 at four layers (a NaN)."""
    nonzero = (x != 0).any(dim=1, keepdim=True)
    return torch.where(nonzero, F.normalize(x, dim=1), torch.zeros_like(x))


def independence_loss(x: Tensor, kind: Independence = Independence.DISTANCE) -> Tensor:
    """:math:`\\sum_{p < p'} \\mathrm{dCor}(x_p, x_{p'})` (``distance``) or :math:`\\sum_{p < p'}
    \\cos^2(x_p, x_{p'})` (``cosine``) over the rows of ``x`` ``[P, n]``; a scalar (0 for one row)."""
    if checks.parse_enum(Independence, kind, "independence") is Independence.DISTANCE:
        pairwise = distance_correlation(x)
    else:
        unit = F.normalize(x, dim=1)
        pairwise = (unit @ unit.t()).pow(2)
    return torch.triu(pairwise, diagonal=1).sum()


# ---------------------------------------------------------------------------------------------- the model
class KGIN(Recommender):
    """KGIN over the item KG and the train interactions (see the module docstring for the maths).

    Args:
        n_users, n_items, n_entities: counts (``n_entities`` includes the items).
        kg: ``[3, T]`` directed (head, relation, tail) entity ids, inverse triples included.
        n_relations: relation ids in ``kg`` (``2R``).
        interactions: ``[2, N]`` train (user, item) pairs.
        config: :class:`KGINConfig`.

    Shapes:
        ``embedding``: ``[n_users + n_entities, dim]``; ``relation_embedding``: ``[n_relations, dim]``;
        ``intent_logits``: ``[n_intents, n_relations]``; :meth:`embed` returns ``([n_users, dim],
        [n_items, dim])``; :meth:`intents` returns ``[n_intents, dim]``.
    """

    def __init__(self, n_users: int, n_items: int, n_entities: int, kg: Tensor, n_relations: int,
                 interactions: Tensor, config: Optional[KGINConfig] = None):
        super().__init__()
        self.config = config = config or KGINConfig()
        if n_users < 1 or n_items < 1 or n_entities < n_items:
            raise ValueError(f"need n_users >= 1, n_items >= 1, n_entities >= n_items; got "
                             f"{n_users}, {n_items}, {n_entities}")
        if kg.dim() != 2 or kg.size(0) != 3 or kg.size(1) == 0:
            raise GraphError(f"KGIN needs a non-empty [3, T] tensor of KG triples, got {tuple(kg.shape)}")
        if int(kg[[0, 2]].min()) < 0 or int(kg[[0, 2]].max()) >= n_entities or int(kg[1].min()) < 0 \
                or int(kg[1].max()) >= n_relations:
            raise GraphError(f"KG triples reference an entity outside 0..{n_entities - 1} or a relation outside "
                             f"0..{n_relations - 1}")
        if interactions.dim() != 2 or interactions.size(0) != 2 or interactions.size(1) == 0:
            raise GraphError(f"KGIN needs a non-empty [2, N] tensor of interactions, got "
                             f"{tuple(interactions.shape)}")
        self.n_users, self.n_items, self.n_entities, self.n_relations = n_users, n_items, n_entities, n_relations
        device = kg.device
        self.embedding = nn.Parameter(torch.empty(n_users + n_entities, config.dim, device=device))
        self.relation_embedding = nn.Parameter(torch.empty(n_relations, config.dim, device=device))
        self.intent_logits = nn.Parameter(torch.empty(config.n_intents, n_relations, device=device))
        heads, relations, tails = kg[:, torch.argsort(kg[0] * n_relations + kg[1], stable=True)]
        group_keys, groups = torch.unique_consecutive(heads * n_relations + relations, return_inverse=True)
        users, items = interactions
        degree = torch.bincount(users, minlength=n_users).clamp_min(1).to(torch.float32)
        self.register_buffer("kg_heads", heads, persistent=False)
        self.register_buffer("kg_relations", relations, persistent=False)
        self.register_buffer("kg_tails", tails, persistent=False)
        self.register_buffer("kg_groups", groups, persistent=False)
        self.register_buffer("group_heads", group_keys // n_relations, persistent=False)
        self.register_buffer("group_relations", group_keys % n_relations, persistent=False)
        self.register_buffer("inter_users", users, persistent=False)
        self.register_buffer("inter_items", items, persistent=False)
        self.register_buffer("inter_weights", 1.0 / degree[users], persistent=False)  # mean over the user's items
        self._generator: Optional[torch.Generator] = None
        self.reset_parameters()

    @property
    def n_triples(self) -> int:
        return int(self.kg_heads.numel())

    def id_embeddings(self) -> Tuple[Tensor, Tensor]:
        """User rows ``0..n_users-1`` and item rows (the first entities) of the ``[users | entities]`` table."""
        return self.embedding[:self.n_users], self.embedding[self.n_users:self.n_users + self.n_items]

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.embedding)
        nn.init.xavier_uniform_(self.relation_embedding)
        nn.init.xavier_uniform_(self.intent_logits)

    def on_epoch_start(self, epoch: int, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """Keep the trainer's generator for the node dropout; log the intents' mean attention entropy."""
        self._generator = generator
        with torch.no_grad():
            probs = torch.softmax(self.intent_logits, dim=1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1).mean()
        return {"intent_entropy": float(entropy)}

    # ------------------------------------------------------------------ structure
    def full_structure(self) -> Structure:
        """The whole KG and every train interaction (scoring, evaluation)."""
        return Structure(self.kg_heads, self.kg_relations, self.kg_tails, self.kg_groups, self.inter_users,
                         self.inter_items, self.inter_weights)

    def sample_structure(self, rate: Optional[float] = None, generator: Optional[torch.Generator] = None
                         ) -> Structure:
        """Node dropout: ``rate`` of the KG edges left out (exactly, without replacement) and each interaction
        dropped with probability ``rate``, the kept ones reweighted by ``1 / (1 - rate)``."""
        rate = self.config.node_dropout if rate is None else rate
        if rate == 0.0:
            return self.full_structure()
        generator = self._generator if generator is None else generator
        device = self.kg_heads.device
        keep = random_permutation(self.n_triples, device, generator)[: self.n_triples - int(self.n_triples * rate)]
        keep = keep.sort().values  # the edges stay grouped (cheaper gathers and sparse builds)
        kept = uniform_random((self.inter_users.numel(),), device, generator) >= rate
        return Structure(self.kg_heads[keep], self.kg_relations[keep], self.kg_tails[keep], self.kg_groups[keep],
                         self.inter_users[kept], self.inter_items[kept], self.inter_weights[kept] / (1.0 - rate))

    # ------------------------------------------------------------------ propagation
    def intents(self) -> Tensor:
        """:math:`e_p = \\sum_r \\mathrm{softmax}_r(w_{pr}) e_r` for every intent ``[n_intents, dim]``."""
        return torch.softmax(self.intent_logits, dim=1) @ self.relation_embedding

    def propagate(self, structure: Optional[Structure] = None, message_dropout: float = 0.0
                  ) -> Tuple[Tensor, Tensor]:
        """Final representations ``([n_users, dim], [n_entities, dim])``: layer 0 plus the L2-normalised
        layers 1..L (over ``structure``, the full graph by default)."""
        s = self.full_structure() if structure is None else structure
        group_mean = group_mean_matrix(s.heads, s.tails, s.groups, self.group_heads.numel(), self.n_entities,
                                       self.embedding.dtype)
        interaction_mean = SparseMatrix(s.users, s.items, s.weights, self.n_users, self.n_items)
        user, entity = self.embedding[: self.n_users], self.embedding[self.n_users:]
        intents = self.intents()
        user_sum, entity_sum = user, entity
        for _ in range(self.config.layers):
            next_entity = grouped_relational_aggregation(entity, self.relation_embedding, group_mean,
                                                         self.group_heads, self.group_relations)
            next_user = intent_aggregation(user, entity[: self.n_items], intents, interaction_mean,
                                           self.config.user_residual)
            entity = normalize_rows(F.dropout(next_entity, message_dropout, training=message_dropout > 0))
            user = normalize_rows(F.dropout(next_user, message_dropout, training=message_dropout > 0))
            user_sum, entity_sum = user_sum + user, entity_sum + entity
        return user_sum, entity_sum

    def embed(self) -> Tuple[Tensor, Tensor]:
        user, entity = self.propagate()
        return user, entity[: self.n_items]

    @torch.no_grad()
    def node_embeddings(self) -> Dict[str, Tensor]:
        user, entity = self.propagate()
        nodes = {"user": user, "item": entity[: self.n_items]}
        if self.n_entities > self.n_items:
            nodes["entity"] = entity[self.n_items:]
        return nodes

    # ------------------------------------------------------------------ loss
    def independence(self) -> Tensor:
        """The intent independence loss (a scalar) on the intents or their logits (``independence_on``)."""
        c = self.config
        target = self.intents() if c.independence_on is IndependenceOn.INTENTS else self.intent_logits
        return independence_loss(target, c.independence)

    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:
        c = self.config
        if self.training:
            user, entity = self.propagate(self.sample_structure(), c.message_dropout)
        else:
            user, entity = self.propagate()
        users, pos, neg = user[batch.users], entity[batch.pos], entity[batch.neg]
        bpr = bpr_loss((users * pos).sum(-1), (users * neg).sum(-1))
        l2 = l2_reg(users, pos, neg)
        independence = self.independence() if c.sim_regularity > 0.0 else bpr.new_zeros(())
        total = bpr + c.l2 * l2 + c.sim_regularity * independence
        return total, {"bpr": bpr.detach(), "l2": l2.detach(), "independence": independence.detach()}

    def extra_repr(self) -> str:
        c = self.config
        return (f"users={self.n_users}, items={self.n_items}, entities={self.n_entities}, "
                f"relations={self.n_relations}, triples={self.n_triples}, dim={c.dim}, layers={c.layers}, "
                f"intents={c.n_intents}, independence={c.independence}/{c.independence_on}, "
                f"node_dropout={c.node_dropout}, message_dropout={c.message_dropout}")


def kgin_graph(views: GraphViews) -> Tuple[Tensor, int, Tensor]:
    """The KG with inverse triples ``[3, T]`` (unique (head, relation, tail) entity ids; relation ``r + R`` is
    the inverse of ``r``), its relation count ``2R`` and the train interactions ``[2, N]`` of ``views``, on the
    views' device. Raises :class:`GraphError` when the graph has no KG."""
    if not views.has_kg:
        raise GraphError(f"KGIN needs an item KG and the graph of {views.name!r} has none (its intents combine KG "
                         "relations): use a dataset with a KG and a graph built with it (the recipe's kg: true), "
                         "or another model")
    interacts = views.edges["interacts"]  # [user, n_users + item]
    head, rel, tail = views.kg_triples.to(interacts.device)
    n_relations, n = 2 * views.n_relations, views.n_entities
    heads = torch.cat([head, tail])
    relations = torch.cat([rel, rel + views.n_relations])
    tails = torch.cat([tail, head])
    keys = torch.unique((heads * n_relations + relations) * n + tails)
    kg = torch.stack([keys // (n_relations * n), (keys // n) % n_relations, keys % n])
    interactions = torch.stack([interacts[0], interacts[1] - views.offsets["item"]])
    return kg, n_relations, interactions


def build(views: GraphViews, config: Optional[KGINConfig] = None) -> KGIN:
    """A :class:`KGIN` over the item KG and the train interactions of ``views``, on the views' device."""
    kg, n_relations, interactions = kgin_graph(views)
    logger.info("KGIN on %s: %d KG edges (inverses included), %d relations, %d interactions", views.name,
                kg.size(1), n_relations, interactions.size(1))
    return KGIN(views.n_users, views.n_items, views.n_entities, kg, n_relations, interactions, config)
