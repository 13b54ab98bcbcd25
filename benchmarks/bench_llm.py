"""LLM client benchmark: concurrency speed-up and cached re-run against the local test server; optionally
users/minute and tokens/request against the real llama.cpp server.

    .venv/bin/python benchmarks/bench_llm.py                 # test server, 200 ms latency, 2,000 requests
    .venv/bin/python benchmarks/bench_llm.py --real 20       # + 20 book-crossing users through SmolLM2

Concurrency 1 is timed on a subset (--serial, default 40 requests) and extrapolated to 2,000 linearly
(each request waits the fixed latency, so serial time is linear in the count); the script says so.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llm_fault_server import FaultServer  # noqa: E402

from cikg.data import synthetic  # noqa: E402
from cikg.llm import LLMConfig, OpenAIBackend, build_requests, infer_interests  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="requests (users)")
    parser.add_argument("--latency", type=float, default=0.2, help="test server latency, seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serial", type=int, default=40, help="requests timed at concurrency 1")
    parser.add_argument("--real", type=int, default=0, help="book-crossing users through the real llama.cpp server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dataset = synthetic(n_users=args.n, n_items=600, seed=0)
    requests, _ = build_requests(dataset)
    assert len(requests) == args.n
    with tempfile.TemporaryDirectory() as tmp, FaultServer(latency=args.latency) as server:
        def config(concurrency: int) -> LLMConfig:
            return LLMConfig(model="bench", base_url=server.base_url, concurrency=concurrency, progress=False)

        out, t_conc = timed(lambda: OpenAIBackend(config(args.concurrency), Path(tmp) / "c.sqlite")
                            .complete_many(requests))
        assert all(c.ok for c in out) and len(server.requests) == args.n
        sub = requests[: args.serial]
        out, t_serial = timed(lambda: OpenAIBackend(config(1), None).complete_many(sub))
        assert all(c.ok for c in out)
        t_serial_full = t_serial / len(sub) * args.n
        print(f"test server, {args.latency * 1000:.0f} ms latency, {args.n} requests")
        print(f"  concurrency {args.concurrency}: {t_conc:.2f} s ({args.n / t_conc:.0f} req/s)")
        print(f"  concurrency 1: {t_serial:.2f} s for {len(sub)} requests, extrapolated to {args.n}: "
              f"{t_serial_full:.1f} s")
        print(f"  speed-up: {t_serial_full / t_conc:.1f}x (goal >= 20x)")
        sent_before = len(server.requests)
        backend = OpenAIBackend(config(args.concurrency), Path(tmp) / "c.sqlite")
        result, t_cached = timed(lambda: infer_interests(dataset, backend, out_dir=Path(tmp) / "out", domain="books"))
        assert len(server.requests) - sent_before == 0, (len(server.requests) - sent_before, backend.summary())
        print(f"  fully cached re-run of {args.n} users (prompts + cache + parse + artifact): {t_cached:.2f} s "
              f"(goal < 2 s), {len(result.frame)} phrases")

    if args.real:
        from cikg.data import load_dataset
        from cikg.llm.serve import ServeConfig, llama_server

        bx = load_dataset("book-crossing")
        with llama_server(ServeConfig(n_threads=2)) as server:
            for concurrency in (1, 2):
                users = range(concurrency * args.real, (concurrency + 1) * args.real)
                backend = OpenAIBackend(LLMConfig(model="smollm2", base_url=server.base_url, max_tokens=64,
                                                  concurrency=concurrency, timeout=300, progress=False), None)
                result, t = timed(lambda b=backend, u=users: infer_interests(bx, b, users=u))
                s = backend.summary()
                print(f"real llama.cpp SmolLM2-135M Q4_1, book-crossing users {users.start}..{users.stop - 1}, "
                      f"concurrency {concurrency}: {s.sent} requests in {t:.1f} s = {s.sent / t * 60:.1f} users/min; "
                      f"tokens/request prompt {s.prompt_tokens / s.sent:.0f}, completion "
                      f"{s.completion_tokens / s.sent:.0f}; parsed ok {result.parse['ok']}/{s.sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
