"""Benchmark: blocked full-ranking evaluation of every amazon-book user vs one dense score matrix and
vs the usual per-user NumPy loop.

Data: the real amazon-book train/test files (70,679 users x 24,915 items; train minus a carved 1/8
validation split is masked, test is the ground truth), random embeddings of dimension 64.

Measured in one run:
* ``dense``: one ``user_emb @ item_emb.T`` (70,679 x 24,915 float32, ~7 GB) -- the floor any full ranking
  pays for its scores;
* ``matmul only``: the same scores computed block by block with no ranking (the arithmetic floor);
* ``blocked``: ``cikg.eval.Evaluator`` (mask + top-K at 100 + Recall/NDCG/Precision/Hit at 20/50/100)
  at several block sizes, seconds and peak extra resident memory (Linux ``VmHWM``, reset per phase);
* ``numpy loop``: per user ``scores = item_emb @ u``, ``-inf`` on train items, ``argpartition`` top-100,
  sort, metrics, as reference recommender code does; timed on a subset and extrapolated to all users.

Usage::

    nice .venv/bin/python benchmarks/bench_eval.py [--data ../shared/data/amazon-book] [--loop-users 2000]
"""
from __future__ import annotations

import argparse
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from cikg.data import load_dataset
from cikg.eval import Evaluator, evaluate_embeddings

KS = (20, 50, 100)


def memory_mb() -> dict:
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(key + r":\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak() -> float:
    """Reset the peak-RSS counter (Linux clear_refs 5) and return the current RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return memory_mb()["VmRSS"]


def numpy_loop(user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, train_rows, test_rows) -> dict:
    """The reference-code way: one user at a time, argpartition then sort the top K."""
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "precision", "hit") for k in KS}
    max_k = max(KS)
    for u in users:
        truth = test_rows[u]
        scores = item_emb @ user_emb[u]
        scores[train_rows[u]] = -np.inf
        top = np.argpartition(-scores, max_k)[:max_k]
        top = top[np.argsort(-scores[top])]
        hits = np.isin(top, truth)
        for k in KS:
            h = hits[:k]
            dcg = float((h / np.log2(np.arange(2, k + 2))).sum())
            idcg = float((1 / np.log2(np.arange(2, min(len(truth), k) + 2))).sum())
            sums[f"recall@{k}"] += h.sum() / len(truth)
            sums[f"precision@{k}"] += h.sum() / k
            sums[f"hit@{k}"] += float(h.any())
            sums[f"ndcg@{k}"] += dcg / idcg
    return {name: value / len(users) for name, value in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[1].parent / "shared" / "data" / "amazon-book"))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[128, 256, 512, 1024, 4096])
    parser.add_argument("--loop-users", type=int, default=2000)
    parser.add_argument("--skip-dense", action="store_true", help="skip the 7 GB dense product")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    data = load_dataset(args.data)
    print(f"{data}  (loaded in {time.perf_counter() - t0:.1f} s); torch threads={torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(data.n_users, args.dim, generator=gen) / math.sqrt(args.dim)
    item_emb = torch.randn(data.n_items, args.dim, generator=gen)
    split, excludes = data.csr("test"), [data.csr("train"), data.csr("valid")]
    n_masked = sum(int(csr[1].numel()) for csr in excludes)
    print(f"users={data.n_users} items={data.n_items} masked={n_masked} test={data.test.size(1)} dim={args.dim}")

    dense_s = float("nan")
    if not args.skip_dense:
        base = reset_peak()
        t0 = time.perf_counter()
        dense = user_emb @ item_emb.T
        dense_s = time.perf_counter() - t0
        dense_peak = memory_mb()["VmHWM"] - base
        del dense
        print(f"dense user_emb @ item_emb.T: {dense_s:.2f} s, peak +{dense_peak:.0f} MB")

    floor_block = min(args.block_sizes)
    t0 = time.perf_counter()
    for block in torch.split(torch.arange(data.n_users), floor_block):
        user_emb[block] @ item_emb.T
    floor_s = time.perf_counter() - t0
    print(f"blocked matmul only (block {floor_block}, no ranking): {floor_s:.2f} s")

    results = {}
    for block_size in args.block_sizes:
        base = reset_peak()
        t0 = time.perf_counter()
        result = evaluate_embeddings(user_emb, item_emb, split, excludes,
                                     evaluator=Evaluator(ks=KS, block_size=block_size, progress=False))
        seconds = time.perf_counter() - t0
        peak = memory_mb()["VmHWM"] - base
        results[block_size] = (result, seconds, peak)
        print(f"blocked eval block_size={block_size:5d}: {seconds:.2f} s  ({seconds / dense_s:.2f}x dense), "
              f"peak +{peak:.0f} MB, users={result.n_users}, recall@20={result['recall@20']:.5f}")

    result = results[args.block_sizes[-1]][0]
    train_rows = [np.concatenate([csr[1][csr[0][u]:csr[0][u + 1]].numpy() for csr in excludes])
                  for u in range(data.n_users)]
    test_indptr, test_indices = split
    test_rows = [test_indices[test_indptr[u]:test_indptr[u + 1]].numpy() for u in range(data.n_users)]
    sample = result.users[torch.randperm(result.n_users, generator=gen)[:args.loop_users]].numpy()
    t0 = time.perf_counter()
    loop = numpy_loop(user_emb.numpy(), item_emb.numpy(), sample, train_rows, test_rows)
    loop_s = time.perf_counter() - t0
    loop_all = loop_s * result.n_users / len(sample)
    print(f"numpy per-user loop: {loop_s:.2f} s for {len(sample)} users -> extrapolated {loop_all:.1f} s "
          f"for {result.n_users} users")
    position = {u: p for p, u in enumerate(result.users.tolist())}
    rows = torch.tensor([position[int(u)] for u in sample])
    for name in ("recall@20", "ndcg@100"):
        ours = float(result.per_user[name][rows].double().mean())
        print(f"  check on the loop's users: {name} numpy={loop[name]:.6f} cikg={ours:.6f}")
    print("summary (all users):")
    for block_size, (_, seconds, peak) in results.items():
        print(f"  block_size={block_size:5d}: {seconds:.2f} s, {seconds / dense_s:.2f}x one dense product, "
              f"{seconds / floor_s:.2f}x the blocked matmul alone, "
              f"{loop_all / seconds:.1f}x faster than the extrapolated NumPy loop, peak +{peak:.0f} MB")


if __name__ == "__main__":
    main()
