"""A trained run reopened for use: recommendations, scores and embeddings keyed by the dataset's original ids.

:func:`load_model` is a thin layer over :func:`cikg.train.load_run` (the loader ``cikg evaluate`` uses), so a
run directory opens the same way for evaluation and for use. The model's final embeddings are computed once;
every call afterwards is a matrix product and one top-K per block of users::

    model = cikg.load_model("runs/quick")
    model.recommend(["u0", "u7"], k=10)          # user, rank, item, score, item_text (seen items excluded)
    model.score(["u0"], items=["i3", "i9"])      # a users x items frame of raw scores
    model.item_embeddings()                      # one row per original item id

Ranking uses the evaluation's kernel (:func:`cikg.eval.ranking.top_items`): score descending, ties to the
lower item id. Seen items are the user's train and validation items; test items are never hidden, since they
are the held-out future the model is meant to find.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from ..data import Dataset, pairs_to_csr
from ..errors import CikgError
from ..models.base import Recommender
from ..topk import csr_rows, mask_excluded_, top_items
from ..train import load_run

Ids = Union[str, int, Iterable[Union[str, int]]]
NODE_TYPES = ("user", "item", "entity", "interest")


class UnknownIdError(CikgError):
    """Ids that are not in the dataset's id maps (``user_list.txt`` / ``item_list.txt``)."""

    def __init__(self, kind: str, ids: Sequence[str], dataset: Dataset):
        self.kind, self.ids = kind, list(ids)
        count = {"user": dataset.n_users, "item": dataset.n_items}[kind]
        shown = ", ".join(repr(i) for i in self.ids[:5]) + (f" and {len(self.ids) - 5} more" if len(ids) > 5 else "")
        super().__init__(f"unknown {kind} id {shown}: not among the {count} {kind}s of dataset {dataset.name!r} "
                         f"(ids are the original ones of {kind}_list.txt)")


def _as_list(ids: Ids) -> List[str]:
    """Original ids as strings (ints are accepted and compared as their decimal text)."""
    if isinstance(ids, (str, int, np.integer)):
        return [str(ids)]
    return [str(i) for i in ids]


def _seen_csr(dataset: Dataset) -> Tuple[torch.Tensor, torch.Tensor]:
    """CSR of each user's train and validation items (what a recommendation must not repeat)."""
    pairs = torch.cat([dataset.train, dataset.valid], dim=1)
    return pairs_to_csr(pairs[:, torch.argsort(pairs[0], stable=True)], dataset.n_users)


