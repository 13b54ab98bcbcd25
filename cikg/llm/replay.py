"""The ``replay`` backend: answers recorded earlier, looked up by cache key or by original user id.

A replay file is JSONL, one answer per line, with at least ``user_id`` and ``raw`` (the answer text) and
optionally ``key`` (the cache key), ``status`` and ``source``. ``user_interests_raw.jsonl`` written by
:func:`cikg.llm.pipeline.infer_interests` is itself a replay file, and :func:`export_replay` writes one from
a cache. Only lines with ``status == "ok"`` (or no status) are used.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

from .._io import atomic_path, read_utf8_lines
from ..errors import DatasetError, LLMError
from .base import Completion, RunSummary
from .cache import OK, ResponseCache
from .client import LLMConfig
from .prompts import Request

log = logging.getLogger(__name__)


def read_replay(path: Union[str, Path]) -> tuple:
    """``(by_key, by_user)`` dicts of answer lines from a replay JSONL file.

    Raises:
        DatasetError: the file is missing or a line is not a JSON object with ``user_id`` and ``raw``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("replay file not found", path)
    by_key: Dict[str, dict] = {}
    by_user: Dict[str, dict] = {}
    for line_no, line in enumerate(read_utf8_lines(path), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as err:
            raise DatasetError(f"not JSON ({getattr(err, 'msg', err)})", path, line_no) from None
        except RecursionError:
            raise DatasetError("not JSON (nested too deeply)", path, line_no) from None
        if not isinstance(item, dict) or "user_id" not in item or "raw" not in item:
            raise DatasetError("a replay line needs the fields 'user_id' and 'raw'", path, line_no)
        if item["raw"] is not None and not isinstance(item["raw"], str):
            raise DatasetError(f"field 'raw' must be the answer text or null, got {type(item['raw']).__name__}",
                               path, line_no)
        if item.get("status", OK) != OK or item["raw"] is None:
            continue
        if item.get("key"):
            by_key[str(item["key"])] = item
        if item["user_id"] is not None:
            by_user[str(item["user_id"])] = item
    return by_key, by_user


class ReplayBackend:
    """Answers from a replay file.

    Args:
        path: the JSONL file.
        config: when given, requests are matched by the cache key this config computes first, then by user id;
            without it, by user id only.

    Raises (from :meth:`complete_many`):
        LLMError: a request has no recorded answer; the message names the user.
    """

    not_an_llm = False

    def __init__(self, path: Union[str, Path], config: Optional[LLMConfig] = None):
        self.path = Path(path)
        self.config = config
        self.by_key, self.by_user = read_replay(self.path)
        self.name = f"replay:{self.path.name}"
        self._summary: Optional[RunSummary] = None

    def __repr__(self) -> str:
        return f"ReplayBackend({str(self.path)!r}, answers={len(self.by_user)})"

    def summary(self) -> Optional[RunSummary]:
        return self._summary

    def complete_many(self, requests: Sequence[Request]) -> List[Completion]:
        started = time.perf_counter()
        out = []
        missing = []
        for request in requests:
            key = self.config.key_of(request) if self.config is not None else ""
            item = self.by_key.get(key) if key else None
            if item is None:
                item = self.by_user.get(request.user_id)
            if item is None:
                missing.append(request)
                continue
            out.append(Completion(request, OK, str(item["raw"]), source=self.name, cached=True,
                                  key=key or str(item.get("key", "")),
                                  meta={"recorded_source": item.get("source")}))
        if missing:
            first = missing[0]
            raise LLMError(f"replay file {self.path} has no answer for user {first.user_id} (remapped id "
                           f"{first.user}){f' and {len(missing) - 1} other user(s)' if len(missing) > 1 else ''}")
        self._summary = RunSummary.of(self.name, out, started)
        return out


def export_replay(source: Union[ResponseCache, Iterable[Completion]], path: Union[str, Path]) -> int:
    """Write a replay JSONL file (atomically) from a cache or from completions; returns the line count.

    Only ``ok`` answers are written; a cache row without a user id is written with ``user_id: null`` and can
    then only be matched by key.
    """
    lines: List[str] = []
    if isinstance(source, ResponseCache):
        for row in source.rows():
            if row.ok:
                lines.append(json.dumps({"key": row.key, "user_id": row.user_id, "raw": row.text,
                                         "status": OK, "source": row.source, "model": row.model},
                                        ensure_ascii=False))
    else:
        for c in source:
            if c.ok:
                lines.append(json.dumps({"key": c.key, "user_id": c.request.user_id, "user": c.request.user,
                                         "raw": c.text, "status": OK, "source": c.source}, ensure_ascii=False))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    log.info("wrote %d recorded answer(s) to %s", len(lines), path)
    return len(lines)


def import_replay(path: Union[str, Path], cache: ResponseCache) -> tuple:
    """Store the keyed ``ok`` answers of a replay file in ``cache``; returns ``(stored, without_key)``.

    The way to resume a long run on another machine: commit the file :func:`export_replay` wrote, import it
    into a fresh cache and re-run the same ``infer`` command; it sends only the requests the file lacks.
    Lines without a ``key`` cannot be matched to a request and are counted, not stored; an ``ok`` row the
    cache already holds is replaced by the file's.

    Raises:
        DatasetError: as :func:`read_replay`.
    """
    by_key, by_user = read_replay(path)
    for key, item in by_key.items():
        cache.put(key, OK, str(item["raw"]), user_id=None if item["user_id"] is None else str(item["user_id"]),
                  model=item.get("model"), source=item.get("source"))
    without_key = sum(1 for item in by_user.values() if not item.get("key"))
    log.info("stored %d recorded answer(s) from %s in %s (%d line(s) without a key skipped)",
             len(by_key), path, cache.path, without_key)
    return len(by_key), without_key
