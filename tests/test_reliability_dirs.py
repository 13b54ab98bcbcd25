"""Run and output directories: one process at a time (a lock the kernel releases), no temporary file left by a
kill, artifact modes that follow the umask, and target names up to the OS limit (issue 18, items 4-7).

The concurrent cases are real processes: a ``cikg train`` or ``cikg interests infer`` holds a directory while a
second one (a subprocess, or ``cikg.cli.main`` in this process) tries it.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import pytest
import torch

from cikg._io import torch_save_atomic, write_json_atomic, write_text_atomic
from cikg._lock import LOCK_FILE, DirectoryLock
from cikg.cli import main
from cikg.data import synthetic
from cikg.errors import DirectoryInUseError, OutputError
from cikg.llm import KGProfileBackend, infer_interests
from cikg.models import LightGCNConfig
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=lightgcn", "data.dataset=synthetic", "data.synthetic_users=300", "data.synthetic_items=90",
        "model.dim=16", "train.ks=[10,20]", "train.progress=false", "train.threads=1"]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("OPENAI_API_KEY", None)
    return env


def _cikg(args: List[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cikg", *args], env=_env(), stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the holder ended early (rc {proc.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the holder was not ready after {timeout} s: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _holds_lock(directory: Path, pid: int) -> bool:
    lock = directory / LOCK_FILE
    return lock.exists() and lock.read_text().split()[:1] == [str(pid)]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _in_use(directory: Path, what: str, pid: int) -> str:
    return (f"cikg: error: {directory}: {what} in use by process {pid}; wait for it to end or choose another "
            "directory")


# ------------------------------------------------------------------------------------------- locks (item 4)
def test_second_cikg_train_into_a_run_directory_exits_2_naming_the_holder(tmp_path):
    """A `cikg train` holds its run directory: a second `cikg train` there (another config: 8 epochs) exits 2 with
    one line naming the directory and the holder's PID, writes nothing (config.yaml keeps the holder's epochs)
    and removes none of the holder's temporary files; Trainer.fit from Python raises DirectoryInUseError with
    the same message. Once the holder is SIGKILLed the lock is free: no stale lock."""
    run_dir = tmp_path / "run"
    holder = _cikg(["train", "-", *TINY, "train.epochs=100000", "train.patience=0", "--run-dir", str(run_dir)], tmp_path / "a.log")
    try:
        _wait_for(lambda: _holds_lock(run_dir, holder.pid) and (run_dir / "config.yaml").exists(), holder,
                  tmp_path / "a.log")
        in_flight = run_dir / ".cikg-0123456789ab.tmp"  # as if the holder were writing an artifact right now
        in_flight.write_bytes(b"half")
        second = subprocess.run([sys.executable, "-m", "cikg", "train", "-", *TINY, "train.epochs=8",
                                 "--run-dir", str(run_dir)], env=_env(), capture_output=True, timeout=300)
        err = second.stderr.decode().strip().splitlines()
        assert second.returncode == 2 and err == [_in_use(run_dir, "run directory", holder.pid)], err
        assert "epochs: 100000" in (run_dir / "config.yaml").read_text()
        assert in_flight.read_bytes() == b"half"

        config = RunConfig(data=DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90),
                           model=LightGCNConfig(dim=16), train=TrainConfig(epochs=8, ks=(10, 20), progress=False))
        with pytest.raises(DirectoryInUseError) as caught:
            Trainer(config, run_dir).fit()
        assert f"cikg: error: {caught.value}" == _in_use(run_dir, "run directory", holder.pid)
        assert caught.value.pid == holder.pid and caught.value.path == str(run_dir)
    finally:
        _stop(holder)
    assert (run_dir / LOCK_FILE).read_text().split()[0] == str(holder.pid)  # the file stays; the lock does not
    with DirectoryLock(run_dir, "run directory") as lock:
        assert lock.held and (run_dir / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        assert not in_flight.exists()  # left by a dead process: removed once the lock is ours


def test_second_infer_cluster_or_augment_into_a_held_output_directory(tmp_path, capsys):
    """`cikg interests infer -o DIR` (openai backend, a slow server) holds DIR: a second infer (offline
    kg-profile, in another process), `cikg interests cluster DIR` and `cikg augment kar -o DIR` (in this
    process) exit 2 with the one line naming DIR and the PID; the holder sends every request once."""
    out = tmp_path / "out"
    with FaultServer(latency=0.3) as server:
        holder = _cikg(["interests", "infer", "book-crossing", "--base-url", server.base_url, "--model", "m",
                        "--users", "60", "--concurrency", "1", "--no-progress", "-o", str(out)], tmp_path / "a.log")
        try:
            _wait_for(lambda: _holds_lock(out, holder.pid) and len(server.requests) >= 1, holder, tmp_path / "a.log")
            second = subprocess.run([sys.executable, "-m", "cikg", "interests", "infer", "book-crossing", "--backend",
                                     "kg-profile", "--users", "60", "-o", str(out)], env=_env(), capture_output=True,
                                    timeout=300)
            err = second.stderr.decode().strip().splitlines()
            assert second.returncode == 2 and err == [_in_use(out, "output directory", holder.pid)], err
            for args in (["interests", "cluster", str(out), "--kappa", "2", "--embedding", "tfidf"],
                         ["augment", "kar", "book-crossing", "--backend", "kg-profile", "-o", str(out)]):
                capsys.readouterr()
                assert main(args) == 2, args
                assert capsys.readouterr().err.strip().splitlines() == [_in_use(out, "output directory", holder.pid)]
            assert holder.poll() is None, "the holder ended before the other commands were tried"
            assert holder.wait(timeout=120) == 0, (tmp_path / "a.log").read_text()[-2000:]
        finally:
            _stop(holder)
        sent = [r["user"] for r in server.requests]
    records = [json.loads(line) for line in (out / "user_interests_raw.jsonl").read_text().splitlines()]
    assert len(records) == 60 and all(r["source"].startswith("openai") for r in records)
    assert len(sent) == len(set(sent)) == sum(r["status"] != "skipped" for r in records)


def test_lock_is_released_after_an_error_and_reports_an_unwritable_directory(tmp_path, monkeypatch, capsys):
    """A fit that fails releases the lock (the next lock in the same process is granted); a second lock on a
    held directory conflicts even within one process; a directory that cannot be made is an OutputError."""
    config = RunConfig(data=DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90),
                       model=LightGCNConfig(dim=16), train=TrainConfig(epochs=2, ks=(10, 20), progress=False))
    trainer = Trainer(config, tmp_path / "run")

    def broken(epoch):
        raise RuntimeError("broken epoch")

    monkeypatch.setattr(trainer, "train_epoch", broken)
    with pytest.raises(RuntimeError, match="broken epoch"):
        trainer.fit()
    with DirectoryLock(tmp_path / "run", "run directory") as lock:
        assert repr(lock) == f"DirectoryLock('{tmp_path / 'run'}', what='run directory', held=True)"
        with pytest.raises(DirectoryInUseError, match=rf"run: run directory in use by process {os.getpid()};"):
            DirectoryLock(tmp_path / "run", "run directory").acquire()
    assert not lock.held
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file/sub: cannot write: Not a directory \(ENOTDIR\)"):
        DirectoryLock(tmp_path / "file" / "sub").acquire()
    rc = main(["interests", "infer", "book-crossing", "--backend", "kg-profile", "--users", "5",
               "-o", str(tmp_path / "file")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"cikg: error: {tmp_path / 'file'}: cannot write: File exists (EEXIST)"]


# ------------------------------------------------------------------------------------------- temp files (item 5)
_DIE_WRITING_CHECKPOINT_2 = """
import os, signal, sys
import torch
from cikg import _io
from cikg.train import trainer

