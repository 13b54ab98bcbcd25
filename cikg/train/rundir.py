"""Run directories that reopen from anywhere, whatever created them (CLI, Python, notebook).

At the start of :meth:`~cikg.train.Trainer.fit` the trainer records, beside ``config.yaml``::

    dataset.json   how to rebuild the run's dataset: its source (an absolute directory, the synthetic
                   generator's settings, or ``dataset/`` inside the run), a SHA-256 of every file read,
                   and a fingerprint of the loaded tensors and id maps
    dataset/       only for a dataset built in memory (``from_pandas``, ``synthetic`` with other settings,
                   replaced interests ...): the dataset itself, written by ``save_dataset``

Paths in ``config.yaml`` are absolute (a bare dataset name such as ``dbbook2014``, resolved under
``$CIKG_DATA`` / ``../shared/data``, stays a name); ``dataset.json`` names a copy inside the run relative to
the run directory, so a run directory can be moved or copied and still reopens. Reopening checks the hashes
and the fingerprint and refuses, naming the file, when the data changed since training.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from .._io import sha256_file, write_json_atomic
from ..data import Dataset, load_dataset, resolve_dataset_path, save_dataset
from ..errors import CheckpointError, ConfigError, DatasetError
from ..graph import GraphViews
from .config import DataConfig, RunConfig

logger = logging.getLogger(__name__)

DATASET_RECORD = "dataset.json"
SAVED_DATASET = "dataset"
RECORD_VERSION = 1
DATASET_FILES = ("train.txt", "valid.txt", "test.txt", "kg_final.txt", "user_interest_clustered.txt",
                 "interest_list.txt", "user_list.txt", "item_list.txt", "entity_list.txt", "relation_list.txt",
                 "meta.json")
"""The files of a dataset directory that ``load_dataset`` reads (hashed in ``dataset.json``)."""
PATH_KEYS = ("dataset", "root", "interests", "features")
"""The ``data`` settings that hold paths (made absolute in a run's ``config.yaml``)."""
RUN_FILES = ("config.yaml", DATASET_RECORD, "checkpoint.pt", "best_model.pt", "metrics.jsonl", "metrics.json",
             "groups.csv", "per_user_test.csv.gz", "ctr_metrics.json", "mlflow.json", "loss_terms.png",
             "valid_metrics.png", "mask_rate.png", "groups.png")
"""What the trainer, its trackers and ``cikg plot`` write into a run directory (``fit(overwrite=True)`` removes
these, and the folders in :data:`RUN_FOLDERS`)."""
RUN_FOLDERS = ("tensorboard",)
"""Folders a run's default trackers write (their event files would mix two runs' curves)."""


# ---------------------------------------------------------------------------------------------- hashes
def directory_hashes(directory: Path) -> Dict[str, str]:
    """SHA-256 of each dataset file present in ``directory``."""
    return {name: sha256_file(directory / name) for name in DATASET_FILES if (directory / name).is_file()}


def _hash_tensor(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.numpy().tobytes())


_FINGERPRINT_TENSORS = ("train", "valid", "test", "kg", "user_interest")
_FINGERPRINT_FIELDS = ("n_users", "n_items", "n_entities", "n_relations", "n_interests", "user_ids", "item_ids",
                       "entity_ids", "relation_ids", "relation_names", "interest_ids", "item_text")


def dataset_fingerprint(dataset: Dataset) -> str:
    """A hash of what :meth:`Dataset.equals` compares: splits, KG, interests, counts and id maps."""
    digest = hashlib.sha256()
    for name in _FINGERPRINT_TENSORS:
        _hash_tensor(digest, getattr(dataset, name))
    digest.update(json.dumps([_plain(getattr(dataset, name)) for name in _FINGERPRINT_FIELDS]).encode())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    return value if isinstance(value, int) else list(value)


def fingerprint_difference(a: Dataset, b: Dataset) -> str:
    """The names of the fingerprinted fields that differ between ``a`` and ``b`` (``""`` when none)."""
    tensors = [n for n in _FINGERPRINT_TENSORS if not torch.equal(getattr(a, n), getattr(b, n))]
    fields = [n for n in _FINGERPRINT_FIELDS if _plain(getattr(a, n)) != _plain(getattr(b, n))]
    return ", ".join(tensors + fields)


def views_fingerprint(views: GraphViews) -> str:
    """A hash of a graph's node counts, edges and node features (what a model is built and trained on)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([views.counts, views.self_loops, sorted(views.edges),
                              {t: sorted(b.items()) for t, b in views.feature_blocks.items()}]).encode())
    for part in sorted(views.edges):
        _hash_tensor(digest, views.edges[part])
    for node_type in sorted(views.features):
        _hash_tensor(digest, views.features[node_type])
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- paths
def canonical_data_path(key: str, value: Any) -> Any:
    """A ``data`` path setting made absolute; ``synthetic`` and bare dataset names (not a folder here) stay."""
    if not isinstance(value, str) or key not in PATH_KEYS or (key == "dataset" and value == "synthetic"):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if key == "dataset" and len(path.parts) == 1 and not path.exists():
        return value  # a name under $CIKG_DATA / ../shared/data: the same from any working directory
    return str(path.resolve())


def absolute_data_paths(data: DataConfig) -> DataConfig:
    return dataclasses.replace(data, **{key: canonical_data_path(key, getattr(data, key)) for key in PATH_KEYS})


# ---------------------------------------------------------------------------------------------- recording
def describe_dataset(dataset: Dataset, data: DataConfig) -> Optional[DataConfig]:
    """The ``data`` section that rebuilds ``dataset`` from where it came from, or ``None`` when it was made in
    memory. Only a candidate: :func:`prepare_run_data` rebuilds it and compares fingerprints."""
    meta = dataset.meta
    source, split = meta.get("source"), meta.get("split") or {}
    changes: Dict[str, Any] = {"root": None, "interests": None}
    if source == "synthetic":
        settings = meta.get("synthetic") or {}
        changes.update(dataset="synthetic", synthetic_users=settings.get("n_users", 0),
                       synthetic_items=settings.get("n_items", 0), synthetic_seed=settings.get("seed", 0))
    elif isinstance(source, str) and Path(source).is_dir():
        changes["dataset"] = str(Path(source).resolve())
        if split.get("method") == "carved from train per user":
            changes.update(valid_fraction=split["fraction"], split_seed=split["seed"])
    else:
        return None
    interests = meta.get("interests_source")
    if isinstance(interests, str) and interests and Path(interests).is_file():
        changes["interests"] = str(Path(interests).resolve())
    try:
        return dataclasses.replace(data, **changes)
    except ConfigError:  # settings the config cannot hold (a synthetic dataset of 5 items)
        return None


def _rebuild(data: DataConfig) -> Optional[Dataset]:
    from .trainer import load_run_dataset

    try:
        return load_run_dataset(data)
    except (DatasetError, ConfigError, ValueError) as err:
        logger.debug("cannot rebuild the dataset from %s: %s", data, err)
        return None


@dataclass
class RunData:
    """What a run records about its data: the config that names it and the ``dataset.json`` payload."""

    config: RunConfig
    record: Dict[str, Any]
    dataset: Dataset

    @property
    def saves_copy(self) -> bool:
        return self.record["kind"] == "saved"

    def write(self, run_dir: Path) -> None:
        """Write ``dataset.json`` (and ``dataset/`` for an in-memory dataset, unless it is already there).

        Raises:
            CheckpointError: the in-memory dataset does not survive a save and reload (it could not be
                reopened); nothing is kept of the copy.
        """
        path = run_dir / DATASET_RECORD
        previous = _read_record(path) if path.is_file() else None
        if self.saves_copy:
            copy = run_dir / SAVED_DATASET
            if previous is None or previous.get("fingerprint") != self.record["fingerprint"] or not copy.is_dir():
                _save_copy(self.dataset, copy, self.record["fingerprint"])
            self.record["files"] = directory_hashes(copy)
        write_json_atomic(path, self.record)


def _save_copy(dataset: Dataset, copy: Path, fingerprint: str) -> None:
    if copy.exists():
        shutil.rmtree(copy)
    save_dataset(dataset, copy)
    try:
        reloaded = load_dataset(copy)
        problem = "" if dataset_fingerprint(reloaded) == fingerprint else (
            "these differ after reloading: " + fingerprint_difference(dataset, reloaded))
    except DatasetError as err:
        problem = f"unreadable: {str(err)[:200]}"
    if problem:
        shutil.rmtree(copy)
        raise CheckpointError(f"{dataset.name} was built in memory and does not survive save_dataset + load_dataset "
                              f"({problem})"
                              f", so a run trained on it could not be reopened; save it with save_dataset, fix what "
                              "load_dataset reports and train on the saved directory")
    size = sum(p.stat().st_size for p in copy.iterdir())
    logger.info("%s was built in memory: saved it to %s (%.1f MB) so the run reopens", dataset.name, copy,
                size / 1e6)


def prepare_run_data(config: RunConfig, dataset: Dataset, views: GraphViews, run_dir: Path,
                     dataset_given: bool, views_given: bool) -> RunData:
    """The config naming the run's real data, and its ``dataset.json`` record (nothing is written here).

    A dataset passed to the trainer is described by its source when rebuilding it from there gives the same
    fingerprint; otherwise it is saved into the run (``dataset/``). Views passed to the trainer must be the
    graph that ``config.data`` builds from that dataset.

    Raises:
        ConfigError: ``views`` are not the graph ``config.data`` builds (the run could not be reopened).
    """
    data = absolute_data_paths(config.data)
    fingerprint = dataset_fingerprint(dataset)
    kind = None
    if dataset_given:
        described = describe_dataset(dataset, data)
        rebuilt = _rebuild(described) if described is not None else None
        if rebuilt is not None and dataset_fingerprint(rebuilt) == fingerprint:
            data = described
        else:
            kind = "saved"
            data = dataclasses.replace(data, dataset=str((run_dir / SAVED_DATASET).resolve()), root=None,
                                       interests=None)
    config = dataclasses.replace(config, data=data)
    if views_given:
        _check_views(config, dataset, views)
    record: Dict[str, Any] = {"version": RECORD_VERSION, "name": dataset.name, "n_users": dataset.n_users,
                              "n_items": dataset.n_items, "split": dataset.meta.get("split", {}),
                              "fingerprint": fingerprint, "interests": None, "features": None}
    if kind == "saved":
        record.update(kind="saved", path=SAVED_DATASET, files={})
    elif data.dataset == "synthetic":
        record.update(kind="synthetic", path=None, files={})
    else:
        directory = resolve_dataset_path(data.dataset, data.root).resolve()
        record.update(kind="directory", path=str(directory), files=directory_hashes(directory))
    for key in ("interests", "features"):  # a saved copy holds its interests: data.interests is None then
        value = getattr(data, key)
        if value is not None:
            file = _artifact_file(key, Path(value))
            record[key] = {"path": str(file), "sha256": sha256_file(file)} if file.is_file() else None
    return RunData(config, record, dataset)


def _artifact_file(key: str, path: Path) -> Path:
    if not path.is_dir():
        return path
    return path / ("user_interest_clustered.txt" if key == "interests" else "features.pt")


def _check_views(config: RunConfig, dataset: Dataset, views: GraphViews) -> None:
    from .trainer import build_run_graph

    expected = build_run_graph(config, dataset)
    if views_fingerprint(views) != views_fingerprint(expected):
        counts = ", ".join(f"{t} {views.counts[t]} vs {expected.counts[t]}" for t in views.counts
                           if views.counts[t] != expected.counts.get(t))
        edges = ", ".join(f"{p} {views.edges[p].size(1) if p in views.edges else 0} vs "
                          f"{expected.edges[p].size(1) if p in expected.edges else 0}"
                          for p in sorted(set(views.edges) | set(expected.edges)))
        raise ConfigError(f"the views passed to Trainer are not the graph config.data builds from this dataset "
                          f"(nodes: {counts or 'same counts'}; edges given vs built: {edges}), so the run could not "
                          "be reopened; set config.data (include_kg, include_interests, features) to match, or "
                          "leave views= out", "data")


# ---------------------------------------------------------------------------------------------- reopening
def _read_record(path: Path) -> Dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read the dataset record ({err})") from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise CheckpointError(f"{path}: not a dataset record of version {RECORD_VERSION}")
    return record


def _changed_files(expected: Mapping[str, str], directory: Path) -> List[str]:
    now = directory_hashes(directory)
    return [f"{name} {'missing' if name not in now else 'added' if name not in expected else 'changed'}"
            for name in sorted(set(expected) | set(now)) if expected.get(name) != now.get(name)]


def open_run_dataset(run_dir: Path, config: RunConfig) -> Dataset:
    """The dataset a run was trained on, rebuilt from ``dataset.json`` and checked against its hashes.

    Run directories written before ``dataset.json`` existed are reopened from ``config.yaml`` alone.

    Raises:
        CheckpointError: the recorded data is gone or changed since training (naming the file).
    """
    from .trainer import load_run_dataset

    path = run_dir / DATASET_RECORD
    if not path.is_file():
        return load_run_dataset(config)
    record = _read_record(path)
    data = config.data
    for key in ("interests", "features"):
        artifact = record.get(key)
        if artifact and (not Path(artifact["path"]).is_file() or sha256_file(Path(artifact["path"])) != artifact["sha256"]):
            raise CheckpointError(f"{path}: data.{key} {artifact['path']} is missing or changed since the run was "
                                  "trained")
    if record["kind"] in ("directory", "saved"):
        directory = run_dir / record["path"] if record["kind"] == "saved" else Path(record["path"])
        if not directory.is_dir() and record["kind"] == "directory":
            directory = _fallback_directory(data, directory, path)
        changed = _changed_files(record["files"], directory)
        if changed:
            raise CheckpointError(f"{path}: the dataset in {directory} changed since the run was trained "
                                  f"({'; '.join(changed)}); restore those files, or train a new run on the new data")
        interests = record.get("interests")
        data = dataclasses.replace(data, dataset=str(directory), root=None,
                                   interests=interests["path"] if interests else None)
    dataset = load_run_dataset(data)
    if dataset_fingerprint(dataset) != record["fingerprint"]:
        raise CheckpointError(f"{path}: the dataset rebuilt from {record.get('path') or 'the synthetic generator'} "
                              "is not the one the run was trained on (same files, different split or loader "
                              "version); train a new run")
    return dataset


def _fallback_directory(data: DataConfig, recorded: Path, record_path: Path) -> Path:
    """A run copied to another machine: its bare dataset name, resolved there (the hashes still decide)."""
    if data.dataset != "synthetic" and len(Path(data.dataset).parts) == 1:
        try:
            return resolve_dataset_path(data.dataset, data.root)
        except DatasetError:
            pass
    raise CheckpointError(f"{record_path}: the run's dataset directory {recorded} does not exist")


def remove_run_files(run_dir: Path) -> List[str]:
    """Delete what the trainer wrote into ``run_dir`` (nothing else); returns the names removed."""
    record = run_dir / DATASET_RECORD
    saved_copy = record.is_file() and _read_record(record).get("kind") == "saved" and (run_dir / SAVED_DATASET).is_dir()
    removed = [name for name in RUN_FILES if (run_dir / name).is_file()]
    for name in removed:
        (run_dir / name).unlink()
    if saved_copy:
        shutil.rmtree(run_dir / SAVED_DATASET)
        removed.append(SAVED_DATASET)
    for name in RUN_FOLDERS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
            removed.append(name)
    return removed
