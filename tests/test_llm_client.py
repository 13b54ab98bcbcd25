"""The openai backend against a real local HTTP server that misbehaves: retries, Retry-After, time-outs,
resets, malformed bodies, the cache, kill-and-resume, and the Batch API flow through the real openai client."""
from __future__ import annotations

import email.utils
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cikg.cli import build_parser
from cikg.errors import ConfigError, LLMError
from cikg.llm import (
    CIKGREC_INTERESTS,
    BatchBackend,
    BatchConfig,
    LLMConfig,
    OpenAIBackend,
    Request,
    ResponseCache,
    RetryPolicy,
    infer_interests,
    parse_retry_after,
)
from cikg.llm.client import LOCAL_CONCURRENCY, REMOTE_CONCURRENCY

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer, default_answer  # noqa: E402

FAULTS = ["429", "429:ra=0.05", "429:date", "500", "502", "503", "hang", "reset", "malformed", "empty",
          "nonutf8", "enormous"]


def requests_for(n: int, prefix: str = "Title"):
    return [Request.from_messages(i, f"u{i}", CIKGREC_INTERESTS.render(domain="books", titles=f"{prefix} {i}"),
                                  CIKGREC_INTERESTS) for i in range(n)]


def config(server: FaultServer, **kw) -> LLMConfig:
    defaults = dict(model="test-model", base_url=server.base_url, timeout=0.5, concurrency=8, progress=False,
                    retry=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, seed=0))
    defaults.update(kw)
    return LLMConfig(**defaults)


@pytest.fixture()
def server():
    with FaultServer(hang_s=1.0) as srv:
        yield srv


def test_every_fault_once_is_recovered(tmp_path):
    # The server shares this process (and its GIL) with the client: on a loaded 2-core machine a healthy answer
    # can take longer than 0.5 s, and a spurious time-out would cost one attempt more than the fault itself.
    # A 3 s per-attempt time-out keeps the count exact; the hang (5 s) still outlasts it.
    with FaultServer(hang_s=5.0) as server:
        reqs = requests_for(len(FAULTS))
        for i, fault in enumerate(FAULTS):
            server.plan[f"[Title {i}]"] = [fault]
        backend = OpenAIBackend(config(server, timeout=3.0), tmp_path / "c.sqlite")
        out = backend.complete_many(reqs)
    assert [c.status for c in out] == ["ok"] * len(FAULTS), [(c.request.user, c.reason) for c in out]
    # every fault costs one retry, except content that arrives usable (invalid UTF-8 replaced, huge answer)
    assert [c.attempts for c in out] == [2] * 10 + [1, 1]
    for c in out[:10]:
        assert c.text == default_answer(c.request.message_dicts[1]["content"])
    assert out[10].text.startswith("Caf\ufffd") and "History" in out[10].text  # invalid UTF-8 replaced, kept
    assert len(out[11].text) > 2_000_000
    s = backend.summary()
    assert (s.sent, s.cached, s.ok, s.failed, s.retries) == (12, 0, 12, 0, 10)
    assert s.prompt_tokens == sum(c.prompt_tokens for c in out) > 0
    assert sorted(r["behaviour"] for r in server.requests) == sorted(FAULTS + ["ok"] * 10)


def test_persistent_faults_are_recorded_and_retried_next_run(server, tmp_path):
    reqs = requests_for(6)
    server.plan["[Title 0]"] = ["503"] * 4
    server.plan["[Title 1]"] = ["400"]
    server.plan["[Title 2]"] = ["malformed"] * 4
    server.plan["[Title 3]"] = ["reset"] * 4
    backend = OpenAIBackend(config(server), tmp_path / "c.sqlite")
    out = backend.complete_many(reqs)
    assert [c.status for c in out] == ["failed"] * 4 + ["ok"] * 2
    assert out[0].reason.startswith("http 503") and out[0].attempts == 4 and "fault 503" in out[0].text
    assert out[1].reason.startswith("http 400") and out[1].attempts == 1  # a client error is not retried
    assert out[2].reason.startswith("malformed response") and out[2].text.startswith('{"choices": [ this')
    assert out[3].reason.startswith("connection error")
    assert backend.summary().failures == {"http 503": 1, "http 400": 1, "malformed response": 1,
                                          "connection error": 1}
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.counts() == {"ok": 2, "failed": 4}
        assert cache.get(out[0].key).reason.startswith("http 503")
    before = len(server.requests)
    again = OpenAIBackend(config(server), tmp_path / "c.sqlite").complete_many(reqs)
    assert [c.status for c in again] == ["ok"] * 6
    assert len(server.requests) - before == 4  # only the failures were sent again
    assert [c.cached for c in again] == [False] * 4 + [True] * 2


