"""Read and write the KGAT / CIKGRec text format.

A dataset directory holds::

    train.txt, test.txt, [valid.txt]      user_id item_id item_id ...      (one line per user)
    [kg_final.txt]                        head relation tail
    [user_interest_clustered.txt]         user_id interest_id              (interest ids continue entities)
    [user_list.txt, item_list.txt, entity_list.txt, relation_list.txt]   org_id remap_id [text]
    [meta.json]                           written by cikg: split seed and method, provenance

Integer files are parsed vectorised: the bytes are checked and tokenised with NumPy, so the only
per-line Python work is in the ``*_list.txt`` id maps whose text columns contain spaces.
"""
from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .._io import atomic_path, write_json_atomic
from ..errors import DatasetError, describe_os_error
from .dataset import Dataset, numpy_pairs
from .split import carve_validation

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MAX_ID = 10**12  # ids above this are certainly corrupt; keeps int64 arithmetic safe
# without a *_list.txt, the largest id may exceed 10 x the distinct ids in use by at most this much
SPARSE_ID_SLACK = 100_000
_WS = np.zeros(256, dtype=bool)
_WS[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[ord("0"): ord("9") + 1] = True


def data_dir(override: Optional[PathLike] = None) -> Path:
    """The directory bare dataset names resolve in: the argument, else ``$CIKG_DATA``, else ``../shared/data``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("CIKG_DATA")
    return Path(env) if env else DEFAULT_DATA_DIR


def resolve_dataset_path(path_or_name: PathLike, root: Optional[PathLike] = None) -> Path:
    """A directory path as given, or a bare name looked up under :func:`data_dir`.

    A bare name that is also a folder here which holds no dataset (no ``train.txt``: ``experiments/dbbook2014``,
    the configs of a dataset, seen from ``experiments/``) is the named dataset, not that folder."""
    path = Path(path_or_name)
    try:
        return _resolve_dataset_path(path, root)
    except OSError as err:  # a name longer than the OS allows, a folder we may not search, ...
        raise DatasetError(f"cannot open as a dataset: {describe_os_error(err)}", path) from None


def _resolve_dataset_path(path: Path, root: Optional[PathLike]) -> Path:
    bare = len(path.parts) == 1
    # a bare name names the dataset, unless the local folder of that name is itself a dataset (experiments/ holds
    # config folders named like the datasets)
    local_dataset = (path / "train.txt").is_file()
    shadows_named_dataset = bare and (data_dir(root) / path).is_dir()
    if path.is_dir() and (local_dataset or not shadows_named_dataset):
        return path
    if path.exists() and not path.is_dir():
        raise DatasetError("expected a dataset directory, got a file", path)
    if bare:
        candidate = data_dir(root) / path
        if candidate.is_dir():
            return candidate
        available = sorted(p.name for p in data_dir(root).glob("*") if p.is_dir()) if data_dir(root).is_dir() else []
        raise DatasetError(f"no dataset named {str(path)!r} in {data_dir(root)} (set CIKG_DATA or pass a path); "
                           f"available: {', '.join(available) or 'none'}")
    raise DatasetError("dataset directory does not exist", path)


# ---------------------------------------------------------------------------------------------- parsing
@dataclass
class IntTokens:
    """The integer tokens of a whitespace-separated file, each with its 1-based line number."""

    values: np.ndarray  # int64 [n_tokens]
    lines: np.ndarray  # int64 [n_tokens], 1-based
    first_of_line: np.ndarray  # bool [n_tokens]


def _line_of(buf: np.ndarray, offset: int) -> int:
    return int(np.count_nonzero(buf[:offset] == 10)) + 1


def read_int_tokens(path: Path) -> IntTokens:
    """Tokenise an integer file vectorised; reject anything but digits and whitespace, naming the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("required file is missing", path) from None
    except OSError as err:
        raise DatasetError(f"cannot read file: {err.strerror}", path) from None
    buf = np.frombuffer(raw, dtype=np.uint8)
    if not buf.size or _WS[buf].all():
        raise DatasetError("file is empty", path)
    bad = ~(_WS[buf] | _DIGIT[buf])
    if bad.any():
        offset = int(np.argmax(bad))
        line = _line_of(buf, offset)
        text = raw.split(b"\n")[line - 1].decode("utf-8", errors="replace").strip()
        char = raw[offset: offset + 1].decode("latin-1")
        what = "negative id" if char == "-" else f"non-integer token (unexpected {char!r})"
        raise DatasetError(f"{what} in line {text[:80]!r}", path, line)
    is_tok = ~_WS[buf]
    starts = np.flatnonzero(is_tok & np.concatenate(([True], ~is_tok[:-1])))
    ends = np.flatnonzero(is_tok & np.concatenate((~is_tok[1:], [True]))) + 1
    too_long = (ends - starts) > 12
    if too_long.any():
        offset = int(starts[np.argmax(too_long)])
        raise DatasetError(f"id too large (more than 12 digits, limit {MAX_ID})", path, _line_of(buf, offset))
    values = np.array(raw.split(), dtype=np.int64)
    newline_cum = np.cumsum(buf == 10)
    lines = newline_cum[starts] - (buf[starts] == 10) + 1
    first = np.concatenate(([True], lines[1:] != lines[:-1]))
    return IntTokens(values, lines.astype(np.int64), first)


def read_adjacency_file(path: Path, line_users: bool = False):
    """Read a ``user item item ...`` file into (users, items, 1-based line of each pair).

    A user listed on several lines is merged (with a warning); duplicate (user, item) pairs are dropped
    with a warning naming the first duplicate's line. With ``line_users``, a fourth value holds the user
    of every line and its line number (``[2, n_lines]``), users without items included.
    """
    tok = read_int_tokens(path)
    line_start = np.flatnonzero(tok.first_of_line)
    users_of_line = tok.values[line_start]
    line_id = np.cumsum(tok.first_of_line) - 1
    is_item = ~tok.first_of_line
    users = users_of_line[line_id[is_item]]
    items = tok.values[is_item]
    lines = tok.lines[is_item]
    uniq_users, counts = np.unique(users_of_line, return_counts=True)
    if (counts > 1).any():
        u = int(uniq_users[np.argmax(counts > 1)])
        second = int(tok.lines[line_start[users_of_line == u][1]])
        _warn(f"user {u} appears on {int(counts.max())} lines; merged", path, second)
    order = np.argsort(users, kind="stable")
    users, items, lines = users[order], items[order], lines[order]
    users, items, lines = _drop_duplicate_pairs(users, items, lines, path)
    if line_users:
        return users, items, lines, np.stack([users_of_line, tok.lines[line_start]])
    return users, items, lines


def _drop_duplicate_pairs(a: np.ndarray, b: np.ndarray, lines: np.ndarray,
                          path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not a.size:
        return a, b, lines
    key = a * (int(b.max()) + 1) + b
    _, first_idx = np.unique(key, return_index=True)
    if first_idx.size == key.size:
        return a, b, lines
    keep = np.zeros(key.size, dtype=bool)
    keep[first_idx] = True
    dup_line = int(lines[~keep].min())
    _warn(f"{int((~keep).sum())} duplicate pair(s) dropped (first at this line)", path, dup_line)
    return a[keep], b[keep], lines[keep]


def read_int_table(path: Path, n_cols: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read a file of ``n_cols`` integers per line: (``[n, n_cols]`` array, 1-based line per row)."""
    tok = read_int_tokens(path)
    per_line = np.bincount(np.cumsum(tok.first_of_line) - 1)
    wrong = per_line != n_cols
    if wrong.any():
        line = int(tok.lines[np.flatnonzero(tok.first_of_line)[np.argmax(wrong)]])
        raise DatasetError(f"expected {n_cols} integers per line, found {int(per_line[np.argmax(wrong)])}",
                           path, line)
    return tok.values.reshape(-1, n_cols), tok.lines[tok.first_of_line]


def _warn(message: str, path: Path, line: Optional[int] = None) -> None:
    where = f"{path}:{line}" if line is not None else str(path)
    logger.warning("%s: %s", where, message)
    _LOAD_WARNINGS.append(f"{where}: {message}")


_LOAD_WARNINGS: List[str] = []


# the shortest prefix before a whitespace-delimited integer: original ids may contain spaces
# (ASCII digits and whitespace only, as in the integer files)
_LIST_WITH_TEXT = re.compile(r"^(.*?)\s+(\d+)(?:\s+(.*))?$", re.ASCII)
_LIST_WITHOUT_TEXT = re.compile(r"^(.*?)\s+(\d+)()\s*$", re.ASCII)
# "Apollo 13<TAB>7<TAB>Apollo 13": save_dataset separates the columns with tabs when an original id holds
# whitespace, since "Apollo 13 7 Apollo 13" cannot be split (the published files have no tabs)
_TAB_SEPARATED = re.compile(r"^([^\t]*?)\t[ ]*(\d+)[ ]*(?:\t(.*))?$", re.ASCII)


@dataclass
class IdList:
    """An ``org_id remap_id [text]`` map: original id and text per remapped id."""

    org_ids: List[str]
    text: List[Optional[str]]
    text_column: Optional[str]


def read_id_list(path: Path) -> IdList:
    """Read a ``*_list.txt`` file; remap ids must be unique and cover ``0 .. n-1``."""
    try:
        content = path.read_bytes().decode("utf-8")  # read_text would make a lone "\r" a line end
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DatasetError("file is not valid UTF-8", path, line) from None
    # lines end at "\n" only (with an optional "\r"), as in the integer files: str.splitlines() would also
    # split at form feeds and Unicode separators inside titles and give wrong line numbers
    lines = [line[:-1] if line.endswith("\r") else line for line in content.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise DatasetError("file is empty (expected a header line 'org_id remap_id ...')", path)
    header = lines[0].split()
    if len(header) < 2 or header[1] != "remap_id":
        raise DatasetError(f"expected a header 'org_id remap_id [...]', found {lines[0][:80]!r}", path, 1)
    text_column = header[2] if len(header) > 2 else None
    # without a text column the original id may itself contain spaces (amazon-book entity names)
    pattern = _LIST_WITH_TEXT if text_column else _LIST_WITHOUT_TEXT
    org_ids: List[str] = []
    remap: List[int] = []
    text: List[Optional[str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        match = _TAB_SEPARATED.match(line) or pattern.match(line)
        if match is None:
            raise DatasetError(f"expected '{' '.join(header)}', found {line[:80]!r}", path, number)
        if len(match.group(2)) > 12:
            raise DatasetError(f"remap id too large (more than 12 digits, limit {MAX_ID})", path, number)
        org_ids.append(match.group(1))
        remap.append(int(match.group(2)))
        text.append(match.group(3).strip() if text_column and match.group(3) is not None else None)
    order = np.argsort(np.array(remap, dtype=np.int64), kind="stable")
    sorted_ids = np.array(remap, dtype=np.int64)[order]
    if sorted_ids.size and not np.array_equal(sorted_ids, np.arange(sorted_ids.size)):
        gap = int(np.argmax(sorted_ids != np.arange(sorted_ids.size)))
        raise DatasetError(f"remap ids must be unique and cover 0..{sorted_ids.size - 1}; "
                           f"problem at remap id {int(sorted_ids[gap])}", path)
    return IdList([org_ids[i] for i in order], [text[i] for i in order], text_column)


def uri_to_title(value: Optional[str]) -> Optional[str]:
    """``http://dbpedia.org/resource/The_Hobbit`` → ``The Hobbit``; ``None``/``"None"`` → ``None``."""
    if value is None or value in ("None", "none", ""):
        return None
    if "://" in value:
        value = urllib.parse.unquote(value.rstrip("/").rsplit("/", 1)[-1]).replace("_", " ")
    value = value.strip()
    return value or None


def relation_short_names(names: List[str]) -> List[str]:
    """Identifier-safe, unique short names: ``http://dbpedia.org/ontology/author`` → ``author``."""
    out: List[str] = []
    for name in names:
        short = re.split(r"[/#]", name.rstrip("/"))[-1]
        short = re.sub(r"[^0-9A-Za-z_]+", "_", short).strip("_") or "rel"
        base, k = short, 2
        while short in out:
            short, k = f"{base}_{k}", k + 1
        out.append(short)
    return out


# ---------------------------------------------------------------------------------------------- loading
def load_dataset(path_or_name: PathLike, *, root: Optional[PathLike] = None, valid_fraction: float = 1 / 8,
                 seed: int = 2024) -> Dataset:
    """Load a dataset in the KGAT / CIKGRec text format.

    Args:
        path_or_name: a dataset directory, or a bare name (``"dbbook2014"``) resolved under ``root``,
            ``$CIKG_DATA`` or ``../shared/data``.
        valid_fraction: when there is no ``valid.txt``, the share of each user's train items (users with
            at least 2) carved into a validation split.
        seed: seed of that split (recorded in ``meta``).

    Raises:
        DatasetError: naming the file and line of any malformed or inconsistent input.
    """
    path = resolve_dataset_path(path_or_name, root)
    _LOAD_WARNINGS.clear()
    lists = {kind: read_id_list(path / f"{kind}_list.txt") if (path / f"{kind}_list.txt").exists() else None
             for kind in ("user", "item", "entity", "relation")}
    train_u, train_i, train_l, train_lu = read_adjacency_file(path / "train.txt", line_users=True)
    test_u, test_i, test_l, test_lu = read_adjacency_file(path / "test.txt", line_users=True)
    has_valid = (path / "valid.txt").exists()
    valid = read_adjacency_file(path / "valid.txt", line_users=True) if has_valid else None

    # users are counted from every line, also lines without items (save_dataset writes one per user)
    n_users = _count("user", lists["user"], [(path / "train.txt", train_lu[0], train_lu[1]),
                                             (path / "test.txt", test_lu[0], test_lu[1])])
    item_sources = [(path / "train.txt", train_i, train_l), (path / "test.txt", test_i, test_l)]
    if valid is not None:
        item_sources.append((path / "valid.txt", valid[1], valid[2]))
        _check_range(path / "valid.txt", valid[3][0], valid[3][1], n_users, "user")
    n_items = _count("item", lists["item"], item_sources)

    kg = np.zeros((0, 3), dtype=np.int64)
    n_entities, n_relations = n_items, 0
    kg_path = path / "kg_final.txt"
    if kg_path.exists():
        kg, kg_lines = read_int_table(kg_path, 3)
        n_entities = _count("entity", lists["entity"], [(kg_path, kg[:, 0], kg_lines), (kg_path, kg[:, 2], kg_lines)],
                            minimum=n_items)
        n_relations = _count("relation", lists["relation"], [(kg_path, kg[:, 1], kg_lines)])
        kg, _, _ = _drop_duplicate_rows(kg, kg_lines, kg_path)

    ui = np.zeros((0, 2), dtype=np.int64)
    interest_ids, interest_labels = np.zeros(0, dtype=np.int64), None
    ui_path = path / "user_interest_clustered.txt"
    if ui_path.exists():
        ui, ui_lines = read_int_table(ui_path, 2)
        _check_range(ui_path, ui[:, 0], ui_lines, n_users, "user")
        users_sorted = np.argsort(ui[:, 0], kind="stable")
        ui, ui_lines = ui[users_sorted], ui_lines[users_sorted]
        a, b, _ = _drop_duplicate_pairs(ui[:, 0], ui[:, 1], ui_lines, ui_path)
        interest_ids, interest_labels = _interest_vocabulary(path, b)
        dense = np.searchsorted(interest_ids, b)
        ui = np.stack([a, dense], axis=1)[np.argsort(a * interest_ids.size + dense, kind="stable")]

    test_only = np.setdiff1d(np.unique(test_i), np.unique(train_i))
    if test_only.size:
        _warn(f"{test_only.size} item(s) occur in test but never in train (e.g. item {int(test_only[0])})",
              path / "test.txt")

    item_list, entity_list, relation_list = lists["item"], lists["entity"], lists["relation"]
    item_text = _item_text(item_list, n_items)
    entity_ids = (entity_list.org_ids[:n_entities] if entity_list and len(entity_list.org_ids) >= n_entities
                  else (item_list.org_ids if item_list else [str(i) for i in range(n_items)])
                  + [str(e) for e in range(n_items, n_entities)])
    entity_text = list(item_text) + [_entity_text(entity_list, e) for e in range(n_items, n_entities)]
    relation_raw = (relation_list.org_ids[:n_relations] if relation_list else [str(r) for r in range(n_relations)])
    if len(relation_raw) < n_relations:
        relation_raw += [str(r) for r in range(len(relation_raw), n_relations)]

    meta: Dict[str, object] = {"source": str(path)}
    meta_path = path / "meta.json"
    if meta_path.exists():
        try:
            saved = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise DatasetError(f"meta.json is not valid JSON: {err}", meta_path) from None
        if not isinstance(saved, dict):
            raise DatasetError(f"meta.json must hold a JSON object, got {type(saved).__name__}", meta_path)
        meta.update(saved)
        meta["source"] = str(path)
    train = torch.from_numpy(np.stack([train_u, train_i]))
    if valid is not None:
        valid_t = torch.from_numpy(np.stack([valid[0], valid[1]]))
        meta.setdefault("split", {"method": "valid.txt"})
    else:
        train, valid_t = carve_validation(train, n_users, fraction=valid_fraction, seed=seed)
        meta["split"] = {"method": "carved from train per user", "fraction": valid_fraction, "seed": seed,
                         "min_train_items": 2}
    meta["warnings"] = list(_LOAD_WARNINGS)
    return Dataset(
        name=str(meta.get("name", path.name)), n_users=n_users, n_items=n_items, train=train, valid=valid_t,
        test=torch.from_numpy(np.stack([test_u, test_i])), n_entities=n_entities, n_relations=n_relations,
        kg=torch.from_numpy(np.ascontiguousarray(kg.T)), n_interests=int(interest_ids.size),
        user_interest=torch.from_numpy(np.ascontiguousarray(ui.T)),
        user_ids=lists["user"].org_ids if lists["user"] and len(lists["user"].org_ids) == n_users
        else [str(u) for u in range(n_users)],
        item_ids=item_list.org_ids if item_list else [str(i) for i in range(n_items)],
        entity_ids=list(entity_ids), relation_ids=list(relation_raw),
        relation_names=relation_short_names(list(relation_raw)), interest_ids=interest_ids.tolist(),
        interest_labels=interest_labels, item_text=item_text, entity_text=entity_text,
        meta=meta)


def _count(kind: str, id_list: Optional[IdList], sources: List[Tuple[Path, np.ndarray, np.ndarray]],
           minimum: int = 0) -> int:
    """The number of ``kind`` ids: the id map's length when present (every id must fall inside it)."""
    if id_list is not None:
        n = max(len(id_list.org_ids), minimum)
        for path, ids, lines in sources:
            _check_range(path, ids, lines, n, kind)
        return n
    used = [(path, ids, lines) for path, ids, lines in sources if ids.size]
    n = max([minimum] + [int(ids.max()) + 1 for _, ids, _ in used])
    if used:
        # without an id list the count is the largest id + 1: a stray huge id would allocate a table that
        # size (and exhaust memory), so ids must be remapped densely, as in the KGAT format
        distinct = max(int(np.unique(np.concatenate([ids for _, ids, _ in used])).size), minimum)
        limit = 10 * distinct + SPARSE_ID_SLACK
        if n > limit:
            path, ids, lines = max(used, key=lambda source: int(source[1].max()))
            bad = int(np.argmax(ids))
            raise DatasetError(f"{kind} id {int(ids[bad])} is far beyond the {distinct} distinct {kind} ids in use "
                               f"(limit {limit} without a {kind}_list.txt): ids must be remapped to 0..n-1",
                               path, int(lines[bad]))
    return n


def _check_range(path: Path, ids: np.ndarray, lines: np.ndarray, n: int, kind: str) -> None:
    if ids.size and int(ids.max()) >= n:
        bad = int(np.argmax(ids >= n))
        raise DatasetError(f"unknown {kind} id {int(ids[bad])}: the {kind} list declares {n} {kind}s "
                           f"(ids 0..{n - 1})", path, int(lines[bad]))


def _drop_duplicate_rows(table: np.ndarray, lines: np.ndarray, path: Path):
    _, first = np.unique(table, axis=0, return_index=True)
    if first.size == table.shape[0]:
        return table, lines, 0
    keep = np.zeros(table.shape[0], dtype=bool)
    keep[first] = True
    _warn(f"{int((~keep).sum())} duplicate line(s) dropped (first at this line)", path, int(lines[~keep].min()))
    return table[keep], lines[keep], int((~keep).sum())


def _item_text(item_list: Optional[IdList], n_items: int) -> List[Optional[str]]:
    if item_list is None or item_list.text_column in (None, "freebase_id"):
        return [None] * n_items
    text = [uri_to_title(t) for t in item_list.text]
    return text + [None] * (n_items - len(text))


def _entity_text(entity_list: Optional[IdList], entity: int) -> Optional[str]:
    if entity_list is None or entity >= len(entity_list.org_ids):
        return None
    if entity_list.text_column is not None and entity_list.text[entity]:
        return uri_to_title(entity_list.text[entity])
    org = entity_list.org_ids[entity]
    return uri_to_title(org) if "://" in org else None


def _interest_vocabulary(path: Path, edge_ids: np.ndarray) -> Tuple[np.ndarray, Optional[List[str]]]:
    """The interest ids (sorted) and their labels: the ids on the user-interest edges, plus those that
    ``interest_list.txt`` (``org_id remap_id [label]``) lists without an edge (interest nodes no user links to,
    kept by :func:`save_dataset`); labels when the list has a label column."""
    label_path = path / "interest_list.txt"
    if not label_path.exists() or not edge_ids.size:
        return np.unique(edge_ids), None
    listed = read_id_list(label_path)
    bad = next((o for o in listed.org_ids if not (o.isascii() and o.isdigit())), None)
    if bad is not None:
        raise DatasetError(f"interest id {bad[:40]!r} (remap id {listed.org_ids.index(bad)}) is not a "
                           "non-negative integer", label_path)
    big = next((o for o in listed.org_ids if int(o) >= MAX_ID), None)
    if big is not None:
        raise DatasetError(f"interest id {big[:40]} (remap id {listed.org_ids.index(big)}) is too large "
                           f"(limit {MAX_ID})", label_path)
    by_org = {int(o): (t or "") for o, t in zip(listed.org_ids, listed.text)}
    interest_ids = np.union1d(edge_ids, np.fromiter(by_org, dtype=np.int64, count=len(by_org)))
    if listed.text_column is None:
        return interest_ids, None
    missing = [int(i) for i in interest_ids if int(i) not in by_org]
    if missing:
        raise DatasetError(f"interest id {missing[0]} has no label", label_path)
    return interest_ids, [by_org[int(i)] for i in interest_ids]


# ---------------------------------------------------------------------------------------------- writing
def _write_adjacency(path: Path, pairs: torch.Tensor, n_users: int, all_users: bool) -> None:
    """One ``user item ...`` line per user (every user when ``all_users``, else those with items)."""
    indptr = torch.zeros(n_users + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(pairs[0], minlength=n_users), 0, out=indptr[1:])
    items = pairs[1].numpy().astype(str)
    bounds = indptr.numpy()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for user in range(n_users):
            start, end = bounds[user], bounds[user + 1]
            if start == end and not all_users:
                continue
            fh.write(" ".join([str(user), *items[start:end]]) + "\n")


def _write_rows(path: Path, table: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.savetxt(tmp, table, fmt="%d", delimiter=" ")


def _write_list(path: Path, header: str, org_ids: List[str], text: Optional[List[Optional[str]]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(header + "\n")
        for idx, org in enumerate(org_ids):
            sep = "\t" if any(c.isspace() for c in org) else " "  # keeps "Apollo 13" apart from its remap id
            extra = "" if text is None else f"{sep}{text[idx] if text[idx] is not None else 'None'}"
            fh.write(f"{org}{sep}{idx}{extra}\n")


def save_dataset(dataset: Dataset, path: PathLike) -> Path:
    """Write ``dataset`` in the KGAT / CIKGRec format (plus ``valid.txt`` and ``meta.json``).

    ``load_dataset(save_dataset(ds, p))`` gives identical tensors, counts and id maps.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _write_adjacency(out / "train.txt", dataset.train, dataset.n_users, all_users=True)
    _write_adjacency(out / "valid.txt", dataset.valid, dataset.n_users, all_users=True)
    _write_adjacency(out / "test.txt", dataset.test, dataset.n_users, all_users=True)
    _write_list(out / "user_list.txt", "org_id remap_id", dataset.user_ids, None)
    _write_list(out / "item_list.txt", "org_id remap_id item_name", dataset.item_ids, dataset.item_text)
    _write_list(out / "entity_list.txt", "org_id remap_id entity_name", dataset.entity_ids, dataset.entity_text)
    _write_list(out / "relation_list.txt", "org_id remap_id", dataset.relation_ids, None)
    if dataset.has_kg:
        _write_rows(out / "kg_final.txt", numpy_pairs(dataset.kg))
    if dataset.has_interests:
        original = torch.tensor(dataset.interest_ids, dtype=torch.long)
        table = numpy_pairs(torch.stack([dataset.user_interest[0], original[dataset.user_interest[1]]]))
        _write_rows(out / "user_interest_clustered.txt", table)
        # the list keeps interest nodes that no user links to (a subset of users drops their edges, not them)
        _write_list(out / "interest_list.txt", "org_id remap_id" + (" label" if dataset.interest_labels else ""),
                    [str(i) for i in dataset.interest_ids], dataset.interest_labels)
    meta = {k: v for k, v in dataset.meta.items() if k not in ("source", "warnings")}
    meta["name"] = dataset.name
    write_json_atomic(out / "meta.json", meta)
    return out


def load_interests(dataset: Dataset, path: PathLike) -> Dataset:
    """Replace ``dataset``'s interests with those of a ``user_interest_clustered.txt`` (or a directory holding
    one, and optionally its ``interest_list.txt`` labels), e.g. the output of ``cikg interests cluster``."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    file = path / "user_interest_clustered.txt" if path.is_dir() else path
    table, lines = read_int_table(file, 2)
    _check_range(file, table[:, 0], lines, dataset.n_users, "user")
    order = np.argsort(table[:, 0], kind="stable")
    users, originals, _ = _drop_duplicate_pairs(table[order, 0], table[order, 1], lines[order], file)
    interest_ids, labels = _interest_vocabulary(directory, originals)
    dense = np.searchsorted(interest_ids, originals)
    return dataset.with_interests(torch.from_numpy(np.stack([users, dense])), interest_ids.tolist(), labels,
                                  source=str(file))
