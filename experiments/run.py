"""Run every model of one dataset over several seeds and write its results table.

    python experiments/run.py dbbook2014 --set train.epochs=1  # a try: runs/experiments/dbbook2014/results.md
    python experiments/run.py dbbook2014 --publish              # its models (a config each), seeds 0 1 2 -> experiments/dbbook2014/
    python experiments/run.py ml1m --models lightgcn cikgrec --set train.epochs=40
    python experiments/run.py dbbook2014 --ablations           # CIKGRec w/o UIR, CL, interests, KG
    python experiments/run.py dbbook2014 --tuned --seeds 0 1 2 3 4 --publish   # tuned configs -> results-tuned.md

Runs live in ``<out>/<dataset>/<model>-seed<k>`` (``--out``, default ``runs/experiments``) and resume when
re-run (a killed sweep loses at most one epoch). Each finished row (model over its seeds) is added to a ledger
(``results.json`` / ``ablations.json``) and the Markdown page beside it is rendered from all its rows, each with
the command that produced it: a later sweep adds models to a table without re-running the others.

The ledger is ``<out>/<dataset>/`` unless ``--publish`` is given: only then are the tracked tables of
``experiments/<dataset>/`` written. A row is never replaced by a run of other settings (the resolved config of
its runs, seeds aside) or of fewer seeds: the script refuses before training, naming the row and the settings
that differ; ``--replace`` replaces deliberately (a tuned config that supersedes a row). The tables are
test-split figures of the epoch selected on validation (Recall@20 + NDCG@20), mean ± the half-width of the 95%
Student-t interval over the seeds, with the exact command in the file.

Each row also keeps its runs' per-user test metrics (``per_user/<row>.csv.gz`` beside the ledger), from which the
page shows the paired test of CIKGRec against the strongest baseline (Wilcoxon signed-rank and paired bootstrap
over users, pooled over the seeds; :mod:`cikg.eval.stats`) and writes CIKGRec's relative gain over that baseline
per user-activity group (``<page>-sparse-gain.md``). ``--render-only`` re-renders both pages from the ledger
without training.

``--tuned`` (with ``--ablations``: the ablations of the tuned CIKGRec, ``ablations-tuned.md``) trains the tuned configs ``experiments/<dataset>/tuned/<model>.yaml`` that ``experiments/tune.py``
writes (the best of each model's Optuna study under one budget, no epoch cap: early stopping on the validation
split) into ``<out>/tuned/`` and the ledger ``results-tuned.json``; ``--publish`` then needs the seeds
:data:`TUNED_SEEDS` and no ``--set`` but the run-only keys (the configs are the tuned ones as they are).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd

from cikg._io import write_text_atomic
from cikg.config import flatten, load_yaml
from cikg.eval.stats import compare_models, format_p, group_gains, mean_ci
from cikg.train import PER_USER_FILE, Trainer, load_run_config, read_per_user
from cikg.train.trainer import config_differences

HERE = Path(__file__).resolve().parent
MODELS = {"bprmf": "BPRMF", "lightgcn": "LightGCN", "lightgcn-cikg": "LightGCN-CIKG", "kgat": "KGAT",
          "kgat-mf": "KGAT (BPR-MF init)", "kgin": "KGIN", "simgcl": "SimGCL", "cikgrec": "CIKGRec"}
"""Every model a sweep may run; a dataset runs those with a config in ``experiments/<dataset>/`` (KGIN needs an item
KG, so ml1m has no ``kgin.yaml``). ``kgat-mf`` is KGAT with its published start from a trained BPR-MF
(``train.init_from``; ``kgat-mf-init.yaml`` trains that BPR-MF, :func:`ensure_init_run`)."""
INIT_SUFFIX = "-init"
"""``<model>-init.yaml`` beside a config whose ``train.init_from`` names a run: the config of that run."""
ABLATIONS = {"CIKGRec w/o UIR": ["model.use_uir=false"], "CIKGRec w/o CL": ["model.use_cl=false"],
             "CIKGRec w/o interests": ["model.use_interests=false"], "CIKGRec w/o KG": ["model.use_kg=false"],
             "CIKGRec (view-1 = collaborative)": ["model.cl_anchor=collaborative"],
             "CIKGRec (linear mask schedule)": ["model.increase_type=linear"],
             "CIKGRec (constant mask rate)": ["model.increase_type=constant"],
             **{f"CIKGRec (gcl_weight={w:g})": [f"model.gcl_weight={w:g}"] for w in (0.001, 0.003, 0.03, 0.1)}}
"""Rows of ``--ablations`` beside the full CIKGRec (``--only`` picks some). The ``gcl_weight`` rows with the full
model (the config's weight) make the CL-strength curve, ``ablations-gcl.png``."""
GCL_PLOT = "ablations-gcl.png"
GCL_ROW = re.compile(r"CIKGRec \(gcl_weight=([0-9.e-]+)\)")
RUN_ONLY_KEYS = ("train.seed", "train.progress", "train.threads", "train.device")
"""Config keys that do not change a row's figures (the seed is the row's axis)."""
COLUMNS = ["recall@20", "ndcg@20", "recall@50", "ndcg@50", "recall@100", "ndcg@100"]
TESTED = ("recall@20", "ndcg@20")
"""The metrics of the paired tests and of the sparse-user gains (kept per user in the ledger's ``per_user/``)."""
PROTOCOL = ["train.epochs=60", "train.lr=0.005"]
"""The budget of the published dbbook2014 / book-crossing tables (``experiments/NOTES.md``)."""
TUNED_SEEDS = [0, 1, 2, 3, 4]
"""The seeds of a published tuned table (issue 17: five seeds, mean ± 95% interval)."""
PROPOSED = "CIKGRec"
"""The row tested against the strongest baseline (every other row of a results ledger is a baseline)."""


@contextlib.contextmanager
def locked_ledger(path: Path, sort: bool = True) -> Iterator[dict]:
    """The ledger, read and written back under an exclusive lock (several sweeps may share it); ``sort=False``
    keeps its rows in the order they were added (a results page shows them in that order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = json.loads(path.read_text()) if path.is_file() else {}
        yield ledger
        rows = dict(sorted(ledger.items())) if sort else ledger
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(path)


@functools.lru_cache(maxsize=None)
def default_settings(model_name: str) -> dict:
    """The flattened defaults of a run config of ``model_name``."""
    return flatten(load_run_config(None, [f"model.name={model_name}"]).to_dict())


def changed_keys(old: dict, new: dict) -> list:
    """The keys whose values differ between two resolved settings, sorted. A key only one side has (a setting
    added to cikg after the other was recorded) differs only when its value is not the default, as a
    checkpoint's config is compared (:func:`cikg.train.trainer.config_differences`)."""
    absent = object()
    keys = set(old) | set(new)
    model = new.get("model.name") or old.get("model.name")
    defaults = default_settings(model) if model and set(old) != set(new) else {}
    return sorted(k for k in keys if old.get(k, defaults.get(k, absent)) != new.get(k, defaults.get(k, absent)))


def same_settings(old: Optional[dict], new: dict) -> bool:
    """Two resolved settings describe the same runs (see :func:`changed_keys`)."""
    return old is not None and not changed_keys(old, new)


def settings_diff(old: dict, new: dict, most: int = 4) -> str:
    """``key: old -> new`` for the first ``most`` keys that differ (``""``: none)."""
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed_keys(old, new)[:most])


