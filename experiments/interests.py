"""Where interests come from and what they buy (issue 15 item 6): CIKGRec trained on the interests of each source.

    python experiments/interests.py dbbook2014 --sources kg-profile none --set train.epochs=1   # a try
    python experiments/interests.py dbbook2014 --set train.epochs=60 train.lr=0.005 train.threads=1 --publish

Each source gives CIKGRec (``experiments/<dataset>/cikgrec.yaml``) its user-interest edges (``--sources``):

- ``gpt35``: the authors' published file (gpt-3.5-turbo, clustered by them): the dataset's own interests, the
  same runs as the CIKGRec row of ``results.md``. Only ids were published, so it has no predictive score.
  ``--reuse-published`` takes that row from ``experiments/<dataset>/results.json`` instead of training it again
  (only when its resolved settings are this sweep's; that ledger kept mean and std, not per-seed figures, so
  the row shows mean ± std†).
- ``smollm2``: the bundled SmolLM2-135M-Instruct on every user, the few-shot prompt, free-text answers
  (``--prompt cikgrec-interests-fewshot --structured off``), echoes of the prompt's titles dropped. The answers
  are replayed from ``experiments/<dataset>/interest_answers/smollm2-fewshot.jsonl`` (recorded with the commands
  in ``docs/llm.md``; this script never calls an LLM), then clustered with ``--kappa``.
- ``kg-profile``: the offline kg-profile backend (not an LLM), clustered with ``--kappa``.
- ``none``: CIKGRec without interest nodes (``model.use_interests=false``; UIR has nothing to reconstruct).

A source's interests are made once per dataset under ``<out>/<dataset>/interests/<source>-k<kappa>/`` with the real
commands (``cikg interests infer``, then ``cikg interests cluster``, which writes the interest report) and
re-used when re-run. Its report's predictive score (:mod:`cikg.interests.report`: how well the similarity of
a user's interests to item texts ranks the user's validation items; AUC and Recall@20 beside popularity;
never test items) is stored beside the training runs, so the table shows whether the score tracks the
downstream figures. Runs live in ``<out>/<source>/<dataset>/CIKGRec-seed<k>`` and resume when re-run.

Every finished run lands in the ledger ``interests.json`` (per source: its preparation and score, and one
record per seed); a re-run skips what it holds and refuses, before training, a run of other settings
(``--replace`` retrains it). The ledger and page are under ``<out>/<dataset>/`` unless ``--publish`` is
given: only then is ``experiments/<dataset>/interests.md`` (``.json``) written, and only for the full
protocol (seeds 0 1 2, the budget of ``results.md``); sources may come in separate sweeps (several processes
may share a ledger: each record is merged under a file lock), and the page names the sources not yet run.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (experiments/run.py: how a run is trained, read back and its settings)

from cikg._io import sha256_file  # noqa: E402
from cikg.cli import main as cikg_main  # noqa: E402
from cikg.eval.stats import mean_ci  # noqa: E402
from cikg.train import load_run_config  # noqa: E402
from cikg.train.trainer import load_run_dataset  # noqa: E402

HERE = base.HERE
SOURCES = {"gpt35": "GPT-3.5 (authors' file)", "smollm2": "SmolLM2-135M (few-shot, all users)",
           "kg-profile": "kg-profile (offline, not an LLM)", "none": "none (w/o interests)"}
LLM_ANSWERS = "interest_answers/smollm2-fewshot.jsonl"
"""The recorded SmolLM2 answers of a dataset, relative to ``experiments/<dataset>/``."""
PROMPT = "cikgrec-interests-fewshot"
FULL_SEEDS = [0, 1, 2]
SPARSE = "train<=10"
KAPPA = 200


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["dbbook2014", "book-crossing"])
    parser.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(SOURCES))
    parser.add_argument("--seeds", nargs="+", type=int, default=FULL_SEEDS)
    parser.add_argument("--kappa", type=int, default=KAPPA, help=f"clusters of the inferred phrases (default {KAPPA})")
    parser.add_argument("--answers", type=Path, help=f"recorded SmolLM2 answers (default experiments/DATASET/{LLM_ANSWERS})")
    parser.add_argument("--set", nargs="*", default=[], help="overrides applied to every run (key=value)")
    parser.add_argument("--out", default="runs/interest-sources")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while embedding and clustering")
    parser.add_argument("--publish", action="store_true",
                        help="write experiments/<dataset>/interests.md (.json); full protocol only")
    parser.add_argument("--replace", action="store_true", help="retrain ledger runs of other settings")
    parser.add_argument("--reuse-published", action="store_true",
                        help="gpt35: take the CIKGRec row of experiments/DATASET/results.json (same settings only)")
    return parser.parse_args(argv)


def answers_file(args: argparse.Namespace) -> Path:
    """The replay file of the ``smollm2`` source."""
    return args.answers or HERE / args.dataset / LLM_ANSWERS


def source_overrides(source: str, interests_dir: Path) -> list:
    """The config overrides that give CIKGRec the interests of ``source``."""
    if source == "none":
        return ["model.use_interests=false"]
    if source == "gpt35":
        return []
    return [f"data.interests={interests_dir.resolve()}"]


def settings_of(args: argparse.Namespace, source: str, interests_dir: Path) -> dict:
    """The resolved config of a source's runs without run-only keys; an interests folder counts by its name
    only (a ledger moved with its ``--out`` stays valid)."""
    settings = base.row_settings(args.dataset, "cikgrec", [*args.set, *source_overrides(source, interests_dir)])
    if settings.get("data.interests"):
        settings["data.interests"] = f"<out>/interests/{interests_dir.name}"
    return settings


def protocol_problems(args: argparse.Namespace) -> list:
    """Why this sweep is not the full protocol ``--publish`` requires (empty: it is)."""
    problems = []
    if not set(FULL_SEEDS) <= set(args.seeds):
        problems.append(f"seeds {args.seeds} lack {sorted(set(FULL_SEEDS) - set(args.seeds))}")
    problems += base.budget_problem(base.row_settings(args.dataset, "cikgrec", args.set), args.dataset)
    if args.answers is not None:
        problems.append(f"--answers {args.answers}: a published table replays experiments/{args.dataset}/{LLM_ANSWERS}")
    return problems


def cikg(argv: list) -> None:
    """Run one ``cikg`` command in this process; a non-zero status stops the sweep with the command."""
    status = cikg_main(argv)
    if status:
        raise SystemExit(f"experiments/interests.py: `cikg {shlex.join(argv)}` exited {status}")


def answers_digest(args: argparse.Namespace, source: str) -> str:
    """The SHA-256 of the recorded answers ``source`` replays (``""`` for a source that replays none)."""
    return sha256_file(answers_file(args)) if source == "smollm2" else ""


def prepare(args: argparse.Namespace, source: str, folder: Path) -> dict:
    """Infer (replayed answers or kg-profile) and cluster the interests of ``source`` into ``folder`` unless
    done from the same answers (a replay file that grew or changed since makes them again); returns what its
    report says: answers, echo rate, coverage, kept interests and the score, and the answers' SHA-256."""
    threads = ["--threads", str(args.threads)]
    dataset = load_run_config(HERE / args.dataset / "cikgrec.yaml", args.set).data.dataset  # what the runs train on
    digest, marker = answers_digest(args, source), folder / "answers.sha256"
    if folder.is_dir() and digest and (not marker.is_file() or marker.read_text() != digest):
        logging.info("%s: made from other answers than %s; made again", folder, answers_file(args))
        shutil.rmtree(folder)
    if not (folder / "report.json").is_file() or not (folder / "user_interest_clustered.txt").is_file():
        if source == "smollm2":
            infer = ["--backend", "replay", "--replay", str(answers_file(args)), "--prompt", PROMPT]
        else:
            infer = ["--backend", "kg-profile"]
        cikg(["interests", "infer", dataset, *infer, "-o", str(folder), "--no-progress"])
        cikg(["interests", "cluster", str(folder), "--kappa", str(args.kappa), *threads])
        if digest:
            marker.write_text(digest)
    report = json.loads((folder / "report.json").read_text())
    return {"kappa": args.kappa, "report": report_summary(report), **({"answers_sha256": digest} if digest else {})}


