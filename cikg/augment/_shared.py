"""Helpers shared by the augmentation methods (REKI, LLM-CF, CoCo; KAR for the answer bookkeeping).

* collaborative features: :func:`cf_embeddings` (truncated SVD of the train matrix, the default when no trained
  recommender's embeddings are given), :func:`check_cf` and :func:`load_cf_file` (``--cf FILE``);
* the user's text: :func:`history_text`, :func:`item_title`;
* index helpers: :func:`train_keys` (sorted ``user * n_items + item`` of the train pairs), :func:`in_sorted`
  (membership in them) and
  :func:`csr_rows` (the entries of a set of CSR rows, vectorised);
* LLM bookkeeping: :func:`llm_model` (the model behind a backend) and :func:`answer_not_an_llm`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Tuple, Union

import torch
from torch import Tensor

from ..errors import DatasetError, GraphError
from ..llm.base import NOT_AN_LLM, Completion
from ..llm.prompts import titles_of


# ---------------------------------------------------------------------------------------------- CF features
def cf_embeddings(dataset: Any, dim: int = 64, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Collaborative user and item features from the train split: a truncated SVD (PureSVD-like).

    With :math:`R` the ``[n_users, n_items]`` train matrix and :math:`D_u, D_i` its degrees,
    :math:`D_u^{-1/2} R D_i^{-1/2} \\approx U S V^\\top` (rank ``dim``, ``torch.svd_lowrank``); users get
    :math:`c\\,U S^{1/2}`, items :math:`c\\,V S^{1/2}`, so :math:`f_u^\\top g_i` ranks like the low-rank
    reconstruction; the scalar :math:`c` makes the scores of the train pairs have unit standard deviation,
    so that a softmax over them is not flat. This is the cheap default when no trained recommender's
    embeddings are passed in.

    Returns:
        ``(users [n_users, d], items [n_items, d])`` with ``d = min(dim, n_users, n_items)``.
    """
    users, items = dataset.train[0], dataset.train[1]
    du = torch.bincount(users, minlength=dataset.n_users).clamp(min=1).double()
    di = torch.bincount(items, minlength=dataset.n_items).clamp(min=1).double()
    values = (du[users] * di[items]).rsqrt().float()
    with warnings.catch_warnings():  # torch notes that sparse support is beta; the product is exact
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_coo_tensor(torch.stack([users, items]), values,
                                         (dataset.n_users, dataset.n_items)).coalesce()
    q = min(dim, dataset.n_users, dataset.n_items)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        u, s, v = torch.svd_lowrank(matrix, q=q, niter=4)
    finally:
        torch.random.set_rng_state(state)
    root = s.clamp(min=0).sqrt()
    user_f, item_f = u * root, v * root
    spread = float(((user_f[users] * item_f[items]).sum(1)).std()) if users.numel() > 1 else 1.0
    c = 1.0 / max(spread, 1e-12) ** 0.5
    return (user_f * c).contiguous(), (item_f * c).contiguous()


def check_cf(dataset: Any, cf: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
    """``cf`` as float tensors after checking it has one row per user and per item of ``dataset``."""
    user_cf, item_cf = (torch.as_tensor(t).float() for t in cf)
    if user_cf.dim() != 2 or user_cf.size(0) != dataset.n_users:
        raise GraphError(f"{dataset.name}: user CF embeddings must have shape [{dataset.n_users}, d], "
                         f"got {tuple(user_cf.shape)}")
    if item_cf.dim() != 2 or item_cf.size(0) != dataset.n_items or item_cf.size(1) != user_cf.size(1):
        raise GraphError(f"{dataset.name}: item CF embeddings must have shape [{dataset.n_items}, "
                         f"{user_cf.size(1)}], got {tuple(item_cf.shape)}")
    return user_cf, item_cf


def load_cf_file(path: Union[str, Path], dataset: Any) -> Tuple[Tensor, Tensor]:
    """``(user, item)`` embeddings from a ``torch.save`` file holding ``{"user": [n_users, d], "item": [n_items, d]}``.

    Raises:
        DatasetError: the file is missing or holds something else; GraphError: the shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("CF embedding file not found", path)
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise DatasetError(f"not a torch file ({type(err).__name__})", path) from None
    if not isinstance(payload, dict) or not {"user", "item"} <= set(payload):
        raise DatasetError("expected a dict with tensors 'user' [n_users, d] and 'item' [n_items, d]", path)
    return check_cf(dataset, (payload["user"], payload["item"]))



# ---------------------------------------------------------------------------------------------- text
def history_text(dataset: Any, user: int, history_len: int) -> str:
    """Titles of the user's last ``history_len`` train items, comma-separated (``""`` when none has one)."""
    return ", ".join(titles_of(dataset, dataset.history(user, "train", last=history_len)))


def item_title(dataset: Any, item: int) -> str:
    title = dataset.item_text[item]
    return " ".join(str(title).split()) if title is not None and str(title).strip() else f"item {dataset.item_ids[item]}"



# ---------------------------------------------------------------------------------------------- indices
def train_keys(dataset: Any) -> Tensor:
    """The distinct train pairs as sorted keys ``user * n_items + item`` ``LongTensor [n_pairs]``."""
    return torch.unique(dataset.train[0] * dataset.n_items + dataset.train[1])


def in_sorted(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    """Whether each of ``keys`` (any shape) is in the non-empty sorted ``sorted_keys`` (e.g. :func:`train_keys`);
    a ``BoolTensor`` shaped like ``keys``."""
    at = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[at] == keys


def csr_rows(indptr: Tensor, indices: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor]:
    """``(position in rows, column)`` of every entry of the CSR rows ``rows`` (``LongTensor [nnz_of_rows]`` each)."""
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    positions = torch.repeat_interleave(torch.arange(rows.numel()), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return positions, indices[torch.repeat_interleave(starts, counts) + offsets]


# ---------------------------------------------------------------------------------------------- LLM bookkeeping
def llm_model(backend: Any) -> str:
    """The model behind ``backend``: its config's ``model`` (a server's model name), else the backend's name."""
    config = getattr(backend, "config", None)
    return str(getattr(config, "model", None) or getattr(backend, "name", type(backend).__name__))


def answer_not_an_llm(completion: Completion) -> bool:
    """Whether an answer came from an offline stand-in, also when replayed (its recorded source says so)."""
    return bool(completion.meta.get("not_an_llm")) or NOT_AN_LLM in str(completion.meta.get("recorded_source") or "")


__all__ = ["answer_not_an_llm", "cf_embeddings", "check_cf", "csr_rows", "history_text", "in_sorted", "item_title", "llm_model",
           "load_cf_file", "train_keys"]