def budget_problem(settings: dict, dataset: str) -> list:
    """``[why]`` when CIKGRec ``settings`` differ from the published budget (:data:`PROTOCOL`), else ``[]``."""
    want = row_settings(dataset, "cikgrec", PROTOCOL)
    differ = changed_keys(want, settings)
    return ["settings differ from the published budget (" + ", ".join(
        f"{k}: {settings.get(k)!r} instead of {want.get(k)!r}" for k in differ[:6]) + ")"] if differ else []


def refuse(script: str, message: str) -> int:
    """Print the one-line refusal of ``experiments/<script>`` (nothing was run) and return its exit status 2."""
    print(f"experiments/{script}: error: {message}", file=sys.stderr)
    return 2


def show_page(target: Path, page: str, dataset: str, hint: bool) -> None:
    """Write a sweep's page, print it and, with ``hint`` (a page written outside ``experiments/``), say where
    ``--publish`` would have written it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, page)
    print(page)
    if hint:
        print(f"\n(written to {target}; --publish writes experiments/{dataset}/{target.name})")


def command_of(script: str, argv: list) -> str:
    """The command a ledger records for a sweep (``--publish`` and ``--replace`` are not recorded)."""
    return f"python experiments/{script} " + " ".join(shlex.quote(a) for a in argv if a not in ("--publish", "--replace"))


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
    parser.add_argument("--tuned", action="store_true",
                        help="train the tuned configs experiments/<dataset>/tuned/<model>.yaml (experiments/tune.py)")
    parser.add_argument("--only", nargs="+", help="with --ablations: only these rows (e.g. 'CIKGRec w/o UIR')")
    parser.add_argument("--out", default="runs/experiments")
    parser.add_argument("--publish", action="store_true",
                        help="write the tracked tables experiments/<dataset>/results.md (.json) instead of <out>/<dataset>/")
    parser.add_argument("--replace", action="store_true",
                        help="let rows of this sweep replace rows of other settings or more seeds (deliberately)")
    parser.add_argument("--output", help="results file (default: see --publish); its rows are kept in the .json beside it")
    parser.add_argument("--render-only", action="store_true",
                        help="train nothing: re-render the page (and its sparse-gain page) from the ledger")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of the paired tests")
    parser.add_argument("--missing", action="store_true",
                        help="train only the rows the ledger lacks: a row it holds with these settings and at least "
                             "these seeds is kept as it is (a sweep resumed on a machine without its run dirs)")
    return parser.parse_args(argv)


def jobs_of(args: argparse.Namespace) -> dict:
    """``{row label: (config name, overrides of the row)}`` of a sweep."""
    prefix = "tuned/" if args.tuned else ""
    if args.ablations:
        return {label: (prefix + "cikgrec", extra) for label, extra in {"CIKGRec": [], **ABLATIONS}.items()
                if not args.only or label in args.only}
    return {MODELS[m]: (prefix + m, []) for m in args.models or models_of(args.dataset, args.tuned)}


def models_of(dataset: str, tuned: bool = False) -> list:
    """The models of :data:`MODELS` that have a config (``tuned``: a tuned config) for ``dataset``."""
    folder = HERE / dataset / ("tuned" if tuned else "")
    return [m for m in MODELS if (folder / f"{m}.yaml").is_file()]


def setting_overrides(overrides: list) -> list:
    """The ``key=value`` overrides that change a row's figures (those of :data:`RUN_ONLY_KEYS` left out)."""
    return [o for o in overrides if o.split("=", 1)[0] not in RUN_ONLY_KEYS]


