"""Convert between :class:`Dataset` and pandas frames (a user's own data in, inspection out)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from ..errors import DatasetError
from .dataset import SPLITS, Dataset
from .io import relation_short_names
from .split import RandomSplit, TemporalSplit, carve_validation, chronological_order
from .times import parse_times

_FRAME = "interactions frame"


def to_pandas(dataset: Dataset) -> Dict[str, pd.DataFrame]:
    """Frames with original ids: ``interactions`` (user, item, split), ``kg`` (head, relation, tail),
    ``entities`` (entity, text: the non-item KG entities), ``user_interest`` (user, interest), ``items``
    (item, text), ``users`` (user), ``interests`` (interest).

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
        frames["entities"] = pd.DataFrame({"entity": entity_ids[dataset.n_items:],
                                           "text": dataset.entity_text[dataset.n_items:]})
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


Splitter = Union[RandomSplit, TemporalSplit]


def _split_pairs(interactions: pd.DataFrame, u: np.ndarray, i: np.ndarray, n_users: int, time_col: Optional[str],
                 splitter: Optional["Splitter"], test_fraction: float, valid_fraction: float,
                 seed: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """The three splits of the (user, item) codes ``u``, ``i`` (one per row), and their ``meta["split"]``."""
    time_meta: Dict[str, object] = {}
    if time_col:
        times, kind = parse_times(interactions[time_col], time_col)
        order = chronological_order(u, times)
        time_meta = {"time_col": time_col, "time_type": kind}
    else:
        order = np.argsort(u, kind="stable")
    split_col = interactions["split"].to_numpy()[order] if "split" in interactions.columns else None
    u, i = u[order], i[order]
    keys = pd.DataFrame({"u": u, "i": i, **({"s": split_col} if split_col is not None else {})})
    first = ~keys.duplicated(keep="first").to_numpy()
    u, i = u[first], i[first]
    if split_col is None:
        if splitter is None:
            splitter = (TemporalSplit(test_fraction, valid_fraction) if time_col
                        else RandomSplit(test_fraction, valid_fraction, seed))
        if isinstance(splitter, TemporalSplit) and not time_col:
            raise DatasetError(f"{_FRAME}: a temporal split needs time_col (the column of interaction times)")
        return splitter.carve(torch.from_numpy(np.stack([u, i])), n_users), {**splitter.describe(), **time_meta}
    if splitter is not None:
        raise DatasetError(f"{_FRAME}: has a 'split' column, so the given splitter {splitter!r} would be ignored")
    split_col = split_col[first]
    bad = ~pd.Series(split_col).isin(SPLITS).to_numpy()
    if bad.any():
        raise DatasetError(f"{_FRAME}: row {int(order[first][np.argmax(bad)])} has split "
                           f"{split_col[bad][0]!r}; expected one of {SPLITS}")
    pairs = {s: torch.from_numpy(np.stack([u[split_col == s], i[split_col == s]])) for s in SPLITS}
    if pairs["valid"].size(1) == 0 and valid_fraction > 0:
        pairs["train"], pairs["valid"] = carve_validation(pairs["train"], n_users, valid_fraction, seed)
        return pairs, {"method": "given train/test; valid carved", "fraction": valid_fraction, "seed": seed,
                       **time_meta}
    return pairs, {"method": "given", **time_meta}


def from_pandas(interactions: pd.DataFrame, *, kg: Optional[pd.DataFrame] = None,
                user_interest: Optional[pd.DataFrame] = None, items: Optional[pd.DataFrame] = None,
                users: Optional[pd.DataFrame] = None, interests: Optional[pd.DataFrame] = None,
                entities: Optional[pd.DataFrame] = None, name: str = "custom", time_col: Optional[str] = None,
                splitter: Optional[Splitter] = None, test_fraction: float = 0.2, valid_fraction: float = 1 / 8,
                seed: int = 2024) -> Dataset:
    """Build a :class:`Dataset` from pandas frames with original ids.

    Args:
        interactions: columns ``user``, ``item``, optionally ``split`` (``train``/``valid``/``test``) and a
            time column. Without ``split``, test and valid are carved per user by ``splitter``.
        time_col: a column of numbers or ISO dates (:func:`cikg.data.times.parse_times`). Each user's items
            are kept in time order (ties in row order), so ``history(u, last=k)`` is the latest ``k``, and
            the default splitter becomes ``TemporalSplit(test_fraction, valid_fraction)``: test holds each
            user's latest items, valid the latest of the rest.
        splitter: :class:`RandomSplit` (the default without ``time_col``:
            ``RandomSplit(test_fraction, valid_fraction, seed)``) or :class:`TemporalSplit` (needs
            ``time_col``). It is recorded in ``meta["split"]``.
        kg: columns ``head``, ``relation``, ``tail``; items are matched by id, then ``entities`` by id;
            other heads/tails become entities named by their id (``"Stephen King"``): the text prompts and
            ``kg-profile`` show.
        user_interest: columns ``user``, ``interest`` (a label or id per interest).
        items: column ``item`` (the id order) and optionally ``text`` (titles).
        users: column ``user`` (the id order, to keep users without interactions).
        interests: column ``interest`` (the id order of interests).
        entities: column ``entity`` (the id order of the non-item entities) and optionally ``text`` (names).
        test_fraction, valid_fraction, seed: the sizes (and seed) of the default splitter; ``valid_fraction``
            and ``seed`` also carve valid out of a given ``split`` column that has no ``valid`` rows.

    Duplicate (user, item) rows keep the first one (the earliest, with ``time_col``).
    """
    for column in ("user", "item") + ((time_col,) if time_col else ()):
        if column not in interactions.columns:
            raise DatasetError(f"{_FRAME}: missing column {column!r} (columns: {list(interactions.columns)})")
    if interactions.empty:
        raise DatasetError(f"{_FRAME}: no rows")
    _no_missing(interactions, ["user", "item"], _FRAME)
    u, user_ids = _factorize(interactions["user"], None if users is None else users["user"].tolist())
    i, item_ids = _factorize(interactions["item"], None if items is None else items["item"].tolist())
    n_users, n_items = len(user_ids), len(item_ids)
    pairs, split_meta = _split_pairs(interactions, u, i, n_users, time_col, splitter, test_fraction, valid_fraction,
                                     seed)
    meta: Dict[str, object] = {"source": "pandas", "split": split_meta}
    item_text = [None] * n_items
    if items is not None and "text" in items.columns:
        item_text = [None if (t is None or (isinstance(t, float) and np.isnan(t))) else str(t)
                     for t in items["text"].tolist()]

    known = {k: idx for idx, k in enumerate(item_ids)}
    names: Dict[str, Optional[str]] = {}  # text of the entities frame's entities (None: unknown)
    if entities is not None:
        _no_missing(entities, ["entity"], "entities frame")
        texts = entities["text"].tolist() if "text" in entities.columns else [None] * len(entities)
        for entity, text in zip(entities["entity"].astype(str).tolist(), texts):
            known.setdefault(entity, len(known))
            names[entity] = None if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    kg_tensor, relation_ids = torch.empty((3, 0), dtype=torch.long), []
    if kg is not None and len(kg):
        for column in ("head", "relation", "tail"):
            if column not in kg.columns:
                raise DatasetError(f"kg frame: missing column {column!r}")
        _no_missing(kg, ["head", "relation", "tail"], "kg frame")
        for entity in pd.unique(pd.concat([kg["head"], kg["tail"]]).astype(str)):
            known.setdefault(entity, len(known))
        rel_codes, relation_ids = _factorize(kg["relation"])
        heads = kg["head"].astype(str).map(known).to_numpy(np.int64)
        tails = kg["tail"].astype(str).map(known).to_numpy(np.int64)
        kg_tensor = torch.from_numpy(np.stack([heads, rel_codes, tails]))
    entity_ids = list(known)
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
        entity_text=list(item_text) + [names.get(e, e) for e in entity_ids[n_items:]], meta=meta)
