"""Before and after the one-graph-object redesign (issue 19): training-epoch speed of the same models.

Each call trains one epoch on dbbook2014 through the public run-config API, which both trees share, in a fresh
process whose ``PYTHONPATH`` is one tree: the working tree (after) or ``git archive`` of ``--before`` (by default
the commit that added the golden test, the last one before the first move). Calls alternate between the trees
(before, after, before, ...) so that a change of machine load hits both; the minimum over ``--repeats`` of each
model's ``train_seconds`` (the epoch's BPR batches and auxiliary steps, no evaluation) is compared, and the
ratio after / before printed (below 1: the redesign is faster).

Usage::

    nice python benchmarks/bench_redesign.py [--before cd9f3a8] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lightgcn", "cikgrec", "kgat")
WORKER = r"""
import json, sys, tempfile
from pathlib import Path
from cikg.train import Trainer, load_run_config
out = {}
for name in sys.argv[2].split(","):
    config = load_run_config(Path(sys.argv[1]) / f"{name}.yaml",
                             ["train.epochs=1", "train.lr=0.005", "train.progress=false", f"train.threads={sys.argv[3]}"])
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(config, Path(run_dir) / "run").fit()
        epochs = [json.loads(l) for l in (Path(run_dir) / "run" / "metrics.jsonl").read_text().splitlines() if l]
    out[name] = epochs[-1]["train_seconds"]
print("RESULT " + json.dumps(out))
"""


def unpack(rev: str, into: Path) -> Path:
    """The tree of ``rev`` under ``into`` (``git archive``)."""
    tar = into / "tree.tar"
    with open(tar, "wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev], stdout=fh, check=True)
    with tarfile.open(tar) as archive:
        archive.extractall(into / "tree", filter="data")
    return into / "tree"


def one_call(tree: Path, models: list, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "CIKG_DATA": str(ROOT.parent / "shared" / "data")}
    done = subprocess.run([sys.executable, "-c", WORKER, str(tree / "experiments" / "dbbook2014"), ",".join(models),
                           str(threads)], env=env, cwd=tree, capture_output=True, text=True)
    line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
    if done.returncode or line is None:
        raise SystemExit(f"bench_redesign: the worker on {tree} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="cd9f3a8", help="the commit before the redesign (default cd9f3a8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": unpack(args.before, Path(tmp)), "after": ROOT}
        seconds = {side: {m: [] for m in args.models} for side in trees}
        for repeat in range(args.repeats):
            for side, tree in trees.items():
                for model, value in one_call(tree, args.models, args.threads).items():
                    seconds[side][model].append(value)
                print(f"repeat {repeat + 1} {side}: " + ", ".join(f"{m} {seconds[side][m][-1]:.2f} s"
                                                                  for m in args.models), flush=True)
    print(f"\nbefore = {args.before}, after = the working tree; one dbbook2014 epoch (train_seconds), "
          f"min over {args.repeats} interleaved calls, {args.threads} torch thread(s)\n")
    print("| model | before s (min) | after s (min) | after / before |")
    print("|---|---|---|---|")
    for model in args.models:
        before, after = min(seconds["before"][model]), min(seconds["after"][model])
        print(f"| {model} | {before:.2f} | {after:.2f} | {after / before:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
