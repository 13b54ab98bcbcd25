"""The one model contract every recommender in cikg follows.

A model is a ``torch.nn.Module`` built from a :class:`~cikg.graph.GraphViews` (or just counts) and a typed
config dataclass. The framework owns sampling, training and evaluation; a model only says how to embed,
score and compute its loss::

    total, terms = model.loss(batch)           # terms: {"bpr": ..., "l2": ..., "uir": ..., "cl": ...}
    user_emb, item_emb = model.embed()         # [n_users, d], [n_items, d]
    scores = model.score(users)                # [len(users), n_items]
    top = model.recommend(users, k=20)         # [len(users), k] item ids (train items not removed here)

Optional hooks: :meth:`Recommender.on_epoch_start` (schedules such as the UIR mask rate, edge dropout
resampling) and :meth:`Recommender.auxiliary_tasks` (alternating objectives with their own optimiser, such
as TransE on KG triples).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..topk import csr_rows, mask_excluded_, top_items

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import GraphViews


@dataclass
class BPRBatch:
    """A mini-batch of BPR triples: ``users``, ``pos`` and ``neg`` items, each ``LongTensor [B]``."""

    users: Tensor
    pos: Tensor
    neg: Tensor
    epoch: int = 0

    def to(self, device: torch.device | str) -> "BPRBatch":
        return BPRBatch(self.users.to(device), self.pos.to(device), self.neg.to(device), self.epoch)

    def __len__(self) -> int:
        return int(self.users.numel())

    def __iter__(self) -> Iterator[Tensor]:
        """``users, pos, neg = batch`` (the epoch is not unpacked)."""
        return iter((self.users, self.pos, self.neg))


LossTerms = Dict[str, Tensor]


@dataclass
class AuxiliaryTask:
    """An objective trained in an alternating step with its own optimiser (e.g. TransE on the KG).

    Attributes:
        name: the loss-term name used in logs (``"transe"``).
        lr: learning rate of its Adam optimiser.
        parameters: the parameters it updates.
        batches: ``batches(generator, epoch)`` yields whatever ``loss`` takes, for one epoch.
        loss: ``loss(batch) -> (total, terms)``.
        weight_decay: L2 of its optimiser.
    """

    name: str
    lr: float
    parameters: List[nn.Parameter]
    batches: "callable"
    loss: "callable"
    weight_decay: float = 0.0


class Recommender(nn.Module):
    """Base class of cikg models: ``n_users`` × ``n_items`` scoring by inner products of embeddings.

    A model that propagates keeps the graph it was built from as ``self.graph`` (a
    :class:`~cikg.graph.GraphViews`); ``.to(device)`` / ``.double()`` move and cast it with the parameters.
    It is held as a plain attribute, not as buffers: its sparse adjacencies cannot be broadcast by
    ``DistributedDataParallel`` (and never change), and it is rebuilt from the data, not saved.
    """

    n_users: int
    n_items: int
    graph: Optional["GraphViews"] = None

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        if self.graph is not None:
            self.graph = self.graph.apply(fn)
        return self

    def reset_parameters(self) -> None:  # pragma: no cover - every model overrides
        raise NotImplementedError

    def loss(self, batch: BPRBatch) -> Tuple[Tensor, LossTerms]:  # pragma: no cover
        raise NotImplementedError

    def embed(self) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        """Final user and item embeddings ``([n_users, d], [n_items, d])`` used for scoring."""
        raise NotImplementedError

    @torch.no_grad()
    def node_embeddings(self) -> Dict[str, Tensor]:
        """Final embeddings per node type, rows indexed by that type's dense ids: ``"user"`` and ``"item"``
        always (those of :meth:`embed`), ``"entity"`` (non-item KG entities) and ``"interest"`` where the model
        propagates over them (so they are trained, not isolated rows)."""
        user_emb, item_emb = self.embed()
        return {"user": user_emb, "item": item_emb}

    @torch.no_grad()
    def score(self, users: Tensor, embeddings: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Scores ``[len(users), n_items]``; pass ``embeddings`` from :meth:`embed` to score many blocks."""
        user_emb, item_emb = self.embed() if embeddings is None else embeddings
        return user_emb[users] @ item_emb.t()

    @torch.no_grad()
    def recommend(self, users: Tensor, k: int = 20, exclude: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Top-``k`` item ids ``[len(users), k]`` under the evaluation's tie rule (:mod:`cikg.topk`: score
        descending, then the lower item id); ``exclude`` is a CSR ``(indptr, indices)`` of items to skip
        (typically the train items), indexed by user id."""
        if not 0 < k <= self.n_items:
            raise ValueError(f"k must be in 1..{self.n_items}, got {k}")
        scores = self.score(users)
        if exclude is not None:
            mask_excluded_(scores, *csr_rows(exclude[0], exclude[1], users))
        return top_items(scores, k)[0]

    def id_embeddings(self) -> Optional[Tuple[Tensor, Tensor]]:
        """The layer-0 ID embedding rows of users ``[n_users, d]`` and items ``[n_items, d]`` as views of the
        model's parameters, or ``None`` for a model without such a table (it cannot be warm-started)."""
        return None

    @torch.no_grad()
    def init_embeddings(self, users: Tensor, items: Tensor) -> None:
        """Start from another model's user and item embeddings (``train.init_from``; KGAT's published protocol
        starts from a trained BPR-MF's): copy ``users`` ``[n_users, d]`` and ``items`` ``[n_items, d]`` into the
        layer-0 ID rows of :meth:`id_embeddings`. Every other parameter keeps its initialisation.

        Raises:
            ConfigError: the model has no ID embeddings, or the shapes differ from its own.
        """
        from ..errors import ConfigError

        own = self.id_embeddings()
        if own is None:
            raise ConfigError(f"{type(self).__name__} has no user and item ID embeddings to start from",
                              "train.init_from")
        for name, target, source in (("user", own[0], users), ("item", own[1], items)):
            if tuple(source.shape) != tuple(target.shape):
                raise ConfigError(f"the {name} embeddings to start from are {tuple(source.shape)}; "
                                  f"{type(self).__name__} expects {tuple(target.shape)} ([n_{name}s, dim])",
                                  "train.init_from")
            target.copy_(source)

    def on_epoch_start(self, epoch: int, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """Called by the trainer before each epoch; returns values to log (e.g. ``{"mask_rate": 0.1}``)."""
        return {}

    def auxiliary_tasks(self) -> List[AuxiliaryTask]:
        """Alternating objectives with their own optimisers (none by default)."""
        return []

    def state_for_checkpoint(self) -> Dict[str, object]:
        """Non-parameter state a resume needs (schedules); restored by :meth:`load_checkpoint_state`."""
        return {}

    def load_checkpoint_state(self, state: Dict[str, object]) -> None:
        pass


def l2_reg(*tensors: Tensor) -> Tensor:
    """Half the squared L2 norm of the rows used in a batch, averaged over the batch (LightGCN convention)."""
    batch = tensors[0].size(0)
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """:math:`-\\mathrm{mean}\\,\\log\\sigma(s^+ - s^-)`, computed stably with ``softplus``."""
    return torch.nn.functional.softplus(neg_scores - pos_scores).mean()