def tuned_problems(args: argparse.Namespace) -> list:
    """Why a ``--tuned --publish`` sweep is not the tuned protocol (empty: it is)."""
    problems = []
    if not set(TUNED_SEEDS) <= set(args.seeds):
        problems.append(f"seeds {args.seeds} lack {sorted(set(TUNED_SEEDS) - set(args.seeds))}")
    changed = setting_overrides(args.set)
    if changed:
        problems.append(f"--set {' '.join(changed)} changes the tuned configs (only {', '.join(RUN_ONLY_KEYS)} may be set)")
    return problems


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
        differ = changed_keys(old, settings)
        if differ:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in differ[:6])
            problems.append(f"row {label!r} was produced with other settings ({shown}"
                            f"{', ...' if len(differ) > 6 else ''})")
        elif not set(ledger[label]["seeds"]) <= set(seeds):
            problems.append(f"row {label!r} has seeds {ledger[label]['seeds']}, this sweep only {seeds}")
    return problems


def already_in(ledger: dict, label: str, settings: dict, dataset: str, seeds: list) -> bool:
    """The ledger holds ``label``'s row with ``settings`` and at least ``seeds`` (``--missing`` skips it)."""
    return (label in ledger and set(seeds) <= set(ledger[label].get("seeds", []))
            and same_settings(recorded_settings(dataset, ledger[label]), settings))


def superseded(run_dir: Path, config) -> bool:
    """``run_dir`` holds a run of other settings than ``config`` (a run of the same settings resumes)."""
    return (run_dir / "config.yaml").is_file() and bool(config_differences(load_yaml(run_dir / "config.yaml"), config))


def ensure_init_run(dataset: str, config_name: str, config, overrides: list = ()) -> None:
    """Train the run ``config`` starts from (``train.init_from``) when it has no selected weights yet, from
    ``<model>-init.yaml`` beside the model's config; of ``overrides`` only where and how it runs applies (threads,
    device, progress), never a row's seed or budget."""
    init_from = config.train.init_from
    recipe = HERE / dataset / f"{Path(config_name).name}{INIT_SUFFIX}.yaml"
    if not init_from or (Path(init_from) / "best_model.pt").is_file() or not recipe.is_file():
        return  # nothing to start from, already trained, or no recipe: the trainer says what is missing
    placement = [o for o in overrides if o.split("=", 1)[0] in ("train.threads", "train.device", "train.progress")]
    logging.info("training the run %s starts from: %s -> %s", config_name, recipe, init_from)
    Trainer(load_run_config(recipe, placement), init_from).fit()


