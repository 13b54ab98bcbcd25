"""Benchmark: CIKGRec's user-side InfoNCE (a batch of users against every user), dense vs candidate blocks.

The dense loss materialises ``[batch, n_users]`` logits plus their softmax and gradient; at 1M users and
batch 1024 that is three 4 GB tensors. ``cikg.models.info_nce(..., max_logits=...)`` computes the same value
and gradients over blocks of candidates. Each variant runs forward + backward in its own subprocess, so the
peak resident memory (``ru_maxrss``) above the process's baseline is that variant's alone.

Usage::

    nice .venv/bin/python benchmarks/bench_infonce.py [--users 250000 1000000] [--batch 1024] [--threads 1]

The dense variant is skipped above ``--dense-limit`` users (default 250,000: 3 GB of logits and gradients).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

DIM = 64


def measure(users: int, batch: int, max_logits: int, threads: int) -> dict:
    """Forward + backward of one loss in this process: seconds, peak RSS above the baseline (MB), value."""
    from cikg.models import info_nce

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    candidates = torch.randn(users, DIM, generator=g, requires_grad=True)
    anchor = torch.randn(batch, DIM, generator=g, requires_grad=True)
    positive = torch.randint(0, users, (batch,), generator=g)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    loss = info_nce(anchor, candidates, positive, 0.2, max_logits=max_logits or None)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak - baseline, "loss": loss.item(),
            "grad_norm": float(candidates.grad.norm())}


def run_variant(users: int, batch: int, max_logits: int, threads: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, 'benchmarks'); from bench_infonce import measure; "
            f"print(json.dumps(measure({users}, {batch}, {max_logits}, {threads})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", nargs="+", type=int, default=[250_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--max-logits", type=int, default=2 ** 26, help="the blocked variant's block budget")
    parser.add_argument("--dense-limit", type=int, default=250_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"batch {args.batch}, dim {DIM}, {args.threads} thread(s), blocked max_logits {args.max_logits:,}")
    print(f"{'users':>10} {'variant':>8} {'seconds':>8} {'peak MB':>8} {'loss':>10}  ratio to dense")
    for users in args.users:
        dense = run_variant(users, args.batch, 0, args.threads) if users <= args.dense_limit else None
        blocked = run_variant(users, args.batch, args.max_logits, args.threads)
        for name, row in (("dense", dense), ("blocked", blocked)):
            if row is None:
                print(f"{users:>10,} {name:>8} {'skipped (over --dense-limit)':>28}")
                continue
            ratio = (f"time {row['seconds'] / dense['seconds']:.2f}x, memory {row['peak_mb'] / dense['peak_mb']:.2f}x"
                     if dense and name == "blocked" else "")
            print(f"{users:>10,} {name:>8} {row['seconds']:>8.2f} {row['peak_mb']:>8.0f} {row['loss']:>10.5f}  {ratio}")
        if dense:
            rel = abs(dense["grad_norm"] - blocked["grad_norm"]) / dense["grad_norm"]
            print(f"{'':>10} same loss: {abs(dense['loss'] - blocked['loss']) < 1e-4}, "
                  f"candidate-gradient norm rel. diff {rel:.1e}")


if __name__ == "__main__":
    main()
