"""``cikg interests cluster``: cluster the phrases in a run directory into interest nodes.

Handlers import their layer when they run (start-up time: see ``cikg.cli``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Tuple

from .._lock import holding_lock
from ..embed import EmbeddingKind
from ..errors import CikgError, ConfigError, DatasetError
from ..llm.base import RAW_FILE
from .choices import ITEM_TEXTS, ClusterMethod, PerturbMode

log = logging.getLogger(__name__)

CACHE_FILE = "embedding_cache.sqlite"

_EPILOG = """examples:
  cikg interests cluster runs/dbbook --kappa 400
  cikg interests cluster runs/dbbook --search 50:400 --kappa-step 50 --method minibatch
  cikg interests cluster runs/bx --kappa 250 --embedding tfidf --dataset book-crossing

Reads DIR/user_interests_raw.jsonl (written by `cikg interests infer`) and the dataset named in
DIR/meta.json (key "dataset": a name under $CIKG_DATA or a path) or else in DIR/llm_summary.json;
--dataset overrides both. Writes into DIR:
user_interest_clustered.txt (dataset format; interest id = n_entities + dense id), interest_list.txt,
interests.parquet, user_interests.parquet, interests_summary.json, silhouette.csv (when searched), and the
report of `cikg interests report` (report.json, report.md, PNGs). When no cluster is kept it writes nothing
and exits 2 naming the cause (--max-user-fraction / --min-cap-users, --min-users, --kappa); when the kept
ones reach fewer than half of the users with phrases it warns.
Sentence vectors are cached in DIR/embedding_cache.sqlite (or --cache), so re-runs embed only new phrases.
"""


def register_cluster(interests_subparsers: Any) -> None:
    """Add ``cluster`` to the ``cikg interests`` subparsers."""
    p = interests_subparsers.add_parser(
        "cluster",
        help="embed and cluster interest phrases into interest nodes",
        description="Embed the LLM-inferred interest phrases of a run directory, cluster them, drop "
        "singleton and too-popular clusters, and write user-interest edges.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", type=Path, metavar="DIR", help=f"run directory holding {RAW_FILE}")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--kappa", type=int, help="number of clusters")
    which.add_argument(
        "--search", type=_kappa_range, metavar="A:B", help="search kappa in A..B (inclusive) by silhouette"
    )
    p.add_argument("--kappa-step", type=int, default=1, help="step of the --search range (default 1)")
    p.add_argument(
        "--method",
        choices=[m.value for m in ClusterMethod],
        default=ClusterMethod.KMEANS.value,
        help="clustering algorithm (default kmeans; auto: minibatch above 20k phrases)",
    )
    p.add_argument(
        "--embedding",
        choices=[e.value for e in EmbeddingKind],
        default=EmbeddingKind.MINILM.value,
        help="phrase vectors: the MiniLM sentence model (default) or TF-IDF 1-2-grams",
    )
    p.add_argument("--seed", type=int, default=2024, help="seed of clustering and silhouette sample")
    add_threshold_options(p)
    p.add_argument("--silhouette-sample", type=int, default=5000, help="phrases sampled per silhouette score")
    p.add_argument(
        "--threads",
        type=int,
        help="cap torch/OpenMP/BLAS threads while embedding and clustering (1 on a busy machine)",
    )
    p.add_argument("--dataset", help="dataset name or path (overrides DIR/meta.json)")
    p.add_argument("--cache", type=Path, help=f"embedding cache file (default DIR/{CACHE_FILE})")
    p.add_argument("--batch-size", type=int, default=256, help="phrases per sentence-model batch")
    p.add_argument("--device", default="cpu", help="torch device of the sentence model (default cpu)")
    p.set_defaults(func=cluster_command)


def add_threshold_options(p: Any) -> None:
    """``--min-users``, ``--max-user-fraction``, ``--min-cap-users`` (the kept-cluster thresholds)."""
    p.add_argument("--min-users", type=int, default=2, help="drop clusters held by fewer users (default 2)")
    p.add_argument(
        "--max-user-fraction",
        type=float,
        default=0.2,
        help="drop clusters held by at least this share of users (default 0.2; the popularity cap)",
    )
    p.add_argument(
        "--min-cap-users",
        type=int,
        default=10,
        help="floor of the popularity cap in users: a cluster held by fewer is never too popular (default 10)",
    )


def add_item_text_option(p: Any) -> None:
    """``--item-text title|title+kg``: what the predictive score embeds per item."""
    p.add_argument("--item-text", choices=ITEM_TEXTS, default="title",
                   help="item text of the predictive score: the title (default) or the title and the names of "
                   "its KG neighbours")


def _kappa_range(text: str) -> Tuple[int, int]:
    try:
        low, high = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B with integers A <= B, got {text!r}") from None
    return low, high


def dataset_reference(directory: Path, override: Optional[str]) -> Optional[str]:
    """The dataset of a run directory: ``override``; else ``meta.json``'s ``dataset_path`` or ``dataset``;
    else the ``dataset`` name that ``cikg interests infer`` recorded in ``llm_summary.json``."""
    from ..llm.pipeline import SUMMARY_FILE

    if override:
        return override
    for name in ("meta.json", SUMMARY_FILE):
        meta = _read_json_object(directory / name)
        for key in ("dataset_path", "dataset"):
            value = meta.get(key)
            if isinstance(value, str) and value:
                if key == "dataset_path" and not Path(value).is_absolute():
                    return str(directory / value)
                return value
    return None


def _read_json_object(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"not valid JSON ({err.msg})", path, err.lineno) from None
    if not isinstance(meta, dict):
        raise DatasetError("expected a JSON object", path)
    return meta


def _load_reference(reference: str, override: Optional[str]) -> Any:
    from ..data import load_dataset

    try:
        return load_dataset(reference)
    except DatasetError as err:
        if override:
            raise
        raise DatasetError(
            f"{err} (the dataset recorded in the run directory; pass --dataset NAME_OR_PATH)"
        ) from None


@holding_lock(lambda args: args.dir if os.path.isdir(args.dir) else None)  # a missing DIR is reported below
def cluster_command(args: argparse.Namespace) -> int:
    """Handler of ``cikg interests cluster``; prints a summary, returns 0."""
    from ..embed import Encoder
    from .cluster import ClusterConfig, coverage_problem
    from .io import save_interests
    from .pipeline import structure_interests
    from .report import report_and_write

    directory: Path = args.dir
    if not directory.is_dir():
        raise DatasetError("run directory not found", directory)
    config = ClusterConfig(
        method=args.method,
        kappa=args.kappa,
        kappa_range=args.search,
        kappa_step=args.kappa_step,
        seed=args.seed,
        min_users=args.min_users,
        max_user_fraction=args.max_user_fraction,
        min_cap_users=args.min_cap_users,
        silhouette_sample=args.silhouette_sample,
        embedding=args.embedding,
        n_threads=args.threads,
    )
    reference = dataset_reference(directory, args.dataset)
    dataset = _load_reference(reference, args.dataset) if reference else None
    if dataset is None:
        log.warning(
            "no dataset given (--dataset or meta.json): interest ids start at 0, not after the entities"
        )
    encoder = None
    if config.embedding is EmbeddingKind.MINILM:
        if args.batch_size < 1:
            raise ConfigError(f"expected a positive integer, got {args.batch_size}", "batch_size")
        encoder = Encoder(
            args.cache or directory / CACHE_FILE,
            batch_size=args.batch_size,
            device=args.device,
            n_threads=args.threads,
        )
    result = structure_interests(directory / RAW_FILE, config, dataset=dataset, encoder=encoder, warn=False)
    problem = coverage_problem(result.clustering)
    if not result.clustering.n_interests:  # refuse to write an interest file without edges
        raise CikgError(f"{directory}: {problem}; nothing written")
    if problem:
        log.warning("%s", problem)
    paths = save_interests(result.clustering, directory)
    print(format_summary(result.clustering.summary(), result.clustering, reference))
    report, report_paths = report_and_write(dataset, directory, encoder, score=dataset is not None)
    for line in report.lines():
        print(f"  {line}")
    for _, path in sorted({**paths, **report_paths}.items()):
        print(f"  wrote {path}")
    return 0


def format_summary(summary: dict, clustering: Any, dataset: Optional[str]) -> str:
    """A few readable lines about a fit."""
    lines = [
        f"{clustering!r}",
        f"  dataset: {dataset or '(none: interest ids start at 0)'}; id offset {summary['id_offset']}",
        f"  {summary['phrases']} distinct phrases of {summary['users']} users -> kappa={summary['kappa']} "
        f"clusters -> {summary['interests']} interests kept "
        f"({summary['dropped_too_few_users']} held by < {summary['min_users']} users, "
        f"{summary['dropped_too_many_users']} by >= {summary['popularity_cap_users']:g} users dropped: the "
        f"popularity cap max({summary['max_user_fraction']:g} x {summary['users']}, {summary['min_cap_users']}))",
        f"  {summary['user_interest_edges']} user-interest edges; "
        f"{summary['users_with_interest']} users hold an interest",
    ]
    if clustering.silhouette is not None:
        curve = ", ".join(f"{k}:{s:.3f}" for k, s in clustering.silhouette.itertuples(index=False))
        lines.append(f"  silhouette by kappa: {curve}")
    top = clustering.interests().head(10)
    if len(top):
        lines.append("  most held: " + "; ".join(f"{r.label} ({r.n_users})" for r in top.itertuples()))
    return "\n".join(lines)


_REPORT_EPILOG = """examples:
  cikg interests report runs/db-int
  cikg interests report runs/bx --dataset book-crossing --k 50 --threads 1
  cikg interests report runs/bx --no-score

