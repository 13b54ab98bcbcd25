"""Reading the LLM layer's interest phrases and writing the clustered interests.

Input: a pandas frame of ``(user, phrase)`` rows (``user``: remapped id; optional ``user_id``: original id),
or ``user_interests_raw.jsonl`` written by :mod:`cikg.llm`, one JSON object per user with keys ``user``,
``user_id``, ``phrases`` (list of str), ``raw``, ``status``, ``backend``.

Outputs of :func:`save_interests` (all written atomically) in a directory:

============================== =====================================================================
``user_interest_clustered.txt`` ``user_id interest_id`` per line, interest id = ``id_offset`` + dense id
                                (the dataset format: ``cikg.data.load_interests`` reads it unchanged)
``interest_list.txt``           ``org_id remap_id label``: interest id, dense id, central phrase
``interests.parquet``           one row per distinct phrase (see ``InterestClustering.phrases``)
``user_interests.parquet``      one row per user: ``user``, ``phrases``, ``clusters`` [, ``user_id``]
``silhouette.csv``              ``kappa,silhouette`` when kappa was searched
``interests_summary.json``      counts and choices
============================== =====================================================================
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import pandas as pd

from .._io import atomic_path, read_utf8_lines, write_json_atomic, write_text_atomic
from ..data.io import MAX_ID, read_int_table
from ..errors import DatasetError
from ..llm.base import RAW_FILE
from .cluster import InterestClustering

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CLUSTERED_FILE = "user_interest_clustered.txt"
LABEL_FILE = "interest_list.txt"
PHRASE_TABLE = "interests.parquet"
USER_TABLE = "user_interests.parquet"
SILHOUETTE_FILE = "silhouette.csv"
SUMMARY_FILE = "interests_summary.json"

def read_raw_interests(path: PathLike) -> pd.DataFrame:
    """``user_interests_raw.jsonl`` (or a directory holding it) → ``(user, user_id, phrase)`` rows.

    A user without phrases keeps one row with ``phrase=None`` (so it is listed, with no interest). When
    a user occurs on several lines (a resumed run appended), the last line wins.

    Raises:
        DatasetError: naming the file and line of unreadable JSON or a wrong field.
    """
    path = raw_path(path)
    records = {user: (record["user_id"], record["phrases"]) for user, record in read_raw_records(path).items()}
    users: List[int] = []
    user_ids: List[object] = []
    phrases: List[object] = []
    for user, (user_id, given) in sorted(records.items()):
        for phrase in given or [None]:
            users.append(user)
            user_ids.append(user_id)
            phrases.append(phrase)
    log.info("read %d users, %d phrases from %s", len(records), sum(p is not None for p in phrases), path)
    return pd.DataFrame(
        {
            "user": np.asarray(users, dtype=np.int64),
            "user_id": pd.Series(user_ids, dtype=object),
            "phrase": pd.Series(phrases, dtype=object),
        }
    )


def raw_path(path: PathLike) -> Path:
    """``user_interests_raw.jsonl`` itself, or inside the directory ``path``; a missing file is an error."""
    path = Path(path)
    if path.is_dir():
        path = path / RAW_FILE
    if not path.is_file():
        raise DatasetError("interest file not found (run `cikg interests infer` first)", path)
    return path


def read_raw_records(path: PathLike) -> Dict[int, dict]:
    """The checked lines of ``user_interests_raw.jsonl`` (or its directory) by user id, sorted by user.

    Each record is the JSON object as written, with ``user_id`` (``str`` or ``None``) and ``phrases``
    (a list of str) checked and normalised; other keys (``status``, ``raw``, ``structured``...) as given.
    A user on several lines (a resumed run appended): the later line wins, with a warning.

    Raises:
        DatasetError: naming the file and line of unreadable JSON or a wrong field.
    """
    path = raw_path(path)
    records: Dict[int, dict] = {}
    for line_no, line in enumerate(read_utf8_lines(path), start=1):
        if not line.strip():
            continue
        user, user_id, phrases, record = _parse_record(line, path, line_no)
        if user in records:
            log.warning("%s:%d: user %d appears again; the later line wins", path, line_no, user)
        records[user] = {**record, "user": user, "user_id": user_id, "phrases": phrases}
    return dict(sorted(records.items()))


def _parse_record(line: str, path: Path, line_no: int) -> tuple:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"not valid JSON ({err.msg} at column {err.colno})", path, line_no) from None
    except (ValueError, RecursionError) as err:  # too deep, or an integer of more than 4300 digits
        raise DatasetError(f"not valid JSON ({type(err).__name__})", path, line_no) from None
    if not isinstance(record, dict):
        raise DatasetError(f"expected a JSON object, got {type(record).__name__}", path, line_no)
    user = record.get("user")
    if isinstance(user, bool) or not isinstance(user, int) or not 0 <= user <= MAX_ID:
        raise DatasetError(f"field 'user' must be a non-negative integer id, got {str(user)[:40]}", path, line_no)
    phrases = record.get("phrases", [])
    if phrases is None:
        phrases = []
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise DatasetError(
            f"user {user}: field 'phrases' must be a list of strings, got {phrases!r}"[:200], path, line_no
        )
    user_id = record.get("user_id")
    return user, None if user_id is None else str(user_id), phrases, record


def save_interests(clustering: InterestClustering, directory: PathLike) -> Dict[str, Path]:
    """Write the outputs listed in the module docstring into ``directory``; returns name → path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out / name for name in (CLUSTERED_FILE, LABEL_FILE, PHRASE_TABLE, USER_TABLE, SUMMARY_FILE)
    }
    table = np.stack([clustering.edges[0], clustering.edges[1] + clustering.id_offset], axis=1)
    with atomic_path(paths[CLUSTERED_FILE]) as tmp:
        np.savetxt(tmp, table, fmt="%d", delimiter=" ")
    lines = [
        f"{org} {dense} {label}"
        for dense, (org, label) in enumerate(zip(clustering.interest_ids, clustering.labels))
    ]
    write_text_atomic(paths[LABEL_FILE], "\n".join(["org_id remap_id label", *lines]) + "\n")
    _write_parquet(clustering.phrases, paths[PHRASE_TABLE])
    _write_parquet(clustering.assignments, paths[USER_TABLE])
    if clustering.silhouette is not None:
        paths[SILHOUETTE_FILE] = out / SILHOUETTE_FILE
        write_text_atomic(paths[SILHOUETTE_FILE], clustering.silhouette.to_csv(index=False))
    write_json_atomic(paths[SUMMARY_FILE], clustering.summary())
    return paths


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_clustered(path: PathLike) -> np.ndarray:
    """``user_interest_clustered.txt`` (or its directory) → ``[n, 2]`` int64 (user, interest id)."""
    path = Path(path)
    if path.is_dir():
        path = path / CLUSTERED_FILE
    if not path.is_file():
        raise DatasetError("clustered interest file not found", path)
    table, _ = read_int_table(path, 2)
    return table.astype(np.int64)