def stale_answers(ledger: dict, args: argparse.Namespace) -> list:
    """The sources whose ledger runs were trained on other recorded answers than the replay file holds now."""
    stale = []
    for source in args.sources:
        recorded = ledger.get("prepared", {}).get(source, {}).get("answers_sha256")
        runs = [k for k, r in ledger.get("runs", {}).items() if r["source"] == source]
        if recorded and runs and recorded != answers_digest(args, source):
            stale.append(source)
    return stale


def authors_interests(args: argparse.Namespace) -> dict:
    """What the dataset's own (the authors') interest file holds, in the shape of :func:`prepare`'s record."""
    dataset = load_run_dataset(load_run_config(HERE / args.dataset / "cikgrec.yaml", args.set))
    edges = dataset.user_interest
    return {"kappa": None, "report": {"kept_interests": int(dataset.n_interests), "interest_edges": int(edges.size(1)),
                                      "users_with_interest": int(edges[0].unique().numel()), "score": {}}}


def report_summary(report: dict) -> dict:
    """The few numbers of an interest report (``report.json``) the table shows."""
    clustering = report.get("clustering") or {}
    primary = (report.get("score") or {}).get("primary") or {}
    return {"answers": report["answers"], "echo_rate": report.get("echo_rate"),
            "distinct_phrases": report["distinct_phrases"], "users_covered": report["users_covered"],
            "kept_interests": clustering.get("interests"), "interest_edges": clustering.get("user_interest_edges"),
            "users_with_interest": clustering.get("users_with_interest"),
            "score": {k: primary.get(k) for k in ("interests", "pool", "users", "auc", "recall",
                                                  "popularity_auc", "popularity_recall")}}


