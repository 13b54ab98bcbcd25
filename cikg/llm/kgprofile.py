"""The ``kg-profile`` backend: interests derived from the item KG and titles of a user's history.

This is **not an LLM**: it is an offline fallback that needs no server. For each user it takes the last
``history_len`` train items and ranks

* the non-item KG entities linked to them (either direction, any relation), named from
  ``dataset.entity_text`` or the DBpedia URI in ``dataset.entity_ids`` turned into words, and
* the content words of their titles,

by TF-IDF: ``score(u, e) = count(u, e) * log((1 + n_items) / (1 + df(e)))`` where ``count`` is how many of
the user's items carry ``e`` and ``df`` how many items carry it overall (so "English language", shared by
every book, does not drown out "Science fiction"). Entities come first, title words fill up to
``max_phrases``. Everything is sparse tensor algebra over all users at once: with ``H`` the
``[n_users, n_items]`` history indicator and ``A`` the ``[n_items, n_features]`` item-feature indicator,
the counts are ``H @ A``; only the final string formatting loops over users.

A request may say what it is about through ``Request.extra`` (used by :mod:`cikg.augment`): ``("node",
"item")`` answers with the facts of the items in ``("members", (i, ...))`` (their own entities and title
words), ``("node", "user")`` with the profile of the summed histories of the users in ``members`` (a group
of users); a request without ``extra`` is about its own ``user``, as above. The prompt text is never read.
"""
from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch

from .. import checks
from ..errors import ConfigError
from .base import NOT_AN_LLM, Completion, RunSummary
from .cache import OK
from .prompts import Request

log = logging.getLogger(__name__)

SOURCE = f"kg-profile ({NOT_AN_LLM})"

_STOPWORDS = frozenset("""
a an and the of in on at to for from by with without into over under about after before between through
is are was were be been my your his her its our their this that these those who what when where why how
not no yes or but if then than so as all any some one two three new old vol volume edition book books
novel novels series part complete collection guide story stories tales tale life day days
und der die das des von le la les du de et il el los las del y
""".split())
_OPAQUE = re.compile(r"^[mg]\.[0-9a-z_]+$|^(Wikicat|Yago)|\d{6,}$|^List of |^\S+[a-z][A-Z]\S*$")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+")


@dataclass(frozen=True)
class KGProfileConfig:
    """Settings of :class:`KGProfileBackend`."""

    history_len: int = 30
    max_phrases: int = 5
    use_titles: bool = True
    min_word_chars: int = 3

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("history_len", "min_word_chars"), checks.boolean("use_titles"),
        checks.Constraint(("max_phrases",), "an integer in 1..5", lambda v: checks.is_integer(v) and 1 <= v <= 5))

    def __post_init__(self) -> None:
        checks.check(self)


def entity_name(text: Optional[str], original_id: str) -> Optional[str]:
    """A readable name: the entity text, else the DBpedia URI's last segment as words; ``None`` when the
    entity has only an opaque id (a number, a Freebase ``m.0abc``)."""
    from urllib.parse import unquote

    name = text
    if not name and "://" in original_id:
        name = unquote(original_id.rstrip("/").rsplit("/", 1)[-1]).replace("_", " ")
    if not name:
        return None
    name = re.sub(r"^Category:", "", name.strip()).strip()
    name = re.sub(r"\s*\([^)]*\)$", "", name)  # "Dune (novel)" -> "Dune"
    if not re.search(r"[A-Za-z]{2}", name) or _OPAQUE.search(name):
        return None
    return " ".join(name.split())


def history_matrix(dataset: Any, users: torch.Tensor, history_len: int) -> torch.Tensor:
    """Sparse ``[len(users), n_items]`` indicator of each user's last ``history_len`` train items."""
    indptr, indices = dataset.csr("train")
    ends = indptr[users + 1]
    take = torch.clamp(ends - indptr[users], max=history_len)
    rows = torch.repeat_interleave(torch.arange(users.numel()), take)
    offsets = torch.arange(int(take.sum())) - torch.repeat_interleave(torch.cumsum(take, 0) - take, take)
    cols = indices[torch.repeat_interleave(ends - take, take) + offsets]
    return _indicator(rows, cols, (users.numel(), dataset.n_items))


