"""The training loop: BPR epochs, validation-based early stopping, checkpoint/resume, run directories.

A run directory holds::

    config.yaml        the resolved configuration (data paths absolute: see cikg.train.rundir)
    dataset.json       how to rebuild the dataset (source, file hashes, fingerprint); dataset/ if built in memory
    checkpoint.pt      the last completed epoch: model, optimisers, schedules, RNG states, history
    best_model.pt      model weights of the best validation epoch
    metrics.jsonl      one record per epoch: loss terms, validation metrics, schedules, seconds
    metrics.json       final: best epoch, valid and test metrics (test only for the selected epoch)
    groups.csv         test metrics per user-activity group (sparse users)
    per_user_test.csv.gz  test metrics of every test user (seed, user id, train degree, each metric@K): the
                       paired tests of cikg.eval.stats read them (``cikg evaluate`` writes it for older runs)

Every epoch's randomness (negative sampling, dropout, noise) is derived from ``(seed, epoch)``, so a run
killed at any moment and resumed from its last checkpoint ends with exactly the metrics of an
uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch
from tqdm.auto import tqdm

from .._io import atomic_path, ensure_dir, torch_save_atomic, write_json_atomic, write_text_atomic
from .._lock import holding_lock
from ..augment.base import NodeFeatures
from ..config import flatten as _flatten
from ..config import load_yaml
from ..data import Dataset, load_dataset, load_interests, synthetic
from ..errors import CheckpointError, ConfigError, DivergedError
from ..eval import EvalResult, Evaluator, activity_groups
from ..graph import GraphViews, build_cikg, build_views
from ..models.base import Recommender
from ..models.registry import build_model
from .config import DataConfig, RunConfig, TrainConfig, load_run_config, run_config_from_dict
from .hardware import describe_hardware
from .progress import epoch_bar, epoch_postfix
from .sampling import BPRSampler
from .tracking import Tracker, Trackers, default_trackers
from .warmstart import absolute_init_from, warm_start

logger = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1
PER_USER_FILE = "per_user_test.csv.gz"
"""The per-user test metrics of a run (see :func:`per_user_frame`)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available (use cpu)", "train.device")
    return torch.device(name)


def loading_device(trained_on: str) -> str:
    """Where a run trained on ``trained_on`` is reopened by default: there if this machine has it, else the CPU."""
    if trained_on.startswith("cuda") and not torch.cuda.is_available():
        logger.info("the run was trained on %s; this machine has no CUDA, so it is loaded on the CPU", trained_on)
        return "cpu"
    return trained_on


def load_weights(path: Path, device: Any) -> Dict[str, torch.Tensor]:
    """A ``state_dict`` saved by the trainer, read with ``weights_only=True`` (no code runs while loading)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, foreign or unsafe (pickled code) files: say which
        raise CheckpointError(f"{path}: cannot read model weights ({type(err).__name__}: {str(err)[:200]})") from None


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's randomness on one rank (independent of how the run got there)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**62)


def load_run_dataset(config: Union[RunConfig, DataConfig]) -> Dataset:
    """The dataset a run config (or its ``data`` section / a graph recipe) names, with its interests override."""
    data = config.data if isinstance(config, RunConfig) else config
    if data.dataset == "synthetic":
        dataset = synthetic(data.synthetic_users, data.synthetic_items, seed=data.synthetic_seed)
    else:
        dataset = load_dataset(data.dataset, root=data.root, valid_fraction=data.valid_fraction,
                               seed=data.split_seed)
    if data.interests:
        dataset = load_interests(dataset, data.interests)
    return dataset


def build_run_graph(config: RunConfig, dataset: Dataset) -> GraphViews:
    graph = build_cikg(dataset, include_kg=config.data.include_kg, include_interests=config.data.include_interests)
    if config.data.features:  # node features from `cikg augment` (KAR, REKI, LLM-CF, CoCo), for model.features

        NodeFeatures.load(config.data.features).attach(graph)
    elif getattr(config.model, "features", None) is not None and config.model.features.enabled:
        raise ConfigError(f"model.features.mode={config.model.features.mode!r} needs node features: set "
                          "data.features to a `cikg augment` output", "data.features")
    return build_views(graph, views=(), self_loops=False)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns (also written to ``metrics.json``)."""

    best_epoch: int
    epochs_run: int
    valid: Dict[str, float]
    test: Dict[str, float]
    groups: Any
    run_dir: Path

    def to_dict(self) -> Dict[str, Any]:
        return {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "valid": self.valid,
                "test": self.test}


