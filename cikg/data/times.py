"""Interaction times: numbers (Unix seconds, milliseconds, any ordinal) or dates, parsed for ordering."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import pandas as pd

from ..errors import DatasetError

NUMERIC, DATETIME = "numeric", "datetime"


def parse_times(values: pd.Series, column: str, *, path: Optional[str] = None,
                first_line: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """Sortable times of ``values``: ``(int64 or float64 array, "numeric" | "datetime")``.

    Numbers (also numbers held as strings) are compared as numbers, so ``9 < 10``; otherwise every value must
    parse as an ISO 8601 date/time (``2024-05-01``, ``2024-05-01T12:00:00+02:00``; offsets are converted to
    UTC, naive times are taken as UTC). A column that is neither, or has a missing value, is a
    :class:`DatasetError` naming the column and the first bad row (the file line when ``path`` and
    ``first_line``, the line of row 0, are given).
    """
    def fail(row: int, problem: str) -> DatasetError:
        where = f"line {first_line + row}" if first_line is not None else f"row {row}"
        return DatasetError(f"time column {column!r}, {where}: {problem}", path,
                            None if first_line is None else first_line + row)

    missing = values.isna().to_numpy().copy()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        missing |= values.astype(str).str.strip().eq("").to_numpy() & ~missing
    if missing.any():
        raise fail(int(np.argmax(missing)), "no time given (every interaction needs one)")
    if pd.api.types.is_bool_dtype(values):
        raise fail(0, f"expected numbers or dates, got booleans ({values.iloc[0]!r})")
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(), NUMERIC
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetime_ints(values), DATETIME
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(), NUMERIC
    dates = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if dates.notna().all():
        return _datetime_ints(dates), DATETIME
    # report against what most of the column looks like
    looks_numeric = int(numbers.notna().sum()) >= int(dates.notna().sum())
    bad = int(np.argmax((numbers.isna() if looks_numeric else dates.isna()).to_numpy()))
    expected = "a number, as the other rows" if looks_numeric else "an ISO date, as the other rows"
    raise fail(bad, f"{text.iloc[bad][:60]!r} is neither a number nor an ISO 8601 date (expected {expected})")


def _datetime_ints(dates: pd.Series) -> np.ndarray:
    if dates.dt.tz is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    return dates.to_numpy().astype("datetime64[ns]").astype(np.int64)