def record_of(metrics: dict, *, source: str, seed: int, settings: dict, command: str) -> dict:
    """One ledger record of a finished run (from :func:`run.run_one`'s metrics)."""
    groups = pd.DataFrame(metrics["groups"]).set_index("group")
    return {"source": source, "seed": seed, "test": {m: metrics["test"][m] for m in base.COLUMNS},
            "sparse_recall@20": float(groups.loc[SPARSE, "recall@20"]), "best_epoch": metrics["best_epoch"],
            "minutes": metrics["minutes"], "split": str(metrics["split"]), "hardware": metrics.get("hardware"),
            "settings": settings, "command": command}


def ledger_conflicts(ledger: dict, args: argparse.Namespace, settings: dict) -> list:
    """The ledger's runs of this sweep recorded with other settings, each with the keys that differ."""
    problems = []
    for key, record in ledger.get("runs", {}).items():
        if record["source"] not in settings or record["seed"] not in args.seeds:
            continue
        differ = base.settings_diff(record["settings"], settings[record["source"]])
        if differ:
            problems.append(f"{key}: {differ}")
    return problems


def published_problem(args: argparse.Namespace, settings: dict) -> str:
    """Why the CIKGRec row of ``experiments/<dataset>/results.json`` may not stand for the ``gpt35`` source
    (``""``: it may)."""
    path = HERE / args.dataset / "results.json"
    row = json.loads(path.read_text())[base.PROPOSED]
    differ = base.settings_diff(base.recorded_settings(args.dataset, row), settings)
    return (f"{path}: its CIKGRec row ran with other settings ({differ}); nothing was taken. Train the gpt35 "
            "source instead") if differ else ""


