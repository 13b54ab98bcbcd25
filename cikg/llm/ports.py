"""Who listens on a TCP port: the check ``cikg llm serve`` makes before it starts a server, and the one that
tells its readiness apart from another server's.

:func:`ensure_port_free` binds the port the way uvicorn does (``SO_REUSEADDR``) and, when that fails, names
who answers there: an HTTP server and the models its ``/v1/models`` lists, or a listener that does not speak
HTTP, with the owning process when ``/proc`` shows it (Linux, same user).
"""
from __future__ import annotations

import errno
import http.client
import json
import socket
from pathlib import Path
from typing import List, Optional, Set, Tuple

from ..errors import LLMError, describe_os_error

PROBE_TIMEOUT = 2.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` now (another process may take it before it is used)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            raise LLMError(f"cannot listen on {host}: {_reason(err)}") from None
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int) -> None:
    """Return when ``host:port`` can be listened on; else :class:`LLMError` naming the port and who holds it."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise LLMError(f"cannot listen on {host}:{port}: {_reason(err)}") from None
            raise LLMError(f"port {port} on {host} is already in use by {describe_listener(host, port)}; stop "
                           f"that server or pick another port (--port 0 picks a free one)") from None


def _reason(err: OSError) -> str:
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror})"
    return describe_os_error(err)


def describe_listener(host: str, port: int) -> str:
    """``"an HTTP server (uvicorn) answering /v1/models with model 'smollm2' (PID 12, python -m ...)"``."""
    text = _http_identity(host, port)
    owner = owner_pids(port)
    if owner:
        pid = min(owner)
        text += f" (PID {pid}: {_cmdline(pid)})"
    return text


def listening_inodes(port: int) -> Optional[Set[str]]:
    """Socket inodes listening on ``port`` in this network namespace; None where ``/proc/net`` is missing."""
    found: Set[str] = set()
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not any(table.exists() for table in tables):
        return None
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def holds_listener(pid: int, port: int) -> Optional[bool]:
    """Whether process ``pid`` holds a socket listening on ``port``; None when ``/proc`` cannot tell."""
    inodes = listening_inodes(port)
    if inodes is None:
        return None
    return bool(inodes & _socket_inodes(pid))


def owner_pids(port: int) -> Set[int]:
    """PIDs (readable by this user) holding a socket that listens on ``port``; empty when unknown."""
    inodes = listening_inodes(port)
    if not inodes:
        return set()
    pids = set()
    for proc in Path("/proc").glob("[0-9]*"):
        if _socket_inodes(int(proc.name)) & inodes:
            pids.add(int(proc.name))
    return pids


def _socket_inodes(pid: int) -> Set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().name
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        pass
    return inodes


def _cmdline(pid: int, limit: int = 120) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(" ".join(w.decode(errors="replace") for w in words).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def fetch_models(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Tuple[int, str, Optional[List[str]]]:
    """``GET /v1/models`` on ``host:port``: (HTTP status, ``Server`` header, model ids or None when the body is
    not an OpenAI model list). Raises :class:`OSError` or :class:`http.client.HTTPException` without an HTTP
    answer. Talks to the address directly, never through a proxy from the environment."""
    connection = http.client.HTTPConnection(_connect_host(host), port, timeout=timeout)
    try:
        connection.request("GET", "/v1/models")
        response = connection.getresponse()
        body = response.read(1 << 20)
    finally:
        connection.close()
    try:
        ids: Optional[List[str]] = [str(entry["id"]) for entry in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        ids = None
    return response.status, response.getheader("Server") or "", ids


def model_ids(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Optional[List[str]]:
    """The models ``host:port`` lists at ``/v1/models``; None when it does not answer with such a list."""
    try:
        status, _, ids = fetch_models(host, port, timeout)
    except (OSError, http.client.HTTPException):
        return None
    return ids if status == 200 else None


def _http_identity(host: str, port: int) -> str:
    try:
        status, server, models = fetch_models(host, port)
    except ConnectionRefusedError:
        return "a socket that is bound but accepts no connection"
    except (OSError, http.client.HTTPException):
        return f"a listener that does not speak HTTP (no answer to GET /v1/models within {PROBE_TIMEOUT:g} s)"
    what = f"an HTTP server ({server})" if server else "an HTTP server"
    if status != 200:
        return f"{what} answering GET /v1/models with HTTP {status}"
    if models is None:
        return f"{what} whose /v1/models is not an OpenAI model list"
    names = ", ".join(repr(m) for m in models) or "none"
    return f"{what} answering /v1/models with model{'s' if len(models) != 1 else ''} {names}"


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _connect_host(host: str) -> str:
    """Where a client reaches a server bound to ``host`` (the wildcard addresses are reached on loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