real = trainer.torch_save_atomic

def dying(obj, path):
    if os.path.basename(path) == "checkpoint.pt" and obj["epoch"] == 2:
        with _io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # written, not yet renamed
    return real(obj, path)

trainer.torch_save_atomic = dying
from cikg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_a_checkpoint_write_leaves_no_temporary_file_after_resume(tmp_path):
    """A real SIGKILL while epoch 2's checkpoint is being written leaves a temporary file; the resumed run
    removes it (and those of the old ``.checkpoint.pt.XXXXXXXX.tmp`` naming), keeps files that are not ours,
    resumes from epoch 1 and ends with the uninterrupted run's metrics."""
    run_dir = tmp_path / "run"
    args = ["train", "-", *TINY, "train.epochs=3", "train.seed=5"]
    killed = subprocess.run([sys.executable, "-c", _DIE_WRITING_CHECKPOINT_2, *args, "--run-dir", str(run_dir)],
                            env=_env(), capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    left = sorted(p.name for p in run_dir.glob("*.tmp"))
    assert len(left) == 1 and (run_dir / left[0]).stat().st_size > 1000, left
    (run_dir / ".checkpoint.pt.k3j_x9a2.tmp").write_bytes(b"")  # the naming of cikg before issue 18
    (run_dir / ".metrics.json.0abcdefg.tmp").write_bytes(b"{")
    for foreign in ("notes.tmp", ".editor.tmp", ".cikg-notours.tmp"):
        (run_dir / foreign).write_text("keep")
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert main([*args, "--run-dir", str(run_dir)]) == 0
    assert sorted(p.name for p in run_dir.glob("*.tmp")) == [".cikg-notours.tmp", ".editor.tmp", "notes.tmp"]
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert main([*args, "--run-dir", str(tmp_path / "ref")]) == 0
    strip = ("seconds", "train_seconds")
    assert ([{k: v for k, v in h.items() if k not in strip} for h in history] ==
            [{k: v for k, v in json.loads(line).items() if k not in strip}
             for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"] == json.loads((tmp_path / "ref" / "metrics.json").read_text())["test"]


# ------------------------------------------------------------------------------------------- modes (item 6)
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_artifacts_follow_the_umask(tmp_path, umask, mode):
    """Every artifact of a run directory and of an inference output has mode ``0o666 & ~umask``, like the
    files of any tool (and the SQLite cache's), not mkstemp's 0600."""
    ds = synthetic(60, 40, seed=1)
    config = RunConfig(data=DataConfig(dataset="synthetic", synthetic_users=300, synthetic_items=90),
                       model=LightGCNConfig(dim=16), train=TrainConfig(epochs=1, ks=(10, 20), progress=False))
    old = os.umask(umask)
    try:
        Trainer(config, tmp_path / "run").fit()
        infer_interests(ds, KGProfileBackend(ds), out_dir=tmp_path / "infer")
        torch_save_atomic({"w": torch.zeros(2)}, tmp_path / "w.pt")
    finally:
        os.umask(old)
    files = [tmp_path / "run" / name for name in ("config.yaml", "checkpoint.pt", "best_model.pt", "metrics.jsonl",
                                                  "metrics.json", "groups.csv")]
    files += [tmp_path / "infer" / name for name in ("user_interests_raw.jsonl", "llm_summary.json")]
    files += [tmp_path / "w.pt"]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: oct(mode) for f in files}
    assert stat.S_IMODE((tmp_path / "run" / LOCK_FILE).stat().st_mode) == mode


# ------------------------------------------------------------------------------------------- long names (item 7)
@pytest.mark.parametrize("length", [242, 250, 255])
def test_target_names_up_to_the_os_limit(tmp_path, length):
    """Names the OS accepts (up to 255 characters) can be written atomically: the temporary name is short."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    assert limit >= 255
    write_text_atomic(tmp_path / ("t" * (length - 4) + ".txt"), "text")
    write_json_atomic(tmp_path / ("j" * (length - 5) + ".json"), {"a": 1})
    torch_save_atomic({"w": torch.ones(3)}, tmp_path / ("p" * (length - 3) + ".pt"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [len(n) for n in names] == [length] * 3 and not list(tmp_path.glob("*.tmp"))
    assert json.loads((tmp_path / ("j" * (length - 5) + ".json")).read_text()) == {"a": 1}


def test_cli_export_to_a_255_character_name_and_one_too_long(tmp_path, capsys):
    name = "u" * 247 + ".graphml"
    assert len(name) == 255
    assert main(["graph", "export", "book-crossing", "--user", "3", "-o", str(tmp_path / name)]) == 0
    assert (tmp_path / name).read_text().startswith("<?xml")
    capsys.readouterr()
    assert main(["graph", "export", "book-crossing", "--user", "3", "-o", str(tmp_path / ("v" + name))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write: File name too long (ENAMETOOLONG)" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
