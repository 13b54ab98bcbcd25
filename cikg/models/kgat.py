"""KGAT: Knowledge Graph Attention Network (Wang et al., KDD 2019, arXiv 1905.07854), the item-KG baseline.

KGAT learns over the *collaborative knowledge graph* (CKG): users and KG entities (items are entities
``0..n_items-1``) joined by directed triples :math:`(h, r, t)` of four kinds::

    relation id      0 .. R-1        R .. 2R-1             2R                 2R+1
    triple           (h, r, t) KG    (t, r^-1, h) inverse  (user, interact,   (item, interacted,
                                                            item)              user)

Interests are not used (KGAT is an item-side KG method). Node ids are the global index of
:class:`cikg.graph.GraphViews` restricted to ``[users | items | entities]``: user ``u`` is ``u``, entity ``e``
(item ``i`` = entity ``i``) is ``n_users + e``.

**Embeddings (TransR).** Every node has :math:`e \\in \\mathbb{R}^{d}`, every relation
:math:`e_r \\in \\mathbb{R}^{k}` and a projection :math:`W_r \\in \\mathbb{R}^{d \\times k}`. The KG task
(an :class:`~cikg.models.base.AuxiliaryTask` trained in alternation, with its own learning rate) scores
:math:`g(h, r, t) = \\lVert W_r^\\top e_h + e_r - W_r^\\top e_t \\rVert_2^2` and minimises
:math:`-\\ln \\sigma(g(h, r, t') - g(h, r, t))` for a true triple against a corrupted tail :math:`t'` (a
uniformly drawn entity that does not form a true triple), plus ``kg_l2`` times
:func:`~cikg.models.base.l2_reg` of the projected vectors. As in the original code, heads are drawn
uniformly among the CKG's heads, each with one of its true triples, over all four kinds of triples.

**Attention.** :math:`\\pi(h, r, t) = (W_r^\\top e_t)^\\top \\tanh(W_r^\\top e_h + e_r)`,
softmax-normalised over the triples leaving each head. It is computed for all triples at once
(relation-grouped projections and a segment softmax) and held fixed between refreshes, like the
original's attentive Laplacian: the first epoch propagates over the original's initial matrix (each
relation's adjacency row-normalised, then summed), and :meth:`KGAT.on_epoch_start` recomputes the attention
from the current embeddings before every later epoch.
The attention is a sparse CSR matrix :math:`A \\in \\mathbb{R}^{N \\times N}` (parallel triples between the
same pair merged by summing); its transpose is kept too, so the backward of :math:`A X` is one SpMM.

**Propagation.** With :math:`e^{(0)} = e` and :math:`e_{N}^{(l)} = A e^{(l-1)}`, layer :math:`l` aggregates

* ``bi-interaction``:
  :math:`\\mathrm{LReLU}(W_1 (e + e_N) + b_1) + \\mathrm{LReLU}(W_2 (e \\odot e_N) + b_2)`,
* ``gcn``: :math:`\\mathrm{LReLU}(W (e + e_N) + b)`,
* ``graphsage``: :math:`\\mathrm{LReLU}(W [e \\Vert e_N] + b)`,

followed by message dropout; the final representation is
:math:`e^* = e^{(0)} \\Vert \\hat e^{(1)} \\Vert \\dots \\Vert \\hat e^{(L)}` with
:math:`\\hat e^{(l)} = e^{(l)} / \\lVert e^{(l)} \\rVert_2` (dimension ``dim + sum(layer_sizes)``). Users and
items are scored by :math:`{e_u^*}^\\top e_i^*` and trained with BPR plus ``l2`` on the batch's final rows.

**Without a KG** (the dataset has none, or the views were built without it) the CKG holds only the
interact / interacted triples: KGAT degrades to attentive collaborative filtering on the user–item graph,
with TransR trained on the interactions alone.

Tensors follow the device of the views' edge lists; ``model.to("cuda")`` moves everything.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax as segment_softmax

from .. import checks
from ..errors import ConfigError, GraphError
from ..graph import GraphViews, sparse_csr
from .base import AuxiliaryTask, BPRBatch, LossTerms, Recommender, bpr_loss, l2_reg
from .kg import TripleStore, translation_distance
from .propagation import spmm

logger = logging.getLogger(__name__)

class Aggregator(checks.Choice):
    """How a node's own embedding and its neighbourhood's are combined per layer (KGAT Sec. 3.2)."""

    BI_INTERACTION = "bi-interaction"
    GCN = "gcn"
    GRAPHSAGE = "graphsage"


AGGREGATORS = tuple(a.value for a in Aggregator)
#: LeakyReLU slope of the aggregators (``tf.nn.leaky_relu``'s default in the authors' code).
LEAKY_SLOPE = 0.2
#: Triples whose attention is computed per chunk (bounds the memory of the attention refresh).
ATTENTION_CHUNK = 1 << 20


@dataclass
class KGATConfig:
    """Settings of :class:`KGAT` (defaults: the paper's and the authors' code's).

    Attributes:
        dim: node embedding size :math:`d` (layer 0).
        relation_dim: relation embedding size :math:`k` of TransR.
        layer_sizes: output size of each propagation layer (``L = len(layer_sizes)``).
        message_dropout: dropout after each layer (one value per layer).
        l2: weight of the L2 penalty on the BPR batch's final user/item representations.
        kg_l2: weight of the L2 penalty on the TransR batch's projected vectors.
        kg_lr: learning rate of the alternating TransR step.
        kg_batch_size: triples per TransR batch.
        aggregator: ``"bi-interaction"``, ``"gcn"`` or ``"graphsage"``.
    """

    dim: int = 64
    relation_dim: int = 64
    layer_sizes: Tuple[int, ...] = (64, 32, 16)
    message_dropout: Tuple[float, ...] = (0.1, 0.1, 0.1)
    l2: float = 1e-5
    kg_l2: float = 1e-5
    kg_lr: float = 1e-4
    kg_batch_size: int = 2048
    aggregator: Aggregator = Aggregator.BI_INTERACTION
    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("dim", "relation_dim", "kg_batch_size"), checks.non_negative("l2", "kg_l2"),
        checks.positive("kg_lr"), checks.choice(Aggregator, "aggregator"))

    def __post_init__(self) -> None:
        self.layer_sizes = tuple(self.layer_sizes)
        self.message_dropout = tuple(self.message_dropout)
        checks.check(self)
        if not self.layer_sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                       for s in self.layer_sizes):
            raise ConfigError(f"expected a non-empty list of positive integers, got {list(self.layer_sizes)}",
                              "layer_sizes")
        if len(self.message_dropout) != len(self.layer_sizes):
            raise ConfigError(f"expected one value per layer ({len(self.layer_sizes)}), got "
                              f"{list(self.message_dropout)}", "message_dropout")
        if any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0
               for p in self.message_dropout):
            raise ConfigError(f"each value must be a probability in [0, 1), got {list(self.message_dropout)}",
                              "message_dropout")

    def build(self, views: GraphViews) -> "KGAT":
        return build(views, self)


@dataclass
class KGBatch:
    """A TransR batch: ``heads``, ``relations``, true ``tails`` and corrupted ``neg_tails``, each ``[B]``
    (node ids in the CKG index: users ``0..U-1``, entity ``e`` at ``U + e``)."""

    heads: Tensor
    relations: Tensor
    tails: Tensor
    neg_tails: Tensor

    def __len__(self) -> int:
        return int(self.heads.numel())


def collaborative_kg_triples(views: GraphViews) -> Tuple[Tensor, int, bool]:
    """The CKG's directed triples ``[3, T]`` (head, relation, tail) in the KGAT node index, sorted by head.

    The KGAT index is the graph's global index without interests (users, then items, then KG entities), so a
    node keeps its id. Relations: the KG's ``R`` relations, their inverses (``R + r``), ``interact``
    (``2R``) and ``interacted`` (``2R + 1``).

    Returns:
        ``(triples, n_relations, uses_kg)`` where ``n_relations = 2R + 2`` (``R`` KG relations used, 0 when
        the KG is left out) and ``uses_kg`` says whether the item KG is part of the graph.
    """
    n_users = views.n_users
    uses_kg = views.has_kg
    users, items = views.edges["interacts"]  # [user, n_users + item]
    n_kg_relations = views.n_relations if uses_kg else 0
    parts = []
    if uses_kg:
        head, rel, tail = views.kg_triples.to(users.device)
        parts += [torch.stack([head + n_users, rel, tail + n_users]),
                  torch.stack([tail + n_users, rel + n_kg_relations, head + n_users])]
    interact = torch.full_like(users, 2 * n_kg_relations)
    parts += [torch.stack([users, interact, items]), torch.stack([items, interact + 1, users])]
    n_nodes, n_relations = n_users + (views.n_entities if uses_kg else views.n_items), 2 * n_kg_relations + 2
    head, rel, tail = torch.cat(parts, dim=1)
    keys = torch.unique((head * n_nodes + tail) * n_relations + rel)  # no duplicates; sorted by (head, tail)
    pairs, rel = keys // n_relations, keys % n_relations
    return torch.stack([pairs // n_nodes, rel, pairs % n_nodes]), n_relations, uses_kg


class KGAT(Recommender):
    """KGAT over the collaborative knowledge graph (see the module docstring for the maths).

    Args:
        n_users, n_items, n_entities: counts (``n_entities`` includes the items; ``n_items`` without KG).
        triples: the CKG's directed triples ``[3, T]`` (head, relation, tail), from
            :func:`collaborative_kg_triples`.
        n_relations: number of relation ids in ``triples`` (``2R + 2``).
        config: :class:`KGATConfig`.

    Shapes:
        :meth:`embed` returns ``([n_users, D], [n_items, D])`` with ``D = dim + sum(layer_sizes)``.
    """

    def __init__(self, n_users: int, n_items: int, n_entities: int, triples: Tensor, n_relations: int,
                 config: Optional[KGATConfig] = None):
        super().__init__()
        self.config = config = config or KGATConfig()
        if n_users < 1 or n_items < 1 or n_entities < n_items:
            raise ValueError(f"need n_users >= 1, n_items >= 1, n_entities >= n_items; got "
                             f"{n_users}, {n_items}, {n_entities}")
        self.n_users, self.n_items, self.n_entities = n_users, n_items, n_entities
        self.n_nodes = n_users + n_entities
        self.n_relations = n_relations
        device = triples.device
        if triples.dim() != 2 or triples.size(0) != 3 or triples.size(1) == 0:
            raise GraphError(f"KGAT needs a non-empty [3, T] tensor of CKG triples, got "
                             f"{tuple(triples.shape)}")
        if int(triples[[0, 2]].max()) >= self.n_nodes or int(triples[1].max()) >= n_relations:
            raise GraphError(f"CKG triples reference a node >= {self.n_nodes} or a relation >= {n_relations}")

        self.node_embedding = nn.Parameter(torch.empty(self.n_nodes, config.dim, device=device))
        self.relation_embedding = nn.Parameter(torch.empty(n_relations, config.relation_dim, device=device))
        self.relation_projection = nn.Parameter(torch.empty(n_relations, config.dim, config.relation_dim,
                                                            device=device))
        sizes = (config.dim,) + config.layer_sizes
        width = 2 if config.aggregator is Aggregator.GRAPHSAGE else 1
        shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
        self.linear = nn.ModuleList(nn.Linear(width * i, o, device=device) for i, o in shapes)
        self.bi_linear = (nn.ModuleList(nn.Linear(i, o, device=device) for i, o in shapes)
                          if config.aggregator is Aggregator.BI_INTERACTION else None)
        self._register_structure(triples)
        self.reset_parameters()

    # ------------------------------------------------------------------ structure
    def _register_structure(self, triples: Tensor) -> None:
        """Buffers describing the CKG: triples sorted by head, and the CSR entries of ``A`` and ``A^T``."""
        n = self.n_nodes
        order = torch.argsort(triples[0] * n + triples[2], stable=True)
        heads, relations, tails = triples[:, order]
        pair_keys, entry = torch.unique_consecutive(heads * n + tails, return_inverse=True)
        rows, cols = pair_keys // n, pair_keys % n
        out_degree = torch.bincount(heads, minlength=n)
        self.triples = TripleStore(heads, relations, tails, n, self.n_relations)  # order kept: sorted by (h, t)
        self.register_buffer("head_ptr", self._ptr(out_degree), persistent=False)
        self.register_buffer("triple_entry", entry, persistent=False)  # triple -> CSR entry of A
        self.register_buffer("csr_cols", cols, persistent=False)
        self.register_buffer("csr_crow", self._ptr(torch.bincount(rows, minlength=n)), persistent=False)
        transpose_order = torch.argsort(cols * n + rows)
        self.register_buffer("csr_t_order", transpose_order, persistent=False)  # entries of A^T, row-major
        self.register_buffer("csr_t_cols", rows[transpose_order], persistent=False)
        self.register_buffer("csr_t_crow", self._ptr(torch.bincount(cols, minlength=n)), persistent=False)
        # persistent: a loaded model scores with the attention it was trained with
        self.register_buffer("attention", torch.zeros(heads.numel(), device=heads.device))
        self.register_buffer("relation_order", torch.argsort(relations, stable=True), persistent=False)
        present, sizes = torch.unique_consecutive(relations[self.relation_order], return_counts=True)
        self.relation_ids, self.relation_sizes = present.tolist(), sizes.tolist()

    @staticmethod
    def _ptr(counts: Tensor) -> Tensor:
        ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        return ptr

    @property
    def n_triples(self) -> int:
        return len(self.triples)

    @property
    def heads(self) -> Tensor:
        return self.triples.head

    @property
    def relations(self) -> Tensor:
        return self.triples.relation

    @property
    def tails(self) -> Tensor:
        return self.triples.tail

    @property
    def out_dim(self) -> int:
        return self.config.dim + sum(self.config.layer_sizes)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.node_embedding)
        nn.init.xavier_uniform_(self.relation_embedding)
        bound = (6.0 / (self.config.dim + self.config.relation_dim)) ** 0.5  # Xavier for each W_r on its own
        nn.init.uniform_(self.relation_projection, -bound, bound)
        for layer in list(self.linear) + list(self.bi_linear or []):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.attention.copy_(self.relational_random_walk())

    def id_embeddings(self) -> Tuple[Tensor, Tensor]:
        """User rows ``0..n_users-1`` and item rows ``n_users..n_users+n_items-1`` of the node table (the
        original's ``--pretrain -1`` fills exactly these from a trained BPR-MF; entities keep Xavier)."""
        return self.node_embedding[:self.n_users], self.node_embedding[self.n_users:self.n_users + self.n_items]

    # ------------------------------------------------------------------ attention
    def relational_random_walk(self) -> Tensor:
        """The original's initial weights ``[T]``: :math:`1 / |\\{t : (h, r, t)\\}|` per triple (each
        relation's adjacency row-normalised; summed over relations when the CSR merges parallel triples)."""
        group = self.heads * self.n_relations + self.relations
        _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse].to(self.attention.dtype)

    def project(self, nodes: Tensor, relations: Tensor) -> Tensor:
        """:math:`W_{r_j}^\\top e_{n_j}` for each pair ``(nodes[j], relations[j])``: ``[len(nodes), k]``.

        Rows are grouped by relation (one matmul per relation present, never a loop over rows) and gathered
        with one index, so the backward scatters into the node table once rather than once per relation.
        """
        order = torch.argsort(relations)
        present, counts = torch.unique_consecutive(relations[order], return_counts=True)
        rows = torch.split(self.node_embedding[nodes[order]], counts.tolist())
        chunks = [part @ self.relation_projection[r] for r, part in zip(present.tolist(), rows, strict=True)]
        projected = torch.cat(chunks) if chunks else self.node_embedding.new_zeros(0, self.config.relation_dim)
        return projected[torch.argsort(order)]

    @torch.no_grad()
    def attention_scores(self) -> Tensor:
        """Unnormalised :math:`\\pi(h, r, t)` of every triple ``[T]``.

        One relation at a time, in chunks of at most :data:`ATTENTION_CHUNK` triples; a relation with more
        end points than nodes projects the whole node table once and gathers from it.
        """
        scores = self.attention.new_empty(self.n_triples)
        embedding, projection = self.node_embedding, self.relation_projection
        groups = zip(self.relation_ids, torch.split(self.relation_order, self.relation_sizes), strict=True)
        for r, triples in groups:
            table = embedding @ projection[r] if 2 * triples.numel() > self.n_nodes else None
            for part in torch.split(triples, ATTENTION_CHUNK):
                heads, tails = self.heads[part], self.tails[part]
                if table is not None:
                    head, tail = table[heads], table[tails]
                else:
                    head, tail = embedding[heads] @ projection[r], embedding[tails] @ projection[r]
                scores[part] = (tail * torch.tanh(head + self.relation_embedding[r])).sum(-1)
        return scores

    @torch.no_grad()
    def refresh_attention(self) -> Tensor:
        """Recompute the attention from the current embeddings (softmax over each head's triples)."""
        self.attention.copy_(segment_softmax(self.attention_scores(), ptr=self.head_ptr))
        return self.attention

    def attention_matrix(self, transpose: bool = False) -> Tensor:
        """The attentive adjacency :math:`A` (or :math:`A^\\top`) as sparse CSR ``[N, N]``; row ``h`` holds
        the weights of ``h``'s neighbours (rows sum to 1 after the first refresh)."""
        values = torch.zeros(self.csr_cols.numel(), dtype=self.attention.dtype, device=self.attention.device)
        values.index_add_(0, self.triple_entry, self.attention)
        if transpose:
            return sparse_csr(self.csr_t_crow, self.csr_t_cols, values[self.csr_t_order], self.n_nodes)
        return sparse_csr(self.csr_crow, self.csr_cols, values, self.n_nodes)

    def on_epoch_start(self, epoch: int, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """Before every epoch after the first, recompute the attention (the original updates its attentive
        Laplacian after each epoch); returns the mean attention entropy per head for the log."""
        if epoch == 0:
            return {}
        probs = self.refresh_attention().clamp_min(1e-12)
        entropy = probs.new_zeros(self.n_nodes).index_add_(0, self.heads, -probs * probs.log())
        return {"attention_entropy": float(entropy[self.triples.head_nodes].mean())}

    # ------------------------------------------------------------------ propagation
    def _aggregate(self, layer: int, ego: Tensor, side: Tensor) -> Tensor:
        aggregator, linear = self.config.aggregator, self.linear[layer]
        if aggregator is Aggregator.GRAPHSAGE:
            return F.leaky_relu(linear(torch.cat([ego, side], dim=1)), LEAKY_SLOPE)
        out = F.leaky_relu(linear(ego + side), LEAKY_SLOPE)
        if aggregator is Aggregator.BI_INTERACTION:
            out = out + F.leaky_relu(self.bi_linear[layer](ego * side), LEAKY_SLOPE)
        return out

    def propagate(self) -> Tensor:
        """Final representations :math:`e^*` of all CKG nodes ``[N, dim + sum(layer_sizes)]``."""
        matrix, matrix_t = self.attention_matrix(), self.attention_matrix(transpose=True)
        ego = self.node_embedding
        outputs = [ego]
        for layer, p in enumerate(self.config.message_dropout):
            side = spmm(matrix, ego, matrix_t)
            ego = F.dropout(self._aggregate(layer, ego, side), p, training=self.training)
            outputs.append(F.normalize(ego, dim=1))
        return torch.cat(outputs, dim=1)

    def embed(self) -> Tuple[Tensor, Tensor]:
        final = self.propagate()
        return final[: self.n_users], final[self.n_users: self.n_users + self.n_items]

    @torch.no_grad()
    def node_embeddings(self) -> Dict[str, Tensor]:
        final = self.propagate()
        nodes = {"user": final[: self.n_users], "item": final[self.n_users: self.n_users + self.n_items]}
        if self.n_entities > self.n_items:  # the KG is part of the CKG
            nodes["entity"] = final[self.n_users + self.n_items:]
        return nodes

    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:
        user_emb, item_emb = self.embed()
        users, pos, neg = user_emb[batch.users], item_emb[batch.pos], item_emb[batch.neg]
        bpr = bpr_loss((users * pos).sum(-1), (users * neg).sum(-1))
        l2 = self.config.l2 * l2_reg(users, pos, neg)
        return bpr + l2, {"bpr": bpr, "l2": l2}

    # ------------------------------------------------------------------ TransR task
    def kg_loss(self, batch: KGBatch) -> Tuple[Tensor, LossTerms]:
        """TransR's pairwise loss on ``batch`` plus ``kg_l2`` times the L2 of the projected vectors."""
        rel = batch.relations
        nodes = torch.cat([batch.heads, batch.tails, batch.neg_tails])
        head, tail, neg = self.project(nodes, rel.repeat(3)).chunk(3)
        rel_emb = self.relation_embedding[rel]
        pos_dist = translation_distance(head, rel_emb, tail)
        neg_dist = translation_distance(head, rel_emb, neg)
        transr = bpr_loss(neg_dist, pos_dist)  # -log sigma(g(h,r,t') - g(h,r,t))
        l2 = self.config.kg_l2 * l2_reg(head, rel_emb, tail, neg)
        return transr + l2, {"transr": transr, "kg_l2": l2}

    def sample_kg_batch(self, size: int, generator: Optional[torch.Generator] = None) -> KGBatch:
        """``size`` TransR triples: heads uniform among the CKG's heads, one true triple each, and a corrupted
        tail drawn uniformly from the entities (redrawn while it forms a true triple)."""
        heads, relations, tails = self.triples.sample(size, generator)
        low, span = torch.tensor(self.n_users, device=heads.device), torch.tensor(self.n_entities, device=heads.device)
        return KGBatch(heads, relations, tails, self.triples.corrupt_tails(heads, relations, low, span, generator))

    def kg_batches(self, generator: Optional[torch.Generator] = None, epoch: int = 0) -> Iterator[KGBatch]:
        """One TransR epoch: ``n_triples // kg_batch_size + 1`` batches (the original's count)."""
        for _ in range(self.n_triples // self.config.kg_batch_size + 1):
            yield self.sample_kg_batch(self.config.kg_batch_size, generator)

    def auxiliary_tasks(self) -> List[AuxiliaryTask]:
        parameters = [self.node_embedding, self.relation_embedding, self.relation_projection]
        return [AuxiliaryTask(name="transr", lr=self.config.kg_lr, parameters=parameters,
                              batches=self.kg_batches, loss=self.kg_loss)]

    def extra_repr(self) -> str:
        c = self.config
        return (f"users={self.n_users}, items={self.n_items}, entities={self.n_entities}, "
                f"relations={self.n_relations}, triples={self.n_triples}, dim={c.dim}, "
                f"relation_dim={c.relation_dim}, layers={c.layer_sizes}, aggregator={c.aggregator!r}")


def build(views: GraphViews, config: Optional[KGATConfig] = None) -> KGAT:
    """A :class:`KGAT` over the CKG of ``views`` (train interactions; the item KG when the graph has one), on
    the device of the views' edges."""
    triples, n_relations, uses_kg = collaborative_kg_triples(views)
    if not uses_kg:
        logger.info("KGAT on %s without a KG: attentive collaborative filtering on the user-item graph",
                    views.name)
    n_entities = views.n_entities if uses_kg else views.n_items
    return KGAT(views.n_users, views.n_items, n_entities, triples, n_relations, config)
