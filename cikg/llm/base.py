"""The backend interface and the records every backend returns.

A backend turns :class:`~cikg.llm.prompts.Request` objects into :class:`Completion` objects, one per request,
in order: ``complete_many(requests) -> list[Completion]``. It never raises for one request that fails: that
request comes back with ``status == "failed"`` and a ``reason``; the run goes on.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, runtime_checkable

from .prompts import Request

NOT_AN_LLM = "not an LLM"
RAW_FILE = "user_interests_raw.jsonl"
"""The file an interest-inference run writes (one JSON record per user) and ``cikg interests`` reads."""


@dataclass(frozen=True)
class Completion:
    """The answer to one request.

    Attributes:
        request: the request answered.
        status: ``"ok"`` or ``"failed"``.
        text: the answer text (``ok``), or the raw body received when a failure had one.
        reason: why it failed (``"http 503: ..."``, ``"timeout"``, ``"malformed response: ..."``).
        source: the backend that answered (``openai:<model>``, ``replay:<file>``, ``kg-profile (not an LLM)``).
        cached: answered from the cache without a request in this run.
        key: the cache key.
        prompt_tokens, completion_tokens: token usage reported by the server.
        attempts: HTTP attempts made in this run.
    """

    request: Request
    status: str
    text: Optional[str]
    reason: Optional[str] = None
    source: str = ""
    cached: bool = False
    key: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class RunSummary:
    """What a run did: counts, tokens, failures by reason, wall time."""

    backend: str
    requests: int = 0
    cached: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    not_an_llm: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of(cls, backend: str, completions: Sequence[Completion], started: float,
           not_an_llm: bool = False) -> "RunSummary":
        """Summarise ``completions``; tokens count only the requests sent in this run."""
        sent = [c for c in completions if not c.cached]
        failures = collections.Counter(failure_kind(c.reason) for c in completions if not c.ok)
        return cls(backend=backend, requests=len(completions), cached=len(completions) - len(sent),
                   sent=len(sent), ok=sum(c.ok for c in completions), failed=sum(not c.ok for c in completions),
                   retries=sum(max(c.attempts - 1, 0) for c in sent),
                   prompt_tokens=sum(c.prompt_tokens for c in sent),
                   completion_tokens=sum(c.completion_tokens for c in sent),
                   failures=dict(failures.most_common()), wall_s=time.perf_counter() - started,
                   not_an_llm=not_an_llm)

    @property
    def label(self) -> str:
        """The backend's name, with ``(not an LLM)`` for offline stand-ins (the one place that suffix is added)."""
        return f"{self.backend} ({NOT_AN_LLM})" if self.not_an_llm else self.backend

    def lines(self) -> List[str]:
        """Human-readable summary, one fact per line."""
        out = [f"backend: {self.label}",
               f"requests: {self.requests} (cached {self.cached}, sent {self.sent}, retries {self.retries})",
               f"answers: ok {self.ok}, failed {self.failed}",
               f"tokens this run: prompt {self.prompt_tokens}, completion {self.completion_tokens}, "
               f"total {self.total_tokens}"
               + (f" ({self.total_tokens / self.sent:.1f} per request)" if self.sent else ""),
               f"wall time: {self.wall_s:.2f} s"]
        out += [f"failed ({n}): {reason}" for reason, n in self.failures.items()]
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "total_tokens": self.total_tokens}


def failure_kind(reason: Optional[str]) -> str:
    """The reason without its free-text tail (``"http 503: busy"`` → ``"http 503"``) for counting."""
    if not reason:
        return "unknown"
    return reason.split(":", 1)[0].strip()


@runtime_checkable
class Backend(Protocol):
    """Anything that answers requests: ``complete_many(requests) -> list[Completion]`` in request order."""

    name: str
    not_an_llm: bool

    def complete_many(self, requests: Sequence[Request]) -> List[Completion]:
        ...  # pragma: no cover

    def summary(self) -> Optional[RunSummary]:
        ...  # pragma: no cover
