"""Benchmark: LightGCN and CIKGRec on amazon-book (real: 70,679 users x 24,915 items): epoch, evaluation, memory.

amazon-book has no item KG, no interests and no titles, so neither an LLM prompt nor the ``kg-profile``
backend has anything to describe. Interests come from a cheap offline source instead, stated in the output:
**co-interaction item clusters** -- item vectors from a truncated SVD (``--svd-dim``, randomized, seeded) of the
train item-user matrix, clustered with MiniBatchKMeans (``--clusters``, via
:func:`cikg.interests.cluster.cluster_vectors`), and each user's ``--per-user`` most frequent clusters among
their train items (ties: lower cluster id) become their interest nodes. CIKGRec then runs over the views that
exist: collaborative + interests (UIR and the user-side contrastive view; no item-side CL, since there is no KG;
TransE on the interactions only).

Each model runs in a fresh subprocess and reports graph build, model build, epoch setup, seconds per training
batch (``(T(1 + n) - T(1)) / n``) and the epoch extrapolated from it (``--full-epoch`` runs a whole epoch
instead), TransE seconds per batch (CIKGRec), full-ranking validation of every user, and peak resident
memory per phase (``VmHWM`` reset per phase; with ``--device cuda`` also ``torch.cuda.max_memory_allocated``).

Usage::

    nice .venv/bin/python benchmarks/bench_amazon.py [--batches 20] [--threads 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import memory_mb, reset_peak, run_guarded  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon-book"


def co_interaction_interests(dataset, svd_dim: int, clusters: int, per_user: int, seed: int, threads: int):
    """``dataset`` with interests = each user's ``per_user`` most frequent co-interaction item clusters."""
    import scipy.sparse as sp
    import torch
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    from cikg.interests.cluster import ClusterConfig, cluster_vectors

    users, items = dataset.train.numpy()
    item_user = sp.csr_matrix((np.ones(users.size, dtype=np.float32), (items, users)),
                              shape=(dataset.n_items, dataset.n_users))
    vectors = TruncatedSVD(svd_dim, algorithm="randomized", random_state=seed).fit_transform(item_user)
    vectors = normalize(vectors).astype(np.float32)
    labels = cluster_vectors(vectors, ClusterConfig(method="minibatch", kappa=clusters, seed=seed,
                                                    n_threads=threads)).labels
    # count (user, cluster) pairs, then keep each user's top `per_user` by count (ties: lower cluster id)
    keys, counts = np.unique(users.astype(np.int64) * clusters + labels[items], return_counts=True)
    owner, cluster = keys // clusters, keys % clusters
    order = np.lexsort((cluster, -counts, owner))
    owner, cluster = owner[order], cluster[order]
    rank = np.arange(owner.size) - np.searchsorted(owner, owner)
    keep = rank < per_user
    ui = torch.from_numpy(np.stack([owner[keep], cluster[keep]]))
    source = (f"co-interaction item clusters: TruncatedSVD({svd_dim}) of the train item-user matrix, "
              f"MiniBatchKMeans(k={clusters}), top {per_user} per user, seed {seed}")
    return dataset.with_interests(ui, list(range(clusters)), None, source=source)


