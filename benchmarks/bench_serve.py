"""Benchmark: `cikg serve` under a bounded load from a second process (latency p50/p99, requests per second).

The server is ``cikg serve RUN_DIR`` started as a subprocess on 127.0.0.1 (uvicorn, the model loaded once);
this process is the client: ``--requests`` requests per concurrency level (1, 8, 32 by default), each level
after a warm-up, from that many concurrent httpx clients (asyncio), users drawn with a fixed seed. Measured
in one run:

* ``GET /recommend?user=U&k=10`` at each concurrency: p50 / p99 latency and requests per second;
* ``POST /recommend`` (fold-in from 5 items) and ``GET /similar-items`` at the middle concurrency;
* the in-process floor: the server's own work for one GET (``TrainedModel.top_k`` + ``item_records``) in this
  process, median per call, and the ratio
  of the HTTP p50 at concurrency 1 to it (what HTTP, JSON and the server loop add).

Without ``--run-dir`` a LightGCN run on ``--dataset`` (default dbbook2014, real files) is trained for one
short epoch first; serving speed depends on the catalogue size and dimension, not on the model's quality.

Usage::

    nice .venv/bin/python benchmarks/bench_serve.py [--run-dir runs/X] [--requests 2000] [--concurrency 1 8 32]
    cikg bench serve -- --requests 500
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quick_run(dataset: str, out: Path) -> Path:
    """A LightGCN run on ``dataset``: one epoch of 50 batches (enough weights to serve)."""
    from cikg.train import Trainer, load_run_config

    config = load_run_config(None, [f"data.dataset={dataset}", "model.name=lightgcn", "train.epochs=1",
                                    "train.max_batches=50", "train.threads=1", "train.progress=false"])
    Trainer(config, out).fit(resume=False)
    return out


def start_server(run_dir: Path, port: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen([sys.executable, "-m", "cikg", "serve", str(run_dir), "--port", str(port),
                             "--threads", str(threads), "--log-level", "warning"], env=env)
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"cikg serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("cikg serve did not answer /health within 300 s")
        time.sleep(0.2)


async def load(url: str, requests: List[dict], concurrency: int) -> Dict[str, float]:
    """Send ``requests`` (httpx.request kwargs) from ``concurrency`` workers; latency quantiles and rate."""
    queue = list(reversed(requests))
    latencies: List[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal failures
            while queue:
                request = queue.pop()
                start = time.perf_counter()
                response = await client.request(**request)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "failures": failures, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "rps": len(latencies) / wall}


def in_process_ms(model, users, k: int) -> float:
    """Median milliseconds of the server's own work for one GET /recommend, called in this process."""
    per_call = []
    for user in users:
        start = time.perf_counter()
        model.item_records(*model.top_k(model.dense_ids("user", user), k)[1:])
        per_call.append(time.perf_counter() - start)
    return statistics.median(per_call) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", help="a trained run (default: train a quick LightGCN on --dataset)")
    parser.add_argument("--dataset", default="dbbook2014")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from cikg.serving import load_model

    run_dir = Path(args.run_dir) if args.run_dir else quick_run(args.dataset, Path(tempfile.mkdtemp()) / "run")
    model = load_model(run_dir)
    print(model)
    rng = np.random.default_rng(0)
    users = rng.choice(model.dataset.user_ids, size=args.requests)
    port = free_port()
    server = start_server(run_dir, port, args.threads)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        get = [{"method": "GET", "url": "/recommend", "params": {"user": u, "k": args.k}} for u in users]
        middle = args.concurrency[len(args.concurrency) // 2]
        floor_ms = in_process_ms(model, users[:200], args.k)  # the server idle, before any load
        for concurrency in args.concurrency:
            asyncio.run(load(url, get[:50], concurrency))  # warm-up: connections, first-call paths
            rows.append(("GET /recommend", concurrency, asyncio.run(load(url, get, concurrency))))
        items = model.dataset.item_ids
        fold = [{"method": "POST", "url": "/recommend",
                 "json": {"items": list(rng.choice(items, 5, replace=False)), "k": args.k}}
                for _ in range(args.requests)]
        rows.append(("POST /recommend (fold-in, 5 items)", middle, asyncio.run(load(url, fold, middle))))
        similar = [{"method": "GET", "url": "/similar-items", "params": {"item": i, "k": args.k}}
                   for i in rng.choice(items, args.requests)]
        rows.append(("GET /similar-items", middle, asyncio.run(load(url, similar, middle))))
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
    print(f"\n{model.dataset.n_users} users x {model.dataset.n_items} items, dim {model.dim}; "
          f"{args.requests} requests per row, k={args.k}; server torch threads {args.threads}; "
          f"server exit status after SIGTERM: {status}; load average at the end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores\n")
    print("| endpoint | concurrent clients | requests | failures | p50 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|---|---|")
    for name, concurrency, r in rows:
        print(f"| {name} | {concurrency} | {r['requests']} | {r['failures']} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['rps']:.0f} |")
    first = rows[0][2]
    print(f"\nin-process top_k + item_records (one user, k={args.k}): median {floor_ms:.3f} ms per call; "
          f"HTTP p50 at 1 client / in-process = {first['p50'] / floor_ms:.1f}x")


if __name__ == "__main__":
    main()
