"""Run every model of one dataset over several seeds and write its results table.

    python experiments/run.py dbbook2014 --set train.epochs=1  # a try: runs/experiments/dbbook2014/results.md
    python experiments/run.py dbbook2014 --publish              # its models (a config each), seeds 0 1 2 -> experiments/dbbook2014/
    python experiments/run.py ml1m --models lightgcn cikgrec --set train.epochs=40
    python experiments/run.py dbbook2014 --ablations           # CIKGRec w/o UIR, CL, interests, KG

Runs live in ``<out>/<dataset>/<model>-seed<k>`` (``--out``, default ``runs/experiments``) and resume when
re-run (a killed sweep loses at most one epoch). Each finished row (model over its seeds) is added to a ledger
(``results.json`` / ``ablations.json``) and the Markdown page beside it is rendered from all its rows, each with
the command that produced it: a later sweep adds models to a table without re-running the others.

The ledger is ``<out>/<dataset>/`` unless ``--publish`` is given: only then are the tracked tables of
``experiments/<dataset>/`` written. A row is never replaced by a run of other settings (the resolved config of
its runs, seeds aside) or of fewer seeds: the script refuses before training, naming the row and the settings
that differ; ``--replace`` replaces deliberately (a tuned config that supersedes a row). The tables are
test-split figures of the epoch selected on validation (Recall@20 + NDCG@20), mean ± std over the seeds, with
the exact command in the file.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import pandas as pd

from cikg.config import flatten, load_yaml
from cikg.train import Trainer, load_run_config
from cikg.train.trainer import config_differences

HERE = Path(__file__).resolve().parent
MODELS = {"bprmf": "BPRMF", "lightgcn": "LightGCN", "lightgcn-cikg": "LightGCN-CIKG", "kgat": "KGAT",
          "kgin": "KGIN", "cikgrec": "CIKGRec", "simgcl": "SimGCL"}
"""Every model a sweep may run; a dataset runs those with a config in ``experiments/<dataset>/`` (KGIN needs an item
KG, so ml1m has no ``kgin.yaml``)."""
ABLATIONS = {"CIKGRec w/o UIR": ["model.use_uir=false"], "CIKGRec w/o CL": ["model.use_cl=false"],
             "CIKGRec w/o interests": ["model.use_interests=false"], "CIKGRec w/o KG": ["model.use_kg=false"],
             "CIKGRec (view-1 = collaborative)": ["model.cl_anchor=collaborative"]}
RUN_ONLY_KEYS = ("train.seed", "train.progress", "train.threads", "train.device")
"""Config keys that do not change a row's figures (the seed is the row's axis)."""
COLUMNS = ["recall@20", "ndcg@20", "recall@50", "ndcg@50", "recall@100", "ndcg@100"]


def row_settings(dataset: str, config_name: str, overrides: list) -> dict:
    """The resolved config of a row's runs, flattened, without :data:`RUN_ONLY_KEYS` (what makes rows comparable)."""
    config = load_run_config(HERE / dataset / f"{config_name}.yaml", overrides)
    return {key: value for key, value in flatten(config.to_dict()).items() if key not in RUN_ONLY_KEYS}


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["dbbook2014", "book-crossing", "ml1m"])
    parser.add_argument("--models", nargs="+", choices=list(MODELS),
                        help="default: every model with a config in experiments/<dataset>/")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="overrides applied to every run (key=value)")
    parser.add_argument("--ablations", action="store_true", help="run the CIKGRec ablations instead of the models")
    parser.add_argument("--only", nargs="+", help="with --ablations: only these rows (e.g. 'CIKGRec w/o UIR')")
    parser.add_argument("--out", default="runs/experiments")
    parser.add_argument("--publish", action="store_true",
                        help="write the tracked tables experiments/<dataset>/results.md (.json) instead of <out>/<dataset>/")
    parser.add_argument("--replace", action="store_true",
                        help="let rows of this sweep replace rows of other settings or more seeds (deliberately)")
    parser.add_argument("--output", help="results file (default: see --publish); its rows are kept in the .json beside it")
    return parser.parse_args(argv)


