"""Property-based tests: every reader gets random and mutated versions of slices of the real datasets.

Each input either loads, and then every count and pair set equals an independent reference parse written
here from the format's definition (``/work/shared/data/README.md``, ``cikg.data.io``), or it raises the
documented :class:`~cikg.errors.CikgError` subclass naming the file (and the line, where there is one) that
the reference says is wrong. Any other exception, or a load whose counts differ from the reference, fails.

Hypothesis runs derandomised (a fixed seed per test) with bounded ``max_examples``, so CI sees the same
inputs every time; ``COUNTS`` holds how many inputs each test tried (printed at the end of the module, and
quoted in ``docs/reliability.md``).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cikg.config import load_yaml, parse_overrides
from cikg.data import from_pandas, load_dataset
from cikg.data.io import MAX_ID, SPARSE_ID_SLACK
from cikg.errors import CikgError, ConfigError, DatasetError
from cikg.interests import read_raw_interests
from cikg.llm.replay import read_replay
from cikg.train import load_run_config

DATA = Path(os.environ.get("CIKG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SOURCE = DATA / "book-crossing"
SCALE = float(os.environ.get("CIKG_PROPERTY_SCALE", "1"))  # CIKG_PROPERTY_SCALE=10 for a long local run
COUNTS: Counter = Counter()


def profile(n: int):
    """The fixed, derandomised profile: the same ``n`` inputs on every run."""
    return settings(max_examples=max(1, int(n * SCALE)), derandomize=True, deadline=None, database=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                            HealthCheck.function_scoped_fixture,
                                                            HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\nproperty-test inputs tried:", dict(sorted(COUNTS.items())))


# ------------------------------------------------------------------------------------------- the slice
INT_FILES = ("train.txt", "test.txt", "kg_final.txt", "user_interest_clustered.txt")
LIST_FILES = ("user_list.txt", "item_list.txt", "entity_list.txt", "relation_list.txt")
FILES = INT_FILES + LIST_FILES + ("interest_list.txt", "meta.json")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small real dataset: the first 30 users of book-crossing (train, test), 40 KG triples, these users'
    interests, and the id lists cut to the ids in use (so ids beyond a list's length are real errors)."""
    if not SOURCE.is_dir():
        pytest.fail(f"real dataset not found at {SOURCE}")
    out = tmp_path_factory.mktemp("bx-slice")
    lines = {name: (SOURCE / name).read_bytes().splitlines(keepends=True) for name in INT_FILES + LIST_FILES}
    (out / "train.txt").write_bytes(b"".join(lines["train.txt"][:30]))
    (out / "test.txt").write_bytes(b"".join(lines["test.txt"][:30]))
    (out / "kg_final.txt").write_bytes(b"".join(lines["kg_final.txt"][:40]))
    ui = [line for line in lines["user_interest_clustered.txt"] if int(line.split()[0]) < 30][:60]
    (out / "user_interest_clustered.txt").write_bytes(b"".join(ui))
    ints = {name: _ref_int_lines((out / name).read_bytes()) for name in INT_FILES}
    n_users = 1 + max(line[0] for name in ("train.txt", "test.txt") for line in ints[name])
    n_items = 1 + max(i for name in ("train.txt", "test.txt") for line in ints[name] for i in line[1:])
    n_entities = 1 + max(max(h, t) for h, _, t in ints["kg_final.txt"])
    for name, n in (("user_list.txt", n_users), ("item_list.txt", n_items), ("entity_list.txt", n_entities),
                    ("relation_list.txt", len(lines["relation_list.txt"]))):
        (out / name).write_bytes(b"".join(lines[name][: n + 1]))
    interests = sorted({line[1] for line in ints["user_interest_clustered.txt"]})
    (out / "interest_list.txt").write_text("org_id remap_id label\n" + "".join(
        f"{org} {dense} interest number {org}\n" for dense, org in enumerate(interests)))
    (out / "meta.json").write_text('{"name": "bx-slice"}\n')
    ds = load_dataset(out)  # the unmutated slice loads, with the reference's counts
    assert reference(out).counts == counts_of(ds)
    assert (ds.n_users, ds.n_items, ds.n_relations, ds.kg.size(1)) == (30, n_items, 4, 40)
    assert ds.interest_labels[0] == f"interest number {interests[0]}"
    return out


# ------------------------------------------------------------------------------------------- reference
ASCII_WS = " \t\n\r\x0b\x0c"


class Invalid(Exception):
    """The reference's verdict: ``file`` is wrong; ``lines`` are the lines an error may name (None: any)."""

    def __init__(self, file: str, lines: Optional[Set[int]] = None):
        super().__init__(file)
        self.file, self.lines = file, lines


def _ref_int_lines(data: bytes, file: str = "?") -> List[List[int]]:
    """Integer rows of a whitespace-separated file: only ASCII digits, spaces, tabs, CR and LF allowed."""
    numbered = _ref_int_rows(data, file)
    return [row for _, row in numbered]