class TrainedModel:
    """A trained recommender with its dataset, answering by original ids.

    Args:
        model: the trained :class:`~cikg.models.base.Recommender` (put in eval mode here).
        dataset: the dataset it was trained on (its id maps, item text and seen items).
        run_dir: where it came from (shown in the repr).
        model_name: the YAML name of the model (``lightgcn``), for the repr.
        block_size: users scored at once; memory is about ``block_size * n_items * 12`` bytes.
    """

    def __init__(self, model: Recommender, dataset: Dataset, run_dir: Union[str, Path] = "", model_name: str = "",
                 block_size: int = 1024):
        if block_size < 1:
            raise CikgError(f"block_size must be a positive integer, got {block_size}")
        self.model = model.eval()
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.model_name = model_name or type(model).__name__.lower()
        self.block_size = block_size
        with torch.no_grad():
            self._nodes: Dict[str, torch.Tensor] = {t: e.detach() for t, e in model.node_embeddings().items()}
        self._embeddings = (self._nodes["user"], self._nodes["item"])
        self._index = {"user": pd.Index(dataset.user_ids), "item": pd.Index(dataset.item_ids)}
        self._user_ids = np.asarray(dataset.user_ids, dtype=object)
        self._item_ids = np.asarray(dataset.item_ids, dtype=object)
        self._unit_items = torch.nn.functional.normalize(self._nodes["item"], dim=1)
        self._item_text = np.asarray(dataset.item_text, dtype=object)
        self._seen = tuple(t.to(self.device) for t in _seen_csr(dataset))
        self.inner_product = self._scores_are_inner_products()

    @property
    def device(self) -> torch.device:
        return self._nodes["item"].device

    @property
    def dim(self) -> int:
        return int(self._nodes["item"].size(1))

    @property
    def node_types(self) -> Tuple[str, ...]:
        """The node types this model has embeddings for (``user``, ``item``, and ``entity``/``interest``)."""
        return tuple(t for t in NODE_TYPES if t in self._nodes)

    def __repr__(self) -> str:
        return (f"TrainedModel(run='{self.run_dir}', model={self.model_name} ({type(self.model).__name__}), "
                f"dataset={self.dataset.name!r}, users={self.dataset.n_users}, items={self.dataset.n_items}, "
                f"dim={self.dim}, embeddings={list(self.node_types)})")

    # ------------------------------------------------------------------ ids
    def dense_ids(self, kind: str, ids: Ids) -> torch.Tensor:
        """Dense ids ``LongTensor [n]`` of original ``user`` or ``item`` ids; :class:`UnknownIdError` names
        the unknown ones."""
        wanted = _as_list(ids)
        if not wanted:
            raise CikgError(f"no {kind} ids given")
        dense = self._index[kind].get_indexer(wanted)
        if (dense < 0).any():
            raise UnknownIdError(kind, [w for w, d in zip(wanted, dense) if d < 0], self.dataset)
        return torch.as_tensor(dense, dtype=torch.long, device=self.device)

    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CikgError(f"k must be a positive integer, got {k!r}")
        return int(k)

    # ------------------------------------------------------------------ ranking
    @torch.no_grad()
    def recommend(self, users: Optional[Ids] = None, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """The top ``k`` items of each user, best first.

        Args:
            users: original user ids (one, or a list; repeats kept); ``None`` for every user.
            k: list length (fewer rows for a user with fewer than ``k`` unseen items).
            exclude_seen: leave out the user's train and validation items.

        Returns:
            A frame with columns ``user``, ``rank`` (1-based), ``item``, ``score``, ``item_text``; users in
            the order given.
        """
        dense = (torch.arange(self.dataset.n_users, device=self.device) if users is None
                 else self.dense_ids("user", users))
        rows, items, scores = self.top_k(dense, k, exclude_seen)
        return pd.DataFrame({"user": self._user_ids[dense.cpu().numpy()[rows]], "rank": _ranks(rows),
                             "item": self._item_ids[items], "score": scores, "item_text": self._item_text[items]})

    @torch.no_grad()
    def top_k(self, dense_users: torch.Tensor, k: int, exclude_seen: bool = True
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ranking behind :meth:`recommend`, on dense ids: flat ``(position in dense_users, item, score)``
        arrays, grouped by user and best first, scored ``block_size`` users at a time."""
        k = self._check_k(k)
        parts = [self._rank_block(dense_users[start:start + self.block_size], k, exclude_seen, start)
                 for start in range(0, dense_users.numel(), self.block_size)]
        rows, items, scores = (torch.cat(p).cpu().numpy() for p in zip(*parts))
        return rows, items, scores

    def _rank_block(self, block: torch.Tensor, k: int, exclude_seen: bool, offset: int
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = self.model.score(block, self._embeddings).float()
        if exclude_seen:
            row, item = csr_rows(*self._seen, block)
            mask_excluded_(scores, row, item)
        return _ranked(scores, k, offset)

    @torch.no_grad()
    def score(self, users: Ids, items: Optional[Ids] = None) -> pd.DataFrame:
        """Raw model scores, a ``users x items`` frame (index: user ids, columns: item ids; all items by
        default). Seen items are not masked here."""
        dense_users = self.dense_ids("user", users)
        columns = slice(None) if items is None else self.dense_ids("item", items)
        blocks = [self.model.score(b, self._embeddings)[:, columns] for b in torch.split(dense_users, self.block_size)]
        values = torch.cat(blocks).float().cpu().numpy()
        item_ids = self._item_ids if items is None else self._item_ids[columns.cpu().numpy()]
        return pd.DataFrame(values, index=pd.Index(self._user_ids[dense_users.cpu().numpy()], name="user"),
                            columns=pd.Index(item_ids, name="item"))

    @torch.no_grad()
    def recommend_for_items(self, items: Ids, k: int = 10) -> pd.DataFrame:
        """Fold-in: recommendations for a user the model has not seen, from the items they interacted with.

        The user's vector is the mean of those items' final embeddings (LightGCN's user embedding is a
        normalised sum of its items' messages; the mean is its training-free stand-in), scored by inner
        product against every item; the given items are left out. Columns: ``rank``, ``item``, ``score``,
        ``item_text``.
        """
        return self._item_frame(*self.fold_in_top_k(items, k))

    @torch.no_grad()
    def fold_in_top_k(self, items: Ids, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """``(dense item ids, scores)`` behind :meth:`recommend_for_items`, best first."""
        self.require_inner_product("fold-in recommendations")
        k = self._check_k(k)
        dense = self.dense_ids("item", items)
        item_emb = self._nodes["item"]
        scores = (item_emb[dense].mean(0, keepdim=True) @ item_emb.t()).float()
        return self._top_excluding(scores, dense, k)

    @torch.no_grad()
    def similar_items(self, item: Union[str, int], k: int = 10) -> pd.DataFrame:
        """The ``k`` items nearest to ``item`` by cosine similarity of final embeddings (``item`` itself left
        out). Columns: ``rank``, ``item``, ``score`` (the cosine), ``item_text``."""
        return self._item_frame(*self.similar_top_k(item, k))

    @torch.no_grad()
    def similar_top_k(self, item: Union[str, int], k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """``(dense item ids, cosines)`` behind :meth:`similar_items`, best first."""
        k = self._check_k(k)
        dense = self.dense_ids("item", item)
        scores = (self._unit_items[dense] @ self._unit_items.t()).float()
        return self._top_excluding(scores, dense, k)

    @staticmethod
    def _top_excluding(scores: torch.Tensor, excluded: torch.Tensor, k: int) -> Tuple[np.ndarray, np.ndarray]:
        mask_excluded_(scores, torch.zeros_like(excluded), excluded)
        _, items, values = _ranked(scores, k)
        return items.cpu().numpy(), values.cpu().numpy()

    def item_records(self, items: np.ndarray, scores: np.ndarray) -> List[Dict[str, object]]:
        """Ranked items as JSON-ready dicts: ``rank``, ``item``, ``score``, ``item_text`` (``None`` if unknown)."""
        return [{"rank": rank, "item": item, "score": score, "item_text": text}
                for rank, item, score, text in zip(range(1, items.size + 1), self._item_ids[items].tolist(),
                                                    scores.tolist(), self._item_text[items].tolist())]

    def _item_frame(self, items: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"rank": np.arange(1, items.size + 1), "item": self._item_ids[items],
                             "score": scores, "item_text": self._item_text[items]})

    # ------------------------------------------------------------------ embeddings
    def user_embeddings(self) -> pd.DataFrame:
        """Final user embeddings: index = original user ids, columns ``e0 .. e{d-1}``."""
        return self.embeddings_frame("user")

    def item_embeddings(self) -> pd.DataFrame:
        """Final item embeddings: index = original item ids, columns ``e0 .. e{d-1}``."""
        return self.embeddings_frame("item")

    def embeddings_frame(self, node_type: str) -> pd.DataFrame:
        """Final embeddings of one of :attr:`node_types`, indexed by original id (entity ids of
        ``entity_list.txt``, interest ids of ``user_interest_clustered.txt``)."""
        if node_type not in self._nodes:
            raise CikgError(f"{type(self.model).__name__} ({self.model_name}) has no {node_type} embeddings; it "
                            f"has {', '.join(self.node_types)}")
        values = self._nodes[node_type].float().cpu().numpy()
        ids = {"user": self.dataset.user_ids, "item": self.dataset.item_ids,
               "entity": self.dataset.entity_ids[self.dataset.n_items:],
               "interest": [str(i) for i in self.dataset.interest_ids]}[node_type]
        return pd.DataFrame(values, index=pd.Index(list(ids), name=node_type),
                            columns=[f"e{j}" for j in range(values.shape[1])])

    # ------------------------------------------------------------------ checks
    def _scores_are_inner_products(self) -> bool:
        """Whether the model's scores are ``user · item`` of its embeddings (what FAISS and fold-in assume)."""
        users = torch.arange(min(8, self.dataset.n_users), device=self.device)
        with torch.no_grad():
            scores = self.model.score(users, self._embeddings).float()
        user_emb, item_emb = self._embeddings
        return bool(torch.allclose(scores, (user_emb[users] @ item_emb.t()).float(), rtol=1e-4, atol=1e-5))

    def require_inner_product(self, what: str) -> None:
        if not self.inner_product:
            raise CikgError(f"{what} need inner-product scores, but {type(self.model).__name__}.score is not "
                            "user · item of its embeddings")


def _ranked(scores: torch.Tensor, k: int, offset: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat ``(row + offset, item, score)`` of each row's top ``k`` candidates (``-inf`` ones dropped), in
    row order and rank order inside a row."""
    items, valid = top_items(scores, k)
    values = torch.gather(scores, 1, items)
    rows = torch.arange(scores.size(0), device=scores.device).unsqueeze(1).expand_as(items)
    return rows[valid] + offset, items[valid], values[valid]


def _ranks(rows: np.ndarray) -> np.ndarray:
    """1-based position of each entry within its run of equal ``rows`` (rows arrive grouped and ranked)."""
    if rows.size == 0:
        return rows.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    lengths = np.diff(np.r_[starts, rows.size])
    return np.arange(rows.size) - np.repeat(starts, lengths) + 1


def load_model(run_dir: Union[str, Path], block_size: int = 1024, device: Optional[str] = None) -> TrainedModel:
    """Reopen a run directory (its ``config.yaml`` and ``best_model.pt``) as a :class:`TrainedModel` on
    ``device`` (unset: the run's own device where this machine has it, else the CPU; see
    :func:`cikg.train.load_run`).

    Raises:
        CheckpointError: not a run directory, or no selected weights yet.
    """
    trainer = load_run(run_dir, device=device)
    return TrainedModel(trainer.model, trainer.dataset, run_dir, trainer.config.model_name, block_size=block_size)