def published_row(args: argparse.Namespace, settings: dict) -> dict:
    """The CIKGRec row of ``experiments/<dataset>/results.json`` as the ``gpt35`` source (its settings are
    ``settings``: :func:`published_problem`)."""
    path = HERE / args.dataset / "results.json"
    row = json.loads(path.read_text())[base.PROPOSED]
    sparse = next(v for k, v in row["groups"]["recall@20"].items() if k.startswith(SPARSE))
    return {"source": "gpt35", "from": f"experiments/{args.dataset}/results.json", "seeds": row["seeds"],
            "best_epochs": row["best_epochs"], "minutes": row["minutes"], "split": row["split"],
            "hardware": row.get("hardware", [None]),
            "mean": {"recall@20": row["mean"]["recall@20"], "ndcg@20": row["mean"]["ndcg@20"], "sparse": sparse},
            "std": {"recall@20": row["std"]["recall@20"], "ndcg@20": row["std"]["ndcg@20"]},
            "settings": settings, "command": row["command"]}


def _ci(values: list) -> str:
    return mean_ci(values).cell() if values else ""


def _score_cell(prepared: dict, key: str) -> str:
    score = (prepared or {}).get("report", {}).get("score") or {}
    return "" if score.get(key) is None else f"{score[key]:.3f}"


def table(ledger: dict) -> pd.DataFrame:
    """One row per source: its interests (edges, users), its predictive score, and the test figures."""
    rows = []
    for source, label in SOURCES.items():
        runs = sorted((r for r in ledger.get("runs", {}).values() if r["source"] == source), key=lambda r: r["seed"])
        prepared = ledger.get("prepared", {}).get(source)
        published = ledger.get("published", {}).get(source) if not runs else None
        if not runs and not prepared and not published:
            continue
        summary = (prepared or {}).get("report", {})
        edges = summary.get("interest_edges")
        rows.append({
            "interests from": label,
            "interest edges (users)": "–" if source == "none" or edges is None else (
                f"{edges:,} ({summary.get('users_with_interest'):,})"),
            "score AUC (users)": (f"{_score_cell(prepared, 'auc')} ({summary['score']['users']:,})"
                                  if _score_cell(prepared, "auc") else "n/a (ids only)" if source == "gpt35" else "–"),
            "score Recall@20": _score_cell(prepared, "recall") or "–",
            "test Recall@20": _ci([r["test"]["recall@20"] for r in runs]),
            "test NDCG@20": _ci([r["test"]["ndcg@20"] for r in runs]),
            f"sparse ({SPARSE}) Recall@20": _ci([r["sparse_recall@20"] for r in runs]),
            "best epochs": ", ".join(str(r["best_epoch"]) for r in runs),
            "seeds": ", ".join(str(r["seed"]) for r in runs),
        })
        if published:
            rows[-1].update({
                "test Recall@20": f"{published['mean']['recall@20']:.4f} ± {published['std']['recall@20']:.4f}†",
                "test NDCG@20": f"{published['mean']['ndcg@20']:.4f} ± {published['std']['ndcg@20']:.4f}†",
                f"sparse ({SPARSE}) Recall@20": f"{published['mean']['sparse']:.4f}†",
                "best epochs": ", ".join(map(str, published["best_epochs"])),
                "seeds": ", ".join(map(str, published["seeds"]))})
    return pd.DataFrame(rows).set_index("interests from") if rows else pd.DataFrame()


def missing_sources(ledger: dict) -> list:
    """Sources with no finished run (or published row) in the ledger."""
    done = {r["source"] for r in ledger.get("runs", {}).values()} | set(ledger.get("published", {}))
    return [label for source, label in SOURCES.items() if source not in done]


def test_recalls(ledger: dict) -> dict:
    """``{source: (mean, half-width or None)}`` of test Recall@20 per source with runs or a published row."""
    out = {}
    for source in SOURCES:
        runs = [r["test"]["recall@20"] for r in ledger.get("runs", {}).values() if r["source"] == source]
        if runs:
            ci = mean_ci(runs)
            out[source] = (ci.mean, ci.half_width)
        elif source in ledger.get("published", {}):
            out[source] = (ledger["published"][source]["mean"]["recall@20"], None)
    return out


