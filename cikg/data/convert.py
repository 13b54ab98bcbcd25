"""A CSV of interactions (and optionally an items table) → :class:`Dataset`: what ``cikg data convert`` does."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import pandas as pd

from ..errors import DatasetError
from .dataset import Dataset
from .frames import Splitter, from_pandas
from .items import ItemCoverage, ItemTable, align_items
from .times import DATETIME, parse_times


def read_interactions_csv(path: Path, *, user_col: str = "user", item_col: str = "item",
                          time_col: Optional[str] = None, split_col: Optional[str] = None,
                          sep: str = ",") -> pd.DataFrame:
    """Columns ``user``, ``item`` (as text: ``007`` stays ``007``), ``split`` and ``time_col`` (parsed by
    :func:`~cikg.data.times.parse_times`: numbers as numbers, ISO dates as dates) when asked.

    Errors name the file, and for a bad time the line (one record per line assumed).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("no such file", path)
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot parse as CSV ({err})", path) from None
    columns = {user_col: "user", item_col: "item"}
    if split_col:
        columns[split_col] = "split"
    if time_col:
        columns[time_col] = time_col
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"missing column(s) {missing}; found {list(frame.columns)}", path)
    out = frame[list(columns)].rename(columns=columns)
    if time_col:
        times, kind = parse_times(out[time_col], time_col, path=str(path), first_line=2)
        out[time_col] = pd.to_datetime(times, unit="ns") if kind == DATETIME else times
    return out


def convert_interactions(interactions: pd.DataFrame, *, name: str, time_col: Optional[str] = None,
                         splitter: Optional[Splitter] = None,
                         items: Optional[ItemTable] = None, keep_unused_items: bool = False,
                         seed: int = 2024, source: str = "") -> Tuple[Dataset, Optional[ItemCoverage]]:
    """A :class:`Dataset` from :func:`read_interactions_csv`'s frame, with item text and KG from ``items``.

    The time column (when present) orders each user's items and, with the default splitter, makes the split
    temporal; the splitter and the time column are recorded in ``meta["split"]``, the items file's coverage
    in ``meta["items"]``.
    """
    coverage = None
    frames = {}
    if items is not None:
        items, coverage = align_items(items, interactions["item"], keep_unused=keep_unused_items)
        frames = {"items": items.items, "kg": items.kg, "entities": items.entities}
    dataset = from_pandas(interactions, name=name, time_col=time_col, splitter=splitter, seed=seed, **frames)
    if source:
        dataset.meta["source"] = source
    if coverage is not None:
        dataset.meta["items"] = coverage.as_meta()
    return dataset, coverage
