"""Benchmark: one epoch of BPR triples, vectorised (``cikg.train.sampling.BPRSampler``) vs per sample.

The per-sample sampler is what reference recommender code does: for each shuffled positive, draw
``random.randrange(n_items)`` until it is not in the user's train set (a Python ``set``). It is timed on
the whole epoch for dbbook2014 and on a prefix for amazon-book (extrapolated; the script says so).

Usage::

    nice .venv/bin/python benchmarks/bench_sampling.py [--datasets dbbook2014 amazon-book]
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import torch

from cikg.data import load_dataset
from cikg.train.sampling import BPRSampler


def python_epoch(users: list, items: list, train_sets: list, n_items: int, batch_size: int, limit: int):
    """Per-sample sampler: shuffle the pairs, then rejection-sample one negative per positive."""
    order = list(range(len(users)))
    random.shuffle(order)
    batch, n_done = [], 0
    for idx in order[:limit]:
        u = users[idx]
        neg = random.randrange(n_items)
        while neg in train_sets[u]:
            neg = random.randrange(n_items)
        batch.append((u, items[idx], neg))
        n_done += 1
        if len(batch) == batch_size:
            torch.tensor(batch)  # the batch handed to the model
            batch = []
    return n_done


def bench(name: str, root: Path, batch_size: int, python_limit: int) -> None:
    data = load_dataset(root / name)
    sampler = BPRSampler(data.train, data.n_users, data.n_items, batch_size=batch_size)
    gen = torch.Generator().manual_seed(0)
    list(sampler.epoch(gen))  # warm-up
    runs = []
    for _ in range(10):
        t0 = time.perf_counter()
        n_batches = sum(1 for _ in sampler.epoch(gen))
        runs.append(time.perf_counter() - t0)
    vec_s = min(runs)

    users, items = data.train[0].tolist(), data.train[1].tolist()
    train_sets = [set() for _ in range(data.n_users)]
    for u, i in zip(users, items):
        train_sets[u].add(i)
    random.seed(0)
    t0 = time.perf_counter()
    done = python_epoch(users, items, train_sets, data.n_items, batch_size, python_limit)
    py_s = (time.perf_counter() - t0) * len(users) / done
    note = "" if done == len(users) else f" (timed on {done} of {len(users)} positives, extrapolated)"
    print(f"{name}: {len(users)} positives, {n_batches} batches of {batch_size}; vectorised {vec_s * 1e3:.1f} ms "
          f"(best of 10); per-sample Python {py_s * 1e3:.0f} ms{note}; speed-up {py_s / vec_s:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).parents[1].parent / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["dbbook2014", "amazon-book"])
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--python-limit", type=int, default=200_000,
                        help="positives the per-sample sampler is timed on (the rest is extrapolated)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads={torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in args.datasets:
        bench(name, Path(args.root), args.batch_size, args.python_limit)


if __name__ == "__main__":
    main()