def reading(ledger: dict) -> list:
    """What the table shows, computed from the ledger: each source against ``none``, and whether the sources'
    order by predictive score is their order by test Recall@20."""
    recalls, lines = test_recalls(ledger), []
    if "none" in recalls:
        base_mean, base_hw = recalls["none"]
        for source, (mean, hw) in recalls.items():
            if source == "none":
                continue
            if hw is not None and base_hw is not None:
                apart = abs(mean - base_mean) > hw + base_hw
                verdict = "the 95% intervals do not overlap" if apart else "the 95% intervals overlap"
            else:
                verdict = "no interval for one side"
            lines.append(f"- {SOURCES[source]} against no interests: test Recall@20 {mean - base_mean:+.4f} "
                         f"({mean / base_mean - 1:+.1%}); {verdict}.")
    scores = {s: p["report"]["score"]["auc"] for s, p in ledger.get("prepared", {}).items()
              if p["report"]["score"].get("auc") is not None and s in recalls}
    if len(scores) >= 2:
        by_score = sorted(scores, key=scores.get, reverse=True)
        by_recall = sorted(scores, key=lambda s: recalls[s][0], reverse=True)
        agree = "the same order" if by_score == by_recall else "not the same order"
        lines.append(f"- Predictive score against downstream gain: by score AUC "
                     f"{' > '.join(SOURCES[s] for s in by_score)}; by test Recall@20 "
                     f"{' > '.join(SOURCES[s] for s in by_recall)}: {agree} ({len(scores)} scored sources, so "
                     "one ordering, not a correlation).")
    return ["## What it shows", "", *lines, ""] if lines else []


def render(dataset: str, ledger: dict) -> str:
    """The Markdown page of a ledger."""
    frame = table(ledger)
    if frame.empty:
        return f"# {dataset}: where interests come from\n\nNo finished run yet.\n"
    runs = list(ledger.get("runs", {}).values())
    published = list(ledger.get("published", {}).values())
    commands = sorted({r["command"] for r in runs + published})
    scored = {s: p["report"]["score"] for s, p in ledger.get("prepared", {}).items() if p["report"]["score"].get("auc")}
    popularity = ("The users scored are those holding a kept interest and a titled validation item; popularity (train "
                  "counts) on the same users: " + "; ".join(
                      f"{SOURCES[s]} AUC {v['popularity_auc']:.3f}, Recall@20 {v['popularity_recall']:.3f}"
                      for s, v in scored.items()) + "." if scored else "")
    minutes = {p["source"]: p["minutes"] for p in published}
    machines = {SOURCES[p["source"]]: list(p.get("hardware", [None])) for p in published}
    for r in runs:
        minutes[r["source"]] = minutes.get(r["source"], 0.0) + r["minutes"]
        machines.setdefault(SOURCES[r["source"]], []).append(r.get("hardware"))
    lines = [
        f"# {dataset}: where interests come from and what they buy", "",
        "CIKGRec (`experiments/{0}/cikgrec.yaml`) trained on the user-interest edges of each source; test split, "
        "each run at the epoch selected on the validation split; mean ± the half-width of the 95% Student-t "
        "interval over the seeds. Validation split: {1}.".format(dataset, "; ".join(sorted({r["split"] for r in runs + published}))),
        "", "*Score*: the interest report's predictive score (`cikg interests report`): how well the cosine "
        "similarity of a user's kept interest clusters (their centroids, all-MiniLM-L6-v2) to the item titles "
        "ranks the user's validation items above its other unseen items (mean per-user AUC, Recall@20); it never "
        "uses test items. " + popularity, "",
        "Commands:", "", *[f"- `{c}`" for c in commands], "",
        table(ledger).to_markdown(), "",
        "Interest preparation (`cikg interests infer` + `cikg interests cluster --kappa K`): " + "; ".join(
            f"{SOURCES[s]}: kappa {p['kappa']}, {p['report']['kept_interests']} interests kept, users covered by a "
            f"phrase {p['report']['users_covered']:.1%}" for s, p in ledger.get("prepared", {}).items()
            if p["kappa"] is not None) + ".", "",
        *base.hardware_lines(machines),
        "Training minutes (all seeds): " + ", ".join(f"{SOURCES[s]} {m:.1f}" for s, m in minutes.items()), "",
    ]
    lines += [f"† {SOURCES[p['source']]}: the CIKGRec row of `{p['from']}` (the same runs: seeds "
              f"{', '.join(map(str, p['seeds']))}, the same settings), mean ± population std and the seeds' mean "
              "sparse-user Recall@20; that ledger kept no per-seed figures, so no interval." for p in published]
    lines += [""] if published else []
    if missing_sources(ledger):
        lines += [f"Not run yet: {', '.join(missing_sources(ledger))}.", ""]
    return "\n".join(lines + reading(ledger))


