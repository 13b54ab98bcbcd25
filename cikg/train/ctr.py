"""The CTR protocol of a run directory (:mod:`cikg.eval.ctr`), kept beside the run in ``ctr_metrics.json``.

``cikg evaluate RUN_DIR --protocol ctr`` and the experiment tables read the figures through :func:`run_ctr`:
computed once per selected weights (the SHA-256 of ``best_model.pt`` is stored with them), on the negatives
saved under ``negatives_dir`` (default ``ctr_negatives/`` beside the run directory), which every run of a
dataset in that folder shares.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .._io import sha256_file, write_json_atomic
from ..eval.ctr import RATIOS, evaluate_ctr, load_or_sample_negatives
from .trainer import load_run

CTR_FILE = "ctr_metrics.json"


def negatives_dir_of(run_dir: Union[str, Path]) -> Path:
    """Where the CTR negatives of a run are saved by default: ``ctr_negatives/`` beside the run directory."""
    return Path(run_dir).resolve().parent / "ctr_negatives"


def run_ctr(run_dir: Union[str, Path], negatives_dir: Optional[Union[str, Path]] = None, trainer=None,
            device: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """``{"1:1": row, "1:4": row}`` (:meth:`cikg.eval.ctr.CTRResult.row` and ``weights_sha256``) of the run's
    selected model, read from ``RUN_DIR/ctr_metrics.json`` when it scored the same weights, else computed
    (reopening the run unless ``trainer``, a :func:`~cikg.train.load_run` of it, is given) and written there."""
    run_dir = Path(run_dir)
    weights = sha256_file(run_dir / "best_model.pt") if (run_dir / "best_model.pt").is_file() else ""
    path = run_dir / CTR_FILE
    if weights and path.is_file():
        kept = json.loads(path.read_text())
        if {f"1:{r}" for r in RATIOS} <= set(kept) and all(row.get("weights_sha256") == weights for row in kept.values()):
            return kept
    trainer = trainer if trainer is not None else load_run(run_dir, device=device)
    directory = Path(negatives_dir) if negatives_dir is not None else negatives_dir_of(run_dir)
    rows = {}
    for ratio in RATIOS:
        negatives = load_or_sample_negatives(trainer.dataset, ratio, directory)
        rows[f"1:{ratio}"] = {**evaluate_ctr(trainer.model, trainer.dataset, negatives=negatives).row(),
                              "weights_sha256": weights}
    write_json_atomic(path, rows)
    return rows


__all__ = ["CTR_FILE", "negatives_dir_of", "run_ctr"]
