"""An items table (id, title, attributes) → item text and KG triples, aligned with the interactions.

Attribute columns become KG triples ``item -[column]-> value``: a cell ``"Fantasy|Horror"`` with separator ``|``
gives two. The value entities are named ``column:value`` (``genre:Horror``), so a value never collides with an
item id or with the same word under another attribute; their text (what prompts and ``kg-profile`` show) is
the value itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import DatasetError


@dataclass
class ItemTable:
    """Items with text and attributes, as the frames :func:`cikg.data.from_pandas` takes.

    Attributes:
        items: ``item``, ``text`` (``None`` where unknown), in the table's order.
        kg: ``head`` (item id), ``relation`` (attribute column), ``tail`` (entity id ``column:value``).
        entities: ``entity``, ``text`` (the attribute value).
    """

    items: pd.DataFrame
    kg: pd.DataFrame
    entities: pd.DataFrame

    def __repr__(self) -> str:
        titled = int(self.items["text"].notna().sum())
        return (f"ItemTable(items={len(self.items)}, titled={titled}, triples={len(self.kg)}, "
                f"entities={len(self.entities)}, relations={self.kg['relation'].nunique()})")


@dataclass
class ItemCoverage:
    """How an item table and the interactions matched."""

    n_table: int
    unused: List[str] = field(default_factory=list)  # in the table, never interacted with
    missing: List[str] = field(default_factory=list)  # interacted with, not in the table
    kept_unused: bool = False

    def lines(self) -> List[str]:
        out = [f"items file: {self.n_table} items"]
        if self.unused:
            what = "kept (no interactions)" if self.kept_unused else "dropped (--keep-unused-items keeps them)"
            out.append(f"items file: {len(self.unused)} item(s) never occur in the interactions, {what}; "
                       f"e.g. {', '.join(self.unused[:3])}")
        if self.missing:
            out.append(f"items file: {len(self.missing)} interacted item(s) are not in it and have no text or "
                       f"attributes; e.g. {', '.join(self.missing[:3])}")
        return out

    def as_meta(self) -> dict:
        return {"items_in_file": self.n_table, "unused_items": len(self.unused), "kept_unused": self.kept_unused,
                "items_missing_from_file": len(self.missing)}


def item_table(frame: pd.DataFrame, item_col: str, title_col: Optional[str] = None,
               attr_cols: Sequence[str] = (), attr_sep: Optional[str] = "|", source: str = "items") -> ItemTable:
    """Build an :class:`ItemTable` from a frame of strings (one row per item; ids must be unique)."""
    wanted = [item_col] + ([title_col] if title_col else []) + list(attr_cols)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DatasetError(f"missing column(s) {missing}; found {list(frame.columns)}", source)
    ids = frame[item_col]
    empty = ids.isna() | ids.astype(str).str.strip().eq("")
    if empty.any():
        raise DatasetError(f"item row {int(np.argmax(empty.to_numpy()))} has no {item_col!r} id", source)
    ids = ids.astype(str).str.strip()
    dup = ids.duplicated()
    if dup.any():
        raise DatasetError(f"item id {ids[dup].iloc[0]!r} appears more than once in column {item_col!r}", source)
    text = None
    if title_col:
        cleaned = frame[title_col].astype("string").str.split().str.join(" ")  # one line, single spaces
        text = cleaned.where(cleaned.notna() & cleaned.ne(""), None).astype(object)
    items = pd.DataFrame({"item": ids.to_numpy(), "text": None if text is None else text.to_numpy()})
    triples = [_attribute_triples(ids, frame[column], column, attr_sep) for column in attr_cols]
    kg = (pd.concat(triples, ignore_index=True) if triples
          else pd.DataFrame({"head": [], "relation": [], "tail": [], "value": []}, dtype=object))
    kg = kg.drop_duplicates(subset=["head", "relation", "tail"], ignore_index=True)
    entities = (kg.drop_duplicates(subset="tail")[["tail", "value"]]
                .rename(columns={"tail": "entity", "value": "text"}).reset_index(drop=True))
    return ItemTable(items, kg[["head", "relation", "tail"]], entities)


def _attribute_triples(ids: pd.Series, cells: pd.Series, column: str, sep: Optional[str]) -> pd.DataFrame:
    values = cells.astype("string")
    exploded = (values.str.split(sep, regex=False) if sep else values.map(lambda v: [v], na_action="ignore"))
    frame = pd.DataFrame({"head": ids.to_numpy(), "value": exploded.to_numpy()}).explode("value")
    frame["value"] = frame["value"].astype("string").str.split().str.join(" ")
    frame = frame[frame["value"].notna() & frame["value"].ne("")]
    return pd.DataFrame({"head": frame["head"].to_numpy(object), "relation": column,
                         "tail": (column + ":" + frame["value"]).to_numpy(object),
                         "value": frame["value"].to_numpy(object)})


def read_items_csv(path: Path, item_col: str, title_col: Optional[str] = None, attr_cols: Sequence[str] = (),
                   sep: str = ",", attr_sep: Optional[str] = "|") -> ItemTable:
    """Read an items CSV (every column as text) into an :class:`ItemTable`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("items file not found", path)
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot parse as CSV ({err})", path) from None
    return item_table(frame.replace("", None), item_col, title_col, attr_cols, attr_sep, source=str(path))


def align_items(table: ItemTable, interacted: pd.Series, keep_unused: bool = False) -> tuple[ItemTable, ItemCoverage]:
    """Match ``table`` to the item ids of the interactions.

    Items of the table that no interaction names are dropped (with their triples) unless ``keep_unused``;
    interacted items missing from the table are appended without text. Both are counted in the coverage.
    """
    used = pd.unique(interacted.astype(str))
    in_table = table.items["item"].isin(used).to_numpy()
    unused = table.items["item"][~in_table].tolist()
    missing = [str(i) for i in used[~pd.Index(used).isin(table.items["item"])]]
    items, kg = table.items, table.kg
    if unused and not keep_unused:
        items = items[in_table]
        kg = kg[kg["head"].isin(set(items["item"]))]
    if missing:
        items = pd.concat([items, pd.DataFrame({"item": missing, "text": None})], ignore_index=True)
    entities = table.entities[table.entities["entity"].isin(set(kg["tail"]))]
    coverage = ItemCoverage(len(table.items), unused, missing, keep_unused)
    return ItemTable(items.reset_index(drop=True), kg.reset_index(drop=True), entities.reset_index(drop=True)), coverage
