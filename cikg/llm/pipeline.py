"""The interest-inference step: dataset → prompts → backend → parsed phrases → ``user_interests_raw.jsonl``.

The artifact has one JSON line per user (in request order, then the skipped users):
``user`` (remapped id), ``user_id`` (original id), ``phrases``, ``raw`` (the answer as received), ``status``
(``ok`` | ``unparsable`` | ``echo`` | ``failed`` | ``skipped``), ``reason``, ``source`` (the backend; kg-profile
lines say "not an LLM"), ``key`` (cache key), ``structured`` (the answer was the JSON the structured mode
asks for), ``response_format`` (the kind sent: ``json_schema`` | ``json_object`` | ``off``), ``echoes``
(phrases that repeat a prompt title, :mod:`cikg.llm.echo`; dropped from ``phrases`` unless kept; a user
whose phrases were all echoes has status ``echo``). It is written atomically and is itself a replay file.
The clustering step consumes :attr:`InferenceResult.frame`: one row per (``user`` int, ``phrase`` str).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pandas as pd

from .._io import write_json_atomic, write_jsonl_atomic
from ..data.io import data_dir
from ..errors import DatasetError
from .base import NOT_AN_LLM, RAW_FILE, Backend, Completion, RunSummary
from .echo import DEFAULT_ECHO, EchoConfig, filter_echoes
from .parse import parse_answer
from .prompts import CIKGREC_INTERESTS, PromptTemplate, build_requests

log = logging.getLogger(__name__)

SUMMARY_FILE = "llm_summary.json"


@dataclass
class InferenceResult:
    """What :func:`infer_interests` produced.

    Attributes:
        frame: ``DataFrame[user: int64, phrase: str]``, one row per kept phrase.
        records: one dict per user (the lines of ``user_interests_raw.jsonl``).
        summary: the backend's :class:`RunSummary` (plus parse counts in ``parse``).
        skipped: users without a titled item (no request made).
        path: where the JSONL was written (``None`` without ``out_dir``).
    """

    frame: pd.DataFrame
    records: List[Dict[str, Any]]
    summary: RunSummary
    skipped: List[int] = field(default_factory=list)
    path: Optional[Path] = None
    parse: Dict[str, int] = field(default_factory=dict)
    echo: Dict[str, Any] = field(default_factory=dict)

    @property
    def not_an_llm(self) -> bool:
        return self.summary.not_an_llm

    def users_with(self, status: str) -> List[int]:
        return [r["user"] for r in self.records if r["status"] == status]

    def __repr__(self) -> str:
        return (f"InferenceResult(backend={self.summary.label!r}, users={len(self.records)}, "
                f"phrases={len(self.frame)}, {self.parse}, path={str(self.path) if self.path else None!r})")


def default_domain(dataset: Any) -> str:
    """``movies`` for MovieLens-like names, ``books`` for book datasets, else ``items``."""
    name = str(getattr(dataset, "name", "")).lower()
    if "ml" in name or "movie" in name:
        return "movies"
    if "book" in name:
        return "books"
    return "items"


def _record(c: Completion) -> Dict[str, Any]:
    base = {"user": c.request.user, "user_id": c.request.user_id, "source": c.source, "key": c.key,
            "cached": c.cached, "not_an_llm": bool(c.meta.get("not_an_llm", False)),
            "response_format": str(c.meta.get("response_format", "off"))}
    if not c.ok:
        return {**base, "phrases": [], "raw": c.text, "status": "failed", "reason": c.reason, "structured": False}
    parsed = parse_answer(c.text)
    extra = {"evidence": c.meta["evidence"]} if "evidence" in c.meta else {}
    return {**base, "phrases": list(parsed.phrases), "raw": c.text, "structured": parsed.structured,
            "status": "ok" if parsed.ok else "unparsable", "reason": parsed.reason, **extra}


def infer_interests(dataset: Any, backend: Backend, template: PromptTemplate = CIKGREC_INTERESTS,
                    users: Optional[Sequence[int]] = None, out_dir: Union[str, Path, None] = None,
                    history_len: int = 30, domain: Optional[str] = None,
                    echo: Optional[EchoConfig] = DEFAULT_ECHO) -> InferenceResult:
    """Infer at most five interest phrases per user (CIKGRec, Sec. 3.2).

    Args:
        dataset: a :class:`cikg.data.Dataset`.
        backend: any :class:`~cikg.llm.base.Backend` (``OpenAIBackend``, ``BatchBackend``, ``ReplayBackend``,
            ``KGProfileBackend``).
        template: the prompt (its version is part of the cache key).
        users: remapped user ids (default: all).
        out_dir: folder for ``user_interests_raw.jsonl`` and ``llm_summary.json`` (written atomically).
        history_len: last train items shown per user.
        domain: ``books`` | ``movies`` | ``items``; default from the dataset name.
        echo: the echo filter (:class:`~cikg.llm.echo.EchoConfig`; ``keep=True`` flags without dropping);
            ``None`` turns it off. Its counts are ``InferenceResult.echo`` and ``llm_summary.json``'s ``echo``.
    """
    started = time.perf_counter()
    if users is not None:
        bad = [u for u in users if not 0 <= int(u) < dataset.n_users]
        if bad:
            raise DatasetError(f"{dataset.name}: unknown user(s) {bad[:5]} (users are 0..{dataset.n_users - 1})")
    domain = domain or default_domain(dataset)
    requests, skipped = build_requests(dataset, template, users=users, history_len=history_len, domain=domain)
    completions = backend.complete_many(requests)
    records = [_record(c) for c in completions]
    echo_stats: Dict[str, Any] = {}
    if echo is not None:
        echo_stats = filter_echoes(records, [c.request.prompt_titles for c in completions], echo)
    for user in skipped:
        records.append({"user": user, "user_id": dataset.user_ids[user], "phrases": [], "raw": None,
                        "status": "skipped", "reason": f"no titled item among the last {history_len} train items",
                        "source": backend.name, "key": "", "cached": False, "not_an_llm": backend.not_an_llm,
                        "structured": False, "response_format": "off", "echoes": []})
    summary = backend.summary() or RunSummary.of(backend.name, completions, started, backend.not_an_llm)
    summary.not_an_llm = backend.not_an_llm
    parse_counts = {status: sum(r["status"] == status for r in records)
                    for status in ("ok", "unparsable", "echo", "failed", "skipped")}
    parse_counts["structured"] = sum(bool(r.get("structured")) for r in records)
    rows = [(r["user"], phrase) for r in records for phrase in r["phrases"]]
    frame = pd.DataFrame(rows, columns=["user", "phrase"]).astype({"user": "int64", "phrase": "str"})
    path = None
    if out_dir is not None:
        path = Path(out_dir) / RAW_FILE
        write_jsonl_atomic(path, records)
        write_json_atomic(Path(out_dir) / SUMMARY_FILE, {
            **summary.to_dict(), "parse": parse_counts, "echo": echo_stats, **_dataset_reference(dataset),
            "template": template.name,
            "template_version": template.version, "history_len": history_len, "domain": domain,
            "label": NOT_AN_LLM if backend.not_an_llm else "LLM"})
    result = InferenceResult(frame, records, summary, skipped, path, parse_counts, echo_stats)
    for line in summary.lines():
        log.info("%s", line)
    log.info("parsed: %s; %d phrase(s) for %d user(s)%s", parse_counts, len(frame), frame["user"].nunique(),
             f" -> {path}" if path else "")
    return result


def _dataset_reference(dataset: Any) -> Dict[str, str]:
    """The dataset's name, plus its absolute directory when the name alone would not find it (a dataset loaded
    from a path outside ``$CIKG_DATA``), so that ``cikg interests cluster DIR`` loads the same dataset."""
    reference = {"dataset": dataset.name}
    source = dataset.meta.get("source") if isinstance(getattr(dataset, "meta", None), dict) else None
    if isinstance(source, str) and Path(source).is_dir():
        if Path(source).resolve() != (data_dir() / dataset.name).resolve():
            reference["dataset_path"] = str(Path(source).resolve())
    return reference

