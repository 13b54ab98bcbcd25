"""Each user's query (encoded history titles) and retrieved examples (:class:`Context`), as ICT inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._shared import history_text
from .cot import CoTDataset
from .retrieval import join_features, retrieve


def user_text_embeddings(dataset: Any, encoder: Any, history_len: int,
                         users: Optional[Sequence[int]] = None) -> Tensor:
    """Encoded history titles ``[n_users, d_text]`` (zeros for users without a titled train item)."""
    users = range(dataset.n_users) if users is None else users
    texts = [history_text(dataset, u, history_len) for u in users]
    has = torch.tensor([bool(t) for t in texts], dtype=torch.bool)
    vectors = torch.from_numpy(encoder.encode([t for t in texts if t])).float()
    out = torch.zeros(len(texts), vectors.size(1) if vectors.numel() else int(encoder.dim))
    out[has] = vectors
    return out


@dataclass
class Context:
    """The retrieved examples of every user: ``index [n_users, K]`` into the CoT dataset (``-1`` = none) and
    their similarity ``score [n_users, K]``."""

    index: Tensor
    score: Tensor


def retrieve_context(cot: CoTDataset, user_text: Tensor, user_cf: Tensor, k: int, text_weight: float,
                     block_size: int = 1024) -> Context:
    """Top-``k`` examples per user (exact, blocked; the user's own examples excluded)."""
    queries = join_features(user_text, user_cf, text_weight)
    owners = torch.arange(user_text.size(0))
    index, score = retrieve(queries, cot.keys(text_weight), k, block_size, owners, cot.users)
    return Context(index, score)


def _context_tensors(cot: CoTDataset, context: Context, users: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    index = context.index[users]
    safe = index.clamp(min=0)
    labels = torch.where(index >= 0, cot.labels[safe], torch.full_like(index, -1))
    return cot.cot[safe], cot.user_cf[safe], cot.item_cf[safe], labels
