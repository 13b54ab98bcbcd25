"""CIKGRec: Collaborative Interest Knowledge Graph recommendation (arXiv 2412.13544).

One embedding table ``E`` covers the global node index ``[users | items | entities | interests]`` of the
CIKG. The model adds to a LightGCN encoder two self-supervised objectives and an optional KG embedding:

* **Encoder + BPR.** ``self.encoder`` is a :class:`~cikg.models.LightGCN` over the encoder view (the full CIKG, or
  what of it the dataset has): :math:`Z = \\mathrm{mean}_k \\hat{A}^k E` (sparse SpMM), its ID table, feature
  fusion and per-epoch edge dropout;
  :math:`L_{rec} = w_{cf} \\cdot \\mathrm{BPR}(Z) + \\lambda \\cdot \\mathrm{L2}(E_{batch})`.
* **User-interest reconstruction (UIR)**, a graph masked autoencoder over interest nodes (GraphMAE style):
  a share :math:`p_t` of interest rows of :math:`E` is masked (a learnable token; a ``replace_rate`` share of
  them takes another interest's embedding instead), an ``encoder_layers`` propagation encodes the graph
  (optionally with ``uir_edge_drop``), a linear map goes to the decoder space, masked rows are zeroed
  again, a ``decoder_layers`` propagation decodes, and the scaled cosine error over masked rows

  .. math:: L_{uir} = \\frac{1}{|M|} \\sum_{v \\in M} (1 - \\cos(e_v, \\hat{e}_v))^{\\alpha}

  is the loss. :math:`p_t` grows per epoch from ``min_mask_rate`` to ``max_mask_rate`` over ``total_epoch``
  epochs (:func:`mask_rate_schedule`).
* **Cross-domain contrastive learning (CL).** View 1 is the anchor graph (``cl_anchor``) propagated with
  SimGCL noise after every layer; view 2 is collaborative + interests; view 3 is collaborative + KG. With
  :math:`\\tau` = ``gcl_temp``, :func:`info_nce` pulls a batch user's view-1 embedding towards its own view-2
  embedding against all users of view 2, and a batch item's view-1 embedding towards its own view-3 node
  against every *entity-space* node of view 3 (items and KG entities; users and interest nodes are not
  candidates: an interest node is isolated in view 3 and is not a KG entity). The released code also lists
  the (isolated) interest nodes among the item negatives; we leave them out on purpose.
* **TransE** (optional, alternating step with its own optimiser, :meth:`CIKGRec.auxiliary_tasks`) on the KG
  triples, their inverses and the user-item interactions as two extra relations (``interact`` /
  ``interacted``); a corrupted tail is drawn among the nodes of the positive tail's domain: users for
  ``interacted`` triples, otherwise the entity space (items + KG entities), never interests.

Differences from the authors' release, on purpose: ``cl_anchor="collaborative"`` is what the paper
describes, ``"full"`` (the default) is what the released code does (its view-1 edge list aliases the full
CIKG's); edge dropout (encoder and UIR) is resampled once per epoch instead of per batch; the UIR graph is
the encoder's graph with the encoder's ``self_loops`` setting (the release adds self-loops to it only
after dropping edges); the TransE L2 term and the head-uniform triple sampling follow the release, but
corrupted tails are drawn in the positive tail's domain and are never true triples; interest ids are
dense (no isolated ids of dropped clusters).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from ..errors import ConfigError
from ..graph import GraphViews, View
from .base import AuxiliaryTask, BPRBatch, LossTerms, Recommender, bpr_loss, l2_reg
from .fusion import FusionConfig
from .kg import TripleStore, translation_distance
from .lightgcn import LightGCN, LightGCNConfig
from .propagation import EdgeDropout, LGPropagation, simgcl_noise
from .rng import random_permutation

logger = logging.getLogger(__name__)

INTERACT, INTERACTED = 0, 1  # the two TransE relations added for user-item interactions


# --------------------------------------------------------------------------------------------- config
class MaskSchedule(checks.Choice):
    """How the UIR mask rate grows from ``min_mask_rate`` to ``max_mask_rate`` (:func:`mask_rate_schedule`)."""

    EXP = "exp"
    LINEAR = "linear"
    CONSTANT = "constant"  # min_mask_rate throughout: the ablation of the schedule


class CLAnchor(checks.Choice):
    """The graph of contrastive view 1."""

    COLLABORATIVE = "collaborative"  # the paper's text
    FULL = "full"  # the authors' released code


@dataclass
class CIKGRecConfig:
    """Every setting of :class:`CIKGRec`; defaults are the authors' dbbook2014 values.

    A part whose data the dataset lacks (no KG, no interests) is off whatever its switch says (logged).

    Attributes:
        dim: embedding size.
        layers: LightGCN propagation layers of the encoder.
        l2: weight of the L2 on the batch's ego embeddings.
        cf_weight: weight of the BPR loss.
        self_loops: add self-loops to the adjacencies before normalising.
        edge_dropout: share of edges dropped, resampled once per epoch.
        message_dropout: dropout on the ego embeddings before propagation.
        use_uir: train the user-interest reconstruction (UIR) masked autoencoder (ablation switch).
        use_cl: train the cross-domain contrastive loss (ablation switch).
        use_interests: put interest nodes into the graphs (ablation switch).
        use_kg: put KG entities into the graphs (ablation switch).
        use_transe: train TransE on the KG triples in an alternating step (ablation switch).
        uir_weight: weight of the UIR loss.
        encoder_layers: graph layers of the UIR encoder.
        decoder_layers: graph layers of the UIR decoder.
        replace_rate: share of the masked interest rows that take another interest's embedding instead of the
            mask token.
        uir_edge_drop: share of edges dropped from the UIR encoder's graph, resampled once per epoch.
        sce_alpha: exponent of the scaled cosine error of the reconstruction.
        min_mask_rate: UIR mask rate at the first epoch.
        max_mask_rate: UIR mask rate reached at ``total_epoch``.
        total_epoch: epoch at which the mask-rate schedule reaches ``max_mask_rate``.
        increase_type: shape of the mask-rate schedule, ``exp``, ``linear`` or ``constant`` (``min_mask_rate``
            throughout).
        cl_anchor: graph of contrastive view 1: ``collaborative`` (the paper) or ``full`` (the released code).
        gcl_weight: weight of the contrastive (InfoNCE) loss.
        gcl_temp: temperature of the InfoNCE.
        eps: magnitude of the SimGCL noise of the contrastive views.
        cl_max_logits: above ``batch x candidates`` logits the InfoNCE runs over candidate blocks (same loss,
            bounded memory).
        transe_lr: learning rate of the TransE step.
        transe_l2: L2 weight inside the TransE loss.
        transe_batch_size: triples per TransE batch.
        transe_batches: TransE batches per epoch (``null`` = triples // batch size).
        features: how node features are fused into the embeddings (:class:`~cikg.models.fusion.FusionConfig`).
    """

    dim: int = 64
    layers: int = 3
    l2: float = 1e-5
    cf_weight: float = 1.5
    self_loops: bool = True
    edge_dropout: float = 0.0
    message_dropout: float = 0.0
    use_uir: bool = True
    use_cl: bool = True
    use_interests: bool = True
    use_kg: bool = True
    use_transe: bool = True
    uir_weight: float = 0.03
    encoder_layers: int = 2
    decoder_layers: int = 1
    replace_rate: float = 0.15
    uir_edge_drop: float = 0.2
    sce_alpha: float = 2.0
    min_mask_rate: float = 0.05
    max_mask_rate: float = 0.75
    total_epoch: int = 150
    increase_type: MaskSchedule = MaskSchedule.EXP
    cl_anchor: CLAnchor = CLAnchor.FULL
    gcl_weight: float = 0.01
    gcl_temp: float = 0.2
    eps: float = 0.1
    cl_max_logits: int = 2 ** 26
    transe_lr: float = 2e-3
    transe_l2: float = 1e-3
    transe_batch_size: int = 4096
    transe_batches: Optional[int] = None
    features: FusionConfig = field(default_factory=FusionConfig)

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("dim", "encoder_layers", "decoder_layers", "total_epoch", "transe_batch_size",
                            "cl_max_logits"),
        checks.positive_int("transe_batches", optional=True),
        checks.non_negative_int("layers"),
        checks.non_negative("l2", "cf_weight", "uir_weight", "gcl_weight", "eps", "transe_l2"),
        checks.positive("gcl_temp", "sce_alpha", "transe_lr"),
        checks.probability("edge_dropout", "message_dropout", "replace_rate", "uir_edge_drop"),
        checks.share("min_mask_rate", "max_mask_rate", expected="a mask rate"),
        checks.choice(MaskSchedule, "increase_type"), checks.choice(CLAnchor, "cl_anchor"))

    def __post_init__(self) -> None:
        checks.check(self)
        if self.min_mask_rate > self.max_mask_rate:
            raise ConfigError(f"min_mask_rate ({self.min_mask_rate}) exceeds max_mask_rate "
                              f"({self.max_mask_rate})", "min_mask_rate")

    def build(self, views: GraphViews) -> "CIKGRec":
        return CIKGRec(views, self)


# ------------------------------------------------------------------------------------- loss functions
def mask_rate_schedule(epoch: int, min_rate: float, max_rate: float, total_epoch: int,
                       increase_type: MaskSchedule = MaskSchedule.EXP) -> float:
    """UIR mask rate of ``epoch`` (0-based), capped at ``max_rate``.

    ``exp``: :math:`p_{min} (p_{max}/p_{min})^{t/T}`; ``linear``: :math:`p_{min} + (p_{max}-p_{min}) t/T`;
    ``constant``: :math:`p_{min}` at every epoch.
    """
    schedule = checks.parse_enum(MaskSchedule, increase_type, "increase_type")
    if schedule is MaskSchedule.CONSTANT:
        return min_rate
    if schedule is MaskSchedule.EXP:
        rate = min_rate * (max_rate / min_rate) ** (epoch / total_epoch)
    else:
        rate = min_rate + (max_rate - min_rate) * epoch / total_epoch
    return min(rate, max_rate)


def sce_loss(reconstructed: Tensor, target: Tensor, alpha: float = 2.0) -> Tensor:
    """Scaled cosine error (GraphMAE, Hou et al. KDD 2022): mean of :math:`(1 - \\cos(x, \\hat{x}))^{\\alpha}`.

    Shapes: ``reconstructed``, ``target``: ``[M, d]``; returns a scalar.
    """
    cos = F.cosine_similarity(reconstructed, target, dim=-1)
    return (1.0 - cos).pow(alpha).mean()


def info_nce(anchor: Tensor, candidates: Tensor, positive: Tensor, temperature: float,
             max_logits: Optional[int] = None) -> Tensor:
    """InfoNCE of each anchor against all candidates, its positive being ``candidates[positive]``.

    .. math:: -\\frac{1}{B} \\sum_b \\log \\frac{\\exp(s_{b,p_b}/\\tau)}{\\sum_m \\exp(s_{b,m}/\\tau)},
        \\qquad s = \\bar{a} \\bar{c}^\\top \\text{ (cosine)}

    Shapes: ``anchor`` ``[B, d]``, ``candidates`` ``[M, d]``, ``positive`` ``LongTensor [B]`` in ``0..M-1``.

    When ``B * M`` exceeds ``max_logits`` the loss is computed over blocks of candidates (the same value and
    gradients, up to float rounding): memory is ``O(max_logits)`` instead of ``O(B * M)``, which is what lets
    a 1M-user graph train at batch 1024 (the dense ``[1024, 1M]`` logits and their softmax take > 8 GB).
    """
    a, c = F.normalize(anchor, dim=-1) / temperature, F.normalize(candidates, dim=-1)
    if max_logits is None or a.shape[0] * c.shape[0] <= max_logits:
        return _DenseInfoNCE.apply(a, c, positive)
    block = max(1, max_logits // max(1, a.shape[0]))
    return _BlockedInfoNCE.apply(a, c, positive, block)


class _DenseInfoNCE(torch.autograd.Function):
    r"""``cross_entropy(a @ c.T, positive)`` for unit-norm (or zero) candidate rows ``c``, in fewer passes over the
    ``[B, M]`` logits than torch's log-softmax (1.8x faster forward + backward on CPU, ``docs/benchmarks.md``).

    Since :math:`|a_b \cdot c_m| \le \lVert a_b \rVert`, the logits are shifted by :math:`\lVert a_b \rVert`
    instead of their row maximum: one GEMM with the shift as its bias, one ``exp`` and one sum; the backward
    scales the saved exponentials into ``softmax * grad / B`` in place. Above a shift of
    :data:`MAX_SHIFT` (temperature below 1/40) an exponential could underflow, and the row maximum is used.
    """

    MAX_SHIFT = 40.0  # exp(-2 * 40) is still a normal float32

    @staticmethod
    def forward(ctx, a: Tensor, c: Tensor, positive: Tensor) -> Tensor:  # type: ignore[override]
        shift = a.norm(dim=1, keepdim=True)
        if float(shift.max()) <= _DenseInfoNCE.MAX_SHIFT:
            exps = torch.addmm(-shift, a, c.t()).exp_()
        else:
            logits = a @ c.t()
            shift = logits.amax(dim=1, keepdim=True)
            exps = logits.sub_(shift).exp_()
        total = exps.sum(dim=1, keepdim=True)
        loss = (total.log() + shift).squeeze(1) - (a * c[positive]).sum(-1)
        ctx.save_for_backward(a, c, positive, exps, total)
        ctx.consumed = False
        return loss.mean()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        if ctx.consumed:
            raise RuntimeError("info_nce's backward runs once (it scales its saved softmax in place)")
        ctx.consumed = True
        a, c, positive, exps, total = ctx.saved_tensors
        scale = grad_out / a.shape[0]
        weights = exps.mul_(scale / total)  # softmax * scale, [B, M]
        grad_a, grad_c = weights @ c, weights.t() @ a
        grad_a -= c[positive] * scale  # the one-hot part of softmax - onehot
        grad_c.index_add_(0, positive, -a * scale)
        return grad_a, grad_c, None


class _BlockedInfoNCE(torch.autograd.Function):
    """``cross_entropy(a @ c.T, positive)`` over blocks of ``block`` rows of ``c``: the forward keeps only the
    per-anchor log-sum-exp; the backward recomputes each block's logits, softmax minus one-hot, and accumulates
    ``dL/da = G c / B`` and ``dL/dc = G^T a / B``."""

    @staticmethod
    def forward(ctx, a: Tensor, c: Tensor, positive: Tensor, block: int) -> Tensor:  # type: ignore[override]
        lse = torch.full((a.shape[0],), float("-inf"), dtype=a.dtype, device=a.device)
        for start in range(0, c.shape[0], block):
            lse = torch.logaddexp(lse, torch.logsumexp(a @ c[start:start + block].t(), dim=1))
        positive_logit = (a * c[positive]).sum(-1)
        ctx.save_for_backward(a, c, positive, lse)
        ctx.block = block
        return (lse - positive_logit).mean()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        a, c, positive, lse = ctx.saved_tensors
        scale = grad_out / a.shape[0]
        grad_a, grad_c = torch.zeros_like(a), torch.zeros_like(c)
        for start in range(0, c.shape[0], ctx.block):
            chunk = c[start:start + ctx.block]
            probs = torch.exp(a @ chunk.t() - lse[:, None]) * scale  # softmax block, [B, block]
            grad_a += probs @ chunk
            grad_c[start:start + ctx.block] = probs.t() @ a
        # the one-hot part of softmax - onehot
        grad_a -= c[positive] * scale
        grad_c.index_add_(0, positive, -a * scale)
        return grad_a, grad_c, None, None


# ------------------------------------------------------------------------------------------- TransE
class TransETriples(TripleStore):
    """The triples TransE trains on, in global node ids (a :class:`~cikg.models.kg.TripleStore`).

    Triples: KG ``(h, r, t)`` as relation ``2 + r`` and its inverse ``(t, 2 + R + r, h)``, plus every train
    interaction as ``(u, interact, i)`` and ``(i, interacted, u)``. A batch draws heads uniformly among the
    heads that have triples, then one of the head's triples uniformly (as the release does), and a corrupted
    tail in the positive tail's domain (users, or items + KG entities), re-drawn while it forms a true triple.
    """

    def __init__(self, views: GraphViews, use_kg: bool):
        item_off, entity_off = views.offsets["item"], views.offsets["entity"]
        users, items = views.edges["interacts"]
        heads, rels, tails = [users, items], [torch.full_like(users, INTERACT), torch.full_like(users, INTERACTED)], \
            [items, users]
        n_kg_rel = 0
        if use_kg and views.has_kg:
            h, r, t = views.kg_triples
            to_global = lambda e: torch.where(e < views.n_items, e + item_off, e - views.n_items + entity_off)  # noqa: E731
            n_kg_rel = views.n_relations
            heads += [to_global(h), to_global(t)]
            rels += [r + 2, r + 2 + n_kg_rel]
            tails += [to_global(t), to_global(h)]
        super().__init__(torch.cat(heads), torch.cat(rels), torch.cat(tails), views.n_nodes, 2 + 2 * n_kg_rel)
        self.user_range = (0, views.counts["user"])
        self.entity_range = (item_off, entity_off + views.counts["entity"])  # items then KG entities

    def batch(self, batch_size: int, generator: Optional[torch.Generator] = None
              ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(head, relation, tail, corrupted_tail)``, each ``LongTensor [batch_size]``; the corrupted tail
        lies in the positive tail's domain (users for ``interacted``, else the entity space)."""
        head, rel, tail = self.sample(batch_size, generator)
        is_user = rel == INTERACTED
        low = torch.where(is_user, self.user_range[0], self.entity_range[0])
        span = torch.where(is_user, self.user_range[1] - self.user_range[0],
                           self.entity_range[1] - self.entity_range[0])
        return head, rel, tail, self.corrupt_tails(head, rel, low, span, generator)


# -------------------------------------------------------------------------------------------- model
class CIKGRec(Recommender):
    """CIKGRec over the CIKG ``views`` (see the module docstring for the objectives).

    Args:
        views: the graph (:func:`cikg.graph.build_views`), kept as ``self.graph``: node index, edges, the typed
            KG triples TransE trains on; adjacencies are built once and move with the model.
        config: :class:`CIKGRecConfig`.

    Shapes:
        ``embedding.weight``: ``[n_nodes, dim]``; ``relation_embedding.weight``: ``[2 + 2R, dim]``;
        :meth:`embed` returns ``[n_users, dim]``, ``[n_items, dim]``.
    """

    def __init__(self, views: GraphViews, config: Optional[CIKGRecConfig] = None):
        super().__init__()
        self.config = c = config or CIKGRecConfig()
        self.graph = views
        self.n_users, self.n_items = views.n_users, views.n_items
        self.item_offset = views.offsets["item"]
        self.interest_slice = views.node_slice("interest")
        self.entity_space = slice(views.offsets["item"], views.offsets["entity"] + views.counts["entity"])
        self.has_interests = bool(c.use_interests and "interest" in views.edges and views.counts["interest"] > 0)
        self.has_kg = bool(c.use_kg and "kg" in views.edges and views.counts["entity"] + self.n_items > 0
                           and views.edges["kg"].size(1) > 0)
        for part, wanted, present in (("interests", c.use_interests, self.has_interests), ("kg", c.use_kg, self.has_kg)):
            if wanted and not present:
                logger.info("CIKGRec: %s requested but absent from the graph of %s; running without", part,
                            views.name)
        self.encoder_view = {(True, True): View.FULL, (True, False): View.INTEREST,
                             (False, True): View.KG, (False, False): View.COLLABORATIVE}[(self.has_interests,
                                                                                         self.has_kg)]
        self.anchor_view = View.COLLABORATIVE if c.cl_anchor is CLAnchor.COLLABORATIVE else self.encoder_view
        self.use_uir = c.use_uir and self.has_interests
        self.use_cl_user = c.use_cl and self.has_interests
        self.use_cl_item = c.use_cl and self.has_kg

        # the recommendation encoder is a LightGCN over the encoder view: ID table, feature fusion, propagation
        # and its per-epoch edge dropout; CIKGRec adds the UIR autoencoder, the CL views and TransE around it.
        # The encoder initialises itself when built; that draw is kept off the global RNG, which then advances
        # by the ID table's default draw only, as it did before CIKGRec composed LightGCN, so that every seed
        # still gives the published runs (reset_parameters below draws the table that is used).
        with torch.random.fork_rng(devices=[]):
            self.encoder = LightGCN(views, LightGCNConfig(
                dim=c.dim, layers=c.layers, l2=c.l2, view=self.encoder_view, self_loops=c.self_loops,
                edge_dropout=c.edge_dropout, message_dropout=c.message_dropout, features=c.features))
        torch.empty(views.n_nodes, c.dim).normal_()
        self.cl_propagation = LGPropagation(c.layers)
        self.uir_encoder = LGPropagation(c.encoder_layers)
        self.uir_decoder = LGPropagation(c.decoder_layers)
        self.mask_token = nn.Parameter(torch.zeros(1, c.dim))
        self.encoder_to_decoder = nn.Linear(c.dim, c.dim)
        self.triples: Optional[TransETriples] = None
        if c.use_transe:
            self.triples = TransETriples(views, use_kg=self.has_kg)
            self.relation_embedding = nn.Embedding(self.triples.n_relations, c.dim)

        self.mask_rate = mask_rate_schedule(0, c.min_mask_rate, c.max_mask_rate, c.total_epoch, c.increase_type)
        self.epoch = 0
        self._generator: Optional[torch.Generator] = None
        self._dropouts: Dict[str, EdgeDropout] = {}
        self._epoch_adj: Dict[str, Tensor] = {}
        self._register_load_state_dict_pre_hook(_encoder_keys)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters and state
    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        nn.init.zeros_(self.mask_token)
        nn.init.xavier_uniform_(self.encoder_to_decoder.weight)
        nn.init.zeros_(self.encoder_to_decoder.bias)
        if self.triples is not None:
            nn.init.xavier_uniform_(self.relation_embedding.weight)
        self._epoch_adj = {}

    @property
    def embedding(self) -> nn.Embedding:
        """The encoder's ID table ``[n_nodes, dim]`` (TransE trains it too)."""
        return self.encoder.embedding

    @property
    def fusion(self) -> Optional[nn.Module]:
        return self.encoder.fusion

    def id_embeddings(self) -> Tuple[Tensor, Tensor]:
        return self.encoder.id_embeddings()

    def ego(self) -> Tensor:
        """Layer-0 embeddings ``[n_nodes, dim]``: the ID table, fused with node features when configured."""
        return self.encoder.ego()

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def on_epoch_start(self, epoch: int, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """Set this epoch's UIR mask rate and resample the edge-dropped graphs; returns ``{"mask_rate": p}``."""
        c = self.config
        self.epoch, self._generator = epoch, generator
        self.mask_rate = mask_rate_schedule(epoch, c.min_mask_rate, c.max_mask_rate, c.total_epoch,
                                            c.increase_type)
        self._epoch_adj = {}
        self.encoder.on_epoch_start(epoch, generator)  # the encoder's edge dropout, drawn first as before
        if self.use_uir and c.uir_edge_drop > 0.0:
            self._epoch_adj["uir"] = self._drop("uir", c.uir_edge_drop)
        return {"mask_rate": self.mask_rate}

    def state_for_checkpoint(self) -> Dict[str, object]:
        return {"mask_rate": self.mask_rate, "epoch": self.epoch}

    def load_checkpoint_state(self, state: Dict[str, object]) -> None:
        self.mask_rate = float(state["mask_rate"])  # type: ignore[arg-type]
        self.epoch = int(state.get("epoch", 0))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ graphs
    def adj(self, view: View) -> Tensor:
        return self.graph.adj(view, self.config.self_loops)

    def _drop(self, name: str, p: float) -> Tensor:
        full = self.adj(self.encoder_view)
        dropout = self._dropouts.get(name)
        if dropout is None or dropout.rows.device != full.device:
            dropout = self._dropouts[name] = EdgeDropout(full)
        return dropout.sample(p, self._generator)

    def _training_adj(self, name: str, p: float) -> Tensor:
        """This epoch's edge-dropped encoder graph (drawn once per epoch), or the full one."""
        if not self.training or p == 0.0:
            return self.adj(self.encoder_view)
        adj = self._epoch_adj.get(name)
        if adj is None or adj.device != self.device:
            adj = self._epoch_adj[name] = self._drop(name, p)
        return adj

    # ------------------------------------------------------------------ scoring
    def propagate(self) -> Tensor:
        """Encoder output of every node ``[n_nodes, dim]`` over the full CIKG (no dropout in eval mode)."""
        return self.encoder.propagate()

    def embed(self) -> Tuple[Tensor, Tensor]:
        out = self.propagate()
        return out[: self.n_users], out[self.item_offset: self.item_offset + self.n_items]

    @torch.no_grad()
    def node_embeddings(self) -> Dict[str, Tensor]:
        out = self.propagate()
        nodes = {"user": out[: self.n_users], "item": out[self.item_offset: self.item_offset + self.n_items]}
        if self.has_kg and self.graph.counts["entity"] > 0:
            nodes["entity"] = out[self.graph.node_slice("entity")]
        if self.has_interests:
            nodes["interest"] = out[self.interest_slice]
        return nodes

    # ------------------------------------------------------------------ objectives
    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:
        c = self.config
        ego = self.ego()
        adj = self.encoder.training_adjacency() if self.training else self.encoder.full_adjacency()
        out = self.encoder.propagation(ego, adj)
        pos, neg = batch.pos + self.item_offset, batch.neg + self.item_offset
        users = out[batch.users]
        bpr = bpr_loss((users * out[pos]).sum(-1), (users * out[neg]).sum(-1))
        l2 = l2_reg(ego[batch.users], ego[pos], ego[neg])
        total = c.cf_weight * bpr + c.l2 * l2
        terms: LossTerms = {"bpr": bpr, "l2": l2}
        if self.use_uir:
            terms["uir"] = self.interest_reconstruction_loss(ego)
            total = total + c.uir_weight * terms["uir"]
        if self.use_cl_user or self.use_cl_item:
            cl = self.contrastive_losses(batch.users, batch.pos, ego)
            total = total + c.gcl_weight * sum(cl.values())
            terms.update(cl)
        return total, {k: v.detach() for k, v in terms.items()}

    def interest_reconstruction_loss(self, ego: Optional[Tensor] = None) -> Tensor:
        """SCE between masked interest rows of the ego table and their reconstruction (a scalar)."""
        c = self.config
        ego = self.ego() if ego is None else ego
        n_interests = self.interest_slice.stop - self.interest_slice.start
        n_mask = int(self.mask_rate * n_interests)
        if n_mask == 0:
            return ego.sum() * 0.0
        start = self.interest_slice.start
        masked = random_permutation(n_interests, self.device, self._generator)[:n_mask] + start
        n_noise = int(c.replace_rate * n_mask)
        noise_nodes, token_nodes = masked[:n_noise], masked[n_noise:]
        sources = random_permutation(n_interests, self.device, self._generator)[:n_noise] + start
        x = ego.index_copy(0, noise_nodes, ego[sources])
        x = x.index_copy(0, token_nodes, self.mask_token.expand(token_nodes.numel(), -1))
        adj = self._training_adj("uir", c.uir_edge_drop)
        hidden = self.encoder_to_decoder(self.uir_encoder(x, adj)).index_fill(0, masked, 0.0)
        reconstructed = self.uir_decoder(hidden, adj)
        return sce_loss(reconstructed[masked], ego[masked], c.sce_alpha)

    def contrastive_losses(self, users: Tensor, items: Tensor, ego: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``{"cl_user": ..., "cl_item": ...}`` (those the enabled parts allow) for a batch's users and items."""
        c = self.config
        ego = self.ego() if ego is None else ego
        anchor = self.cl_propagation(ego, self.adj(self.anchor_view), perturb=simgcl_noise(c.eps, self._generator))
        losses: Dict[str, Tensor] = {}
        if self.use_cl_user:
            view2 = self.cl_propagation(ego, self.adj(View.INTEREST))
            losses["cl_user"] = info_nce(anchor[users], view2[: self.n_users], users, c.gcl_temp,
                                         c.cl_max_logits)
        if self.use_cl_item:
            view3 = self.cl_propagation(ego, self.adj(View.KG))
            # items come first in the entity space, so item i is candidate i
            losses["cl_item"] = info_nce(anchor[items + self.item_offset], view3[self.entity_space], items,
                                         c.gcl_temp, c.cl_max_logits)
        return losses

    # ------------------------------------------------------------------ TransE
    def transe_loss(self, batch: Tuple[Tensor, Tensor, Tensor, Tensor]) -> Tuple[Tensor, LossTerms]:
        """TransE with BPR-style ranking, :math:`\\mathrm{softplus}(d(h,r,t) - d(h,r,t'))` + L2."""
        head, rel, tail, corrupted = (t.to(self.device) for t in batch)
        h, r = self.embedding(head), self.relation_embedding(rel)
        t, t_neg = self.embedding(tail), self.embedding(corrupted)
        loss = F.softplus(translation_distance(h, r, t) - translation_distance(h, r, t_neg)).mean()
        l2 = sum(x.pow(2).sum(-1).mean() / 2 for x in (h, r, t, t_neg))
        return loss + self.config.transe_l2 * l2, {"transe": loss.detach(), "transe_l2": l2.detach()}

    def transe_batches(self, generator: Optional[torch.Generator] = None, epoch: int = 0
                       ) -> Iterator[Tuple[Tensor, Tensor, Tensor, Tensor]]:
        assert self.triples is not None
        n = self.config.transe_batches or max(1, len(self.triples) // self.config.transe_batch_size)
        for _ in range(n):
            yield self.triples.batch(self.config.transe_batch_size, generator)

    def auxiliary_tasks(self) -> List[AuxiliaryTask]:
        if self.triples is None:
            return []
        return [AuxiliaryTask(name="transe", lr=self.config.transe_lr,
                              parameters=[self.embedding.weight, self.relation_embedding.weight],
                              batches=self.transe_batches, loss=self.transe_loss)]

    def __repr__(self) -> str:
        c = self.config
        parts = [p for p, on in (("uir", self.use_uir), ("cl_user", self.use_cl_user), ("cl_item", self.use_cl_item),
                                 ("transe", self.triples is not None)) if on]
        return (f"CIKGRec(nodes={self.embedding.num_embeddings}, dim={c.dim}, layers={c.layers}, "
                f"encoder_view={self.encoder_view.value}, cl_anchor={self.anchor_view.value}, "
                f"parts={parts}, mask_rate={self.mask_rate:.4f})")


def _encoder_keys(state_dict: Dict[str, Tensor], prefix: str, *args: object) -> None:
    """Checkpoints written before CIKGRec composed its LightGCN encoder name its ID table and fusion at the top
    level (``embedding.weight``, ``fusion.*``); they load into ``encoder.*``."""
    for key in [k for k in state_dict if k.startswith((prefix + "embedding.", prefix + "fusion."))]:
        state_dict[prefix + "encoder." + key[len(prefix):]] = state_dict.pop(key)

