"""Helpers the model tests share: the graph of a dataset, a BPR batch, a short run on the synthetic dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch

from cikg.graph import GraphViews, build_cikg, build_views
from cikg.models.base import BPRBatch
from cikg.train import Trainer, run_config_from_dict


def views_of(dataset, **kwargs) -> GraphViews:
    """The one graph object of ``dataset`` (``build_cikg`` keyword arguments pass through), no view prebuilt."""
    return build_views(build_cikg(dataset, **kwargs), views=())


def batch_of(dataset, size: int = 64, seed: int = 0) -> BPRBatch:
    """``size`` random train interactions with uniform negatives, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(dataset.train.size(1), (size,), generator=g)
    return BPRBatch(dataset.train[0, idx], dataset.train[1, idx], torch.randint(dataset.n_items, (size,), generator=g))


def short_synthetic_run(model: dict, lr: float, run_dir: Path, epochs: int = 6) -> Tuple[Trainer, float, object]:
    """``(trainer, valid Recall@20 before training, fit result)`` of a short run on 400 synthetic users."""
    config = run_config_from_dict({
        "data": {"dataset": "synthetic", "synthetic_users": 400, "synthetic_items": 120, "synthetic_seed": 1},
        "model": model,
        "train": {"epochs": epochs, "batch_size": 256, "lr": lr, "seed": 0, "ks": [20], "threads": 1,
                  "progress": False, "select": ["recall@20"], "patience": 0},
    })
    trainer = Trainer(config, run_dir)
    before = trainer.evaluate("valid")["recall@20"]
    return trainer, before, trainer.fit(resume=False)