def run_one(dataset: str, config_name: str, seed: int, overrides: list, out: Path, label: str,
            replace: bool = False) -> dict:
    """Train (or resume, or re-read) one seed of a row; ``replace`` restarts a run dir of other settings."""
    config = load_run_config(HERE / dataset / f"{config_name}.yaml", [*overrides, f"train.seed={seed}"])
    run_dir = out / dataset / f"{row_slug(label)}-seed{seed}"
    ensure_init_run(dataset, config_name, config, overrides)
    result = Trainer(config, run_dir).fit(overwrite=replace and superseded(run_dir, config))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the epochs' own seconds, so a run resumed (or re-read when finished) reports what its training cost
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metrics["minutes"] = sum(e.get("seconds", 0.0) for e in epochs) / 60
    metrics["groups"] = pd.read_csv(run_dir / "groups.csv").to_dict("records")
    metrics["run_dir"] = str(run_dir)
    logging.info("%s %s seed %d: test %s (best epoch %d)", dataset, label, seed,
                 {k: round(v, 4) for k, v in result.test.items() if k in COLUMNS[:2]}, result.best_epoch)
    return metrics


def group_header(group: str, row: pd.Series) -> str:
    """``Q1 (n=1522, train 3–4)``; a group no user falls in (ml1m has no user with <= 5 train items) says so."""
    if not row["n_users"] or pd.isna(row["min_train"]):
        return f"{group} (n=0)"
    return f"{group} (n={int(row['n_users'])}, train {int(row['min_train'])}–{int(row['max_train'])})"


def row_slug(label: str) -> str:
    """``CIKGRec w/o UIR`` -> ``CIKGRec_wo_UIR`` (run directories and per-user files of a row)."""
    return label.replace(" ", "_").replace("/", "")


def keep_per_user(label: str, runs: list, folder: Path) -> str:
    """Copy the rows' per-user test metrics (:data:`TESTED`, all seeds) to ``folder/<row>.csv.gz``; returns the
    file's path relative to the ledger (``""`` when a run has none: the page then shows no paired test)."""
    dirs = [Path(r["run_dir"]) for r in runs if "run_dir" in r]
    if len(dirs) != len(runs) or not all((d / PER_USER_FILE).is_file() for d in dirs):
        return ""
    frame = pd.concat([read_per_user(d)[["seed", "user", "train_degree", *TESTED]] for d in dirs])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{row_slug(label)}.csv.gz"
    frame.to_csv(path, index=False, float_format="%.7g", compression={"method": "gzip", "mtime": 0})
    return f"{folder.name}/{path.name}"


def summarise(label: str, runs: list, command: str, settings: dict, per_user_dir: Path = None) -> dict:
    """One table row of the ledger: the per-seed figures, mean ± std of each column over the seeds, the group
    means, and (with ``per_user_dir``) where the runs' per-user test metrics are kept."""
    frame = pd.DataFrame([r["test"] for r in runs])[COLUMNS]
    frames = [pd.DataFrame(r["groups"]).set_index("group") for r in runs]
    header = {g: group_header(g, frames[0].loc[g]) for g in frames[0].index}
    groups = {metric: {header[g]: float(v) for g, v in (sum(f[metric] for f in frames) / len(frames)).items()}
              for metric in ("recall@20", "ndcg@20")}
    return {"label": label, "command": command, "seeds": [r["seed"] for r in runs],
            "best_epochs": [r["best_epoch"] for r in runs], "minutes": sum(r["minutes"] for r in runs),
            "split": str(runs[0]["split"]), "per_seed": [{c: r["test"][c] for c in COLUMNS} for r in runs],
            "hardware": [r.get("hardware") for r in runs],
            "mean": frame.mean().to_dict(), "std": frame.std(ddof=0).to_dict(), "groups": groups,
            "settings": settings,
            "per_user": keep_per_user(label, runs, per_user_dir) if per_user_dir is not None else ""}


UNRECORDED_HARDWARE = ("not recorded (runs from before `metrics.json` kept it; `experiments/NOTES.md`: the 2-core "
                      "CPU, one torch thread per run)")


def hardware_lines(machines_of: dict, unrecorded: str = UNRECORDED_HARDWARE) -> list:
    """A page's hardware paragraph from ``{row: [hardware each of its runs recorded (None: not recorded)]}``: each
    machine with the rows that trained on it (training minutes are wall time on it, often shared with other runs);
    ``unrecorded`` stands for a ``None``."""
    rows_on: dict = {}
    for label, machines in machines_of.items():
        for machine in dict.fromkeys(m or unrecorded for m in machines):
            rows_on.setdefault(machine, []).append(label)
    if len(rows_on) == 1:
        return [f"Hardware (every row): {next(iter(rows_on))}.", ""]
    return ["Hardware, as each run recorded it:", "",
            *[f"- {machine}: {', '.join(labels)}" for machine, labels in rows_on.items()], ""]


