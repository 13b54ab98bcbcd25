"""Tune every model of one dataset under one budget (issue 17 item 2): an Optuna study per model, its best config.

    python experiments/tune.py dbbook2014 --trials 2 --trial-set train.epochs=1        # a try: runs/tune/dbbook2014/
    python experiments/tune.py dbbook2014 --trials 20 --set train.threads=1 --publish  # -> experiments/dbbook2014/tuned/
    python experiments/run.py dbbook2014 --tuned --seeds 0 1 2 3 4 --publish            # the tuned configs, converged
    python experiments/tune.py book-crossing --render-only --publish   # the page again, while studies run elsewhere

For each model with a config and a search space in ``experiments/<dataset>/`` (``<model>.yaml``,
``<model>.space.yaml``; ``--models`` picks some), ``cikg tune`` (:func:`cikg.train.tune.tune`: TPE sampler, median
pruning after ``--prune-warmup`` epochs, selection on the validation split, never on test) runs a study of
``--trials`` trials into
``<out>/<dataset>/<model>/study`` (Optuna's SQLite storage: a killed sweep resumes where it stopped, and a
later session adds the trials a study lacks). Every trial trains under the same budget: the model's config with
``--set`` (kept in the tuned config, e.g. a larger ``train.batch_size`` on ml1m) and ``--trial-set`` (the trial
budget only, default ``train.epochs=40 train.patience=5``). Every model gets the same number of trials, the same
trial budget and the same study seed: that is what "tuned under one budget" means here, and ``--publish`` refuses
a study that would break it.

The best trial's parameters then make the model's tuned config: ``<model>.yaml`` with ``--set``, the best
parameters and no epoch cap (``train.epochs`` = :data:`NO_CAP`, early stopping with ``train.patience=10`` on the
validation split), written with its study's summary as a comment to ``<out>/<dataset>/tuned/<model>.yaml``, or
with ``--publish`` to ``experiments/<dataset>/tuned/<model>.yaml``, which ``run.py --tuned`` trains over the seeds.
With ``--publish`` each study's Optuna storage is also kept, after every trial, as ``tuned/<model>.study.db``
beside the configs: committed, it lets a later session on another machine resume the study where it stopped
(a trial cut off by the end of a session runs again from its start). Each study lands in the ledger
``tuning.json`` beside (trials finished and pruned, the best valid value and
parameters, the budget, the space file's SHA-256, the minutes, the hardware and the command) and the page ``tuning.md`` is
rendered from it.

A best value at the edge of its range (:meth:`cikg.train.tune.SearchParam.edge`: the outer 10% of the range) is
named on the page: the optimum may lie beyond. The remedy is to widen that range in ``<model>.space.yaml`` and run
the study again from its first trial under the same budget, ``--restart MODEL``: the kept study is replaced and
its summary stays in the new record (``superseded``) and on the page. A published study whose space file changed
is never resumed without ``--restart`` (its trials would mix two spaces).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sqlite3
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (experiments/run.py: the ledger lock, refusals, recorded commands)

from cikg._io import sha256_file, write_text_atomic  # noqa: E402
from cikg.train import load_run_config  # noqa: E402
from cikg.train.hardware import describe_hardware  # noqa: E402
from cikg.train.trainer import resolve_device  # noqa: E402
from cikg.train.tune import EDGE_MARGIN, SPACE_ATTR, edges_of, load_search_space, overrides_for, tune  # noqa: E402

HERE = base.HERE
NO_CAP = 1000
"""``train.epochs`` of a tuned config: no run here reaches it, early stopping on the validation split ends it."""
CONVERGE = [f"train.epochs={NO_CAP}", "train.patience=10"]
TRIAL_BUDGET = ["train.epochs=40", "train.patience=5"]
STUDY_SEED = 0
PRUNE_WARMUP = 10
"""Epochs of each trial never pruned: a trial's first epochs say little about where it ends (a lower learning rate
starts slower), and pruning on them favours the fastest starters."""
PRUNE_STARTUP = 5
"""Trials of every study that are never pruned (the median pruner's start)."""


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["dbbook2014", "book-crossing", "ml1m"])
    parser.add_argument("--models", nargs="+", choices=list(base.MODELS),
                        help="default: every model with a config and a search space in experiments/<dataset>/")
    parser.add_argument("--trials", type=int, default=20, help="finished trials per study (default 20)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides of every trial, kept in the tuned config")
    parser.add_argument("--trial-set", nargs="*", default=TRIAL_BUDGET,
                        help=f"the trial budget, not kept in the tuned config (default {' '.join(TRIAL_BUDGET)})")
    parser.add_argument("--seed", type=int, default=STUDY_SEED, help="the studies' sampler seed (default 0)")
    parser.add_argument("--prune-warmup", type=int, default=PRUNE_WARMUP,
                        help=f"epochs of each trial never pruned (default {PRUNE_WARMUP})")
    parser.add_argument("--out", default="runs/tune")
    parser.add_argument("--publish", action="store_true",
                        help="write experiments/<dataset>/tuned/ and tuning.md (.json): one budget for every model")
    parser.add_argument("--restart", nargs="+", default=[], metavar="MODEL", choices=list(base.MODELS),
                        help="start these models' studies again from trial 0 (after widening a range of their "
                             "space); the old study's summary is kept in the new record")
    parser.add_argument("--render-only", action="store_true",
                        help="run no trial: re-render tuning.md from tuning.json and the kept studies (how far the "
                             "running ones got)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials}")
    return args


