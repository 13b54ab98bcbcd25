"""``cikg runs compare``: the settings in which run directories differ, their metrics, and their curves.

Reads only what a run directory holds: ``config.yaml`` (the settings), ``metrics.json`` (the selected epoch's
valid and test metrics; absent while a run is still going) and ``metrics.jsonl`` (one record per epoch).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import pandas as pd

from ..config import flatten, load_yaml
from ..errors import CikgError

PathLike = Union[str, Path]


def _labels(run_dirs: Sequence[Path]) -> List[str]:
    """Each run's directory name, or its path where two runs share a name."""
    names = [d.name for d in run_dirs]
    return [d.name if names.count(d.name) == 1 else str(d) for d in run_dirs]


def _read_run(run_dir: Path) -> Dict[str, object]:
    if not (run_dir / "config.yaml").is_file():
        raise CikgError(f"{run_dir}: not a run directory (no config.yaml)")
    config = flatten(load_yaml(run_dir / "config.yaml"))
    metrics_path = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    except json.JSONDecodeError as err:
        raise CikgError(f"{metrics_path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    return {"config": config, "metrics": metrics}


def differing_keys(configs: Sequence[Dict[str, object]]) -> List[str]:
    """Dotted config keys with more than one value among the configs that have them (a key only one model
    has, e.g. CIKGRec's ``model.uir_weight`` next to a LightGCN run, is not a difference but not applicable)."""
    keys = sorted(set().union(*configs))
    return [k for k in keys if len({json.dumps(c[k], default=str) for c in configs if k in c}) > 1]


def compare_runs(run_dirs: Sequence[PathLike], metrics: Sequence[str] = ("recall@20", "ndcg@20")) -> pd.DataFrame:
    """One row per run: the config keys that differ between the runs, the best epoch and, per metric,
    ``valid <metric>`` and ``test <metric>`` of the selected epoch (test empty while a run is unfinished)."""
    if not run_dirs:
        raise CikgError("runs compare needs at least one run directory")
    dirs = [Path(d) for d in run_dirs]
    runs = [_read_run(d) for d in dirs]
    keys = differing_keys([r["config"] for r in runs]) if len(runs) > 1 else []
    keys.sort(key=lambda k: k != "model.name")
    rows = []
    for label, run in zip(_labels(dirs), runs):
        row: Dict[str, object] = {"run": label, **{k: _cell(run["config"].get(k)) for k in keys}}
        if "model.name" not in keys:  # which model, even when all runs share it
            row = {"run": label, "model": run["config"].get("model.name"), **{k: row[k] for k in keys}}
        done = run["metrics"]
        row["best epoch"] = done["best_epoch"] if done else None
        for metric in metrics:
            row[f"valid {metric}"] = done["valid"].get(metric) if done else None
            row[f"test {metric}"] = done["test"].get(metric) if done else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for metric in metrics:
        if frame[f"valid {metric}"].isna().all():
            known = sorted(next((r["metrics"]["valid"] for r in runs if r["metrics"]), {}))
            raise CikgError(f"no run has metric {metric!r}; the runs report {', '.join(known) or 'nothing yet'}")
    return frame


def _cell(value: object) -> str:
    """A setting as written in config.yaml (``0.0001``, ``[20, 50]``, ``true``); blank where not applicable."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """The table as markdown: settings as written in config.yaml, metrics to 4 decimals."""
    shown = frame.copy()
    for column in shown.columns:
        if column.startswith(("valid ", "test ")):
            shown[column] = [f"{v:.4f}" if pd.notna(v) else "" for v in shown[column]]
    shown = shown.astype(object).where(shown.notna(), "")
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def plot_compare(run_dirs: Sequence[PathLike], metrics: Sequence[str], path: Optional[PathLike] = None):
    """The valid metrics per epoch of every run (from ``metrics.jsonl``), one panel per metric; a finished run's
    epoch selected on validation is starred."""
    from ..viz import plot_valid_metrics, read_history

    dirs = [Path(d) for d in run_dirs]
    histories, best_epochs = {}, {}
    for label, run_dir in zip(_labels(dirs), dirs):
        if not (run_dir / "metrics.jsonl").exists():
            raise CikgError(f"{run_dir}: no metrics.jsonl yet (no epoch finished)")
        histories[label] = read_history(run_dir)
        done = _read_run(run_dir)["metrics"]
        if done:  # a finished run: star its epoch selected on validation
            best_epochs[label] = done["best_epoch"]
    return plot_valid_metrics(histories, metrics=metrics, path=path, best_epochs=best_epochs)


__all__ = ["compare_runs", "differing_keys", "plot_compare", "to_markdown"]
