"""The ``cikg`` command.

Every subcommand returns an exit code: 0 on success, 2 for a user-side error (bad path, bad dataset, bad
config, unreachable server), printed as one line naming the file, line, key or server; ``--debug`` shows
the traceback instead.

Handlers import what they run inside the function, on purpose: `cikg --help` and argument errors then load
no torch, pandas, scikit-learn, matplotlib, FAISS, FastAPI, Optuna or MLflow (tests/test_cli_help.py checks it;
the packages export lazily, :mod:`cikg._lazy`).
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path
from typing import List, Optional, Sequence

from ._argparse import parser_kwargs as _parser_kwargs
from .augment import commands as augment_commands
from .errors import CikgError, describe_path_error
from .interests import commands as interests_commands
from .llm import commands as llm_commands
from .serving import commands as serving_commands
from .train import commands as train_commands

logger = logging.getLogger("cikg")




# ---------------------------------------------------------------------------------------------- data
def _cmd_data_stats(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data import load_dataset
    from .data.split import describe_split
    from .graph import build_cikg, graph_stats

    dataset = load_dataset(args.dataset, root=args.root)
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print(repr(dataset))
        print(dataset.stats().to_string())
        print()
        print("CIKG node and edge counts")
        print(graph_stats(build_cikg(dataset)).to_string(index=False))
    if "split" in dataset.meta:
        print(f"split: {describe_split(dataset.meta['split'])}")
    for warning in dataset.meta.get("warnings", []):
        print(f"warning: {warning}")
    return 0


def _cmd_data_split(args: argparse.Namespace) -> int:
    from .data import load_dataset, save_dataset

    dataset = load_dataset(args.dataset, root=args.root, valid_fraction=args.valid_fraction, seed=args.seed)
    out = save_dataset(dataset, args.output)
    print(f"wrote {dataset!r} with valid.txt ({dataset.valid.size(1)} pairs, seed {args.seed}) to {out}")
    return 0


def _splitter(args: argparse.Namespace):
    """The split ``convert`` carves: temporal by default when a time column is given, else seeded random."""
    from .data import RandomSplit, TemporalSplit
    from .errors import ConfigError

    method = args.split or ("temporal" if args.time_col else "random")
    if method == "temporal" and not args.time_col:
        raise CikgError("--split temporal needs --time-col (the column of interaction times)")
    test = args.test_last if args.test_last is not None else args.test_fraction
    valid = args.valid_last if args.valid_last is not None else args.valid_fraction
    try:
        if method == "temporal":
            return TemporalSplit(test=test, valid=valid)
        return RandomSplit(test=test, valid=valid, seed=args.seed)
    except ConfigError as err:  # name the flag, not the dataclass field
        last = args.test_last if err.key == "test" else args.valid_last
        flag = f"--{err.key}-{'last' if last is not None else 'fraction'}"
        raise CikgError(f"{flag}: {str(err).split(': ', 1)[1]}") from None


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from .data import save_dataset
    from .data.convert import convert_interactions, read_interactions_csv
    from .data.items import read_items_csv
    from .data.split import describe_split

    source = Path(args.source)
    items = None
    attrs = [c.strip() for c in (args.attr_cols or "").split(",") if c.strip()]
    if args.items:
        items = read_items_csv(Path(args.items), args.item_id_col or args.item_col or "item", args.title_col, attrs,
                               sep=args.items_sep or args.sep, attr_sep=args.attr_sep or None)
    splitter = None if args.split_col else _splitter(args)
    if args.source_format == "recbole":
        from .data.recbole import read_recbole

        dataset, coverage = read_recbole(source, name=args.name, splitter=splitter, user_field=args.user_col,
                                         item_field=args.item_col, time_field=args.time_col,
                                         title_field=args.title_col, attr_fields=attrs, items=items,
                                         keep_unused_items=args.keep_unused_items)
    else:
        frame = read_interactions_csv(source, user_col=args.user_col or "user", item_col=args.item_col or "item",
                                      time_col=args.time_col, split_col=args.split_col, sep=args.sep)
        dataset, coverage = convert_interactions(frame, name=args.name or source.stem, time_col=args.time_col,
                                                 splitter=splitter, items=items,
                                                 keep_unused_items=args.keep_unused_items,
                                                 source=str(source.resolve()))
    out = save_dataset(dataset, args.output)
    for line in coverage.lines() if coverage is not None else []:
        print(line)
    print(f"split: {describe_split(dataset.meta['split'])}")
    print(f"wrote {dataset!r} to {out}")
    return 0


def _cmd_data_export(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .data.recbole import export_recbole

    dataset = load_dataset(args.dataset, root=args.root)
    paths = export_recbole(dataset, args.output, name=args.name)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.output}")
    return 0


def _add_split_options(p) -> None:
    g = p.add_argument_group("split (unless --split-col gives it)")
    g.add_argument("--split", choices=("temporal", "random"),
                   help="temporal: each user's latest items go to test, the latest of the rest to valid (the "
                        "default with --time-col); random: a seeded per-user random hold-out (the default without)")
    g.add_argument("--test-last", type=int, metavar="N", help="hold out N items per user for test (leave-N-out)")
    g.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="else this share of each user's items (default 0.2)")
    g.add_argument("--valid-last", type=int, metavar="N", help="hold out N of the remaining items per user for valid")
    g.add_argument("--valid-fraction", type=float, default=1 / 8, metavar="F",
                   help="else this share of the remaining items (default 1/8)")
    g.add_argument("--seed", type=int, default=2024, help="seed of the random split (default 2024)")


def _register_data_convert(dsub) -> None:
    p = dsub.add_parser("convert", **_parser_kwargs(
        "convert a CSV of interactions (or RecBole atomic files) into the cikg dataset format",
        "cikg data convert ratings.csv --user-col userId --item-col movieId --time-col timestamp -o data/mine",
        "cikg data convert ratings.csv --time-col timestamp --test-last 1 --valid-last 1 -o data/loo",
        "cikg data convert ratings.csv --items movies.csv --item-id-col movieId --title-col title "
        "--attr-cols genres -o data/mine",
        "cikg data convert --from recbole recbole_data/ml-100k -o data/ml100k"))
    p.add_argument("source", help="a CSV file, or with --from recbole a directory of atomic files")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--from", dest="source_format", choices=("csv", "recbole"), default="csv",
                   help="input format (default csv)")
    p.add_argument("--name", help="dataset name (default: the file or directory name)")
    p.add_argument("--sep", default=",", help="CSV separator (default ,)")
    p.add_argument("--user-col", help="user id column (default: user; RecBole: user_id)")
    p.add_argument("--item-col", help="item id column (default: item; RecBole: item_id)")
    p.add_argument("--time-col", help="interaction time column: numbers or ISO dates (RecBole: timestamp when present)")
    p.add_argument("--split-col", help="column with train/valid/test: take the split as given")
    _add_split_options(p)
    g = p.add_argument_group("items (titles for the LLM step, attributes for the KG)")
    g.add_argument("--items", help="items CSV: one row per item with its id, a title and attribute columns")
    g.add_argument("--item-id-col", help="item id column of the items file (default: --item-col)")
    g.add_argument("--title-col", "--text-col", dest="title_col",
                   help="column with the item's title or text (what prompts show)")
    g.add_argument("--attr-cols", help="comma-separated attribute columns: KG triples item -column-> value")
    g.add_argument("--attr-sep", default="|", help="separator of several values in one cell (default |; '' for none)")
    g.add_argument("--items-sep", help="separator of the items file (default: --sep)")
    g.add_argument("--keep-unused-items", action="store_true",
                   help="keep items that no interaction names (default: drop them, with a count)")
    p.set_defaults(func=_cmd_data_convert)


def _register_data_export(dsub) -> None:
    p = dsub.add_parser("export", **_parser_kwargs(
        "write a dataset as RecBole atomic files (the split as benchmark files)",
        "cikg data export dbbook2014 --to recbole -o recbole_data/dbbook2014"))
    p.add_argument("dataset", help="a dataset name or directory")
    p.add_argument("--to", choices=("recbole",), default="recbole", help="target format (default recbole)")
    p.add_argument("-o", "--output", required=True, help="directory to write (for RecBole: data_path/<name>)")
    p.add_argument("--name", help="file prefix (default: the output directory's name, as RecBole expects)")
    p.add_argument("--root")
    p.set_defaults(func=_cmd_data_export)


def _register_data(sub) -> None:
    data = sub.add_parser("data", **_parser_kwargs("dataset statistics, splits and conversion",
                                                   "cikg data stats dbbook2014",
                                                   "cikg data split book-crossing -o data/bc --seed 7",
                                                   "cikg data convert ratings.csv --user-col userId --item-col movieId "
                                                   "--time-col timestamp -o data/mine",
                                                   "cikg data export dbbook2014 --to recbole -o recbole_data/dbbook2014"))
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="{stats,split,convert,export}")
    p = dsub.add_parser("stats", **_parser_kwargs("print a dataset's statistics and its CIKG's node/edge counts",
                                                  "cikg data stats dbbook2014", "cikg data stats ./my_data"))
    p.add_argument("dataset", help="a dataset directory, or a name under $CIKG_DATA (default ../shared/data)")
    p.add_argument("--root", help="directory that bare names resolve in")
    p.set_defaults(func=_cmd_data_stats)
    p = dsub.add_parser("split", **_parser_kwargs("carve a seeded validation split and write the dataset with valid.txt",
                                                  "cikg data split book-crossing -o data/bc --seed 7"))
    p.add_argument("dataset", help="a dataset name or directory, or a graph recipe (graphs/*.yaml)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--root")
    p.add_argument("--valid-fraction", type=float, default=1 / 8)
    p.add_argument("--seed", type=int, default=2024)
    p.set_defaults(func=_cmd_data_split)
    _register_data_convert(dsub)
    _register_data_export(dsub)


# ---------------------------------------------------------------------------------------------- graph
def _load_graph_arg(value: str, root: Optional[str]):
    from .data import load_dataset
    from .graph import build_cikg, load_graph

    path = Path(value)
    if path.is_file():
        return load_graph(path)
    return build_cikg(load_dataset(value, root=root))


def _cmd_graph_build(args: argparse.Namespace) -> int:
    from .data import load_dataset, load_interests
    from .graph import build_cikg, graph_stats, save_graph

    if args.dataset.endswith((".yaml", ".yml")):
        from .train import load_graph_recipe, load_run_dataset

        recipe = load_graph_recipe(args.dataset)
        dataset = load_run_dataset(recipe)
        include_kg, include_interests = recipe.include_kg, recipe.include_interests
    else:
        dataset = load_dataset(args.dataset, root=args.root)
        include_kg, include_interests = True, True
    if args.interests:
        file = Path(args.interests) / "user_interest_clustered.txt" if Path(args.interests).is_dir() \
            else Path(args.interests)
        if file.is_file() and not file.read_bytes().strip():
            raise CikgError(f"{file}: holds no user-interest edges, so the CIKG would have no interest nodes; "
                            "re-run `cikg interests cluster` with another --kappa / --max-user-fraction / "
                            "--min-users (its report.md says which clusters were dropped and why), or pass "
                            "--no-interests")
        dataset = load_interests(dataset, args.interests)
    graph = build_cikg(dataset, include_kg=include_kg and not args.no_kg,
                       include_interests=include_interests and not args.no_interests)
    save_graph(graph, args.output)
    print(graph_stats(graph).to_string(index=False))
    print(f"saved the CIKG of {dataset.name} to {args.output}")
    return 0


def _cmd_graph_stats(args: argparse.Namespace) -> int:
    from .graph import graph_stats

    print(graph_stats(_load_graph_arg(args.graph, args.root)).to_string(index=False))
    return 0


def _cmd_graph_export(args: argparse.Namespace) -> int:
    import networkx as nx

    from ._io import atomic_path
    from .graph import to_networkx

    graph = _load_graph_arg(args.graph, args.root)
    if args.user is None and sum(graph[t].num_nodes for t in graph.node_types) > 200_000:
        raise CikgError("the whole graph is too large for networkx export; pass --user U for a neighbourhood")
    nx_graph = to_networkx(graph, user=args.user, max_items=args.max_items)
    relabelled = nx.relabel_nodes(nx_graph, {n: f"{n[0]}:{n[1]}" for n in nx_graph.nodes})
    out = Path(args.output)
    with atomic_path(out) as tmp:  # a read-only or full disk: OutputError, one line, exit 2
        if out.suffix == ".gexf":
            nx.write_gexf(relabelled, tmp)
        else:
            nx.write_graphml(relabelled, tmp)
    print(f"wrote {nx_graph.number_of_nodes()} nodes and {nx_graph.number_of_edges()} edges to {out}")
    return 0


def _register_graph(sub) -> None:
    graph = sub.add_parser("graph", **_parser_kwargs("build, inspect and export the CIKG",
                                                     "cikg graph build dbbook2014 -o runs/dbbook.pt",
                                                     "cikg graph stats runs/dbbook.pt",
                                                     "cikg graph export dbbook2014 --user 0 -o user0.graphml"))
    gsub = graph.add_subparsers(dest="graph_command", required=True, metavar="{build,stats,export}")
    p = gsub.add_parser("build", **_parser_kwargs("build the CIKG of a dataset and save it (torch.save of plain tensors)",
                                                  "cikg graph build dbbook2014 -o runs/dbbook.pt",
                                                  "cikg graph build graphs/ml1m.yaml -o runs/ml1m.pt",
                                                  "cikg graph build book-crossing --interests out/bc -o bc.pt"))
    p.add_argument("dataset", help="a dataset name or directory, or a graph recipe (graphs/*.yaml)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--root")
    p.add_argument("--interests", help="directory or user_interest_clustered.txt replacing the dataset's interests")
    p.add_argument("--no-kg", action="store_true")
    p.add_argument("--no-interests", action="store_true")
    p.set_defaults(func=_cmd_graph_build)
    p = gsub.add_parser("stats", **_parser_kwargs("node and edge counts per type", "cikg graph stats dbbook2014",
                                                  "cikg graph stats runs/dbbook.pt"))
    p.add_argument("graph", help="a saved graph file or a dataset")
    p.add_argument("--root")
    p.set_defaults(func=_cmd_graph_stats)
    p = gsub.add_parser("export", **_parser_kwargs("export (a user's neighbourhood of) the CIKG to GraphML or GEXF",
                                                   "cikg graph export dbbook2014 --user 0 -o user0.graphml"))
    p.add_argument("graph", help="a saved graph file or a dataset")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--user", type=int)
    p.add_argument("--max-items", type=int)
    p.add_argument("--root")
    p.set_defaults(func=_cmd_graph_export)


# ---------------------------------------------------------------------------------------------- train/evaluate
def _cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer, load_run_config
    from .train.commands import import_models, trackers_from_args
    from .train.distributed import DistributedEnv, train_distributed

    import_models(args)
    trackers = trackers_from_args(args)
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    config = load_run_config(args.config, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else config.default_run_dir()
    env = DistributedEnv.from_env()  # set by torchrun with --nproc_per_node > 1
    if env is not None:
        result = train_distributed(config, run_dir, env, resume=not args.no_resume, trackers=trackers)
        if env.rank != 0:
            return 0
        dataset_name, ranks = Path(config.data.dataset).name, f", {env.world_size} ranks"
    else:
        trainer = Trainer(config, run_dir, trackers=trackers)
        result = trainer.fit(resume=not args.no_resume, overwrite=args.overwrite)
        dataset_name, ranks = trainer.dataset.name, ""
    _print_metrics(f"{config.model_name} on {dataset_name} (seed {config.train.seed}{ranks}, best epoch "
                   f"{result.best_epoch} of {result.epochs_run}, selected on valid)", result.valid, result.test)
    if args.plots:
        from .viz import plot_run

        for path in plot_run(run_dir):
            print(f"plot: {path}")
    print(f"run directory: {run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval import activity_groups
    from .train import load_run
    from .train.commands import import_models

    import_models(args)
    trainer = load_run(args.run_dir, device=args.device)
    if args.protocol == "ctr":
        return _evaluate_ctr(trainer, args)
    valid, test = trainer.evaluate("valid"), trainer.evaluate("test")
    _print_metrics(f"{trainer.config.model_name} on {trainer.dataset.name} from {args.run_dir}",
                   valid.to_dict(), test.to_dict())
    print()
    print("test metrics per user-activity group")
    print(activity_groups(test, trainer.dataset.degrees("train")).to_string(index=False, float_format="%.4f"))
    if not args.no_per_user:
        print(f"per-user test metrics (for the paired tests of cikg.eval.stats): {trainer.write_per_user(test)}")
    return 0


def _evaluate_ctr(trainer, args: argparse.Namespace) -> int:
    import pandas as pd

    from .train.ctr import negatives_dir_of, run_ctr

    directory = Path(args.negatives_dir) if args.negatives_dir else negatives_dir_of(args.run_dir)
    rows = run_ctr(args.run_dir, directory, trainer=trainer)
    print(f"{trainer.config.model_name} on {trainer.dataset.name} from {args.run_dir}: CTR protocol on test "
          f"positives vs sampled unseen negatives (saved in {directory})")
    shown = pd.DataFrame(rows.values()).drop(columns="weights_sha256")
    print(shown.to_string(index=False, float_format="%.4f"))
    return 0


def _print_metrics(title: str, valid: dict, test: dict) -> None:
    import pandas as pd

    print(title)
    frame = pd.DataFrame({"valid": valid, "test": test})
    print(frame.to_string(float_format="%.4f"))


def _register_train(sub) -> None:
    from .train.commands import add_import_option, add_load_device_option, add_tracking_options

    p = sub.add_parser("train", **_parser_kwargs(
        "train a model from a YAML config with key=value overrides (resumes a killed run)",
        "cikg train experiments/dbbook2014/cikgrec.yaml", "cikg train experiments/dbbook2014/lightgcn.yaml train.seed=1",
        "cikg train - model.name=lightgcn data.dataset=synthetic train.epochs=5   # no file: defaults + overrides",
        "cikg train experiments/dbbook2014/cikgrec.yaml --device cuda",
        "cikg train experiments/dbbook2014/lightgcn.yaml --mlflow   # + MLflow file store ./mlruns",
        "cikg train - model.name=mymodel --import my_models   # a model of your own (docs/models.md)",
        "torchrun --standalone --nproc_per_node=2 -m cikg train experiments/dbbook2014/lightgcn.yaml  # DDP"))
    p.add_argument("config", help="a YAML run config, or - for the defaults")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=5e-4")
    p.add_argument("--run-dir", help="run directory (default runs/<model>-<dataset>-seed<seed>)")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run directory")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run's files in the run directory and "
                                                           "start afresh")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (same as train.device=...; under torchrun, cuda "
                                    "gives each rank the GPU LOCAL_RANK)")
    p.add_argument("--plots", action="store_true", help="write loss and metric plots as PNG into the run directory")
    add_tracking_options(p)
    add_import_option(p)
    p.set_defaults(func=lambda a: _cmd_train(_dash_config(a)))
    p = sub.add_parser("evaluate", **_parser_kwargs("evaluate a run's selected model on valid and test, with user groups",
                                                    "cikg evaluate runs/cikgrec-dbbook2014-seed2024",
                                                    "cikg evaluate runs/cikgrec-dbbook2014-seed2024 --protocol ctr"))
    p.add_argument("run_dir")
    p.add_argument("--protocol", choices=("topk", "ctr"), default="topk",
                   help="topk: full-ranking Recall/NDCG@K; ctr: AUC, GAUC, Logloss at 1:1 and 1:4 sampled negatives")
    p.add_argument("--negatives-dir", help="where the CTR negatives are saved and reused (default: "
                                           "ctr_negatives/ beside the run directory)")
    p.add_argument("--no-per-user", action="store_true",
                   help="topk: do not write per_user_test.csv.gz (every test user's metrics) into the run directory")
    add_load_device_option(p)
    add_import_option(p)
    p.set_defaults(func=_cmd_evaluate)


def _dash_config(args: argparse.Namespace) -> argparse.Namespace:
    if args.config == "-":
        args.config = None
    elif "=" in args.config:  # `cikg train key=value ...` with no file
        args.overrides = [args.config, *args.overrides]
        args.config = None
    return args


# ---------------------------------------------------------------------------------------------- demo/bench
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, n_users=args.users, n_items=args.items, epochs=args.epochs, seed=args.seed)
    return 0


def _register_demo(sub) -> None:
    p = sub.add_parser("demo", **_parser_kwargs(
        "the whole pipeline on synthetic data: data, interests, clustering, CIKG, CIKGRec vs LightGCN, report",
        "cikg demo", "cikg demo --out runs/demo --epochs 10"))
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--users", type=int, default=1500)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


def _cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(p.stem.removeprefix("bench_") for p in root.glob("bench_*.py"))
    if args.name not in scripts:
        raise CikgError(f"no benchmark {args.name!r}; available: {', '.join(scripts) or 'none (benchmarks/ missing)'}")
    sys.argv = [str(root / f"bench_{args.name}.py"), *args.args]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


def _register_bench(sub) -> None:
    p = sub.add_parser("bench", **_parser_kwargs("run one of the benchmark scripts in benchmarks/",
                                                 "cikg bench propagation", "cikg bench load -- --repeat 1",
                                                 "cikg bench eval -- --skip-dense --threads 1"))
    p.add_argument("name")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench)


# ---------------------------------------------------------------------------------------------- assembly
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cikg", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cikg: Collaborative Interest Knowledge Graphs (LLM interests + item KG + graph recommenders).",
        epilog=textwrap.dedent("""\
            examples:
              cikg demo                                   the whole pipeline on synthetic data
              cikg data stats dbbook2014                  a real dataset and its CIKG
              cikg train experiments/dbbook2014/cikgrec.yaml
            exit codes: 0 success, 1 a run that produced nothing usable (e.g. no LLM answer parsed),
              2 a user-side error (bad path, dataset, config key, unreachable server; one line on stderr,
              --debug for the traceback), 130 interrupted (re-running resumes)
            docs: README.md and docs/ (cli.md, data.md, tutorial.md, llm.md, architecture.md)"""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_demo(sub)
    _register_data(sub)
    _register_interests(sub)
    _register_graph(sub)
    _register_train(sub)
    # the other layers register their own subcommands
    for register in (llm_commands.register_llm, augment_commands.register, serving_commands.register,
                     train_commands.register):
        register(sub)
    _register_bench(sub)
    return parser


def _register_interests(sub) -> None:
    interests = sub.add_parser("interests", **_parser_kwargs(
        "infer user interests with an LLM and cluster them",
        "cikg interests infer dbbook2014 --backend kg-profile --users 200 -o runs/db-int   # offline, not an LLM",
        "cikg interests infer book-crossing --base-url http://127.0.0.1:8080/v1 --model smollm2 -o runs/bx",
        "cikg interests cluster runs/db-int --search 20:80 --kappa-step 20",
        "cikg interests report runs/db-int",
        "cikg interests sweep runs/db-int --kappa 50:400:50 --epochs 5",
        "cikg interests perturb dbbook2014 -o runs/db-noisy --mode replace --rate 0.2 --seed 0"))
    isub = interests.add_subparsers(dest="interests_command", required=True,
                                    metavar="{infer,cluster,report,sweep,perturb}")
    for register in (llm_commands.register_infer, interests_commands.register_cluster,
                     interests_commands.register_report, interests_commands.register_sweep,
                     interests_commands.register_perturb):
        register(isub)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:
        logging.getLogger("cikg").setLevel(logging.INFO)
        logging.getLogger("cikg.data.io").setLevel(logging.ERROR)  # load warnings are printed by the commands


def _parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """Parse ``argv``, letting ``key=value`` overrides follow options (``cikg train CONFIG --run-dir D k=v``):
    argparse ends a ``nargs="*"`` positional at the first option, so overrides after one come back unparsed."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in token and not token.startswith("-") for token in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = _parse(parser, list(argv) if argv is not None else sys.argv[1:])
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except CikgError as err:
        if args.debug:
            raise
        print(f"cikg: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the OS refuses that no reader turned into a CikgError: one line all the same
        if args.debug:
            raise
        print(f"cikg: error: {describe_path_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cikg: interrupted (a re-run resumes from the last checkpoint / cache)", file=sys.stderr)
        return 130


__all__: List[str] = ["build_parser", "main"]
