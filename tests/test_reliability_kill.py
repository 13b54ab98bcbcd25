"""Kill-and-resume: real ``cikg`` processes stopped by SIGKILL or SIGINT at random moments of LLM inference
(against the OpenAI-compatible fault server), training and clustering, then run again until they finish.
The final artifacts must equal those of an uninterrupted run.

The default suite kills three times (inference: SIGKILL then SIGINT; training: SIGKILL). The ``slow`` tests
repeat the loop (more kills, both signals, clustering too). Kill moments come from a seeded generator and
the progress the process has made (answers in the cache, epochs done, vectors embedded), so every kill
lands inside the work. ``KILLS`` counts the kills survived (printed at the end of the module).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, List

import pytest
import torch

from cikg.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KILLS: Counter = Counter()
TIMING_KEYS = ("seconds", "train_seconds")


@pytest.fixture(scope="module", autouse=True)
def report_kills():
    yield
    print("\nkills survived:", dict(sorted(KILLS.items())))


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


# `python -m cikg` with Ctrl-C restored: a shell that starts the suite in the background (`nohup ... &`,
# as CI harnesses may) hands SIGINT down ignored, and a SIGINT kill would then let the run finish
_CIKG_WITH_SIGINT = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                     "from cikg.cli import main; sys.exit(main(sys.argv[1:]))")


def _start(args: List[str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen([sys.executable, "-c", _CIKG_WITH_SIGINT, *args], env=_env(), stdout=handle,
                            stderr=subprocess.STDOUT)


def _run(args: List[str], log: Path, timeout: float = 300) -> None:
    proc = _start(args, log)
    rc = proc.wait(timeout=timeout)
    assert rc == 0, log.read_text()[-3000:]


def _forget_artifacts(directory: Path, *names: str) -> None:
    """Remove the final artifacts a run wrote when it finished before its kill, so that the next run (a kill
    target or the final resume) works in progress instead of only re-reading a finished artifact."""
    for name in names:
        (directory / name).unlink(missing_ok=True)


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], sig: int, rng: random.Random,
               log: Path, timeout: float = 180, jitter: float = 0.05) -> bool:
    """Send ``sig`` once ``ready()`` holds (after a random extra delay); False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    time.sleep(rng.uniform(0, jitter))
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    if sig == signal.SIGINT:  # the CLI's own handling: a one-line note and exit status 130 (or done meanwhile)
        assert rc in (130, 0), log.read_text()[-3000:]
        if rc == 130:
            assert "cikg: interrupted" in log.read_text()
        return rc == 130
    assert rc == -signal.SIGKILL
    return True


# ------------------------------------------------------------------------------------------- inference
N_USERS = 100


def _infer_args(server: FaultServer, out: Path) -> List[str]:
    return ["interests", "infer", "book-crossing", "--base-url", server.base_url, "--model", "test-model",
            "--users", str(N_USERS), "--concurrency", "2", "--max-attempts", "2", "-o", str(out), "--no-progress"]


def _answers(out: Path) -> int:
    return _count(out / "llm_cache.sqlite", "SELECT COUNT(*) FROM responses WHERE status='ok'")


