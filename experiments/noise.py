"""Noise robustness of CIKGRec (issue 15 item 7): Recall@20 against the share of noisy user-interest edges.

    python experiments/noise.py dbbook2014 --set train.epochs=1        # a try: runs/noise/dbbook2014/noise.md
    python experiments/noise.py dbbook2014 --set train.epochs=60 train.lr=0.005 train.threads=1 --publish
    python experiments/noise.py dbbook2014 --rates 0 0.4 --variants uir no-uir --seeds 0 --out /work/exp/noise
    python experiments/noise.py dbbook2014 --set ... --publish --shard 1/2 &   # two processes share the sweep
    python experiments/noise.py dbbook2014 --set ... --publish --shard 2/2 &

The paper motivates the user-interest reconstruction (UIR, a masked autoencoder) by robustness to noisy LLM
interests. Each run trains CIKGRec (``experiments/<dataset>/cikgrec.yaml``) on the authors' interests perturbed by
``cikg.interests.perturb`` (``--mode``, default ``replace``: a share of the edges rewired to a random interest
the user does not hold) at each ``--rates`` value, with the noise drawn with the run's seed (each seed sees
its own noisy interests); rate 0 is the authors' file itself (no ``data.interests`` override), the same run as
the CIKGRec row of ``results.md``. Variants (``--variants``):

- ``uir``: CIKGRec, UIR on, exponential mask-rate schedule (the published config, ``model.increase_type=exp``);
- ``uir-linear``: UIR on, linear mask-rate schedule (``model.increase_type=linear``);
- ``no-uir``: UIR off (``model.use_uir=false``; the schedule only drives UIR's masks).

Runs live in ``<out>/<mode>-<rate>/<dataset>/<variant>-seed<k>`` (``clean`` for rate 0; resumed when re-run;
the noisy interests in ``<out>/<dataset>/interests/``). Every finished run lands in the ledger ``noise.json`` (one record per variant,
mode, rate and seed, with its settings and the perturbation's counts); a re-run skips the runs it holds and
refuses, before training, a run of other settings (``--replace`` retrains it). Several processes may share a
ledger (each record is merged under a file lock): ``--shard K/N`` gives process K of N every N-th (seed, rate)
of the sweep, seed by seed, so that the seeds finished first are complete across rates. The page ``noise.md`` (rendered again as each run lands, and by ``--render-only``; mean ± the 95% interval's
half-width over
the seeds of test Recall@20 and of the sparse users' (``train<=10``) Recall@20, per variant and rate) and the plot
``noise.png`` are rendered from all the ledger's records.

The ledger and page are ``<out>/<dataset>/`` unless ``--publish`` is given: only then are
``experiments/<dataset>/noise.md`` (``.json``, ``.png``) written, and only for the full protocol (rates 0 0.2
0.4 0.6, the three variants, seeds 0 1 2, the budget of ``results.md``: ``--set train.epochs=60
train.lr=0.005``); ``--publish`` refuses anything less before training.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (experiments/run.py: how a run is trained, read back and its settings)

from cikg._io import write_text_atomic  # noqa: E402
from cikg.eval.stats import mean_ci  # noqa: E402
from cikg.interests.perturb import PerturbMode, perturb_interests, write_perturbation  # noqa: E402
from cikg.train import load_run_config  # noqa: E402
from cikg.train.trainer import load_run_dataset  # noqa: E402

HERE = base.HERE
VARIANTS = {"uir": ("CIKGRec (UIR, exp schedule)", []),
            "uir-linear": ("CIKGRec (UIR, linear schedule)", ["model.increase_type=linear"]),
            "no-uir": ("CIKGRec w/o UIR", ["model.use_uir=false"])}
FULL_RATES = [0.0, 0.2, 0.4, 0.6]
FULL_SEEDS = [0, 1, 2]
PROTOCOL = base.PROTOCOL
SPARSE = "train<=10"
METRICS = ["recall@20", "ndcg@20", "recall@50", "ndcg@50"]


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["dbbook2014", "book-crossing", "ml1m"])
    parser.add_argument("--mode", choices=[m.value for m in PerturbMode], default="replace")
    parser.add_argument("--rates", nargs="+", type=float, default=FULL_RATES)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=FULL_SEEDS)
    parser.add_argument("--set", nargs="*", default=[], help="overrides applied to every run (key=value)")
    parser.add_argument("--out", default="runs/noise")
    parser.add_argument("--publish", action="store_true",
                        help="write experiments/<dataset>/noise.md (.json, .png); full protocol only")
    parser.add_argument("--replace", action="store_true", help="retrain ledger runs of other settings")
    parser.add_argument("--render-only", action="store_true",
                        help="train nothing: render the page and plot from the ledger as it is")
    parser.add_argument("--shard", type=shard_of, default=(1, 1), metavar="K/N",
                        help="run only the K-th of every N (seed, rate) of the sweep (N processes share it)")
    args = parser.parse_args(argv)
    bad = [r for r in args.rates if not 0.0 <= r <= 1.0]
    if bad:
        parser.error(f"--rates must lie in [0, 1], got {bad}")
    return args


def shard_of(text: str) -> tuple:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 1/2, got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected 1 <= K <= N, got {text!r}")
    return k, n


def sweep_cells(args: argparse.Namespace) -> list:
    """The ``(seed, rate)`` cells this process runs: seed by seed, every N-th one from the K-th for ``--shard K/N``
    (each cell's noisy interests are then drawn by one process only)."""
    k, n = args.shard
    cells = [(seed, rate) for seed in args.seeds for rate in args.rates]
    return cells[k - 1::n]


def run_key(variant: str, mode: str, rate: float, seed: int) -> str:
    """The ledger key of one run; rate 0 is the same run whatever the mode."""
    return f"{variant}|{mode if rate else 'none'}|{rate:g}|seed{seed}"


def settings_of(args: argparse.Namespace, variant: str) -> dict:
    """The resolved config of a variant's runs without run-only keys (the noise rate and seed are the axes)."""
    return base.row_settings(args.dataset, "cikgrec", [*args.set, *VARIANTS[variant][1]])


def protocol_problems(args: argparse.Namespace) -> list:
    """Why this sweep is not the full protocol ``--publish`` requires (empty: it is)."""
    problems = []
    if not set(FULL_RATES) <= set(args.rates):
        problems.append(f"rates {args.rates} lack {sorted(set(FULL_RATES) - set(args.rates))}")
    if not set(FULL_SEEDS) <= set(args.seeds):
        problems.append(f"seeds {args.seeds} lack {sorted(set(FULL_SEEDS) - set(args.seeds))}")
    if set(args.variants) != set(VARIANTS):
        problems.append(f"variants {args.variants} lack {sorted(set(VARIANTS) - set(args.variants))}")
    return problems + base.budget_problem(settings_of(args, "uir"), args.dataset)


def noisy_interests(args: argparse.Namespace, out: Path, rate: float, seed: int) -> tuple:
    """``(overrides, perturbation record)``: rate 0 keeps the dataset's own interests; otherwise they are
    perturbed with ``seed`` into ``out/interests/<mode>-<rate>-seed<k>`` and passed as ``data.interests``."""
    if not rate:
        return [], None
    config = load_run_config(HERE / args.dataset / "cikgrec.yaml", args.set)
    dataset = load_run_dataset(config)
    folder = (out / "interests" / f"{args.mode}-{rate:g}-seed{seed}").resolve()
    result = perturb_interests(dataset, args.mode, rate, seed)
    source = Path(str(dataset.meta.get("source", ""))) / "user_interest_clustered.txt"
    write_perturbation(result, folder, source if source.is_file() else None, dataset.interest_labels)
    return [f"data.interests={folder}"], json.loads((folder / "perturb.json").read_text())


def ledger_conflicts(ledger: dict, args: argparse.Namespace, settings: dict) -> list:
    """The ledger's runs of this sweep (variant, mode, rate, seed) recorded with other settings, each with
    the keys that differ."""
    problems = []
    for key, record in ledger.items():
        if record["variant"] not in settings or record["rate"] not in args.rates or record["seed"] not in args.seeds:
            continue
        if record["mode"] not in (args.mode, "none"):
            continue
        differ = base.settings_diff(record["settings"], settings[record["variant"]])
        if differ:
            problems.append(f"{key}: {differ}")
    return problems


def record_of(metrics: dict, *, variant: str, mode: str, rate: float, seed: int, settings: dict,
              perturbation, command: str) -> dict:
    """One ledger record from :func:`run.run_one`'s metrics."""
    groups = pd.DataFrame(metrics["groups"]).set_index("group")
    header = {g: base.group_header(g, groups.loc[g]) for g in groups.index}
    return {"variant": variant, "label": VARIANTS[variant][0], "mode": mode if rate else "none", "rate": rate,
            "seed": seed, "test": {m: metrics["test"][m] for m in METRICS}, "best_epoch": metrics["best_epoch"],
            "minutes": metrics["minutes"], "split": str(metrics["split"]), "hardware": metrics.get("hardware"),
            "groups": {m: {header[g]: float(groups.loc[g, m]) for g in groups.index} for m in ("recall@20", "ndcg@20")},
            "sparse_recall@20": float(groups.loc[SPARSE, "recall@20"]), "perturbation": perturbation,
            "settings": settings, "command": command}


def summary_frame(ledger: dict, mode: str) -> pd.DataFrame:
    """One row per (variant, rate) of ``mode`` (rate-0 runs included): mean, the half-width of the 95% Student-t
    interval (0 for one seed) and the seeds."""
    rows = [{"variant": r["variant"], "label": r["label"], "rate": r["rate"], "seed": r["seed"],
             "recall@20": r["test"]["recall@20"], "ndcg@20": r["test"]["ndcg@20"],
             "sparse_recall@20": r["sparse_recall@20"], "best_epoch": r["best_epoch"], "minutes": r["minutes"]}
            for r in ledger.values() if r["mode"] in (mode, "none")]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    agg = frame.groupby(["variant", "label", "rate"]).agg(
        recall=("recall@20", "mean"), recall_hw=("recall@20", half_width),
        ndcg=("ndcg@20", "mean"), ndcg_hw=("ndcg@20", half_width), sparse=("sparse_recall@20", "mean"),
        sparse_hw=("sparse_recall@20", half_width), seeds=("seed", lambda s: sorted(s)),
        epochs=("best_epoch", list), minutes=("minutes", "sum"))
    return agg.reset_index()


def half_width(values: pd.Series) -> float:
    """The half-width of the 95% Student-t interval of the mean of ``values`` (0 for a single value)."""
    return mean_ci(list(values)).half_width or 0.0


def _cells(frame: pd.DataFrame, mean: str, std: str) -> pd.DataFrame:
    order = [VARIANTS[v][0] for v in VARIANTS if VARIANTS[v][0] in set(frame["label"])]
    cell = frame.apply(lambda r: f"{r[mean]:.4f}" + (f" ± {r[std]:.4f}" if len(r["seeds"]) > 1 else ""), axis=1)
    table = frame.assign(cell=cell).pivot(index="label", columns="rate", values="cell").reindex(order)
    table.columns = [f"{c:.0%} noisy" for c in table.columns]
    table.index.name = None
    return table.fillna("")


def seed_drops(ledger: dict, mode: str, metric: str) -> pd.DataFrame:
    """Per (variant, seed): what the top noise rate that seed ran costs, ``value at 0% - value at that rate``
    (``metric``: ``recall@20`` or ``sparse_recall@20``); the variants of one (rate, seed) share their noisy
    interests, so drops pair by seed."""
    rows = [{"variant": r["variant"], "rate": r["rate"], "seed": r["seed"],
             "value": r["sparse_recall@20"] if metric == "sparse_recall@20" else r["test"][metric]}
            for r in ledger.values() if r["mode"] in (mode, "none")]
    frame = pd.DataFrame(rows)
    if frame.empty or frame["rate"].nunique() < 2:
        return pd.DataFrame()
    top = frame["rate"].max()
    clean = frame[frame["rate"] == 0].set_index(["variant", "seed"])["value"]
    noisy = frame[frame["rate"] == top].set_index(["variant", "seed"])["value"]
    drops = (clean - noisy).dropna().rename("drop").reset_index()
    return drops.assign(rate=top)


def reading(ledger: dict, mode: str) -> list:
    """What the table shows, computed from the ledger: each variant's loss from 0% to the top noise rate
    (mean ± 95% interval over seeds), and UIR's robustness: the loss without UIR minus the loss with it, paired
    by seed (above 0: UIR loses less, the paper's claim)."""
    lines = []
    for metric, name in (("recall@20", "Recall@20"), ("sparse_recall@20", f"sparse-user ({SPARSE}) Recall@20")):
        drops = seed_drops(ledger, mode, metric)
        if drops.empty:
            continue
        top = drops["rate"].iloc[0]
        by_variant = {v: part.set_index("seed")["drop"] for v, part in drops.groupby("variant")}
        for variant, (label, _) in VARIANTS.items():
            if variant in by_variant:
                lines.append(f"- {label}, {name}: {top:.0%} noise costs {mean_ci(list(by_variant[variant])).cell()} "
                             f"(seeds {', '.join(map(str, by_variant[variant].index))}).")
        for variant in ("uir", "uir-linear"):
            if variant not in by_variant or "no-uir" not in by_variant:
                continue
            gap = (by_variant["no-uir"] - by_variant[variant]).dropna()
            if gap.empty:
                continue
            ci = mean_ci(list(gap))
            verdict = ("one seed: no interval" if ci.half_width is None else
                       "UIR loses less: the robustness claim holds" if ci.interval[0] > 0 else
                       "UIR loses more: the claim is reversed" if ci.interval[1] < 0 else
                       "the interval spans 0: no robustness shown")
            lines.append(f"- {name}, robustness of {VARIANTS[variant][0]} (loss w/o UIR minus loss with it, paired "
                         f"by seed): {ci.cell()}; {verdict}.")
    return ["## What it shows", "", *lines, ""] if lines else []


def machines_of_cells(ledger: dict, mode: str) -> dict:
    """``{"<variant> <rate>": [the hardware each of its runs recorded]}`` (for :func:`run.hardware_lines`)."""
    machines: dict = {}
    for record in ledger.values():
        if record["mode"] in (mode, "none"):
            machines.setdefault(f"{record['label']} {record['rate']:.0%}", []).append(record.get("hardware"))
    return machines


def render(dataset: str, ledger: dict, mode: str, plot_name: str = "") -> str:
    """The Markdown page: Recall@20 and sparse-user Recall@20 per variant (rows) and noise rate (columns)."""
    frame = summary_frame(ledger, mode)
    if frame.empty:
        return f"# {dataset}: noise robustness ({mode})\n\nNo finished run yet.\n"
    commands = sorted({r["command"] for r in ledger.values() if r["mode"] in (mode, "none")})
    seeds = ", ".join(f"{r.label} {r.rate:.0%}: {', '.join(map(str, r.seeds))}" for r in frame.itertuples())
    epochs = ", ".join(f"{r.label} {r.rate:.0%}: {', '.join(map(str, r.epochs))}" for r in frame.itertuples())
    published = base.row_settings(dataset, "cikgrec", [])
    changed = {}
    for record in ledger.values():
        own = record["settings"]
        changed.setdefault(record["label"], ", ".join(f"`{k}={own.get(k)}`" for k in sorted(set(own) | set(published))
                                                      if own.get(k) != published.get(k)) or "none")
    sparse_n = next((g for r in ledger.values() for g in r["groups"]["recall@20"] if g.startswith(SPARSE)), SPARSE)
    lines = [
        f"# {dataset}: noise robustness of CIKGRec ({mode} noise on the user-interest edges)", "",
        f"Test split, each run at the epoch selected on the validation split; mean ± the half-width of the 95% "
        f"Student-t interval over the "
        f"seeds. At rate r, round(r × E) of the E user-interest edges of the authors' interests are perturbed "
        f"(`cikg interests perturb --mode {mode}`, drawn with the run's seed); 0% is the authors' file. "
        "Validation split: " + "; ".join(sorted({r["split"] for r in ledger.values()})) + ".", "",
        "Commands:", "", *[f"- `{c}`" for c in commands], "",
        f"Settings that differ from `experiments/{dataset}/cikgrec.yaml`:", "",
        *[f"- {label}: {changed[label]}" for label, _ in VARIANTS.values() if label in changed], "",
        "## Test Recall@20", "", _cells(frame, "recall", "recall_hw").to_markdown(), "",
        f"## Sparse users: test Recall@20 of {sparse_n}", "", _cells(frame, "sparse", "sparse_hw").to_markdown(), "",
        "## Test NDCG@20", "", _cells(frame, "ndcg", "ndcg_hw").to_markdown(), "",
        f"Seeds: {seeds}.", "", f"Best epochs: {epochs}.", "",
        *base.hardware_lines(machines_of_cells(ledger, mode)),
        "Training minutes (all seeds): " + ", ".join(f"{r.label} {r.rate:.0%} {r.minutes:.1f}"
                                                      for r in frame.itertuples()), "",
    ]
    if plot_name:
        lines += [f"![Recall@20 against the noise rate]({plot_name})", ""]
    lines += reading(ledger, mode)
    return "\n".join(lines)


def plot(ledger: dict, mode: str, path: Path, dataset: str) -> None:
    """Two panels, Recall@20 and sparse-user Recall@20 against the noise rate, one line per variant (± 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = summary_frame(ledger, mode)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, (mean, std, title) in zip(axes, [("recall", "recall_hw", "all users"),
                                             ("sparse", "sparse_hw", f"sparse users ({SPARSE})")]):
        for shift, (variant, (label, _)), style in zip((-0.8, 0.0, 0.8), VARIANTS.items(),
                                                       (("o", "-"), ("s", "--"), ("^", ":"))):
            part = frame[frame["variant"] == variant].sort_values("rate")
            if part.empty:
                continue
            # shifted a little sideways so that equal points and their error bars stay visible
            ax.errorbar(part["rate"] * 100 + shift, part[mean], yerr=part[std], marker=style[0], linestyle=style[1],
                        capsize=3, label=label)
        ax.set_xticks(sorted(frame["rate"].unique() * 100))
        ax.set_xlabel(f"noisy user-interest edges ({mode}), %")
        ax.set_ylabel("test Recall@20")
        ax.set_title(f"{dataset}: {title}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = sorted({s for part in frame["seeds"] for s in part})
    over = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± 95% interval over seeds {', '.join(map(str, seeds))}"
    fig.suptitle(f"CIKGRec under interest noise ({over})", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.publish:
        problems = protocol_problems(args)
        if problems:
            return base.refuse("noise.py", f"--publish needs the full protocol: {'; '.join(problems)}; nothing was run")
    out = Path(args.out) / args.dataset
    target = (HERE / args.dataset if args.publish else out) / "noise.md"
    ledger_path = target.with_suffix(".json")
    command = base.command_of("noise.py", argv)
    settings = {v: settings_of(args, v) for v in args.variants}
    with base.locked_ledger(ledger_path) as ledger:
        conflicts = ledger_conflicts(ledger, args, settings)
    if conflicts and not args.replace and not args.render_only:
        return base.refuse("noise.py", f"{ledger_path}: runs of other settings ({'; '.join(conflicts[:4])}); "
                                       "nothing was run. Use another --out or pass --replace")
    for seed, rate in [] if args.render_only else sweep_cells(args):
        with base.locked_ledger(ledger_path) as ledger:
            todo = [v for v in args.variants
                    if not base.same_settings(ledger.get(run_key(v, args.mode, rate, seed), {}).get("settings"),
                                              settings[v])]
        if not todo:
            logging.info("rate %g seed %d: in the ledger, skipped", rate, seed)
            continue
        overrides, perturbation = noisy_interests(args, out, rate, seed)
        for variant in todo:
            folder = Path(args.out) / (f"{args.mode}-{rate:g}" if rate else "clean")
            metrics = base.run_one(args.dataset, "cikgrec", seed, [*args.set, *VARIANTS[variant][1], *overrides],
                                   folder, variant, args.replace)
            record = record_of(metrics, variant=variant, mode=args.mode, rate=rate, seed=seed,
                               settings=settings[variant], perturbation=perturbation, command=command)
            with base.locked_ledger(ledger_path) as ledger:
                ledger[run_key(variant, args.mode, rate, seed)] = record
            write_page(args, ledger_path, target, quiet=True)  # the page holds every run that has landed
    write_page(args, ledger_path, target)
    return 0


def render_files(dataset: str, ledger: dict, mode: str, plot_path: Path) -> str:
    """The page of ``ledger`` (returned) and its plot (written to ``plot_path`` once a run has landed)."""
    if not summary_frame(ledger, mode).empty:
        plot(ledger, mode, plot_path, dataset)
    return render(dataset, ledger, mode, plot_path.name)


def write_page(args: argparse.Namespace, ledger_path: Path, target: Path, quiet: bool = False) -> None:
    """Render the page and the plot from the ledger as it is now (``quiet``: write them, print nothing)."""
    with base.locked_ledger(ledger_path) as ledger:
        page = render_files(args.dataset, ledger, args.mode, target.with_suffix(".png"))
    if quiet:
        write_text_atomic(target, page)
    else:
        base.show_page(target, page, args.dataset, not args.publish)


if __name__ == "__main__":
    raise SystemExit(main())
