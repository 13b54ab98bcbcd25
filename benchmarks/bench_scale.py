"""Benchmark: the synthetic scale ladder (10k, 100k, 1M users) for CIKGRec, with a log-log fit against edges.

Each rung runs in a fresh subprocess (so its peak memory is its own) and measures, on the CPU:

* ``generate``: :func:`cikg.data.synthetic` with items = 10% of users, 20 interactions per user (Poisson,
  before the test/valid split), 5 KG triples per item (genre, author, era, setting, publisher) and 3
  interests per user (the latent topics, 12 of them: :class:`~cikg.data.synthetic.SyntheticConfig` defaults);
* ``graph``: :func:`cikg.graph.build_cikg` + :func:`cikg.graph.build_views` with the four normalised CSR views
  CIKGRec uses (self-loops on, as in its defaults);
* ``model``: building CIKGRec (embedding table, TransE triple index) and the :class:`~cikg.train.Trainer`
  (BPR sampler index);
* ``warm-up``: a first epoch of one batch (optimiser state, first use of every adjacency), not in the fit's
  meaning but reported;
* ``epoch setup``: what one epoch costs before its first batch (schedules, the UIR graph's edge dropout,
  shuffling every train positive and drawing its negative), timed on its own;
* ``batch``: one CIKGRec training step (BPR + UIR + 3-view CL + L2, backward, Adam) and one TransE step,
  ``(T(epoch of n batches) - setup) / n``; an epoch is extrapolated as setup + batches x batch time;
* ``eval``: full-ranking validation metrics (Recall/NDCG/Precision/Hit at 20, 50, 100) of ``--eval-users``
  sampled users, including the full-graph propagation that produces the embeddings;
* peak resident memory (Linux ``VmHWM``, reset per phase with ``clear_refs``) per phase and for the rung.

The parent prints one table and fits ``log(time) = a + slope * log(edges)`` per phase over the rungs
(edges: undirected user-item + user-interest + KG edges of the CIKG). Goal: slope <= 1.3 (within 1.3x of
linear) and the 1M-user rung's peak under 16 GB.

Usage::

    nice .venv/bin/python benchmarks/bench_scale.py [--users 10000 100000 1000000] [--batches 3] [--threads 2]
    nice .venv/bin/python benchmarks/bench_scale.py --one 100000        # a single rung, JSON on stdout
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHASES = ("generate", "graph", "model", "warm-up", "epoch setup", "batch", "eval")


def memory_mb() -> dict:
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(key + r":\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak() -> float:
    """Reset the peak-RSS counter (Linux clear_refs 5) and return the current RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return memory_mb()["VmRSS"]