def models_of(args: argparse.Namespace) -> list:
    """The models to tune: those asked for, else every model with a config and a search space."""
    return args.models or spaced_models(args.dataset)


def spaced_models(dataset: str) -> list:
    """The models with a config and a search space in ``experiments/<dataset>/``."""
    return [m for m in base.models_of(dataset) if space_of(dataset, m).is_file()]


def space_of(dataset: str, model: str) -> Path:
    return HERE / dataset / f"{model}.space.yaml"


def budget_of(args: argparse.Namespace) -> dict:
    """What every study of a published ledger must share (the run-only keys of ``--set``, threads or device,
    aside)."""
    return {"trials": args.trials, "set": base.setting_overrides(args.set), "trial_set": list(args.trial_set),
            "seed": args.seed, "prune_warmup": args.prune_warmup}


def budget_problems(ledger: dict, budget: dict) -> list:
    """The ledger's studies tuned under another budget than ``budget`` (each with what differs)."""
    problems = []
    for model, study in ledger.items():
        differ = [f"{k}: {study['budget'].get(k)!r} instead of {v!r}" for k, v in budget.items()
                  if study["budget"].get(k) != v]
        if differ:
            problems.append(f"{model} ({', '.join(differ)})")
    return problems


def tuned_config(args: argparse.Namespace, model: str, params: dict) -> str:
    """The YAML of ``model``'s tuned config: its published config, ``--set`` (but the run-only keys: a study run
    on a GPU or with one thread does not pin its tuned config there), the best parameters, no epoch cap."""
    overrides = [*base.setting_overrides(args.set), *overrides_for(params), *CONVERGE]
    return load_run_config(HERE / args.dataset / f"{model}.yaml", overrides).to_yaml()


UNRECORDED_HARDWARE = ("not recorded (studies finished before `tuning.json` kept it: the 2-core CPU of "
                       "`experiments/NOTES.md`, one torch thread per trial)")


def study_hardware(args: argparse.Namespace, model: str) -> str:
    """The machine that finished ``model``'s study, with the device and torch threads its trials were given."""
    train = load_run_config(HERE / args.dataset / f"{model}.yaml", args.set).train
    return describe_hardware(resolve_device(train.device), threads=train.threads)


def study_record(args: argparse.Namespace, model: str, result, command: str) -> dict:
    """One ledger record of a finished study (a :class:`cikg.train.tune.TuneResult`)."""
    trials = result.trials
    states = trials["state"].value_counts().to_dict() if "state" in trials else {}
    seconds = pd.to_numeric(trials.get("seconds", pd.Series(dtype=float)), errors="coerce").fillna(0).sum()
    return {"model": base.MODELS[model], "metric": result.metric, "best_value": float(result.best_value),
            "best_params": result.best_params, "trials": len(trials),
            "states": {str(k): int(v) for k, v in states.items()}, "minutes": round(float(seconds) / 60, 1),
            "budget": budget_of(args), "space": f"experiments/{args.dataset}/{model}.space.yaml",
            "space_sha256": sha256_file(space_of(args.dataset, model)), "edges": result.edges,
            "hardware": study_hardware(args, model), "command": command}


def changed_spaces(args: argparse.Namespace, ledger: dict, models: list) -> list:
    """The models whose published study ran over another version of their space file, not being restarted."""
    return [m for m in models if m in ledger and m not in args.restart
            and ledger[m]["space_sha256"] != sha256_file(space_of(args.dataset, m))]


