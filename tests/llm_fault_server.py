"""A small OpenAI-compatible HTTP server for tests and benchmarks that misbehaves on request.

It serves ``POST /v1/chat/completions``, ``GET /v1/models``, the Files API (``POST /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``) and the Batch API (``POST /v1/batches``,
``GET /v1/batches/{id}``), so the real ``openai`` client can be driven through every fault.

Faults are planned per prompt: ``server.plan["Title 7"] = ["429", "503", "ok"]`` makes the next three chat
requests whose user message contains ``Title 7`` answer 429, then 503, then normally. Behaviours:
``ok``, ``429``, ``429:ra=<seconds>``, ``429:date`` (Retry-After as an HTTP date), ``400``, ``500``, ``502``,
``503``, ``hang`` (sleep ``hang_s`` before answering), ``reset`` (TCP reset), ``malformed`` (non-JSON body),
``empty`` (empty content), ``nonutf8`` (invalid UTF-8 inside the content), ``enormous`` (a ~2 MB answer).
Every chat request is logged in ``server.requests`` (user message, behaviour, time, ``response_format``).

Structured answers: ``refuse_formats=("json_schema",)`` answers a request whose ``response_format`` has one of
those types with HTTP 500 naming the field (as llama-cpp-python 0.3.36's server does for ``json_schema``); with
``json_answers=True`` any other ``response_format`` gets the default answer as the JSON object
``{"interests": [...]}`` (without it the field is ignored, as by a server that does not know it).
"""
from __future__ import annotations

import email.parser
import email.policy
import email.utils
import hashlib
import itertools
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


def default_answer(user_content: str) -> str:
    """A deterministic, parseable answer that differs per prompt."""
    tag = hashlib.sha256(user_content.encode("utf-8")).hexdigest()[:6]
    return f"Fantasy, Mystery novels, topic {tag}"


class FaultServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        latency: seconds every chat answer waits (for benchmarks).
        hang_s: how long ``hang`` sleeps.
        batch_polls: how many ``GET /v1/batches/{id}`` calls a batch takes to complete.
        files_api: ``False``: no Files and Batch API; their routes answer 404 as llama.cpp's server does.
    """

    def __init__(self, latency: float = 0.0, hang_s: float = 2.0, batch_polls: int = 2, files_api: bool = True,
                 refuse_formats: tuple = (), json_answers: bool = False):
        self.refuse_formats = tuple(refuse_formats)
        self.json_answers = json_answers
        self.latency = latency
        self.hang_s = hang_s
        self.batch_polls = batch_polls
        self.files_api = files_api
        self.not_found: List[str] = []  # "METHOD /path" of every request answered 404 for want of a route
        self.plan: Dict[str, List[str]] = {}
        self.requests: List[Dict[str, Any]] = []
        self.files: Dict[str, Dict[str, Any]] = {}
        self.batches: Dict[str, Dict[str, Any]] = {}
        self.batch_fault: Optional[str] = None
        self.in_flight = 0
        self.max_in_flight = 0  # "failed" | "expired": how the next batch ends
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FaultServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ behaviour
    def next_behaviour(self, user_content: str) -> str:
        with self._lock:
            for trigger, queue in self.plan.items():
                if trigger in user_content and queue:
                    return queue.pop(0)
        return "ok"

    def log_request(self, user_content: str, behaviour: str, via: str = "chat",
                    response_format: Optional[str] = None) -> None:
        with self._lock:
            self.requests.append({"user": user_content, "behaviour": behaviour, "via": via, "time": time.time(),
                                  "response_format": response_format})

    def chat_body(self, model: str, content: str, user_content: str) -> Dict[str, Any]:
        n = next(self._ids)
        return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(user_content.split()) + 20,
                          "completion_tokens": len(content.split()),
                          "total_tokens": len(user_content.split()) + 20 + len(content.split())}}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"


def _user_content(body: Dict[str, Any]) -> str:
    messages = body.get("messages") or []
    users = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else ""


class _Handler(BaseHTTPRequestHandler):
    owner: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), headers=headers)

    def _error(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        self._json(status, {"error": {"message": message, "type": "test_fault", "code": status}}, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------------ routes
    def _without_files_api(self, method: str, path: str) -> bool:
        """Answer 404 (the body FastAPI gives, as llama-cpp-python's server) when the Files API is off."""
        if self.owner.files_api or not path.startswith(("/v1/files", "/v1/batches")):
            return False
        self.owner.not_found.append(f"{method} {path}")
        self._json(404, {"detail": "Not Found"})
        return True

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        owner = self.owner
        if self._without_files_api("GET", path):
            return
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
        elif path.startswith("/v1/files/") and path.endswith("/content"):
            file_id = path[len("/v1/files/"):-len("/content")]
            if file_id not in owner.files:
                return self._error(404, f"no file {file_id}")
            self._send(200, owner.files[file_id]["content"], "application/octet-stream")
        elif path.startswith("/v1/files/"):
            file_id = path[len("/v1/files/"):]
            if file_id not in owner.files:
                return self._error(404, f"no file {file_id}")
            self._json(200, owner.files[file_id]["meta"])
        elif path.startswith("/v1/batches/"):
            batch_id = path[len("/v1/batches/"):]
            if batch_id not in owner.batches:
                return self._error(404, f"no batch {batch_id}")
            self._json(200, self._advance(owner.batches[batch_id]))
        else:
            self._error(404, f"no route {path}")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        raw = self._body()
        if self._without_files_api("POST", path):
            return
        if path == "/v1/chat/completions":
            self._chat(json.loads(raw or b"{}"))
        elif path == "/v1/files":
            self._upload(raw)
        elif path == "/v1/batches":
            self._create_batch(json.loads(raw or b"{}"))
        else:
            self._error(404, f"no route {path}")

    def _chat(self, body: Dict[str, Any]) -> None:
        owner = self.owner
        with owner._lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._chat_inner(body)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _chat_inner(self, body: Dict[str, Any]) -> None:
        owner = self.owner
        user_content = _user_content(body)
        fmt = body.get("response_format")
        fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
        if fmt_type in owner.refuse_formats:
            owner.log_request(user_content, "refused", response_format=fmt_type)
            # llama-cpp-python 0.3.36 answers 500 with its validation error as the message
            return self._error(500, "1 validation error: {'type': 'literal_error', 'loc': ('body', "
                                    "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}")
        behaviour = owner.next_behaviour(user_content)
        owner.log_request(user_content, behaviour, response_format=fmt_type)
        if owner.latency:
            time.sleep(owner.latency)
        model = str(body.get("model", ""))
        if behaviour == "ok":
            answer = default_answer(user_content)
            if owner.json_answers and fmt_type not in (None, "text"):
                answer = json.dumps({"interests": [p.strip() for p in answer.split(",")]})
            return self._json(200, owner.chat_body(model, answer, user_content))
        if behaviour.startswith("429"):
            headers = {}
            if behaviour.startswith("429:ra="):
                headers["Retry-After"] = behaviour.split("=", 1)[1]
            elif behaviour == "429:date":
                headers["Retry-After"] = email.utils.formatdate(time.time() + 1.5, usegmt=True)
            return self._error(429, "rate limited (test)", headers)
        if behaviour in ("400", "500", "502", "503"):
            return self._error(int(behaviour), f"fault {behaviour} (test)")
        if behaviour == "hang":
            time.sleep(owner.hang_s)
            try:
                self._json(200, owner.chat_body(model, default_answer(user_content), user_content))
            except OSError:
                pass
            return
        if behaviour == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if behaviour == "malformed":
            return self._send(200, b'{"choices": [ this is not json')
        if behaviour == "empty":
            return self._json(200, owner.chat_body(model, "", user_content))
        if behaviour == "nonutf8":
            good = json.dumps(owner.chat_body(model, "Caf@ culture, History", user_content)).encode("utf-8")
            return self._send(200, good.replace(b"Caf@", b"Caf\xe9\xff"))
        if behaviour == "enormous":
            content = "Gardening, " + "very long rambling " * 110_000 + ", Cooking"
            return self._json(200, owner.chat_body(model, content, user_content))
        self._error(500, f"unknown test behaviour {behaviour!r}")

    # ------------------------------------------------------------------ files and batches
    def _upload(self, raw: bytes) -> None:
        header = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode("latin-1")
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(header + raw)
        content, purpose, filename = b"", "", "upload"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                content = part.get_payload(decode=True) or b""
                filename = part.get_filename() or filename
            elif name == "purpose":
                purpose = (part.get_payload(decode=True) or b"").decode()
        file_id = self.owner.new_id("file")
        meta = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.owner.files[file_id] = {"meta": meta, "content": content}
        self._json(200, meta)

    def _create_batch(self, body: Dict[str, Any]) -> None:
        owner = self.owner
        if body.get("input_file_id") not in owner.files:
            return self._error(400, f"unknown input_file_id {body.get('input_file_id')}")
        batch_id = owner.new_id("batch")
        batch = {"id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                 "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                 "error_file_id": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "_polls": 0, "_fault": owner.batch_fault}
        owner.batch_fault = None
        owner.batches[batch_id] = batch
        self._json(200, _public(batch))

    def _advance(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        owner = self.owner
        with owner._lock:
            batch["_polls"] += 1
            if batch["status"] in ("validating", "in_progress") and batch["_polls"] >= owner.batch_polls:
                self._run_batch(batch)
            elif batch["status"] == "validating":
                batch["status"] = "in_progress"
        return _public(batch)

    def _run_batch(self, batch: Dict[str, Any]) -> None:
        owner = self.owner
        lines = owner.files[batch["input_file_id"]]["content"].decode("utf-8").splitlines()
        if batch["_fault"] == "failed":
            batch.update(status="failed", errors={"data": [{"code": "invalid", "message": "test failure"}]})
            return
        if batch["_fault"] == "expired":
            lines = lines[: len(lines) // 2]  # only half done when the window closed
        out, err = [], []
        for line in lines:
            item = json.loads(line)
            body = item["body"]
            user_content = _user_content(body)
            behaviour = "ok"
            for trigger, queue in owner.plan.items():
                if trigger in user_content and queue:
                    behaviour = queue.pop(0)
                    break
            owner.requests.append({"user": user_content, "behaviour": behaviour, "via": "batch",
                                   "time": time.time()})
            rid = owner.new_id("batch_req")
            if behaviour == "ok":
                chat = owner.chat_body(body.get("model", ""), default_answer(user_content), user_content)
                out.append({"id": rid, "custom_id": item["custom_id"],
                            "response": {"status_code": 200, "request_id": rid, "body": chat}, "error": None})
            elif behaviour == "empty":
                chat = owner.chat_body(body.get("model", ""), "", user_content)
                out.append({"id": rid, "custom_id": item["custom_id"],
                            "response": {"status_code": 200, "request_id": rid, "body": chat}, "error": None})
            else:
                err.append({"id": rid, "custom_id": item["custom_id"],
                            "response": {"status_code": int(behaviour[:3]), "request_id": rid,
                                         "body": {"error": {"message": f"fault {behaviour}"}}},
                            "error": None})
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = owner.new_id("file")
                content = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
                owner.files[file_id] = {"content": content, "meta": {
                    "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                    "filename": f"{name}.jsonl", "purpose": "batch_output", "status": "processed"}}
                batch[name] = file_id
        batch["status"] = "expired" if batch["_fault"] == "expired" else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}


def _public(batch: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


if __name__ == "__main__":  # python tests/llm_fault_server.py [latency] : serve until interrupted
    import sys

    srv = FaultServer(latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0).start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
