"""RecBole atomic files ⇄ :class:`Dataset`.

RecBole keeps a dataset ``<name>`` in a directory ``<name>/`` of tab-separated files whose header names each
column and its type (``user_id:token  item_id:token  rating:float  timestamp:float``; ``token_seq`` cells are
space-separated lists):

- ``<name>.inter`` (user, item, optional rating/timestamp), or the split as benchmark files
  ``<name>.train.inter`` / ``<name>.valid.inter`` / ``<name>.test.inter`` (RecBole reads them with
  ``benchmark_filename: [train, valid, test]``);
- ``<name>.user`` / ``<name>.item``: one row per user / item (ids first, then features such as a title);
- ``<name>.kg`` (``head_id relation_id tail_id``) and ``<name>.link`` (``item_id entity_id``).

:func:`export_recbole` writes the split as benchmark files without timestamps (each user's items keep cikg's
order, which is time order for temporally split data), every user in ``.user`` and every item with its title in
``.item``, user interests as a ``.user`` field ``interest_id:token_seq`` (original interest ids), so
:func:`read_recbole` gives the same dataset back (interest labels aside).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .._io import atomic_path
from ..errors import DatasetError
from .dataset import SPLITS, Dataset, pairs_to_csr
from .frames import Splitter, from_pandas
from .items import ItemCoverage, ItemTable, align_items, item_table

TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_NAMES = ("title", "movie_title", "book_title", "item_title", "name", "item_name")


# ---------------------------------------------------------------------------------------------- reading
def read_atomic(path: Path) -> Tuple[pd.DataFrame, Dict[str, str]]:
    """An atomic file as text columns named without their type, and the type of each column."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False,
                            encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot read as a RecBole atomic file ({err})", path) from None
    types: Dict[str, str] = {}
    for header in frame.columns:
        field, _, kind = str(header).rpartition(":")
        if not field or kind not in TYPES:
            raise DatasetError(f"header field {header!r} is not 'name:type' with type one of {TYPES}", path, 1)
        types[field] = kind
    frame.columns = list(types)
    return frame, types


def _require(frame: pd.DataFrame, fields: Sequence[str], path: Path) -> None:
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise DatasetError(f"missing field(s) {missing}; the header has {list(frame.columns)}", path, 1)


def _dataset_name(directory: Path, name: Optional[str]) -> str:
    if name:
        return name
    if any((directory / f"{directory.name}{suffix}").exists() for suffix in (".inter", ".train.inter")):
        return directory.name
    prefixes = sorted({p.name.split(".")[0] for p in directory.glob("*.inter")})
    if len(prefixes) == 1:
        return prefixes[0]
    raise DatasetError(f"expected <name>.inter or <name>.train.inter; found {prefixes or 'no .inter file'} "
                       "(pass --name)", directory)


def _interactions(directory: Path, name: str, user: str, item: str,
                  time: Optional[str]) -> Tuple[pd.DataFrame, Optional[str], List[str]]:
    """(frame with user, item[, split][, time], the time field used, the files read)."""
    benchmark = [s for s in SPLITS if (directory / f"{name}.{s}.inter").exists()]
    files = ([directory / f"{name}.{s}.inter" for s in benchmark] if {"train", "test"} <= set(benchmark)
             else [directory / f"{name}.inter"])
    if not files[0].exists():
        raise DatasetError(f"no {name}.inter and no {name}.train.inter / {name}.test.inter", directory)
    parts = []
    for path in files:
        frame, _ = read_atomic(path)
        time_field = time or ("timestamp" if "timestamp" in frame.columns else None)
        _require(frame, [user, item] + ([time_field] if time_field else []), path)
        part = frame[[user, item] + ([time_field] if time_field else [])].rename(columns={user: "user", item: "item"})
        if len(files) > 1:
            part["split"] = path.name[len(name) + 1:-len(".inter")]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    return frame, time_field, [p.name for p in files]


def _item_attributes(directory: Path, name: str, item_field: str, title_field: Optional[str],
                     attr_fields: Sequence[str]) -> Optional[ItemTable]:
    path = directory / f"{name}.item"
    if not path.exists():
        if title_field or attr_fields:
            raise DatasetError("no such file, but a title or attribute fields of it were asked for", path)
        return None
    frame, types = read_atomic(path)
    title = title_field or next((f for f in TITLE_NAMES if f in types), None)
    _require(frame, [item_field] + ([title] if title else []) + list(attr_fields), path)
    frame = frame.replace("", None)
    seq = [f for f in attr_fields if types[f] == "token_seq"]
    plain = [f for f in attr_fields if types[f] != "token_seq"]
    base = item_table(frame, item_field, title, plain, attr_sep=None, source=str(path))
    if not seq:
        return base
    extra = item_table(frame, item_field, None, seq, attr_sep=" ", source=str(path))
    return ItemTable(base.items, pd.concat([base.kg, extra.kg], ignore_index=True),
                     pd.concat([base.entities, extra.entities], ignore_index=True))