DISPLAY_KEYS = ("train.progress",)
"""Settings that change what is shown, not what is computed: a run resumes whatever they are."""


def _canonical(flat: Dict[str, Any]) -> Dict[str, Any]:
    """Data paths made absolute, as a run records them (a checkpoint of older cikg kept them relative)."""
    from .rundir import canonical_data_path

    return {k: canonical_data_path(k[len("data."):], v) if k.startswith("data.") else v for k, v in flat.items()}


def config_differences(saved: Dict[str, Any], config: RunConfig) -> List[str]:
    """``"key: saved -> now"`` for every setting in which a checkpoint's config and ``config`` differ.

    A setting the saved config lacks (one added to cikg after the checkpoint was written) counts only when
    ``config`` does not leave it at its default, so upgrading cikg does not orphan a run that can resume.
    Display settings (:data:`DISPLAY_KEYS`) never count; data paths are compared as absolute paths.
    """
    now = _canonical(_flatten(config.to_dict()))
    defaults = _flatten(RunConfig(data=DataConfig(), model=type(config.model)(), train=TrainConfig()).to_dict())
    old = _canonical(_flatten(saved))
    out = []
    for key in sorted(set(now) | set(old)):
        if key in DISPLAY_KEYS:
            continue
        if key not in old and key in defaults and now[key] == defaults[key]:
            continue
        if old.get(key, "<absent>") != now.get(key, "<absent>"):
            out.append(f"{key}: {old.get(key, '<absent>')!r} -> {now.get(key, '<absent>')!r}")
    return out


