"""Gather the experiment tables into ``docs/results.md``.

    python experiments/collect.py            # copy the pages as they are
    python experiments/collect.py --render   # first re-render every page that has a ledger, from it

Opens with a headline table drawn from the results ledgers (:func:`headline`: every model on every dataset, its
tuned row where it has one). Then reads, for dbbook2014, book-crossing and ml1m, first the tuned table ``results-tuned.md`` (``run.py --tuned``),
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
import importlib
import json
import re
import sys
from pathlib import Path

import pandas as pd

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

Reproduced on the CIKGRec paper's three datasets (`../shared/data`), CPU only (2 cores). The headline table is
drawn by `python experiments/collect.py` from the ledgers `experiments/<dataset>/results[-tuned].json`; every
other table is copied by it from `experiments/<dataset>/*.md`, which the command written above each table
produced; figures are test-split metrics at the epoch selected on the validation split carved from train
(never on test), averaged over the seeds named in the table; each table says what its ± is (pages rendered
since issue 17: the half-width of the 95% Student-t interval, with CIKGRec's paired test against the strongest
baseline where per-user files exist; pages rendered before: the population std).
"""


HEADLINE_METRICS = {"recall@20": "R@20", "ndcg@20": "N@20"}
UNTUNED = "°"
"""Marks a headline cell taken from the untuned table (``results.md``): the model has no tuned row there yet."""


def experiment_scripts(*names: str) -> list:
    """The scripts ``experiments/<name>.py`` as modules, in the order named."""
    sys.path.insert(0, str(HERE))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(HERE))


def read_ledger(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def headline_models(run) -> dict:
    """``{config key: label}`` of :data:`run.MODELS`, the baselines in its order, then the proposed model."""
    baselines = {key: label for key, label in run.MODELS.items() if label != run.PROPOSED}
    proposed = {key: label for key, label in run.MODELS.items() if label == run.PROPOSED}
    return {**baselines, **proposed}


def headline_rows(dataset: str, labels, root: Path = HERE) -> dict:
    """``{label: (row, tuned)}`` of ``dataset``: each model's tuned row where it has one, else its untuned row."""
    tuned = read_ledger(root / dataset / "results-tuned.json")
    untuned = read_ledger(root / dataset / "results.json")
    rows = {}
    for label in labels:
        if label in tuned:
            rows[label] = (tuned[label], True)
        elif label in untuned:
            rows[label] = (untuned[label], False)
    return rows


def rows_by_dataset(run, root: Path = HERE) -> dict:
    """``{dataset: headline_rows(...)}`` for every dataset, each ledger read once."""
    labels = list(headline_models(run).values())
    return {dataset: headline_rows(dataset, labels, root) for dataset in DATASETS}


def headline_table(rows_of: dict, run, root: Path = HERE) -> pd.DataFrame:
    """Models x (dataset, metric) from ``rows_of`` (:func:`rows_by_dataset`): test Recall@20 and NDCG@20,
    tuned where tuned; the best mean of a column in bold, among the tuned rows where the dataset has any; ``n/a``
    where the model has no config for the dataset (KGIN needs an item KG), ``not run`` where it has one but no row
    yet."""
    models = headline_models(run)
    table = pd.DataFrame(index=list(models.values()))
    for dataset in DATASETS:
        rows = rows_of[dataset]
        has_tuned = any(tuned for _, tuned in rows.values())
        for metric, short in HEADLINE_METRICS.items():
            rivals = {label: row["mean"][metric] for label, (row, tuned) in rows.items() if tuned or not has_tuned}
            best = max(rivals, key=rivals.get) if rivals else None
            column = []
            for key, label in models.items():
                if label in rows:
                    row, tuned = rows[label]
                    value = run.cell(row, metric) + ("" if tuned else UNTUNED)
                    column.append(f"**{value}**" if label == best else value)
                else:
                    column.append("not run" if (root / dataset / f"{key}.yaml").is_file() else "n/a")
            table[f"{dataset} {short}"] = column
    return table


def seeds_line(dataset: str, rows: dict) -> str:
    """Which of ``dataset``'s headline cells are tuned and which untuned, with the seeds their rows ran."""
    parts = []
    for tuned, name in ((True, "tuned and converged"), (False, f"untuned{UNTUNED}")):
        labels = [label for label, (_, t) in rows.items() if t == tuned]
        seeds = sorted({tuple(row["seeds"]) for row, t in rows.values() if t == tuned})
        if labels:
            parts.append(f"{name} {', '.join(labels)} (seeds {' / '.join(', '.join(map(str, s)) for s in seeds)})")
    return f"- {dataset}: {'; '.join(parts) if parts else 'no rows yet'}."


def headline(root: Path = HERE) -> str:
    """The section ``docs/results.md`` opens with: :func:`headline_table` and what each dataset's cells are."""
    (run,) = experiment_scripts("run")
    rows_of = rows_by_dataset(run, root)
    lines = ["## Headline: every model on every dataset", "",
             "Test Recall@20 and NDCG@20, mean ± the half-width of the 95% Student-t interval over the row's seeds "
             "(± std† for rows recorded before their per-seed figures were kept). Unmarked cells are tuned and "
             "converged (`results-tuned.md`: one Optuna study per model under one budget, no epoch cap); "
             f"{UNTUNED} marks the untuned published budget (`results.md`, lr 5e-3 and an epoch cap) where the "
             "model has no tuned row yet. Bold: the best of a column among its tuned rows (among all where none "
             "is tuned). n/a: the model does not apply (KGIN needs an item KG; ml1m has none). KGAT (BPR-MF "
             "init): KGAT whose users and items start from a trained BPR-MF, as its released commands run it "
             "(`kgat-mf.yaml`); KGAT starts from Xavier. Each dataset's section below has the full table, its "
             "commands and CIKGRec's paired test.", "",
             headline_table(rows_of, run, root).to_markdown(), ""]
    lines += [seeds_line(dataset, rows) for dataset, rows in rows_of.items()]
    return "\n".join(lines) + "\n"


def demote(markdown: str, levels: int = 2) -> str:
    """Push every heading down ``levels`` levels so the part nests under its dataset heading."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def render_ledgers(root: Path = HERE, resamples: int = 10_000) -> list:
    """Re-render every page of ``root/<dataset>/`` that has a ledger: ``results.md`` and ``ablations.md`` (and
    their sparse-gain pages and the CL-strength plot) with ``run.py --render-only``, then ``noise.md`` (and its
    plot), ``interests.md``, ``tuning.md`` and ``augment.md`` with their scripts' renderers; returns the pages
    written."""
    augment, interests, noise, run, tune = experiment_scripts("augment", "interests", "noise", "run", "tune")
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
    sections = [PREAMBLE, headline(root), notes] if notes else [PREAMBLE, headline(root)]
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
