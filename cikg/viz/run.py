"""All the plots of one run directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import matplotlib.pyplot as plt
import pandas as pd

from ._common import PathLike
from .groups import plot_groups
from .history import plot_loss_terms, plot_mask_schedule, plot_valid_metrics, read_history


def selected_epoch(run_dir: PathLike) -> Optional[int]:
    """The epoch a finished run selected on validation (``metrics.json``), or ``None`` before it finished."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("best_epoch") or None


def plot_run(run_dir: PathLike) -> List[Path]:
    """Write ``loss_terms.png``, ``valid_metrics.png`` (and ``mask_rate.png``, ``groups.png`` when the
    run has them) into ``run_dir``; returns the paths."""
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    best = selected_epoch(run_dir)
    out = [run_dir / "loss_terms.png", run_dir / "valid_metrics.png"]
    plot_loss_terms(history, out[0], title=f"{run_dir.name}: loss terms", best_epoch=best)
    plot_valid_metrics({run_dir.name: history}, path=out[1], best_epochs={run_dir.name: best} if best else None)
    if "mask_rate" in history:
        out.append(run_dir / "mask_rate.png")
        plot_mask_schedule(history["mask_rate"].tolist(), out[-1], title=f"{run_dir.name}: UIR mask rate")
    if (run_dir / "groups.csv").exists():
        out.append(run_dir / "groups.png")
        plot_groups({run_dir.name: pd.read_csv(run_dir / "groups.csv")}, path=out[-1])
    plt.close("all")
    return out
