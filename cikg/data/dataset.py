"""The :class:`Dataset`: users, items, KG triples, user interests and their splits, as index tensors."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from ..errors import DatasetError

SPLITS = ("train", "valid", "test")


def _empty_pairs(rows: int = 2) -> torch.Tensor:
    return torch.empty((rows, 0), dtype=torch.long)


def pairs_to_csr(pairs: torch.Tensor, n_rows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compress ``pairs`` ``[2, n]`` (row, col), already sorted by row, into ``(indptr, indices)``.

    ``indptr`` has shape ``[n_rows + 1]``; row ``r`` owns ``indices[indptr[r]:indptr[r + 1]]``.
    """
    counts = torch.bincount(pairs[0], minlength=n_rows)
    indptr = torch.zeros(n_rows + 1, dtype=torch.long)
    torch.cumsum(counts, dim=0, out=indptr[1:])
    return indptr, pairs[1].clone()


@dataclass(eq=False)
class Dataset:
    """A recommendation dataset with an optional item knowledge graph and user interests.

    Ids are remapped to dense ranges starting at 0. Item ``i`` is KG entity ``i`` (items come first among
    the entities, as in the KGAT format), so ``n_entities >= n_items``; without a KG ``n_entities ==
    n_items``. Interest ids are dense (``0 .. n_interests - 1``); their ids in the source file are kept in
    :attr:`interest_ids`.

    Attributes:
        train, valid, test: ``LongTensor [2, n]`` of (user, item) pairs, sorted by user with the file
            order kept inside each user (so ``history(u, last=30)`` is the user's last 30 items).
        kg: ``LongTensor [3, n_triples]`` of (head, relation, tail) entity ids.
        user_interest: ``LongTensor [2, n]`` of (user, dense interest id).
        user_ids, item_ids, entity_ids: original ids indexed by remapped id.
        relation_names: one identifier-safe short name per relation (``author``, ``genre``...).
        relation_ids: original relation ids (URIs) indexed by remapped id.
        item_text: a human title per item, ``None`` where unknown.
        entity_text: a human name per entity, ``None`` where unknown.
        interest_labels: a phrase per dense interest, when known.
        meta: provenance: source path, split method and seed, warnings raised while loading.
    """

    name: str
    n_users: int
    n_items: int
    train: torch.Tensor
    test: torch.Tensor
    valid: torch.Tensor = field(default_factory=_empty_pairs)
    n_entities: int = -1
    n_relations: int = 0
    kg: torch.Tensor = field(default_factory=lambda: _empty_pairs(3))
    n_interests: int = 0
    user_interest: torch.Tensor = field(default_factory=_empty_pairs)
    user_ids: List[str] = field(default_factory=list)
    item_ids: List[str] = field(default_factory=list)
    entity_ids: List[str] = field(default_factory=list)
    relation_ids: List[str] = field(default_factory=list)
    relation_names: List[str] = field(default_factory=list)
    interest_ids: List[int] = field(default_factory=list)
    interest_labels: Optional[List[str]] = None
    item_text: List[Optional[str]] = field(default_factory=list)
    entity_text: List[Optional[str]] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)
    _csr_cache: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.n_entities < 0:
            self.n_entities = self.n_items
        if not self.user_ids:
            self.user_ids = [str(u) for u in range(self.n_users)]
        if not self.item_ids:
            self.item_ids = [str(i) for i in range(self.n_items)]
        if not self.entity_ids:
            self.entity_ids = list(self.item_ids) + [str(e) for e in range(self.n_items, self.n_entities)]
        if not self.item_text:
            self.item_text = [None] * self.n_items
        if not self.entity_text:
            self.entity_text = list(self.item_text) + [None] * (self.n_entities - self.n_items)
        if not self.relation_ids:
            self.relation_ids = [str(r) for r in range(self.n_relations)]
        if not self.relation_names:
            self.relation_names = [f"rel_{r}" for r in range(self.n_relations)]
        if not self.interest_ids:
            self.interest_ids = list(range(self.n_interests))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check shapes and id ranges; raise :class:`DatasetError` naming the offending field."""
        for split in SPLITS:
            pairs = getattr(self, split)
            self._check_pairs(split, pairs, self.n_users, self.n_items, "item")
        self._check_pairs("user_interest", self.user_interest, self.n_users, self.n_interests, "interest")
        if self.kg.dim() != 2 or self.kg.size(0) != 3:
            raise DatasetError(f"{self.name}: kg must have shape [3, n], got {tuple(self.kg.shape)}")
        if self.kg.numel():
            if int(self.kg[[0, 2]].min()) < 0 or int(self.kg[[0, 2]].max()) >= self.n_entities:
                raise DatasetError(f"{self.name}: kg entity id outside 0..{self.n_entities - 1}")
            if int(self.kg[1].min()) < 0 or int(self.kg[1].max()) >= self.n_relations:
                raise DatasetError(f"{self.name}: kg relation id outside 0..{self.n_relations - 1}")
        if self.n_entities < self.n_items:
            raise DatasetError(f"{self.name}: n_entities ({self.n_entities}) < n_items ({self.n_items})")
        expected = {
            "user_ids": self.n_users, "item_ids": self.n_items, "entity_ids": self.n_entities,
            "relation_names": self.n_relations, "relation_ids": self.n_relations,
            "interest_ids": self.n_interests, "item_text": self.n_items, "entity_text": self.n_entities,
        }
        for name, n in expected.items():
            if len(getattr(self, name)) != n:
                raise DatasetError(f"{self.name}: {name} has {len(getattr(self, name))} entries, expected {n}")
        if self.interest_labels is not None and len(self.interest_labels) != self.n_interests:
            raise DatasetError(f"{self.name}: interest_labels has {len(self.interest_labels)} entries, "
                               f"expected {self.n_interests}")

    def _check_pairs(self, split: str, pairs: torch.Tensor, n_rows: int, n_cols: int, what: str) -> None:
        if pairs.dtype != torch.long or pairs.dim() != 2 or pairs.size(0) != 2:
            raise DatasetError(f"{self.name}: {split} must be a LongTensor [2, n], got "
                               f"{pairs.dtype} {tuple(pairs.shape)}")
        if pairs.numel() == 0:
            return
        if int(pairs[0].min()) < 0 or int(pairs[0].max()) >= n_rows:
            raise DatasetError(f"{self.name}: {split} has a user id outside 0..{n_rows - 1}")
        if int(pairs[1].min()) < 0 or int(pairs[1].max()) >= n_cols:
            raise DatasetError(f"{self.name}: {split} has an {what} id outside 0..{n_cols - 1}")
        if bool((pairs[0, 1:] < pairs[0, :-1]).any()):
            raise DatasetError(f"{self.name}: {split} pairs must be sorted by user")

    # ------------------------------------------------------------------ views
    @property
    def has_kg(self) -> bool:
        return self.kg.size(1) > 0

    @property
    def has_interests(self) -> bool:
        return self.user_interest.size(1) > 0

    @property
    def n_kg_entities(self) -> int:
        """Entities that are not items (the ``entity`` node type of the CIKG)."""
        return self.n_entities - self.n_items

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def csr(self, split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
        """``(indptr [n_users + 1], indices [nnz])`` of a split's items per user (cached)."""
        if split not in self._csr_cache:
            self._csr_cache[split] = pairs_to_csr(self.split(split), self.n_users)
        return self._csr_cache[split]

    def history(self, user: int, split: str = "train", last: Optional[int] = None) -> List[int]:
        """Item ids of ``user`` in ``split`` in file order; ``last=k`` keeps the last ``k``."""
        if not 0 <= user < self.n_users:
            raise DatasetError(f"{self.name}: unknown user {user} (users are 0..{self.n_users - 1})")
        indptr, indices = self.csr(split)
        start, end = int(indptr[user]), int(indptr[user + 1])
        if last is not None:
            start = max(start, end - last)
        return indices[start:end].tolist()

    def degrees(self, split: str = "train") -> torch.Tensor:
        """Interactions per user in ``split``: ``LongTensor [n_users]``."""
        return torch.bincount(self.split(split)[0], minlength=self.n_users)

    def with_interests(self, user_interest: torch.Tensor, interest_ids: Sequence[int],
                       labels: Optional[Sequence[str]] = None, source: str = "") -> "Dataset":
        """A copy of this dataset whose user interests are replaced.

        Args:
            user_interest: ``[2, n]`` (user, dense interest id) edges.
            interest_ids: original id of each dense interest (its id in ``user_interest_clustered.txt``).
            labels: a phrase per interest, if known.
            source: provenance recorded in ``meta['interests_source']``.
        """
        ui = torch.as_tensor(user_interest, dtype=torch.long).reshape(2, -1)
        order = torch.argsort(ui[0] * max(len(interest_ids), 1) + ui[1])
        meta = dict(self.meta, interests_source=source or self.meta.get("interests_source", ""))
        return dataclasses.replace(
            self, user_interest=ui[:, order].contiguous(), n_interests=len(interest_ids),
            interest_ids=[int(i) for i in interest_ids],
            interest_labels=None if labels is None else [str(x) for x in labels], meta=meta, _csr_cache={})

    # ------------------------------------------------------------------ reporting
    def stats(self) -> pd.DataFrame:
        """Counts, density, interactions per user quantiles, KG and interest coverage (one row each)."""
        deg = self.degrees("train").double()
        q = torch.quantile(deg, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.double)).tolist()
        n_train = self.train.size(1)
        train_items = torch.zeros(self.n_items, dtype=torch.bool)
        train_items[self.train[1]] = True
        test_only = torch.zeros(self.n_items, dtype=torch.bool)
        test_only[self.test[1]] = True
        test_only &= ~train_items
        items_in_kg = torch.zeros(self.n_entities, dtype=torch.bool)
        if self.has_kg:
            items_in_kg[self.kg[0]] = True
            items_in_kg[self.kg[2]] = True
        users_with_interest = torch.unique(self.user_interest[0]).numel() if self.has_interests else 0
        rows = [
            ("users", self.n_users), ("items", self.n_items),
            ("entities (non-item)", self.n_kg_entities), ("relations", self.n_relations),
            ("interests", self.n_interests),
            ("train interactions", n_train), ("valid interactions", self.valid.size(1)),
            ("test interactions", self.test.size(1)),
            ("density", n_train / max(self.n_users * self.n_items, 1)),
            ("train per user min", q[0]), ("train per user p25", q[1]), ("train per user median", q[2]),
            ("train per user p75", q[3]), ("train per user max", q[4]),
            ("users without train items", int((deg == 0).sum())),
            ("users without test items", int((self.degrees("test") == 0).sum())),
            ("items only in test", int(test_only.sum())),
            ("KG", "present" if self.has_kg else "absent"),
            ("KG triples", self.kg.size(1)),
            ("KG item coverage", float(items_in_kg[: self.n_items].float().mean()) if self.n_items else 0.0),
            ("user-interest edges", self.user_interest.size(1)),
            ("interest user coverage", users_with_interest / max(self.n_users, 1)),
        ]
        return pd.DataFrame(rows, columns=["statistic", "value"]).set_index("statistic")

    def __repr__(self) -> str:
        kg = f"kg={self.kg.size(1)} triples/{self.n_relations} relations" if self.has_kg else "kg=absent"
        return (f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
                f"entities={self.n_kg_entities}, interests={self.n_interests}, train={self.train.size(1)}, "
                f"valid={self.valid.size(1)}, test={self.test.size(1)}, {kg}, "
                f"user_interest={self.user_interest.size(1)})")

    def equals(self, other: "Dataset") -> bool:
        """Whether two datasets hold identical tensors, counts and id maps (names and meta aside)."""
        tensors = ("train", "valid", "test", "kg", "user_interest")
        scalars = ("n_users", "n_items", "n_entities", "n_relations", "n_interests")
        lists = ("user_ids", "item_ids", "entity_ids", "relation_ids", "relation_names", "interest_ids",
                 "item_text")
        return (all(torch.equal(getattr(self, t), getattr(other, t)) for t in tensors)
                and all(getattr(self, s) == getattr(other, s) for s in scalars)
                and all(list(getattr(self, x)) == list(getattr(other, x)) for x in lists))


def numpy_pairs(pairs: torch.Tensor) -> np.ndarray:
    """``[2, n]`` tensor → ``[n, 2]`` int64 array (for writers and pandas)."""
    return pairs.t().contiguous().numpy()