def cell(row: dict, column: str) -> str:
    """``mean ± half-width of the 95% t interval`` over the row's seeds; one seed: the mean; a row recorded
    before its per-seed figures were: ``mean ± std†`` (population std)."""
    if "per_seed" in row:
        return mean_ci([seed[column] for seed in row["per_seed"]]).cell()
    return f"{row['mean'][column]:.4f} ± {row['std'][column]:.4f}†"


def best_baseline(ledger: dict) -> str:
    """The strongest baseline of a results ledger: the row other than :data:`PROPOSED` with the highest mean
    test Recall@20 (``""`` when there is none)."""
    baselines = {label: row["mean"]["recall@20"] for label, row in ledger.items() if label != PROPOSED}
    return max(baselines, key=baselines.get) if baselines else ""


def row_per_user(ledger: dict, ledger_dir: Path, label: str):
    """The per-user test metrics of a ledger row (all its seeds), or ``None`` where the row kept none (rows from
    before per-user files were kept)."""
    path = ledger[label].get("per_user")
    if not path or not (ledger_dir / path).is_file():
        return None
    return pd.read_csv(ledger_dir / path, dtype={"user": str})


def per_user_pair(ledger: dict, ledger_dir: Path):
    """``(best baseline, CIKGRec's per-user frame, the baseline's)``, or ``None`` where either row lacks its
    per-user file (rows from before they were kept) or there is no CIKGRec row or baseline."""
    best = best_baseline(ledger)
    if PROPOSED not in ledger or not best:
        return None
    frames = [row_per_user(ledger, ledger_dir, label) for label in (PROPOSED, best)]
    return None if any(f is None for f in frames) else (best, *frames)


def paired_tests(pair, resamples: int) -> dict:
    """``{metric: (wilcoxon, bootstrap)}`` of CIKGRec against the best baseline, for :data:`TESTED`."""
    _, proposed, baseline = pair
    return {metric: compare_models(proposed, baseline, metric, resamples=resamples) for metric in TESTED}


def ablation_tests(ledger: dict, ledger_dir: Path, resamples: int) -> dict:
    """``{label: {metric: (wilcoxon, bootstrap)}}``: each ablation row against the full CIKGRec, paired over
    users like :func:`paired_tests`, for the rows that kept per-user files (none without the full row's)."""
    full = row_per_user(ledger, ledger_dir, PROPOSED) if ledger_dir is not None and PROPOSED in ledger else None
    if full is None:
        return {}
    tests = {}
    for label in ledger:
        frame = None if label == PROPOSED else row_per_user(ledger, ledger_dir, label)
        if frame is not None:
            tests[label] = {metric: compare_models(frame, full, metric, resamples=resamples) for metric in TESTED}
    return tests


def p_cell(tests: dict) -> str:
    """``"0.041 / 2.0e-06"``: the Wilcoxon p-values of ``{metric: (wilcoxon, bootstrap)}`` for :data:`TESTED`."""
    return " / ".join(format_p(tests[m][0].p_value) for m in TESTED)


ABLATION_P = "vs full CIKGRec (p, Wilcoxon: R@20 / N@20)"
BASELINE_P = "vs best baseline (p, Wilcoxon: R@20 / N@20)"


def mean_std_table(ledger: dict, p_cells: dict = None, p_title: str = BASELINE_P) -> pd.DataFrame:
    """The main table; with ``p_cells`` (``{label: text}``) a ``p_title`` column of paired p-values."""
    table = {}
    for label, row in ledger.items():
        table[label] = {c: cell(row, c) for c in COLUMNS}
        if p_cells:
            table[label][p_title] = p_cells.get(label, "")
        table[label]["best epochs"] = ", ".join(map(str, row["best_epochs"]))
        table[label]["seeds"] = ", ".join(map(str, row["seeds"]))
    return pd.DataFrame(table).T


def difference_cell(boot) -> str:
    """A paired bootstrap's mean difference with its 95% interval, e.g. ``+0.0039 [+0.0007, +0.0070]``."""
    return f"{boot.mean_diff:+.4f} [{boot.ci[0]:+.4f}, {boot.ci[1]:+.4f}]"


def tests_table(tests: dict) -> pd.DataFrame:
    """One row per tested metric: both means, the difference with its bootstrap interval, both p-values."""
    rows = {}
    for metric, (wilcoxon, boot) in tests.items():
        rows[metric] = {"CIKGRec": f"{boot.mean_a:.4f}", "baseline": f"{boot.mean_b:.4f}",
                        "difference [95% CI]": difference_cell(boot),
                        "p (bootstrap)": format_p(boot.p_value), "p (Wilcoxon)": format_p(wilcoxon.p_value),
                        "users": boot.n, "users with no difference": boot.n_zero}
    return pd.DataFrame(rows).T