def _kg(directory: Path, name: str, item_ids: pd.Series) -> pd.DataFrame:
    """``.kg`` triples with linked entities replaced by their item id (the others are named by their token)."""
    kg_path, link_path = directory / f"{name}.kg", directory / f"{name}.link"
    if not kg_path.exists():
        return pd.DataFrame(columns=["head", "relation", "tail"])
    if not link_path.exists():
        raise DatasetError(f"a .kg file needs {link_path.name} (item_id entity_id) to tie entities to items", kg_path)
    kg, _ = read_atomic(kg_path)
    _require(kg, ["head_id", "relation_id", "tail_id"], kg_path)
    link, _ = read_atomic(link_path)
    _require(link, ["item_id", "entity_id"], link_path)
    to_item = pd.Series(link["item_id"].to_numpy(), index=link["entity_id"].to_numpy())
    if not to_item.index.is_unique:
        raise DatasetError(f"entity {to_item.index[to_item.index.duplicated()][0]!r} is linked to several items",
                           link_path)
    entities = pd.unique(pd.concat([kg["head_id"], kg["tail_id"]]))
    unlinked = entities[~pd.Index(entities).isin(to_item.index)]
    clash = unlinked[pd.Index(unlinked).isin(item_ids)]
    if clash.size:
        raise DatasetError(f"entity {clash[0]!r} is not in {link_path.name} but has the id of an item; cikg names "
                           "entities and items in one id space", kg_path)
    frame = pd.DataFrame({"head": kg["head_id"].map(to_item).fillna(kg["head_id"]).to_numpy(object),
                          "relation": kg["relation_id"].to_numpy(object),
                          "tail": kg["tail_id"].map(to_item).fillna(kg["tail_id"]).to_numpy(object)})
    return frame


def _user_interests(users: pd.Series, cells: pd.Series, path: Path) -> Dict[str, pd.DataFrame]:
    """``user_interest`` and ``interests`` frames from a ``.user`` ``interest_id:token_seq`` field."""
    pairs = pd.DataFrame({"user": users.to_numpy(), "interest": cells.str.split().to_numpy()}).explode("interest")
    pairs = pairs.dropna(subset=["interest"])
    if not pairs["interest"].str.fullmatch(r"\d{1,12}").all():
        bad = pairs["interest"][~pairs["interest"].str.fullmatch(r"\d{1,12}")].iloc[0]
        raise DatasetError(f"interest id {bad!r} is not a non-negative integer", path)
    order = sorted(pd.unique(pairs["interest"]), key=int)
    return {"user_interest": pairs, "interests": pd.DataFrame({"interest": order})}


def _users(path: Path, user: str, interacting: pd.Series) -> Dict[str, pd.DataFrame]:
    """The user order of ``.user`` (then users only in the interactions), and its interests when present."""
    if not path.exists():
        return {}
    user_frame, _ = read_atomic(path)
    listed = user_frame[user] if user in user_frame.columns else user_frame.iloc[:, 0]
    frames = {"users": pd.DataFrame({"user": pd.unique(pd.concat([listed, interacting]))})}
    if "interest_id" in user_frame.columns:
        frames.update(_user_interests(listed, user_frame["interest_id"], path))
    return frames


