"""Convert between :class:`Dataset` and pandas frames (a user's own data in, inspection out)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import DatasetError
from .dataset import SPLITS, Dataset
from .io import relation_short_names
from .split import carve_validation

_FRAME = "interactions frame"


def to_pandas(dataset: Dataset) -> Dict[str, pd.DataFrame]:
    """Frames with original ids: ``interactions`` (user, item, split), ``kg`` (head, relation, tail),
    ``user_interest`` (user, interest), ``items`` (item, text), ``users`` (user), ``interests`` (interest).

    ``from_pandas(**to_pandas(ds))`` rebuilds ``ds`` (same tensors and id maps).
    """
    user_ids = np.asarray(dataset.user_ids, dtype=object)
    item_ids = np.asarray(dataset.item_ids, dtype=object)
    parts = []
    for split in SPLITS:
        pairs = dataset.split(split).numpy()
        parts.append(pd.DataFrame({"user": user_ids[pairs[0]], "item": item_ids[pairs[1]], "split": split}))
    frames = {"interactions": pd.concat(parts, ignore_index=True),
              "items": pd.DataFrame({"item": item_ids, "text": dataset.item_text}),
              "users": pd.DataFrame({"user": user_ids})}
    if dataset.has_kg:
        # items are named by their item id, other entities by their entity id
        entity_ids = np.asarray(list(dataset.item_ids) + dataset.entity_ids[dataset.n_items:], dtype=object)
        relations = np.asarray(dataset.relation_ids, dtype=object)
        kg = dataset.kg.numpy()
        frames["kg"] = pd.DataFrame({"head": entity_ids[kg[0]], "relation": relations[kg[1]],
                                     "tail": entity_ids[kg[2]]})
    if dataset.has_interests:
        ui = dataset.user_interest.numpy()
        labels = dataset.interest_labels or [str(i) for i in dataset.interest_ids]
        frames["user_interest"] = pd.DataFrame({"user": user_ids[ui[0]],
                                                "interest": np.asarray(labels, dtype=object)[ui[1]]})
        frames["interests"] = pd.DataFrame({"interest": labels})
    return frames


def _factorize(values: pd.Series, known: Optional[Sequence] = None) -> tuple[np.ndarray, list]:
    """Dense ids for ``values``: in the order of ``known`` when given, else order of first appearance."""
    if known is None:
        codes, uniques = pd.factorize(values, sort=False)
        return codes.astype(np.int64), [str(u) for u in uniques]
    index = pd.Index([str(k) for k in known])
    if not index.is_unique:
        raise DatasetError(f"{_FRAME}: the given id list has duplicates")
    codes = index.get_indexer(values.astype(str))
    if (codes < 0).any():
        raise DatasetError(f"{_FRAME}: id {values.iloc[int(np.argmax(codes < 0))]!r} is not in the given id list")
    return codes.astype(np.int64), list(index)


def _no_missing(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Missing ids (NaN/None) would become id -1 or the string "nan": refuse them, naming the row."""
    missing = frame[list(columns)].isna()
    if missing.any(axis=None):
        row = int(np.argmax(missing.any(axis=1).to_numpy()))
        column = next(c for c in columns if missing[c].iloc[row])
        raise DatasetError(f"{what}: row {row} has no {column} (missing ids are not allowed)")


