"""Run every model of one dataset over several seeds and write ``experiments/<dataset>/results.md``.

    python experiments/run.py dbbook2014                       # all models, seeds 0 1 2
    python experiments/run.py ml1m --models lightgcn cikgrec --set train.epochs=40
    python experiments/run.py dbbook2014 --ablations           # CIKGRec w/o UIR, CL, interests, KG

Runs live in ``runs/experiments/<dataset>/<model>-seed<k>`` and resume when re-run (a killed sweep loses
at most one epoch). The tables are test-split figures of the epoch selected on validation (Recall@20 +
NDCG@20), mean ± std over the seeds, with the exact command in the file.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from cikg.train import Trainer, load_run_config

HERE = Path(__file__).resolve().parent
MODELS = {"bprmf": "BPRMF", "lightgcn": "LightGCN", "lightgcn-cikg": "LightGCN-CIKG", "kgat": "KGAT",
          "cikgrec": "CIKGRec"}
ABLATIONS = {"CIKGRec w/o UIR": ["model.use_uir=false"], "CIKGRec w/o CL": ["model.use_cl=false"],
             "CIKGRec w/o interests": ["model.use_interests=false"], "CIKGRec w/o KG": ["model.use_kg=false"],
             "CIKGRec (view-1 = collaborative)": ["model.cl_anchor=collaborative"]}
COLUMNS = ["recall@20", "ndcg@20", "recall@50", "ndcg@50", "recall@100", "ndcg@100"]


def run_one(dataset: str, config_name: str, seed: int, overrides: list, out: Path, label: str) -> dict:
    config = load_run_config(HERE / dataset / f"{config_name}.yaml", [*overrides, f"train.seed={seed}"])
    run_dir = out / dataset / f"{label.replace(' ', '_').replace('/', '')}-seed{seed}"
    started = time.perf_counter()
    result = Trainer(config, run_dir).fit()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["minutes"] = (time.perf_counter() - started) / 60
    metrics["groups"] = pd.read_csv(run_dir / "groups.csv").to_dict("records")
    logging.info("%s %s seed %d: test %s (best epoch %d)", dataset, label, seed,
                 {k: round(v, 4) for k, v in result.test.items() if k in COLUMNS[:2]}, result.best_epoch)
    return metrics


def mean_std_table(rows: dict) -> pd.DataFrame:
    table = {}
    for label, runs in rows.items():
        frame = pd.DataFrame([r["test"] for r in runs])[COLUMNS]
        table[label] = {c: f"{frame[c].mean():.4f} ± {frame[c].std(ddof=0):.4f}" for c in COLUMNS}
        table[label]["best epochs"] = ", ".join(str(r["best_epoch"]) for r in runs)
        table[label]["seeds"] = ", ".join(str(r["seed"]) for r in runs)
    return pd.DataFrame(table).T


def groups_table(rows: dict, metric: str = "recall@20") -> pd.DataFrame:
    out = {}
    for label, runs in rows.items():
        frames = [pd.DataFrame(r["groups"]).set_index("group") for r in runs]
        mean = sum(f[metric] for f in frames) / len(frames)
        out[label] = mean
    table = pd.DataFrame(out).T
    first = pd.DataFrame(next(iter(rows.values()))[0]["groups"]).set_index("group")
    header = {g: f"{g} (n={int(first.loc[g, 'n_users'])}, train {int(first.loc[g, 'min_train'])}–"
                 f"{int(first.loc[g, 'max_train'])})" for g in table.columns}
    return table.rename(columns=header)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["dbbook2014", "book-crossing", "ml1m"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="overrides applied to every run (key=value)")
    parser.add_argument("--ablations", action="store_true", help="run the CIKGRec ablations instead of the models")
    parser.add_argument("--out", default="runs/experiments")
    parser.add_argument("--output", help="results file (default experiments/<dataset>/results.md or ablations.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    jobs = ({label: ("cikgrec", extra) for label, extra in
             {"CIKGRec": [], **ABLATIONS}.items()} if args.ablations
            else {MODELS[m]: (m, []) for m in args.models})
    rows = {label: [run_one(args.dataset, name, seed, [*args.set, *extra], out, label) for seed in args.seeds]
            for label, (name, extra) in jobs.items()}
    command = "python experiments/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    minutes = {label: sum(r["minutes"] for r in runs) for label, runs in rows.items()}
    split = next(iter(rows.values()))[0]["split"]
    lines = [
        f"# {args.dataset}: {'CIKGRec ablations' if args.ablations else 'results'}", "",
        f"Command: `{command}`", "",
        f"Test split, each model at the epoch selected on the validation split (Recall@20 + NDCG@20); "
        f"mean ± std (population) over seeds {', '.join(map(str, args.seeds))}. Validation split: {split}. "
        f"Configs: `experiments/{args.dataset}/*.yaml`" + (f"; overrides `{' '.join(args.set)}`" if args.set else "")
        + ". CIKGRec's view-1 anchor is the full CIKG (as in the released code) unless the row says otherwise.", "",
        mean_std_table(rows).to_markdown(), "",
        "## Sparse users: test Recall@20 per user-activity group (mean over seeds)", "",
        groups_table(rows).to_markdown(floatfmt=".4f"), "",
        "## Test NDCG@20 per user-activity group", "", groups_table(rows, "ndcg@20").to_markdown(floatfmt=".4f"), "",
        "Training minutes (all seeds, 2-core CPU): " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()), "",
    ]
    target = Path(args.output) if args.output else HERE / args.dataset / ("ablations.md" if args.ablations else "results.md")
    target.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
