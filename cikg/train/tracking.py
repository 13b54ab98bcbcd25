"""Experiment tracking: callbacks the :class:`~cikg.train.Trainer` calls once per epoch.

A tracker sees a run start (fresh or resumed), every completed epoch (its ``metrics.jsonl`` record) and the
final result; it never touches the model. Two are built in:

* :class:`TensorBoardTracker` (on by default): event files in ``RUN_DIR/tensorboard`` with the tags
  ``loss/<term>`` (every loss term, ``loss/loss`` the total), ``valid/<metric@K>``, ``schedule/<name>``
  (what the model's ``on_epoch_start`` returns, e.g. CIKGRec's ``mask_rate``), ``train/lr`` and
  ``time/epoch_seconds`` / ``time/train_seconds``, each at step = epoch; after the run ``final/valid_*``
  and ``final/test_*`` at step = best epoch.
* :class:`MLflowTracker` (``cikg train --mlflow [URI]``, the ``tracking`` extra): params (the flattened
  config), the same metrics per epoch (``@`` written ``_at_``: MLflow refuses ``@`` in names) and the
  artifacts ``metrics.json`` and ``config.yaml``. The default store is the directory ``./mlruns``
  (``file:./mlruns``); MLflow 3 keeps that store in maintenance mode and reads it only with
  ``MLFLOW_ALLOW_FILE_STORE=true`` (set for you when cikg writes it; ``mlflow ui`` needs it too), or
  pass a database store (``--mlflow sqlite:///mlflow.db``) or a server (``--mlflow http://host:5000``).

A resumed run never repeats an epoch: the TensorBoard writer opens with ``purge_step`` = the first epoch
still to run, so readers drop events of an epoch that was logged but not checkpointed before a kill; MLflow
keeps its run id in ``RUN_DIR/mlflow.json``, continues that run and logs only the epochs it lacks.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence

from .._io import write_json_atomic
from ..config import flatten as flatten_config
from ..errors import CikgError

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import FitResult, Trainer

logger = logging.getLogger(__name__)
MLFLOW_INSTALL = "pip install 'cikg[tracking]' (or pip install mlflow)"
DEFAULT_MLFLOW_URI = "file:./mlruns"


class Tracker:
    """Base class of training callbacks; every hook is optional. Only rank 0 of a DDP run calls them."""

    def start(self, trainer: "Trainer") -> None:
        """The run starts; ``trainer.epoch`` is the last epoch already done (> 0 on resume)."""

    def log_epoch(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        """Epoch ``record["epoch"]`` is done; called before its checkpoint is written."""

    def finish(self, trainer: "Trainer", result: "FitResult") -> None:
        """The run ended (``metrics.json`` written); release files and connections."""


def epoch_scalars(trainer: "Trainer", record: Dict[str, Any]) -> Dict[str, float]:
    """One epoch's record as tagged scalars (``loss/bpr``, ``valid/recall@20``, ``schedule/mask_rate``, ...)."""
    schedule = getattr(trainer, "epoch_schedule", {})
    out: Dict[str, float] = {"train/lr": float(trainer.optimizer.param_groups[0]["lr"])}
    for key, value in record.items():
        if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith("valid_"):
            tag = f"valid/{key[len('valid_'):]}"
        elif key in ("seconds", "train_seconds"):
            tag = "time/epoch_seconds" if key == "seconds" else "time/train_seconds"
        elif key in schedule:
            tag = f"schedule/{key}"
        else:
            tag = f"loss/{key}"
        out[tag] = float(value)
    return out


def final_scalars(result: "FitResult") -> Dict[str, float]:
    """The selected epoch's valid and test metrics (``final/valid_recall@20``, ``final/test_recall@20``)."""
    out = {f"final/valid_{k}": float(v) for k, v in result.valid.items()}
    out.update({f"final/test_{k}": float(v) for k, v in result.test.items()})
    return out


