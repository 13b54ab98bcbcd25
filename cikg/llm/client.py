"""The ``openai`` backend: any OpenAI-compatible server through the official ``AsyncOpenAI`` client.

Requests run concurrently under an ``asyncio.Semaphore`` (``LLMConfig.in_flight``: 2 against a local server,
16 against a remote one, unless ``concurrency`` is set). The client's own
retries are off (``max_retries=0``); :class:`RetryPolicy` retries 408/409/429/5xx, time-outs, connection
errors and malformed bodies with exponential backoff and jitter, honouring ``Retry-After`` (seconds or an
HTTP date). A request that still fails comes back ``failed`` with its reason and whatever body arrived; the
run goes on. Every answer is committed to the :class:`~cikg.llm.cache.ResponseCache` as it arrives.

Structured answers: a request whose template has a JSON schema (the interest prompts) is sent with a
``response_format`` (``LLMConfig.structured``): ``json_schema`` (OpenAI, vLLM, llama.cpp's C++ server,
Ollama) or ``json_object`` with a ``schema`` (llama-cpp-python's server, which ``cikg llm serve`` runs).
``auto`` (the default) sends ``json_schema`` and, when the server refuses the field (HTTP 400/422 naming it,
or a 500 naming ``response_format`` as llama-cpp-python 0.3.36 answers), ``json_object``, then free text, for
the rest of the run. The format sent is part of the cache key, and
``Completion.meta["response_format"]`` records it per answer.

The API key is read from the environment only (``LLMConfig.api_key_env``); it is never logged, cached or
written. A local server (127.0.0.1, localhost) needs none: ``"EMPTY"`` is sent.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import checks
from ..errors import ConfigError
from .base import Completion, RunSummary
from .cache import FAILED, OK, ResponseCache, cache_key
from .prompts import Request

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
RETRYABLE_STATUS = (408, 409, 429)
_REASON_CHARS = 300
STRUCTURED_MODES = ("auto", "json_schema", "json_object", "off")
"""``LLMConfig.structured`` values; ``auto`` tries ``json_schema``, then ``json_object``, then free text."""
_REFUSAL_WORDS = ("response_format", "json_schema", "json_object", "schema", "grammar")
LOCAL_CONCURRENCY = 2
"""Default requests in flight against a local server (``LOCAL_HOSTS``): ``cikg llm serve`` (llama-cpp-python)
answers one request at a time, so more only queue inside the server until they time out and are retried
(docs/benchmarks.md, "Local LLM server throughput"); 2 keeps it busy between requests."""
REMOTE_CONCURRENCY = 16
"""Default requests in flight against a remote API (OpenAI, a vLLM host), which batch many requests."""
CONCURRENCY_HELP = (f"requests in flight (default: {LOCAL_CONCURRENCY} against a local server at 127.0.0.1/localhost, "
                    f"which answers one at a time; {REMOTE_CONCURRENCY} against a remote API)")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    The wait before attempt ``n + 1`` is ``Retry-After`` when the server sent one (capped at
    ``max_retry_after``), else ``min(max_delay, base_delay * 2 ** (n - 1))`` scaled by a uniform factor in
    ``[1 - jitter, 1]``.
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.5
    max_retry_after: float = 300.0
    seed: Optional[int] = None

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("max_attempts"), checks.non_negative("base_delay", "max_delay", "max_retry_after"),
        checks.probability("jitter", closed_high=True))

    def __post_init__(self) -> None:
        checks.check(self, prefix="retry")

    def delay(self, attempt: int, retry_after: Optional[float], rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * rng.uniform(1.0 - self.jitter, 1.0)


def parse_retry_after(headers: Mapping[str, str], now: Optional[float] = None) -> Optional[float]:
    """Seconds from ``Retry-After`` (delta seconds or an HTTP date) or ``retry-after-ms``; ``None`` if absent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(float(lowered["retry-after-ms"]) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass(frozen=True)
class LLMConfig:
    """Settings of the ``openai`` backend.

    Args:
        model: model name the server knows (``smollm2`` for ``cikg llm serve``, ``gpt-4o-mini``...).
        base_url: server root ending in ``/v1``; ``None`` means api.openai.com.
        temperature, max_tokens, seed: generation parameters (part of the cache key).
        timeout: seconds per HTTP attempt.
        concurrency: requests in flight at once; ``None`` (default) is :attr:`in_flight`'s rule:
            :data:`LOCAL_CONCURRENCY` for a local server, :data:`REMOTE_CONCURRENCY` otherwise.
        api_key_env: environment variable holding the key (read at client creation, never stored).
        retry: the :class:`RetryPolicy`.
        progress: show a tqdm bar.
        structured: how a request with a JSON schema asks for a structured answer (:data:`STRUCTURED_MODES`).
    """

    model: str = "smollm2"
    base_url: Optional[str] = None
    temperature: float = 0.0
    max_tokens: int = 64
    seed: Optional[int] = 2024
    timeout: float = 60.0
    concurrency: Optional[int] = None
    api_key_env: str = "OPENAI_API_KEY"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress: bool = True
    structured: str = "auto"

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.one_of(STRUCTURED_MODES, "structured"),
        checks.Constraint(("model",), "a non-empty model name", lambda v: isinstance(v, str) and bool(v)),
        checks.positive_int("concurrency", optional=True), checks.positive("timeout"),
        checks.positive_int("max_tokens"), checks.boolean("progress"))

    def __post_init__(self) -> None:
        checks.check(self)
        if self.base_url is not None and not urllib.parse.urlparse(self.base_url).scheme.startswith("http"):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}",
                              key="base_url")

    @property
    def params(self) -> Dict[str, Any]:
        """Generation parameters sent with every request (and hashed into the cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}

    @property
    def is_local(self) -> bool:
        return self.base_url is not None and urllib.parse.urlparse(self.base_url).hostname in LOCAL_HOSTS

    @property
    def in_flight(self) -> int:
        """Requests in flight at once: ``concurrency`` when set, else :data:`LOCAL_CONCURRENCY` for a local
        ``base_url`` (127.0.0.1, localhost, ::1, 0.0.0.0) and :data:`REMOTE_CONCURRENCY` for any other."""
        if self.concurrency is not None:
            return self.concurrency
        return LOCAL_CONCURRENCY if self.is_local else REMOTE_CONCURRENCY

    def api_key(self) -> str:
        """The key from ``api_key_env``; ``"EMPTY"`` for a local server without one."""
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if self.is_local:
            return "EMPTY"
        raise ConfigError(f"no API key: set the environment variable {self.api_key_env} "
                          f"(needed for base_url {self.base_url or 'https://api.openai.com/v1'})", key="api_key_env")

    def formats(self, request: Request) -> Tuple[str, ...]:
        """The ``response_format`` kinds to try for ``request``, best first; ``("off",)`` for free text."""
        if not request.schema or self.structured == "off":
            return ("off",)
        if self.structured == "auto":
            return ("json_schema", "json_object", "off")
        return (self.structured, "off")

    def request_params(self, request: Request, fmt: Optional[str] = None) -> Dict[str, Any]:
        """Generation parameters of ``request`` (``params`` plus its ``response_format`` in format ``fmt``,
        default the first of :meth:`formats`); ``None`` values are left out."""
        fmt = self.formats(request)[0] if fmt is None else fmt
        params = {k: v for k, v in self.params.items() if v is not None}
        schema = request.schema_dict
        if fmt == "json_schema" and schema is not None:
            params["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "interests", "schema": schema}}
        elif fmt == "json_object" and schema is not None:
            params["response_format"] = {"type": "json_object", "schema": schema}
        return params

    def key_of(self, request: Request, fmt: Optional[str] = None) -> str:
        """The cache key of ``request`` sent in ``response_format`` kind ``fmt`` (default: the first tried)."""
        params = dict(self.params)
        sent = self.request_params(request, fmt)
        if "response_format" in sent:
            params["response_format"] = sent["response_format"]
        return cache_key(self.model, request.message_dicts, params, request.template, request.template_version)


def completion_from_body(body: bytes) -> Tuple[Optional[str], Optional[str], int, int]:
    """``(text, reason, prompt_tokens, completion_tokens)`` from a chat-completion body; never raises.

    ``reason`` is ``None`` when the body holds a non-empty answer.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        return text, f"malformed response: {type(err).__name__}: {str(err)[:120]}", 0, 0
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0) if isinstance(usage, dict) else 0
    completion_tokens = int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
    if not isinstance(content, str) or not content.strip():
        return text, "empty answer", prompt_tokens, completion_tokens
    return content, None, prompt_tokens, completion_tokens


