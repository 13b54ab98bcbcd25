"""Exact blocked top-K retrieval by inner product, and the joint text/CF keys it compares."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ...errors import DatasetError


def join_features(text: Tensor, cf: Tensor, text_weight: float) -> Tensor:
    """:math:`[\\sqrt{w}\\,\\hat t;\\ \\sqrt{1-w}\\,\\hat f]` of the unit-norm rows of ``text [n, d_text]`` and
    ``cf [n, d_cf]``: ``[n, d_text + d_cf]`` (queries and keys; their inner product is ``w cos + (1 - w) cos``)."""
    text = nn.functional.normalize(text.float(), dim=1)
    cf = nn.functional.normalize(cf.float(), dim=1)
    # sqrt weights on both sides: q.k = w cos(text) + (1 - w) cos(cf)
    return torch.cat([text * text_weight ** 0.5, cf * (1.0 - text_weight) ** 0.5], dim=1)


def retrieve(queries: Tensor, keys: Tensor, k: int, block_size: int = 1024,
             query_owner: Optional[Tensor] = None, key_owner: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Exact top-``k`` keys per query by inner product, one ``[block, n_keys]`` matmul + ``topk`` per block.

    Args:
        queries: ``[n_q, d]``; keys: ``[n_k, d]``.
        query_owner, key_owner: ``LongTensor`` owners (users); a key owned by the query's owner is skipped.

    Returns:
        ``(index [n_q, k], score [n_q, k])`` sorted by descending score; where fewer than ``k`` keys are
        allowed, the missing slots hold index ``-1`` and score ``-inf``.
    """
    if keys.size(0) == 0:
        raise DatasetError("no example to retrieve from (the CoT dataset is empty)")
    kk = min(k, keys.size(0))
    index = torch.empty(queries.size(0), k, dtype=torch.long)
    score = torch.empty(queries.size(0), k)
    keys_t = keys.t().contiguous()
    for start in range(0, queries.size(0), block_size):
        sims = queries[start:start + block_size] @ keys_t
        if query_owner is not None and key_owner is not None:
            same = query_owner[start:start + block_size, None] == key_owner[None, :]
            sims = sims.masked_fill(same, float("-inf"))
        top = torch.topk(sims, kk, dim=1)
        index[start:start + block_size, :kk] = top.indices
        score[start:start + block_size, :kk] = top.values
    index[:, kk:] = -1
    score[:, kk:] = float("-inf")
    index[torch.isinf(score)] = -1
    return index, score