def wait_for_a_later_second(log_dir: Path) -> None:
    """Sleep (under a second) until the clock is past the newest event file's timestamp in ``log_dir``.

    Readers order event files by name (``events.out.tfevents.<seconds>.<host>.<pid>.<n>``): two files of one
    second and one process compare by the counter ``n`` as text (``"10"`` before ``"9"``), and a resumed run's
    file read before the killed one would have its purge undone."""
    stamps = [p.name.split(".")[3] for p in log_dir.glob("events.out.tfevents.*")]
    later = max((int(s) for s in stamps if s.isdigit()), default=-1) + 1
    while time.time() < later:
        time.sleep(later - time.time())


class TensorBoardTracker(Tracker):
    """TensorBoard event files through :class:`torch.utils.tensorboard.SummaryWriter`.

    Args:
        log_dir: where the event files go (default ``RUN_DIR/tensorboard``); ``tensorboard --logdir runs``
            shows every run under ``runs/``.
    """

    def __init__(self, log_dir: Optional[Path] = None):
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.writer = None

    def __repr__(self) -> str:
        return f"TensorBoardTracker(log_dir={str(self.log_dir) if self.log_dir else 'RUN_DIR/tensorboard'!r})"

    def start(self, trainer: "Trainer") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.start_epoch = trainer.epoch
        log_dir = self.log_dir or trainer.run_dir / "tensorboard"
        wait_for_a_later_second(Path(log_dir))
        # purge_step: readers discard events at steps >= it from earlier files (an epoch logged, then killed)
        self.writer = SummaryWriter(str(log_dir), purge_step=trainer.epoch + 1 if trainer.epoch else None)

    def log_epoch(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        for tag, value in epoch_scalars(trainer, record).items():
            self.writer.add_scalar(tag, value, global_step=int(record["epoch"]))
        self.writer.flush()

    def finish(self, trainer: "Trainer", result: "FitResult") -> None:
        if result.epochs_run > self.start_epoch or not self.start_epoch:  # re-opening a finished run adds nothing
            for tag, value in final_scalars(result).items():
                self.writer.add_scalar(tag, value, global_step=result.best_epoch)
        self.writer.close()
        self.writer = None


def require_mlflow():
    """The ``mlflow`` module, or a one-line :class:`CikgError` saying how to install it."""
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise CikgError(f"--mlflow needs MLflow, which is not installed: {MLFLOW_INSTALL}") from None


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


def absolute_store_uri(uri: str) -> str:
    """A file store as an absolute ``file://`` URI; other stores unchanged. MLflow caches a store per URI, so
    a relative ``file:./mlruns`` would keep pointing at the first working directory's folder (and a run
    resumed from another directory would not find its store)."""
    if not _is_file_store(uri):
        return uri
    path = uri[len("file:"):] if uri.startswith("file:") else uri
    if path.startswith("//"):  # file:///abs/path
        return uri
    return Path(path).expanduser().resolve().as_uri()


def mlflow_name(tag: str) -> str:
    """A tag as an MLflow metric name (which allows ``/ _ . - : space`` but not ``@``)."""
    return tag.replace("@", "_at_")


class MLflowTracker(Tracker):
    """Params, per-epoch metrics and artifacts of a run in an MLflow tracking store.

    Args:
        tracking_uri: an MLflow store, e.g. ``file:./mlruns`` (a directory) or ``http://host:5000``.
        experiment: the MLflow experiment the run belongs to (created when missing).
        run_name: the MLflow run name (default: the run directory's name).
    """

    STATE_FILE = "mlflow.json"

    def __init__(self, tracking_uri: str = DEFAULT_MLFLOW_URI, experiment: str = "cikg",
                 run_name: Optional[str] = None):
        require_mlflow()
        self.tracking_uri, self.experiment, self.run_name = absolute_store_uri(tracking_uri), experiment, run_name
        self.client = None
        self.run_id: Optional[str] = None
        self.logged_steps: set = set()

    def __repr__(self) -> str:
        return f"MLflowTracker(tracking_uri={self.tracking_uri!r}, experiment={self.experiment!r})"

    def start(self, trainer: "Trainer") -> None:
        from mlflow.tracking import MlflowClient

        if _is_file_store(self.tracking_uri):  # MLflow >= 3.7 refuses its file store unless this is set
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.exceptions import MlflowException

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.start_epoch = trainer.epoch
        try:
            self._open_run(trainer)
        except MlflowException as err:
            raise CikgError(f"MLflow store {self.tracking_uri}: {str(err).splitlines()[0][:300]}") from None

    def _open_run(self, trainer: "Trainer") -> None:
        self.run_id = self._resumable_run(trainer.run_dir)
        if self.run_id is None:
            self.run_id = self._create_run(trainer)
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged_steps = {m.step for m in self.client.get_metric_history(self.run_id, "loss/loss")}
        for record in trainer.history:  # epochs done before a kill that were never sent (or a first --mlflow)
            self.log_epoch(trainer, record)

    def _resumable_run(self, run_dir: Path) -> Optional[str]:
        path = run_dir / self.STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        if state.get("tracking_uri") != self.tracking_uri:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(state["run_id"])
        except MlflowException:
            logger.warning("MLflow run %s of %s is gone from %s; starting a new one", state["run_id"], run_dir,
                           self.tracking_uri)
            return None
        return state["run_id"]

    def _create_run(self, trainer: "Trainer") -> str:
        from mlflow.entities import Param


        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(self.experiment))
        run = self.client.create_run(experiment_id, run_name=self.run_name or trainer.run_dir.name,
                                     tags={"cikg.run_dir": str(trainer.run_dir.resolve()),
                                           "cikg.model": trainer.config.model_name})
        params = [Param(key, str(value)[:6000]) for key, value in flatten_config(trainer.config.to_dict()).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        write_json_atomic(trainer.run_dir / self.STATE_FILE,
                          {"tracking_uri": self.tracking_uri, "run_id": run.info.run_id})
        return run.info.run_id

    def log_epoch(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        step = int(record["epoch"])
        if step in self.logged_steps:  # a re-run of an epoch killed before its checkpoint: same seeds, same values
            return
        self._log_metrics(epoch_scalars(trainer, record), step)
        self.logged_steps.add(step)

    def _logged_names(self) -> List[str]:
        return list(self.client.get_run(self.run_id).data.metrics)

    def _log_metrics(self, scalars: Dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_name(tag), value, now, step) for tag, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, trainer: "Trainer", result: "FitResult") -> None:
        if result.epochs_run > self.start_epoch or "final/test_" not in " ".join(self._logged_names()):
            self._log_metrics(final_scalars(result), result.best_epoch)
        for name in ("metrics.json", "config.yaml"):
            if (trainer.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(trainer.run_dir / name))
        self.client.set_terminated(self.run_id, status="FINISHED")


class Trackers(Tracker):
    """Several trackers called in order (what the trainer holds)."""

    def __init__(self, trackers: Iterable[Tracker] = ()):
        self.trackers: List[Tracker] = list(trackers)

    def __repr__(self) -> str:
        return f"Trackers({self.trackers!r})"

    def start(self, trainer: "Trainer") -> None:
        for tracker in self.trackers:
            tracker.start(trainer)

    def log_epoch(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(trainer, record)

    def finish(self, trainer: "Trainer", result: "FitResult") -> None:
        for tracker in self.trackers:
            tracker.finish(trainer, result)


def default_trackers(mlflow_uri: Optional[str] = None, experiment: str = "cikg") -> Sequence[Tracker]:
    """TensorBoard, plus MLflow when a tracking URI is given (``cikg train --mlflow``)."""
    trackers: List[Tracker] = [TensorBoardTracker()]
    if mlflow_uri:
        trackers.append(MLflowTracker(mlflow_uri, experiment=experiment))
    return trackers


__all__ = ["DEFAULT_MLFLOW_URI", "MLflowTracker", "TensorBoardTracker", "Tracker", "Trackers", "default_trackers",
           "epoch_scalars", "require_mlflow"]