def run_model(args, model_name: str) -> dict:
    import torch

    from cikg.data import load_dataset
    from cikg.graph import View, build_cikg, build_views
    from cikg.models import CIKGRecConfig, LightGCNConfig
    from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out: dict = {"model": model_name, "seconds": {}, "peak_mb": {}, "peak_abs_mb": {}, "cuda_peak_mb": {},
                 "threads": args.threads, "device": str(device), "seed": args.seed,
                 "load_start": os.getloadavg()[0]}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def phase(name, fn):
        base = reset_peak()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        out["seconds"][name] = time.perf_counter() - start
        peak = memory_mb()["VmHWM"]
        out["peak_mb"][name], out["peak_abs_mb"][name] = peak - base, peak
        if device.type == "cuda":
            out["cuda_peak_mb"][name] = torch.cuda.max_memory_allocated() / 2**20
        return value

    dataset = phase("load", lambda: load_dataset(args.data, seed=2024))
    if model_name == "cikgrec":
        dataset = phase("interests", lambda: co_interaction_interests(
            dataset, args.svd_dim, args.clusters, args.per_user, args.seed, args.threads))
        out["interests_source"] = dataset.meta["interests_source"]
        out["user_interest_edges"] = int(dataset.user_interest.size(1))
        model = CIKGRecConfig(dim=64, layers=3, transe_batches=1 + args.batches)
        self_loops = model.self_loops
    else:
        model = LightGCNConfig(dim=64, layers=3, l2=1e-4, view="collaborative")
        self_loops = False
    views = phase("graph", lambda: build_views(build_cikg(dataset), views=tuple(View), self_loops=self_loops))
    out["nodes"], out["edges"] = views.n_nodes, {k: int(v.size(1)) for k, v in views.edges.items()}
    config = RunConfig(data=DataConfig(dataset="amazon-book"), model=model,
                       train=TrainConfig(batch_size=args.batch_size, ks=(20, 50, 100), seed=args.seed, epochs=1,
                                         progress=False, device=args.device, eval_block_size=args.eval_block))
    trainer = phase("model", lambda: Trainer(config, tempfile.mkdtemp(prefix="bench_amazon_"), dataset=dataset,
                                             views=views))
    out["batches_per_epoch"] = len(trainer.sampler)
    triples = getattr(trainer.model, "triples", None)
    out["transe_batches_per_epoch"] = (max(1, len(triples) // trainer.model.config.transe_batch_size)
                                       if triples is not None else 0)

    def epoch(n):
        trainer.config.train.max_batches = n
        if triples is not None:
            trainer.model.config.transe_batches = n
        return trainer.train_epoch(1)

    if args.full_epoch:
        trainer.config.train.max_batches = None
        if triples is not None:
            trainer.model.config.transe_batches = None
        phase("epoch", lambda: trainer.train_epoch(1))
        out["epoch_s"] = out["seconds"]["epoch"]
        out["epoch_measured"] = "full epoch"
    else:
        phase("epoch setup", lambda: epoch(1))
        first = out["seconds"]["epoch setup"]
        phase("batches", lambda: epoch(1 + args.batches))
        per_step = (out["seconds"]["batches"] - first) / args.batches  # one BPR batch (+ one TransE batch)
        transe = 0.0
        if triples is not None:  # time TransE steps alone to split the pair
            task, optimizer = trainer.aux_tasks[0], trainer.aux_optimizers[0]
            gen = torch.Generator().manual_seed(args.seed)
            batches = list(task.batches(gen, 1))[: args.batches]
            sync()
            start = time.perf_counter()
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                total, _ = task.loss(batch)
                total.backward()
                optimizer.step()
            sync()
            transe = (time.perf_counter() - start) / len(batches)
        out["bpr_batch_s"], out["transe_batch_s"] = per_step - transe, transe
        out["setup_s"] = max(first - per_step, 0.0)
        out["epoch_s"] = (out["setup_s"] + out["bpr_batch_s"] * out["batches_per_epoch"]
                          + transe * out["transe_batches_per_epoch"])
        out["epoch_measured"] = f"extrapolated from {args.batches} batches"
    result = phase("eval", lambda: trainer.evaluate("valid"))
    out["eval_users"], out["valid_recall@20"] = result.n_users, result["recall@20"]
    out["peak_rung_mb"] = max(out["peak_abs_mb"].values())
    out["load_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--models", nargs="+", default=["lightgcn", "cikgrec"], choices=["lightgcn", "cikgrec"])
    parser.add_argument("--batches", type=int, default=20, help="timed training batches (extrapolated to an epoch)")
    parser.add_argument("--full-epoch", action="store_true", help="time a whole epoch instead of extrapolating")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--eval-block", type=int, default=256)
    parser.add_argument("--svd-dim", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--per-user", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rss-gb", type=float, default=17.0)
    parser.add_argument("--one", choices=["lightgcn", "cikgrec"], help="run one model and print its JSON")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_model(args, args.one)))
        return
    print(f"amazon-book ({args.data}): batch {args.batch_size}, "
          f"{'full epoch' if args.full_epoch else f'{args.batches} timed batches'}, device {args.device}, "
          f"torch threads {args.threads}, seed {args.seed}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for name in args.models:
        command = [sys.executable, __file__, "--one", name, "--data", args.data, "--batches", str(args.batches),
                   "--batch-size", str(args.batch_size), "--eval-block", str(args.eval_block), "--svd-dim",
                   str(args.svd_dim), "--clusters", str(args.clusters), "--per-user", str(args.per_user),
                   "--threads", str(args.threads), "--device", args.device, "--seed", str(args.seed)]
        command += ["--full-epoch"] if args.full_epoch else []
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MALLOC_MMAP_THRESHOLD_="131072")
        start = time.perf_counter()
        code, stdout, stderr, peak = run_guarded(command, env, args.max_rss_gb)
        if code != 0:
            print(f"{name}: failed after {time.perf_counter() - start:.0f} s (exit {code}, peak {peak:.1f} GB):\n"
                  f"{stderr[-1500:]}", flush=True)
            continue
        r = json.loads(stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{name}: nodes={r['nodes']:,} edges={r['edges']} (wall {time.perf_counter() - start:.0f} s, load "
              f"{r['load_start']:.1f}->{r['load_end']:.1f})", flush=True)
        if "interests_source" in r:
            print(f"    interests: {r['interests_source']} -> {r['user_interest_edges']:,} user-interest edges")
        print("    " + "  ".join(f"{p}: {s:.2f} s / +{r['peak_mb'][p]:.0f} MB" for p, s in r["seconds"].items()))
        if "bpr_batch_s" in r:
            print(f"    per batch: {r['bpr_batch_s']:.3f} s BPR step ({r['batches_per_epoch']} per epoch)"
                  + (f", {r['transe_batch_s']:.3f} s TransE step ({r['transe_batches_per_epoch']} per epoch)"
                     if r["transe_batches_per_epoch"] else ""))
        print(f"    epoch {r['epoch_s']:.0f} s ({r['epoch_measured']}); eval of {r['eval_users']:,} users "
              f"{r['seconds']['eval']:.1f} s; peak RSS {r['peak_rung_mb']:.0f} MB"
              + (f"; CUDA peak {max(r['cuda_peak_mb'].values()):.0f} MB" if r["cuda_peak_mb"] else "")
              + f"; valid recall@20 after the timed batches {r['valid_recall@20']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
