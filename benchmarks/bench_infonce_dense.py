"""Benchmark: CIKGRec's dense InfoNCE (``cikg.models.info_nce``) against torch's ``cross_entropy(a @ c.T)``.

The loss of a batch of anchors against every candidate is a ``[batch, candidates]`` softmax. Torch's
log-softmax path passes over that matrix for the maximum, the shift, ``exp``, the sum and the log, and again in
its backward; ``info_nce`` shifts by a bound known in advance (the anchor's norm: candidates are unit vectors),
so one GEMM with a bias, one ``exp`` and one sum make the forward, and the backward scales the saved
exponentials in place. Part 1 times the loss alone (forward + backward) at dbbook2014's two CIKGRec shapes
(users against all users, items against the entity space); part 2 a whole CIKGRec training step with the
published dbbook2014 settings, its dense InfoNCE swapped for torch's form in the "before" variant. Timings are
interleaved round-robin in one process; minima, medians and the ratio of minima are printed.

Usage::

    nice python benchmarks/bench_infonce_dense.py [--repeats 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from cikg.data import load_dataset
from cikg.graph import build_cikg, build_views
from cikg.models import BPRBatch, info_nce
from cikg.models import cikgrec as cikgrec_module
from cikg.train import load_run_config
from cikg.train.sampling import BPRSampler

TAU, DIM, BATCH = 0.2, 64, 1024


def torch_info_nce(anchor, candidates, positive, temperature, max_logits=None):
    """The reference: torch's fused log-softmax cross-entropy over the dense logits."""
    a, c = F.normalize(anchor, dim=-1) / temperature, F.normalize(candidates, dim=-1)
    return F.cross_entropy(a @ c.t(), positive)


def interleaved(variants: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return times


def report(title: str, times: Dict[str, List[float]], unit: float = 1e3) -> None:
    base = min(next(iter(times.values())))
    print(f"\n{title}")
    for name, values in times.items():
        print(f"  {name:<34} {min(values) * unit:9.1f} / {statistics.median(values) * unit:9.1f} ms   "
              f"{min(values) / base:.2f}x")


def loss_variants(n_candidates: int, generator: torch.Generator) -> Dict[str, Callable[[], object]]:
    anchor = torch.randn(BATCH, DIM, generator=generator, requires_grad=True)
    candidates = torch.randn(n_candidates, DIM, generator=generator, requires_grad=True)
    positive = torch.randint(0, n_candidates, (BATCH,), generator=generator)

    def run(loss_fn):
        return lambda: loss_fn(anchor, candidates, positive, TAU).backward()
    return {"torch cross_entropy(a @ c.T)": run(torch_info_nce), "cikg info_nce": run(info_nce)}


def step_variants() -> Tuple[Dict[str, Callable[[], object]], int, int]:
    """The two step variants, the number of users and the size of the entity space (the two InfoNCE shapes)."""
    dataset = load_dataset("dbbook2014")
    config = load_run_config("experiments/dbbook2014/cikgrec.yaml")
    model = config.model.build(build_views(build_cikg(dataset)))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    model.on_epoch_start(0, generator)
    sampler = BPRSampler(dataset.train, dataset.n_users, dataset.n_items, batch_size=BATCH)
    batches = [BPRBatch(b.users, b.pos, b.neg, 0) for b in sampler.epoch(generator)]
    print(f"dbbook2014: {model!r}")

    counter = iter(range(10 ** 9))

    def step(swap: bool) -> None:
        original = cikgrec_module.info_nce
        if swap:
            cikgrec_module.info_nce = torch_info_nce
        try:
            loss, _ = model.loss(batches[next(counter) % len(batches)])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        finally:
            cikgrec_module.info_nce = original
    variants = {"step, torch cross_entropy InfoNCE": lambda: step(True), "step, cikg info_nce": lambda: step(False)}
    return variants, model.n_users, model.entity_space.stop - model.entity_space.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {BATCH}, dim {DIM}, tau {TAU}, {args.threads} torch thread(s), {args.repeats} repeats; "
          "min / median, ratio of minima to the first row")
    steps, n_users, n_entities = step_variants()
    generator = torch.Generator().manual_seed(0)
    for label, n in (("users", n_users), ("entity space", n_entities)):
        report(f"InfoNCE forward + backward, {BATCH:,} anchors x {n:,} candidates ({label})",
               interleaved(loss_variants(n, generator), args.repeats))
    report("one CIKGRec training step (published dbbook2014 config)", interleaved(steps, args.repeats))


if __name__ == "__main__":
    main()