Reads DIR/user_interests_raw.jsonl and, when clustered, DIR/interests.parquet, user_interests.parquet and
interests_summary.json; writes DIR/report.json, DIR/report.md and report_*.png. The predictive score ranks
each user's validation items among the items it has not seen in train by the similarity of its interests
(phrases, or kept-cluster centroids; mean or max) to the item titles (all-MiniLM-L6-v2), as AUC and
Recall@K beside a popularity baseline; test items are never used. Item and phrase vectors are cached in
DIR/embedding_cache.sqlite (or --cache).
"""


def register_report(interests_subparsers: Any) -> None:
    """Add ``report`` to the ``cikg interests`` subparsers."""
    p = interests_subparsers.add_parser(
        "report",
        help="judge an interest run before training on it: counts, cluster sizes, a predictive score",
        description="Report on the interests of a run directory: answers parsed, phrases per user, clusters "
        "kept and dropped, and how well the interests rank each user's validation items (AUC, Recall@K) "
        "against a popularity baseline.",
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", type=Path, metavar="DIR", help=f"run directory holding {RAW_FILE}")
    p.add_argument("--dataset", help="dataset name or path (overrides DIR/meta.json, DIR/llm_summary.json)")
    p.add_argument("--k", type=int, default=20, help="Recall cut-off (default 20)")
    p.add_argument("--no-score", action="store_true", help="counts only: no dataset, no sentence model")
    add_item_text_option(p)
    p.add_argument("--cache", type=Path, help=f"embedding cache file (default DIR/{CACHE_FILE})")
    p.add_argument("--threads", type=int, help="torch threads while embedding (1 on a busy machine)")
    p.add_argument("--device", default="cpu", help="torch device of the sentence model (default cpu)")
    p.set_defaults(func=report_command)


@holding_lock(lambda args: args.dir if os.path.isdir(args.dir) else None)
def report_command(args: argparse.Namespace) -> int:
    """Handler of ``cikg interests report``; prints the report's lines and the files written."""
    from ..embed import Encoder
    from ..embed.encoder import _torch_threads
    from .report import report_and_write

    directory: Path = args.dir
    if not directory.is_dir():
        raise DatasetError("run directory not found", directory)
    if args.k < 1:
        raise ConfigError(f"expected a positive integer, got {args.k}", "k")
    dataset, encoder = None, None
    if not args.no_score:
        reference = dataset_reference(directory, args.dataset)
        if not reference:
            raise DatasetError("no dataset recorded in the run directory: pass --dataset NAME_OR_PATH "
                               "(or --no-score)", directory)
        dataset = _load_reference(reference, args.dataset)
        encoder = Encoder(args.cache or directory / CACHE_FILE, device=args.device, n_threads=args.threads)
    with _torch_threads(args.threads):
        report, paths = report_and_write(dataset, directory, encoder, score=not args.no_score, k=args.k,
                                         item_text=args.item_text)
    print("\n".join(report.lines()))
    for _, path in sorted(paths.items()):
        print(f"  wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------ sweep
_SWEEP_EPILOG = """examples:
  cikg interests sweep runs/db-int --kappa 50:400:50
  cikg interests sweep runs/db-int --kappa 20,40 --epochs 2 --device cuda
  cikg interests sweep runs/bx --kappa 100:300:100 --dataset book-crossing --out runs/bx-sweep

Reads DIR/user_interests_raw.jsonl and the dataset of DIR (as `cikg interests cluster` does); writes into
--out (default DIR/sweep): sweep.json (the ledger: a re-run skips the kappas done), sweep.csv, sweep.md,
sweep.png and one run directory kappa-K/ per kappa. Valid Recall@K of a short CIKGRec beside the
predictive score of `cikg interests report` per kappa; test items are never used.
"""


def register_sweep(interests_subparsers: Any) -> None:
    """Add ``sweep`` to the ``cikg interests`` subparsers."""
    p = interests_subparsers.add_parser(
        "sweep", help="cluster at several kappas, train a short CIKGRec on each, compare with the score",
        description="For each kappa: cluster the run's phrases, train a short CIKGRec, and report valid "
        "Recall@K and the predictive score, as a table and a plot (resumable).",
        epilog=_SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, metavar="DIR", help=f"run directory holding {RAW_FILE}")
    p.add_argument("--kappa", required=True, help="A:B:STEP (inclusive), A:B or A,B,C")
    p.add_argument("--out", type=Path, help="output directory (default DIR/sweep)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs per kappa (default 5)")
    p.add_argument("--k", type=int, default=20, help="Recall cut-off (default 20)")
    p.add_argument("--seed", type=int, default=2024, help="seed of clustering and training (default 2024)")
    p.add_argument("--batch-size", type=int, default=1024, help="BPR batch size (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--no-transe", action="store_true", help="skip CIKGRec's TransE step (faster)")
    p.add_argument("--method", choices=[m.value for m in ClusterMethod], default=ClusterMethod.KMEANS.value,
                   help="clustering algorithm (default kmeans)")
    p.add_argument("--embedding", choices=[e.value for e in EmbeddingKind], default=EmbeddingKind.MINILM.value,
                   help="phrase vectors: minilm (default) or tfidf")
    add_threshold_options(p)
    add_item_text_option(p)
    p.add_argument("--dataset", help="dataset name or path (overrides DIR/meta.json)")
    p.add_argument("--cache", type=Path, help=f"embedding cache file (default DIR/{CACHE_FILE})")
    p.add_argument("--device", default="cpu", help="torch device of training and the sentence model")
    p.add_argument("--threads", type=int, help="cap torch/OpenMP threads (1 on a busy machine)")
    p.set_defaults(func=sweep_command)


@holding_lock(lambda args: args.dir if os.path.isdir(args.dir) else None)
def sweep_command(args: argparse.Namespace) -> int:
    """Handler of ``cikg interests sweep``; prints the table, returns 0."""
    from ..embed import Encoder
    from ..models import CIKGRecConfig
    from ..train import TrainConfig
    from ..train.sweep import LEDGER, PLOT, TABLE_CSV, TABLE_MD, parse_kappas, sweep_kappa
    from .cluster import ClusterConfig
    from .io import read_raw_interests

    directory: Path = args.dir
    if not directory.is_dir():
        raise DatasetError("run directory not found", directory)
    kappas = parse_kappas(args.kappa)
    for name in ("epochs", "k", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"expected a positive integer, got {getattr(args, name)}", name)
    reference = dataset_reference(directory, args.dataset)
    if not reference:
        raise DatasetError("no dataset recorded in the run directory: pass --dataset NAME_OR_PATH", directory)
    dataset = _load_reference(reference, args.dataset)
    cluster = ClusterConfig(method=args.method, kappa=2, seed=args.seed, min_users=args.min_users,
                            max_user_fraction=args.max_user_fraction, min_cap_users=args.min_cap_users,
                            embedding=args.embedding, n_threads=args.threads)
    train = TrainConfig(epochs=args.epochs, patience=0, ks=(args.k,), select=(f"recall@{args.k}",), seed=args.seed,
                        batch_size=args.batch_size, lr=args.lr, device=args.device, threads=args.threads)
    model = CIKGRecConfig(total_epoch=max(args.epochs, 2), use_transe=not args.no_transe)
    encoder = Encoder(args.cache or directory / CACHE_FILE, device=args.device, n_threads=args.threads)
    out = args.out or directory / "sweep"
    table = sweep_kappa(dataset, read_raw_interests(directory / RAW_FILE), kappas, out, cluster=cluster,
                        model=model, train=train, encoder=encoder, k=args.k, item_text=args.item_text)
    print(table.drop(columns=["reason"], errors="ignore").to_string(index=False, float_format="%.4f"))
    for reason in (table["reason"].dropna() if "reason" in table else []):
        print(f"note: {reason}")
    print(f"wrote {out / TABLE_CSV}, {out / TABLE_MD}, {out / PLOT} (ledger {out / LEDGER})")
    return 0


_PERTURB_EPILOG = """examples:
  cikg interests perturb dbbook2014 -o runs/db-noisy --mode replace --rate 0.2 --seed 0
  cikg interests perturb runs/db-int -o runs/db-int-drop --mode drop --rate 0.4
  cikg train experiments/dbbook2014/cikgrec.yaml data.interests=runs/db-noisy

SRC is a user_interest_clustered.txt or a directory holding one: a dataset directory or name under
$CIKG_DATA, or a `cikg interests cluster` directory (its dataset from meta.json, as for cluster; --dataset
overrides). With a dataset, every user and interest node may be drawn; without one, the users 0..max of the
file and the interests of the file and its interest_list.txt. Writes into OUT: user_interest_clustered.txt,
interest_list.txt (the whole vocabulary, labels if SRC has them), perturb.json (mode, rate, seed, counts,
SRC's SHA-256).
"""


def register_perturb(interests_subparsers: Any) -> None:
    """Add ``perturb`` to the ``cikg interests`` subparsers."""
    p = interests_subparsers.add_parser(
        "perturb",
        help="drop, replace or add a share of the user-interest edges (seeded noise)",
        description="Write a noisy copy of clustered interests: drop, rewire to a random other interest, or "
        "add round(rate x E) of the E user-interest edges (no duplicates, id spaces unchanged).",
        epilog=_PERTURB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="user_interest_clustered.txt, its directory or a dataset name")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--mode", choices=[m.value for m in PerturbMode], required=True, help="what to do to edges")
    p.add_argument("--rate", type=float, required=True, help="share of the edges, in [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--dataset", help="dataset name or path (overrides the one SRC's directory records)")
    p.set_defaults(func=perturb_command)


def perturb_command(args: argparse.Namespace) -> int:
    """Handler of ``cikg interests perturb``; prints the counts, returns 0."""
    import numpy as np

    from ..data import load_interests
    from ..data.io import _interest_vocabulary, resolve_dataset_path
    from .io import CLUSTERED_FILE, read_clustered
    from .perturb import check_rate, perturb_interests, write_perturbation

    try:
        check_rate(args.rate)
    except ConfigError:
        raise ConfigError(f"--rate must be a share of the edges in [0, 1], got {args.rate:g}") from None
    src = Path(args.src)
    if not src.exists() and len(src.parts) == 1:  # a dataset name under $CIKG_DATA
        src = resolve_dataset_path(src)
    directory = src if src.is_dir() else src.parent
    file = directory / CLUSTERED_FILE if src.is_dir() else src
    if not file.is_file():
        raise DatasetError("clustered interest file not found", file)
    if args.out.resolve() == directory.resolve():
        raise DatasetError("the output directory holds the source; choose another -o", args.out)
    reference = dataset_reference(directory, args.dataset)
    if reference is None and (directory / "train.txt").is_file():
        reference = str(directory)  # SRC is a dataset directory
    if reference is not None:
        dataset = load_interests(_load_reference(reference, args.dataset), file)
        result = perturb_interests(dataset, args.mode, args.rate, args.seed)
        labels = dataset.interest_labels
    else:
        log.warning("no dataset (--dataset or meta.json): users 0..max of %s, interests of the file", file)
        table = np.unique(read_clustered(file), axis=0)  # duplicate lines count once
        vocabulary, labels = _interest_vocabulary(directory, table[:, 1])
        result = perturb_interests(table, args.mode, args.rate, args.seed, interest_ids=vocabulary)
    paths = write_perturbation(result, args.out, file, labels)
    c = result.counts
    if not c["edges_after"]:
        log.warning("no user-interest edge is left: a CIKG cannot be built from %s", args.out)
    print(f"{args.mode} {args.rate:g} (seed {args.seed}) of {file}: {c['edges_before']} -> {c['edges_after']} "
          f"edges ({c['dropped']} dropped, {c['replaced']} replaced, {c['added']} added); users with an interest "
          f"{c['users_with_interest_before']} -> {c['users_with_interest_after']}")
    for _, path in sorted(paths.items()):
        print(f"  wrote {path}")
    return 0
