"""KGIN propagation benchmark on dbbook2014: the per-edge aggregation against the grouped sparse one.

The per-edge form materialises one message :math:`e_r \\odot e_t` per KG edge and interaction
(``index_select`` + multiply + ``index_add``); the grouped form (what :class:`cikg.models.KGIN` runs) sums each
(head, relation) group's tails with one CSR product and multiplies a row per group. Both run three layers,
forward and backward, over a node-dropout sample of the KG and the interactions (rate 0.5, as in training),
building their operators per call as the model does per batch; times interleaved round-robin, minima and
medians, ratio printed. Then one whole KGIN training step (batch 1024) for scale.

Usage::

    nice python benchmarks/bench_kgin.py [--repeats 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

from cikg.data import load_dataset
from cikg.graph import View, build_cikg, build_views
from cikg.models import BPRBatch, KGINConfig
from cikg.models.kgin import (
    KGIN,
    Structure,
    build,
    group_mean_matrix,
    grouped_relational_aggregation,
    intent_aggregation,
    relational_aggregation,
)
from cikg.models.propagation import SparseMatrix

LAYERS = 3


def per_edge_layers(model: KGIN, s: Structure) -> torch.Tensor:
    user, entity = model.embedding[: model.n_users], model.embedding[model.n_users:]
    intents, total = model.intents(), 0.0
    for _ in range(LAYERS):
        entity = relational_aggregation(entity, model.relation_embedding, s.heads, s.relations, s.tails)
        mean = user.new_zeros(user.shape).index_add(
            0, s.users, entity[: model.n_items].index_select(0, s.items) * s.weights.unsqueeze(1))
        user = mean * (torch.softmax(user @ intents.t(), dim=1) @ intents)
        total = total + entity.sum() + user.sum()
    return total


def grouped_layers(model: KGIN, s: Structure) -> torch.Tensor:
    group_mean = group_mean_matrix(s.heads, s.tails, s.groups, model.group_heads.numel(), model.n_entities)
    interaction_mean = SparseMatrix(s.users, s.items, s.weights, model.n_users, model.n_items)
    user, entity = model.embedding[: model.n_users], model.embedding[model.n_users:]
    intents, total = model.intents(), 0.0
    for _ in range(LAYERS):
        entity = grouped_relational_aggregation(entity, model.relation_embedding, group_mean, model.group_heads,
                                                model.group_relations)
        user = intent_aggregation(user, entity[: model.n_items], intents, interaction_mean)
        total = total + entity.sum() + user.sum()
    return total


def interleaved_ms(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    views = build_views(build_cikg(load_dataset("dbbook2014")), views=[View.KG])
    model = build(views, KGINConfig())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {model.n_triples} KG edges, "
          f"{model.group_heads.numel()} (head, relation) groups, {model.inter_users.numel()} interactions")
    generator = torch.Generator().manual_seed(0)

    def timed(layers: Callable[[KGIN, Structure], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            structure = model.sample_structure(0.5, generator)
            layers(model, structure).backward()
            model.zero_grad(set_to_none=True)
        return run

    times = interleaved_ms({"per-edge": timed(per_edge_layers), "grouped": timed(grouped_layers)}, args.repeats)
    base = min(times["per-edge"])
    print(f"\n{LAYERS} layers forward+backward over a node-dropout sample (rate 0.5), ms (min / median), ratio:")
    for name, values in times.items():
        print(f"  {name:9s} {min(values):8.2f} / {statistics.median(values):8.2f}   {min(values) / base:5.2f}x")

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    model.on_epoch_start(0, generator)

    def step() -> None:
        users = torch.randint(model.n_users, (1024,), generator=generator)
        pos, neg = torch.randint(model.n_items, (2, 1024), generator=generator)
        total, _ = model.loss(BPRBatch(users, pos, neg))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    steps = interleaved_ms({"step": step}, args.repeats)["step"]
    print(f"\none KGIN training step (batch 1024, node + message dropout), ms: {min(steps):.1f} min, "
          f"{statistics.median(steps):.1f} median")


if __name__ == "__main__":
    main()