def test_retry_after_is_honoured(server, tmp_path):
    server.plan["[Title 0]"] = ["429:ra=1.0"]
    server.plan["[Title 1]"] = ["429:date"]
    server.plan["[Title 2]"] = ["429"]
    out = OpenAIBackend(config(server), None).complete_many(requests_for(3))
    assert all(c.ok for c in out)
    times = {}
    for r in server.requests:
        times.setdefault(r["user"], []).append(r["time"])
    gap = {k: v[1] - v[0] for k, v in times.items()}
    assert gap["[Title 0]"] >= 0.98
    assert gap["[Title 1]"] >= 0.4  # an HTTP date 1.5 s ahead (1 s resolution) means at least 0.5 s
    assert gap["[Title 2]"] < 0.9  # no header: the tiny exponential backoff (slack for a loaded machine)


def test_parse_retry_after_forms():
    now = time.time()
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}, now=now) == \
        pytest.approx(30, abs=1.01)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0, jitter=0.5, max_retry_after=10)
    import random
    rng = random.Random(0)
    delays = [policy.delay(n, None, rng) for n in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and all(2.0 <= d <= 4.0 for d in delays[2:])
    assert policy.delay(1, 99.0, rng) == 10


def test_timeouts_fail_cleanly_when_the_server_keeps_hanging(server):
    server.plan["[Title 0]"] = ["hang"] * 2
    start = time.perf_counter()
    out = OpenAIBackend(config(server, timeout=0.2, retry=RetryPolicy(max_attempts=2, base_delay=0.01)),
                        None).complete_many(requests_for(2))
    assert out[0].status == "failed" and out[0].reason.startswith("timeout") and out[1].ok
    assert time.perf_counter() - start < 3.0  # two 0.2 s time-outs, not the 1 s hang twice


def test_concurrency_is_bounded(tmp_path):
    with FaultServer(latency=0.1) as srv:
        out = OpenAIBackend(config(srv, concurrency=3, timeout=5), None).complete_many(requests_for(24))
        assert all(c.ok for c in out)
        assert srv.max_in_flight == 3


@pytest.mark.parametrize("base_url, expected", [
    ("http://127.0.0.1:8080/v1", LOCAL_CONCURRENCY), ("http://localhost:8080/v1", LOCAL_CONCURRENCY),
    ("http://[::1]:8080/v1", LOCAL_CONCURRENCY), ("http://0.0.0.0:8080/v1", LOCAL_CONCURRENCY),
    ("https://api.openai.com/v1", REMOTE_CONCURRENCY), ("http://gpu-host:8000/v1", REMOTE_CONCURRENCY),
    ("http://127.0.0.2:8080/v1", REMOTE_CONCURRENCY), (None, REMOTE_CONCURRENCY)])
def test_default_concurrency_is_low_for_a_local_server_and_16_for_a_remote_api(base_url, expected):
    # the measured rule (docs/benchmarks.md "Local LLM server throughput"): one llama.cpp slot gains nothing
    # from more than 2 requests in flight, and queued ones time out and are retried
    assert (LOCAL_CONCURRENCY, REMOTE_CONCURRENCY) == (2, 16)
    config = LLMConfig(base_url=base_url)
    assert config.concurrency is None and config.in_flight == expected
    assert LLMConfig(base_url=base_url, concurrency=5).in_flight == 5  # an explicit value always wins
    # the CLI leaves --concurrency unset, so the rule applies there too (infer, and augment kar/llmcf)
    for command in (["interests", "infer", "dbbook2014"], ["augment", "kar", "dbbook2014"]):
        argv = [*command, "-o", "x"] + ([] if base_url is None else ["--base-url", base_url])
        args = build_parser().parse_args(argv)
        assert args.concurrency is None, command


def test_the_default_concurrency_bounds_requests_against_a_local_server():
    with FaultServer(latency=0.1) as srv:
        backend = OpenAIBackend(config(srv, concurrency=None, timeout=5), None)
        assert "concurrency=2" in repr(backend)
        out = backend.complete_many(requests_for(12))
        assert all(c.ok for c in out)
        assert srv.max_in_flight == LOCAL_CONCURRENCY


def test_cache_rerun_sends_nothing_and_stores_no_key(server, tmp_path, monkeypatch):
    secret = "sk-test-SECRET-never-stored-123"
    monkeypatch.setenv("CIKG_TEST_KEY", secret)
    reqs = requests_for(20)
    first = OpenAIBackend(config(server, api_key_env="CIKG_TEST_KEY"), tmp_path / "c.sqlite").complete_many(reqs)
    n = len(server.requests)
    backend = OpenAIBackend(config(server, api_key_env="CIKG_TEST_KEY"), tmp_path / "c.sqlite")
    second = backend.complete_many(reqs)
    assert len(server.requests) == n == 20
    assert [c.text for c in first] == [c.text for c in second] and all(c.cached for c in second)
    assert backend.summary().sent == 0 and backend.summary().prompt_tokens == 0
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f
    # identical prompts are sent once
    dup = [reqs[0], Request.from_messages(99, "u99", reqs[0].message_dicts, CIKGREC_INTERESTS)]
    out = OpenAIBackend(config(server), None).complete_many(dup)
    assert out[0].text == out[1].text and out[1].request.user == 99 and len(server.requests) == 21


def test_api_key_only_from_environment(monkeypatch):
    monkeypatch.delenv("CIKG_MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="CIKG_MISSING_KEY"):
        OpenAIBackend(LLMConfig(model="gpt-4o-mini", base_url="https://api.example.com/v1",
                                api_key_env="CIKG_MISSING_KEY"))
    assert LLMConfig(base_url="http://127.0.0.1:9/v1", api_key_env="CIKG_MISSING_KEY").api_key() == "EMPTY"
    with pytest.raises(ConfigError, match="concurrency"):
        LLMConfig(concurrency=0)
    with pytest.raises(ConfigError, match="base_url"):
        LLMConfig(base_url="127.0.0.1:8080")


_CHILD = textwrap.dedent("""
    import logging, sys
    from cikg.data import synthetic
    from cikg.llm import LLMConfig, OpenAIBackend, RetryPolicy, infer_interests
    base_url, out = sys.argv[1], sys.argv[2]
    ds = synthetic(n_users=200, n_items=120, seed=3)
    config = LLMConfig(model="test-model", base_url=base_url, concurrency=4, timeout=5, progress=False)
    infer_interests(ds, OpenAIBackend(config, out + "/llm_cache.sqlite"), out_dir=out)
""")


def test_killed_run_resumes_without_repeats(tmp_path):
    from cikg.data import synthetic

    with FaultServer(latency=0.03) as srv:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
        child = subprocess.Popen([sys.executable, "-c", _CHILD, srv.base_url, str(tmp_path)], env=env,
                                 stderr=subprocess.DEVNULL)
        db = tmp_path / "llm_cache.sqlite"
        deadline = time.monotonic() + 60
        answered = 0
        while time.monotonic() < deadline and answered < 60:
            time.sleep(0.05)
            if db.exists():
                try:
                    with sqlite3.connect(db) as conn:
                        answered = conn.execute("SELECT COUNT(*) FROM responses WHERE status='ok'").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert 60 <= answered < 200, "the child finished before it could be killed"
        assert not (tmp_path / "user_interests_raw.jsonl").exists()
        with ResponseCache(db) as cache:
            kept = {row.key: row.text for row in cache.rows() if row.ok}
        received_before = len(srv.requests)
        assert len(kept) >= answered

        ds = synthetic(n_users=200, n_items=120, seed=3)
        backend = OpenAIBackend(LLMConfig(model="test-model", base_url=srv.base_url, concurrency=4, timeout=5,
                                          progress=False), db)
        result = infer_interests(ds, backend, out_dir=tmp_path)
        resent = [r["user"] for r in srv.requests[received_before:]]
        summary = backend.summary()
        assert summary.cached == len(kept) and summary.sent == summary.requests - len(kept)
        assert len(resent) == summary.sent and len(set(resent)) == len(resent)
        # nothing received was lost: every answer kept at the kill is returned as cached, unchanged
        by_key = {r["key"]: r for r in result.records}
        for key, text in kept.items():
            assert by_key[key]["cached"] and by_key[key]["raw"] == text
        assert result.parse["ok"] == summary.requests
        assert (tmp_path / "user_interests_raw.jsonl").exists()


def test_batch_api_flow_with_errors_and_resubmission(server, tmp_path):
    reqs = requests_for(10)
    server.plan["[Title 3]"] = ["500"]
    server.plan["[Title 4]"] = ["empty"]
    cache = ResponseCache(tmp_path / "c.sqlite")
    backend = BatchBackend(config(server), cache, BatchConfig(poll_interval=0.01))
    out = backend.complete_many(reqs)
    assert [c.ok for c in out] == [True] * 3 + [False, False] + [True] * 5
    assert out[3].reason.startswith("http 500") and out[4].reason == "empty answer"
    assert out[0].text == default_answer("[Title 0]") and out[0].prompt_tokens > 0
    uploads = [f for f in server.files.values() if f["meta"]["purpose"] == "batch"]
    assert len(uploads) == 1 and len(uploads[0]["content"].splitlines()) == 10
    assert cache.batches() == [{"batch_id": next(iter(server.batches)), "status": "completed", "collected": True}]
    again = BatchBackend(config(server), cache, BatchConfig(poll_interval=0.01)).complete_many(reqs)
    assert all(c.ok for c in again)
    uploads = [f for f in server.files.values() if f["meta"]["purpose"] == "batch"]
    assert len(uploads) == 2 and len(uploads[1]["content"].splitlines()) == 2  # only the two failures
    assert [c.cached for c in again] == [True] * 3 + [False, False] + [True] * 5


def test_batch_resumes_by_stored_id_and_handles_expiry(tmp_path):
    with FaultServer(batch_polls=4) as srv:
        reqs = requests_for(8)
        cache = ResponseCache(tmp_path / "c.sqlite")
        impatient = BatchBackend(config(srv), cache, BatchConfig(poll_interval=0.0, wait_timeout=0.0))
        with pytest.raises(LLMError, match="re-run the same command to resume"):
            impatient.complete_many(reqs)
        assert len(cache.open_batches()) == 1 and len(srv.batches) == 1
        out = BatchBackend(config(srv), cache, BatchConfig(poll_interval=0.0)).complete_many(reqs)
        assert all(c.ok for c in out) and len(srv.batches) == 1  # picked up, not paid for twice
        assert cache.open_batches() == []

        more = requests_for(6, prefix="Other")
        srv.batch_fault = "expired"
        out = BatchBackend(config(srv), cache, BatchConfig(poll_interval=0.0)).complete_many(more)
        assert sum(c.ok for c in out) == 3
        assert all(c.reason == "batch expired: no result for this request" for c in out if not c.ok)
        out = BatchBackend(config(srv), cache, BatchConfig(poll_interval=0.0)).complete_many(more)
        assert all(c.ok for c in out) and len(srv.batches) == 3