def jobs_of(args: argparse.Namespace) -> dict:
    """``{row label: (config name, overrides of the row)}`` of a sweep."""
    if args.ablations:
        return {label: ("cikgrec", extra) for label, extra in {"CIKGRec": [], **ABLATIONS}.items()
                if not args.only or label in args.only}
    return {MODELS[m]: (m, []) for m in args.models or models_of(args.dataset)}


def models_of(dataset: str) -> list:
    """The models of :data:`MODELS` that have a config for ``dataset``."""
    return [m for m in MODELS if (HERE / dataset / f"{m}.yaml").is_file()]


def recorded_settings(dataset: str, row: dict) -> dict:
    """A ledger row's settings; rows written before they were recorded are resolved from their command."""
    if "settings" in row:
        return row["settings"]
    args = parse_args(shlex.split(row["command"])[2:])
    name, extra = jobs_of(args)[row["label"]]
    return row_settings(dataset, name, [*args.set, *extra])


def replacement_conflicts(dataset: str, ledger: dict, rows: dict, seeds: list) -> list:
    """Why rows of this sweep may not replace the ledger's rows of the same label (empty: they may)."""
    problems = []
    for label, settings in rows.items():
        if label not in ledger:
            continue
        old = recorded_settings(dataset, ledger[label])
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in differ[:6])
            problems.append(f"row {label!r} was produced with other settings ({shown}"
                            f"{', ...' if len(differ) > 6 else ''})")
        elif not set(ledger[label]["seeds"]) <= set(seeds):
            problems.append(f"row {label!r} has seeds {ledger[label]['seeds']}, this sweep only {seeds}")
    return problems


def superseded(run_dir: Path, config) -> bool:
    """``run_dir`` holds a run of other settings than ``config`` (a run of the same settings resumes)."""
    return (run_dir / "config.yaml").is_file() and bool(config_differences(load_yaml(run_dir / "config.yaml"), config))


def run_one(dataset: str, config_name: str, seed: int, overrides: list, out: Path, label: str,
            replace: bool = False) -> dict:
    """Train (or resume, or re-read) one seed of a row; ``replace`` restarts a run dir of other settings."""
    config = load_run_config(HERE / dataset / f"{config_name}.yaml", [*overrides, f"train.seed={seed}"])
    run_dir = out / dataset / f"{label.replace(' ', '_').replace('/', '')}-seed{seed}"
    result = Trainer(config, run_dir).fit(overwrite=replace and superseded(run_dir, config))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the epochs' own seconds, so a run resumed (or re-read when finished) reports what its training cost
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metrics["minutes"] = sum(e.get("seconds", 0.0) for e in epochs) / 60
    metrics["groups"] = pd.read_csv(run_dir / "groups.csv").to_dict("records")
    logging.info("%s %s seed %d: test %s (best epoch %d)", dataset, label, seed,
                 {k: round(v, 4) for k, v in result.test.items() if k in COLUMNS[:2]}, result.best_epoch)
    return metrics


def group_header(group: str, row: pd.Series) -> str:
    """``Q1 (n=1522, train 3–4)``; a group no user falls in (ml1m has no user with <= 5 train items) says so."""
    if not row["n_users"] or pd.isna(row["min_train"]):
        return f"{group} (n=0)"
    return f"{group} (n={int(row['n_users'])}, train {int(row['min_train'])}–{int(row['max_train'])})"


def summarise(label: str, runs: list, command: str, settings: dict) -> dict:
    """One table row of the ledger: mean ± std of each column over the seeds, and the group means."""
    frame = pd.DataFrame([r["test"] for r in runs])[COLUMNS]
    frames = [pd.DataFrame(r["groups"]).set_index("group") for r in runs]
    header = {g: group_header(g, frames[0].loc[g]) for g in frames[0].index}
    groups = {metric: {header[g]: float(v) for g, v in (sum(f[metric] for f in frames) / len(frames)).items()}
              for metric in ("recall@20", "ndcg@20")}
    return {"label": label, "command": command, "seeds": [r["seed"] for r in runs],
            "best_epochs": [r["best_epoch"] for r in runs], "minutes": sum(r["minutes"] for r in runs),
            "split": str(runs[0]["split"]), "per_seed": [{c: r["test"][c] for c in COLUMNS} for r in runs],
            "mean": frame.mean().to_dict(), "std": frame.std(ddof=0).to_dict(), "groups": groups,
            "settings": settings}