def main(argv: list = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.publish:
        problems = protocol_problems(args)
        if problems:
            return base.refuse("interests.py", f"--publish needs the full protocol: {'; '.join(problems)}; "
                                               "nothing was run")
    if "smollm2" in args.sources and not answers_file(args).is_file():
        return base.refuse("interests.py", f"{answers_file(args)}: no recorded SmolLM2 answers (record them as "
                                           "docs/llm.md says, or leave smollm2 out of --sources); nothing was run")
    out = Path(args.out) / args.dataset
    target = (HERE / args.dataset if args.publish else out) / "interests.md"
    ledger_path = target.with_suffix(".json")
    command = base.command_of("interests.py", argv)
    folders = {s: out / "interests" / f"{s}-k{args.kappa}" for s in args.sources}
    settings = {s: settings_of(args, s, folders[s]) for s in args.sources}
    reuse_problem = published_problem(args, settings["gpt35"]) if "gpt35" in args.sources and args.reuse_published else ""
    if reuse_problem:
        return base.refuse("interests.py", reuse_problem)
    with base.locked_ledger(ledger_path) as ledger:
        conflicts = ledger_conflicts(ledger, args, settings)
        stale = stale_answers(ledger, args)
        if stale and args.replace:  # retrained below, from interests made again from the answers as they are now
            ledger["runs"] = {k: r for k, r in ledger.get("runs", {}).items() if r["source"] not in stale}
            for source in stale:
                shutil.rmtree(Path(args.out) / source / args.dataset, ignore_errors=True)
    if conflicts and not args.replace:
        return base.refuse("interests.py", f"{ledger_path}: runs of other settings ({'; '.join(conflicts[:4])}); "
                                           "nothing was run. Use another --out or pass --replace")
    if stale and not args.replace:
        return base.refuse("interests.py", f"{ledger_path}: the {', '.join(stale)} runs were trained on other "
                                           f"recorded answers than {answers_file(args)} holds now; nothing was run. "
                                           "Pass --replace to make the interests and train those runs again")
    for source in args.sources:
        if source == "gpt35":
            prepared = authors_interests(args)
            with base.locked_ledger(ledger_path) as ledger:
                ledger.setdefault("prepared", {})[source] = prepared
        if source == "gpt35" and args.reuse_published:
            row = published_row(args, settings[source])
            with base.locked_ledger(ledger_path) as ledger:
                ledger.setdefault("published", {})[source] = row
            continue
        if source in ("smollm2", "kg-profile"):
            prepared = prepare(args, source, folders[source])
            with base.locked_ledger(ledger_path) as ledger:
                ledger.setdefault("prepared", {})[source] = prepared
        for seed in args.seeds:
            key = f"{source}|seed{seed}"
            with base.locked_ledger(ledger_path) as ledger:
                if base.same_settings(ledger.get("runs", {}).get(key, {}).get("settings"), settings[source]):
                    logging.info("%s seed %d: in the ledger, skipped", source, seed)
                    continue
            metrics = base.run_one(args.dataset, "cikgrec", seed, [*args.set, *source_overrides(source, folders[source])],
                                   Path(args.out) / source, "CIKGRec", args.replace)
            record = record_of(metrics, source=source, seed=seed, settings=settings[source], command=command)
            with base.locked_ledger(ledger_path) as ledger:
                ledger.setdefault("runs", {})[key] = record
    with base.locked_ledger(ledger_path) as ledger:
        page = render(args.dataset, ledger)
    base.show_page(target, page, args.dataset, not args.publish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