class Trainer:
    """Trains one model of a :class:`RunConfig` and evaluates it the framework's way.

    Args:
        config: the run configuration.
        run_dir: where checkpoints, logs and metrics go (created).
        dataset, views: pass them to reuse a loaded dataset / built graph (else built from ``config``). The run
            records where ``dataset`` came from (or saves it into the run when it was built in memory), so
            ``cikg evaluate RUN_DIR`` reopens it; ``views`` must be the graph ``config.data`` builds from it.
        progress: show a bar over the epochs with the loss and validation metrics (a widget in Jupyter, none in
            logs and pipes); ``None`` follows ``config.train.progress``.
        trackers: callbacks called once per epoch (:mod:`cikg.train.tracking`); default TensorBoard event
            files in ``run_dir/tensorboard``; ``[]`` for none.
    """

    def __init__(self, config: RunConfig, run_dir: Union[str, Path], dataset: Optional[Dataset] = None,
                 views: Optional[GraphViews] = None, rank: int = 0, world_size: int = 1,
                 trackers: Optional[Sequence[Tracker]] = None, progress: Optional[bool] = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = config.train.progress if progress is None else bool(progress)
        self._given = (dataset is not None, views is not None)
        self.rank, self.world_size = rank, world_size
        train = config.train
        if train.threads:
            torch.set_num_threads(train.threads)
        self.device = resolve_device(train.device)
        self.dataset = dataset if dataset is not None else load_run_dataset(config)
        if max(train.ks) > self.dataset.n_items:
            raise ConfigError(f"cut-off K={max(train.ks)} exceeds the {self.dataset.n_items} items of "
                              f"{self.dataset.name}", "train.ks")
        views = views if views is not None else build_run_graph(config, self.dataset)
        self.views = views.to(self.device)
        torch.manual_seed(train.seed)
        self.model: Recommender = build_model(config.model, self.views, self.dataset).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.aux_tasks = self.model.auxiliary_tasks()
        self.aux_optimizers = [torch.optim.Adam(t.parameters, lr=t.lr, weight_decay=t.weight_decay)
                               for t in self.aux_tasks]
        self.sampler = BPRSampler(self.dataset.train, self.dataset.n_users, self.dataset.n_items,
                                  batch_size=train.batch_size, rank=rank, world_size=world_size)
        self.evaluator = Evaluator(ks=train.ks, block_size=train.eval_block_size, progress=False)
        self.history: List[Dict[str, Any]] = []
        self.epoch = 0
        self.best_score = float("-inf")
        self.best_epoch = 0
        self.bad_evals = 0
        self.tracking = Trackers(default_trackers() if trackers is None else trackers)
        self.epoch_schedule: Dict[str, float] = {}  # what on_epoch_start returned (trackers tag it schedule/)

    def __repr__(self) -> str:
        return (f"Trainer(model={type(self.model).__name__}, dataset={self.dataset.name!r}, "
                f"device={self.device}, run_dir='{self.run_dir}')")

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best_model.pt"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One epoch of BPR batches (and auxiliary tasks); returns mean loss terms and schedule values."""
        self.model.train()
        seed = epoch_seed(self.config.train.seed, epoch)
        torch.manual_seed(epoch_seed(self.config.train.seed, epoch, self.rank))
        generator = torch.Generator().manual_seed(seed)
        self.epoch_schedule = dict(self.model.on_epoch_start(epoch, generator))
        logged: Dict[str, float] = dict(self.epoch_schedule)
        sums: Dict[str, float] = defaultdict(float)
        n_batches = len(self.sampler)
        if self.config.train.max_batches:
            n_batches = min(n_batches, self.config.train.max_batches)
        # disable=None: bars on a terminal, none in logs and pipes
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", leave=False, mininterval=0.5,
                   disable=None if self.progress and self.is_main else True)
        for step, raw in enumerate(self.sampler.epoch(generator)):
            if step >= n_batches:
                break
            raw.epoch = epoch
            batch = raw.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)  # before the forward: DDP inspects .grad there
            total, terms = self._loss(batch)
            total.backward()
            self.optimizer.step()
            sums["loss"] += float(total.detach())
            for name, value in terms.items():
                sums[name] += float(value.detach()) if torch.is_tensor(value) else float(value)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.4f}")
        bar.close()
        if not math.isfinite(sums["loss"]):
            raise DivergedError(f"{self.config.model_name} on {self.dataset.name}, epoch {epoch}: the loss is "
                                f"{sums['loss']}; training diverged (a lower train.lr or stronger regularisation "
                                "may help)")
        logged.update({name: value / max(n_batches, 1) for name, value in sums.items()})
        for task, optimizer in zip(self.aux_tasks, self.aux_optimizers):
            task_sums: Dict[str, float] = defaultdict(float)
            count = 0
            for aux_batch in self._aux_batches(task, generator, epoch):
                optimizer.zero_grad(set_to_none=True)
                total, terms = self._aux_loss(task, aux_batch)
                total.backward()
                optimizer.step()
                count += 1
                task_sums[task.name] += float(total.detach())
                for name, value in terms.items():
                    if name != task.name:
                        task_sums[name] += float(value.detach()) if torch.is_tensor(value) else float(value)
            logged.update({name: value / max(count, 1) for name, value in task_sums.items()})
        return logged

    # hooks that cikg.train.distributed.DistributedTrainer overrides (one training loop for both)
    def _loss(self, batch):
        """The main objective of one batch: ``(total, terms)``."""
        return self.model.loss(batch)

    def _aux_batches(self, task, generator: torch.Generator, epoch: int):
        """The batches of an auxiliary task this process trains on in ``epoch``."""
        return task.batches(generator, epoch)

    def _aux_loss(self, task, batch):
        """An auxiliary task's objective of one batch: ``(total, terms)``."""
        return task.loss(batch)

    @torch.no_grad()
    def evaluate(self, split: str = "valid", users: Optional[torch.Tensor] = None) -> EvalResult:
        """Full-ranking metrics on ``split`` (train items masked; for test, validation items too)."""
        self.model.eval()
        embeddings = self.model.embed()

        def score(block: torch.Tensor) -> torch.Tensor:
            return self.model.score(block.to(self.device), embeddings)

        excludes = [self.dataset.csr("train")] + ([self.dataset.csr("valid")] if split == "test" else [])
        return self.evaluator.evaluate(score, self.dataset.csr(split), excludes, users=users)

    def selection_score(self, result: EvalResult) -> float:
        return float(sum(result[name] for name in self.config.train.select))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        state = {
            "version": CHECKPOINT_VERSION, "epoch": self.epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizers": [o.state_dict() for o in self.aux_optimizers],
            "model_state": self.model.state_for_checkpoint(), "best_score": self.best_score,
            "best_epoch": self.best_epoch, "bad_evals": self.bad_evals, "history": self.history,
            "torch_rng": torch.get_rng_state(), "config": self.config.to_dict(),
        }
        torch_save_atomic(state, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint of ``run_dir`` if there is one; returns whether it did."""
        state = self._read_checkpoint(self.device)
        if state is None:
            return False
        self._restore(state)
        return True

    def _read_checkpoint(self, map_location: Any) -> Optional[Dict[str, Any]]:
        """The checkpoint of ``run_dir`` checked against this config, or ``None`` when there is none."""
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location=map_location, weights_only=True)
        except Exception as err:  # a foreign or corrupt file: say which
            raise CheckpointError(f"{self.checkpoint_path}: cannot read checkpoint ({err})") from None
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            version = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{self.checkpoint_path}: checkpoint version {version} is not "
                                  f"{CHECKPOINT_VERSION}")
        differences = config_differences(state["config"], self.config)
        if differences:
            raise CheckpointError(f"{self.checkpoint_path}: was written by a different configuration "
                                  f"({'; '.join(differences[:5])}); use a new run directory or the same config "
                                  "to resume")
        return state

    def _restore(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for optimizer, saved in zip(self.aux_optimizers, state["aux_optimizers"]):
            optimizer.load_state_dict(saved)
        self.model.load_checkpoint_state(state["model_state"])
        self.epoch, self.best_score = int(state["epoch"]), float(state["best_score"])
        self.best_epoch, self.bad_evals = int(state["best_epoch"]), int(state["bad_evals"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed %s from epoch %d (best epoch %d)", self.run_dir, self.epoch, self.best_epoch)

    # ------------------------------------------------------------------ the run
    @holding_lock(lambda trainer: trainer.run_dir if trainer.is_main else None, "run directory")
    def fit(self, resume: bool = True, overwrite: bool = False) -> FitResult:
        """Train until ``epochs`` or early stopping, then evaluate the best epoch on test.

        Args:
            resume: continue from the run directory's checkpoint (a finished run is not retrained: its result
                is evaluated and returned, so re-running a notebook cell is cheap); ``False`` refuses a run
                directory that holds a checkpoint.
            overwrite: delete what an earlier run wrote into ``run_dir`` and start afresh (e.g. a notebook cell
                re-run after its config changed).

        Raises:
            CheckpointError: the checkpoint was written by another config, or exists while ``resume`` and
                ``overwrite`` are false; ``run_dir`` is left untouched (``config.yaml`` included).
            DirectoryInUseError: another process trains in ``run_dir`` (rank 0 holds its lock meanwhile).
        """
        if self.config.train.init_from:  # recorded absolute, so the run resumes from any working directory
            self.config.train = dataclasses.replace(self.config.train,
                                                    init_from=absolute_init_from(self.config.train.init_from))
        train = self.config.train
        ensure_dir(self.run_dir)
        if overwrite and self.is_main:
            from .rundir import remove_run_files

            removed = remove_run_files(self.run_dir)
            if removed:
                logger.info("overwrite: removed %s from %s", ", ".join(removed), self.run_dir)
        run_data = self._prepare_run_data() if self.is_main else None
        resumed = self.load_checkpoint() if resume else False
        if not resume and self.checkpoint_path.exists():
            raise CheckpointError(f"{self.run_dir} already holds a checkpoint: fit(resume=True) continues it (a "
                                  "finished run returns its result), fit(overwrite=True) starts afresh (cikg train "
                                  "--overwrite), or choose another run dir")
        if train.init_from and not resumed:
            warm_start(self.model, self.dataset, train.init_from)
        if run_data is not None:  # only now: a refused resume leaves the run directory as it was
            write_text_atomic(self.run_dir / "config.yaml", self.config.to_yaml())
            run_data.write(self.run_dir)
        stopped = bool(train.patience) and self.bad_evals >= train.patience
        bar = epoch_bar(train.epochs, self.epoch, f"{self.config.model_name} on {self.dataset.name}",
                        self.progress and self.is_main)
        if self.is_main:
            self.tracking.start(self)
        try:
            self._epochs(bar, stopped)
        finally:
            bar.close()
        result = self.finish()
        if self.is_main:
            self.tracking.finish(self, result)
        return result

    def _prepare_run_data(self):
        """Point ``config.data`` at the run's real data (see :mod:`cikg.train.rundir`); returns what to record."""
        from .rundir import prepare_run_data

        run_data = prepare_run_data(self.config, self.dataset, self.views, self.run_dir, *self._given)
        self.config = run_data.config
        return run_data

    def _epochs(self, bar, stopped: bool) -> None:
        train = self.config.train
        while self.epoch < train.epochs and not stopped:
            epoch = self.epoch + 1
            start = time.perf_counter()
            record: Dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
            record["train_seconds"] = time.perf_counter() - start
            if epoch % train.eval_every == 0 or epoch == train.epochs:
                stopped = self._validate_epoch(epoch, record)
            record["seconds"] = time.perf_counter() - start
            self.epoch = epoch
            self.history.append(record)
            if self.is_main:
                self.tracking.log_epoch(self, record)  # before the checkpoint: a re-run epoch is purged, not lost
                self.save_checkpoint()
                self._write_history()
                logger.info("epoch %d: %s", epoch, _format_record(record, train.select))
            bar.set_postfix(epoch_postfix(record, train.select, self.best_epoch), refresh=False)
            bar.update(1)

    def _validate_epoch(self, epoch: int, record: Dict[str, Any]) -> bool:
        """Validate, keep the best weights, count bad evaluations; returns whether to stop early."""
        result = self.evaluate("valid")
        record.update({f"valid_{k}": v for k, v in result.to_dict().items()})
        score = self.selection_score(result)
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_evals = score, epoch, 0
            if self.is_main:
                torch_save_atomic(self.model.state_dict(), self.best_path)
        else:
            self.bad_evals += 1
        return bool(self.config.train.patience) and self.bad_evals >= self.config.train.patience

    def finish(self) -> FitResult:
        """Load the best weights, evaluate valid and test, write ``metrics.json`` and ``groups.csv``."""
        if self.best_path.exists():
            self.model.load_state_dict(load_weights(self.best_path, self.device))
        valid = self.evaluate("valid")
        test = self.evaluate("test")
        groups = activity_groups(test, self.dataset.degrees("train"), sparse_max=self.config.train.sparse_groups)
        result = FitResult(self.best_epoch, self.epoch, valid.to_dict(), test.to_dict(), groups, self.run_dir)
        if self.is_main:
            payload = {**result.to_dict(), "model": self.config.model_name, "dataset": self.dataset.name,
                       "seed": self.config.train.seed, "split": self.dataset.meta.get("split", {}),
                       "selected_on": "valid (" + " + ".join(self.config.train.select) + ")",
                       "n_test_users": test.n_users, "hardware": describe_hardware(self.device, self.world_size)}
            write_json_atomic(self.run_dir / "metrics.json", payload)
            write_text_atomic(self.run_dir / "groups.csv", groups.to_csv(index=False))
            self.write_per_user(test)
        return result

    def write_per_user(self, test: EvalResult) -> Path:
        """Write ``per_user_test.csv.gz`` (:func:`per_user_frame` of ``test``) into the run directory."""
        path = self.run_dir / PER_USER_FILE
        frame = per_user_frame(test, self.dataset, self.config.train.seed)
        data = gzip.compress(frame.to_csv(index=False).encode(), mtime=0)  # no name, no time: the same bytes each time
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    def _write_history(self) -> None:
        lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in self.history)
        write_text_atomic(self.run_dir / "metrics.jsonl", lines)


