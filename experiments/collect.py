"""Gather the experiment tables into ``docs/results.md``.

    python experiments/collect.py

Reads, for dbbook2014, book-crossing and ml1m, ``experiments/<dataset>/results.md`` (written by
``experiments/run.py``), ``ablations.md`` (``run.py --ablations``), ``augment.md`` (augmentation runs) and ``noise.md``
(``experiments/noise.py --publish``)
where they exist, and writes them one after the other under one heading per dataset; every table keeps the
command that produced it. Nothing is recomputed here.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = ("dbbook2014", "book-crossing", "ml1m")
PARTS = (("results.md", "Models"), ("ablations.md", "CIKGRec ablations"), ("augment.md", "Knowledge augmentation"),
         ("noise.md", "Noise robustness"))
PREAMBLE = """# Results

Reproduced on the CIKGRec paper's three datasets (`../shared/data`), CPU only (2 cores). Every table below
is copied by `python experiments/collect.py` from `experiments/<dataset>/*.md`, which the command written
above each table produced; figures are test-split metrics at the epoch selected on the validation split
carved from train (never on test), mean ± std over the seeds named in the table.
"""


def demote(markdown: str, levels: int = 2) -> str:
    """Push every heading down ``levels`` levels so the part nests under its dataset heading."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def collect(notes: str = "") -> str:
    sections = [PREAMBLE, notes] if notes else [PREAMBLE]
    for dataset in DATASETS:
        parts = [(title, HERE / dataset / name) for name, title in PARTS if (HERE / dataset / name).is_file()]
        sections.append(f"## {dataset}\n")
        if not parts:
            sections.append("Not run yet.\n")
        for title, path in parts:
            sections.append(f"### {title} (`experiments/{dataset}/{path.name}`)\n")
            body = path.read_text().split("\n", 1)[1] if path.read_text().startswith("# ") else path.read_text()
            body = body.replace("](noise.png)", f"](../experiments/{dataset}/noise.png)")  # the plot beside noise.md
            sections.append(demote(body, 2) + "\n")
    return "\n".join(sections)


def main() -> None:
    notes_path = HERE / "NOTES.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    target = HERE.parent / "docs" / "results.md"
    target.write_text(collect(notes))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