def sparse_gain_page(dataset: str, pair, resamples: int) -> str:
    """The sparse-user claim: CIKGRec's relative gain over the best baseline per activity group."""
    best, proposed, baseline = pair
    gains = {metric: group_gains(proposed, baseline, metric, resamples=resamples) for metric in TESTED}
    rows, verdicts = {}, []
    for metric, groups in gains.items():
        for gain in groups:
            name = (f"{gain.group} (n=0)" if not gain.n_users
                    else f"{gain.group} (n={gain.n_users}, train {gain.min_train}–{gain.max_train})")
            rows.setdefault(name, {})[f"{metric} gain [95% CI]"] = gain.cell()
            rows[name][f"{metric} p"] = format_p(gain.p_value)
            if gain.group.startswith("train<=") and gain.ci:
                verdict = ("holds (interval above 0)" if gain.ci[0] > 0 else
                           "reversed (interval below 0)" if gain.ci[1] < 0 else "not shown (interval spans 0)")
                verdicts.append(f"- {gain.group}, {metric}: {gain.gain:+.2%}, {verdict}")
    seeds = sorted(set(proposed["seed"]) & set(baseline["seed"]))
    lines = [f"# {dataset}: sparse users, CIKGRec over the best baseline ({best})", "",
             f"Relative gain `mean_CIKGRec / mean_{best} - 1` of the test metric per user-activity group (users' "
             f"train interactions; quartiles Q1-Q4 and the paper's train<=5 / train<=10 groups), each user's metric "
             f"averaged over the seeds both rows ran ({', '.join(map(str, seeds))}). Interval: 95% percentile "
             f"interval of the same ratio over users resampled within the group ({resamples} resamples, seeded); "
             "p: two-sided paired bootstrap p-value of the difference. The paper claims +1.67% to +9.31% on sparse "
             "users.", "", pd.DataFrame(rows).T.to_markdown(disable_numparse=True), "",
             "Where the claim holds:", "", *(verdicts or ["- no sparse group has users"]), ""]
    return "\n".join(lines)


def gcl_curve(ledger: dict, dataset: str) -> pd.DataFrame:
    """The CL-strength curve of an ablations ledger: one row per ``gcl_weight`` (the ``gcl_weight`` rows and the
    full CIKGRec at its own weight) with test Recall@20 and NDCG@20 (mean, 95% half-width, seeds); empty
    with fewer than two weights."""
    rows = []
    for label, row in ledger.items():
        match = GCL_ROW.fullmatch(label)
        if not match and label != PROPOSED:
            continue
        weight = float(match.group(1)) if match else float(recorded_settings(dataset, row)["model.gcl_weight"])
        point = {"gcl_weight": weight, "label": label, "seeds": len(row["seeds"])}
        for metric in TESTED:
            ci = mean_ci([seed[metric] for seed in row["per_seed"]]) if "per_seed" in row else None
            point[metric] = ci.mean if ci else row["mean"][metric]
            point[f"{metric} ±"] = (ci.half_width if ci else None) or 0.0
        rows.append(point)
    frame = pd.DataFrame(rows)
    return frame.sort_values("gcl_weight").reset_index(drop=True) if len(frame) >= 2 else pd.DataFrame()


def plot_gcl_curve(curve: pd.DataFrame, path: Path, dataset: str) -> None:
    """Test Recall@20 and NDCG@20 against ``gcl_weight`` (log scale), each point with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, metric in zip(axes, TESTED):
        ax.errorbar(curve["gcl_weight"], curve[metric], yerr=curve[f"{metric} ±"], marker="o", capsize=3)
        full = curve[curve["label"] == PROPOSED]
        ax.scatter(full["gcl_weight"], full[metric], s=90, facecolors="none", edgecolors="C3", zorder=3,
                   label="the config's weight (full CIKGRec)")
        ax.set_xscale("log")
        ax.set_xlabel("gcl_weight (CL strength)")
        ax.set_ylabel(f"test {metric.replace('recall', 'Recall').replace('ndcg', 'NDCG')}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = sorted(set(curve["seeds"]))
    fig.suptitle(f"{dataset}: CIKGRec against the strength of its contrastive term (mean ± 95% interval, "
                 f"{'/'.join(map(str, seeds))} seeds)", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gcl_section(curve: pd.DataFrame, plot_name: str) -> list:
    """The lines of the ablations page's CL-strength section (none without a curve)."""
    if curve.empty:
        return []
    table = curve.assign(**{m: [f"{v:.4f} ± {h:.4f}" for v, h in zip(curve[m], curve[f"{m} ±"])] for m in TESTED})
    return ["## CL strength: test metrics against gcl_weight", "",
            table[["gcl_weight", "label", *TESTED, "seeds"]].to_markdown(index=False, disable_numparse=True), "",
            f"![CIKGRec against gcl_weight]({plot_name})", ""]


