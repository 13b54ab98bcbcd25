"""Dataset loading and CIKG building speed on the real datasets.

    python benchmarks/bench_load.py [--repeat 3]

For each dataset: seconds to load the KGAT text files into a Dataset (parse, check, carve the validation
split), to build the CIKG HeteroData, and to build the four normalised CSR views; plus, in the same run,
a naive per-line Python reader (``int(x)`` for every token, lists of tuples) of the same train/test files
as the reference it is compared with our vectorised reader of the same files (``read_adjacency_file``,
which also records line numbers for error messages and checks every token). Best of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cikg.data import data_dir, load_dataset
from cikg.data.io import read_adjacency_file
from cikg.graph import View, build_cikg, build_views


def naive_read(path: Path) -> list:
    pairs = []
    with open(path) as fh:
        for line in fh:
            ids = [int(x) for x in line.split()]
            pairs.extend((ids[0], item) for item in ids[1:])
    return pairs


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| dataset | interactions | full load_dataset (s) | train+test read: ours (s) | naive (s) | naive / ours "
          "| build CIKG (s) | 4 views (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("dbbook2014", "book-crossing", "ml1m", "amazon-book"):
        path = data_dir() / name
        load = best(lambda path=path: load_dataset(path), args.repeat)
        ours = best(lambda path=path: (read_adjacency_file(path / "train.txt"),
                                       read_adjacency_file(path / "test.txt")), args.repeat)
        naive = best(lambda path=path: (naive_read(path / "train.txt"), naive_read(path / "test.txt")), args.repeat)
        dataset = load_dataset(path)
        graph_time = best(lambda dataset=dataset: build_cikg(dataset), args.repeat)
        graph = build_cikg(dataset)
        views_time = best(lambda graph=graph: build_views(graph, views=tuple(View)), args.repeat)
        n = dataset.train.size(1) + dataset.valid.size(1) + dataset.test.size(1)
        print(f"| {name} | {n:,} | {load:.2f} | {ours:.3f} | {naive:.3f} | {naive / ours:.1f}× | {graph_time:.3f} "
              f"| {views_time:.2f} |")


if __name__ == "__main__":
    main()
