"""``cikg llm serve`` and :class:`LlamaServer`: the port is checked before a start (one line, exit 2, naming
who answers there); readiness is that of the child we started; each start has its own log, never truncated
by another; SIGTERM, SIGINT and SIGHUP stop and reap the llama.cpp child at any moment (before it is ready,
serving, under load), and a SIGKILLed parent's child stops by itself.

The default suite checks the port, readiness and logs with small stand-in children; the ``llm`` tests run
the real llama.cpp server with SmolLM2-135M (the ``cikg[local-llm]`` extra)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional

import pytest

import cikg.llm.serve as serve
from cikg.cli import main
from cikg.errors import ConfigError, LLMError
from cikg.llm.ports import free_port, model_ids
from cikg.llm.serve import LlamaServer, ServeConfig, llama_cpp_available, llama_server

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer  # noqa: E402
from test_distributed import _children  # noqa: E402
from test_reliability_kill import _env  # noqa: E402

READY = "llama.cpp server ready"


def _one_line_error(argv: List[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("cikg: error: ") and READY not in err
    return err.strip()


# ------------------------------------------------------------------------------------------- busy port
def test_busy_port_held_by_a_non_http_listener_is_one_line_exit_2(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        line = _one_line_error(["llm", "serve", "--port", str(port)], capsys)
    assert f"port {port} on 127.0.0.1 is already in use by a listener that does not speak HTTP" in line
    assert f"(PID {os.getpid()}: " in line and "--port 0 picks a free one" in line


def test_busy_port_held_by_an_http_server_names_its_models(capsys):
    with FaultServer() as server:
        port = server.port
        line = _one_line_error(["llm", "serve", "--port", str(port)], capsys)
        assert server.requests == []  # it was asked /v1/models only
    assert f"port {port} on 127.0.0.1 is already in use by an HTTP server" in line
    assert "answering /v1/models with model 'test-model'" in line and f"(PID {os.getpid()}: " in line


def test_port_bound_but_not_listening_and_unknown_host(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        line = _one_line_error(["llm", "serve", "--port", str(port)], capsys)
    assert f"port {port} on 127.0.0.1 is already in use by a socket that is bound but accepts no connection" in line
    line = _one_line_error(["llm", "serve", "--host", "no-such-host.invalid", "--port", "8080"], capsys)
    assert "cannot listen on no-such-host.invalid:8080: unknown host" in line


def test_parallel_slots_above_one_are_refused_where_the_server_has_one(capsys, monkeypatch):
    if llama_cpp_available():  # llama-cpp-python 0.3.36: no n_parallel setting, one lock around completions
        assert not serve.parallel_supported()
    line = _one_line_error(["llm", "serve", "--parallel", "2", "--port", "0"], capsys)
    assert "n_parallel=2: the installed llama-cpp-python server has one slot" in line
    with pytest.raises(ConfigError, match="n_parallel.*expected a positive integer"):
        ServeConfig(n_parallel=0)
    assert ServeConfig().n_parallel == 1
    assert "--n_parallel" not in LlamaServer(ServeConfig(model_path="m.gguf")).command()
    monkeypatch.setattr(serve, "parallel_supported", lambda: True)  # a server version that has the setting
    command = LlamaServer(ServeConfig(model_path="m.gguf", n_parallel=4)).command()
    assert command[command.index("--n_parallel") + 1] == "4"


# ------------------------------------------------------------------------------------------- readiness and logs
class ScriptServer(LlamaServer):
    """A :class:`LlamaServer` whose child is a small Python script instead of llama.cpp (same start, wait,
    stop and log handling); the script gets the port as its argument."""

    def __init__(self, script: str, config: ServeConfig, log_path: Optional[Path] = None):
        super().__init__(config, log_path)
        self.script = script

    def command(self) -> list:
        return [sys.executable, "-c", self.script, str(self.port)]


FAILING_CHILD = "import os, sys; print('child', os.getpid(), 'cannot bind: address already in use'); sys.exit(3)"
SLEEPING_CHILD = "import time; time.sleep(60)"


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    monkeypatch.setattr(serve, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # default logs go to tmp_path


def test_readiness_is_the_childs_not_another_servers(stand_in, monkeypatch):
    """Another server answers on the port (it took it between the check and our child's bind): our child's
    exit is reported with its last log line, and a living child that does not hold the port is never ready."""
    with FaultServer() as other:
        monkeypatch.setattr(serve, "ensure_port_free", lambda host, port: None)
        config = ServeConfig(port=other.port, alias="test-model", startup_timeout=3)
        failing = ScriptServer(FAILING_CHILD, config)
        with pytest.raises(LLMError) as err:
            failing.start()
        pid = failing.pid
        assert f"llama.cpp server (PID {pid}) exited with status 3 before it was ready: child {pid} cannot bind: " \
               f"address already in use; log: {failing.log_path}" == str(err.value)
        assert not failing.ready

        sleeping = ScriptServer(SLEEPING_CHILD, config)
        started = time.monotonic()
        with pytest.raises(LLMError, match=r"did not answer http://127.0.0.1:\d+/v1/models within 3 s"):
            sleeping.start()
        assert time.monotonic() - started >= 3 and sleeping.process.poll() is not None  # stopped and reaped


def test_each_start_has_its_own_log_and_an_explicit_log_is_appended(stand_in, tmp_path):
    port = free_port()
    first, second = (ScriptServer(FAILING_CHILD, ServeConfig(port=port)) for _ in range(2))
    for server in (first, second):
        with pytest.raises(LLMError, match=r"child \d+ cannot bind"):
            server.start()
    assert first.log_path != second.log_path
    assert sorted(tmp_path.glob(f"cikg_llama_{port}_*.log")) == sorted([first.log_path, second.log_path])
    for server in (first, second):
        text = server.log_path.read_text()
        assert f"=== cikg: llama.cpp server on 127.0.0.1:{port}, started " in text
        assert text.count("cannot bind") == 1 and f"child {server.pid} " in text

    log = tmp_path / "logs" / "server.log"
    runs = [ScriptServer(FAILING_CHILD, ServeConfig(port=port), log_path=log) for _ in range(2)]
    for server in runs:
        with pytest.raises(LLMError) as err:
            server.start()
        assert f"child {server.pid} cannot bind" in str(err.value) and f"log: {log}" in str(err.value)
    text = log.read_text()
    assert text.count("=== cikg: llama.cpp server") == 2
    assert text.index(f"child {runs[0].pid} ") < text.index(f"child {runs[1].pid} ")
    assert runs[1].log_tail().count("cannot bind") == 1  # only this start's lines


def test_a_temporary_log_goes_when_a_serving_server_stops_and_an_explicit_one_stays(stand_in, tmp_path):
    server = ScriptServer(HTTP_CHILD, ServeConfig(port=free_port(), startup_timeout=60)).start()
    log = server.log_path
    assert server.ready and log.parent == tmp_path and "=== cikg: llama.cpp server" in log.read_text()
    server.stop()
    assert not log.exists() and server.process.poll() is not None
    explicit = tmp_path / "logs" / "server.log"
    server = ScriptServer(HTTP_CHILD, ServeConfig(port=free_port(), startup_timeout=60), log_path=explicit).start()
    server.stop()
    assert explicit.is_file()  # the caller's file is the caller's


# ------------------------------------------------------------------------------------------- signals
# `python -m cikg` with SIGINT raising KeyboardInterrupt and SIGTERM / SIGHUP at their defaults, as in a
# terminal: a suite started in the background or under nohup hands them down ignored
_RESET_SIGNALS = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "signal.signal(signal.SIGTERM, signal.SIG_DFL); signal.signal(signal.SIGHUP, signal.SIG_DFL); ")
_CIKG_WITH_SIGNALS = _RESET_SIGNALS + "from cikg.cli import main; sys.exit(main(sys.argv[1:]))"
# the same with a stand-in child (argv[1]: its script) in place of llama.cpp
_CIKG_WITH_STAND_IN = _RESET_SIGNALS + (
    "import cikg.llm.serve as serve; script = sys.argv.pop(1); serve.llama_cpp_available = lambda: True; "
    "serve.LlamaServer.command = lambda self: [sys.executable, '-c', script, str(self.port)]; "
    "from cikg.cli import main; sys.exit(main(sys.argv[1:]))")
HTTP_CHILD = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Models(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Models).serve_forever()
"""


def _serve(port: int, out: Path, stand_in: Optional[str] = None) -> subprocess.Popen:
    program = [_CIKG_WITH_SIGNALS] if stand_in is None else [_CIKG_WITH_STAND_IN, stand_in]
    env = dict(_env(), TMPDIR=str(out.parent))  # the server's own log goes beside `out`
    with open(out, "ab") as handle:
        return subprocess.Popen([sys.executable, "-c", *program, "llm", "serve", "--port", str(port), "--threads", "1"],
                                env=env, stdout=handle, stderr=subprocess.STDOUT)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _server_child(parent: subprocess.Popen, marker: bytes = b"_llama_main") -> int:
    found: List[int] = []

    def child_started() -> bool:
        assert parent.poll() is None, "cikg llm serve ended before it started its server"
        found[:] = [pid for pid in _children(parent.pid) if marker in _cmdline(pid)]
        return bool(found)

    _wait_for(child_started, 120, "the server's child process")
    return found[0]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _check_stopped(status: int, out: Path, sig: int, port: int, child: int, ready: bool) -> None:
    text = out.read_text()
    assert not _alive(child), f"the server's child {child} survived {signal.Signals(sig).name}:\n{text}"
    assert not _accepts(port)
    assert "re-run resumes" not in text and "Traceback" not in text, text
    name = signal.Signals(sig).name
    if ready:
        assert status == 0, text
        assert f"cikg: {name}: stopped the llama.cpp server at http://127.0.0.1:{port}/v1" in text
    else:
        assert status == 128 + sig and READY not in text, text
        assert f"cikg: {name} before the llama.cpp server on port {port} was ready; stopped it (log: " in text


@pytest.mark.parametrize("sig, ready", [(signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-serving", "SIGINT-before-ready"])
def test_signal_stops_and_reaps_a_stand_in_child(sig, ready, tmp_path):
    """The parent's side of the signal handling, fast: the child is a small HTTP server answering /v1/models
    with 'smollm2' (ready) or a sleeping process (never ready); only the parent gets the signal."""
    port, out = free_port(), tmp_path / "serve.out"
    script = HTTP_CHILD if ready else "import time; time.sleep(120)"
    parent = _serve(port, out, stand_in=script)
    try:
        child = _server_child(parent, marker=b"time.sleep" if not ready else b"HTTPServer")
        assert os.getpgid(child) == os.getpgid(parent.pid)
        if ready:
            _wait_for(lambda: READY in out.read_text() or parent.poll() is not None, 120, "the stand-in server")
        os.kill(parent.pid, sig)
        status = parent.wait(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    _check_stopped(status, out, sig, port, child, ready)


def test_a_child_dying_while_serving_is_one_line_exit_1(stand_in, monkeypatch, capsys):
    """In-process serve_forever: the stand-in answers /v1/models, then dies by itself with status 7."""
    dying = HTTP_CHILD.replace("HTTPServer((", "import os, threading; print('stand-in going away', flush=True); "
                                              "threading.Timer(1.5, os._exit, (7,)).start(); HTTPServer((")
    monkeypatch.setattr(LlamaServer, "command", lambda self: [sys.executable, "-c", dying, str(self.port)])
    port = free_port()
    assert main(["llm", "serve", "--port", str(port)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{READY}: base URL http://127.0.0.1:{port}/v1, model 'smollm2' (PID ")
    assert len(lines) == 2 and lines[1].startswith("cikg: the llama.cpp server (PID ")
    assert "exited with status 7 while serving: stand-in going away; log: " in lines[1]
    assert not _accepts(port)


# ------------------------------------------------------------------------------------------- the real server
needs_llama = pytest.mark.skipif(not llama_cpp_available(),
                                 reason="needs the local-llm extra (llama-cpp-python[server])")

class Load:
    """Clients sending chat completions (up to 200 tokens each) to the server until it goes away."""

    def __init__(self, port: int, clients: int = 3):
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.sent = self.answered = self.failed = 0
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.lock = threading.Lock()

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def _client(self) -> None:
        body = json.dumps({"model": "smollm2", "max_tokens": 200, "temperature": 0.7, "messages": [
            {"role": "user", "content": "Write a long story about a lighthouse keeper."}]}).encode()
        while True:
            with self.lock:
                self.sent += 1
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    json.load(response)
            except OSError:  # the server stopped: connection reset, refused or closed
                with self.lock:
                    self.failed += 1
                return
            with self.lock:
                self.answered += 1

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


@pytest.mark.llm
@needs_llama
@pytest.mark.parametrize("moment", ["before-ready", "serving", "under-load"])
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_signal_stops_and_reaps_the_llama_child(sig, moment, tmp_path):
    port, out = free_port(), tmp_path / "serve.out"
    parent = _serve(port, out)
    load = None
    try:
        child = _server_child(parent)
        assert os.getpgid(child) == os.getpgid(parent.pid)  # a terminal's Ctrl-C / hang-up reaches both
        if moment == "before-ready":
            # signalled as soon as the child exists: importing llama_cpp and loading SmolLM2 take about a
            # second, so the parent is inside wait_ready(); the stand-in test above pins this case exactly
            assert READY not in out.read_text()
        else:
            _wait_for(lambda: READY in out.read_text() or parent.poll() is not None, 300, "the server")
            assert parent.poll() is None and model_ids("127.0.0.1", port) == ["smollm2"], out.read_text()
            if moment == "under-load":
                load = Load(port).start()
                _wait_for(lambda: load.answered >= 1 and load.sent - load.answered >= 2, 300, "requests in flight")
        os.kill(parent.pid, sig)
        status = parent.wait(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # on a fast, idle machine the server can win the race of the before-ready case: then it was serving
    ready = moment != "before-ready" or READY in out.read_text()
    _check_stopped(status, out, sig, port, child, ready=ready)
    if load is not None:
        assert load.join(timeout=30) and load.failed == len(load.threads)  # every client saw the server go


@pytest.mark.llm
@needs_llama
def test_sigkilled_serve_leaves_no_llama_child(tmp_path):
    port, out = free_port(), tmp_path / "serve.out"
    parent = _serve(port, out)
    try:
        child = _server_child(parent)
        _wait_for(lambda: READY in out.read_text() or parent.poll() is not None, 300, "the server")
        assert parent.poll() is None, out.read_text()
        parent.kill()  # no handler runs: the child notices its parent is gone
        parent.wait()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    _wait_for(lambda: not _alive(child), 20, f"the orphaned llama.cpp child {child} to stop")
    assert not _accepts(port)


@pytest.mark.llm
@needs_llama
def test_second_serve_on_the_same_port_is_refused_and_the_first_keeps_serving(tmp_path):
    with llama_server(ServeConfig(n_threads=1), log_path=tmp_path / "first.log") as first:
        log_before = first.log_path.read_bytes()
        second = subprocess.run([sys.executable, "-c", _CIKG_WITH_SIGNALS, "llm", "serve", "--port", str(first.port)],
                                env=_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and second.stdout == "", second
        lines = second.stderr.splitlines()
        assert len(lines) == 1 and READY not in second.stderr, second.stderr
        assert f"cikg: error: port {first.port} on 127.0.0.1 is already in use by an HTTP server" in lines[0]
        assert f"answering /v1/models with model 'smollm2' (PID {first.pid}: " in lines[0]
        assert first.log_path.read_bytes().startswith(log_before)  # not truncated (the probe's request is appended)
        assert not list(Path(tempfile.gettempdir()).glob(f"cikg_llama_{first.port}_*.log"))  # no log: nothing started
        assert first.process.poll() is None and model_ids("127.0.0.1", first.port) == ["smollm2"]


@pytest.mark.llm
@needs_llama
def test_keyboard_interrupt_while_waiting_for_ready_stops_the_child(tmp_path):
    """The library: Ctrl-C during LlamaServer.start() (in wait_ready) stops and reaps the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    server = LlamaServer(ServeConfig(n_threads=1), log_path=tmp_path / "server.log")

    def interrupt_once_started() -> None:
        while server.process is None:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    try:
        threading.Thread(target=interrupt_once_started, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            server.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert server.process is not None and server.process.returncode is not None and not server.ready
    assert not _alive(server.pid) and not _accepts(server.port)