def groups_table(ledger: dict, metric: str = "recall@20") -> pd.DataFrame:
    table = pd.DataFrame({label: row["groups"][metric] for label, row in ledger.items()}).T
    return table.dropna(axis=1, how="all")  # groups no user falls in


def render(dataset: str, ledger: dict, ablations: bool, ledger_dir: Path = None, resamples: int = 10_000,
           tuned: bool = False) -> tuple:
    """The Markdown page of a ledger (the mean ± CI table, the paired test of CIKGRec against the best
    baseline, the sparse-user tables, each row's command) and its sparse-gain page (``""`` without per-user
    files, and for the ablations)."""
    order = [label for label in [*MODELS.values(), "CIKGRec", *ABLATIONS] if label in ledger]
    ledger = {label: ledger[label] for label in dict.fromkeys([*order, *ledger])}
    pair = None if ablations or ledger_dir is None else per_user_pair(ledger, ledger_dir)
    tests = paired_tests(pair, resamples) if pair else {}
    best = pair[0] if pair else ""
    against_full = ablation_tests(ledger, ledger_dir, resamples) if ablations else {}
    if against_full:
        table = mean_std_table(ledger, {PROPOSED: "full model", **{k: p_cell(v) for k, v in against_full.items()}},
                               ABLATION_P)
    else:
        table = mean_std_table(ledger, {PROPOSED: p_cell(tests), best: "best baseline"} if tests else None)
    commands = {}
    for label, row in ledger.items():
        commands.setdefault(row["command"], []).append(label)
    splits = sorted({row["split"] for row in ledger.values()})
    lines = [
        f"# {dataset}: {'CIKGRec ablations' if ablations else 'results'}{', tuned and converged' if tuned else ''}",
        "",
        "Test split, each model at the epoch selected on the validation split (Recall@20 + NDCG@20); "
        "mean ± the half-width of the 95% Student-t interval over the seeds in the last column (one seed: the mean "
        "alone, no interval; † marks rows recorded before their per-seed figures were, shown with the population "
        "std). Validation split: " + "; ".join(splits)
        + (f". Configs: `experiments/{dataset}/tuned/*.yaml`, each the best on valid of its model's Optuna study "
           f"under one budget (and of the studies run again over a range widened at its edge: `tuning.md`), trained "
           f"with no epoch cap until validation stops improving" if tuned else
           f". Configs: `experiments/{dataset}/*.yaml`") + " with the overrides in each command below. CIKGRec's view-1 "
        "anchor is the full CIKG (as in the released code) unless the row says otherwise.", "",
        "Commands (each wrote the rows named after it, with `--publish`; `experiments/run.py` keeps the rows in "
        f"`experiments/{dataset}/{'ablations' if ablations else 'results'}{'-tuned' if tuned else ''}.json` and "
        "adds to them):", "",
        *[f"- `{command}`: {', '.join(labels)}" for command, labels in commands.items()], "",
        table.to_markdown(disable_numparse=True), "",
        *paired_section(ledger, tests, best, ablations), *ablation_section(against_full, resamples),
        "## Sparse users: test Recall@20 per user-activity group (mean over seeds)", "",
        groups_table(ledger).to_markdown(floatfmt=".4f"), "",
        "## Test NDCG@20 per user-activity group", "", groups_table(ledger, "ndcg@20").to_markdown(floatfmt=".4f"), "",
        *hardware_lines({label: row.get("hardware", [None]) for label, row in ledger.items()}),
        "Training minutes (all seeds): " + ", ".join(f"{label} {row['minutes']:.1f}" for label, row in ledger.items()),
        "",
        *(gcl_section(gcl_curve(ledger, dataset), GCL_PLOT) if ablations else []),
    ]
    return "\n".join(lines), sparse_gain_page(dataset, pair, resamples) if pair else ""


