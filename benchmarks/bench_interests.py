"""Benchmark: interest structuring of 100,000 (user, phrase) pairs: embedding and clustering.

Phrases are synthesised from word lists (``adjective noun``, ``noun genre``, ``adjective noun genre``),
drawn with Zipf-like popularity, so there are fewer distinct phrases than pairs, as with real LLM answers.
Stages, each timed in this one run (seconds; peak memory as the Python heap peak from ``tracemalloc`` and
the process RSS high-water mark from ``psutil``/``getrusage``):

1. MiniLM embedding of the distinct phrases with an empty cache (cold) and again with a full cache (warm);
2. TF-IDF (1-2-grams) embedding of the same phrases;
3. clustering the MiniLM vectors with KMeans and MiniBatchKMeans at ``--kappa``, with the libraries'
   default thread count and with one thread (the machine is shared; see the ratio);
4. a silhouette search over ``--search`` with MiniBatchKMeans;
5. end to end ``fit_interests`` (cached vectors, MiniBatchKMeans, drop thresholds, labels, assignments).

Usage::

    nice .venv/bin/python benchmarks/bench_interests.py [--pairs 100000] [--kappa 200] [--search 100:300:100]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pandas as pd
import psutil
from threadpoolctl import threadpool_limits

from cikg.interests import ClusterConfig, ClusterMethod, Encoder, fit_interests, fit_labels, tfidf_vectors
from cikg.interests.cluster import cluster_vectors

ADJECTIVES = (
    "ancient modern medieval victorian futuristic dystopian romantic gothic epic classic urban rural "
    "dark light comic tragic historical political magical mysterious scientific philosophical "
    "spiritual military maritime nordic japanese french russian american african indian latin "
    "alternative experimental psychological"
).split()
NOUNS = (
    "history fiction poetry drama mysteries thrillers romance fantasy adventures biographies memoirs "
    "essays science mathematics astronomy physics biology philosophy religion mythology art music jazz "
    "cinema theatre cooking gardening travel sports football chess politics economics war espionage "
    "crime detectives vampires dragons robots space oceans mountains cities families childhood "
    "friendship love death heroes villains"
).split()
GENRES = (
    "novels stories books sagas series literature tales classics comics essays studies guides "
    "collections anthologies"
).split()


def synthesise(n_pairs: int, n_users: int, seed: int) -> pd.DataFrame:
    """``n_pairs`` (user, phrase) rows, phrases drawn Zipf-like from word-list combinations."""
    rng = np.random.default_rng(seed)
    combos: List[str] = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    combos += [f"{n} {g}" for n in NOUNS for g in GENRES]
    combos += [f"{a} {n} {g}" for a in ADJECTIVES for n in NOUNS for g in GENRES]
    combos = list(np.asarray(combos, dtype=object)[rng.permutation(len(combos))])
    weights = 1.0 / np.arange(1, len(combos) + 1) ** 0.8
    phrase = rng.choice(len(combos), size=n_pairs, p=weights / weights.sum())
    user = rng.integers(0, n_users, size=n_pairs)
    return pd.DataFrame({"user": user, "phrase": np.asarray(combos, dtype=object)[phrase]})


class Meter:
    """Seconds, tracemalloc peak and RSS growth of a block; prints one line."""

    rows: List[dict] = []

    @classmethod
    @contextlib.contextmanager
    def stage(cls, name: str, trace: bool = True) -> Iterator[dict]:
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        if trace:
            tracemalloc.start()
        row = {"stage": name}
        t0 = time.perf_counter()
        yield row
        row["seconds"] = time.perf_counter() - t0
        if trace:
            row["heap_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        row["rss_mb"] = proc.memory_info().rss / 2**20
        row["rss_growth_mb"] = (proc.memory_info().rss - rss0) / 2**20
        row["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        cls.rows.append(row)
        extra = {k: v for k, v in row.items() if k not in ("stage", "seconds")}
        print(
            f"{name:45s} {row['seconds']:8.2f} s  "
            + "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--kappa", type=int, default=200)
    parser.add_argument("--search", default="100:300:100", help="low:high:step of the silhouette search")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--thread-sample", type=int, default=1000, help="phrases embedded with default vs 1 torch thread"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs = synthesise(args.pairs, args.users, args.seed)
    phrases = pd.unique(pairs["phrase"]).tolist()
    print(
        f"{len(pairs)} pairs, {pairs['user'].nunique()} users, {len(phrases)} distinct phrases; "
        f"cpu threads {psutil.cpu_count()}, load avg {psutil.getloadavg()[0]:.1f}",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "emb.sqlite"
        encoder = Encoder(cache, batch_size=args.batch_size, device=args.device, n_threads=1)
        encoder.model.encode(["warm up the model"] * 8)  # load and warm up outside the timings
        sample = phrases[: args.thread_sample]
        default_threads = encoder.with_cache(None)
        default_threads.n_threads = None
        with Meter.stage(f"minilm embed {len(sample)}, torch default threads", trace=False):
            default_threads.encode(sample)
        Meter.rows[-1]["phrases_per_s"] = len(sample) / Meter.rows[-1]["seconds"]
        with Meter.stage(f"minilm embed {len(sample)}, 1 torch thread", trace=False):
            encoder.with_cache(None).encode(sample)
        Meter.rows[-1]["phrases_per_s"] = len(sample) / Meter.rows[-1]["seconds"]
        embed_threads = Meter.rows[-2]["seconds"] / Meter.rows[-1]["seconds"]
        with Meter.stage("minilm embed all, cold cache, 1 thread", trace=False):
            vectors = encoder.encode(phrases)
        cold_row = Meter.rows[-1]
        cold = cold_row["seconds"]
        cold_row["phrases_per_s"] = len(phrases) / cold
        warm_encoder = encoder.with_cache(cache)
        with Meter.stage("minilm embed all, warm cache (re-run)"):
            warm = warm_encoder.encode(phrases)
        warm_s = Meter.rows[-1]["seconds"]
        assert warm_encoder.n_encoded == 0 and np.array_equal(warm, vectors)
        with Meter.stage("tfidf 1-2-grams"):
            sparse = tfidf_vectors(phrases)
        tfidf_s = Meter.rows[-1]["seconds"]

        config = ClusterConfig(kappa=args.kappa, n_init=1)
        timings = {}
        for method in ("kmeans", "minibatch"):
            for threads in (None, 1):
                label = f"{method} kappa={args.kappa}, threads={threads or 'default'}"
                with threadpool_limits(limits=threads), Meter.stage(label):
                    fit_labels(vectors, args.kappa, config, ClusterMethod(method))
                timings[(method, threads)] = Meter.rows[-1]["seconds"]
        with threadpool_limits(1), Meter.stage(f"minibatch kappa={args.kappa} on tfidf, threads=1"):
            fit_labels(sparse, args.kappa, config, ClusterMethod.MINIBATCH)

        low, high, step = (int(x) for x in args.search.split(":"))
        search = ClusterConfig(
            kappa_range=(low, high),
            kappa_step=step,
            method="minibatch",
            n_init=1,
            silhouette_sample=5000,
            n_threads=1,
        )
        with Meter.stage(f"silhouette search {low}..{high} step {step}, minibatch"):
            found = cluster_vectors(vectors, search)
        print(found.curve.to_string(index=False))

        end_to_end = ClusterConfig(kappa=args.kappa, method="minibatch", n_init=1, n_threads=1)
        with Meter.stage("fit_interests end to end (cached vectors)"):
            fit = fit_interests(pairs, end_to_end, encoder=warm_encoder, id_offset=0)
        print(repr(fit))
        warm_encoder.cache.close()
        encoder.cache.close()

    print("\nratios (same run):")
    print(f"  MiniLM embedding, torch default threads / 1 thread: {embed_threads:.2f}x")
    print(f"  cold / warm cache embedding: {cold / warm_s:.1f}x")
    print(f"  MiniLM cold / TF-IDF: {cold / tfidf_s:.1f}x")
    for method in ("kmeans", "minibatch"):
        print(
            f"  {method}: default threads / 1 thread: {timings[(method, None)] / timings[(method, 1)]:.2f}x"
        )
    print(f"  kmeans / minibatch (1 thread): {timings[('kmeans', 1)] / timings[('minibatch', 1)]:.1f}x")
    print("\n" + pd.DataFrame(Meter.rows).to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
