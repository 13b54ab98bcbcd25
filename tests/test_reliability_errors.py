"""Errors that escaped the one-line promise (issue 18, items 8-9): the Batch API against a server that is not
there or has no Files API, and OS errors on the paths a user gives (a directory as the config file, names
longer than the OS allows). Each must be one line on stderr and exit status 2, naming what went wrong.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from cikg.cli import main
from cikg.config import load_yaml
from cikg.data import load_dataset, resolve_dataset_path
from cikg.errors import ConfigError, DatasetError, LLMError
from cikg.llm import CIKGREC_INTERESTS, BatchBackend, BatchConfig, LLMConfig, Request, ResponseCache

sys.path.insert(0, str(Path(__file__).parent))
from llm_fault_server import FaultServer  # noqa: E402

INSTEAD = "use --backend openai (one request per prompt, same cache), e.g. for `cikg llm serve` (llama.cpp)"
TOO_LONG = "x" * 300  # one path component longer than NAME_MAX (255)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("cikg: error: ") and "Traceback" not in err[0]
    return err[0]


def _batch_infer(base_url: str, out: Path):
    return main(["interests", "infer", "book-crossing", "--backend", "openai-batch", "--base-url", base_url,
                 "--model", "m", "--users", "4", "--batch-poll", "0", "--no-progress", "-o", str(out)])


# ------------------------------------------------------------------------------------------- batch (item 8)
def test_batch_backend_against_a_server_without_the_files_api(tmp_path, capsys):
    """A server that answers 404 on /v1/files, as llama.cpp's does: one line naming the server, the API it
    lacks and the backend to use instead; nothing else is sent."""
    with FaultServer(files_api=False) as server:
        url = server.base_url
        assert _batch_infer(url, tmp_path / "out") == 2
        assert server.not_found == ["POST /v1/files"] and server.requests == []
    line = _one_line(capsys)
    assert line == (f"cikg: error: the LLM server at {url} has no Files API (POST /files answered 404), "
                    f"which --backend openai-batch needs; {INSTEAD}")


def test_batch_backend_against_an_unreachable_server(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    assert _batch_infer(url, tmp_path / "out") == 2
    line = _one_line(capsys)
    assert line.startswith(f"cikg: error: cannot reach the LLM server at {url} (POST /files: ")
    assert "Connection refused" in line and line.endswith("start it or fix --base-url; a server without the "
                                                          "Batch API needs " + INSTEAD[len("use "):])


def test_batch_server_failing_while_waiting_keeps_the_batch_for_a_re_run(tmp_path):
    """The server stops answering polls after the batch was created (404 from then on): LLMError naming the
    poll, the answer, the stored batch id and the cache; the batch is still listed as open there, so a re-run
    resumes it instead of paying twice."""
    requests = [Request.from_messages(i, f"u{i}", CIKGREC_INTERESTS.render(domain="books", titles=f"Title {i}"),
                                      CIKGREC_INTERESTS) for i in range(3)]
    cache = ResponseCache(tmp_path / "c.sqlite")
    with FaultServer(batch_polls=10**6) as server:
        url = server.base_url

        def lose_the_batch_api():
            while not server.batches:
                time.sleep(0.01)
            server.files_api = False

        switch = threading.Thread(target=lose_the_batch_api, daemon=True)
        switch.start()
        with pytest.raises(LLMError) as caught:
            BatchBackend(LLMConfig(model="m", base_url=url, timeout=2.0, progress=False), cache,
                         BatchConfig(poll_interval=0.05)).complete_many(requests)
        switch.join(5)
    (batch_id,) = server.batches
    assert str(caught.value) == (f"the LLM server at {url} answered 404 to GET /batches/{batch_id} (Not Found); "
                                 f"batch {batch_id} is stored in {cache.path}: re-run "
                                 "to resume it")
    assert [b["batch_id"] for b in cache.open_batches()] == [batch_id]


# ------------------------------------------------------------------------------------------- paths (item 9)
def test_load_yaml_and_resolve_dataset_path_map_os_errors(tmp_path):
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot read config file: Is a directory \(EISDIR\)$"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match=rf"{TOO_LONG}.yaml: cannot read config file: File name too long "
                                          r"\(ENAMETOOLONG\)$"):
        load_yaml(tmp_path / f"{TOO_LONG}.yaml")
    for name in (TOO_LONG, str(tmp_path / TOO_LONG / "data")):
        with pytest.raises(DatasetError, match=rf"^{re.escape(name)}: cannot open as a dataset: File name too long "
                                               r"\(ENAMETOOLONG\)$"):
            resolve_dataset_path(name)
        with pytest.raises(DatasetError, match="ENAMETOOLONG"):
            load_dataset(name)


@pytest.mark.parametrize("make_args, path, reason", [
    (lambda d: ["train", str(d)], lambda d: d, "cannot read config file: Is a directory (EISDIR)"),
    (lambda d: ["train", str(d / f"{TOO_LONG}.yaml")], lambda d: d / f"{TOO_LONG}.yaml",
     "cannot read config file: File name too long (ENAMETOOLONG)"),
    (lambda d: ["train", "-", f"data.dataset={TOO_LONG}"], lambda d: TOO_LONG,
     "cannot open as a dataset: File name too long (ENAMETOOLONG)"),
    (lambda d: ["data", "stats", TOO_LONG], lambda d: TOO_LONG,
     "cannot open as a dataset: File name too long (ENAMETOOLONG)"),
    (lambda d: ["interests", "infer", TOO_LONG, "--backend", "kg-profile", "-o", str(d / "out")],
     lambda d: TOO_LONG, "cannot open as a dataset: File name too long (ENAMETOOLONG)"),
    # paths no reader maps on its own: the CLI names the path and the OS reason all the same
    (lambda d: ["evaluate", str(d / TOO_LONG)], lambda d: d / TOO_LONG / "config.yaml",
     "File name too long (ENAMETOOLONG)"),
    (lambda d: ["graph", "stats", str(d / TOO_LONG)], lambda d: d / TOO_LONG, "File name too long (ENAMETOOLONG)"),
    (lambda d: ["interests", "cluster", str(d / TOO_LONG), "--kappa", "2"], lambda d: d / TOO_LONG,
     "File name too long (ENAMETOOLONG)"),
    (lambda d: ["llm", "export-replay", str(d / TOO_LONG), "-o", str(d / "r.jsonl")], lambda d: d / TOO_LONG,
     "File name too long (ENAMETOOLONG)"),
], ids=["config-is-a-directory", "config-name-too-long", "dataset-override-too-long", "data-stats-too-long",
        "infer-dataset-too-long", "evaluate", "graph-stats", "cluster", "export-replay"])
def test_cli_input_paths_the_os_refuses_are_one_line_exit_2(tmp_path, capsys, make_args, path, reason):
    rc = main(make_args(tmp_path))
    line = _one_line(capsys)
    assert rc == 2 and line == f"cikg: error: {path(tmp_path)}: {reason}"
    assert not (tmp_path / "out").exists()


def test_debug_still_shows_the_os_error(tmp_path):
    with pytest.raises(OSError) as caught:
        main(["--debug", "graph", "stats", str(tmp_path / TOO_LONG)])
    assert caught.value.strerror == os.strerror(36)
