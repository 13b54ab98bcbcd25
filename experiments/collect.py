"""Gather the experiment tables into ``docs/results.md``.

    python experiments/collect.py            # copy the pages as they are
    python experiments/collect.py --render   # first re-render every results/ablations page from its ledger

Reads, for dbbook2014, book-crossing and ml1m, first the tuned table ``results-tuned.md`` (``run.py --tuned``),
its sparse-gain page and ``tuning.md`` (``experiments/tune.py``) where they exist, then ``results.md`` (written by
``experiments/run.py``), its ``results-sparse-gain.md`` (CIKGRec's gain over the best baseline per user group),
``ablations.md`` (``run.py --ablations``), ``augment.md`` (augmentation runs), ``interests.md``
(``experiments/interests.py --publish``) and ``noise.md`` (``experiments/noise.py --publish``) where they exist, and writes them one after the other under one heading per
dataset; every table keeps the command that produced it.
Nothing is recomputed unless ``--render`` is given: then each ledger (``results.json``, ``ablations.json``)
is rendered again first (``run.py DATASET --render-only``: intervals, paired tests and gains from the ledger and
its ``per_user/`` files, no training).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = ("dbbook2014", "book-crossing", "ml1m")
PARTS = (("results-tuned.md", "Models, tuned and converged"),
         ("results-tuned-sparse-gain.md", "Sparse users, tuned: CIKGRec over the best baseline"),
         ("tuning.md", "Tuning (Optuna studies, one budget)"), ("ablations-tuned.md", "CIKGRec ablations, tuned"),
         ("results.md", "Models"), ("results-sparse-gain.md", "Sparse users: CIKGRec over the best baseline"),
         ("ablations.md", "CIKGRec ablations"), ("augment.md", "Knowledge augmentation"),
         ("interests.md", "Where interests come from"), ("noise.md", "Noise robustness"))
LEDGERS = (("results-tuned.json", ["--tuned"]), ("ablations-tuned.json", ["--ablations", "--tuned"]),
           ("results.json", []), ("ablations.json", ["--ablations"]))
"""The ledgers ``run.py`` renders pages from, with the flag that selects each."""
PREAMBLE = """# Results

Reproduced on the CIKGRec paper's three datasets (`../shared/data`), CPU only (2 cores). Every table below
is copied by `python experiments/collect.py` from `experiments/<dataset>/*.md`, which the command written
above each table produced; figures are test-split metrics at the epoch selected on the validation split
carved from train (never on test), averaged over the seeds named in the table; each table says what its ±
is (pages rendered since issue 17: the half-width of the 95% Student-t interval, with CIKGRec's paired test
against the strongest baseline where per-user files exist; pages rendered before: the population std).
"""


def demote(markdown: str, levels: int = 2) -> str:
    """Push every heading down ``levels`` levels so the part nests under its dataset heading."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def render_ledgers(root: Path = HERE, resamples: int = 10_000) -> list:
    """Re-render ``root/<dataset>/results.md`` and ``ablations.md`` (and the sparse-gain page) from their
    ledgers with ``run.py --render-only``; returns the pages written."""
    sys.path.insert(0, str(HERE))
    try:
        import run
    finally:
        sys.path.remove(str(HERE))
    written = []
    for dataset in DATASETS:
        for ledger, flags in LEDGERS:
            if (root / dataset / ledger).is_file():
                page = (root / dataset / ledger).with_suffix(".md")
                if run.main([dataset, "--render-only", "--output", str(page), "--resamples", str(resamples), *flags]) != 0:
                    raise SystemExit(f"collect.py: could not render {root / dataset / ledger}")
                written.append(page)
    return written


def collect(notes: str = "", root: Path = HERE) -> str:
    sections = [PREAMBLE, notes] if notes else [PREAMBLE]
    for dataset in DATASETS:
        parts = [(title, root / dataset / name) for name, title in PARTS if (root / dataset / name).is_file()]
        sections.append(f"## {dataset}\n")
        if not parts:
            sections.append("Not run yet.\n")
        for title, path in parts:
            sections.append(f"### {title} (`experiments/{dataset}/{path.name}`)\n")
            body = path.read_text().split("\n", 1)[1] if path.read_text().startswith("# ") else path.read_text()
            body = re.sub(r"\]\(([\w-]+\.png)\)", rf"](../experiments/{dataset}/\1)", body)  # plots beside the pages
            sections.append(demote(body, 2) + "\n")
    return "\n".join(sections)


def main(argv: list = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true",
                        help="re-render every results/ablations page from its ledger first (no training)")
    if parser.parse_args(argv).render:
        render_ledgers()
    notes_path = HERE / "NOTES.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    target = HERE.parent / "docs" / "results.md"
    target.write_text(collect(notes))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
