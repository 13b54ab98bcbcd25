"""Which kappa? (``cikg interests sweep``) Cluster the phrases at each kappa, train a short CIKGRec on each,
and put the validation Recall@K beside the predictive score (:mod:`cikg.interests.report`) per kappa.

The results ledger ``sweep.json`` in the output directory holds the settings and one row per finished
kappa; a re-run skips the kappas already there (resumable after a kill: a kappa's training run directory
``kappa-K/`` resumes from its checkpoint), and refuses a ledger written with other settings. Outputs:
``sweep.csv``, ``sweep.md`` and ``sweep.png`` (validation Recall@K and the score's AUC against kappa).
Only train and validation items are used; test metrics of the short runs are not reported.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from .._io import write_json_atomic, write_text_atomic
from ..embed import Encoder
from ..errors import ConfigError, DatasetError
from ..interests.cluster import ClusterConfig, coverage_problem, fit_interests
from ..interests.report import cluster_source, item_vectors, score_interests
from ..models import CIKGRecConfig

log = logging.getLogger(__name__)

PathLike = Any
LEDGER = "sweep.json"
TABLE_CSV = "sweep.csv"
TABLE_MD = "sweep.md"
PLOT = "sweep.png"


def parse_kappas(text: str) -> List[int]:
    """``A:B:S`` (inclusive range with step), ``A:B`` (step 1) or ``A,B,C`` → sorted distinct kappas >= 2."""
    try:
        if ":" in text:
            parts = [int(x) for x in text.split(":")]
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1) or parts[0] > parts[1]:
                raise ValueError
            kappas = list(range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1))
        else:
            kappas = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected A:B:STEP (A <= B), A:B or A,B,C, got {text!r}", "kappa") from None
    if not kappas or min(kappas) < 2:
        raise ConfigError(f"every kappa must be >= 2, got {text!r}", "kappa")
    return sorted(set(kappas))


def sweep_kappa(dataset: Any, pairs: pd.DataFrame, kappas: Sequence[int], out_dir: PathLike, *,
                cluster: Optional[ClusterConfig] = None, model: Any = None, train: Any = None,
                encoder: Optional[Encoder] = None, k: int = 20, item_text: str = "title") -> pd.DataFrame:
    """Cluster ``pairs`` at each kappa, train ``model`` (default a CIKGRec) on ``dataset`` with those interests
    for ``train`` (default 5 epochs), and score the interests; returns one row per kappa (the ledger's).

    Args:
        dataset: the :class:`cikg.data.Dataset` (with a validation split) the phrases' users belong to.
        pairs: ``(user, phrase)`` rows (``read_raw_interests``).
        kappas: the numbers of clusters to try.
        out_dir: where the ledger, the tables, the plot and the ``kappa-K/`` run directories go.
        cluster: the clustering settings but kappa (default :class:`ClusterConfig`'s).
        model: a model config (default ``CIKGRecConfig(total_epoch=epochs)``); train: a ``TrainConfig``.
        encoder: the sentence encoder and its cache; k: the Recall cut-off of both numbers.
        item_text: the item text of the predictive score (``title`` | ``title+kg``).
    """
    from .config import DataConfig, RunConfig, TrainConfig
    from .trainer import Trainer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cluster = cluster or ClusterConfig(kappa=2)
    train = train or TrainConfig(epochs=5, patience=0, ks=(k,), select=(f"recall@{k}",))
    model = model or CIKGRecConfig(total_epoch=max(train.epochs, 2))
    encoder = encoder or Encoder()
    if f"recall@{k}" not in {f"recall@{x}" for x in train.ks}:
        raise ConfigError(f"train.ks {train.ks} lacks the cut-off {k}", "k")
    settings = {"dataset": dataset.name, "n_users": dataset.n_users, "n_items": dataset.n_items,
                "phrases": int(len(pairs)), "k": k, "item_text": item_text,
                "cluster": {key: _plain(v) for key, v in dataclasses.asdict(cluster).items()
                            if key not in ("kappa", "kappa_range", "kappa_step", "n_threads")},
                "model": {"name": type(model).__name__, **{key: _plain(v) for key, v in dataclasses.asdict(model).items()}},
                "train": {key: _plain(v) for key, v in dataclasses.asdict(train).items()
                          if key not in ("progress", "device", "threads", "eval_block_size")}}
    ledger = _read_ledger(out / LEDGER, settings)
    items, has_text = None, None
    for kappa in kappas:
        if str(kappa) in ledger["rows"]:
            log.info("kappa=%d: done before (in %s), skipped", kappa, out / LEDGER)
            continue
        started = time.perf_counter()
        config = dataclasses.replace(cluster, kappa=int(kappa), kappa_range=None)
        clustering = fit_interests(pairs, config, encoder=encoder, id_offset=dataset.n_entities)
        row: Dict[str, Any] = {"kappa": int(kappa), "interests": clustering.n_interests,
                               "users_with_interest": int(len(set(clustering.edges[0].tolist()))),
                               "dropped_popularity_cap": clustering.dropped["too_many_users"],
                               "dropped_minimum_size": clustering.dropped["too_few_users"]}
        if not clustering.n_interests:
            row.update({"status": "no interests", "reason": coverage_problem(clustering) or "no interest kept"})
        else:
            if items is None:
                items, has_text = item_vectors(dataset, encoder, item_text)
            score = score_interests(dataset, {"clusters": cluster_source(clustering.phrases, clustering.edges,
                                                                         encoder)},
                                    items, has_text, k=k, pools=("mean",)).rows[0]
            run = RunConfig(data=DataConfig(dataset=dataset.name), model=model, train=train, name=f"kappa-{kappa}")
            fit = Trainer(run, out / f"kappa-{kappa}", dataset=clustering.to_dataset(dataset)).fit()
            row.update({"status": "ok", f"valid_recall@{k}": fit.valid[f"recall@{k}"],
                        f"valid_ndcg@{k}": fit.valid.get(f"ndcg@{k}"), "best_epoch": fit.best_epoch,
                        "score_users": score.users, "score_auc": score.auc, f"score_recall@{k}": score.recall,
                        "popularity_auc": score.popularity_auc, f"popularity_recall@{k}": score.popularity_recall})
        row["seconds"] = round(time.perf_counter() - started, 2)
        ledger["rows"][str(kappa)] = row
        write_json_atomic(out / LEDGER, ledger)
        log.info("kappa=%d: %s", kappa, row)
    table = pd.DataFrame(sorted(ledger["rows"].values(), key=lambda r: r["kappa"]))
    order = ["kappa", "status", f"valid_recall@{k}", f"valid_ndcg@{k}", "score_auc", f"score_recall@{k}",
             "popularity_auc", f"popularity_recall@{k}", "score_users", "interests", "users_with_interest",
             "dropped_popularity_cap", "dropped_minimum_size", "best_epoch", "seconds", "reason"]
    table = table.reindex(columns=[c for c in order if c in table.columns])
    write_text_atomic(out / TABLE_CSV, table.to_csv(index=False))
    write_text_atomic(out / TABLE_MD, f"# kappa sweep on {dataset.name}\n\n"
                      f"Valid Recall@{k} of a {train.epochs}-epoch {settings['model']['name']} per kappa, beside the "
                      f"predictive score (cluster centroids, mean pool) and its popularity baseline.\n\n"
                      + table.to_markdown(index=False, floatfmt=".4f") + f"\n\n![sweep]({PLOT})\n")
    plot_sweep(table, out / PLOT, k)
    return table


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else list(value) if isinstance(value, tuple) else value


def _read_ledger(path: Path, settings: Dict[str, Any]) -> Dict[str, Any]:
    if not path.is_file():
        return {"settings": settings, "rows": {}}
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"not valid JSON ({err.msg})", path, err.lineno) from None
    if not isinstance(ledger, dict) or not isinstance(ledger.get("rows"), dict):
        raise DatasetError("not a sweep ledger (expected an object with 'settings' and 'rows')", path)
    stored = json.loads(json.dumps(ledger.get("settings"), default=str))
    if stored != json.loads(json.dumps(settings, default=str)):
        changed = sorted(key for key in settings if (stored or {}).get(key) != json.loads(
            json.dumps(settings[key], default=str)))
        raise ConfigError(f"{path} holds a sweep with other settings (differs in {', '.join(changed)}); "
                          "use another --out or delete it", "out")
    return ledger


def plot_sweep(table: pd.DataFrame, path: Path, k: int) -> Optional[Path]:
    """Valid Recall@K (left axis) and the predictive score's AUC with its popularity baseline (right axis)
    against kappa."""
    import matplotlib.pyplot as plt

    from .. import viz  # noqa: F401  (selects the file backend)
    from ..viz._common import finish

    done = table[table["status"] == "ok"] if "status" in table else table.iloc[:0]
    if done.empty:
        return None
    fig, left = plt.subplots(figsize=(6.5, 3.8))
    left.plot(done["kappa"], done[f"valid_recall@{k}"], marker="o", color="#4C72B0", label=f"valid Recall@{k}")
    left.set_xlabel("kappa (clusters)")
    left.set_ylabel(f"valid Recall@{k} (CIKGRec)", color="#4C72B0")
    right = left.twinx()
    right.plot(done["kappa"], done["score_auc"], marker="s", color="#DD8452", label="interest score AUC")
    right.plot(done["kappa"], done["popularity_auc"], linestyle="--", marker="x", color="0.5",
               label="popularity AUC")
    right.set_ylabel("predictive score AUC", color="#DD8452")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    fig.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower center", ncol=3, frameon=False)
    left.set_xticks(done["kappa"].tolist())
    left.set_title("kappa sweep: training result vs predictive score")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    finish(fig, path, layout=False)
    plt.close(fig)
    return path
