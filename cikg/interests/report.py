"""How good is an interest run? Counts of what the LLM answered, and a predictive score, before training.

:func:`interest_report` reads a run directory (``user_interests_raw.jsonl`` from ``cikg interests infer``,
and when ``cikg interests cluster`` ran, ``interests.parquet`` / ``user_interests.parquet`` /
``interests_summary.json``) and returns an :class:`InterestReport`; :func:`write_report` writes it as
``report.json``, ``report.md`` and PNG plots into the directory.

Counts read from the raw JSONL: answers by ``status`` (``ok`` = parsed, ``unparsable``, ``failed``,
``skipped``), and where the records carry them, the optional fields ``structured`` (bool: the answer came
from a JSON-schema structured reply) and ``echoes`` (the phrases dropped because they echo a title of the
prompt: a list of str, or their number); phrases per user, distinct phrases (normalised as the clustering
keys them), users covered. From the clustering: kept and dropped clusters, by reason (the popularity cap,
the minimum size), and the users per cluster.

The predictive score
--------------------
For user :math:`u` with interest vectors :math:`v_1 .. v_m` (the sentence vectors of its phrases, or the
unit-normalised centroids of its kept clusters) and item text vectors :math:`e_i` (all unit norm; the title, or with ``item_text="title+kg"`` the title and
the names of its KG neighbours), the
interest score of an item is the mean (``pool="mean"``) or the max (``pool="max"``) of :math:`v_j \\cdot e_i`.
Candidates are the user's *unseen* items: every item with a text that is not among its train items. The
user's validation items are the positives; every other candidate (test items among them, unnamed: they are
never read) is a negative. Per user: AUC (the share of positive-negative pairs ranked right, ties half) and
Recall@K (:mod:`cikg.topk`'s tie rule, the evaluator's). Reported: the means over the users that have validation
items and interests, beside the popularity baseline (train counts) on the same users. A score above the
baseline says the interests carry signal about what the user picks next; it is comparable across LLMs,
prompts and clusterings of one dataset and split. The test split is never used.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from .._io import write_json_atomic, write_text_atomic
from ..data.dataset import pairs_to_csr
from ..embed import Encoder
from ..errors import CikgError, ConfigError, DatasetError
from ..llm.kgprofile import entity_name
from ..topk import csr_rows, top_items
from .choices import ITEM_TEXTS
from .io import PHRASE_TABLE, RAW_FILE, SUMMARY_FILE, USER_TABLE, read_raw_records
from .phrases import normalise_phrases

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_PHRASES = "report_phrases_per_user.png"
PLOT_CLUSTERS = "report_cluster_sizes.png"
PLOT_SCORE = "report_score.png"
POOLS = ("mean", "max")
STATUSES = ("ok", "unparsable", "failed", "skipped")


# ------------------------------------------------------------------------------------------ the score
@dataclasses.dataclass
class ScoreRow:
    """One way of scoring: ``interests`` (``phrases`` | ``clusters``) pooled by ``pool`` (``mean`` | ``max``),
    mean per-user ``auc`` and ``recall`` (at ``k``) over ``users``, and the popularity baseline on the same
    users (``popularity_auc``, ``popularity_recall``)."""

    interests: str
    pool: str
    users: int
    auc: float
    recall: float
    popularity_auc: float
    popularity_recall: float

    @property
    def auc_lift(self) -> float:
        return self.auc - self.popularity_auc


@dataclasses.dataclass
class PredictiveScore:
    """The predictive score of a run (module docstring). ``rows``: one :class:`ScoreRow` per interest source
    and pool; ``users_with_valid``: users with a validation item with text; ``items_without_text``: items no
    user can be scored on (no text to embed)."""

    k: int
    rows: List[ScoreRow]
    users_with_valid: int
    items_without_text: int
    item_text: str = "title"

    @property
    def primary(self) -> Optional[ScoreRow]:
        """The headline: clusters (what the graph gets) when clustered, else phrases; mean pooling."""
        for source in ("clusters", "phrases"):
            for row in self.rows:
                if row.interests == source and row.pool == "mean" and row.users:
                    return row
        return None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([dataclasses.asdict(r) for r in self.rows])

    def to_dict(self) -> Dict[str, Any]:
        primary = self.primary
        return {"k": self.k, "item_text": self.item_text, "users_with_valid": self.users_with_valid,
                "items_without_text": self.items_without_text,
                "rows": [dataclasses.asdict(r) for r in self.rows],
                "primary": None if primary is None else dataclasses.asdict(primary)}


#: KG attributes appended to an item's title with ``item_text="title+kg"``.
MAX_ATTRIBUTES = 8


def item_texts(dataset: Any, mode: str = "title") -> List[Optional[str]]:
    """The text each item is scored by: its title (``mode="title"``), or the title followed by the names of
    up to :data:`MAX_ATTRIBUTES` of its KG neighbours (``"title+kg"``: ``"Dune — Frank Herbert, Science
    fiction"``; named as the kg-profile backend names them). ``None``: the item has no text."""
    if mode not in ITEM_TEXTS:
        raise ConfigError(f"expected one of {', '.join(ITEM_TEXTS)}, got {mode!r}", "item_text")
    titles = pd.Series([None if t is None or not str(t).strip() else " ".join(str(t).split())
                        for t in dataset.item_text] + [None] * (dataset.n_items - len(dataset.item_text)),
                       dtype=object)
    if mode == "title" or not dataset.has_kg:
        return titles.tolist()

    head, _, tail = dataset.kg
    n_items = dataset.n_items
    forward, backward = (head < n_items) & (tail >= n_items), (tail < n_items) & (head >= n_items)
    items = torch.cat([head[forward], tail[backward]]).numpy()
    entities = torch.cat([tail[forward], head[backward]]).numpy()
    used = np.unique(entities)
    names = pd.Series([entity_name(dataset.entity_text[e] if dataset.entity_text else None, dataset.entity_ids[e])
                       for e in used.tolist()], index=used, dtype=object)  # one name per entity, not per edge
    edges = pd.DataFrame({"item": items, "name": names.reindex(entities).to_numpy()}).dropna().drop_duplicates()
    attrs = edges.groupby("item", sort=True)["name"].agg(lambda x: ", ".join(x.iloc[:MAX_ATTRIBUTES]))
    attrs = attrs.reindex(range(n_items))
    both = titles.notna() & attrs.notna()
    joined = titles.where(~both, titles.astype(str) + " — " + attrs.astype(str))
    return joined.where(joined.notna(), attrs).tolist()


def item_vectors(dataset: Any, encoder: Encoder, mode: str = "title") -> Tuple[torch.Tensor, torch.Tensor]:
    """Sentence vectors of the item texts (:func:`item_texts`): ``([n_items, d] float32, [n_items] bool
    has_text)``; rows of items without text are zero."""
    texts = item_texts(dataset, mode)
    has = torch.tensor([bool(t) for t in texts], dtype=torch.bool)
    if not bool(has.any()):
        return torch.zeros(dataset.n_items, 1), has
    encoded = torch.from_numpy(np.asarray(encoder.encode([t for t in texts if t]), dtype=np.float32))
    vectors = torch.zeros(dataset.n_items, encoded.size(1), dtype=torch.float32)
    vectors[has] = encoded
    return vectors, has


def _csr(pairs: torch.Tensor, n_users: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[2, n]`` (user, x) pairs → CSR ``(indptr [n_users + 1], indices [n])``, sorted by user."""
    return pairs_to_csr(pairs[:, torch.argsort(pairs[0], stable=True)], n_users)


def _block_flags(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor, n_items: int) -> torch.Tensor:
    """``BoolTensor [b, n_items]``: item in the CSR row of ``users[r]``."""
    row, col = csr_rows(indptr, indices, users)
    flags = torch.zeros(users.numel(), n_items, dtype=torch.bool)
    flags[row, col] = True
    return flags


def rank_metrics(scores: torch.Tensor, candidate: torch.Tensor, positive: torch.Tensor,
                 k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row AUC and Recall@``k`` of ``positive`` items against the other ``candidate`` items.

    Args:
        scores: ``[b, n_items]`` float, finite.
        candidate: ``[b, n_items]`` bool, the items that may be ranked (positives among them).
        positive: ``[b, n_items]`` bool, a subset of ``candidate``; every row holds at least one.

    Returns:
        ``(auc [b], recall [b])``; AUC is NaN for a row with no negative.
    """
    negative = candidate & ~positive
    n_neg = negative.sum(1)
    sorted_neg = torch.sort(torch.where(negative, scores, torch.full_like(scores, float("inf"))), dim=1).values
    rows, cols = positive.nonzero(as_tuple=True)
    value = scores[rows, cols].unsqueeze(1)
    less = torch.searchsorted(sorted_neg[rows], value, side="left").squeeze(1)
    equal = torch.searchsorted(sorted_neg[rows], value, side="right").squeeze(1) - less
    share = (less.double() + 0.5 * equal.double()) / n_neg[rows].double()
    n_pos = positive.sum(1)
    auc = torch.zeros(scores.size(0), dtype=torch.float64).index_add_(0, rows, share) / n_pos.double()
    auc[n_neg == 0] = float("nan")
    ranked, valid = top_items(torch.where(candidate, scores, torch.full_like(scores, float("-inf"))), k)
    hits = torch.gather(positive, 1, ranked) & valid
    recall = hits.sum(1).float() / n_pos.float()  # recall@K = hits in the top K / relevant (cikg.eval's definition)
    return auc.float(), recall


def _pooled_scores(block: torch.Tensor, owner_ptr: torch.Tensor, owner_rows: torch.Tensor,
                   interest: torch.Tensor, items: torch.Tensor, pool: str) -> torch.Tensor:
    """``[b, n_items]`` interest scores of the users ``block``: one matrix product of the block's interest
    vectors ``[m, d]`` with the item vectors ``[n_items, d]``, then mean or max per owner."""
    row, vec = csr_rows(owner_ptr, owner_rows, block)
    sims = interest[vec] @ items.T  # [m, n_items]
    out = torch.zeros(block.numel(), items.size(0), dtype=sims.dtype)
    if pool == "mean":
        out.index_add_(0, row, sims)
        return out / torch.bincount(row, minlength=block.numel()).clamp(min=1).unsqueeze(1).to(sims.dtype)
    out.fill_(float("-inf"))
    return out.scatter_reduce_(0, row.unsqueeze(1).expand_as(sims), sims, reduce="amax")


def score_interests(dataset: Any, sources: Dict[str, Tuple[torch.Tensor, torch.Tensor]], items: torch.Tensor,
                    has_text: torch.Tensor, *, k: int = 20, pools: Sequence[str] = POOLS,
                    block_size: int = 512) -> PredictiveScore:
    """The predictive score of each interest source (module docstring).

    Args:
        dataset: a :class:`cikg.data.Dataset` with a validation split (its ``test`` is never read).
        sources: name → ``(pairs [2, n] (user, row of vectors), vectors [r, d] unit norm)``.
        items: ``[n_items, d]`` item text vectors; has_text: ``[n_items]`` bool.
        k: the Recall cut-off; pools: ``mean`` and/or ``max``; block_size: users per matrix product.
    """
    from tqdm.auto import tqdm

    bad = [p for p in pools if p not in POOLS]
    if bad or not pools:
        raise ConfigError(f"expected pools among {POOLS}, got {list(pools)}", "pool")
    n_users, n_items = dataset.n_users, dataset.n_items
    if dataset.valid.numel() == 0:
        raise DatasetError(f"{dataset.name} has no validation split: the score ranks validation items "
                           "(carve one: `cikg data split` or load_dataset(valid_fraction=...))")
    train_ptr, train_idx = dataset.csr("train")
    keep = has_text[dataset.valid[1]]
    valid_ptr, valid_idx = _csr(dataset.valid[:, keep], n_users)
    with_valid = torch.nonzero(valid_ptr.diff() > 0).squeeze(1)
    popularity = torch.bincount(dataset.train[1], minlength=n_items).float()
    items = items.float()
    rows: List[ScoreRow] = []
    for name, (pairs, vectors) in sources.items():
        owner_ptr, owner_rows = _csr(pairs, n_users)
        users = with_valid[owner_ptr.diff()[with_valid] > 0]
        sums = {pool: torch.zeros(2, dtype=torch.float64) for pool in (*pools, "popularity")}
        counted = {pool: 0 for pool in sums}
        starts = range(0, users.numel(), block_size)
        for start in tqdm(starts, desc=f"score {name}", unit="block", disable=len(starts) < 3):
            block = users[start:start + block_size]
            candidate = ~_block_flags(train_ptr, train_idx, block, n_items) & has_text
            positive = _block_flags(valid_ptr, valid_idx, block, n_items) & candidate
            for pool in (*pools, "popularity"):
                scores = (popularity.expand(block.numel(), n_items) if pool == "popularity"
                          else _pooled_scores(block, owner_ptr, owner_rows, vectors.float(), items, pool))
                auc, recall = rank_metrics(scores, candidate, positive, k)
                ok = ~torch.isnan(auc)
                sums[pool] += torch.stack([auc[ok].double().sum(), recall[ok].double().sum()])
                counted[pool] += int(ok.sum())
        base = sums["popularity"] / counted["popularity"] if counted["popularity"] else torch.full((2,), float("nan"))
        for pool in pools:
            mean = sums[pool] / counted[pool] if counted[pool] else torch.full((2,), float("nan"))
            rows.append(ScoreRow(name, pool, counted[pool], float(mean[0]), float(mean[1]), float(base[0]),
                                 float(base[1])))
    return PredictiveScore(k, rows, int(with_valid.numel()), int((~has_text).sum()))


def phrase_source(pairs: pd.DataFrame, encoder: Encoder) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(user, phrase)`` rows → ``(pairs [2, n] (user, distinct phrase row), vectors [p, d])``, phrases keyed
    as the clustering keys them (:func:`cikg.interests.io.normalise_phrases`)."""
    keys = normalise_phrases(pairs["phrase"])
    given = keys != ""
    codes, distinct = pd.factorize(keys[given], sort=True)
    users = pairs["user"].to_numpy(np.int64)[given.to_numpy()]
    unique = np.unique(np.stack([users, codes]), axis=1) if users.size else np.zeros((2, 0), np.int64)
    vectors = encoder.encode(list(distinct)) if len(distinct) else np.zeros((0, encoder.dim), np.float32)
    return torch.from_numpy(unique.astype(np.int64)), torch.from_numpy(np.asarray(vectors, np.float32))


def cluster_source(phrases: pd.DataFrame, edges: np.ndarray, encoder: Encoder) -> Tuple[torch.Tensor, torch.Tensor]:
    """Kept clusters → ``(edges [2, n] (user, dense id), centroids [n_interests, d])``: each centroid the
    unit-normalised mean of its phrases' vectors (``phrases``: columns ``phrase``, ``cluster``, ``kept``)."""
    kept = phrases[phrases["kept"].astype(bool)]
    n_interests = int(kept["cluster"].max()) + 1 if len(kept) else 0
    vectors = torch.from_numpy(np.asarray(encoder.encode(list(kept["phrase"])), np.float32)) if len(kept) \
        else torch.zeros(0, encoder.dim)
    cluster = torch.from_numpy(np.array(kept["cluster"], dtype=np.int64))
    centroids = torch.zeros(n_interests, vectors.size(1)).index_add_(0, cluster, vectors)
    centroids = torch.nn.functional.normalize(centroids, dim=1)
    return torch.from_numpy(np.asarray(edges, dtype=np.int64).reshape(2, -1)), centroids


# ------------------------------------------------------------------------------------------ the report
@dataclasses.dataclass
class InterestReport:
    """What :func:`interest_report` found in a run directory.

    Attributes:
        directory: the run directory.
        answers: users by status (``ok`` parsed, ``unparsable``, ``failed``, ``skipped``) and ``total``.
        structured: answers that came as structured (JSON-schema) replies; ``None`` when not recorded.
        echoes: phrases dropped as echoes of the prompt's titles; ``None`` when not recorded.
        echo_rate: ``echoes / (echoes + kept phrases)``; ``None`` when not recorded.
        phrases_per_user: ``[n_records]`` phrases of each user in the file.
        distinct_phrases: distinct normalised phrases.
        users_with_phrases: users with at least one phrase; n_users: the dataset's users (or the file's).
        clustering: the clustering's summary (``interests_summary.json``) plus ``users_with_interest``;
            ``None`` before ``cikg interests cluster``, and when its files are older than the raw interests
            (a new ``infer`` since: they belong to other phrases; a warning says so).
        clusters: one row per fitted cluster: ``raw_cluster``, ``label`` (its central phrase), ``n_users``,
            ``kept``, ``n_phrases``, ``reason``
            (``kept`` | ``popularity cap`` | ``minimum size``); empty before clustering.
        score: the :class:`PredictiveScore`; ``None`` when not computed.
    """

    directory: Path
    answers: Dict[str, int]
    structured: Optional[int]
    echoes: Optional[int]
    echo_rate: Optional[float]
    phrases_per_user: np.ndarray
    distinct_phrases: int
    users_with_phrases: int
    n_users: int
    clustering: Optional[Dict[str, Any]]
    clusters: pd.DataFrame
    score: Optional[PredictiveScore]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready."""
        per_user = self.phrases_per_user
        counts = np.bincount(per_user, minlength=6) if per_user.size else np.zeros(6, np.int64)
        return {
            "directory": str(self.directory),
            "answers": self.answers,
            "structured": self.structured,
            "echoes": self.echoes,
            "echo_rate": self.echo_rate,
            "phrases": int(per_user.sum()),
            "phrases_per_user": {"mean": float(per_user.mean()) if per_user.size else 0.0,
                                 "median": float(np.median(per_user)) if per_user.size else 0.0,
                                 "max": int(per_user.max()) if per_user.size else 0,
                                 "histogram": [int(c) for c in counts]},
            "distinct_phrases": self.distinct_phrases,
            "users_with_phrases": self.users_with_phrases,
            "n_users": self.n_users,
            "users_covered": self.users_with_phrases / max(self.n_users, 1),
            "clustering": self.clustering,
            "cluster_sizes": self.clusters.to_dict(orient="records"),
            "score": None if self.score is None else self.score.to_dict(),
        }

    def lines(self) -> List[str]:
        """A few readable lines (what the CLI prints)."""
        a = self.answers
        out = [f"answers: {a.get('ok', 0)} parsed, {a.get('unparsable', 0)} unparsable, {a.get('failed', 0)} "
               f"failed, {a.get('skipped', 0)} skipped of {a.get('total', 0)}"
               + ("" if self.structured is None else f"; {self.structured} structured")
               + ("" if self.echo_rate is None else f"; echo rate {self.echo_rate:.1%} ({self.echoes} dropped)"),
               f"phrases: {int(self.phrases_per_user.sum())} ({self.distinct_phrases} distinct) for "
               f"{self.users_with_phrases} of {self.n_users} users ({self.users_with_phrases / max(self.n_users, 1):.0%})"]
        if self.clustering is not None:
            c = self.clustering
            out.append(f"clusters: {c['interests']} kept of kappa={c['kappa']} ({c['dropped_too_many_users']} "
                       f"over the popularity cap of {c.get('popularity_cap_users', float('nan')):g} users, "
                       f"{c['dropped_too_few_users']} under the minimum size {c['min_users']}); "
                       f"{c['users_with_interest']} users hold an interest")
        if self.score is not None:
            for row in self.score.rows:
                out.append(f"score {row.interests}/{row.pool}: AUC {row.auc:.4f} (popularity {row.popularity_auc:.4f}), "
                           f"Recall@{self.score.k} {row.recall:.4f} (popularity {row.popularity_recall:.4f}) "
                           f"over {row.users} users")
        return out


def _answer_counts(records: Dict[int, dict]) -> Tuple[Dict[str, int], Optional[int], Optional[int]]:
    status = [str(r.get("status", "ok")) for r in records.values()]
    answers = {s: status.count(s) for s in STATUSES}
    answers["total"] = len(status)
    flags = [r["structured"] for r in records.values() if "structured" in r]
    structured = sum(bool(f) for f in flags) if flags else None
    echo_values = [r["echoes"] for r in records.values() if "echoes" in r]
    echoes = (sum(len(e) if isinstance(e, list) else int(e or 0) for e in echo_values) if echo_values else None)
    return answers, structured, echoes


def _cluster_table(phrases: pd.DataFrame, summary: Dict[str, Any]) -> pd.DataFrame:
    clusters = phrases.groupby("raw_cluster", sort=True).agg(
        label=("label", "first"), n_users=("n_users", "first"), kept=("kept", "first"),
        n_phrases=("phrase", "size")).reset_index()
    reason = np.where(clusters["kept"], "kept",
                      np.where(clusters["n_users"] < summary.get("min_users", 1), "minimum size", "popularity cap"))
    return clusters.assign(reason=reason).sort_values(["n_users", "raw_cluster"], ascending=[False, True],
                                                      ignore_index=True)


def interest_report(dataset: Any, interests_dir: PathLike, encoder: Optional[Encoder] = None, *,
                    score: bool = True, k: int = 20, pools: Sequence[str] = POOLS, item_text: str = "title",
                    block_size: int = 512) -> InterestReport:
    """Report on the interest run in ``interests_dir`` (module docstring).

    Args:
        dataset: the :class:`cikg.data.Dataset` the run's users belong to (``None``: counts only, no score).
        interests_dir: a directory holding ``user_interests_raw.jsonl`` (and the clustering's files).
        encoder: the sentence encoder (its cache); a fresh in-memory one when ``None``.
        score: compute the predictive score (needs ``dataset`` with a validation split).
        k: Recall cut-off; pools: ``mean`` and/or ``max``; block_size: users per matrix product.
        item_text: ``title`` or ``title+kg`` (:func:`item_texts`); compare runs scored the same way.
    """
    directory = Path(interests_dir)
    if not directory.is_dir():
        raise DatasetError("interest run directory not found", directory)
    records = read_raw_records(directory / RAW_FILE)
    answers, structured, echoes = _answer_counts(records)
    per_user = np.asarray([len(r["phrases"]) for r in records.values()], dtype=np.int64)
    n_phrases = int(per_user.sum())
    pairs = pd.DataFrame([(u, p) for u, r in records.items() for p in r["phrases"]], columns=["user", "phrase"])
    keys = normalise_phrases(pairs["phrase"]) if len(pairs) else pd.Series([], dtype=object)
    n_users = dataset.n_users if dataset is not None else len(records)
    if dataset is not None and len(pairs) and int(pairs["user"].max()) >= dataset.n_users:
        raise DatasetError(f"user {int(pairs['user'].max())} has phrases but dataset {dataset.name!r} has only "
                           f"{dataset.n_users} users (is this run of another dataset?)", directory / RAW_FILE)
    clustering: Optional[Dict[str, Any]] = None
    clusters = pd.DataFrame(columns=["raw_cluster", "label", "n_users", "kept", "n_phrases", "reason"])
    phrase_table = None
    clustered = (directory / SUMMARY_FILE).is_file() and (directory / PHRASE_TABLE).is_file()
    if clustered and (directory / SUMMARY_FILE).stat().st_mtime < (directory / RAW_FILE).stat().st_mtime:
        log.warning("%s: the clustering files are older than %s (a new `infer` since the last `cluster`); the "
                    "report leaves them out: re-run `cikg interests cluster %s`", directory, RAW_FILE, directory)
        clustered = False
    if clustered:
        clustering = json.loads((directory / SUMMARY_FILE).read_text(encoding="utf-8"))
        phrase_table = pd.read_parquet(directory / PHRASE_TABLE)
        clusters = _cluster_table(phrase_table, clustering)
    result = InterestReport(directory, answers, structured, echoes,
                            None if echoes is None else echoes / max(echoes + n_phrases, 1), per_user,
                            int(keys[keys != ""].nunique()), int((per_user > 0).sum()), n_users, clustering,
                            clusters, None)
    user_clusters = None
    if phrase_table is not None and (directory / USER_TABLE).is_file():
        users = pd.read_parquet(directory / USER_TABLE, columns=["user", "clusters"])
        user_clusters = users.explode("clusters").dropna()
        assert clustering is not None
        clustering["users_with_interest"] = int(user_clusters["user"].nunique())
    elif clustering is not None:
        clustering["users_with_interest"] = clustering.get("users_with_interest", 0)
    if score and dataset is not None and n_phrases:
        encoder = encoder or Encoder()
        sources = {"phrases": phrase_source(pairs, encoder)}
        if phrase_table is not None and user_clusters is not None:
            edges = np.stack([user_clusters["user"].to_numpy(np.int64), user_clusters["clusters"].to_numpy(np.int64)])
            sources["clusters"] = cluster_source(phrase_table, edges, encoder)
        items, has_text = item_vectors(dataset, encoder, item_text)
        if not bool(has_text.any()):
            raise CikgError(f"{dataset.name}: no item has a text to embed; the predictive score needs item titles")
        result.score = score_interests(dataset, sources, items, has_text, k=k, pools=pools, block_size=block_size)
        result.score.item_text = item_text
    return result


# ------------------------------------------------------------------------------------------ writing
def plot_report(report: InterestReport, directory: PathLike) -> List[Path]:
    """The report's PNGs: phrases per user; users per cluster (kept and dropped, with the thresholds);
    AUC and Recall@K against the popularity baseline. Returns the paths written."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .. import viz  # noqa: F401  (selects the file backend)
    from ..viz._common import finish

    out = Path(directory)
    paths = []
    per_user = report.phrases_per_user
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    top = int(per_user.max()) if per_user.size else 0
    counts = np.bincount(per_user, minlength=top + 1) if per_user.size else np.zeros(1, np.int64)
    ax.bar(np.arange(counts.size), counts, color="#4C72B0")
    ax.set_xticks(np.arange(counts.size))
    ax.set_xlabel("phrases kept per user")
    ax.set_ylabel("users")
    ax.set_title(f"phrases per user ({report.users_with_phrases} of {report.n_users} users have one)")
    finish(fig, out / PLOT_PHRASES)
    plt.close(fig)
    paths.append(out / PLOT_PHRASES)
    if len(report.clusters) and report.clustering is not None:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        frame = report.clusters
        colours = {"kept": "#55A868", "popularity cap": "#C44E52", "minimum size": "#8C8C8C"}
        x = np.arange(len(frame))
        for reason, colour in colours.items():
            on = (frame["reason"] == reason).to_numpy()
            if on.any():
                ax.bar(x[on], frame["n_users"].to_numpy()[on], color=colour, width=0.9,
                       label=f"{reason if reason == 'kept' else 'dropped: ' + reason} ({int(on.sum())})")
        cap = report.clustering.get("popularity_cap_users")
        if cap is not None:
            ax.axhline(cap, color="#C44E52", linestyle="--", linewidth=1, label=f"popularity cap ({cap:g} users)")
        ax.axhline(report.clustering["min_users"], color="0.4", linestyle=":", linewidth=1,
                   label=f"minimum size ({report.clustering['min_users']} users)")
        ax.set_xlabel("cluster (by users, descending)")
        ax.set_ylabel("users holding the cluster")
        ax.set_title(f"kappa={report.clustering['kappa']}: {report.clustering['interests']} interests kept")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        finish(fig, out / PLOT_CLUSTERS)
        plt.close(fig)
        paths.append(out / PLOT_CLUSTERS)
    if report.score is not None and report.score.rows:
        rows = report.score.rows
        labels = [f"{r.interests}\n{r.pool}\n({r.users} users)" for r in rows]
        x = np.arange(len(rows))
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, (metric, base, title) in zip(axes, (("auc", "popularity_auc", "AUC"),
                                                    ("recall", "popularity_recall", f"Recall@{report.score.k}"))):
            ax.bar(x - 0.2, [getattr(r, metric) for r in rows], width=0.4, color="#4C72B0", label="interests")
            ax.bar(x + 0.2, [getattr(r, base) for r in rows], width=0.4, color="#8C8C8C",
                   label="popularity (same users)")
            ax.set_xticks(x)
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_ylabel(f"mean per-user {title}")
            ax.set_title(f"validation {title}")
            if metric == "auc":
                ax.axhline(0.5, color="0.3", linestyle=":", linewidth=1, label="random (0.5)")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle("interest similarity vs popularity on each user's validation items", fontsize=10)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        finish(fig, out / PLOT_SCORE, layout=False)
        plt.close(fig)
        paths.append(out / PLOT_SCORE)
    return paths


def write_report(report: InterestReport, directory: Optional[PathLike] = None) -> Dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``directory`` (default: the report's run
    directory); returns name → path."""
    out = Path(directory) if directory is not None else report.directory
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_report(report, out)
    paths = {REPORT_JSON: out / REPORT_JSON, REPORT_MD: out / REPORT_MD, **{p.name: p for p in plots}}
    write_json_atomic(paths[REPORT_JSON], report.to_dict())
    write_text_atomic(paths[REPORT_MD], _markdown(report, [p.name for p in plots]))
    return paths


def _markdown(report: InterestReport, plots: List[str]) -> str:
    lines = [f"# Interest report: {report.directory.name}", "", *[f"- {line}" for line in report.lines()], ""]
    if report.score is not None:
        frame = report.score.frame()
        lines += ["## Predictive score (validation items vs the other unseen items; test never used)", "",
                  frame.to_markdown(index=False, floatfmt=".4f"), "",
                  f"{report.score.users_with_valid} users have a validation item with text; "
                  f"{report.score.items_without_text} items have no text and are not ranked; items are scored "
                  f"by their {report.score.item_text.replace('+', ' and ')} text.", ""]
    if len(report.clusters):
        lines += ["## Clusters", "", report.clusters.head(30).to_markdown(index=False), ""]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def report_and_write(dataset: Any, directory: PathLike, encoder: Optional[Encoder] = None,
                     **kwargs: Any) -> Tuple[InterestReport, Dict[str, Path]]:
    """:func:`interest_report` then :func:`write_report` into the same directory."""
    report = interest_report(dataset, directory, encoder, **kwargs)
    return report, write_report(report)