def run_rung(n_users: int, batches: int, eval_users: int, batch_size: int, dim: int, threads: int,
             seed: int, device: str = "cpu") -> dict:
    import torch

    from cikg.data import synthetic
    from cikg.graph import View, build_cikg, build_views
    from cikg.models import CIKGRecConfig
    from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer

    torch.set_num_threads(threads)
    out: dict = {"users": n_users, "threads": threads, "batch_size": batch_size, "dim": dim, "seed": seed,
                 "device": device, "seconds": {}, "peak_mb": {}, "cuda_peak_mb": {}, "load_start": os.getloadavg()[0]}
    cuda = torch.device(device).type == "cuda"

    def phase(name, fn):
        base = reset_peak()
        print(f"{name} ...", file=sys.stderr, flush=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        value = fn()
        if cuda:
            torch.cuda.synchronize()
            out["cuda_peak_mb"][name] = torch.cuda.max_memory_allocated() / 2**20
        out["seconds"][name] = time.perf_counter() - start
        peak = memory_mb()["VmHWM"]  # clear_refs set it to the RSS at the phase's start
        out["peak_mb"][name] = peak - base
        out.setdefault("peak_abs_mb", {})[name] = peak
        print(f"{name}: {out['seconds'][name]:.2f} s, peak {peak:.0f} MB", file=sys.stderr, flush=True)
        return value

    dataset = phase("generate", lambda: synthetic(n_users, max(12, n_users // 10), seed=seed,
                                                  interactions_per_user=20.0, topics_per_user=3))

    def graph():
        return build_views(build_cikg(dataset), views=tuple(View), self_loops=True)

    views = phase("graph", graph)
    out["nodes"] = views.n_nodes
    out["edges"] = {name: int(e.size(1)) for name, e in views.edges.items()}
    out["edges_total"] = sum(out["edges"].values())
    out["nnz_full"] = int(views.adj(View.FULL)._nnz())
    out["train"] = int(dataset.train.size(1))
    config = RunConfig(
        data=DataConfig(dataset="synthetic"),
        model=CIKGRecConfig(dim=dim, transe_batches=1 + batches),
        train=TrainConfig(batch_size=batch_size, ks=(20, 50, 100), seed=seed, progress=False, epochs=1,
                          device=device, eval_block_size=256 if not cuda else 4096))
    run_dir = tempfile.mkdtemp(prefix="bench_scale_")
    trainer = phase("model", lambda: Trainer(config, run_dir, dataset=dataset, views=views))
    out["batches_per_epoch"] = len(trainer.sampler)
    out["transe_batches_per_epoch"] = max(1, len(trainer.model.triples) // trainer.model.config.transe_batch_size)

    def epoch(n):
        trainer.config.train.max_batches = n
        trainer.model.config.transe_batches = n
        return trainer.train_epoch(1)

    def setup():  # what an epoch does before its first batch: schedules, edge dropout, shuffle + negatives
        generator = torch.Generator().manual_seed(seed)
        trainer.model.on_epoch_start(1, generator)
        return next(iter(trainer.sampler.epoch(generator)))

    phase("warm-up", lambda: epoch(1))  # first step: optimiser state, cached adjacencies
    phase("epoch setup", setup)
    logged = phase("batch", lambda: epoch(batches))
    out["seconds"]["batch"] = per_batch = max(out["seconds"]["batch"] - out["seconds"]["epoch setup"], 0) / batches
    out["loss"] = {k: float(v) for k, v in logged.items()}
    out["epoch_extrapolated_s"] = out["seconds"]["epoch setup"] + per_batch * out["batches_per_epoch"]
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n_users, generator=generator)[:eval_users]
    result = phase("eval", lambda: trainer.evaluate("valid", users=sample))
    out["eval_users"] = result.n_users
    out["recall@20"] = result["recall@20"]
    out["peak_rung_mb"] = max(out["peak_abs_mb"].values())
    out["load_end"] = os.getloadavg()[0]
    return out


def run_guarded(command, env, max_rss_gb: float):
    """Run a rung (its progress lines go to this stderr); kill it when its resident memory passes
    ``max_rss_gb`` (the machine is shared). Returns ``(exit code, stdout, stderr tail, peak resident GB seen)``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        shown = 0
        peak = 0.0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 2**20)
            except (OSError, AttributeError):
                pass
            if peak > max_rss_gb:
                proc.kill()
            time.sleep(0.2)
            shown = _echo(err, shown)
        _echo(err, shown)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), peak


def _echo(stream, shown: int) -> int:
    """Copy what the rung wrote to ``stream`` since offset ``shown`` to our stderr; returns the new offset."""
    stream.seek(shown)
    text = stream.read()
    if text:
        sys.stderr.write("".join(f"    | {line}\n" for line in text.splitlines()))
        sys.stderr.flush()
    return shown + len(text.encode())


def fit_slope(edges, seconds) -> float:
    """Slope of log(seconds) against log(edges) (least squares)."""
    return float(np.polyfit(np.log(edges), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batches", type=int, default=3, help="timed training batches per rung")
    parser.add_argument("--eval-users", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (train and evaluate there; data and graph "
                                                         "are built on the CPU, then moved)")
    parser.add_argument("--max-rss-gb", type=float, default=17.0, help="kill a rung above this resident memory")
    parser.add_argument("--glibc-default", action="store_true",
                        help="keep glibc's malloc thresholds (by default big blocks are mmap-ed so that freed "
                             "memory leaves the process and VmHWM shows the live peak)")
    parser.add_argument("--one", type=int, help="run one rung and print its JSON")
    parser.add_argument("--json", help="also write all rungs' results to this file")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_rung(args.one, args.batches, args.eval_users, args.batch_size, args.dim,
                                  args.threads, args.seed, args.device)))
        return

    print(f"scale ladder on {args.device}: users {args.users}, {args.batches} timed batches of {args.batch_size}, dim {args.dim}, "
          f"{args.eval_users} eval users, torch threads {args.threads}, seed {args.seed}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    rungs = []
    for n_users in args.users:
        command = [sys.executable, __file__, "--one", str(n_users), "--batches", str(args.batches), "--eval-users",
                   str(args.eval_users), "--batch-size", str(args.batch_size), "--dim", str(args.dim),
                   "--threads", str(args.threads), "--seed", str(args.seed), "--device", args.device]
        start = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        if not args.glibc_default:
            env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
        code, stdout, stderr, peak_gb = run_guarded(command, env, args.max_rss_gb)
        if code != 0:
            why = (f"killed at {peak_gb:.1f} GB resident (over --max-rss-gb {args.max_rss_gb})" if peak_gb > args.max_rss_gb
                   else f"exit {code}")
            print(f"rung {n_users}: failed after {time.perf_counter() - start:.0f} s, {why}:\n{stderr[-1500:]}", flush=True)
            break
        rung = json.loads(stdout.strip().splitlines()[-1])
        rungs.append(rung)
        s, m = rung["seconds"], rung["peak_mb"]
        print(f"users={n_users:>9,} nodes={rung['nodes']:>10,} edges={rung['edges_total']:>11,} "
              f"({', '.join(f'{k}={v:,}' for k, v in rung['edges'].items())})  wall {time.perf_counter() - start:.0f} s, "
              f"load {rung['load_start']:.1f}->{rung['load_end']:.1f}", flush=True)
        print("    " + "  ".join(f"{p}: {s[p]:.2f} s / +{m[p]:.0f} MB" for p in PHASES), flush=True)
        print(f"    epoch (extrapolated: setup + {rung['batches_per_epoch']:,} batches): "
              f"{rung['epoch_extrapolated_s']:.0f} s; peak RSS of the rung {rung['peak_rung_mb']:.0f} MB; "
              + (f"CUDA peak {max(rung['cuda_peak_mb'].values()):.0f} MB; " if rung["cuda_peak_mb"] else "") +
              f"recall@20 (untrained) {rung['recall@20']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rungs, indent=1))
    if len(rungs) >= 2:
        edges = [r["edges_total"] for r in rungs]
        print("log-log slope of time against edges (goal <= 1.3):")
        for p in PHASES:
            slope = fit_slope(edges, [max(r["seconds"][p], 1e-6) for r in rungs])
            print(f"  {p:12s} slope {slope:.2f}  {'ok' if slope <= 1.3 else 'ABOVE 1.3'}")
        slope = fit_slope(edges, [r["peak_rung_mb"] for r in rungs])
        print(f"  {'peak memory':12s} slope {slope:.2f}")
    big = [r for r in rungs if r["users"] >= 1_000_000]
    for r in big:
        peak, what = r["peak_rung_mb"], "host RSS"
        if r["cuda_peak_mb"]:
            peak, what = max(r["cuda_peak_mb"].values()), "CUDA memory"
        print(f"{r['users']:,} users: peak {what} {peak / 1024:.1f} GB -> "
              f"{'fits' if peak < 16 * 1024 else 'does NOT fit'} in 16 GB")


if __name__ == "__main__":
    main()
