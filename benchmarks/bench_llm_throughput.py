"""Local-server throughput: users per minute of `cikg interests infer` against llama.cpp server slots and client
concurrency, on this machine.

For each server setting (``--threads`` x ``--slots``) and pass the bundled server
(``cikg.llm.serve.llama_server``: SmolLM2-135M-Instruct Q4_1, extra CPU buffers off) is started; then the real interest-inference path
(``infer_interests`` with the ``cikgrec-interests`` prompt, ``OpenAIBackend``, ``structured=auto``, no response
cache, so every request reaches the server) answers the same ``--users`` dbbook2014 users at each client
concurrency. The grid is run twice, the second pass in the reverse order (servers and concurrencies), so that
drifting machine load shows as a difference between the passes rather than as a trend along the grid.

Per (slots, concurrency, pass) it prints the users per minute (wall time of ``infer_interests``), the p50 / p95
latency of the HTTP attempts that got an answer (from sending the request to the response headers, i.e.
queueing inside the server included, client-side queueing excluded), the attempts that got no answer
(time-outs, connection errors) and the retries.

Slots: llama-cpp-python's server (0.3.36 here) has no parallel-decoding setting (no ``n_parallel`` in
``llama_cpp.server.settings.Settings``) and serialises every completion behind one lock (``get_llama_proxy`` in
``llama_cpp/server/app.py``): it has exactly one slot. ``--slots`` values above 1 are refused unless the
installed server offers ``n_parallel`` (:func:`cikg.llm.serve.parallel_supported`).

SIGINT / SIGTERM / SIGHUP stop the server and end the script (``cikg.llm.serve.StopSignals``); a SIGKILLed
script's server stops by itself (it watches its parent).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_llm_throughput.py            # ~8 min on 2 busy cores
    PYTHONPATH=. .venv/bin/python benchmarks/bench_llm_throughput.py --users 24 --threads 1 --warmup 12
    PYTHONPATH=. .venv/bin/python benchmarks/bench_llm_throughput.py --users 4 --concurrency 1 2 --passes 1
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cikg.data import load_dataset  # noqa: E402
from cikg.llm import LLMConfig, OpenAIBackend, infer_interests  # noqa: E402
from cikg.llm.serve import ServeConfig, StopSignal, StopSignals, llama_server, parallel_supported  # noqa: E402


class TimedBackend(OpenAIBackend):
    """The ``openai`` backend with an instrumented HTTP client: every attempt's start, and the arrival time and
    status of its response headers (a non-streaming completion's headers come with the whole answer)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.attempts: Dict[int, List[float]] = {}  # id(request) -> [start, end, status]

    def _client(self) -> Any:
        import openai

        async def on_request(request: httpx.Request) -> None:
            if request.url.path.endswith("/chat/completions"):
                self.attempts[id(request)] = [time.perf_counter(), float("nan"), float("nan")]

        async def on_response(response: httpx.Response) -> None:
            entry = self.attempts.get(id(response.request))
            if entry is not None:
                entry[1], entry[2] = time.perf_counter(), float(response.status_code)

        http = httpx.AsyncClient(timeout=self.config.timeout, limits=httpx.Limits(max_connections=1000),
                                 event_hooks={"request": [on_request], "response": [on_response]})
        return openai.AsyncOpenAI(api_key=self.config.api_key(), base_url=self.config.base_url,
                                  timeout=self.config.timeout, max_retries=0, http_client=http)

    def latencies(self) -> Tuple[np.ndarray, int, int]:
        """(seconds of the attempts answered 200, attempts without an answer, attempts answered otherwise)."""
        rows = np.array(list(self.attempts.values()), dtype=float).reshape(-1, 3)
        answered = ~np.isnan(rows[:, 1])
        ok = answered & (rows[:, 2] == 200)
        return rows[ok, 1] - rows[ok, 0], int((~answered).sum()), int((answered & ~ok).sum())


def run_one(dataset: Any, base_url: str, users: range, concurrency: int, timeout: float) -> Dict[str, Any]:
    backend = TimedBackend(LLMConfig(model="smollm2", base_url=base_url, concurrency=concurrency, timeout=timeout,
                                     progress=False), None)
    start = time.perf_counter()
    result = infer_interests(dataset, backend, users=users)
    wall = time.perf_counter() - start
    summary = backend.summary()
    assert summary is not None and summary.cached == 0, summary
    lat, no_answer, http_errors = backend.latencies()
    return {"wall": wall, "users": len(result.records), "upm": len(result.records) / wall * 60,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p95": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
            "no_answer": no_answer, "http_errors": http_errors, "retries": summary.retries,
            "failed": summary.failed, "parsed": result.parse.get("ok", 0),
            "completion_tokens": summary.completion_tokens / max(summary.sent, 1),
            "prompt_tokens": summary.prompt_tokens / max(summary.sent, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="dbbook2014")
    parser.add_argument("--users", type=int, default=12, help="users per configuration (the first N)")
    parser.add_argument("--slots", type=int, nargs="+", default=[1], help="server slots (default: 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="server generation threads (default: 1 2; 1 is llama.cpp's choice on 2 CPUs)")
    parser.add_argument("--warmup", type=int, default=8,
                        help="users answered once after each server start, not timed (default: 8; the first "
                             "minute after a start is slow)")
    parser.add_argument("--passes", type=int, default=2, help="grid repeats, alternating order (default: 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP attempt (client default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if max(args.slots) > 1 and not parallel_supported():
        parser.error("the installed llama-cpp-python server has one slot (no n_parallel setting); use --slots 1")

    dataset = load_dataset(args.dataset)
    users = range(min(args.users, dataset.n_users))
    servers = [(threads, slots) for threads in args.threads for slots in args.slots]
    load_before = os.getloadavg()
    rows: List[Tuple[int, int, int, int, Dict[str, Any]]] = []
    started = time.perf_counter()
    try:
        with StopSignals():
            for p in range(args.passes):
                order = 1 if p % 2 == 0 else -1
                for threads, slots in servers[::order]:
                    with llama_server(ServeConfig(n_threads=threads, n_parallel=slots)) as server:
                        warmup = range(users.stop, min(users.stop + args.warmup, dataset.n_users))
                        if len(warmup):  # other users than the timed ones
                            run_one(dataset, server.base_url, warmup, 2, args.timeout)
                        for concurrency in args.concurrency[::order]:
                            r = run_one(dataset, server.base_url, users, concurrency, args.timeout)
                            rows.append((threads, slots, concurrency, p + 1, r))
                            print(f"threads {threads} slots {slots} concurrency {concurrency:2d} pass {p + 1}: "
                                  f"{r['upm']:.1f} users/min, p50 {r['p50']:.1f} s, p95 {r['p95']:.1f} s, "
                                  f"no answer {r['no_answer']}, retries {r['retries']}, failed {r['failed']}",
                                  flush=True)
    except StopSignal as stop:
        print(f"stopped by {stop.name}; the server was stopped", file=sys.stderr)
        return 128 + stop.signum
    print(f"\n{args.dataset}, users 0..{users.stop - 1} per configuration, "
          f"client timeout {args.timeout:g} s; load average before {load_before[0]:.1f}, after "
          f"{os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all\n")
    print("| threads | slots | concurrency | pass | users / min | p50 latency (s) | p95 latency (s) | no answer (time-outs) "
          "| retries | failed | parsed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads, slots, concurrency, p, r in sorted(rows, key=lambda row: row[:4]):
        print(f"| {threads} | {slots} | {concurrency} | {p} | {r['upm']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['no_answer']} "
              f"| {r['retries']} | {r['failed']} | {r['parsed']}/{r['users']} |")
    tokens = np.mean([[r["prompt_tokens"], r["completion_tokens"]] for *_, r in rows], axis=0)
    print(f"\nmean tokens per request: prompt {tokens[0]:.0f}, completion {tokens[1]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
