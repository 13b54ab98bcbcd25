"""Faults the other LLM tests leave out, full disks and read-only folders, secrets, and unsafe checkpoints.

LLM faults (429 with and without Retry-After, 500/502/503, time-outs, resets before the answer, malformed,
empty, non-UTF-8 and enormous bodies, batches that expire or partly fail) are in ``test_llm_client.py``;
here: connection refused, a connection reset or closed in the middle of the body, a batch that fails as a
whole. A full disk is simulated where it happens: SQLite's own SQLITE_FULL (``PRAGMA max_page_count``) for
the caches, ``ENOSPC`` from ``fsync`` for artifacts. A read-only folder is real (``chmod 0o500``; as root,
which ignores modes, ``chattr +i``).
"""
from __future__ import annotations

import ast
import errno
import json
import os
import secrets
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from cikg._io import torch_save_atomic, write_text_atomic
from cikg.data import synthetic
from cikg.errors import CheckpointError, OutputError
from cikg.llm import (
    CIKGREC_INTERESTS,
    BatchBackend,
    BatchConfig,
    KGProfileBackend,
    LLMConfig,
    OpenAIBackend,
    Request,
    ResponseCache,
    RetryPolicy,
    infer_interests,
)
from cikg.models import LightGCNConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer, _Handler, _user_content, default_answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- the server
class _RecordingHandler(_Handler):
    """The fault server's handler, plus: the Authorization header of every chat request is recorded, and
    ``partial-reset`` / ``partial-close`` send the status, headers and half the body, then reset or close."""

    def _chat_inner(self, body):
        owner = self.owner
        user_content = _user_content(body)
        with owner._lock:
            owner.auth_headers.append(self.headers.get("Authorization"))
            peek = next((queue[0] for trigger, queue in owner.plan.items() if trigger in user_content and queue),
                        "ok")
        if not peek.startswith("partial"):
            return super()._chat_inner(body)
        owner.next_behaviour(user_content)
        owner.log_request(user_content, peek)
        full = json.dumps(owner.chat_body(str(body.get("model", "")), default_answer(user_content),
                                          user_content)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(full)))
        self.end_headers()
        self.wfile.write(full[: len(full) // 2])
        self.wfile.flush()
        if peek == "partial-reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class Server(FaultServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.auth_headers = []

    def start(self) -> "Server":
        server = self

        class Handler(_RecordingHandler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self


def requests_for(n: int, prefix: str = "Title"):
    return [Request.from_messages(i, f"u{i}", CIKGREC_INTERESTS.render(domain="books", titles=f"{prefix} {i}"),
                                  CIKGREC_INTERESTS) for i in range(n)]


def llm_config(base_url: str, **kw) -> LLMConfig:
    settings = dict(model="test-model", base_url=base_url, timeout=2.0, concurrency=4, progress=False,
                    retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, seed=0))
    settings.update(kw)
    return LLMConfig(**settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------- LLM faults
def test_connection_refused_is_recorded_then_sent_again(tmp_path):
    """Nobody listens: every request fails after its retries, is stored as failed with the reason, the summary
    counts it; the next run (server up) sends exactly those requests."""
    reqs = requests_for(5)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(llm_config(dead), tmp_path / "c.sqlite")
    out = backend.complete_many(reqs)
    assert [c.status for c in out] == ["failed"] * 5
    assert all(c.reason.startswith("connection error") and c.attempts == 3 for c in out)
    summary = backend.summary()
    assert (summary.sent, summary.ok, summary.failed) == (5, 0, 5) and summary.failures == {"connection error": 5}
    assert any("failed" in line for line in summary.lines())
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.counts() == {"ok": 0, "failed": 5}
    with Server() as srv:
        again = OpenAIBackend(llm_config(srv.base_url), tmp_path / "c.sqlite")
        out = again.complete_many(reqs)
        assert all(c.ok for c in out) and len(srv.requests) == 5
        assert [c.text for c in out] == [default_answer(r.message_dicts[1]["content"]) for r in reqs]


@pytest.mark.parametrize("fault", ["partial-reset", "partial-close"])
def test_connection_lost_in_the_middle_of_the_body(tmp_path, fault):
    """Status and headers arrive, then half the body and a reset (or a close): retried, then recovered; when it
    keeps happening, the request is recorded as a connection error and the rest of the run goes on."""
    reqs = requests_for(4)
    with Server() as srv:
        srv.plan["[Title 0]"] = [fault]
        srv.plan["[Title 1]"] = [fault] * 3
        backend = OpenAIBackend(llm_config(srv.base_url), tmp_path / "c.sqlite")
        out = backend.complete_many(reqs)
    assert out[0].ok and out[0].attempts == 2 and out[0].text == default_answer(reqs[0].message_dicts[1]["content"])
    assert out[1].status == "failed" and out[1].attempts == 3 and out[1].reason.startswith("connection error")
    assert out[2].ok and out[3].ok
    assert backend.summary().failures == {"connection error": 1} and backend.summary().retries == 3
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.counts() == {"ok": 3, "failed": 1}


def test_batch_that_fails_as_a_whole_is_recorded_and_resubmitted(tmp_path):
    reqs = requests_for(4)
    with Server() as srv:
        srv.batch_fault = "failed"
        cache = ResponseCache(tmp_path / "c.sqlite")
        out = BatchBackend(llm_config(srv.base_url), cache, BatchConfig(poll_interval=0.0)).complete_many(reqs)
        assert [c.status for c in out] == ["failed"] * 4
        assert all(c.reason == "batch failed: invalid: test failure" for c in out)
        assert cache.counts() == {"ok": 0, "failed": 4} and cache.open_batches() == []
        out = BatchBackend(llm_config(srv.base_url), cache, BatchConfig(poll_interval=0.0)).complete_many(reqs)
        assert all(c.ok for c in out) and len(srv.batches) == 2


# ------------------------------------------------------------------------------------------- disk full
def _fill(conn: sqlite3.Connection) -> None:
    """SQLite's disk-full path: no page beyond those the file has now (SQLITE_FULL on the next new page)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_answer_cache_disk_full_keeps_what_was_committed(tmp_path):
    reqs = requests_for(40, prefix="Book")
    path = tmp_path / "c.sqlite"
    with Server(latency=0.0) as srv:
        cache = ResponseCache(path)
        OpenAIBackend(llm_config(srv.base_url), cache).complete_many(reqs[:5])
        _fill(cache._conn)
        with pytest.raises(OutputError, match=r"c\.sqlite: cannot store an answer in the answer cache "
                                              r"\(database or disk is full \(SQLITE_FULL\)\)") as err:
            OpenAIBackend(llm_config(srv.base_url), cache).complete_many(reqs)
        assert err.value.path == str(path)
        cache.close()
        with sqlite3.connect(path) as conn:  # the file is intact and readable
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with ResponseCache(path) as cache:
            rows = {row.key: row for row in cache.rows()}
            kept = len(rows)
            assert 5 <= kept < 40 and all(row.ok for row in rows.values())
        sent = len(srv.requests)
        # space is back: the re-run sends only what the cache does not hold, and every answer is right
        backend = OpenAIBackend(llm_config(srv.base_url), path)
        out = backend.complete_many(reqs)
        assert all(c.ok for c in out) and len(srv.requests) - sent == 40 - kept
        assert backend.summary().cached == kept
        assert [c.text for c in out] == [default_answer(r.message_dicts[1]["content"]) for r in reqs]


def test_embedding_cache_disk_full_keeps_stored_vectors(tmp_path):
    from cikg.interests import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "e.sqlite")
    rng = np.random.default_rng(0)
    first = rng.normal(size=(3, 384)).astype(np.float32)
    cache.put("m", ["a", "b", "c"], first)
    _fill(cache._conn)
    with pytest.raises(OutputError, match="e.sqlite: cannot store vectors in the embedding cache .*full"):
        cache.put("m", [f"t{i}" for i in range(50)], rng.normal(size=(50, 384)).astype(np.float32))
    cache.close()
    again = EmbeddingCache(tmp_path / "e.sqlite")
    got = again.get("m", ["a", "b", "c", "t0"])
    assert sorted(got) == ["a", "b", "c"]  # the failed batch was rolled back as a whole
    np.testing.assert_array_equal(np.stack([got[k] for k in "abc"]), first)


@pytest.fixture()
def disk_full(monkeypatch):
    """``ENOSPC`` from ``fsync`` after ``allowed`` more successful ones (set ``state["allowed"]``)."""
    state = {"allowed": 0, "failed": 0}
    real = os.fsync

    def fsync(fd):
        if state["allowed"] <= 0:
            state["failed"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        state["allowed"] -= 1
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return state


def _leftovers(directory: Path):
    return sorted(p.name for p in directory.rglob("*.tmp"))


def test_artifact_disk_full_leaves_the_previous_file(tmp_path, disk_full):
    """infer_interests on a full disk: OutputError naming the file; the previous artifact is unchanged."""
    ds = synthetic(60, 40, seed=1)
    disk_full["allowed"] = 10**6
    infer_interests(ds, KGProfileBackend(ds), users=range(30), out_dir=tmp_path)
    before = (tmp_path / "user_interests_raw.jsonl").read_bytes()
    disk_full["allowed"] = 0
    with pytest.raises(OutputError, match=r"user_interests_raw.jsonl: cannot write: No space left on device "
                                          r"\(ENOSPC\); the previous file, if any, is unchanged"):
        infer_interests(ds, KGProfileBackend(ds), users=range(60), out_dir=tmp_path)
    assert (tmp_path / "user_interests_raw.jsonl").read_bytes() == before
    assert _leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="ENOSPC"):
        torch_save_atomic({"w": torch.zeros(3)}, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists() and _leftovers(tmp_path) == []


SMALL = DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90, synthetic_seed=3)


def _run_config(**train) -> RunConfig:
    settings = dict(epochs=3, batch_size=512, lr=5e-3, ks=(10, 20), seed=5, progress=False)
    settings.update(train)
    return RunConfig(data=SMALL, model=LightGCNConfig(layers=2, dim=16), train=TrainConfig(**settings))


def test_training_disk_full_then_resume_gives_the_same_result(tmp_path, disk_full):
    """The disk fills during epoch 2's checkpoint: OutputError; epoch 1's checkpoint is intact, no temporary
    file is left; once there is space, the resumed run ends with the uninterrupted run's metrics."""
    config = _run_config()
    disk_full["allowed"] = 10**6
    reference = Trainer(config, tmp_path / "reference").fit()
    # one fsync per atomic write: config.yaml, then epoch 1's best_model.pt, checkpoint.pt, metrics.jsonl;
    # the fifth write (epoch 2's best_model.pt or checkpoint.pt) finds the disk full
    disk_full["allowed"] = 4
    with pytest.raises(OutputError, match="ENOSPC"):
        Trainer(config, tmp_path / "full").fit()
    assert disk_full["failed"] == 1
    state = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert _leftovers(tmp_path / "full") == []
    disk_full["allowed"] = 10**6
    resumed = Trainer(config, tmp_path / "full").fit()
    assert resumed.test == reference.test and resumed.best_epoch == reference.best_epoch
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


# ------------------------------------------------------------------------------------------- read-only
@pytest.fixture()
def read_only_dir(tmp_path):
    """A directory nobody can write into: mode 0o500, and ``chattr +i`` when running as root."""
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    immutable = False
    if _writable(directory):
        immutable = subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0
    if _writable(directory):
        directory.chmod(0o700)
        pytest.skip("cannot make a read-only directory here (root without chattr)")
    yield directory
    if immutable:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    directory.chmod(0o700)


def _writable(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


def test_cli_infer_into_read_only_dir_is_one_line_exit_2(read_only_dir, capsys):
    from cikg.cli import main

    rc = main(["interests", "infer", "book-crossing", "--backend", "kg-profile", "--users", "20",
               "-o", str(read_only_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    # the output directory's lock file is the first thing written: refused before any request is made
    assert err[0].startswith(f"cikg: error: {read_only_dir}: cannot write: ")
    assert "EACCES" in err[0] or "EPERM" in err[0] or "EROFS" in err[0]
    assert list(read_only_dir.iterdir()) == []


def test_cli_train_and_export_into_read_only_dir(read_only_dir, capsys):
    from cikg.cli import main

    args = ["train", "-", "data.synthetic_users=300", "data.synthetic_items=90", "train.epochs=1",
            "train.ks=[10,20]", "train.progress=false", "model.dim=16"]
    assert main(args + ["--run-dir", str(read_only_dir)]) == 2
    assert f"{read_only_dir}: cannot write" in capsys.readouterr().err  # its lock file, before config.yaml
    assert main(args + ["--run-dir", str(read_only_dir / "sub" / "run")]) == 2
    assert f"{read_only_dir / 'sub' / 'run'}: cannot write" in capsys.readouterr().err
    assert main(["graph", "export", "book-crossing", "--user", "3", "-o", str(read_only_dir / "u.graphml")]) == 2
    assert f"{read_only_dir / 'u.graphml'}: cannot write" in capsys.readouterr().err
    assert list(read_only_dir.iterdir()) == []


def test_caches_in_read_only_dir(read_only_dir):
    from cikg.interests import EmbeddingCache

    with pytest.raises(OutputError, match=r"ro/c.sqlite: cannot open the answer cache"):
        ResponseCache(read_only_dir / "c.sqlite")
    with pytest.raises(OutputError, match=r"ro/e.sqlite: cannot open the embedding cache"):
        EmbeddingCache(read_only_dir / "e.sqlite")
    with pytest.raises(OutputError, match=r"ro/deeper/c.sqlite: cannot open the answer cache \(.*\(E(PERM|ACCES)\)\)"):
        ResponseCache(read_only_dir / "deeper" / "c.sqlite")


def test_cache_in_a_folder_made_read_only_stays_consistent(tmp_path):
    """A cache whose folder turns read-only mid-run (WAL files cannot be created): a clear error, and once
    writable again the cache holds every answer committed before."""
    folder = tmp_path / "cache"
    reqs = requests_for(6)
    with Server() as srv, ResponseCache(folder / "c.sqlite") as cache:
        OpenAIBackend(llm_config(srv.base_url), cache).complete_many(reqs[:3])
    assert sorted(p.name for p in folder.iterdir()) == ["c.sqlite"]  # closed: WAL checkpointed and removed
    folder.chmod(0o500)
    immutable = _writable(folder) and subprocess.run(["chattr", "+i", str(folder)]).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("cannot make a read-only directory here")
        with pytest.raises(OutputError, match="c.sqlite: cannot"):
            cache = ResponseCache(folder / "c.sqlite")
            cache.put("k", "ok", "text")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)
    with ResponseCache(folder / "c.sqlite") as cache:
        assert cache.counts() == {"ok": 3, "failed": 0}
        assert cache.get("k") is None


# ------------------------------------------------------------------------------------------- security
def test_api_key_is_in_no_file_log_or_cache(tmp_path):
    """A full `cikg interests infer` against the OpenAI-compatible fault server, debug logging on, a unique
    random key in OPENAI_API_KEY: the server received it; no artifact, log or cache byte holds it; the cache
    has no header column and no header text."""
    key = "sk-cikg-test-" + secrets.token_hex(24)
    out = tmp_path / "run"
    with Server() as srv:
        url = srv.base_url
        env = dict(os.environ, OPENAI_API_KEY=key, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-m", "cikg", "-vv", "interests", "infer", "book-crossing", "--base-url", url,
             "--model", "test-model", "--users", "12", "--concurrency", "3", "-o", str(out), "--no-progress"],
            env=env, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        assert srv.auth_headers and set(srv.auth_headers) == {f"Bearer {key}"}  # it was really sent
        # a failing second run (server gone) logs its errors too
    failing = subprocess.run(
        [sys.executable, "-m", "cikg", "-vv", "interests", "infer", "book-crossing", "--base-url", url,
         "--model", "other-model", "--users", "2", "--max-attempts", "1", "-o", str(out), "--no-progress"],
        env=env, capture_output=True, timeout=300)
    logs = proc.stdout + proc.stderr + failing.stdout + failing.stderr
    assert b"DEBUG" in logs and b"HTTP Request" in logs  # debug logging of the HTTP layer was on
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.name for p in written} >= {"llm_cache.sqlite", "user_interests_raw.jsonl", "llm_summary.json"}
    for blob, where in [(logs, "logs")] + [(p.read_bytes(), str(p)) for p in written]:
        assert key.encode() not in blob, where
        assert key[-16:].encode() not in blob, where  # nor a part of it
    with sqlite3.connect(out / "llm_cache.sqlite") as conn:
        columns = {row[1] for table in ("responses", "batches")
                   for row in conn.execute(f"PRAGMA table_info({table})")}
        dump = "\n".join(conn.iterdump())
    assert columns and not {c for c in columns if "header" in c.lower() or "auth" in c.lower()}
    assert "Bearer" not in dump and "uthorization" not in dump and key not in dump
    assert dump.count("INSERT INTO \"responses\"") >= 12


def test_every_torch_load_in_the_library_is_weights_only():
    """AST check: each ``torch.load(...)`` call in cikg/ passes ``weights_only=True``."""
    calls = []
    for path in sorted((ROOT / "cikg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                flags = {k.arg: k.value for k in node.keywords}
                ok = isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert len(calls) >= 3
    assert [where for where, ok in calls if not ok] == []


class _Payload:
    """Pickles to a call of ``Path.touch``: loading it with full unpickling would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_with_code_are_refused(tmp_path):
    """A checkpoint or best_model.pt holding pickled code is refused with CheckpointError; the code never runs."""
    from cikg.train import load_run

    config = _run_config(epochs=1)
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    marker = tmp_path / "pwned"
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    state["history"].append({"evil": _Payload(marker)})
    torch.save(state, trainer.checkpoint_path)
    with pytest.raises(CheckpointError, match="checkpoint.pt: cannot read checkpoint"):
        Trainer(config, tmp_path / "run").fit()
    torch.save({"weight": _Payload(marker)}, trainer.best_path)
    with pytest.raises(CheckpointError, match="best_model.pt: cannot read model weights"):
        load_run(tmp_path / "run")
    assert not marker.exists()
    (trainer.best_path).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="best_model.pt: cannot read model weights"):
        load_run(tmp_path / "run")
    write_text_atomic(tmp_path / "run" / "checkpoint.pt", "not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Trainer(config, tmp_path / "run").fit()
