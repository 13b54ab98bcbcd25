"""One call from the LLM layer's phrases to clustered interests, their files, and the updated Dataset."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import pandas as pd

from ..embed import Encoder
from .cluster import ClusterConfig, InterestClustering, fit_interests
from .io import read_raw_interests, save_interests

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(repr=False)
class StructuredInterests:
    """What :func:`structure_interests` made: the fit, the files written (name → path), and the dataset
    with the new interests (``None`` when no dataset was given)."""

    clustering: InterestClustering
    paths: Dict[str, Path]
    dataset: Optional[Any]

    def __repr__(self) -> str:
        return (
            f"StructuredInterests({self.clustering!r}, files={sorted(self.paths)}, dataset={self.dataset!r})"
        )


def structure_interests(
    source: Union[pd.DataFrame, PathLike],
    config: ClusterConfig,
    *,
    dataset: Optional[Any] = None,
    encoder: Optional[Encoder] = None,
    out_dir: Optional[PathLike] = None,
    warn: bool = True,
) -> StructuredInterests:
    """Cluster the interest phrases of ``source`` and, when asked, write them and update ``dataset``.

    Args:
        source: a ``(user, phrase)`` frame, or ``user_interests_raw.jsonl`` / a directory holding it.
        config: the clustering configuration.
        dataset: a :class:`cikg.data.Dataset` whose users the phrases belong to; gives the id offset of
            interest ids (``n_entities``) and is returned with the interests replaced.
        encoder: the sentence encoder and its cache (MiniLM embedding); a fresh in-memory one if ``None``.
        out_dir: where to write the files of :func:`cikg.interests.io.save_interests`.
        warn: log a warning when the kept interests cover too few users (:func:`fit_interests`).
    """
    pairs = source if isinstance(source, pd.DataFrame) else read_raw_interests(source)
    offset = dataset.n_entities if dataset is not None else 0
    clustering = fit_interests(pairs, config, encoder=encoder, id_offset=offset, warn=warn)
    updated = clustering.to_dataset(dataset) if dataset is not None else None
    paths = save_interests(clustering, out_dir) if out_dir is not None else {}
    log.info("%r", clustering)
    return StructuredInterests(clustering, paths, updated)
