"""Gather the experiment tables into ``docs/results.md``.

    python experiments/collect.py            # copy the pages as they are
    python experiments/collect.py --render   # first re-render every page that has a ledger, from it

Reads, for dbbook2014, book-crossing and ml1m, first the tuned table ``results-tuned.md`` (``run.py --tuned``),
its sparse-gain page and ``tuning.md`` (``experiments/tune.py``) where they exist, then ``results.md`` (written by
``experiments/run.py``), its ``results-sparse-gain.md`` (CIKGRec's gain over the best baseline per user group),
``ablations.md`` (``run.py --ablations``), ``augment.md`` (augmentation runs), ``interests.md``
(``experiments/interests.py --publish``) and ``noise.md`` (``experiments/noise.py --publish``) where they exist, and writes them one after the other under one heading per
dataset; every table keeps the command that produced it.
Nothing is recomputed unless ``--render`` is given: then each ledger (``results[-tuned].json``,
``ablations[-tuned].json``, ``noise.json``, ``interests.json``, ``tuning.json``, ``augment.json``) is rendered again
first (intervals, paired tests and gains from the ledger and its ``per_user/`` files, no training). An ``augment.md``
published before augment.py kept a ledger is copied as it is.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cikg._io import write_text_atomic

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
    """Re-render every page of ``root/<dataset>/`` that has a ledger: ``results.md`` and ``ablations.md`` (and
    their sparse-gain pages and the CL-strength plot) with ``run.py --render-only``, then ``noise.md`` (and its
    plot), ``interests.md``, ``tuning.md`` and ``augment.md`` with their scripts' renderers; returns the pages
    written."""
    sys.path.insert(0, str(HERE))
    try:
        import augment
        import interests
        import noise
        import run
        import tune
    finally:
        sys.path.remove(str(HERE))
    written = []
    for dataset in DATASETS:
        folder = root / dataset
        for ledger, flags in LEDGERS:
            if (folder / ledger).is_file():
                page = (folder / ledger).with_suffix(".md")
                if run.main([dataset, "--render-only", "--output", str(page), "--resamples", str(resamples), *flags]) != 0:
                    raise SystemExit(f"collect.py: could not render {folder / ledger}")
                written.append(page)
        if (folder / "noise.json").is_file():
            ledger = json.loads((folder / "noise.json").read_text())
            mode = next((r["mode"] for r in ledger.values() if r["mode"] != "none"), "replace")
            write_text_atomic(folder / "noise.md", noise.render_files(dataset, ledger, mode, folder / "noise.png"))
            written.append(folder / "noise.md")
        for name, script in (("interests", interests), ("tuning", tune), ("augment", augment)):
            if (folder / f"{name}.json").is_file():
                ledger = json.loads((folder / f"{name}.json").read_text())
                write_text_atomic(folder / f"{name}.md", script.render(dataset, ledger))
                written.append(folder / f"{name}.md")
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
                        help="re-render every page that has a ledger from it first (no training)")
    if parser.parse_args(argv).render:
        render_ledgers()
    notes_path = HERE / "NOTES.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    target = HERE.parent / "docs" / "results.md"
    target.write_text(collect(notes))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