def per_user_frame(result: EvalResult, dataset: Dataset, seed: int) -> pd.DataFrame:
    """One row per evaluated user: ``seed, user`` (the dataset's original id), ``user_index`` (cikg's id),
    ``train_degree`` and one float64 column per metric@K (their means are ``result.means``)."""
    frame = result.to_frame().rename(columns={"user": "user_index"})
    index = frame["user_index"].to_numpy()
    ids = pd.Series(dataset.user_ids, dtype=str).to_numpy()
    metrics = [name for name in frame.columns if name != "user_index"]
    head = pd.DataFrame({"seed": seed, "user": ids[index], "user_index": index,
                         "train_degree": dataset.degrees("train").cpu().numpy()[index]})
    return pd.concat([head, frame[metrics].astype("float64")], axis=1)


def read_per_user(run_dir: Union[str, Path]) -> pd.DataFrame:
    """The ``per_user_test.csv.gz`` of a run directory (user ids read as strings).

    Raises:
        CheckpointError: the run has no such file (runs before it was written: ``cikg evaluate RUN_DIR``).
    """
    path = Path(run_dir) / PER_USER_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {PER_USER_FILE} (a run of an older cikg: `cikg evaluate {run_dir}` "
                              "writes it)")
    return pd.read_csv(path, dtype={"user": str})