def _without_cached_flag(path: Path) -> List[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.pop("cached")  # whether an answer came from the cache is the one thing a resume changes
    return records


def _inference_kill_loop(tmp_path: Path, signals: List[int], seed: int) -> None:
    rng = random.Random(seed)
    with FaultServer(latency=0.1) as server:  # 20 answers after the kill target: >= 1 s of margin
        assert main(_infer_args(server, tmp_path / "reference")) == 0  # uninterrupted, in this process
        reference_requests = len(server.requests)
        assert reference_requests == N_USERS
        out = tmp_path / "killed"
        log = tmp_path / "killed.log"
        survived = 0
        for sig in signals:
            # the kill target counts requests the server received (the run's progress as the server sees it),
            # leaving >= 20 answers of work after it
            remaining = N_USERS - _answers(out)
            target = len(server.requests) + max(0, min(rng.randint(8, 25), remaining - 20))
            proc = _start(_infer_args(server, out), log)
            if _kill_when(proc, lambda target=target: len(server.requests) >= target, sig, rng, log):
                survived += 1
                KILLS[f"inference {signal.Signals(sig).name}"] += 1
                assert not (out / "user_interests_raw.jsonl").exists()  # never a half-written artifact
            elif _answers(out) >= N_USERS:  # it finished first (a starved poller on a loaded machine): every
                break                         # answer is cached, so later kills would test nothing
            with sqlite3.connect(out / "llm_cache.sqlite") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert survived >= min(2, len(signals) - 1), "the runs finished before they could be killed"
        _forget_artifacts(out, "user_interests_raw.jsonl")  # written by a run that finished first
        _run(_infer_args(server, out), log)
        sent = len(server.requests) - reference_requests
    # everything answered once, except requests in flight at a kill (at most the concurrency, per kill)
    assert N_USERS <= sent <= N_USERS + 2 * len(signals)
    assert _without_cached_flag(out / "user_interests_raw.jsonl") == \
        _without_cached_flag(tmp_path / "reference" / "user_interests_raw.jsonl")
    summary = json.loads((out / "llm_summary.json").read_text())
    assert summary["parse"]["ok"] == N_USERS and summary["failed"] == 0


@pytest.mark.slow  # ~35 s: two real inference processes killed and resumed
def test_inference_sigkill_then_sigint_resumes_to_the_same_artifact(tmp_path):
    _inference_kill_loop(tmp_path, [signal.SIGKILL, signal.SIGINT], seed=1)


@pytest.mark.slow
def test_inference_kill_loop(tmp_path):
    _inference_kill_loop(tmp_path, [signal.SIGKILL, signal.SIGINT] * 3, seed=2)


# ------------------------------------------------------------------------------------------- training
EPOCHS = 30


def _train_args(run_dir: Path, model: str = "lightgcn") -> List[str]:
    extra = ["model.total_epoch=30", "model.transe_batch_size=512"] if model == "cikgrec" else []
    return ["train", "-", "data.synthetic_users=600", "data.synthetic_items=150", f"model.name={model}",
            "model.dim=32", "model.layers=2", *extra, f"train.epochs={EPOCHS}", "train.batch_size=256",
            "train.patience=100", "train.ks=[20]", "train.select=[recall@20]", "train.progress=false",
            "train.threads=1", "train.seed=11", "--run-dir", str(run_dir)]


def _epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _history(run_dir: Path) -> List[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _training_kill_loop(tmp_path: Path, signals: List[int], seed: int, model: str = "lightgcn") -> None:
    rng = random.Random(seed)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    log = tmp_path / "killed.log"
    assert main(_train_args(reference, model)) == 0  # uninterrupted, in this process
    survived = 0
    for sig in signals:
        target = min(_epochs_done(killed) + rng.randint(1, 6), EPOCHS - 6)
        proc = _start(_train_args(killed, model), log)
        if _kill_when(proc, lambda target=target: _epochs_done(killed) >= target, sig, rng, log, jitter=0.15):
            survived += 1
            KILLS[f"training {signal.Signals(sig).name}"] += 1
            assert not (killed / "metrics.json").exists()
            state = torch.load(killed / "checkpoint.pt", weights_only=True)  # always a whole checkpoint
            assert state["epoch"] >= 1
        else:  # it finished first: the next run starts over rather than resuming a finished run
            shutil.rmtree(killed)
    assert survived >= len(signals) - 1, "the runs finished before they could be killed"
    _run(_train_args(killed, model), log)
    got, want = json.loads((killed / "metrics.json").read_text()), json.loads((reference / "metrics.json").read_text())
    assert got == want
    assert _history(killed) == _history(reference)
    a = torch.load(killed / "best_model.pt", weights_only=True)
    b = torch.load(reference / "best_model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (killed / "groups.csv").read_bytes() == (reference / "groups.csv").read_bytes()
    assert (killed / "per_user_test.csv.gz").read_bytes() == (reference / "per_user_test.csv.gz").read_bytes()


def test_training_sigkill_resumes_to_identical_weights_and_metrics(tmp_path):
    _training_kill_loop(tmp_path, [signal.SIGKILL], seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lightgcn", "cikgrec"])
def test_training_kill_loop(tmp_path, model):
    _training_kill_loop(tmp_path, [signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGKILL], seed=4,
                        model=model)


# ------------------------------------------------------------------------------------------- clustering
def _write_phrases(directory: Path, n_users: int = 400) -> None:
    """A run directory as `cikg interests infer` leaves it: phrases of real dbbook2014 titles per user."""
    from cikg.data import load_dataset

    ds = load_dataset("dbbook2014")
    directory.mkdir(parents=True)
    lines = []
    for user in range(n_users):
        titles = [ds.item_text[i] for i in ds.history(user, last=4) if ds.item_text[i]]
        lines.append(json.dumps({"user": user, "user_id": ds.user_ids[user], "phrases": titles, "raw": "",
                                 "status": "ok"}))
    (directory / "user_interests_raw.jsonl").write_text("\n".join(lines) + "\n")
    (directory / "meta.json").write_text(json.dumps({"dataset": "dbbook2014"}))


def _cluster_args(directory: Path) -> List[str]:
    return ["interests", "cluster", str(directory), "--kappa", "12", "--batch-size", "8", "--threads", "1",
            "--max-user-fraction", "0.5"]


@pytest.mark.slow
def test_clustering_kill_loop(tmp_path):
    rng = random.Random(5)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _write_phrases(reference)
    _write_phrases(killed)
    _run(_cluster_args(reference), tmp_path / "reference.log", timeout=600)
    log = tmp_path / "killed.log"
    db = killed / "embedding_cache.sqlite"
    total = _count(reference / "embedding_cache.sqlite", "SELECT COUNT(*) FROM embeddings")
    survived = 0
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGKILL):
        target = min(_count(db, "SELECT COUNT(*) FROM embeddings") + rng.randint(40, 200), total - 50)
        proc = _start(_cluster_args(killed), log)
        if _kill_when(proc, lambda target=target: _count(db, "SELECT COUNT(*) FROM embeddings") >= target, sig, rng, log):
            survived += 1
            KILLS[f"clustering {signal.Signals(sig).name}"] += 1
            assert not (killed / "user_interest_clustered.txt").exists()
        else:  # it finished first: the next run clusters again from the embedding cache
            _forget_artifacts(killed, "user_interest_clustered.txt", "interest_list.txt")
    assert survived >= 2
    _run(_cluster_args(killed), log, timeout=600)
    for name in ("user_interest_clustered.txt", "interest_list.txt"):
        assert (killed / name).read_bytes() == (reference / name).read_bytes(), name