def _indicator(rows: torch.Tensor, cols: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """Coalesced sparse ``shape`` matrix with 1 at each distinct ``(row, col)`` (duplicates count once)."""
    linear = torch.unique(rows * shape[1] + cols)  # sorted, so the result is already coalesced
    indices = torch.stack([linear // shape[1], linear % shape[1]])
    return torch.sparse_coo_tensor(indices, torch.ones(linear.numel()), shape, is_coalesced=True,
                                   check_invariants=False)


def top_k_per_row(rows: torch.Tensor, cols: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest ``scores`` of each row, for entries given as ``(rows, cols, scores)``.

    One sort on the key ``row * span - score`` (rows ascending, scores descending inside a row), then the rank
    inside a row is the position minus the row's first position.
    """
    if rows.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    span = float(scores.max() - min(float(scores.min()), 0.0)) + 1.0
    order = torch.argsort(rows.double() * span - scores.double(), stable=True)
    sorted_rows = rows[order]
    first = torch.searchsorted(sorted_rows, sorted_rows, right=False)
    keep = (torch.arange(sorted_rows.numel()) - first) < k
    return order[keep]


class KGProfileBackend:
    """Offline interests from the KG and titles (see module docstring); labelled "not an LLM" everywhere.

    Args:
        dataset: the :class:`cikg.data.Dataset` the requests were built from.
        config: a :class:`KGProfileConfig`.
    """

    not_an_llm = True
    name = "kg-profile"

    def __init__(self, dataset: Any, config: KGProfileConfig = KGProfileConfig()):
        self.dataset = dataset
        self.config = config
        self._summary: Optional[RunSummary] = None
        self._features: Optional[Tuple[torch.Tensor, torch.Tensor, List[str], List[str]]] = None

    def __repr__(self) -> str:
        return f"KGProfileBackend({self.dataset.name!r}, {self.config}) [{NOT_AN_LLM}]"

    def summary(self) -> Optional[RunSummary]:
        return self._summary

    # ------------------------------------------------------------------ features
    def features(self) -> Tuple[torch.Tensor, torch.Tensor, List[str], List[str]]:
        """``(A, idf, names, kinds)``: item-feature indicator ``[n_items, n_features]``, its IDF, a name per
        feature and its kind (``entity:<relation>`` or ``title word``). Computed once."""
        if self._features is None:
            entity_rows, entity_cols, names, kinds = self._entity_features()
            word_rows, word_cols, words = self._word_features() if self.config.use_titles else (
                torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), [])
            n_features = len(names) + len(words)
            rows = torch.cat([entity_rows, word_rows])
            cols = torch.cat([entity_cols, word_cols + len(names)])
            matrix = _indicator(rows, cols, (self.dataset.n_items, n_features))
            df = torch.bincount(matrix.indices()[1], minlength=n_features).double()
            idf = torch.log((1.0 + self.dataset.n_items) / (1.0 + df))
            self._features = (matrix, idf, names + words, kinds + ["title word"] * len(words))
        return self._features

    def _entity_features(self) -> Tuple[torch.Tensor, torch.Tensor, List[str], List[str]]:
        ds = self.dataset
        if not ds.has_kg:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), [], []
        head, relation, tail = ds.kg
        n_items = ds.n_items
        forward = (head < n_items) & (tail >= n_items)
        backward = (tail < n_items) & (head >= n_items)
        items = torch.cat([head[forward], tail[backward]])
        entities = torch.cat([tail[forward], head[backward]])
        relations = torch.cat([relation[forward], relation[backward]])
        used = torch.unique(entities)
        # one name per used entity (a loop over entities, not edges); unnamed ones are dropped
        named: Dict[int, str] = {}
        for e in used.tolist():
            name = entity_name(ds.entity_text[e] if ds.entity_text else None, ds.entity_ids[e])
            if name is not None:
                named[e] = name
        # entities with the same name (a URI and its category) share one feature
        vocabulary = {name: i for i, name in enumerate(dict.fromkeys(named.values()))}
        feature_of = torch.full((ds.n_entities,), -1, dtype=torch.long)
        for e, name in named.items():
            feature_of[e] = vocabulary[name]
        feature = feature_of[entities]
        keep = feature >= 0
        # the most common relation of each feature names its kind
        rel_count = torch.zeros(len(vocabulary), max(ds.n_relations, 1), dtype=torch.long)
        rel_count.index_put_((feature[keep], relations[keep]), torch.ones(int(keep.sum()), dtype=torch.long),
                             accumulate=True)
        top_relation = rel_count.argmax(1).tolist()
        kinds = [f"entity:{ds.relation_names[r]}" for r in top_relation]
        return items[keep], feature[keep], list(vocabulary), kinds

    def _word_features(self) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
        vocabulary: Dict[str, int] = {}
        rows: List[int] = []
        cols: List[int] = []
        for item, title in enumerate(self.dataset.item_text):  # tokenising is string work, once per item
            if not title:
                continue
            # first-occurrence order, not set order: the column order breaks score ties, and a set's order
            # changes with PYTHONHASHSEED, so answers would differ between processes
            for word in dict.fromkeys(_WORD.findall(title.lower())):
                word = word.strip("'-")
                if len(word) < self.config.min_word_chars or word in _STOPWORDS:
                    continue
                rows.append(item)
                cols.append(vocabulary.setdefault(word, len(vocabulary)))
        return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long), list(vocabulary)

    # ------------------------------------------------------------------ profiles
    def profiles(self, users: Sequence[int]) -> List[List[Tuple[str, str, int]]]:
        """Per user, up to ``max_phrases`` ``(phrase, kind, count)``: entities first, then title words."""
        user_index = torch.as_tensor(list(users), dtype=torch.long)
        return self._profiles(history_matrix(self.dataset, user_index, self.config.history_len))

    def request_items(self, requests: Sequence[Request]) -> torch.Tensor:
        """Sparse ``[len(requests), n_items]`` item weights of what each request is about (see module docstring)."""
        pair_rows: List[int] = []
        pair_users: List[int] = []
        item_rows: List[int] = []
        item_cols: List[int] = []
        for row, request in enumerate(requests):  # one entry per prompt: reading its extra is per-request work
            extra = dict(request.extra)
            node, members = extra.get("node", "user"), extra.get("members", (request.user,))
            if node == "item":
                item_rows += [row] * len(members)
                item_cols += [int(m) for m in members]
            elif node == "user":
                pair_rows += [row] * len(members)
                pair_users += [int(m) for m in members]
            else:
                raise ConfigError(f"request {request.user_id}: node must be user or item, got {node!r}", key="node")
        shape = (len(requests), self.dataset.n_items)
        users = torch.tensor(pair_users, dtype=torch.long)
        history = history_matrix(self.dataset, users, self.config.history_len)  # [pairs, n_items]
        group = torch.sparse_coo_tensor(torch.stack([torch.tensor(pair_rows, dtype=torch.long),
                                                     torch.arange(users.numel())]),
                                        torch.ones(users.numel()), (len(requests), users.numel()),
                                        check_invariants=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            summed = torch.sparse.mm(group, history) if users.numel() else torch.sparse_coo_tensor(
                torch.empty((2, 0), dtype=torch.long), torch.empty(0), shape)
        items = _indicator(torch.tensor(item_rows, dtype=torch.long), torch.tensor(item_cols, dtype=torch.long),
                           shape)
        return (summed + items).coalesce()

    def _profiles(self, history: torch.Tensor) -> List[List[Tuple[str, str, int]]]:
        """Top phrases of each row of a sparse ``[rows, n_items]`` item-weight matrix."""
        matrix, idf, names, kinds = self.features()
        with warnings.catch_warnings():  # torch notes that sparse support is beta; the product is exact
            warnings.simplefilter("ignore", UserWarning)
            counts = torch.sparse.mm(history, matrix)
        if not counts.is_coalesced():
            counts = counts.coalesce()
        rows, cols = counts.indices()
        is_entity = torch.tensor([k.startswith("entity:") for k in kinds], dtype=torch.bool)
        # entities rank above every title word: add a constant larger than any word score
        scores = counts.values().double() * idf[cols] + torch.where(is_entity[cols], 1e4, 0.0).double()
        best = top_k_per_row(rows, cols, scores, self.config.max_phrases)
        top_rows, top_cols, top_counts = rows[best], cols[best], counts.values()[best]
        out: List[List[Tuple[str, str, int]]] = [[] for _ in range(history.size(0))]
        for r, c, n in zip(top_rows.tolist(), top_cols.tolist(), top_counts.tolist(), strict=True):
            out[r].append((names[c], kinds[c], int(n)))
        return out

    def complete_many(self, requests: Sequence[Request]) -> List[Completion]:
        started = time.perf_counter()
        if any(r.extra for r in requests):
            profiles = self._profiles(self.request_items(requests))
        else:
            profiles = self.profiles([r.user for r in requests])
        out = []
        for request, profile in zip(requests, profiles, strict=True):
            text = ", ".join(phrase for phrase, _, _ in profile)
            evidence = [{"phrase": p, "kind": k, "count": n} for p, k, n in profile]
            status = OK if text else "failed"
            out.append(Completion(request, status, text, None if text else "kg-profile: no named KG entity or "
                                  "title word in the history", source=SOURCE, cached=False,
                                  meta={"not_an_llm": True, "evidence": evidence}))
        self._summary = RunSummary.of(self.name, out, started, not_an_llm=True)
        log.info("kg-profile (%s): %d user profile(s) in %.2f s", NOT_AN_LLM, len(out), time.perf_counter() - started)
        return out
