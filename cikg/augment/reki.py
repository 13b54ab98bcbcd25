"""REKI: LLM knowledge extraction made efficient by clustering (Xi et al., *Efficient and Deployable Knowledge
Infusion for Open-World Recommendations via Large Language Models*, arXiv 2408.10520).

KAR asks the LLM once per user and once per item. REKI adds **collective** extraction:

1. Represent users and items: items by their encoded titles, users by the mean of their train items'
   title vectors (``cluster_on="history"``), or both by collaborative embeddings (``cluster_on="cf"``: the
   embeddings of a trained recommender passed as ``cf=(users, items)``, else a truncated SVD of the train
   matrix, :func:`cikg.augment._shared.cf_embeddings`).
2. Cluster each side into ``n_user_groups`` / ``n_item_groups`` groups with scikit-learn ``KMeans`` on the
   L2-normalised vectors (``MiniBatchKMeans`` above ``minibatch_above`` points).
3. One prompt per group (:data:`~cikg.augment.prompts.REKI_USER_GROUP`, :data:`~cikg.augment.prompts.REKI_ITEM_GROUP`),
   built from a *sample* of its members: the ``sample_size`` members nearest the centroid. A user group's
   prompt shows the items most often found in its sampled members' recent histories; an item group's prompt
   the sampled items' titles. The group's encoded answer is shared by every member.
4. **Incremental** extraction: a new user or item is assigned to the nearest centroid
   (:meth:`Groups.assign`) and takes that group's knowledge without any LLM call.

**Individual** extraction is KAR's (one prompt per user and per item, :mod:`cikg.augment.kar`). ``mode``
selects ``individual``, ``collective`` or ``both`` (two knowledge blocks per node type). The vectors are fused
into the backbone by the same hybrid-expert adaptor as KAR (``model.features.adaptor=experts``).

The trade-off the paper is about, LLM calls against accuracy, is tabulated by :func:`call_counts` (calls per
mode and group count, computed from the very requests a run would send) and measured by ``experiments/augment.py``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import checks
from .._io import torch_save_atomic
from ..errors import ConfigError, DatasetError
from ..llm.base import NOT_AN_LLM, Backend
from ..llm.kgprofile import history_matrix, top_k_per_row
from ..llm.prompts import titles_of
from ._shared import cf_embeddings
from .base import NodeFeatures
from .choices import MODES, ClusterOn, KnowledgeMode
from .kar import (
    KAR,
    Answers,
    KARConfig,
    ask,
    base_provenance,
    domain_of,
    encode_rows,
    item_requests,
    make_request,
    prompt_values,
    resolve_factors,
    user_requests,
    write_artifacts,
)
from .prompts import KAR_ITEM_FACTUAL, KAR_USER_REASONING, REKI_ITEM_GROUP, REKI_USER_GROUP

logger = logging.getLogger(__name__)

GROUPS_FILE = "groups.pt"


@dataclass
class REKIConfig(KARConfig):
    """Settings of :class:`REKI` (the :class:`~cikg.augment.kar.KARConfig` fields, plus):

    Attributes:
        mode: ``individual`` (KAR's per-user/per-item prompts), ``collective`` (one prompt per group) or ``both``.
        n_user_groups, n_item_groups: KMeans clusters per side (capped at the number of distinct points).
        cluster_on: ``history`` (title embeddings) or ``cf`` (collaborative embeddings).
        sample_size: members per group shown in its prompt (nearest the centroid).
        seed: KMeans seed.
        minibatch_above: use ``MiniBatchKMeans`` when a side has more points than this.
    """

    mode: KnowledgeMode = KnowledgeMode.COLLECTIVE
    n_user_groups: int = 50
    n_item_groups: int = 50
    cluster_on: ClusterOn = ClusterOn.HISTORY
    sample_size: int = 10
    seed: int = 2024
    minibatch_above: int = 20000
    CONSTRAINTS: ClassVar[checks.Constraints] = KARConfig.CONSTRAINTS + (
        checks.choice(KnowledgeMode, "mode"), checks.choice(ClusterOn, "cluster_on"),
        checks.positive_int("n_user_groups", "n_item_groups", "sample_size", "minibatch_above"), checks.seed("seed"))

    @property
    def collective(self) -> bool:
        return self.mode in (KnowledgeMode.COLLECTIVE, KnowledgeMode.BOTH)

    @property
    def individual(self) -> bool:
        return self.mode in (KnowledgeMode.INDIVIDUAL, KnowledgeMode.BOTH)


# ---------------------------------------------------------------------------------------------- clustering
@dataclass
class Groups:
    """A clustering of one side (users or items): ``centroids [G, d]`` on the unit sphere, ``labels [n]``.

    ``knowledge [G, d_k]`` (the encoded group answers) is filled after extraction; :meth:`assign` and
    :meth:`vectors` serve new users/items (incremental clustering, no LLM call).
    """

    centroids: Tensor
    labels: Tensor
    knowledge: Optional[Tensor] = None

    @property
    def n_groups(self) -> int:
        return int(self.centroids.size(0))

    def assign(self, x: Tensor, block_size: int = 4096) -> Tensor:
        """Nearest centroid of each row of ``x`` ``[n, d]`` (rows are L2-normalised first), in blocks."""
        x = F.normalize(x.float(), dim=1)
        out = [torch.cdist(x[s:s + block_size], self.centroids).argmin(dim=1) for s in range(0, x.size(0), block_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def vectors(self, x: Tensor) -> Tensor:
        """Group knowledge of the nearest group of each row of ``x`` ``[n, d_k]``."""
        if self.knowledge is None:
            raise ConfigError("these groups have no knowledge yet (run REKI.fit first)", "groups")
        return self.knowledge[self.assign(x)]


def cluster(x: Tensor, n_groups: int, seed: int, minibatch_above: int = 20000) -> Groups:
    """KMeans (or MiniBatchKMeans) of the L2-normalised rows of ``x`` into at most ``n_groups`` groups."""
    # imported on use: scikit-learn is slow to import and only clustering needs it (start-up time)
    from sklearn.cluster import KMeans, MiniBatchKMeans

    points = F.normalize(x.float(), dim=1).numpy().astype(np.float64)
    distinct = int(np.unique(points.round(6), axis=0).shape[0])
    k = max(1, min(n_groups, distinct))
    if points.shape[0] > minibatch_above:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(points)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(points)
    centroids = torch.as_tensor(model.cluster_centers_, dtype=torch.float32)
    groups = Groups(centroids, torch.empty(0, dtype=torch.long))
    groups.labels = groups.assign(torch.as_tensor(points, dtype=torch.float32))  # final E-step, exactly
    return groups


def representatives(x: Tensor, groups: Groups, sample_size: int) -> List[List[int]]:
    """The ``sample_size`` members of each group nearest its centroid (vectorised: one sort)."""
    x = F.normalize(x.float(), dim=1)
    distance = (x - groups.centroids[groups.labels]).norm(dim=1)
    index = torch.arange(x.size(0))
    best = top_k_per_row(groups.labels, index, -distance, sample_size)
    members: List[List[int]] = [[] for _ in range(groups.n_groups)]
    order = torch.argsort(distance[best], stable=True)  # nearest first inside each group
    for row, member in zip(groups.labels[best][order].tolist(), index[best][order].tolist(), strict=True):
        members[row].append(member)
    return members


# ---------------------------------------------------------------------------------------------- representations
def item_title_vectors(dataset: Any, encoder: Any) -> Tensor:
    """Encoded item titles ``[n_items, d]`` (untitled items are zero)."""
    titles = {i: t[0] for i in range(dataset.n_items) if (t := titles_of(dataset, [i]))}
    return encode_rows(dataset.n_items, titles, encoder)


def user_history_vectors(dataset: Any, item_vectors: Tensor, users: Optional[Tensor] = None) -> Tensor:
    """Mean of each user's train items' vectors ``[len(users), d]`` (one sparse matmul)."""
    users = torch.arange(dataset.n_users) if users is None else torch.as_tensor(users, dtype=torch.long)
    history = history_matrix(dataset, users, max(int(dataset.degrees("train").max()), 1))
    degree = torch.sparse.sum(history, dim=1).to_dense().clamp_min(1.0)
    return torch.sparse.mm(history, item_vectors) / degree.unsqueeze(1)


def representations(dataset: Any, config: REKIConfig, encoder: Any,
                    cf: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """``(users [n_users, d], items [n_items, d])`` the clustering runs on (see ``cluster_on``)."""
    if config.cluster_on is ClusterOn.CF:
        if cf is None:
            cf = cf_embeddings(dataset, seed=config.seed)
        users, items = cf
        if users.shape[0] != dataset.n_users or items.shape[0] != dataset.n_items:
            raise DatasetError(f"CF embeddings have {users.shape[0]} users and {items.shape[0]} items; "
                               f"{dataset.name} has {dataset.n_users} and {dataset.n_items}")
        return users.detach().float(), items.detach().float()
    items = item_title_vectors(dataset, encoder)
    return user_history_vectors(dataset, items), items


# ---------------------------------------------------------------------------------------------- group prompts
def group_requests(dataset: Any, config: REKIConfig, factors: Sequence[str], domain: str,
                   user_members: Sequence[Sequence[int]], item_members: Sequence[Sequence[int]]) -> Tuple[list, list]:
    """One request per user group (titles most common in its sampled members' recent histories) and per item
    group (its sampled items' titles); ``user_id`` = ``ugroup:<g>`` / ``igroup:<g>``."""
    values = prompt_values(domain, factors)
    u_requests, i_requests = [], []
    flat = [(g, m) for g, members in enumerate(user_members) for m in members]
    if flat:
        groups = torch.tensor([g for g, _ in flat], dtype=torch.long)
        history = history_matrix(dataset, torch.tensor([m for _, m in flat], dtype=torch.long), config.history_len)
        onehot = torch.sparse_coo_tensor(torch.stack([groups, torch.arange(len(flat))]), torch.ones(len(flat)),
                                         (len(user_members), len(flat)), check_invariants=False)
        counts = torch.sparse.mm(onehot, history).coalesce()  # [G, n_items]: how many sampled members had each item
        rows, cols = counts.indices()
        # most common first; ties broken by item id (stable) so prompts are deterministic
        best = top_k_per_row(rows, cols, counts.values().double() - cols.double() * 1e-9, config.history_len)
        top: List[List[int]] = [[] for _ in user_members]
        order = torch.argsort(-counts.values()[best], stable=True)
        for g, item in zip(rows[best][order].tolist(), cols[best][order].tolist(), strict=True):
            top[g].append(item)
        for g, members in enumerate(user_members):  # one prompt per group
            titles = titles_of(dataset, top[g])
            if titles:
                u_requests.append(make_request(REKI_USER_GROUP, "user", g, f"ugroup:{g}", members, len(titles),
                                               titles="; ".join(titles), **values))
    for g, members in enumerate(item_members):
        titles = titles_of(dataset, members)
        if titles:
            i_requests.append(make_request(REKI_ITEM_GROUP, "item", g, f"igroup:{g}", members, len(titles),
                                           titles="; ".join(titles), **values))
    return u_requests, i_requests


# ---------------------------------------------------------------------------------------------- method
class REKI(KAR):
    """REKI as an :class:`~cikg.augment.base.Augmenter` (see the module docstring).

    Args:
        config: :class:`REKIConfig`.
        backend, encoder, out_dir: as for :class:`~cikg.augment.kar.KAR`.
        cf: ``(users [n_users, d], items [n_items, d])`` collaborative embeddings for ``cluster_on="cf"``.

    After :meth:`fit`, ``self.user_groups`` / ``self.item_groups`` (:class:`Groups`) hold the clusterings and
    their knowledge (also saved as ``out_dir/groups.pt``) for incremental assignment.
    """

    name = "reki"

    def __init__(self, config: Optional[REKIConfig] = None, backend: Optional[Backend] = None, encoder: Any = None,
                 out_dir: Union[str, Path, None] = None, cf: Optional[Tuple[Tensor, Tensor]] = None):
        super().__init__(config or REKIConfig(), backend, encoder, out_dir)
        self.cf = cf
        self.user_groups: Optional[Groups] = None
        self.item_groups: Optional[Groups] = None

    def __repr__(self) -> str:
        return f"REKI({self.config}, backend={getattr(self.backend, 'name', None)!r})"

    def build_groups(self, dataset: Any) -> Tuple[Groups, Groups, List[List[int]], List[List[int]]]:
        """Cluster users and items; returns the groups and each group's sampled members."""
        c = self.config
        _, encoder = self._setup(dataset)
        user_x, item_x = representations(dataset, c, encoder, self.cf)
        user_groups = cluster(user_x, c.n_user_groups, c.seed, c.minibatch_above)
        item_groups = cluster(item_x, c.n_item_groups, c.seed, c.minibatch_above)
        return (user_groups, item_groups, representatives(user_x, user_groups, c.sample_size),
                representatives(item_x, item_groups, c.sample_size))

    def fit(self, dataset: Any, graph: Any = None) -> NodeFeatures:
        self.check_graph(dataset, graph)
        backend, encoder = self._setup(dataset)
        c: REKIConfig = self.config
        domain = domain_of(dataset, c.domain)
        started = time.perf_counter()
        factors, factor_source = resolve_factors(c, domain, backend)
        answers: List[Answers] = []
        templates = []
        user_blocks: Dict[str, Tensor] = {}
        item_blocks: Dict[str, Tensor] = {}
        extra: Dict[str, Any] = {}
        cluster_seconds = encode_seconds = 0.0
        if c.individual:
            u_requests, _ = user_requests(dataset, factors, domain, c.history_len)
            i_requests, _ = item_requests(dataset, factors, domain)
            ind = [ask(backend, u_requests), ask(backend, i_requests)]
            answers += ind
            templates += [KAR_USER_REASONING, KAR_ITEM_FACTUAL]
            t0 = time.perf_counter()
            texts = {**ind[0].texts(), **ind[1].texts()}
            user_blocks["reasoning"] = encode_rows(
                dataset.n_users, {r.user: texts[r.user_id] for r in u_requests if r.user_id in texts}, encoder)
            item_blocks["factual"] = encode_rows(
                dataset.n_items, {r.user: texts[r.user_id] for r in i_requests if r.user_id in texts}, encoder)
            encode_seconds += time.perf_counter() - t0
            extra["individual_calls"] = len(u_requests) + len(i_requests)
        if c.collective:
            t0 = time.perf_counter()
            self.user_groups, self.item_groups, user_members, item_members = self.build_groups(dataset)
            cluster_seconds = time.perf_counter() - t0
            u_requests, i_requests = group_requests(dataset, c, factors, domain, user_members, item_members)
            col = [ask(backend, u_requests), ask(backend, i_requests)]
            answers += col
            templates += [REKI_USER_GROUP, REKI_ITEM_GROUP]
            t0 = time.perf_counter()
            texts = {**col[0].texts(), **col[1].texts()}
            self.user_groups.knowledge = encode_rows(
                self.user_groups.n_groups, {r.user: texts[r.user_id] for r in u_requests if r.user_id in texts},
                encoder)
            self.item_groups.knowledge = encode_rows(
                self.item_groups.n_groups, {r.user: texts[r.user_id] for r in i_requests if r.user_id in texts},
                encoder)
            encode_seconds += time.perf_counter() - t0
            user_blocks["reasoning_collective"] = self.user_groups.knowledge[self.user_groups.labels]
            item_blocks["factual_collective"] = self.item_groups.knowledge[self.item_groups.labels]
            extra.update({"collective_calls": len(u_requests) + len(i_requests),
                          "n_user_groups": self.user_groups.n_groups, "n_item_groups": self.item_groups.n_groups,
                          "cluster_on": c.cluster_on, "sample_size": c.sample_size,
                          "cluster_seconds": round(cluster_seconds, 3)})
        seconds = time.perf_counter() - started - encode_seconds
        provenance = base_provenance("reki", backend, encoder, answers, templates, seconds)
        provenance.update({"dataset": dataset.name, "domain": domain, "factors": list(factors),
                           "factor_source": factor_source, "history_len": c.history_len, "mode": c.mode,
                           "encode_seconds": round(encode_seconds, 3), **extra})
        users = torch.cat(list(user_blocks.values()), dim=1)
        items = torch.cat(list(item_blocks.values()), dim=1)
        self.features = NodeFeatures(
            user=users, item=items, provenance=provenance,
            blocks={"user": {k: v.size(1) for k, v in user_blocks.items()},
                    "item": {k: v.size(1) for k, v in item_blocks.items()}})
        if self.out_dir is not None:
            write_artifacts(self.out_dir, self.features, answers)
            if c.collective:
                torch_save_atomic({"user": vars(self.user_groups), "item": vars(self.item_groups)},
                                  self.out_dir / GROUPS_FILE)
        logger.info("REKI (%s) on %s: %d prompts (%s%s)", c.mode, dataset.name, provenance["n_calls"], backend.name,
                    f", {NOT_AN_LLM}" if provenance["not_an_llm"] else "")
        return self.features


def load_groups(path: Union[str, Path]) -> Tuple[Groups, Groups]:
    """The user and item :class:`Groups` saved by a collective :meth:`REKI.fit` (``groups.pt`` or its folder)."""
    path = Path(path)
    path = path / GROUPS_FILE if path.is_dir() else path
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return Groups(**payload["user"]), Groups(**payload["item"])


def call_counts(dataset: Any, group_counts: Sequence[int] = (10, 50, 100, 500), config: Optional[KARConfig] = None
                ) -> pd.DataFrame:
    """LLM calls of individual extraction and of collective extraction at each group count, without calling.

    Individual: one prompt per user with a titled recent item plus one per titled item (exactly the requests
    :class:`KAR` sends). Collective at ``G`` groups: ``min(G, n_users) + min(G, n_items)`` (KMeans groups are
    never empty; fewer distinct points cap them lower, which :class:`REKI` reports as ``n_*_groups``).

    Returns:
        a frame with ``mode``, ``groups``, ``user_calls``, ``item_calls``, ``calls`` and ``share`` (calls as a
        fraction of individual extraction's).
    """
    config = config or KARConfig()
    domain = domain_of(dataset, config.domain)
    factors = config.factors or ("factor",)
    users, _ = user_requests(dataset, factors, domain, config.history_len)
    items, _ = item_requests(dataset, factors, domain)
    rows = [("individual", None, len(users), len(items))]
    rows += [("collective", int(g), min(int(g), dataset.n_users), min(int(g), dataset.n_items)) for g in group_counts]
    frame = pd.DataFrame(rows, columns=["mode", "groups", "user_calls", "item_calls"])
    frame["groups"] = frame["groups"].astype("Int64")
    frame["calls"] = frame["user_calls"] + frame["item_calls"]
    frame["share"] = frame["calls"] / max(int(frame["calls"].iloc[0]), 1)
    return frame


__all__ = ["GROUPS_FILE", "Groups", "MODES", "REKI", "REKIConfig", "call_counts", "cluster", "group_requests",
           "load_groups", "representations", "representatives", "user_history_vectors"]