def mean_std_table(ledger: dict) -> pd.DataFrame:
    table = {}
    for label, row in ledger.items():
        table[label] = {c: f"{row['mean'][c]:.4f} ± {row['std'][c]:.4f}" for c in COLUMNS}
        table[label]["best epochs"] = ", ".join(map(str, row["best_epochs"]))
        table[label]["seeds"] = ", ".join(map(str, row["seeds"]))
    return pd.DataFrame(table).T


def groups_table(ledger: dict, metric: str = "recall@20") -> pd.DataFrame:
    table = pd.DataFrame({label: row["groups"][metric] for label, row in ledger.items()}).T
    return table.dropna(axis=1, how="all")  # groups no user falls in


def render(dataset: str, ledger: dict, ablations: bool) -> str:
    """The Markdown page of a ledger: the mean ± std table, the sparse-user tables, and each row's command."""
    order = [label for label in [*MODELS.values(), "CIKGRec", *ABLATIONS] if label in ledger]
    ledger = {label: ledger[label] for label in dict.fromkeys([*order, *ledger])}
    commands = {}
    for label, row in ledger.items():
        commands.setdefault(row["command"], []).append(label)
    splits = sorted({row["split"] for row in ledger.values()})
    lines = [
        f"# {dataset}: {'CIKGRec ablations' if ablations else 'results'}", "",
        "Test split, each model at the epoch selected on the validation split (Recall@20 + NDCG@20); "
        "mean ± std (population) over the seeds in the last column. Validation split: " + "; ".join(splits)
        + f". Configs: `experiments/{dataset}/*.yaml` with the overrides in each command below. CIKGRec's view-1 "
        "anchor is the full CIKG (as in the released code) unless the row says otherwise.", "",
        "Commands (each wrote the rows named after it, with `--publish`; `experiments/run.py` keeps the rows in "
        f"`experiments/{dataset}/{'ablations' if ablations else 'results'}.json` and adds to them):", "",
        *[f"- `{command}`: {', '.join(labels)}" for command, labels in commands.items()], "",
        mean_std_table(ledger).to_markdown(), "",
        "## Sparse users: test Recall@20 per user-activity group (mean over seeds)", "",
        groups_table(ledger).to_markdown(floatfmt=".4f"), "",
        "## Test NDCG@20 per user-activity group", "", groups_table(ledger, "ndcg@20").to_markdown(floatfmt=".4f"), "",
        "Training minutes (all seeds, 2-core CPU shared with other runs): "
        + ", ".join(f"{label} {row['minutes']:.1f}" for label, row in ledger.items()), "",
    ]
    return "\n".join(lines)


def main(argv: list = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    missing = [m for m in args.models or [] if m not in models_of(args.dataset)]
    if missing and not args.ablations:
        print(f"experiments/run.py: error: experiments/{args.dataset}/ has no config for {', '.join(missing)} "
              f"(KGIN needs an item KG); its models: {', '.join(models_of(args.dataset))}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    jobs = jobs_of(args)
    command = "python experiments/run.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
                                                      if a not in ("--publish", "--replace"))
    page_name = "ablations.md" if args.ablations else "results.md"
    target = (Path(args.output) if args.output
              else (HERE if args.publish else out) / args.dataset / page_name)
    ledger_path = target.with_suffix(".json")
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    settings = {label: row_settings(args.dataset, name, [*args.set, *extra]) for label, (name, extra) in jobs.items()}
    conflicts = replacement_conflicts(args.dataset, ledger, settings, args.seeds)
    if conflicts and not args.replace:
        print(f"experiments/run.py: error: {ledger_path}: {'; '.join(conflicts)}; nothing was run. Write to "
              "another ledger (--output, or leave --publish out) or pass --replace to replace those rows",
              file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    for label, (name, extra) in jobs.items():
        runs = [run_one(args.dataset, name, seed, [*args.set, *extra], out, label, args.replace) for seed in args.seeds]
        ledger[label] = summarise(label, runs, command, settings[label])
        ledger_path.write_text(json.dumps(ledger, indent=1, ensure_ascii=False) + "\n")  # a row lands as it ends
    page = render(args.dataset, ledger, args.ablations)
    target.write_text(page)
    print(page)
    if not args.publish and not args.output:
        print(f"\n(written to {target}; --publish writes experiments/{args.dataset}/{page_name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
