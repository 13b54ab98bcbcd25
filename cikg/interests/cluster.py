"""Cluster interest phrases into interest nodes (CIKGRec, arXiv 2412.13544, Sec. "interest clustering").

Given user → phrase pairs, the distinct phrases are embedded (:mod:`cikg.embed`) and clustered
into :math:`\\kappa` groups with scikit-learn (KMeans, MiniBatchKMeans, or Ward agglomerative).
:math:`\\kappa` is given, or searched over a range by the silhouette coefficient

.. math:: s = \\frac{1}{n} \\sum_i \\frac{b_i - a_i}{\\max(a_i, b_i)}

on a seeded sample of phrases (:math:`a_i`: mean distance to the own cluster, :math:`b_i`: to the nearest
other one); the largest :math:`s` wins, ties to the smaller :math:`\\kappa`.

A user holds a cluster when one of the user's phrases falls in it. As in the paper, clusters held by fewer
than ``min_users`` users (singletons) or by at least ``max_user_fraction`` of the users (too generic to
tell users apart) are dropped. The popularity cap has a floor: a cluster is too generic only when held by
at least :math:`\\max(\text{max\\_user\\_fraction} \\cdot n_{users}, \text{min\\_cap\\_users})` users, so on a
small user set (20 users: 1/5 is 4 users) the cap does not drop every shared interest; on the paper's
datasets (thousands of users) the floor never binds. When no cluster is kept, or the kept ones reach fewer
than half of the users with phrases, :func:`fit_interests` logs one warning naming the cause and the
setting to change (:func:`coverage_problem`); the kept clusters get dense ids ``0 .. n-1`` (most held first) and are
labelled by their most central phrase, the one nearest the mean of the cluster's phrase vectors.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import checks
from ..embed import EmbeddingKind, Encoder, embed_texts
from ..errors import CikgError, ConfigError
from .choices import ClusterMethod
from .phrases import clean_pairs

log = logging.getLogger(__name__)

Matrix = Union[np.ndarray, sp.spmatrix]

#: Ward agglomerative clustering needs O(n²) memory; refuse beyond this many phrases.
AGGLOMERATIVE_MAX_PHRASES = 20_000
#: the largest sparse matrix (GiB once dense) that agglomerative clustering may densify.
DENSIFY_MAX_GB = 2.0


@dataclasses.dataclass
class ClusterConfig:
    """How phrases become interest clusters.

    Args:
        method: clustering algorithm (``ClusterMethod`` or its name).
        kappa: number of clusters; exclusive with ``kappa_range``.
        kappa_range: ``(low, high)``, inclusive, searched by silhouette with ``kappa_step``.
        seed: seeds the clustering and the silhouette sample.
        min_users: drop clusters held by fewer users (2 drops singletons).
        max_user_fraction: drop clusters held by at least this share of the users (the paper: 1/5).
        min_cap_users: floor of that popularity cap in users: a cluster held by fewer users is never too
            popular (``popularity_cap(n) = max(max_user_fraction * n, min_cap_users)``; 1 = the plain share).
        silhouette_sample: phrases sampled to compute each silhouette score.
        embedding: ``minilm`` (sentence model) or ``tfidf``.
        n_init: KMeans / MiniBatchKMeans restarts.
        minibatch_size: MiniBatchKMeans batch size.
        n_threads: cap on OpenMP/BLAS threads while clustering (``None``: the libraries' default). On a
            shared, busy machine a cap of 1 avoids spinning OpenMP threads (measured 13x faster KMeans on
            a loaded 2-core machine; see docs/benchmarks.md).
    """

    method: ClusterMethod = ClusterMethod.KMEANS
    kappa: Optional[int] = None
    kappa_range: Optional[Tuple[int, int]] = None
    kappa_step: int = 1
    seed: int = 2024
    min_users: int = 2
    max_user_fraction: float = 0.2
    min_cap_users: int = 10
    silhouette_sample: int = 5000
    embedding: EmbeddingKind = EmbeddingKind.MINILM
    n_init: int = 3
    minibatch_size: int = 2048
    n_threads: Optional[int] = None
    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.choice(ClusterMethod, "method"), checks.choice(EmbeddingKind, "embedding"),
        checks.int_at_least(2, "kappa", optional=True), checks.positive_int("kappa_step", "min_users", "min_cap_users",
                                                                            "n_init", "minibatch_size"),
        checks.positive_int("n_threads", optional=True), checks.seed("seed"), checks.share("max_user_fraction"),
        checks.int_at_least(10, "silhouette_sample"))

    def __post_init__(self) -> None:
        checks.check(self)
        if (self.kappa is None) == (self.kappa_range is None):
            raise ConfigError(
                "set exactly one of kappa (a number of clusters) or kappa_range (low, high) "
                f"to search; got kappa={self.kappa!r}, kappa_range={self.kappa_range!r}",
                "kappa",
            )
        if self.kappa_range is not None:
            if len(tuple(self.kappa_range)) != 2:
                raise ConfigError(f"expected (low, high), got {self.kappa_range!r}", "kappa_range")
            low, high = self.kappa_range
            checks.check_value(checks.int_at_least(2), low, "kappa_range")
            checks.check_value(checks.int_at_least(low), high, "kappa_range")
            self.kappa_range = (int(low), int(high))

    @property
    def kappas(self) -> List[int]:
        """The candidate numbers of clusters."""
        if self.kappa is not None:
            return [self.kappa]
        assert self.kappa_range is not None
        low, high = self.kappa_range
        return list(range(low, high + 1, self.kappa_step))

    @property
    def searched(self) -> bool:
        return self.kappa is None

    def popularity_cap(self, n_users: int) -> float:
        """Users at which a cluster is too popular to keep: ``max(max_user_fraction * n_users, min_cap_users)``."""
        return max(self.max_user_fraction * n_users, float(self.min_cap_users))


# ---------------------------------------------------------------------------------------- vectors → labels
@dataclasses.dataclass
class VectorClustering:
    """Clustering of a vector set: ``labels`` (``[n]``, in ``0 .. kappa-1``), the chosen ``kappa``, the
    silhouette curve (``kappa``, ``silhouette``) when searched, and the method actually used."""

    labels: np.ndarray
    kappa: int
    curve: Optional[pd.DataFrame]
    method: ClusterMethod


def fit_labels(
    vectors: Matrix, kappa: int, config: ClusterConfig, method: Optional[ClusterMethod] = None
) -> np.ndarray:
    """Cluster the rows of ``vectors`` (``[n, d]``, dense or sparse) into ``kappa`` groups: ``[n]`` labels."""
    from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans

    n = vectors.shape[0]
    method = (method or config.method).resolve(n)
    if kappa > n:
        raise ConfigError(f"kappa={kappa} exceeds the {n} distinct phrases to cluster", "kappa")
    if method is ClusterMethod.KMEANS:
        model: Any = KMeans(kappa, n_init=config.n_init, random_state=config.seed)
    elif method is ClusterMethod.MINIBATCH:
        model = MiniBatchKMeans(
            kappa, n_init=config.n_init, random_state=config.seed, batch_size=config.minibatch_size
        )
    else:
        if n > AGGLOMERATIVE_MAX_PHRASES:
            raise ConfigError(
                f"agglomerative clustering of {n} phrases needs O(n^2) memory; use kmeans or "
                f"minibatch above {AGGLOMERATIVE_MAX_PHRASES} phrases",
                "method",
            )
        model = AgglomerativeClustering(kappa, linkage="ward")
        if sp.issparse(vectors):
            dense_gb = n * vectors.shape[1] * 4 / 2**30
            if dense_gb > DENSIFY_MAX_GB:
                raise ConfigError(
                    f"agglomerative clustering densifies the {n} x {vectors.shape[1]} TF-IDF matrix "
                    f"({dense_gb:.1f} GiB > {DENSIFY_MAX_GB} GiB); use kmeans or minibatch",
                    "method",
                )
            vectors = vectors.toarray()
    return np.asarray(model.fit_predict(vectors), dtype=np.int64)


def cluster_vectors(vectors: Matrix, config: ClusterConfig) -> VectorClustering:
    """Cluster rows with ``config.kappa``, or with the ``kappa`` of ``config.kappa_range`` that maximises
    the silhouette on a seeded sample of ``config.silhouette_sample`` rows."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=config.n_threads):
        return _cluster_vectors(vectors, config)


def _cluster_vectors(vectors: Matrix, config: ClusterConfig) -> VectorClustering:
    from sklearn.metrics import silhouette_score

    n = vectors.shape[0]
    method = config.method.resolve(n)
    if not config.searched:
        return VectorClustering(
            fit_labels(vectors, config.kappas[0], config, method), config.kappas[0], None, method
        )
    kappas = [k for k in config.kappas if k < n]
    if not kappas:
        raise ConfigError(
            f"every kappa in {config.kappa_range} needs more than the {n} distinct phrases "
            "(silhouette needs kappa < phrases)",
            "kappa_range",
        )
    from tqdm.auto import tqdm

    sample = min(config.silhouette_sample, n)
    best: Tuple[float, int, Optional[np.ndarray]] = (-np.inf, 0, None)
    scores = []
    for kappa in tqdm(kappas, desc="kappa search", unit="kappa", disable=len(kappas) < 3):
        labels = fit_labels(vectors, kappa, config, method)
        score = (
            float(silhouette_score(vectors, labels, sample_size=sample, random_state=config.seed))
            if np.unique(labels).size > 1
            else -1.0
        )
        scores.append(score)
        log.info("kappa=%d silhouette=%.4f", kappa, score)
        if score > best[0]:
            best = (score, kappa, labels)
    curve = pd.DataFrame({"kappa": kappas, "silhouette": scores})
    assert best[2] is not None
    return VectorClustering(best[2], best[1], curve, method)


def centroid_distances(vectors: Matrix, labels: np.ndarray, kappa: int) -> np.ndarray:
    """Euclidean distance of each row to the mean of its cluster: ``[n]``.

    Uses :math:`\\lVert x - c \\rVert^2 = \\lVert x \\rVert^2 - 2 x \\cdot c + \\lVert c \\rVert^2` with the
    centroids ``C = M X`` (``M``: the ``[kappa, n]`` row-normalised membership matrix), so sparse TF-IDF rows
    are never densified.
    """
    n = vectors.shape[0]
    sizes = np.bincount(labels, minlength=kappa).astype(np.float64)
    member = sp.csr_matrix((1.0 / sizes[labels], (labels, np.arange(n))), shape=(kappa, n))
    centroids = np.asarray((member @ vectors).todense() if sp.issparse(vectors) else member @ vectors)
    x_sq = (
        np.asarray(vectors.multiply(vectors).sum(1)).ravel()
        if sp.issparse(vectors)
        else np.einsum("ij,ij->i", vectors, vectors)
    )
    x_dot_c = np.asarray(vectors @ centroids.T)[np.arange(n), labels] if n else np.zeros(0)
    c_sq = np.einsum("ij,ij->i", centroids, centroids)[labels]
    return np.sqrt(np.maximum(x_sq - 2 * x_dot_c + c_sq, 0.0))


def most_central(labels: np.ndarray, distances: np.ndarray, kappa: int) -> np.ndarray:
    """Index of the row nearest its centroid, per cluster (``[kappa]``; ties to the lower index)."""
    order = np.lexsort((np.arange(labels.size), distances, labels))
    clusters, first = np.unique(labels[order], return_index=True)
    central = np.full(kappa, -1, dtype=np.int64)
    central[clusters] = order[first]
    return central


# ---------------------------------------------------------------------------------------- pairs → interests
@dataclasses.dataclass(repr=False)
class InterestClustering:
    """Fitted interests: which phrases form which interest, which users hold which interests.

    Attributes:
        config: the :class:`ClusterConfig` it was fitted with (not modified).
        kappa: the number of clusters fitted (chosen by silhouette when searched).
        method: the algorithm actually used (``auto`` resolved).
        phrases: one row per distinct phrase: ``phrase``, ``cluster`` (dense interest id, -1 when its
            cluster was dropped), ``label`` (its cluster's central phrase), ``n_users`` (users holding the
            cluster), ``phrase_users`` (users giving this phrase), ``raw_cluster``, ``distance`` (to the
            cluster mean), ``kept``.
        assignments: one row per user: ``user`` (remapped id), ``phrases`` (as given), ``clusters``
            (sorted dense ids), and ``user_id`` when the input had it.
        edges: ``[2, n_edges]`` int64 (user, dense interest id), unique, sorted by user then interest.
        labels: label per dense interest id.
        interest_users: ``[n_interests]`` users holding each interest.
        silhouette: the curve (``kappa``, ``silhouette``) when kappa was searched, else ``None``.
        n_users: users with at least one phrase (the base of ``max_user_fraction``).
        dropped: clusters dropped, by reason: ``{"too_few_users": a, "too_many_users": b}``.
        id_offset: added to dense ids in ``user_interest_clustered.txt`` (the dataset's ``n_entities``).
    """

    config: ClusterConfig
    kappa: int
    method: ClusterMethod
    phrases: pd.DataFrame
    assignments: pd.DataFrame
    edges: np.ndarray
    labels: List[str]
    interest_users: np.ndarray
    silhouette: Optional[pd.DataFrame]
    n_users: int
    dropped: Dict[str, int]
    id_offset: int = 0

    @property
    def n_interests(self) -> int:
        return len(self.labels)

    @property
    def interest_ids(self) -> List[int]:
        """Ids in the dataset format: ``id_offset + dense id`` (they continue the entity id space)."""
        return [self.id_offset + i for i in range(self.n_interests)]

    def interests(self) -> pd.DataFrame:
        """One row per kept interest: ``cluster``, ``interest_id``, ``label``, ``n_users``, ``n_phrases``."""
        kept = self.phrases[self.phrases["kept"]]
        n_phrases = np.bincount(kept["cluster"].to_numpy(), minlength=self.n_interests)
        return pd.DataFrame(
            {
                "cluster": np.arange(self.n_interests),
                "interest_id": self.interest_ids,
                "label": self.labels,
                "n_users": self.interest_users,
                "n_phrases": n_phrases,
            }
        )

    def to_dataset(self, dataset: Any) -> Any:
        """``dataset`` with these interests (``Dataset.with_interests``); ids offset by its ``n_entities``.

        Raises:
            CikgError: a user id here is not a user of ``dataset``.
        """
        import torch

        if self.edges.size and int(self.edges[0].max()) >= dataset.n_users:
            bad = int(self.edges[0].max())
            raise CikgError(
                f"user {bad} holds interests but dataset {dataset.name!r} has only "
                f"{dataset.n_users} users (ids 0..{dataset.n_users - 1})"
            )
        ids = [dataset.n_entities + i for i in range(self.n_interests)]
        source = f"cikg.interests {self.method.value} kappa={self.kappa} {self.config.embedding.value}"
        return dataset.with_interests(
            torch.from_numpy(self.edges.copy()), ids, list(self.labels), source=source
        )

    def summary(self) -> Dict[str, Any]:
        """Counts and choices, JSON-ready."""
        return {
            "method": self.method.value,
            "embedding": self.config.embedding.value,
            "kappa": self.kappa,
            "searched": self.config.searched,
            "kappa_range": self.config.kappa_range,
            "seed": self.config.seed,
            "min_users": self.config.min_users,
            "max_user_fraction": self.config.max_user_fraction,
            "min_cap_users": self.config.min_cap_users,
            "popularity_cap_users": self.config.popularity_cap(self.n_users),
            "phrases": int(len(self.phrases)),
            "users": self.n_users,
            "interests": self.n_interests,
            "dropped_too_few_users": self.dropped["too_few_users"],
            "dropped_too_many_users": self.dropped["too_many_users"],
            "user_interest_edges": int(self.edges.shape[1]),
            "users_with_interest": int(np.unique(self.edges[0]).size),
            "id_offset": self.id_offset,
            "best_silhouette": None
            if self.silhouette is None
            else float(self.silhouette["silhouette"].max()),
        }

    def __repr__(self) -> str:
        searched = f", searched {self.config.kappa_range}" if self.config.searched else ""
        return (
            f"InterestClustering({self.method.value}/{self.config.embedding.value}, kappa={self.kappa}"
            f"{searched}, phrases={len(self.phrases)}, users={self.n_users}, interests={self.n_interests}, "
            f"dropped={self.dropped['too_few_users']}+{self.dropped['too_many_users']}, "
            f"edges={self.edges.shape[1]})"
        )


def fit_interests(
    pairs: pd.DataFrame,
    config: ClusterConfig,
    *,
    encoder: Optional[Encoder] = None,
    id_offset: int = 0,
    all_users: Optional[Sequence[int]] = None,
    warn: bool = True,
) -> InterestClustering:
    """Embed and cluster the phrases of ``pairs`` and assign users to the kept clusters.

    Args:
        pairs: columns ``user`` (int, remapped id) and ``phrase`` (str), optionally ``user_id``; see
            :func:`cikg.interests.phrases.clean_pairs` for the checks and the phrase normalisation.
        config: the clustering configuration.
        encoder: the sentence :class:`Encoder` (and its cache) for ``embedding="minilm"``.
        id_offset: added to dense ids when written (the dataset's ``n_entities``).
        all_users: users to list in ``assignments`` even without phrases.
        warn: log :func:`coverage_problem`'s line when the kept clusters cover too few users (a caller that
            reports it otherwise, like ``cikg interests cluster``, passes ``False``).
    """

    if not isinstance(config, ClusterConfig):
        raise ConfigError(f"expected a ClusterConfig, got {type(config).__name__}", "config")
    pairs = clean_pairs(pairs)
    given = pairs[pairs["key"] != ""]
    phrase_index, phrase_text = pd.factorize(given["key"], sort=True)
    phrase_text = np.asarray(phrase_text, dtype=object)
    if phrase_text.size < 2:
        raise CikgError(f"need at least 2 distinct phrases to cluster, got {phrase_text.size}")
    users = given["user"].to_numpy(np.int64)
    log.info(
        "embedding %d distinct phrases of %d users (%s)",
        phrase_text.size,
        np.unique(users).size,
        config.embedding.value,
    )
    vectors = embed_texts(list(phrase_text), config.embedding, encoder)
    fitted = cluster_vectors(vectors, config)
    raw = fitted.labels
    kappa = fitted.kappa

    # users per raw cluster, from unique (user, raw cluster) pairs
    pair_raw = raw[phrase_index]
    user_raw = np.unique(np.stack([users, pair_raw]), axis=1)
    cluster_users = np.bincount(user_raw[1], minlength=kappa)
    n_users = int(np.unique(users).size)
    too_few = cluster_users < config.min_users
    too_many = cluster_users >= config.popularity_cap(n_users)
    keep = ~too_few & ~too_many
    kept_raw = np.flatnonzero(keep)
    kept_raw = kept_raw[np.lexsort((kept_raw, -cluster_users[kept_raw]))]  # most held first
    dense_of_raw = np.full(kappa, -1, dtype=np.int64)
    dense_of_raw[kept_raw] = np.arange(kept_raw.size)

    distances = centroid_distances(vectors, raw, kappa)
    central = most_central(raw, distances, kappa)
    raw_label = np.where(central >= 0, phrase_text[np.maximum(central, 0)], "")
    phrase_users = np.bincount(
        np.unique(np.stack([users, phrase_index]), axis=1)[1], minlength=phrase_text.size
    )
    phrases = pd.DataFrame(
        {
            "phrase": phrase_text.astype(str),
            "cluster": dense_of_raw[raw],
            "label": raw_label[raw].astype(str),
            "n_users": cluster_users[raw],
            "phrase_users": phrase_users,
            "raw_cluster": raw,
            "distance": distances,
            "kept": keep[raw],
        }
    )

    pair_dense = dense_of_raw[pair_raw]
    on = pair_dense >= 0
    codes = np.unique(users[on] * max(kept_raw.size, 1) + pair_dense[on])
    edges = np.stack([codes // max(kept_raw.size, 1), codes % max(kept_raw.size, 1)]).astype(np.int64)
    assignments = _assignments(pairs, edges, all_users)
    fitted_interests = InterestClustering(
        config=config,
        kappa=kappa,
        method=fitted.method,
        phrases=phrases,
        assignments=assignments,
        edges=edges,
        labels=[str(x) for x in raw_label[kept_raw]],
        interest_users=cluster_users[kept_raw],
        silhouette=fitted.curve,
        n_users=n_users,
        dropped={"too_few_users": int(too_few.sum()), "too_many_users": int((too_many & ~too_few).sum())},
        id_offset=int(id_offset),
    )
    problem = coverage_problem(fitted_interests) if warn else None
    if problem:
        log.warning("%s", problem)
    return fitted_interests


#: below this share of the users with phrases holding a kept interest, the clustering is flagged.
MIN_COVERAGE = 0.5


def coverage_problem(clustering: "InterestClustering") -> Optional[str]:
    """One line when no cluster was kept or the kept ones reach fewer than :data:`MIN_COVERAGE` of the
    users with phrases: the counts, the cause (popularity cap / minimum size, with their numbers) and the
    setting to change (config key and CLI flag); ``None`` when the clustering covers enough users."""
    config, n_users = clustering.config, clustering.n_users
    covered = int(np.unique(clustering.edges[0]).size)
    if clustering.n_interests and covered >= MIN_COVERAGE * n_users:
        return None
    few, many = clustering.dropped["too_few_users"], clustering.dropped["too_many_users"]
    cap = config.popularity_cap(n_users)
    causes = []
    if many:
        causes.append(
            f"{many} held by >= {cap:g} users (the popularity cap: max_user_fraction {config.max_user_fraction:g} "
            f"x {n_users} users, floor min_cap_users {config.min_cap_users}; raise --max-user-fraction)"
        )
    if few:
        causes.append(
            f"{few} held by < {config.min_users} users (the minimum size: lower --min-users or --kappa)"
        )
    if not causes:
        causes.append("the kept clusters are held by few users (lower --kappa for larger clusters)")
    head = (
        "no interest kept" if not clustering.n_interests
        else f"the {clustering.n_interests} kept interests reach only {covered} of {n_users} users with "
        f"phrases ({covered / max(n_users, 1):.0%} < {MIN_COVERAGE:.0%})"
    )
    return f"{head}: of the {clustering.kappa} clusters, " + "; ".join(causes)


def _assignments(pairs: pd.DataFrame, edges: np.ndarray, all_users: Optional[Sequence[int]]) -> pd.DataFrame:
    """One row per user: the phrases as given (empty ones too), the sorted dense interest ids."""
    users = np.unique(pairs["user"].to_numpy(np.int64))
    if all_users is not None:
        users = np.union1d(users, np.asarray(list(all_users), dtype=np.int64))
    given = pairs[pairs["phrase"].notna()]
    frame = pd.DataFrame({"user": users})
    frame["phrases"] = group_lists(given["user"].to_numpy(np.int64), given["phrase"].to_numpy(object), users)
    frame["clusters"] = group_lists(edges[0], edges[1], users)
    if "user_id" in pairs.columns:
        ids = pairs.groupby("user", sort=True)["user_id"].first().reindex(users)
        frame["user_id"] = ids.astype(object).where(ids.notna(), None).tolist()
    return frame


def group_lists(owners: np.ndarray, values: np.ndarray, groups: np.ndarray) -> List[list]:
    """``values`` split by owner: one list per entry of the sorted ``groups`` (a superset of ``owners``),
    input order kept inside a group, ``[]`` for a group that owns nothing. Vectorised: one stable sort and
    one split, no per-row Python."""
    order = np.argsort(owners, kind="stable")
    ends = np.searchsorted(owners[order], groups, side="right")
    return [part.tolist() for part in np.split(np.asarray(values)[order], ends[:-1])]