def read_recbole(directory: Path, *, name: Optional[str] = None, splitter: Optional[Splitter] = None,
                 user_field: Optional[str] = None, item_field: Optional[str] = None,
                 time_field: Optional[str] = None, title_field: Optional[str] = None,
                 attr_fields: Sequence[str] = (), items: Optional[ItemTable] = None,
                 keep_unused_items: bool = False, seed: int = 2024) -> Tuple[Dataset, Optional[ItemCoverage]]:
    """A :class:`Dataset` from RecBole atomic files in ``directory``.

    Benchmark files give the split as is (without ``.valid.inter`` a random 1/8 of train is carved); a single
    ``.inter`` is split by ``splitter`` (temporal by default when it has a ``timestamp`` field). Item text is
    ``title_field`` of ``.item`` (default: the first of ``title``, ``movie_title``, ... present); the items of
    ``.item`` are all kept, as RecBole does; ``attr_fields`` of ``.item`` become KG triples like the items
    file's attributes; ``items`` (an items CSV) replaces ``.item``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError("RecBole dataset directory not found", directory)
    name = _dataset_name(directory, name)
    user, item = user_field or "user_id", item_field or "item_id"
    frame, time_col, files = _interactions(directory, name, user, item, time_field)
    coverage = None
    keep = keep_unused_items
    if items is None:
        items, keep = _item_attributes(directory, name, item, title_field, attr_fields), True
    frames: Dict[str, pd.DataFrame] = {}
    kg_attr, entity_attr = pd.DataFrame(columns=["head", "relation", "tail"]), pd.DataFrame(columns=["entity"])
    if items is not None:
        items, coverage = align_items(items, frame["item"], keep_unused=keep)
        frames["items"] = items.items
        kg_attr, entity_attr = items.kg, items.entities
    item_ids = frames["items"]["item"] if "items" in frames else frame["item"]
    frames["kg"] = pd.concat([_kg(directory, name, item_ids), kg_attr], ignore_index=True)
    frames["entities"] = entity_attr
    frames.update(_users(directory / f"{name}.user", user, frame["user"]))
    has_split = "split" in frame.columns
    dataset = from_pandas(frame, name=name, time_col=time_col, splitter=None if has_split else splitter, seed=seed,
                          valid_fraction=0.0 if f"{name}.valid.inter" in files else 1 / 8, **frames)
    if dataset.has_interests:  # the tokens are the original interest ids, as in user_interest_clustered.txt
        dataset = dataset.with_interests(dataset.user_interest, [int(x) for x in dataset.interest_labels],
                                         source=str(directory / f"{name}.user"))
    dataset.meta["source"] = f"recbole:{directory.resolve()}"
    dataset.meta["split"]["files"] = files
    if coverage is not None:
        dataset.meta["items"] = coverage.as_meta()
    return dataset, coverage


# ---------------------------------------------------------------------------------------------- writing
def _tokens(values: Sequence[str], what: str) -> List[str]:
    out = [str(v) for v in values]
    bad = next((v for v in out if "\t" in v or "\n" in v or "\r" in v), None)
    if bad is not None:
        raise DatasetError(f"{what} {bad[:60]!r} holds a tab or line break, which a RecBole token cannot")
    return out


def _write(path: Path, header: Sequence[str], columns: Sequence[Sequence[str]]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\t".join(header) + "\n")
        fh.writelines(f"{row}\n" for row in map("\t".join, zip(*columns)))
    return path


def export_recbole(dataset: Dataset, directory: Path, name: Optional[str] = None) -> List[Path]:
    """Write ``dataset`` as RecBole atomic files in ``directory`` (prefix ``name``, default its folder name).

    The split goes in benchmark files (``<name>.train/.valid/.test.inter``, no timestamps); titles (their
    whitespace made single spaces) in ``.item``; the KG in ``.kg`` + ``.link`` with cikg's entity ids as tokens.
    Returns the paths written.
    """
    directory = Path(directory)
    name = name or directory.name
    directory.mkdir(parents=True, exist_ok=True)
    users = np.asarray(_tokens(dataset.user_ids, "user id"), dtype=object)
    items = np.asarray(_tokens(dataset.item_ids, "item id"), dtype=object)
    user_columns, header = [users], ["user_id:token"]
    if dataset.has_interests:  # original interest ids (what user_interest_clustered.txt holds); labels stay in cikg
        original = np.asarray([str(i) for i in dataset.interest_ids], dtype=object)
        indptr, indices = (t.numpy() for t in pairs_to_csr(dataset.user_interest, dataset.n_users))
        header.append("interest_id:token_seq")
        user_columns.append([" ".join(original[indices[indptr[u]:indptr[u + 1]]]) for u in range(dataset.n_users)])
    written = [_write(directory / f"{name}.user", header, user_columns)]
    titles = [" ".join(t.split()) if t else "" for t in dataset.item_text]
    written.append(_write(directory / f"{name}.item", ["item_id:token", "title:token_seq"], [items, titles]))
    for split in SPLITS:
        pairs = dataset.split(split).numpy()
        written.append(_write(directory / f"{name}.{split}.inter", ["user_id:token", "item_id:token"],
                              [users[pairs[0]], items[pairs[1]]]))
    if dataset.has_kg:
        entities = np.asarray(_tokens(dataset.entity_ids, "entity id"), dtype=object)
        duplicated = pd.Index(entities).duplicated()
        if duplicated.any():
            raise DatasetError(f"entity id {entities[duplicated][0]!r} names two entities; RecBole tokens must "
                               "be unique")
        relations = np.asarray(_tokens(dataset.relation_ids, "relation id"), dtype=object)
        kg = dataset.kg.numpy()
        written.append(_write(directory / f"{name}.kg", ["head_id:token", "relation_id:token", "tail_id:token"],
                              [entities[kg[0]], relations[kg[1]], entities[kg[2]]]))
        written.append(_write(directory / f"{name}.link", ["item_id:token", "entity_id:token"],
                              [items, entities[: dataset.n_items]]))
    return written
