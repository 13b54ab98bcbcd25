"""Start-up time of the ``cikg`` command: ``cikg --help`` and ``cikg train --help`` before and after a change.

Each call is a fresh process running ``cikg.cli.main([... "--help"])`` with ``PYTHONPATH`` set to one tree: the
working tree (after) or ``git archive`` of ``--before`` (default: the commit before the packages exported lazily).
Calls alternate between the trees so that a change of machine load hits both; the wall time of each call
(interpreter start included) is measured, and the minimum and median over ``--repeats`` and the ratio after /
before of the medians printed (below 1: the change starts faster). Also printed: which of torch, NumPy and SciPy
the call loaded.

Usage::

    python benchmarks/bench_startup.py [--before eba9dfc] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_redesign import unpack

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ((), ("train",))
WATCHED = ("torch", "numpy", "scipy")
WORKER = ("import sys, contextlib, io\nfrom cikg.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
          "    try:\n        main([*sys.argv[1:], '--help'])\n    except SystemExit:\n        pass\n"
          f"print(', '.join(m for m in {WATCHED!r} if m in sys.modules) or 'none')")


def one_call(tree: Path, command: tuple) -> tuple:
    """Seconds of one ``cikg COMMAND --help`` in a fresh process on ``tree``, and which of ``WATCHED`` it loaded."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WORKER, *command], env=env, cwd=tree, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"bench_startup: cikg {' '.join(command)} --help on {tree} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="eba9dfc", help="the commit before lazy exports (default eba9dfc)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": unpack(args.before, Path(tmp)), "after": ROOT}
        seconds = {(side, c): [] for side in trees for c in COMMANDS}
        loaded = {}
        for _ in range(args.repeats):
            for command in COMMANDS:
                for side, tree in trees.items():
                    value, loaded[side, command] = one_call(tree, command)
                    seconds[side, command].append(value)
    print(f"before = {args.before}, after = the working tree; wall seconds of a fresh process, {args.repeats} "
          "interleaved calls each\n")
    print("| command | before min / median s | after min / median s | after / before (medians) | loaded "
          "(before / after) |")
    print("|---|---|---|---|---|")
    for command in COMMANDS:
        before, after = seconds["before", command], seconds["after", command]
        name = " ".join(("cikg", *command, "--help"))
        print(f"| `{name}` | {min(before):.2f} / {statistics.median(before):.2f} | {min(after):.2f} / "
              f"{statistics.median(after):.2f} | {statistics.median(after) / statistics.median(before):.2f} | "
              f"{loaded['before', command]} / {loaded['after', command]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