def _format_record(record: Dict[str, Any], select: Tuple[str, ...]) -> str:
    """Loss terms, schedules and the selection metrics of one epoch (the rest is in metrics.jsonl)."""
    shown = {k: v for k, v in record.items()
             if k != "epoch" and (not k.startswith("valid_") or k[len("valid_"):] in select)}
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def train_from_config(path: Optional[Union[str, Path]], overrides: Tuple[str, ...] = (),
                      run_dir: Optional[Union[str, Path]] = None, resume: bool = True,
                      overwrite: bool = False) -> FitResult:
    """``cikg train CONFIG key=value ...`` as a function."""
    config = load_run_config(path, overrides)
    run_dir = Path(run_dir) if run_dir else config.default_run_dir()
    return Trainer(config, run_dir).fit(resume=resume, overwrite=overwrite)


def load_run(run_dir: Union[str, Path], progress: bool = False, device: Optional[str] = None) -> Trainer:
    """A trainer for an existing run directory with its best weights loaded (``cikg evaluate RUN_DIR``).

    The dataset is rebuilt from the run's ``dataset.json`` (from any working directory) and checked against
    the hashes recorded there. ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``) is where the model is
    loaded; unset, it is the run's own ``train.device`` where this machine has it and the CPU otherwise (a
    run trained on a GPU reopens on a laptop).

    Raises:
        CheckpointError: not a run directory, no evaluated epoch yet, the data changed since training, or
            weights that do not fit the model ``config.yaml`` describes.
    """
    from .rundir import open_run_dataset

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
    config = run_config_from_dict(load_yaml(run_dir / "config.yaml"))
    config.train = dataclasses.replace(config.train, device=device or loading_device(config.train.device))
    if not (run_dir / "best_model.pt").exists():
        raise CheckpointError(f"{run_dir}: no best_model.pt yet (has the run finished an evaluation?)")
    trainer = Trainer(config, run_dir, dataset=open_run_dataset(run_dir, config), progress=progress)
    try:
        trainer.model.load_state_dict(load_weights(trainer.best_path, trainer.device))
    except RuntimeError as err:  # shapes of another dataset: a run directory from before dataset.json
        first = str(err).split("\n")[1].strip() if "\n" in str(err) else str(err)[:200]
        raise CheckpointError(f"{trainer.best_path}: the weights do not fit {config.model_name} on "
                              f"{trainer.dataset.name!r}, the data config.yaml names ({first}); the run was trained "
                              "on other data (retrain it with this cikg, which records its dataset)") from None
    return trainer