def superseded_summary(record: dict) -> dict:
    """What the record of a restarted study keeps of the study it replaces."""
    keep = ("best_value", "best_params", "study_best", "edges", "trials", "minutes", "space_sha256", "command")
    return {**{key: record[key] for key in keep if key in record}, "superseded": record.get("superseded", [])}


def studies_of(record: dict) -> list:
    """A model's studies, oldest first: those its record replaced (``superseded``, nested), then its own."""
    earlier = record.get("superseded", [])
    return [*(studies_of(earlier[0]) if earlier else []), record]


def own_best(study: dict) -> tuple:
    """``(value, params)`` of the best trial of one study itself (not of the studies before it)."""
    best = study.get("study_best", study)
    return best["best_value"], best["best_params"]


def select_across_studies(record: dict, space: list) -> None:
    """A widened study's record selects the best trial on valid among all the model's studies (an earlier best
    lies inside the widened space): when an earlier study's is higher, it becomes the record's best and this
    study's own best moves to ``study_best``."""
    earlier = record["superseded"][0]  # its best is already the best of the studies before it
    if earlier["best_value"] > record["best_value"]:
        record["study_best"] = {"best_value": record["best_value"], "best_params": record["best_params"]}
        record["best_value"], record["best_params"] = earlier["best_value"], earlier["best_params"]
        record["edges"] = edges_of(space, record["best_params"])


def read_only(study_db: Path) -> contextlib.closing:
    """A read-only connection to a kept Optuna SQLite storage, closed on leaving the ``with`` block."""
    return contextlib.closing(sqlite3.connect(f"file:{study_db}?mode=ro", uri=True))


def study_space(study_db: Path) -> str:
    """The SHA-256 of the search space an Optuna storage's study ran over (``cikg.train.tune`` keeps it in the
    study's user attributes); ``""`` when there is no storage or it predates that."""
    if not study_db.is_file():
        return ""
    with read_only(study_db) as db:
        row = db.execute("SELECT value_json FROM study_user_attributes WHERE key = ?", (SPACE_ATTR,)).fetchone()
    return json.loads(row[0]) if row else ""


def restart_study(study_dir: Path, kept: Path) -> None:
    """Remove a study's working directory (its storage and trial runs) and its kept storage."""
    shutil.rmtree(study_dir, ignore_errors=True)
    kept.unlink(missing_ok=True)


def ran_no_trial(previous: dict, record: dict) -> bool:
    """Whether ``record`` describes the study ``previous`` already did: the same trials, states and best
    parameters (a call that only resumed a finished study)."""
    return previous is not None and all(previous.get(key) == record[key]
                                        for key in ("trials", "states", "best_params", "best_value"))


def copy_study(source: Path, target: Path) -> None:
    """A consistent copy of an Optuna SQLite storage (SQLite's online backup; Optuna may hold the source open)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".db.tmp")
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(partial)) as dst:
        src.backup(dst)
    partial.replace(target)


def format_params(params: dict) -> list:
    """``["train.lr=0.00123", "model.layers=3", ...]``: floats to four significant digits."""
    return [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]


def header_of(record: dict, dataset: str, model: str) -> str:
    """The comment above a tuned config: where it comes from and how it trains."""
    params = ", ".join(format_params(record["best_params"]))
    studies = studies_of(record)
    trials = f"{sum(s['trials'] for s in studies)} trials of {len(studies)} studies" if len(studies) > 1 \
        else f"{record['trials']} trials"
    return (f"# {record['model']} on {dataset}, tuned: the best of {trials} (valid {record['metric']} "
            f"{record['best_value']:.4f}; {params})\n"
            f"# search space {record['space']}; trial budget {' '.join(record['budget']['trial_set'])}; "
            f"study seed {record['budget']['seed']}\n# command: {record['command']}\n"
            f"# trained with no epoch cap (train.epochs={NO_CAP}, early stopping on valid): "
            f"python experiments/run.py {dataset} --tuned --models {model}\n")


def kept_trials(study_db: Path) -> int:
    """The finished (complete or pruned) trials of a kept Optuna storage; 0 when there is none."""
    if not study_db.is_file():
        return 0
    with read_only(study_db) as db:
        return db.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]


def pending_line(dataset: str, ledger: dict) -> str:
    """Which models with a search space have no finished study yet, and how far each kept study got."""
    pending = [m for m in spaced_models(dataset) if m not in ledger]
    if not pending:
        return ""
    kept = {m: kept_trials(HERE / dataset / "tuned" / f"{m}.study.db") for m in pending}
    states = [f"{base.MODELS[m]} ({n} trial{'s' * (n != 1)} kept)" if n else f"{base.MODELS[m]} (no trial yet)"
              for m, n in kept.items()]
    return (f"Not tuned yet: {', '.join(states)}. Each study's trials are kept in `tuned/<model>.study.db`; "
            "running the command below again (with the models' names) resumes them where they stopped.")


def trial_counts(record: dict) -> str:
    """``total (finished, pruned, stopped)``; a stopped trial was cut by a process's end and does not count."""
    finished, pruned = record["states"].get("COMPLETE", 0), record["states"].get("PRUNED", 0)
    return f"{record['trials']} ({finished}, {pruned}, {record['trials'] - finished - pruned})"


