"""The OpenAI Batch API flow: half the price, answers within the completion window, resumable by batch id.

``submit`` writes one JSONL line per request (``custom_id`` = cache key), uploads it with
``files.create(purpose="batch")`` and calls ``batches.create``; the batch id is stored in the cache database
at once. ``complete_many`` first collects every batch the database still lists as open (so a run killed
while waiting picks its batch up again instead of paying twice), then submits what has no answer, polls
until the batch ends, downloads the output and error files and fills the same cache as the online client.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Sequence

from .. import checks
from ..errors import ConfigError, LLMError
from .base import Completion, RunSummary
from .cache import FAILED, OK, ResponseCache
from .client import LLMConfig, completion_from_body
from .prompts import Request

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")
ENDPOINT = "/v1/chat/completions"
OPENAI_URL = "https://api.openai.com/v1"
INSTEAD = "--backend openai (one request per prompt, same cache), e.g. for `cikg llm serve` (llama.cpp)"


@dataclass(frozen=True)
class BatchConfig:
    """Settings of the Batch API flow.

    Args:
        poll_interval: seconds between ``batches.retrieve`` calls.
        wait_timeout: give up waiting after this many seconds (the batch stays stored; a re-run resumes it);
            ``None`` waits for the whole completion window.
        completion_window: the window OpenAI accepts (``24h``).
        max_requests: requests per batch file (OpenAI allows 50,000).
    """

    poll_interval: float = 30.0
    wait_timeout: Optional[float] = None
    completion_window: str = "24h"
    max_requests: int = 50_000

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.non_negative("poll_interval"), checks.non_negative("wait_timeout", optional=True),
        checks.positive_int("max_requests"))

    def __post_init__(self) -> None:
        checks.check(self, prefix="batch")


def _error_detail(err: Any) -> str:
    """The message of an error answer (OpenAI's ``error.message``, FastAPI's ``detail``), on one short line."""
    body = err.body  # the openai client passes the "error" object when there is one
    text = (body.get("message") or body.get("detail") or json.dumps(body)) if isinstance(body, dict) else body
    return " ".join(str(text or err.message).split())[:160]


def batch_line(config: LLMConfig, key: str, request: Request) -> str:
    """One JSONL line of a batch input file."""
    body = {"model": config.model, "messages": request.message_dicts, **config.request_params(request)}
    return json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}, ensure_ascii=False)


class BatchBackend:
    """The ``openai`` backend through the Batch API (same cache, same :class:`Completion` records).

    Args:
        config: the :class:`~cikg.llm.client.LLMConfig` (model, parameters, base URL, key variable).
        cache: the :class:`ResponseCache` (required: it holds the batch ids that make runs resumable).
        batch: a :class:`BatchConfig`.
    """

    not_an_llm = False

    def __init__(self, config: LLMConfig, cache: ResponseCache, batch: BatchConfig = BatchConfig()):
        if cache is None:
            raise ConfigError("the Batch API flow needs a cache (it stores the batch ids)", key="cache")
        self.config = config
        self.cache = cache
        self.batch = batch
        self.name = f"openai-batch:{config.model}"
        self._summary: Optional[RunSummary] = None
        self._client_obj: Any = None
        config.api_key()

    def __repr__(self) -> str:
        return f"BatchBackend(model={self.config.model!r}, base_url={self.config.base_url!r}, cache={self.cache!r})"

    def summary(self) -> Optional[RunSummary]:
        return self._summary

    @property
    def client(self) -> Any:
        if self._client_obj is None:
            import openai

            self._client_obj = openai.OpenAI(api_key=self.config.api_key(), base_url=self.config.base_url,
                                             timeout=self.config.timeout, max_retries=3)
        return self._client_obj

    # ------------------------------------------------------------------ flow
    def complete_many(self, requests: Sequence[Request]) -> List[Completion]:
        started = time.perf_counter()
        keys = [self.config.key_of(r) for r in requests]
        before = self.cache.get_many(keys)
        answered_before = {k for k, row in before.items() if row.ok}
        by_key = {k: r for k, r in zip(keys, requests, strict=True)}
        for open_batch in self.cache.open_batches():
            log.info("resuming batch %s (%d requests)", open_batch["batch_id"], len(open_batch["keys"]))
            self.wait_and_collect(open_batch["batch_id"], open_batch["keys"], by_key)
        now = self.cache.get_many(keys)
        missing = [k for k in dict.fromkeys(keys) if not (k in now and now[k].ok)]
        for start in range(0, len(missing), self.batch.max_requests):
            chunk = missing[start:start + self.batch.max_requests]
            batch_id = self.submit([(k, by_key[k]) for k in chunk])
            self.wait_and_collect(batch_id, chunk, by_key)
        rows = self.cache.get_many(keys)
        out = []
        for request, key in zip(requests, keys, strict=True):
            row = rows.get(key)
            if row is None:  # cannot happen once collected; kept as a clear failure rather than a KeyError
                out.append(Completion(request, FAILED, None, "batch: no result", source=self.name, key=key))
                continue
            sent = key not in answered_before
            out.append(Completion(request, row.status, row.text, row.reason, source=self.name, cached=not sent,
                                  key=key, prompt_tokens=row.prompt_tokens if sent else 0,
                                  completion_tokens=row.completion_tokens if sent else 0, attempts=int(sent)))
        self._summary = RunSummary.of(self.name, out, started)
        return out

    def submit(self, items: Sequence[tuple]) -> str:
        """Upload ``[(key, request)]`` as one batch; store and return its id."""
        payload = "".join(batch_line(self.config, key, request) + "\n" for key, request in items).encode("utf-8")
        with self._server_errors("POST /files", lacking="Files API"):
            upload = self.client.files.create(file=("cikg_batch.jsonl", io.BytesIO(payload), "application/jsonl"),
                                              purpose="batch")
        with self._server_errors("POST /batches", lacking="Batch API"):
            batch = self.client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                               completion_window=self.batch.completion_window,
                                               metadata={"source": "cikg"})
        self.cache.add_batch(batch.id, upload.id, [k for k, _ in items], batch.status)
        log.info("submitted batch %s with %d request(s) (input file %s)", batch.id, len(items), upload.id)
        return batch.id

    def wait(self, batch_id: str) -> Any:
        """Poll until the batch reaches a terminal status; :class:`LLMError` past ``wait_timeout``."""
        from tqdm.auto import tqdm

        started = time.monotonic()
        batch = self._retrieve(batch_id)
        bar = tqdm(desc=f"batch {batch_id}", unit="req", disable=not self.config.progress)
        try:
            while batch.status not in TERMINAL:
                counts = batch.request_counts
                if counts is not None:
                    bar.total = counts.total
                    bar.n = counts.completed + counts.failed
                bar.set_postfix(status=batch.status, refresh=True)
                self.cache.set_batch_status(batch_id, batch.status)
                if self.batch.wait_timeout is not None and time.monotonic() - started > self.batch.wait_timeout:
                    raise LLMError(f"batch {batch_id} is still {batch.status} after {self.batch.wait_timeout:g} s; "
                                   f"its id is stored in {self.cache.path}: re-run the same command to resume")
                time.sleep(self.batch.poll_interval)
                batch = self._retrieve(batch_id)
        finally:
            bar.close()
        return batch

    def _retrieve(self, batch_id: str) -> Any:
        with self._server_errors(f"GET /batches/{batch_id}", batch_id=batch_id):
            return self.client.batches.retrieve(batch_id)

    @contextlib.contextmanager
    def _server_errors(self, call: str, lacking: Optional[str] = None,
                       batch_id: Optional[str] = None) -> Iterator[None]:
        """The openai client's connection and HTTP errors of ``call`` as one-line :class:`LLMError` exceptions.

        ``lacking``: the API that a 404 or 405 to ``call`` means the server does not have.
        ``batch_id``: the stored batch the call was about (a re-run resumes it).
        """
        import openai

        url = self.config.base_url or OPENAI_URL
        resume = f"; batch {batch_id} is stored in {self.cache.path}: re-run to resume it" if batch_id else ""
        try:
            yield
        except openai.APIConnectionError as err:  # refused, reset, unknown host, time-out
            reason = str(err.__cause__ or err).strip() or type(err).__name__
            raise LLMError(f"cannot reach the LLM server at {url} ({call}: {reason[:120]}); start it or fix "
                           f"--base-url; a server without the Batch API needs {INSTEAD}{resume}") from None
        except openai.APIStatusError as err:
            status = err.status_code
            if lacking and status in (404, 405):
                raise LLMError(f"the LLM server at {url} has no {lacking} ({call} answered {status}), which "
                               f"--backend openai-batch needs; use {INSTEAD}") from None
            raise LLMError(f"the LLM server at {url} answered {status} to {call} ({_error_detail(err)})"
                           f"{resume}") from None

    def wait_and_collect(self, batch_id: str, keys: Sequence[str], by_key: Dict[str, Request]) -> None:
        batch = self.wait(batch_id)
        seen = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                seen |= self._collect_file(file_id, by_key)
        reason = f"batch {batch.status}: no result for this request"
        if batch.status == "failed" and getattr(batch, "errors", None) and batch.errors.data:
            first = batch.errors.data[0]
            reason = f"batch failed: {first.code}: {first.message}"
        for key in keys:
            if key not in seen:
                self._put(key, FAILED, None, reason, by_key)
        self.cache.set_batch_status(batch_id, batch.status, collected=True)
        log.info("batch %s %s: %d result line(s), %d without a result", batch_id, batch.status, len(seen),
                 len(set(keys) - seen))

    def _collect_file(self, file_id: str, by_key: Dict[str, Request]) -> set:
        with self._server_errors(f"GET /files/{file_id}/content"):
            text = self.client.files.content(file_id).read().decode("utf-8", errors="replace")
        seen = set()
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key = item["custom_id"]
            except (ValueError, KeyError, TypeError):
                log.warning("batch file %s line %d is not a result line; kept out: %.200s", file_id, line_no, line)
                continue
            seen.add(key)
            response = item.get("response") or {}
            error = item.get("error")
            status = response.get("status_code")
            if status == 200 and not error:
                body = json.dumps(response.get("body")).encode("utf-8")
                text_, reason, p_tok, c_tok = completion_from_body(body)
                self._put(key, OK if reason is None else FAILED, text_, reason, by_key, p_tok, c_tok)
            elif error:
                self._put(key, FAILED, json.dumps(error), f"batch error {error.get('code')}: {error.get('message')}",
                          by_key)
            else:
                body = response.get("body")
                message = body.get("error", {}).get("message") if isinstance(body, dict) else None
                self._put(key, FAILED, json.dumps(body), f"http {status}: {message}", by_key)
        return seen

    def _put(self, key: str, status: str, text: Optional[str], reason: Optional[str], by_key: Dict[str, Request],
             prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        request = by_key.get(key)
        self.cache.put(key, status, text, reason, user_id=None if request is None else request.user_id,
                       model=self.config.model, source=self.name, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens, attempts=1)