class OpenAIBackend:
    """The ``openai`` backend (see module docstring).

    Args:
        config: an :class:`LLMConfig`.
        cache: a :class:`ResponseCache`, a path to one, or ``None`` for no cache.
    """

    not_an_llm = False

    def __init__(self, config: LLMConfig, cache: Union[ResponseCache, str, Path, None] = None):
        self.config = config
        self.cache = ResponseCache(cache) if isinstance(cache, (str, Path)) else cache
        self.name = f"openai:{config.model}"
        self._rng = random.Random(config.retry.seed)
        self._summary: Optional[RunSummary] = None
        self._refused: set = set()  # response_format kinds the server refused in this run
        config.api_key()  # fail early on a missing key, before any work

    def __repr__(self) -> str:
        return (f"OpenAIBackend(model={self.config.model!r}, base_url={self.config.base_url!r}, "
                f"concurrency={self.config.in_flight}, cache={self.cache!r})")

    def summary(self) -> Optional[RunSummary]:
        return self._summary

    # ------------------------------------------------------------------ public
    def complete_many(self, requests: Sequence[Request]) -> List[Completion]:
        """Answer ``requests`` (in order), from the cache where possible; see :meth:`acomplete_many`.

        Inside a running event loop (a Jupyter notebook) the requests run on a fresh loop in a worker thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.acomplete_many(requests))
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cikg-llm") as pool:
            return pool.submit(lambda: asyncio.run(self.acomplete_many(requests))).result()

    async def acomplete_many(self, requests: Sequence[Request]) -> List[Completion]:
        started = time.perf_counter()
        keys = [self.config.key_of(r) for r in requests]
        # a structured answer stored under another response_format kind (a server that refused json_schema)
        # is as good: look those keys up too (never the free-text key)
        alternatives = [[(fmt, self.config.key_of(r, fmt)) for fmt in self.config.formats(r) if fmt != "off"]
                        or [("off", key)] for r, key in zip(requests, keys, strict=True)]
        wanted = {k for options in alternatives for _, k in options}
        cached = self.cache.get_many(wanted) if self.cache is not None else {}
        done: Dict[str, Completion] = {}
        for request, key, options in zip(requests, keys, alternatives, strict=True):
            if key in done:
                continue
            for fmt, alt in options:
                row = cached.get(alt)
                if row is not None and row.ok:
                    done[key] = Completion(request, OK, row.text, source=row.source or self.name, cached=True,
                                           key=alt, prompt_tokens=row.prompt_tokens,
                                           completion_tokens=row.completion_tokens,
                                           meta={"response_format": fmt})
                    break
        pending: Dict[str, Request] = {}
        for request, key in zip(requests, keys, strict=True):
            if key not in done and key not in pending:
                pending[key] = request
        log.info("%s: %d request(s), %d answered from the cache, %d to send", self.name, len(requests),
                 len(done), len(pending))
        if pending:
            done.update(await self._send_all(pending, n_cached=len(done)))
        out = [self._for_request(done[key], request) for request, key in zip(requests, keys, strict=True)]
        self._summary = RunSummary.of(self.name, out, started)
        return out

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _for_request(completion: Completion, request: Request) -> Completion:
        if completion.request is request:
            return completion
        # the same prompt from another user: the answer is shared, the request is this user's
        return Completion(request, completion.status, completion.text, completion.reason, completion.source,
                          cached=True, key=completion.key, meta=dict(completion.meta))

    def _client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(api_key=self.config.api_key(), base_url=self.config.base_url,
                                  timeout=self.config.timeout, max_retries=0)

    async def _send_all(self, pending: Dict[str, Request], n_cached: int) -> Dict[str, Completion]:
        from tqdm.auto import tqdm

        semaphore = asyncio.Semaphore(self.config.in_flight)
        counts = {"cached": n_cached, "sent": 0, "failed": 0}
        out: Dict[str, Completion] = {}
        client = self._client()
        bar = tqdm(total=len(pending) + n_cached, initial=n_cached, desc=f"LLM {self.config.model}",
                   unit="req", disable=not self.config.progress, dynamic_ncols=True)
        bar.set_postfix(counts)

        async def run_one(key: str, request: Request) -> None:
            completion = await self._send_one(client, semaphore, key, request)
            self._store(completion)
            out[key] = completion
            counts["sent"] += 1
            counts["failed"] += not completion.ok
            bar.update(1)
            bar.set_postfix(counts, refresh=False)

        try:
            await asyncio.gather(*(run_one(key, request) for key, request in pending.items()))
        finally:
            bar.close()
            await client.close()
        return out

    def _store(self, c: Completion) -> None:
        if self.cache is None:
            return
        self.cache.put(c.key, c.status, c.text, c.reason, user_id=c.request.user_id, model=self.config.model,
                       source=c.source, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                       attempts=c.attempts)

    async def _send_one(self, client: Any, semaphore: asyncio.Semaphore, key: str,
                        request: Request) -> Completion:
        import openai

        policy = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            retry_after: Optional[float] = None
            body: Optional[str] = None
            fmt = "off"
            try:
                async with semaphore:
                    # chosen once a slot is free, so requests queued behind a refusal do not repeat it
                    fmt = next(f for f in self.config.formats(request) if f not in self._refused or f == "off")
                    key = self.config.key_of(request, fmt)
                    raw = await client.chat.completions.with_raw_response.create(
                        model=self.config.model, messages=request.message_dicts,
                        **self.config.request_params(request, fmt))
                    content = raw.content
                text, reason, p_tok, c_tok = completion_from_body(content)
                if reason is None:
                    return Completion(request, OK, text, source=self.name, key=key, prompt_tokens=p_tok,
                                      completion_tokens=c_tok, attempts=attempt, meta={"response_format": fmt})
                body, retryable = text, True
            except openai.APIStatusError as err:
                status = err.status_code
                body = _safe_text(err.response)
                reason = f"http {status}: {_short(err.message)}"
                retry_after = parse_retry_after(err.response.headers)
                retryable = status in RETRYABLE_STATUS or status >= 500
                if fmt != "off" and _refuses_format(status, body or err.message):
                    if fmt not in self._refused:
                        self._refused.add(fmt)
                        log.warning("the server refused response_format %s (%s); asking for %s instead for the "
                                    "rest of this run", fmt, reason, next(
                                        f for f in self.config.formats(request) if f not in self._refused
                                        or f == "off"))
                    attempt -= 1  # a refused format is no failed attempt
                    continue
            except openai.APITimeoutError:
                reason, retryable = f"timeout: no answer within {self.config.timeout:g} s", True
            except openai.APIConnectionError as err:
                cause = err.__cause__ or err
                reason, retryable = f"connection error: {type(cause).__name__}: {_short(str(cause))}", True
            if not retryable or attempt >= policy.max_attempts:
                log.warning("user %s: request failed after %d attempt(s): %s", request.user_id, attempt, reason)
                return Completion(request, FAILED, body, reason, source=self.name, key=key, attempts=attempt)
            wait = policy.delay(attempt, retry_after, self._rng)
            log.debug("user %s: attempt %d failed (%s); retrying in %.3f s", request.user_id, attempt, reason, wait)
            await asyncio.sleep(wait)



def _refuses_format(status: int, text: str) -> bool:
    """Whether an error answer refuses the ``response_format`` field: HTTP 400/422 naming it (or a schema or
    grammar), or HTTP 500 naming ``response_format`` (llama-cpp-python 0.3 answers an unknown type so)."""
    lowered = str(text).lower()
    if status in (400, 422):
        return any(word in lowered for word in _REFUSAL_WORDS)
    return status == 500 and "response_format" in lowered


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "..."


def _safe_text(response: Any) -> Optional[str]:
    try:
        return response.content.decode("utf-8", errors="replace")
    except Exception:  # a body that cannot be read is no reason to lose the failure record
        return None