def _ref_int_rows(data: bytes, file: str) -> List[Tuple[int, List[int]]]:
    rows, bad = [], set()
    for number, line in enumerate(data.split(b"\n"), 1):
        tokens = line.split()
        if any(chr(b) not in " \t\r0123456789" for b in line) or any(len(t) > 12 for t in tokens):
            bad.add(number)  # a character other than digits and whitespace, or an id of more than 12 digits
        elif tokens:
            rows.append((number, [int(t) for t in tokens]))
    if bad:
        raise Invalid(file, bad)
    if not rows:
        raise Invalid(file, None)
    return rows


def _ref_list(data: bytes, file: str) -> int:
    """The number of entries of an ``org_id remap_id [text]`` list (remap ids exactly 0..n-1)."""
    return len(_ref_list_orgs(data, file))


def _has_label_column(data: bytes) -> bool:
    """Whether a (valid, already checked) ``org_id remap_id [label]`` list has its third column."""
    return len(data.decode("utf-8").split("\n", 1)[0].split()) > 2


def _ref_list_orgs(data: bytes, file: str) -> List[str]:
    """The original ids of an ``org_id remap_id [text]`` list, in remap id order."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(file) from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise Invalid(file)
    header = lines[0].split()
    if len(header) < 2 or header[1] != "remap_id":
        raise Invalid(file, {1})
    with_text = len(header) > 2
    remaps, orgs = [], []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        if with_text:  # the first all-digit token that follows whitespace
            match = re.search(r"[ \t\n\r\x0b\x0c]+([0-9]+)(?=[ \t\n\r\x0b\x0c]|$)", line)
            token = match.group(1) if match else None
            org = line[: match.start()] if match else None
        else:  # the last token, after whitespace
            stripped = line.rstrip(ASCII_WS)
            cut = max(stripped.rfind(c) for c in ASCII_WS)
            token = stripped[cut + 1:] if cut >= 0 else None
            token = token if token and all(c in "0123456789" for c in token) else None
            org = stripped[:cut].rstrip(ASCII_WS) if token else None
        if token is None or len(token) > 12:
            raise Invalid(file, {number})
        remaps.append(int(token))
        orgs.append(org)
    if sorted(remaps) != list(range(len(remaps))):
        raise Invalid(file)
    return [org for _, org in sorted(zip(remaps, orgs))]


class Reference:
    def __init__(self, counts: Dict[str, object]):
        self.counts = counts


def _lines_with(rows, column_sets, predicate) -> Set[int]:
    return {number for number, row in rows for col in column_sets(row) if predicate(col)}


def reference(directory: Path) -> Reference:
    """An independent parse of a dataset directory, checking in the order the loader documents; raises
    :class:`Invalid` naming the first file (and possible lines) the loader must reject."""
    files = {name: (directory / name).read_bytes() for name in FILES if (directory / name).exists()}
    lists = {name: _ref_list(files[name], name) for name in LIST_FILES if name in files}
    adj = {name: _ref_int_rows(files[name], name) for name in ("train.txt", "test.txt")}

    def count(kind, list_name, sources, minimum=0):
        # sources: (file, rows, function row -> ids)
        if list_name in lists:
            n = max(lists[list_name], minimum)
            for file, rows, ids in sources:
                bad = _lines_with(rows, ids, lambda i: i >= n)
                if bad:
                    raise Invalid(file, bad)
            return n
        used = [i for _, rows, ids in sources for _, row in rows for i in ids(row)]
        if not used:
            return minimum
        n = max(max(used) + 1, minimum)
        distinct = max(len(set(used)), minimum)
        if n > 10 * distinct + SPARSE_ID_SLACK:
            top = max(used)
            where = [(file, _lines_with(rows, ids, lambda i: i == top)) for file, rows, ids in sources]
            file, lines = next((f, lines) for f, lines in where if lines)
            raise Invalid(file, lines)
        return n

    first = lambda row: row[:1]  # noqa: E731
    rest = lambda row: row[1:]  # noqa: E731
    n_users = count("user", "user_list.txt", [(f, adj[f], first) for f in ("train.txt", "test.txt")])
    n_items = count("item", "item_list.txt", [(f, adj[f], rest) for f in ("train.txt", "test.txt")])
    kg: Set[tuple] = set()
    n_entities, n_relations = n_items, 0
    if "kg_final.txt" in files:
        rows = _ref_int_rows(files["kg_final.txt"], "kg_final.txt")
        wrong = {number for number, row in rows if len(row) != 3}
        if wrong:
            raise Invalid("kg_final.txt", {min(wrong)})
        n_entities = count("entity", "entity_list.txt",
                           [("kg_final.txt", rows, lambda r: r[:1]), ("kg_final.txt", rows, lambda r: r[2:])],
                           minimum=n_items)
        n_relations = count("relation", "relation_list.txt", [("kg_final.txt", rows, lambda r: r[1:2])])
        kg = {tuple(row) for _, row in rows}
    ui: Set[tuple] = set()
    if "user_interest_clustered.txt" in files:
        rows = _ref_int_rows(files["user_interest_clustered.txt"], "user_interest_clustered.txt")
        wrong = {number for number, row in rows if len(row) != 2}
        if wrong:
            raise Invalid("user_interest_clustered.txt", {min(wrong)})
        bad = _lines_with(rows, first, lambda u: u >= n_users)
        if bad:
            raise Invalid("user_interest_clustered.txt", bad)
        ui = {tuple(row) for _, row in rows}
    name = directory.name
    if "meta.json" in files:
        try:
            meta = json.loads(files["meta.json"].decode("utf-8"))
        except (ValueError, RecursionError):
            raise Invalid("meta.json") from None
        if not isinstance(meta, dict):
            raise Invalid("meta.json")
        name = str(meta.get("name", name))
    if "interest_list.txt" in files and ui:
        orgs = _ref_list_orgs(files["interest_list.txt"], "interest_list.txt")
        if not all(o and o.isascii() and o.isdigit() for o in orgs):
            raise Invalid("interest_list.txt")
        if any(int(o) >= MAX_ID for o in orgs):
            raise Invalid("interest_list.txt")
        listed = {int(o) for o in orgs}
        if not {i for _, i in ui} <= listed and _has_label_column(files["interest_list.txt"]):
            raise Invalid("interest_list.txt")
    else:
        listed = set()
    pairs = {f: {(row[0], i) for _, row in adj[f] for i in row[1:]} for f in adj}
    # the list's ids are interest nodes even without an edge (save_dataset keeps those of a user subset)
    return Reference({"name": name, "users": n_users, "items": n_items, "entities": n_entities,
                      "relations": n_relations, "kg": kg, "user_interest": ui,
                      "interests": len({i for _, i in ui} | listed), "train": pairs["train.txt"],
                      "test": pairs["test.txt"]})


def _pairs(t: torch.Tensor) -> Set[tuple]:
    return set(map(tuple, t.t().tolist()))


def counts_of(ds) -> Dict[str, object]:
    original = torch.tensor(ds.interest_ids, dtype=torch.long)
    ui = _pairs(torch.stack([ds.user_interest[0], original[ds.user_interest[1]]])) if ds.has_interests else set()
    train = _pairs(ds.train) | _pairs(ds.valid)
    assert ds.train.size(1) + ds.valid.size(1) == len(train)  # train and valid are disjoint, no duplicates
    return {"name": ds.name, "users": ds.n_users, "items": ds.n_items, "entities": ds.n_entities,
            "relations": ds.n_relations, "kg": _pairs(ds.kg), "user_interest": ui, "interests": ds.n_interests,
            "train": train, "test": _pairs(ds.test)}


# ------------------------------------------------------------------------------------------- mutations
SEPARATORS = [b",", b";", b"\t", b"  ", b"|", b"\x0b", b"\xa0", b"\xc2\xa0", b"\r", b"\x00", b":"]
UNICODE = ["\u2028", "\x0c", "\x85", "\u00a0", "\u3000", "\ufeff", "\u0663", "é", "\U0001F600"]


@st.composite
def mutation(draw, data: bytes) -> Tuple[str, bytes]:
    kind = draw(st.sampled_from([
        "truncate", "no_trailing_newline", "crlf", "separator", "non_utf8", "token", "empty", "whitespace_only",
        "delete_line", "duplicate_line", "swap_lines", "blob", "extra_column", "drop_column", "bom",
        "blank_lines", "unicode", "several"]))
    lines = data.split(b"\n")
    line_idx = draw(st.integers(0, max(len(lines) - 1, 0)))
    offset = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return kind, data[:offset]
    if kind == "no_trailing_newline":
        return kind, data.rstrip(b"\n")
    if kind == "crlf":
        return kind, data.replace(b"\n", b"\r\n")
    if kind == "separator":
        spaces = [m.start() for m in re.finditer(b" ", data)]
        assume(spaces)
        at = spaces[draw(st.integers(0, len(spaces) - 1))]
        return kind, data[:at] + draw(st.sampled_from(SEPARATORS)) + data[at + 1:]
    if kind == "non_utf8":
        junk = draw(st.binary(min_size=1, max_size=4).map(lambda b: bytes(0x80 | x for x in b)))
        return kind, data[:offset] + junk + data[offset:]
    if kind == "token":
        tokens = list(re.finditer(rb"[^ \t\r\n]+", data))
        assume(tokens)
        tok = tokens[draw(st.integers(0, len(tokens) - 1))]
        old = tok.group()
        new = draw(st.sampled_from([
            b"9" * draw(st.integers(13, 40)),  # huge id
            b"9" * 12, b"1" + b"0" * 11,  # the largest accepted width
            str(draw(st.integers(0, 20_000))).encode(),  # often beyond the declared count
            str(draw(st.integers(1_000_000, 10**11))).encode(),
            b"-" + old, old + b".5", b"0x1f", b"1e3", b"", b"+" + old, b"0" + old, b"\xef\xbb\xbf" + old,
            b"NaN", b"None"]))
        return kind, data[:tok.start()] + new + data[tok.end():]
    if kind == "empty":
        return kind, b""
    if kind == "whitespace_only":
        return kind, b"\n \n\t\n"
    if kind == "delete_line":
        return kind, b"\n".join(lines[:line_idx] + lines[line_idx + 1:])
    if kind == "duplicate_line":
        return kind, b"\n".join(lines[:line_idx + 1] + lines[line_idx:])
    if kind == "swap_lines":
        other = draw(st.integers(0, max(len(lines) - 1, 0)))
        lines = list(lines)
        lines[line_idx], lines[other] = lines[other], lines[line_idx]
        return kind, b"\n".join(lines)
    if kind == "blob":
        return kind, data[:offset] + draw(st.binary(min_size=1, max_size=30)) + data[offset:]
    if kind == "extra_column":
        lines = list(lines)
        lines[line_idx] = lines[line_idx] + b" " + str(draw(st.integers(0, 50))).encode()
        return kind, b"\n".join(lines)
    if kind == "drop_column":
        lines = list(lines)
        lines[line_idx] = b" ".join(lines[line_idx].split()[:-1])
        return kind, b"\n".join(lines)
    if kind == "bom":
        return kind, b"\xef\xbb\xbf" + data
    if kind == "blank_lines":
        return kind, data[:offset] + b"\n\n  \n" + data[offset:]
    if kind == "unicode":
        return kind, data[:offset] + draw(st.sampled_from(UNICODE)).encode("utf-8") + data[offset:]
    # several: two mutations in a row
    _, once = draw(mutation(data))
    _, twice = draw(mutation(once))
    return kind, twice


def _materialise(base: Path, changed: Dict[str, Optional[bytes]]) -> Path:
    """A fresh directory: ``changed`` files written (None: removed), the rest linked to ``base``."""
    target = Path(tempfile.mkdtemp(prefix="case-", dir=base.parent))
    for name in FILES:
        if name in changed:
            if changed[name] is not None:
                (target / name).write_bytes(changed[name])
        else:
            os.symlink(base / name, target / name)
    return target


def check_load(directory: Path, label: str) -> str:
    """Load ``directory``; compare with the reference's verdict. Returns "loaded" or "rejected"."""
    try:
        expected = reference(directory)
    except Invalid as invalid:
        expected = invalid
    try:
        ds = load_dataset(directory)
    except DatasetError as err:
        assert isinstance(expected, Invalid), f"{label}: the loader rejected a valid input: {err}"
        assert err.path is not None and Path(err.path).name == expected.file, \
            f"{label}: expected an error naming {expected.file}, got {err}"
        assert str(err).startswith(err.path), str(err)
        if expected.lines is not None and err.line is not None:
            assert err.line in expected.lines, f"{label}: line {err.line} not among {sorted(expected.lines)[:5]}"
        if err.line is None and expected.lines is not None and Path(err.path).name in INT_FILES:
            pytest.fail(f"{label}: the error names no line: {err}")
        return "rejected"
    except CikgError as err:  # pragma: no cover - the documented family, but not the documented class
        pytest.fail(f"{label}: {type(err).__name__} instead of DatasetError: {err}")
    assert not isinstance(expected, Invalid), \
        f"{label}: loaded, but {expected.file} (lines {expected.lines}) is invalid per the reference"
    got = counts_of(ds)
    for key, value in expected.counts.items():
        assert got[key] == value, f"{label}: {key}: loaded {_short(got[key])}, reference {_short(value)}"
    return "loaded"


