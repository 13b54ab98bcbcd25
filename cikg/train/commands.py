"""The ``cikg runs compare`` and ``cikg tune`` commands, and the ``--import`` / ``--mlflow`` options of
``cikg train`` and ``cikg evaluate`` (cikg/cli.py wires them in).

Handlers import their layer when they run (start-up time: see ``cikg.cli``).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence

from .tracking import DEFAULT_MLFLOW_URI


# ---------------------------------------------------------------------------------------------- train options
def add_import_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module (name or .py file) that registers models of your own (repeatable); "
                             "installed packages can use the cikg.models entry point group instead")


def add_load_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that reopen a run directory (:func:`cikg.train.load_run`)."""
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the run's own device where this "
                                         "machine has it, else cpu)")


def add_tracking_options(parser: argparse.ArgumentParser, experiment: Optional[str] = "cikg") -> None:
    parser.add_argument("--mlflow", nargs="?", const=DEFAULT_MLFLOW_URI, metavar="URI",
                        help=f"also log params, metrics per epoch and artifacts to MLflow (default store "
                             f"{DEFAULT_MLFLOW_URI}; needs the tracking extra). TensorBoard events are always "
                             "written to RUN_DIR/tensorboard")
    parser.add_argument("--mlflow-experiment", default=experiment, metavar="NAME",
                        help=f"MLflow experiment name (default {experiment or 'cikg-tune'})")


def import_models(args: argparse.Namespace) -> None:
    """Import the ``--import`` modules (they register their models) before any config is read."""
    if getattr(args, "imports", None):
        from ..models.registry import import_model_modules

        import_model_modules(args.imports)


def trackers_from_args(args: argparse.Namespace):
    """The trackers of ``cikg train``: TensorBoard, plus MLflow with ``--mlflow`` (checked before any work)."""
    from .tracking import default_trackers

    return default_trackers(getattr(args, "mlflow", None), experiment=getattr(args, "mlflow_experiment", "cikg"))


# ---------------------------------------------------------------------------------------------- runs compare
def _cmd_runs_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from .._io import write_text_atomic
    from .compare import compare_runs, plot_compare, to_markdown

    metrics = args.metric or ["recall@20", "ndcg@20"]
    frame = compare_runs(args.runs, metrics)
    with pd.option_context("display.width", 160, "display.max_columns", 50):
        print(frame.to_string(index=False, float_format="%.4f"))
    if args.output:
        out = Path(args.output)
        write_text_atomic(out, frame.to_csv(index=False) if out.suffix == ".csv" else to_markdown(frame))
        print(f"table: {out}")
    if args.plot:
        import matplotlib.pyplot as plt

        plot_compare(args.runs, metrics, args.plot)
        plt.close("all")
        print(f"plot: {args.plot}")
    return 0


# ---------------------------------------------------------------------------------------------- tune
def _cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    import_models(args)
    if args.mlflow:
        from .tracking import require_mlflow

        require_mlflow()  # before any trial
    config, overrides = _config_and_overrides(args.config, args.overrides)
    study_dir = args.study_dir or str(Path("runs") / "tune" / (Path(config).stem if config else "defaults"))
    epoch_log = logging.getLogger("cikg.train.trainer")
    level = epoch_log.level
    if not getattr(args, "verbose", 0):  # one line per trial; the epochs of each are in its run directory
        epoch_log.setLevel(logging.WARNING)
    try:
        result = tune(config, args.space, args.trials, study_dir, overrides=overrides, metric=args.metric,
                      seed=args.seed, prune_startup=args.prune_startup, prune_warmup=args.prune_warmup,
                      mlflow_uri=args.mlflow, mlflow_experiment=args.mlflow_experiment or "cikg-tune")
    finally:
        epoch_log.setLevel(level)
    print(result.trials.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print(f"best valid {result.metric} = {result.best_value:.4f} with {result.best_params}")
    if result.edges:
        print("at the edge of its range (the optimum may lie beyond; widen it and tune in a new --study-dir): "
              + ", ".join(f"{key} ({side})" for key, side in result.edges.items()))
    print(f"best config: {result.best_config}  (cikg train {result.best_config})")
    print(f"trials: {Path(study_dir) / 'trials.md'}, {Path(study_dir) / 'trials.csv'}")
    return 0


def _config_and_overrides(config: str, overrides: Sequence[str]):
    """``-`` or a leading ``key=value`` means no config file (as for ``cikg train``)."""
    if config == "-":
        return None, list(overrides)
    if "=" in config:
        return None, [config, *overrides]
    return config, list(overrides)


def register(sub) -> None:
    from .._argparse import parser_kwargs as _parser_kwargs

    runs = sub.add_parser("runs", **_parser_kwargs(
        "work with run directories", "cikg runs compare runs/lightgcn-* runs/cikgrec-* --plot cmp.png"))
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="{compare}")
    p = rsub.add_parser("compare", **_parser_kwargs(
        "one table of the config keys in which runs differ and their valid/test metrics; valid curves as PNG",
        "cikg runs compare runs/a runs/b --metric recall@20 -o table.md --plot cmp.png"))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--metric", action="append", help="metric@K to show (repeatable; default recall@20 and ndcg@20)")
    p.add_argument("-o", "--output", help="write the table as markdown (.md) or CSV (.csv)")
    p.add_argument("--plot", help="PNG of the valid metric per epoch of every run")
    p.set_defaults(func=_cmd_runs_compare)

    p = sub.add_parser("tune", **_parser_kwargs(
        "hyper-parameter search with Optuna (TPE, median pruning on the valid metric, resumable SQLite study)",
        "cikg tune experiments/dbbook2014/lightgcn.yaml --space experiments/dbbook2014/lightgcn.space.yaml "
        "--trials 30",
        "cikg tune - data.dataset=synthetic train.epochs=5 --space space.yaml --trials 10 --study-dir runs/study"))
    p.add_argument("config", help="a YAML run config, or - for the defaults")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides applied to every trial")
    p.add_argument("--space", required=True, help="search-space YAML: dotted key -> {low, high, log} | "
                                                  "{low, high, step} | {choices: [...]}")
    p.add_argument("--trials", type=int, required=True, help="trials in the study in all (a rerun adds up to this)")
    p.add_argument("--study-dir", help="study directory (default runs/tune/<config name>)")
    p.add_argument("--metric", help="valid metric to maximise (default: the config's first train.select)")
    p.add_argument("--seed", type=int, default=2024, help="TPE sampler seed")
    p.add_argument("--prune-startup", type=int, default=5, help="trials run in full before pruning starts")
    p.add_argument("--prune-warmup", type=int, default=0, help="epochs of each trial never pruned")
    add_import_option(p)
    add_tracking_options(p, experiment=None)
    p.set_defaults(func=_cmd_tune)


__all__: List[str] = ["add_import_option", "add_tracking_options", "import_models", "register",
                      "trackers_from_args"]