def format_edges(edges: dict) -> str:
    """``"`train.lr` (high), `model.l2` (low)"``: the parameters at an edge of their range and which side."""
    return ", ".join(f"`{key}` ({side})" for key, side in edges.items())


def edge_line(dataset: str, ledger: dict) -> str:
    """The studies whose best value lies at an edge of its range (and whether that range was widened since), or
    ``""``."""
    at_edges = []
    for model, record in ledger.items():
        if record.get("edges"):
            space = space_of(dataset, model)
            widened = space.is_file() and sha256_file(space) != record["space_sha256"]
            at_edges.append(f"{record['model']} {format_edges(record['edges'])}"
                            + (" (widened since: its study is run again)" if widened else ""))
    if not at_edges:
        return ""
    return (f"At an edge of its range (the best value in the outer {EDGE_MARGIN:.0%} of the range, on its scale; the "
            f"optimum may lie beyond, so such a range is widened and its study run again with `--restart`): "
            f"{'; '.join(at_edges)}.")


def superseded_lines(ledger: dict) -> list:
    """Per model whose range was widened: each of its studies (space, trials, its own best, edges) and which one
    the tuned config comes from."""
    lines = []
    for record in ledger.values():
        studies = studies_of(record)
        if len(studies) < 2:
            continue
        parts = []
        for k, study in enumerate(studies, 1):
            value, params = own_best(study)
            edges = format_edges(study.get("edges") or {}) or "none"
            parts.append(f"study {k} over the space `{study['space_sha256'][:12]}`: {study['trials']} trials, best valid "
                         f"{value:.4f} with {', '.join(f'`{p}`' for p in format_params(params))}"
                         + (f", at an edge: {edges}" if study is not record else ""))
        chosen = next(k for k, study in enumerate(studies, 1) if own_best(study)[0] == record["best_value"])
        lines.append(f"- {record['model']}: {'; '.join(parts)}. The tuned config is the best on valid of all "
                     f"{sum(s['trials'] for s in studies)} trials: study {chosen}'s.")
    return (["Studies run again over a widened space (the SHA-256 prefix names the version of `<model>.space.yaml`; "
             "the earlier studies' best configurations lie inside the widened space, so all trials count):", "",
             *lines, ""] if lines else [])


def render(dataset: str, ledger: dict) -> str:
    """The Markdown page of the studies."""
    if not ledger:
        return f"# {dataset}: tuning\n\nNo finished study yet. {pending_line(dataset, ledger)}".rstrip() + "\n"
    rows = [{"model": r["model"], "trials (finished, pruned, stopped)": trial_counts(r),
             f"best valid {r['metric']}": f"{r['best_value']:.4f}",
             "best parameters": ", ".join(f"`{p}`" for p in format_params(r["best_params"])),
             "trial minutes (sum)": r["minutes"]} for r in ledger.values()]
    pending = pending_line(dataset, ledger)
    budgets = sorted({(r["budget"]["trials"], " ".join(r["budget"]["trial_set"]), " ".join(r["budget"]["set"]),
                       r["budget"]["seed"], r["budget"]["prune_warmup"]) for r in ledger.values()})
    lines = [f"# {dataset}: tuning (Optuna, selection on the validation split)", "",
             "One study per model: TPE sampler, median pruning on the validation metric after every epoch (the "
             f"first {PRUNE_STARTUP} trials run in full, and no trial is pruned before its warm-up epochs; a trial "
             "stopped by the end of its process is kept but not counted, and the study runs until the budget's trials "
             "have finished or been pruned); the search spaces are "
             "the `<model>.space.yaml` files beside the configs. Budget (trials; trial budget; overrides kept in the "
             "tuned config; study seed; warm-up epochs): " + "; ".join(
                 f"{t} trials; `{tb}`; `{s or 'none'}`; seed {seed}; {warmup} warm-up epochs"
                 for t, tb, s, seed, warmup in budgets) + ".", "",
             pd.DataFrame(rows).set_index("model").to_markdown(disable_numparse=True), "",
             *([edges, ""] if (edges := edge_line(dataset, ledger)) else []), *superseded_lines(ledger),
             *base.hardware_lines({r["model"]: [r.get("hardware")] for r in ledger.values()}, UNRECORDED_HARDWARE),
             f"Each best configuration is `experiments/{dataset}/tuned/<model>.yaml` (no epoch cap: early stopping "
             f"on valid), trained over the seeds by `python experiments/run.py {dataset} --tuned`.", "",
             *([pending, ""] if pending else []),
             "Commands:", "", *[f"- `{c}`" for c in sorted({r['command'] for r in ledger.values()})], ""]
    return "\n".join(lines)


