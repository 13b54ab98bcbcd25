"""Propagation and CIKGRec epoch benchmark on dbbook2014's full CIKG.

Part 1: three LightGCN layers (dim 64, mean of layer outputs) over the full CIKG: cikg's SpMM propagation
(precomputed normalised CSR, symmetric custom backward) against PyG ``LGConv(normalize=True)`` with
``edge_index`` on the same graph, and against ``torch.sparse.mm`` with torch's generic backward; forward
and forward+backward, median of repeated runs, ratios printed.

Part 2: one CIKGRec training epoch with the dbbook2014 settings (batch 1024, UIR + CL + TransE), split
into sampling / propagation / losses / backward+step / TransE shares. Propagation time is measured with
forward hooks on every :class:`~cikg.models.LGPropagation` module of the model; "losses" is the rest of
``model.loss``.

Usage::

    nice python benchmarks/bench_propagation.py [--repeats 20] [--device cpu] [--epochs 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, List

import torch
from torch_geometric.nn import LGConv

from cikg.data import load_dataset
from cikg.graph import View, build_cikg, build_views
from cikg.models import BPRBatch, CIKGRecConfig, LGPropagation
from cikg.train.sampling import BPRSampler

DIM, LAYERS = 64, 3


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def interleaved_ms(fns: Dict[str, Callable[[], object]], repeats: int, device: torch.device
                   ) -> Dict[str, List[float]]:
    """Times of each function, run round-robin so that load from other processes hits all of them alike."""
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed_ms(fn, device))
    return times


def pyg_propagate(conv: LGConv, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    out, h = x / (LAYERS + 1), x
    for _ in range(LAYERS):
        h = conv(h, edge_index)
        out = out + h / (LAYERS + 1)
    return out


def generic_propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out, h = x / (LAYERS + 1), x
    for _ in range(LAYERS):
        h = torch.sparse.mm(adj, h)
        out = out + h / (LAYERS + 1)
    return out


def bench_layers(views, repeats: int, device: torch.device) -> None:
    adj = views.adj(View.FULL)
    edges = views.edge_index(View.FULL)
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)  # both directions, as LGConv expects
    edge_index = torch.unique(edge_index, dim=1)  # the same binary graph as the CSR adjacency
    n = views.n_nodes
    print(f"graph: {n} nodes, {edge_index.size(1)} directed edges (= CSR nnz {adj._nnz()}), dim {DIM}, "
          f"{LAYERS} layers, device {device}")
    torch.manual_seed(0)
    x = torch.randn(n, DIM, device=device, requires_grad=True)
    ours, conv = LGPropagation(LAYERS), LGConv(normalize=True)
    with torch.no_grad():
        assert torch.allclose(ours(x, adj), pyg_propagate(conv, x, edge_index), atol=1e-5), "paths disagree"

    def backward(fn):
        def run():
            x.grad = None
            fn().sum().backward()
        return run

    rows = {
        "cikg SpMM": (lambda: ours(x.detach(), adj), backward(lambda: ours(x, adj))),
        "torch sparse.mm (generic backward)": (lambda: generic_propagate(adj, x.detach()),
                                               backward(lambda: generic_propagate(adj, x))),
        "PyG LGConv(edge_index)": (lambda: pyg_propagate(conv, x.detach(), edge_index),
                                   backward(lambda: pyg_propagate(conv, x, edge_index))),
    }
    forward = {name: fns[0] for name, fns in rows.items()}
    both = {name: fns[1] for name, fns in rows.items()}
    with torch.no_grad():
        forward_times = interleaved_ms(forward, repeats, device)
    both_times = interleaved_ms(both, repeats, device)
    print(f"{'method':36s} {'fwd min/median ms':>18s} {'fwd+bwd min/median ms':>22s} "
          f"{'fwd ratio':>10s} {'fwd+bwd ratio':>14s}  (ratios of minima)")
    base_f, base_b = min(forward_times["cikg SpMM"]), min(both_times["cikg SpMM"])
    for name in rows:
        f, b = forward_times[name], both_times[name]
        print(f"{name:36s} {min(f):8.2f} /{statistics.median(f):8.2f} {min(b):11.2f} /{statistics.median(b):9.2f} "
              f"{min(f) / base_f:9.1f}x {min(b) / base_b:13.1f}x")


def bench_epoch(dataset, views, epochs: int, device: torch.device) -> None:
    torch.manual_seed(0)
    config = CIKGRecConfig()
    model = config.build(views).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=8e-4)
    (transe,) = model.auxiliary_tasks()
    transe_optimizer = torch.optim.Adam(transe.parameters, lr=transe.lr)
    sampler = BPRSampler(dataset.train, dataset.n_users, dataset.n_items, batch_size=1024)

    clock = {"t": 0.0}
    spent: Dict[str, float] = defaultdict(float)

    def pre_hook(module, inputs):
        synchronize(device)
        clock["t"] = time.perf_counter()

    def post_hook(module, inputs, output):
        synchronize(device)
        spent["propagation"] += time.perf_counter() - clock["t"]

    for module in model.modules():
        if isinstance(module, LGPropagation):
            module.register_forward_pre_hook(pre_hook)
            module.register_forward_hook(post_hook)

    for epoch in range(epochs):
        spent.clear()
        generator = torch.Generator().manual_seed(epoch)
        model.train()
        synchronize(device)
        epoch_start = time.perf_counter()
        model.on_epoch_start(epoch, generator)
        synchronize(device)
        spent["epoch start (edge dropout)"] += time.perf_counter() - epoch_start
        batches = iter(sampler.epoch(generator))
        n_batches = 0
        while True:
            start = time.perf_counter()
            raw = next(batches, None)
            if raw is None:
                break
            batch = BPRBatch(raw.users, raw.pos, raw.neg, epoch).to(device)
            synchronize(device)
            spent["sampling"] += time.perf_counter() - start
            start, propagation_before = time.perf_counter(), spent["propagation"]
            total, terms = model.loss(batch)
            synchronize(device)
            spent["losses"] += time.perf_counter() - start - (spent["propagation"] - propagation_before)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            synchronize(device)
            spent["backward + step"] += time.perf_counter() - start
            n_batches += 1
        start = time.perf_counter()
        n_transe = 0
        for transe_batch in transe.batches(generator, epoch):
            loss, _ = transe.loss(transe_batch)
            transe_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            transe_optimizer.step()
            n_transe += 1
        synchronize(device)
        spent["TransE (sampling + step)"] += time.perf_counter() - start
        total_time = time.perf_counter() - epoch_start
        print(f"CIKGRec epoch {epoch}: {total_time:.2f} s ({n_batches} BPR batches of 1024, {n_transe} TransE "
              f"batches of {config.transe_batch_size}); last loss {float(total.detach()):.4f}")
        for name, seconds in spent.items():
            print(f"  {name:28s} {seconds:7.2f} s  {100 * seconds / total_time:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dataset = load_dataset("dbbook2014")
    views = build_views(build_cikg(dataset), views=[View.FULL]).to(device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {dataset}")
    bench_layers(views, args.repeats, device)
    bench_epoch(dataset, views, args.epochs, device)


if __name__ == "__main__":
    main()