def paired_section(ledger: dict, tests: dict, best: str, ablations: bool) -> list:
    """The lines of the paired-test section (or why there is none)."""
    if ablations or PROPOSED not in ledger or not best_baseline(ledger):
        return []
    if not tests:
        return [f"No paired test: the {PROPOSED} row or the best baseline ({best_baseline(ledger)}) has no per-user "
                "test metrics kept (rows from before the ledger kept them; re-run them).", ""]
    seeds = sorted(set(ledger[PROPOSED]["seeds"]) & set(ledger[best]["seeds"]))
    return [f"## {PROPOSED} against the best baseline ({best}, highest mean test Recall@20)", "",
            f"Paired over users: each test user's metric averaged over the seeds both rows ran "
            f"({', '.join(map(str, seeds))}), then the Wilcoxon signed-rank test (users with no difference dropped) "
            f"and a paired bootstrap over users ({next(iter(tests.values()))[1].resamples} resamples, seeded; "
            "percentile interval of the mean difference, two-sided p).", "",
            tests_table(tests).to_markdown(disable_numparse=True), ""]


def ablation_section(tests: dict, resamples: int) -> list:
    """The lines saying what the ablations' p-value column is, and each row's difference with its interval."""
    if not tests:
        return []
    rows = {label: {f"{metric} difference [95% CI]": difference_cell(boot)
                    for metric, (_, boot) in by_metric.items()} for label, by_metric in tests.items()}
    return [f"## Each ablation against the full {PROPOSED}", "",
            "Paired over users as on the results page: each test user's metric averaged over the seeds both rows "
            "ran, the Wilcoxon signed-rank p in the table above, and here the mean difference (ablation minus full "
            f"model) with its paired-bootstrap 95% interval ({resamples} resamples, seeded).", "",
            pd.DataFrame(rows).T.to_markdown(disable_numparse=True), ""]


def main(argv: list = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    missing = [m for m in args.models or (["cikgrec"] if args.ablations and args.tuned else [])
               if m not in models_of(args.dataset, args.tuned)]
    if missing and (args.tuned or not args.ablations):
        where = f"experiments/{args.dataset}/{'tuned/' if args.tuned else ''}"
        hint = "run experiments/tune.py first" if args.tuned else "KGIN needs an item KG"
        print(f"experiments/run.py: error: {where} has no config for {', '.join(missing)} ({hint}); its models: "
              f"{', '.join(models_of(args.dataset, args.tuned)) or 'none'}", file=sys.stderr)
        return 2
    if args.tuned and args.publish and tuned_problems(args):
        return refuse("run.py", f"--tuned --publish needs the tuned protocol: {'; '.join(tuned_problems(args))}; "
                                "nothing was run")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    jobs = jobs_of(args)
    command = command_of("run.py", sys.argv[1:] if argv is None else argv)
    page_name = ("ablations" if args.ablations else "results") + ("-tuned" if args.tuned else "") + ".md"
    target = (Path(args.output) if args.output
              else (HERE if args.publish else out) / args.dataset / page_name)
    ledger_path = target.with_suffix(".json")
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    settings = {label: row_settings(args.dataset, name, [*args.set, *extra]) for label, (name, extra) in jobs.items()}
    if args.missing:
        done = [label for label in jobs if already_in(ledger, label, settings[label], args.dataset, args.seeds)]
        if done:
            logging.info("--missing: %s already in %s", ", ".join(done), ledger_path)
        jobs = {label: job for label, job in jobs.items() if label not in done}
        settings = {label: settings[label] for label in jobs}
    conflicts = replacement_conflicts(args.dataset, ledger, settings, args.seeds)
    if conflicts and not args.replace and not args.render_only:
        print(f"experiments/run.py: error: {ledger_path}: {'; '.join(conflicts)}; nothing was run. Write to "
              "another ledger (--output, or leave --publish out) or pass --replace to replace those rows",
              file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    for label, (name, extra) in ({} if args.render_only else jobs).items():
        runs = [run_one(args.dataset, name, seed, [*args.set, *extra], out / ("tuned" if args.tuned else ""), label,
                        args.replace) for seed in args.seeds]
        row = summarise(label, runs, command, settings[label], ledger_path.parent / "per_user")
        with locked_ledger(ledger_path, sort=False) as ledger:  # a row lands as it ends, beside other sweeps' rows
            ledger[label] = row
    if not ledger:
        print(f"experiments/run.py: error: {ledger_path}: no ledger to render", file=sys.stderr)
        return 2
    page, gains = render(args.dataset, ledger, args.ablations, ledger_path.parent, args.resamples, args.tuned)
    curve = gcl_curve(ledger, args.dataset) if args.ablations else pd.DataFrame()
    if not curve.empty:
        plot_gcl_curve(curve, target.with_name(GCL_PLOT), args.dataset)
    if gains:
        gains_path = target.with_name(f"{target.stem}-sparse-gain.md")
        write_text_atomic(gains_path, gains)
    show_page(target, page + (f"\n(sparse-user gains: {gains_path})\n" if gains else ""), args.dataset,
              not args.publish and not args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