def _short(value) -> str:
    return f"{len(value)} entries" if isinstance(value, set) else repr(value)


# ------------------------------------------------------------------------------------------- datasets
@pytest.mark.slow  # ~22 s: 300 mutated datasets; every mutation kind once stays in the default suite
@profile(300)
@given(data=st.data())
def test_mutated_dataset_files_load_exactly_or_fail_naming_the_file(base, data):
    """One file of the real slice mutated (sometimes twice): loaded counts equal the reference's, or a
    DatasetError names the file the reference rejects, and an offending line."""
    name = data.draw(st.sampled_from(FILES), label="file")
    kind, mutated = data.draw(mutation((base / name).read_bytes()), label="mutation")
    directory = _materialise(base, {name: mutated})
    try:
        outcome = check_load(directory, f"{name}/{kind}")
    finally:
        shutil.rmtree(directory)
    COUNTS["dataset: inputs"] += 1
    COUNTS[f"dataset: {outcome}"] += 1


@profile(60)
@given(data=st.data())
def test_missing_optional_files_and_ids_beyond_declared_counts(base, data):
    """Optional files removed (lists, KG, interests, meta) and a line appended with an id at, just below or
    far beyond a declared count: the same oracle."""
    removed = data.draw(st.sets(st.sampled_from(LIST_FILES + ("kg_final.txt", "user_interest_clustered.txt",
                                                              "meta.json")), max_size=4), label="removed")
    target = data.draw(st.sampled_from(INT_FILES), label="file")
    ds = load_dataset(base)
    limit = {"train.txt": ds.n_users, "test.txt": ds.n_items, "kg_final.txt": ds.n_entities,
             "user_interest_clustered.txt": ds.n_users}[target]
    value = data.draw(st.sampled_from([limit - 1, limit, limit + 1, 10 * limit + SPARSE_ID_SLACK + 10**6,
                                       MAX_ID - 1]), label="id")
    line = {"train.txt": f"{value} 3 4", "test.txt": f"2 {value}", "kg_final.txt": f"5 1 {value}",
            "user_interest_clustered.txt": f"{value} 9000"}[target]
    changed: Dict[str, Optional[bytes]] = {name: None for name in removed}
    if target not in removed:
        changed[target] = (base / target).read_bytes() + line.encode() + b"\n"
    directory = _materialise(base, changed)
    try:
        outcome = check_load(directory, f"-{sorted(removed)} +{target}:{line}")
    finally:
        shutil.rmtree(directory)
    COUNTS["dataset (files removed, ids at limits): inputs"] += 1
    COUNTS[f"dataset (files removed, ids at limits): {outcome}"] += 1


