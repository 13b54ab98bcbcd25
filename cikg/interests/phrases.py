"""The ``(user, phrase)`` frame every interest step starts from: its checks and the phrase key.

Below both :mod:`cikg.interests.cluster` (which clusters the keys) and :mod:`cikg.interests.io` (which reads
the LLM layer's answers into such a frame), so neither imports the other's internals.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DatasetError

_EDGE_CHARS = " \t\"'`.,;:!?*•-–—"


def normalise_phrases(phrases: pd.Series) -> pd.Series:
    """The key phrases are embedded and counted under: trimmed of spaces, quotes, bullets and end
    punctuation, inner whitespace collapsed, lower case. ``None`` → ``""``."""
    text = phrases.fillna("").astype(str)
    return text.str.replace(r"\s+", " ", regex=True).str.strip(_EDGE_CHARS).str.lower()


def clean_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Check a ``(user, phrase)`` frame; return a copy with ``user`` as int64 and a ``key`` column
    (:func:`normalise_phrases`; ``""`` for missing or empty phrases, which are not clustered).

    Raises:
        DatasetError: a column is missing, a user is not a non-negative integer, a phrase is not a string
            (naming the row).
    """
    if not isinstance(pairs, pd.DataFrame):
        raise DatasetError(
            f"expected a pandas DataFrame with columns user, phrase; got {type(pairs).__name__}"
        )
    missing = [c for c in ("user", "phrase") if c not in pairs.columns]
    if missing:
        raise DatasetError(f"interest frame lacks column(s) {missing}; it has {list(pairs.columns)}")
    frame = pairs.reset_index(drop=True).copy()
    users = pd.to_numeric(frame["user"], errors="coerce")
    bad = users.isna() | (users < 0) | (users != np.floor(users.fillna(0)))
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DatasetError(
            f"row {row}: user {_plain(frame['user'].iloc[row])!r} is not a non-negative integer id"
        )
    phrase_ok = frame["phrase"].map(
        lambda p: p is None or isinstance(p, str) or (isinstance(p, float) and np.isnan(p))
    )
    if not phrase_ok.all():
        row = int(np.argmax(~phrase_ok.to_numpy()))
        raise DatasetError(
            f"row {row} (user {int(users.iloc[row])}): phrase {_plain(frame['phrase'].iloc[row])!r} "
            "is not a string"
        )
    frame["user"] = users.astype(np.int64)
    frame["key"] = normalise_phrases(frame["phrase"])
    return frame


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (for readable messages)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
