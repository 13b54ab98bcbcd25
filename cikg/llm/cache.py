"""A SQLite (WAL) cache of LLM answers keyed by a hash of everything that determines the answer.

The key is ``sha256`` of the canonical JSON of (model, messages, generation parameters, template name and
version). Answers are committed one by one as they arrive, so a run killed with SIGKILL loses nothing it
received; a re-run with the same arguments sends only the requests without an ``ok`` row. Failed requests
are stored too (reason and raw text) and retried on the next run. No header or key is ever stored.

Tables: ``responses`` (one row per key), ``batches`` (OpenAI Batch API jobs, so a run resumes by batch id).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from ..errors import OutputError, describe_os_error

OK = "ok"
FAILED = "failed"


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError):
        return describe_os_error(err)
    name = getattr(err, "sqlite_errorname", None)
    return f"{err} ({name})" if name else str(err)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    text TEXT,
    reason TEXT,
    user_id TEXT,
    model TEXT,
    source TEXT,
    prompt_tokens INTEGER DEFAULT 0,
    completion_tokens INTEGER DEFAULT 0,
    attempts INTEGER DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    input_file_id TEXT,
    keys TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    collected INTEGER DEFAULT 0
);
"""


def cache_key(model: str, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any],
              template: str = "", template_version: str = "") -> str:
    """``sha256`` hex of the canonical JSON of everything that determines an answer."""
    payload = {"model": model, "messages": [dict(m) for m in messages], "params": dict(params),
               "template": template, "template_version": template_version}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """One ``responses`` row."""

    key: str
    status: str
    text: Optional[str]
    reason: Optional[str]
    user_id: Optional[str]
    model: Optional[str]
    source: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    attempts: int

    @property
    def ok(self) -> bool:
        return self.status == OK


class ResponseCache:
    """The answer cache at ``path`` (created with its parent folder when missing).

    Thread-safe for the one-process, many-coroutine use of the client (one connection behind a lock).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise OutputError(f"cannot open the answer cache ({_describe(err)})", self.path) from None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- answers
    def put(self, key: str, status: str, text: Optional[str] = None, reason: Optional[str] = None, *,
            user_id: Optional[str] = None, model: Optional[str] = None, source: Optional[str] = None,
            prompt_tokens: int = 0, completion_tokens: int = 0, attempts: int = 0) -> None:
        """Store (or replace) one answer and commit at once. A failure never overwrites an ``ok`` row."""
        if status not in (OK, FAILED):
            raise ValueError(f"status must be {OK!r} or {FAILED!r}, got {status!r}")
        sql = ("INSERT INTO responses (key, status, text, reason, user_id, model, source, prompt_tokens, "
               "completion_tokens, attempts, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
               "ON CONFLICT(key) DO UPDATE SET status=excluded.status, text=excluded.text, "
               "reason=excluded.reason, user_id=excluded.user_id, model=excluded.model, source=excluded.source, "
               "prompt_tokens=excluded.prompt_tokens, completion_tokens=excluded.completion_tokens, "
               "attempts=responses.attempts + excluded.attempts, updated=excluded.updated")
        if status == FAILED:
            sql += " WHERE responses.status != 'ok'"
        with self._lock, self._writing("store an answer"):
            self._conn.execute(sql, (key, status, text, reason, user_id, model, source, int(prompt_tokens),
                                     int(completion_tokens), int(attempts), time.time()))

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn a failed write (disk full, read-only file) into :class:`OutputError`; SQLite rolls the statement
        back, so the rows committed before stay intact and readable."""
        try:
            yield
        except sqlite3.Error as err:
            raise OutputError(f"cannot {what} in the answer cache ({_describe(err)}); the answers stored "
                              "before are kept: free space or fix permissions, then re-run", self.path) from None

    def get(self, key: str) -> Optional[CachedAnswer]:
        found = self.get_many([key])
        return found.get(key)

    def get_many(self, keys: Iterable[str]) -> Dict[str, CachedAnswer]:
        """Rows for ``keys`` (missing keys are absent from the result); one query per 500 keys."""
        keys = list(keys)
        out: Dict[str, CachedAnswer] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    "SELECT key, status, text, reason, user_id, model, source, prompt_tokens, completion_tokens, "
                    f"attempts FROM responses WHERE key IN ({marks})", chunk).fetchall()
                for row in rows:
                    out[row[0]] = CachedAnswer(*row)
        return out

    def rows(self) -> Iterator[CachedAnswer]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, status, text, reason, user_id, model, source, prompt_tokens, completion_tokens, "
                "attempts FROM responses ORDER BY updated").fetchall()
        return (CachedAnswer(*row) for row in rows)

    def counts(self) -> Dict[str, int]:
        """``{"ok": n, "failed": m}``."""
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM responses GROUP BY status").fetchall()
        return {OK: 0, FAILED: 0, **{status: n for status, n in rows}}

    # ---------------------------------------------------------------- batches
    def add_batch(self, batch_id: str, input_file_id: str, keys: Sequence[str], status: str) -> None:
        with self._lock, self._writing(f"record batch {batch_id}"):
            self._conn.execute(
                "INSERT OR REPLACE INTO batches (batch_id, input_file_id, keys, status, created, collected) "
                "VALUES (?,?,?,?,?,0)", (batch_id, input_file_id, json.dumps(list(keys)), status, time.time()))

    def set_batch_status(self, batch_id: str, status: str, collected: bool = False) -> None:
        with self._lock, self._writing(f"update batch {batch_id}"):
            self._conn.execute("UPDATE batches SET status=?, collected=? WHERE batch_id=?",
                               (status, int(collected), batch_id))

    def open_batches(self) -> List[Dict[str, Any]]:
        """Batches submitted but not yet collected: ``[{"batch_id", "input_file_id", "keys", "status"}]``."""
        with self._lock:
            rows = self._conn.execute("SELECT batch_id, input_file_id, keys, status FROM batches "
                                      "WHERE collected=0 ORDER BY created").fetchall()
        return [{"batch_id": b, "input_file_id": f, "keys": json.loads(k), "status": s} for b, f, k, s in rows]

    def batches(self) -> List[Dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT batch_id, status, collected FROM batches ORDER BY created").fetchall()
        return [{"batch_id": b, "status": s, "collected": bool(c)} for b, s, c in rows]