def test_every_mutation_kind_is_exercised_on_each_file(base):
    """A fixed sweep (no hypothesis): each mutation kind on each file, at a fixed place; pins the cases the
    issue names (truncated line, wrong separator, non-UTF-8, huge/negative ids, empty file, no trailing
    newline, Windows line ends) so they are tried on every run whatever hypothesis draws."""
    cases = {
        "truncated line": lambda d: d[: len(d) // 2],
        "no trailing newline": lambda d: d.rstrip(b"\n"),
        "windows line ends": lambda d: d.replace(b"\n", b"\r\n"),
        "comma separator": lambda d: d.replace(b" ", b",", 1),
        "tab separators": lambda d: d.replace(b" ", b"\t"),
        "non-UTF-8 byte": lambda d: d[:5] + b"\xff\xfe" + d[5:],
        "huge id": lambda d: re.sub(rb"\d+", b"9" * 20, d, count=1),
        "negative id": lambda d: re.sub(rb"(\s)(\d+)", rb"\1-\2", d, count=1),
        "empty file": lambda d: b"",
        "byte-order mark": lambda d: b"\xef\xbb\xbf" + d,
    }
    outcomes = Counter()
    for name in FILES:
        for label, change in cases.items():
            directory = _materialise(base, {name: change((base / name).read_bytes())})
            try:
                outcomes[check_load(directory, f"{name}/{label}")] += 1
            finally:
                shutil.rmtree(directory)
    COUNTS["dataset (fixed sweep): inputs"] += sum(outcomes.values())
    for outcome, n in outcomes.items():
        COUNTS[f"dataset (fixed sweep): {outcome}"] += n
    # Windows line ends and a missing final newline load everywhere; a truncated line is fine or not
    assert outcomes["loaded"] >= 2 * len(FILES) and outcomes["rejected"] >= 5 * len(FILES) - 6


# ------------------------------------------------------------------------------------------- JSONL readers
@st.composite
def jsonl_line(draw) -> str:
    """A replay / raw-interest line: nine in ten well-formed, else a field of a wrong type or broken JSON."""
    record = {"user": draw(st.integers(0, 40)), "user_id": draw(st.one_of(st.text(max_size=6), st.none())),
              "phrases": draw(st.lists(st.text(max_size=12), max_size=5)), "raw": draw(st.text(max_size=30)),
              "status": draw(st.sampled_from(["ok", "ok", "failed", "unparsable"])),
              "key": draw(st.text(alphabet="0123456789abcdef", max_size=8))}
    if draw(st.integers(0, 9)) == 0:
        field = draw(st.sampled_from(["user", "phrases", "raw", "user_id", "drop", "json"]))
        if field == "user":
            record["user"] = draw(st.one_of(st.integers(-5, -1), st.integers(10**12, 10**30), st.none(),
                                            st.text(max_size=3), st.floats(allow_nan=True), st.booleans()))
        elif field == "phrases":
            record["phrases"] = draw(st.one_of(st.text(max_size=10), st.none(), st.lists(st.integers(), max_size=2)))
        elif field == "raw":
            record["raw"] = draw(st.one_of(st.none(), st.integers(), st.lists(st.text(), max_size=2)))
        elif field == "user_id":
            record["user_id"] = draw(st.integers(0, 99))
        elif field == "drop":
            del record[draw(st.sampled_from(list(record)))]
        else:
            text = json.dumps(record)
            return draw(st.sampled_from([
                text[: draw(st.integers(0, max(len(text) - 1, 0)))], json.dumps([record]), "[" * 5000 + "]" * 5000,
                '{"user": 1' + "0" * 5000 + "}", draw(st.text(max_size=20))]))
    return json.dumps(record, ensure_ascii=draw(st.booleans()))


def _jsonl_bytes(draw, lines: List[str]) -> bytes:
    data = "\n".join(lines).encode("utf-8")
    ending = draw(st.sampled_from(["\n", "", "\r\n"]))
    if ending == "\r\n":
        data = data.replace(b"\n", b"\r\n")
    data += ending.encode()
    if draw(st.integers(0, 9)) == 0:  # sometimes a non-UTF-8 byte
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff" + data[at:]
    return data


NOT_JSON = object()


def _ref_jsonl(data: bytes):
    """``[(line number, object or NOT_JSON)]``, or ("bad", line) when the file is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return "bad", data[: err.start].count(b"\n") + 1
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except (ValueError, RecursionError):
            out.append((number, NOT_JSON))
    return out


@profile(150)
@given(data=st.data())
def test_replay_files(tmp_path, data):
    lines = data.draw(st.lists(jsonl_line(), max_size=8), label="lines")
    raw = _jsonl_bytes(data.draw, lines)
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "replay.jsonl"
    path.write_bytes(raw)
    parsed = _ref_jsonl(raw)
    expected_bad = parsed[1] if isinstance(parsed, tuple) else None
    expected_users: Dict[str, str] = {}
    if expected_bad is None:
        for number, obj in parsed:
            if obj is NOT_JSON or not isinstance(obj, dict) or "user_id" not in obj or "raw" not in obj or \
                    (obj["raw"] is not None and not isinstance(obj["raw"], str)):
                expected_bad = number
                break
            if obj.get("status", "ok") == "ok" and obj["raw"] is not None and obj["user_id"] is not None:
                expected_users[str(obj["user_id"])] = obj["raw"]
    try:
        by_key, by_user = read_replay(path)
    except DatasetError as err:
        assert expected_bad is not None, f"valid replay file rejected: {err}"
        assert err.path == str(path) and err.line == expected_bad, str(err)
        COUNTS["replay: rejected"] += 1
    else:
        assert expected_bad is None, f"line {expected_bad} is invalid but the file loaded"
        assert {u: item["raw"] for u, item in by_user.items()} == expected_users
        COUNTS["replay: loaded"] += 1
    COUNTS["replay: inputs"] += 1


@profile(150)
@given(data=st.data())
def test_raw_interest_files(tmp_path, data):
    lines = data.draw(st.lists(jsonl_line(), max_size=8), label="lines")
    raw = _jsonl_bytes(data.draw, lines)
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "user_interests_raw.jsonl"
    path.write_bytes(raw)
    parsed = _ref_jsonl(raw)
    expected_bad = parsed[1] if isinstance(parsed, tuple) else None
    users: Dict[int, list] = {}
    if expected_bad is None:
        for number, obj in parsed:
            user = obj.get("user") if isinstance(obj, dict) else None
            phrases = obj.get("phrases", []) if isinstance(obj, dict) else None
            phrases = [] if phrases is None else phrases
            if not isinstance(obj, dict) or isinstance(user, bool) or not isinstance(user, int) or \
                    not 0 <= user <= MAX_ID or not isinstance(phrases, list) or \
                    not all(isinstance(p, str) for p in phrases):
                expected_bad = number
                break
            users[user] = phrases  # the later line wins
    try:
        frame = read_raw_interests(path)
    except DatasetError as err:
        assert expected_bad is not None, f"valid interest file rejected: {err}"
        assert err.path == str(path) and err.line == expected_bad, str(err)
        COUNTS["raw interests: rejected"] += 1
    else:
        assert expected_bad is None, f"line {expected_bad} is invalid but the file loaded"
        assert sorted(set(frame["user"])) == sorted(users)
        assert len(frame) == sum(max(len(p), 1) for p in users.values())
        assert int(frame["phrase"].notna().sum()) == sum(len(p) for p in users.values())
        COUNTS["raw interests: loaded"] += 1
    COUNTS["raw interests: inputs"] += 1


# ------------------------------------------------------------------------------------------- YAML configs
KNOWN = {
    "data": ["dataset", "valid_fraction", "split_seed", "include_kg", "synthetic_users", "synthetic_items"],
    "train": ["epochs", "batch_size", "lr", "weight_decay", "patience", "ks", "select", "seed", "threads",
              "device", "max_batches", "eval_every"],
    "model": ["name", "dim", "layers", "max_mask_rate", "min_mask_rate", "l2", "cl_anchor", "edge_dropout"],
}
VALUES = st.one_of(st.integers(-3, 5000), st.integers(2**63 - 2, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=8), st.booleans(), st.none(), st.lists(st.integers(-2, 120), max_size=3),
                   st.sampled_from(["cikgrec", "lightgcn", "kgat", "bprmf", "recall@20", "cpu", "1e-3", ".inf",
                                    "synthetic", "full", "2001-13-01"]),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def config_mapping(draw) -> dict:
    out: dict = {}
    for section, keys in KNOWN.items():
        if draw(st.booleans()):
            chosen = draw(st.sets(st.sampled_from(keys + ["bogus_key"]), max_size=3))
            out[section] = {k: draw(VALUES) for k in chosen}
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(["trainer", "graph", "name", 3]))] = draw(VALUES)
    return out


def _finite_numbers(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite_numbers(v) for v in obj)
    return True


@profile(200)
@given(mapping=config_mapping())
def test_yaml_configs_load_or_name_the_key(tmp_path, mapping):
    """Random configs (unknown keys, wrong types, out-of-range values) written as YAML: a RunConfig whose
    values are well-typed, finite and round-trip, or a ConfigError naming a key of the mapping."""
    import yaml

    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "run.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    try:
        config = load_run_config(path)
    except ConfigError as err:
        sections = set(map(str, mapping)) | {"model.name", "graph"}
        assert err.key is not None, f"no key named: {err}"
        assert str(err.key).split(".")[0] in sections or err.key in sections, (err.key, mapping)
        assert str(err).startswith(f"config key {err.key!r}"), str(err)
        COUNTS["yaml configs: rejected"] += 1
    else:
        as_dict = config.to_dict()
        assert _finite_numbers(as_dict)
        assert config.train.lr > 0 and 0 <= config.data.valid_fraction < 1 and min(config.train.ks) >= 1
        assert 0 <= config.train.seed < 2**63 and config.train.epochs >= 1
        from cikg.train.config import run_config_from_dict

        assert run_config_from_dict(as_dict).to_dict() == as_dict
        COUNTS["yaml configs: loaded"] += 1
    COUNTS["yaml configs: inputs"] += 1


@profile(100)
@given(raw=st.binary(max_size=60) | st.text(max_size=60).map(lambda t: t.encode("utf-8")))
def test_arbitrary_yaml_bytes(tmp_path, raw):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "any.yaml"
    path.write_bytes(raw)
    try:
        data = load_yaml(path)
    except ConfigError as err:
        assert str(path) in str(err)
        COUNTS["yaml bytes: rejected"] += 1
    else:
        assert isinstance(data, dict)
        COUNTS["yaml bytes: loaded"] += 1
    COUNTS["yaml bytes: inputs"] += 1


OVERRIDE = st.one_of(
    st.text(max_size=20),
    st.builds(lambda key, value: f"{key}={value}",
              st.sampled_from([f"{section}.{key}" for section, keys in KNOWN.items() for key in keys]),
              st.one_of(st.integers(-2, 3000).map(str), st.sampled_from(
                  ["5e-4", "-0.1", "1.5", "nan", "inf", "[10, 20]", "[recall@20]", "true", "cikgrec", "{a: 1}",
                   "2001-13-01", "", "[", "0.75", "2", "9223372036854775808"]))))


@profile(100)
@given(items=st.lists(OVERRIDE, max_size=3))
def test_overrides_never_raise_anything_but_config_errors(items):
    try:
        nested = parse_overrides(items)
        load_run_config(None, items)
    except ConfigError:
        COUNTS["overrides: rejected"] += 1
    else:
        assert isinstance(nested, dict)
        COUNTS["overrides: loaded"] += 1
    COUNTS["overrides: inputs"] += 1


# ------------------------------------------------------------------------------------------- pandas frames
@pytest.fixture(scope="module")
def real_frame(base) -> pd.DataFrame:
    from cikg.data import to_pandas

    return to_pandas(load_dataset(base))["interactions"]


@st.composite
def frame_mutation(draw, frame: pd.DataFrame):
    frame = frame.sample(n=draw(st.integers(0, len(frame))), random_state=draw(st.integers(0, 99))).copy()
    frame = frame.reset_index(drop=True)
    kind = draw(st.sampled_from(["none", "nan_user", "nan_item", "bad_split", "drop_split", "drop_column",
                                 "mixed_types", "duplicates", "none_item"]))
    if len(frame) and kind in ("nan_user", "nan_item", "none_item", "bad_split", "mixed_types"):
        row = draw(st.integers(0, len(frame) - 1))
        column = {"nan_user": "user", "nan_item": "item", "none_item": "item", "bad_split": "split",
                  "mixed_types": "user"}[kind]
        value = {"nan_user": float("nan"), "nan_item": float("nan"), "none_item": None,
                 "bad_split": draw(st.sampled_from(["TRAIN", "validation", None, 3])),
                 "mixed_types": draw(st.integers(0, 40))}[kind]
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    elif kind == "drop_split":
        frame = frame.drop(columns="split")
    elif kind == "drop_column":
        frame = frame.drop(columns=draw(st.sampled_from(["user", "item"])))
    elif kind == "duplicates" and len(frame):
        frame = pd.concat([frame, frame.head(draw(st.integers(1, len(frame))))], ignore_index=True)
    return kind, frame


@profile(120)
@given(data=st.data())
def test_pandas_frames(real_frame, data):
    kind, frame = data.draw(frame_mutation(real_frame), label="frame")
    try:
        ds = from_pandas(frame, seed=1)
    except DatasetError as err:
        assert "frame" in str(err), str(err)
        bad = ("user" not in frame or "item" not in frame or frame.empty
               or frame[["user", "item"]].isna().any().any()
               or ("split" in frame and not frame["split"].isin(["train", "valid", "test"]).all()))
        assert bad, f"{kind}: a valid frame was rejected: {err}"
        COUNTS["pandas frames: rejected"] += 1
    else:
        assert "user" in frame and "item" in frame and not frame.empty
        assert not frame[["user", "item"]].isna().any().any(), f"{kind}: missing ids were accepted"
        keys = ["user", "item"] + (["split"] if "split" in frame else [])
        distinct = frame.drop_duplicates(subset=keys)
        assert ds.n_users == distinct["user"].nunique() and ds.n_items == distinct["item"].nunique()
        assert ds.train.size(1) + ds.valid.size(1) + ds.test.size(1) == len(distinct)
        if "split" in frame:
            assert ds.test.size(1) == int((distinct["split"] == "test").sum())
        COUNTS["pandas frames: loaded"] += 1
    COUNTS["pandas frames: inputs"] += 1


# ------------------------------------------------------------------------------------------- config keys
# (test_train.py::test_bad_configs_name_the_key has unknown keys, negative lr, a wrong type, an unknown model,
# mask rate above 1, select, valid_fraction; these are the rest)
@pytest.mark.parametrize("overrides, key, message", [
    (["train.lr=inf"], "train.lr", "finite number"),
    (["train.lr=nan"], "train.lr", "finite number"),
    (["train.lr=0"], "train.lr", "expected a number > 0"),
    (["train.weight_decay=-1e-4"], "train.weight_decay", "expected a number >= 0"),
    (["train.epochs=0"], "train.epochs", "positive integer"),
    (["train.epochs=2.5"], "train.epochs", "expected an integer"),
    (["train.ks=[0, 20]"], "train.ks", "cut-offs >= 1"),
    (["train.seed=-1"], "train.seed", r"seed in \[0, 2\*\*63\)"),
    (["train.seed=18446744073709551616"], "train.seed", "seed in"),
    (["data.split_seed=-3"], "data.split_seed", "seed in"),
    (["train.threads=0"], "train.threads", "expected a positive integer"),
    (["train.device=tpu"], "train.device", "cpu, cuda"),
    (["train.progress=maybe"], "train.progress", "true or false"),
    (["data.valid_fraction=-0.1"], "data.valid_fraction", "fraction"),
    (["model.name=[lightgcn]"], "model.name", "unknown model"),
    (["model=5"], "model", "mapping of model settings"),
    (["model.name=cikgrec", "model.min_mask_rate=0"], "model.min_mask_rate", r"mask rate in \(0, 1\]"),
    (["model.name=cikgrec", "model.min_mask_rate=0.9", "model.max_mask_rate=0.5"], "model.min_mask_rate",
     "exceeds max_mask_rate"),
    (["model.dim=-4"], "model.dim", "positive integer"),
    (["data.bogus=1"], "data.bogus", "unknown key"),
])
def test_more_bad_config_values_name_the_key(overrides, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(None, overrides)
    assert err.value.key == key
    COUNTS["config keys: rejected"] += 1


def test_bad_configs_are_rejected_before_any_work(tmp_path, capsys):
    """`cikg train` with a bad value or K above the item count: exit 2 naming the key, no run directory."""
    from cikg.cli import main

    run = tmp_path / "run"
    base = ["train", "-", "data.synthetic_users=300", "data.synthetic_items=90", "train.epochs=1"]
    assert main(base + ["train.lr=-1", "--run-dir", str(run)]) == 2
    assert "config key 'train.lr'" in capsys.readouterr().err
    assert main(base + ["train.ks=[20,100]", "--run-dir", str(run)]) == 2  # K=100 above the 90 items
    assert "config key 'train.ks': cut-off K=100 exceeds the 90 items" in capsys.readouterr().err
    assert not run.exists()
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 2001-13-01\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(ValueError: month must be in 1..12\)"):
        load_run_config(path)