def _sorted_pairs(users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    order = np.argsort(users, kind="stable")
    return torch.from_numpy(np.stack([users[order], items[order]]))


def from_pandas(interactions: pd.DataFrame, *, kg: Optional[pd.DataFrame] = None,
                user_interest: Optional[pd.DataFrame] = None, items: Optional[pd.DataFrame] = None,
                users: Optional[pd.DataFrame] = None, interests: Optional[pd.DataFrame] = None, name: str = "custom", test_fraction: float = 0.2,
                valid_fraction: float = 1 / 8, seed: int = 2024) -> Dataset:
    """Build a :class:`Dataset` from pandas frames with original ids.

    Args:
        interactions: columns ``user``, ``item`` and optionally ``split`` (``train``/``valid``/``test``).
            Without ``split``, a seeded ``test_fraction`` of each user's items becomes test (in row order,
            so sort by time first for a temporal split), then ``valid_fraction`` of train becomes valid.
        kg: columns ``head``, ``relation``, ``tail``; items are matched by id, other heads/tails become
            entities, named by their id (``"Stephen King"``): the text prompts and ``kg-profile`` show.
        user_interest: columns ``user``, ``interest`` (a label or id per interest).
        items: column ``item`` (the id order) and optionally ``text`` (titles).
        users: column ``user`` (the id order, to keep users without interactions).
        interests: column ``interest`` (the id order of interests).
    """
    for column in ("user", "item"):
        if column not in interactions.columns:
            raise DatasetError(f"{_FRAME}: missing column {column!r} (columns: {list(interactions.columns)})")
    if interactions.empty:
        raise DatasetError(f"{_FRAME}: no rows")
    _no_missing(interactions, ["user", "item"], _FRAME)
    frame = interactions.drop_duplicates(subset=["user", "item"] + (["split"] if "split" in interactions else []))
    u, user_ids = _factorize(frame["user"], None if users is None else users["user"].tolist())
    i, item_ids = _factorize(frame["item"], None if items is None else items["item"].tolist())
    n_users, n_items = len(user_ids), len(item_ids)
    meta: Dict[str, object] = {"source": "pandas"}
    if "split" in frame.columns:
        bad = ~frame["split"].isin(SPLITS)
        if bad.any():
            raise DatasetError(f"{_FRAME}: row {int(np.argmax(bad.to_numpy()))} has split "
                               f"{frame['split'][bad].iloc[0]!r}; expected one of {SPLITS}")
        split_col = frame["split"].to_numpy()
        pairs = {s: _sorted_pairs(u[split_col == s], i[split_col == s]) for s in SPLITS}
        meta["split"] = {"method": "given"}
        if pairs["valid"].size(1) == 0 and valid_fraction > 0:
            pairs["train"], pairs["valid"] = carve_validation(pairs["train"], n_users, valid_fraction, seed)
            meta["split"] = {"method": "given train/test; valid carved", "fraction": valid_fraction, "seed": seed}
    else:
        everything = _sorted_pairs(u, i)
        rest, test = carve_validation(everything, n_users, test_fraction, seed)
        train, valid = carve_validation(rest, n_users, valid_fraction, seed + 1)
        pairs = {"train": train, "valid": valid, "test": test}
        meta["split"] = {"method": "carved per user", "test_fraction": test_fraction,
                         "valid_fraction": valid_fraction, "seed": seed}
    item_text = [None] * n_items
    if items is not None and "text" in items.columns:
        item_text = [None if (t is None or (isinstance(t, float) and np.isnan(t))) else str(t)
                     for t in items["text"].tolist()]

    kg_tensor, entity_ids, relation_ids = torch.empty((3, 0), dtype=torch.long), list(item_ids), []
    if kg is not None and len(kg):
        for column in ("head", "relation", "tail"):
            if column not in kg.columns:
                raise DatasetError(f"kg frame: missing column {column!r}")
        _no_missing(kg, ["head", "relation", "tail"], "kg frame")
        known = {k: idx for idx, k in enumerate(item_ids)}
        others = pd.unique(pd.concat([kg["head"], kg["tail"]]).astype(str))
        for entity in others:
            if entity not in known:
                known[entity] = len(known)
        entity_ids = list(known)
        rel_codes, relation_ids = _factorize(kg["relation"])
        heads = kg["head"].astype(str).map(known).to_numpy(np.int64)
        tails = kg["tail"].astype(str).map(known).to_numpy(np.int64)
        kg_tensor = torch.from_numpy(np.stack([heads, rel_codes, tails]))
    interest_tensor, interest_labels = torch.empty((2, 0), dtype=torch.long), None
    if user_interest is not None and len(user_interest):
        _no_missing(user_interest, [c for c in ("user", "interest") if c in user_interest], "user_interest frame")
        ui_users, _ = _factorize(user_interest["user"], user_ids)
        codes, interest_labels = _factorize(user_interest["interest"],
                                            None if interests is None else interests["interest"].tolist())
        interest_tensor = _sorted_pairs(ui_users, codes)
    n_entities = len(entity_ids)
    return Dataset(
        name=name, n_users=n_users, n_items=n_items, train=pairs["train"], valid=pairs["valid"],
        test=pairs["test"], n_entities=n_entities, n_relations=len(relation_ids), kg=kg_tensor,
        n_interests=0 if interest_labels is None else len(interest_labels), user_interest=interest_tensor,
        user_ids=user_ids, item_ids=item_ids, entity_ids=entity_ids, relation_ids=relation_ids,
        relation_names=relation_short_names(relation_ids),
        interest_ids=[] if interest_labels is None else list(range(len(interest_labels))),
        interest_labels=interest_labels, item_text=item_text,
        entity_text=list(item_text) + [str(e) for e in entity_ids[n_items:]], meta=meta)
