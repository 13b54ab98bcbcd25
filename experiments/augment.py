"""Knowledge augmentation side by side: backbones x feature methods x seeds, written to
``experiments/<dataset>/augment.md``.

    python experiments/augment.py dbbook2014                                # features, training, report
    python experiments/augment.py dbbook2014 --steps features               # only extract/encode (no training)
    python experiments/augment.py dbbook2014 --steps train --device cuda    # only training (features present)
    python experiments/augment.py dbbook2014 --steps report                 # only record finished runs, render
    python experiments/augment.py dbbook2014 --render-only --publish        # only render, from the ledger
    python experiments/augment.py book-crossing --methods none kar reki-col:50 --models lightgcn --seeds 0

Methods are named on the command line; each names how its features are built and fused:

* ``none``: the plain backbone (``model.features.mode=none``).
* ``kar``: KAR (reasoning + factual knowledge, hybrid experts). Its prompts are REKI's *individual* extraction, so
  this row is also REKI-individual.
* ``reki-col:G``: REKI collective extraction with ``G`` user groups and ``G`` item groups (hybrid experts).
* ``reki-col-llm:G``: the same collective extraction answered by a real LLM (``--base-url``, ``--llm-model``;
  without ``--base-url`` the bundled SmolLM2-135M is served by llama.cpp while it runs).
* ``reki-both:G``: REKI individual + collective blocks (four knowledge types in the experts), composed from the
  ``kar`` and ``reki-col:G`` artifacts (the same prompts and clustering REKI ``mode=both`` uses).
* ``M+gate``: method ``M``'s features fused through a zero-initialised gate (``model.features.gate=true``: the model
  starts as the plain backbone and learns how much knowledge to let in), e.g. ``kar+gate``, ``reki-col:50+gate``.
* further methods register in :data:`METHODS` (a builder writing ``features.pt`` and the fusion overrides).

Artifacts: ``<out>/<dataset>/features/<method>/`` (``features.pt``, ``answers.jsonl`` replay file,
``augment_summary.json``), runs ``<out>/<dataset>/<model>-<method>-seed<k>`` (resumed when re-run). The answers
used are copied to ``experiments/<dataset>/augment_answers/<method>.jsonl`` (replay files), and the REKI call-count
table is computed from the same requests. Test-split figures of the epoch selected on validation.

The report records every finished run (test and CTR figures, the cost of its features, the command) in the ledger
``augment.json`` beside the page, and renders the page from the ledger alone: runs recorded in an earlier session
stay when their run directories are gone, and a later command adds rows or seeds. A ledger holds runs of one
setting (training overrides, feature seed); other settings are refused unless ``--replace`` starts it afresh.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as base  # noqa: E402  (experiments/run.py: training a run, the ledger lock, refusals, pages)

from cikg.eval.stats import mean_ci  # noqa: E402
from cikg.train.ctr import run_ctr  # noqa: E402

EXPERTS = ["model.features.mode=add", "model.features.adaptor=experts", "model.features.n_shared=1",
           "model.features.n_dedicated=1", "model.features.hidden=32", "model.features.reduce=32"]
CTR_COLUMNS = {"auc 1:1": "AUC 1:1", "auc 1:4": "AUC 1:4", "logloss 1:4": "Logloss 1:4"}
"""The CTR protocol's columns (``cikg evaluate --protocol ctr``: test positives against 1 or 4 sampled unseen
negatives each, the same pairs for every run of a dataset)."""
MODEL_LABELS = {"lightgcn": "LightGCN", "cikgrec": "CIKGRec", "bprmf": "BPRMF", "lightgcn-cikg": "LightGCN-CIKG"}


@dataclass
class Method:
    """A row family of the table: how to build its features (``None``: no features) and how models fuse them."""

    label: str
    build: Optional[Callable[[object, Path, argparse.Namespace], None]]
    fusion: List[str] = field(default_factory=list)


def _encoder(args: argparse.Namespace):
    from cikg.embed import Encoder

    return Encoder(Path(args.out) / "embeddings.sqlite", n_threads=args.threads, show_progress=False)


def build_kar(dataset, out: Path, args: argparse.Namespace) -> None:
    from cikg.augment.kar import KAR, KARConfig
    from cikg.llm.kgprofile import KGProfileBackend, KGProfileConfig

    config = KARConfig(history_len=20)
    KAR(config, KGProfileBackend(dataset, KGProfileConfig(history_len=20)), _encoder(args), out).fit(dataset)


def build_reki_collective(groups: int) -> Callable:
    def build(dataset, out: Path, args: argparse.Namespace) -> None:
        from cikg.augment.reki import REKI, REKIConfig
        from cikg.llm.kgprofile import KGProfileBackend, KGProfileConfig

        config = REKIConfig(history_len=20, mode="collective", n_user_groups=groups, n_item_groups=groups,
                            seed=args.feature_seed)
        REKI(config, KGProfileBackend(dataset, KGProfileConfig(history_len=20)), _encoder(args), out).fit(dataset)
    return build


def build_reki_collective_llm(groups: int) -> Callable:
    """REKI collective extraction answered by a real LLM: ``--base-url``/``--llm-model``, or (without
    ``--base-url``) the bundled SmolLM2 served by llama.cpp for the duration of the extraction. Answers are cached
    in ``<features>/llm_cache.sqlite``, so an interrupted extraction resumes."""
    def build(dataset, out: Path, args: argparse.Namespace) -> None:
        from cikg.augment.reki import REKI, REKIConfig
        from cikg.llm.cache import ResponseCache
        from cikg.llm.client import LLMConfig, OpenAIBackend
        from cikg.llm.serve import ServeConfig, llama_server

        config = REKIConfig(history_len=20, mode="collective", n_user_groups=groups, n_item_groups=groups,
                            seed=args.feature_seed)
        out.mkdir(parents=True, exist_ok=True)

        def fit(base_url: str, model: str) -> None:
            llm = LLMConfig(model=model, base_url=base_url, max_tokens=args.max_tokens, timeout=600, concurrency=1,
                            progress=False)
            REKI(config, OpenAIBackend(llm, ResponseCache(out / "llm_cache.sqlite")), _encoder(args), out).fit(dataset)

        if args.base_url:
            fit(args.base_url, args.llm_model)
        else:
            with llama_server(ServeConfig(n_threads=args.threads), log_path=out / "llama_server.log") as server:
                fit(server.base_url, server.config.alias)
    return build


def build_reki_both(groups: int) -> Callable:
    def build(dataset, out: Path, args: argparse.Namespace) -> None:
        import torch

        from cikg.augment import NodeFeatures

        root = out.parent
        parts = [feature_dir(root, "kar", dataset, args), feature_dir(root, f"reki-col:{groups}", dataset, args)]
        ind, col = (NodeFeatures.load(p) for p in parts)
        p = dict(col.provenance)
        p.update({"method": "reki", "mode": "both", "individual_calls": ind.provenance["n_calls"],
                  "n_calls": ind.provenance["n_calls"] + col.provenance["n_calls"],
                  "seconds": ind.provenance["seconds"] + col.provenance["seconds"],
                  "encode_seconds": ind.provenance["encode_seconds"] + col.provenance["encode_seconds"],
                  "template_version": ind.provenance["template_version"] + ", " + col.provenance["template_version"],
                  "composed_from": [str(x) for x in parts]})
        both = NodeFeatures(user=torch.cat([ind.user, col.user], 1), item=torch.cat([ind.item, col.item], 1),
                            blocks={t: {**ind.blocks[t], **col.blocks[t]} for t in ("user", "item")}, provenance=p)
        both.save(out)
    return build


def build_llmcf(dataset, out: Path, args: argparse.Namespace) -> None:
    from cikg.augment.llmcf import LLMCF, LLMCFConfig

    LLMCF(LLMCFConfig(seed=args.feature_seed), encoder=_encoder(args), out_dir=out).fit(dataset)


def build_coco(dataset, out: Path, args: argparse.Namespace) -> None:
    from cikg.augment.coco import CoCo, CoCoConfig

    CoCo(CoCoConfig(seed=args.feature_seed), out_dir=out).fit(dataset)


METHODS: Dict[str, Callable[[str], Method]] = {
    "none": lambda arg: Method("none", None),
    "kar": lambda arg: Method("KAR (= REKI individual)", build_kar, EXPERTS),
    "reki-col": lambda arg: Method(f"REKI collective, {arg} groups", build_reki_collective(int(arg)), EXPERTS),
    "reki-col-llm": lambda arg: Method(f"REKI collective, {arg} groups, real LLM", build_reki_collective_llm(int(arg)),
                                       EXPERTS),
    "reki-both": lambda arg: Method(f"REKI individual + collective ({arg} groups)", build_reki_both(int(arg)), EXPERTS),
    "llmcf": lambda arg: Method("LLM-CF (ICT user features, linear add)", build_llmcf, ["model.features.mode=add"]),
    "coco": lambda arg: Method("CoCo (VQ soft prompts + LoRA, linear add)", build_coco, ["model.features.mode=add"]),
}
"""Method name (before ``:``) -> factory taking the text after ``:``. Other methods add entries here."""


GATE = "+gate"


def features_of(name: str) -> str:
    """The feature method a row uses (``kar+gate`` uses ``kar``'s features)."""
    return name[:-len(GATE)] if name.endswith(GATE) else name


def method_of(name: str) -> Method:
    key, _, arg = features_of(name).partition(":")
    if key not in METHODS:
        raise SystemExit(f"unknown method {name!r}; known: {sorted(METHODS)} (with :ARG where they take one, "
                         f"{GATE} for a gated fusion)")
    method = METHODS[key](arg)
    if name.endswith(GATE):
        if method.build is None:
            raise SystemExit(f"{name!r}: the plain backbone has no features to gate")
        method = Method(f"{method.label}, zero-init gate", method.build, [*method.fusion, "model.features.gate=true"])
    return method


def features_path(root: Path, name: str) -> Path:
    """The artifact folder of row ``name``'s features (``kar+gate`` shares ``kar``'s)."""
    return root / features_of(name).replace(":", "-")


def feature_dir(root: Path, name: str, dataset, args: argparse.Namespace) -> Path:
    """The artifact folder of method ``name`` (built first when missing)."""
    name = features_of(name)
    path = features_path(root, name)
    if not (path / "features.pt").exists():
        method = method_of(name)
        logging.info("building %s features in %s", name, path)
        started = time.perf_counter()
        method.build(dataset, path, args)
        logging.info("%s features built in %.1f s", name, time.perf_counter() - started)
    return path


def copy_answers(dataset_name: str, name: str, path: Path) -> None:
    """Keep the answers of an experiment's features as a replay file under ``experiments/<dataset>/``."""
    src = next((p for p in (path / "answers.jsonl", path / "cot_examples.jsonl") if p.exists()), None)  # KAR/REKI, LLM-CF
    if src is not None:
        target = HERE / dataset_name / "augment_answers" / f"{name.replace(':', '-')}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def run_dir_label(model: str, name: str) -> str:
    return f"{model}-{name.replace(':', '-').replace('+', '-')}"


def ctr_cells(run_dir: Path) -> dict:
    """The CTR figures of a finished run (:data:`CTR_COLUMNS`), computed once and kept in the run directory;
    none for a run directory without its weights (figures copied from elsewhere)."""
    if not (run_dir / "best_model.pt").is_file():
        return {}
    rows = run_ctr(run_dir)
    return {column: rows[column.split()[1]][column.split()[0]] for column in CTR_COLUMNS}


LEDGER = "augment.json"
"""The ledger beside the page: every finished run's figures, so the page re-renders without its run directories."""
METRICS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")
FEATURE_COST = ("llm_model", "not_an_llm", "n_calls", "prompt_tokens", "completion_tokens", "seconds",
                "encode_seconds")
"""What a row shows of its features' provenance (the cost of building them once)."""


def run_key(model: str, name: str, seed: int) -> str:
    return f"{model}|{name}|seed{seed}"


def feature_cost(features_root: Path, name: str) -> dict:
    """The cost of building row ``name``'s features (:data:`FEATURE_COST`); ``{}`` for the plain backbone."""
    path = features_path(features_root, name) / "features.pt"
    if method_of(name).build is None or not path.exists():
        return {}
    from cikg.augment import NodeFeatures

    provenance = NodeFeatures.load(path).provenance
    return {key: provenance[key] for key in FEATURE_COST if key in provenance}


def record_runs(ledger: dict, args: argparse.Namespace, runs_root: Path, features_root: Path, command: str) -> int:
    """Add every finished run of ``args.models`` x ``args.methods`` x ``args.seeds`` to ``ledger`` (test figures,
    CTR figures, the cost of its features, the command); runs already there and not found stay. Returns how many
    runs were read."""
    runs, read = ledger.setdefault("runs", {}), 0
    for model in args.models:
        for name in args.methods:
            cost = feature_cost(features_root, name)
            for seed in args.seeds:
                run_dir = runs_root / f"{run_dir_label(model, name)}-seed{seed}"
                if not (run_dir / "metrics.json").is_file():
                    continue
                metrics = json.loads((run_dir / "metrics.json").read_text())
                old = runs.get(run_key(model, name, seed), {})
                runs[run_key(model, name, seed)] = {
                    "model": model, "method": name, "seed": seed, "best_epoch": metrics["best_epoch"],
                    "hardware": metrics.get("hardware"),
                    "test": {c: metrics["test"][c] for c in METRICS},
                    "ctr": ctr_cells(run_dir) or old.get("ctr", {}), "features": cost or old.get("features", {}),
                    "command": command}
                read += 1
    ledger["runs"] = dict(sorted(runs.items()))
    order = ledger.setdefault("order", {"models": [], "methods": []})
    order["models"] = list(dict.fromkeys([*order["models"], *args.models]))
    order["methods"] = list(dict.fromkeys([*order["methods"], *args.methods]))
    return read


def _cell(values: list) -> str:
    return mean_ci(values).cell() if values else "–"


def table(ledger: dict) -> str:
    """The page's table: one row per model and method in the order first asked for, each over its seeds (mean ±
    the 95% t half-width; one seed: the mean)."""
    rows = []
    for model in ledger["order"]["models"]:
        for name in ledger["order"]["methods"]:
            runs = sorted((r for r in ledger["runs"].values() if r["model"] == model and r["method"] == name),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            row = {"model": MODEL_LABELS.get(model, model), "features": method_of(name).label}
            row.update({c: _cell([r["test"][c] for r in runs]) for c in METRICS})
            for column in CTR_COLUMNS:
                having = [r for r in runs if column in r["ctr"]]
                row[CTR_COLUMNS[column]] = _cell([r["ctr"][column] for r in having]) + (
                    f" (seeds {', '.join(str(r['seed']) for r in having)})" if having and len(having) < len(runs)
                    else "")
            row["best epochs"] = ", ".join(str(r["best_epoch"]) for r in runs)
            row["seeds"] = ", ".join(str(r["seed"]) for r in runs)
            cost = runs[0]["features"]
            row["LLM / backend"] = (f"{cost.get('llm_model')}{' (not an LLM)' if cost.get('not_an_llm') else ''}"
                                    if cost else "–")
            row["LLM calls"] = cost.get("n_calls", 0)
            row["tokens"] = cost.get("prompt_tokens", 0) + cost.get("completion_tokens", 0)
            row["extraction s"] = round(float(cost.get("seconds", 0.0)), 1)
            row["encoding s"] = round(float(cost.get("encode_seconds", 0.0)), 1)
            rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.to_markdown(index=False) if len(frame) else "(no finished runs)"


def call_counts_table(records: list) -> pd.DataFrame:
    """The REKI call-count table of :func:`cikg.augment.reki.call_counts` (individual extraction has no groups)."""
    frame = pd.DataFrame(records)
    groups = frame["groups"].astype("Int64")
    frame["groups"] = groups.astype(object).where(groups.notna(), None)  # shown as the missing value
    return frame


def render(dataset: str, ledger: dict) -> str:
    """The page of an augmentation ledger (its table, note and REKI call counts), without the run directories."""
    methods = [m for m in ledger["order"]["methods"] if any(r["method"] == m for r in ledger["runs"].values())]
    families = dict.fromkeys(method_of(m).label.split(" (")[0].split(",")[0] for m in methods if m != "none")
    commands = list(dict.fromkeys(r["command"] for r in ledger["runs"].values()))
    settings = ledger["settings"]
    lines = [
        f"# {dataset}: knowledge augmentation" + (f" ({', '.join(families)})" if families else ""), "",
        *(f"Command: `{c}`" + ("  " if i < len(commands) - 1 else "") for i, c in enumerate(commands)), "",
        "Test split at the epoch selected on validation (Recall@20 + NDCG@20); mean ± the half-width of the 95% "
        "Student-t interval over the seeds listed (one seed: its figure). Training overrides: "
        f"`{' '.join(settings['overrides'])}`; backbone configs `experiments/{dataset}/<model>.yaml`; features "
        f"built with `--feature-seed {settings['feature_seed']}`. Feature fusion for KAR/REKI rows: "
        f"`{' '.join(EXPERTS)}` (ID embedding + hybrid-expert adaptor output, trained jointly). "
        "LLM calls, tokens and extraction seconds are those of building the features once (pre-stored). "
        "AUC and Logloss (the CTR protocol of KAR and REKI, `cikg evaluate --protocol ctr`): the test positives "
        "against 1 or 4 unseen items per positive drawn once per dataset (the same pairs for every row); "
        "Logloss of sigmoid(score), which BPR does not calibrate. The page re-renders from "
        f"`experiments/{dataset}/{LEDGER}` (`python experiments/augment.py {dataset} --render-only --publish`).", "",
        table(ledger), "",
    ]
    machines: dict = {}
    for r in ledger["runs"].values():
        machines.setdefault(f"{MODEL_LABELS.get(r['model'], r['model'])} {r['method']}", []).append(r.get("hardware"))
    lines += base.hardware_lines(machines)
    if ledger.get("note"):
        lines += [ledger["note"], ""]
    if ledger.get("call_counts"):
        lines += ["## LLM calls: individual vs collective extraction (REKI)", "",
                  "Prompts each extraction sends for this dataset (computed from the requests a run builds; "
                  "collective: one per user group plus one per item group).", "",
                  call_counts_table(ledger["call_counts"]).to_markdown(index=False, floatfmt=".4f", missingval="–"), ""]
    return "\n".join(lines)


def recorded_argv(argv: List[str]) -> List[str]:
    """The command line a table states: without ``--note`` (printed under the table), ``--publish`` /
    ``--replace`` (where it is written) and ``--steps`` (the same command with every step re-creates the table:
    finished features and runs are re-read)."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--note":
            i += 2
        elif argv[i] in ("--publish", "--replace"):
            i += 1
        elif argv[i] == "--steps":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                i += 1
        else:
            out.append(argv[i])
            i += 1
    return out


def ledger_settings(args: argparse.Namespace) -> dict:
    """What every run of one ledger shares (runs trained or built otherwise are not comparable rows)."""
    return {"overrides": list(args.set), "feature_seed": args.feature_seed}


def other_settings(ledger_path: Path, page: Path, settings: dict) -> Optional[str]:
    """Why this report may not add to the ledger at ``ledger_path`` (or, without one, replace ``page``, a page
    rendered before pages had ledgers): its runs were trained or their features built with other settings."""
    if ledger_path.is_file():
        recorded = json.loads(ledger_path.read_text()).get("settings", {})
        differ = [f"{k}: {recorded.get(k)!r} -> {settings[k]!r}" for k in settings if recorded.get(k) != settings[k]]
        return f"its runs were produced with other settings ({', '.join(differ)})" if differ else None
    if not page.is_file():
        return None
    found = re.search(r"Training overrides: `([^`]*)`", page.read_text())
    recorded = found.group(1).split() if found else None
    if recorded is not None and sorted(recorded) != sorted(settings["overrides"]):
        return (f"its rows were trained with overrides {' '.join(recorded)!r}, these with "
                f"{' '.join(settings['overrides'])!r}")
    return None


def write_report(args: argparse.Namespace, target: Path, runs_root: Path, features_root: Path, dataset) -> int:
    """Record the finished runs in the ledger beside ``target`` and render ``target`` from it."""
    from cikg.augment.kar import KARConfig
    from cikg.augment.reki import call_counts

    ledger_path = target.with_name(LEDGER)
    settings = ledger_settings(args)
    with base.locked_ledger(ledger_path) as ledger:
        if other_settings(ledger_path, target, settings):  # only with --replace (main refuses before running)
            ledger.clear()  # replaced deliberately: the runs of the other settings go with it
        read = record_runs(ledger, args, runs_root, features_root, args.command)
        ledger["settings"] = settings
        counts = call_counts(dataset, args.call_counts, KARConfig(history_len=20))
        ledger["call_counts"] = json.loads(counts.to_json(orient="records"))  # the individual row's groups: null
        if args.note:
            ledger["note"] = args.note
    logging.info("%d finished run(s) recorded in %s", read, ledger_path)
    base.show_page(target, render(args.dataset, ledger), args.dataset, hint=not args.publish and not args.output)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["dbbook2014", "book-crossing", "ml1m"])
    parser.add_argument("--methods", nargs="+", default=["none", "kar", "reki-col:50", "reki-both:50"])
    parser.add_argument("--models", nargs="+", default=["lightgcn", "cikgrec"], choices=list(MODEL_LABELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", nargs="+", default=["features", "train", "report"],
                        choices=["features", "train", "report"])
    parser.add_argument("--set", nargs="*", default=["train.epochs=60", "train.lr=0.005", "train.progress=false"],
                        help="overrides of every training run (key=value)")
    parser.add_argument("--device", default=None, help="train.device for the runs (cpu, cuda, auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (train.threads and encoding)")
    parser.add_argument("--feature-seed", type=int, default=2024,
                        help="seed of feature building (REKI clustering, LLM-CF sampling, CoCo training)")
    parser.add_argument("--base-url", help="OpenAI-compatible server of the *-llm methods (default: start the "
                                           "bundled SmolLM2 with llama.cpp while they extract)")
    parser.add_argument("--llm-model", default="smollm2", help="model name of --base-url")
    parser.add_argument("--max-tokens", type=int, default=96, help="answer length of the *-llm methods")
    parser.add_argument("--out", default="runs/augment")
    parser.add_argument("--call-counts", nargs="+", type=int, default=[10, 50, 200, 1000],
                        help="group counts of the REKI LLM-call table")
    parser.add_argument("--output", help="results file (default <out>/<dataset>/augment.md; with --publish "
                                         "experiments/<dataset>/augment.md)")
    parser.add_argument("--publish", action="store_true", help="write the tracked table experiments/<dataset>/augment.md")
    parser.add_argument("--replace", action="store_true",
                        help="with --publish: replace a table produced with other training overrides (deliberately)")
    parser.add_argument("--note", default="", help="a line added under the table (e.g. where the runs ran); kept "
                                                   "in the ledger for later renders")
    parser.add_argument("--render-only", action="store_true",
                        help="read no runs: re-render the page from its ledger (augment.json beside it)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command = base.command_of("augment.py", recorded_argv(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from cikg.train import load_run_config, load_run_dataset

    for name in args.methods:
        method_of(name)
    out = Path(args.out)
    target = Path(args.output) if args.output else (HERE if args.publish else out) / args.dataset / "augment.md"
    if args.render_only:
        if not target.with_name(LEDGER).is_file():
            return base.refuse("augment.py", f"{target.with_name(LEDGER)}: no ledger to render (run --steps report)")
        ledger = json.loads(target.with_name(LEDGER).read_text())
        base.show_page(target, render(args.dataset, ledger), args.dataset, hint=not args.publish and not args.output)
        return 0
    refusal = "report" in args.steps and other_settings(target.with_name(LEDGER), target, ledger_settings(args))
    if refusal and not args.replace:
        return base.refuse("augment.py", f"{target}: {refusal}; nothing was run (leave --publish out, write to "
                                    "--output, or pass --replace)")
    features_root = out / args.dataset / "features"
    runs_root = out / args.dataset
    dataset = load_run_dataset(load_run_config(HERE / args.dataset / "lightgcn.yaml"))
    if "features" in args.steps:
        for name in args.methods:
            if method_of(name).build is not None:
                copy_answers(args.dataset, features_of(name), feature_dir(features_root, name, dataset, args))
    if "train" in args.steps:
        overrides = list(args.set) + [f"train.threads={args.threads}"]
        if args.device:
            overrides.append(f"train.device={args.device}")
        for model in args.models:
            for name in args.methods:
                method = method_of(name)
                extra = list(method.fusion)
                if method.build is not None:
                    path = features_path(features_root, name)
                    if not (path / "features.pt").exists():
                        raise SystemExit(f"{path}/features.pt missing: run --steps features first")
                    extra.append(f"data.features={path}")
                for seed in args.seeds:
                    base.run_one(args.dataset, model, seed, [*overrides, *extra], out, run_dir_label(model, name))
    if "report" in args.steps:
        return write_report(args, target, runs_root, features_root, dataset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
