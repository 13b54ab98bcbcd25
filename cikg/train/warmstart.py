"""Warm starts: a model's user and item ID embeddings from another trained run (``train.init_from``).

KGAT's released commands (``--pretrain -1``) start users and items from a trained BPR-MF of the same dimension
and every other parameter from Xavier; :func:`warm_start` does that for any model with ID embeddings
(:meth:`~cikg.models.base.Recommender.id_embeddings`) from any trained run over the same dataset.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import torch

from ..data import Dataset
from ..errors import ConfigError
from ..models.base import Recommender

logger = logging.getLogger(__name__)


def absolute_init_from(init_from: str) -> str:
    """``train.init_from`` as a run records it: an absolute path."""
    return str(Path(init_from).expanduser().resolve())


def warm_start(model: Recommender, dataset: Dataset, init_from: Union[str, Path]) -> None:
    """Copy the ``embed()`` of the run in ``init_from`` (its selected weights) into ``model``'s ID embeddings.

    Raises:
        ConfigError: ``init_from`` is not a finished run directory, was trained on other data, or its
            embeddings do not fit ``model`` (another dimension, or a model without ID embeddings).
    """
    from .rundir import dataset_fingerprint, fingerprint_difference
    from .trainer import load_run

    run_dir = Path(init_from)
    if not (run_dir / "best_model.pt").is_file():
        raise ConfigError(f"{run_dir} is not a trained run directory (no best_model.pt): train the run to start "
                          "from first", "train.init_from")
    device, threads = next(model.parameters()).device, torch.get_num_threads()
    try:
        source = load_run(run_dir, device=str(device))
    finally:  # reopening applies the source run's train.threads to this process: keep this run's own
        torch.set_num_threads(threads)
    if dataset_fingerprint(source.dataset) != dataset_fingerprint(dataset):
        raise ConfigError(f"{run_dir} was trained on other data than {dataset.name!r} "
                          f"({fingerprint_difference(source.dataset, dataset)})", "train.init_from")
    source.model.eval()
    with torch.no_grad():
        users, items = source.model.embed()
    model.init_embeddings(users, items)
    logger.info("user and item embeddings start from %s (%s, dim %d)", run_dir, source.config.model_name,
                users.size(1))