def main(argv: list = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    models = models_of(args)
    unspaced = [m for m in models if not space_of(args.dataset, m).is_file()
                or not (HERE / args.dataset / f"{m}.yaml").is_file()]
    if unspaced:
        return base.refuse("tune.py", f"experiments/{args.dataset}/ has no config or search space for "
                                      f"{', '.join(unspaced)}; nothing was run")
    folder = HERE / args.dataset if args.publish else Path(args.out) / args.dataset
    ledger_path = folder / "tuning.json"
    if args.render_only:
        return show_tuning_page(folder, args)
    with base.locked_ledger(ledger_path) as ledger:
        problems = budget_problems(ledger, budget_of(args)) if args.publish else []
        changed = changed_spaces(args, ledger, models)
    if problems:
        return base.refuse("tune.py", f"{ledger_path}: studies under another budget ({'; '.join(problems)}); every "
                                      "model of a published table is tuned under one budget; nothing was run")
    if changed:
        return base.refuse("tune.py", f"the search space of {', '.join(changed)} changed since its published study; "
                                      f"--restart {' '.join(changed)} runs it again from trial 0; nothing was run")
    command = base.command_of("tune.py", argv)
    for model in models:
        study_dir = Path(args.out) / args.dataset / model / "study"
        kept = folder / "tuned" / f"{model}.study.db"
        with base.locked_ledger(ledger_path) as ledger:
            previous = ledger.get(model)
        space_sha = sha256_file(space_of(args.dataset, model))
        replaced = previous is not None and previous["space_sha256"] != space_sha  # only with --restart (above)
        if replaced and space_sha not in (study_space(study_dir / "study.db"), study_space(kept)):
            logging.info("%s: starting its study again over %s", model, space_of(args.dataset, model))
            restart_study(study_dir, kept)  # once: a cut new study is resumed by the next call
        if args.publish and kept.is_file() and not (study_dir / "study.db").is_file():
            logging.info("%s: resuming the study kept in %s", model, kept)
            copy_study(kept, study_dir / "study.db")
        base.ensure_init_run(args.dataset, model, load_run_config(HERE / args.dataset / f"{model}.yaml", args.set),
                             args.set)
        keep = [lambda study, trial, db=study_dir / "study.db", to=kept: copy_study(db, to)] if args.publish else []
        result = tune(HERE / args.dataset / f"{model}.yaml", space_of(args.dataset, model), args.trials, study_dir,
                      overrides=[*args.set, *args.trial_set], seed=args.seed, prune_startup=PRUNE_STARTUP,
                      prune_warmup=args.prune_warmup, callbacks=keep)
        if args.publish:
            copy_study(study_dir / "study.db", kept)
        record = study_record(args, model, result, command)
        if replaced or (previous or {}).get("superseded"):
            record["superseded"] = [superseded_summary(previous)] if replaced else previous["superseded"]
            select_across_studies(record, load_search_space(space_of(args.dataset, model)))
        if ran_no_trial(previous, record):
            continue  # its record keeps the command and machine that ran the trials
        write_text_atomic(folder / "tuned" / f"{model}.yaml",
                          header_of(record, args.dataset, model) + tuned_config(args, model, record["best_params"]))
        with base.locked_ledger(ledger_path) as ledger:
            ledger[model] = record
    return show_tuning_page(folder, args)


def show_tuning_page(folder: Path, args: argparse.Namespace) -> int:
    """Render ``folder/tuning.md`` from its ledger and the studies kept beside it, and say where it went."""
    with base.locked_ledger(folder / "tuning.json") as ledger:
        page = render(args.dataset, ledger)
    base.show_page(folder / "tuning.md", page, args.dataset, not args.publish)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("tune.py: interrupted; the studies resume from their last finished trial", file=sys.stderr)
        raise SystemExit(130) from None
