"""``cikg tune``: hyper-parameter search with Optuna over any run config, selected on the validation split.

A study lives in one directory::

    study.db        Optuna's SQLite storage: a killed study resumes and adds trials up to N in all
    trials/trial-NNN/   one normal run directory per trial (config.yaml, metrics.jsonl, TensorBoard events, ...)
    trials.csv, trials.md   every trial: state, valid metric, parameters, best epoch, epochs run, run dir
    best.yaml       the best trial's full config, loadable by ``cikg train best.yaml``

The sampler is TPE (seeded with ``seed`` + the number of trials already in the study, so a resumed study
does not replay the first suggestions); the pruner is Optuna's MedianPruner on the valid metric reported
after every validation epoch. A trial killed mid-run (SIGKILL, Ctrl-C) is run again with the same parameters
on resume and continues from its run directory's last checkpoint.

A search space is a YAML mapping of dotted config keys to one of::

    train.lr:          {low: 1.0e-4, high: 1.0e-2, log: true}   # float (log scale)
    model.layers:      {low: 1, high: 4, step: 1}                # int
    model.cl_anchor:   {choices: [collaborative, full]}          # categorical (lists allowed as choices)

A best value in the outer :data:`EDGE_MARGIN` of its range (measured on the range's scale) is reported as *at
the edge* (:attr:`TuneResult.edges`, a warning in the log and in ``cikg tune``'s summary): the optimum may lie
beyond it, and the range is worth widening. A bound at 0 on a linear scale (no dropout, no noise) is a floor,
never an edge. A study remembers the SHA-256 of the search space it ran over and refuses to resume over another
one, whose trials would mix with the old.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from .._io import ensure_dir, sha256_file, write_text_atomic
from ..config import load_yaml
from ..errors import CikgError, ConfigError, DivergedError
from .config import RunConfig, load_run_config
from .tracking import Tracker, default_trackers

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
STUDY_NAME = "cikg-tune"
_SPEC_KEYS = {"low", "high", "log", "step", "choices"}
#: a best value this close to a bound (as a share of its range, on the range's scale) is at the edge.
EDGE_MARGIN = 0.1
#: the study user attribute that holds the SHA-256 of the search-space file the study runs over.
SPACE_ATTR = "space_sha256"


@dataclass(frozen=True)
class SearchParam:
    """One dimension of a search space: a float or int range (``low``..``high``) or ``choices``."""

    key: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high, self.step))

    def suggest(self, trial) -> Any:
        if self.choices is not None:  # Optuna stores scalars only: a list choice travels as its JSON text
            encoded = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in self.choices]
            picked = trial.suggest_categorical(self.key, encoded)
            return self.choices[encoded.index(picked)]
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)

    def edge(self, value: Any, margin: float = EDGE_MARGIN) -> Optional[str]:
        """``"low"`` or ``"high"`` when ``value`` lies within ``margin`` of that bound (as a share of the range,
        on a log scale for a log range), else ``None``; a choice, and a linear bound at 0, have no edge."""
        if self.choices is not None:
            return None
        scale = math.log if self.log else float
        share = (scale(value) - scale(self.low)) / (scale(self.high) - scale(self.low))
        if share <= margin and not (self.low == 0 and not self.log):
            return "low"
        return "high" if share >= 1 - margin else None

    def corners(self) -> List[Any]:
        """The values a preflight builds configs with: the range ends, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def _param(key: str, spec: Any, where: str) -> SearchParam:
    if not isinstance(spec, dict) or not spec:
        raise CikgError(f"{where}: key {key!r}: expected {{low, high[, log][, step]}} or {{choices: [...]}}, got "
                        f"{spec!r}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise CikgError(f"{where}: key {key!r}: unknown field {unknown[0]!r}; expected {sorted(_SPEC_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise CikgError(f"{where}: key {key!r}: choices must be a non-empty list and stand alone")
        return SearchParam(key, choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise CikgError(f"{where}: key {key!r}: a range needs both low and high")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in numbers):
        raise CikgError(f"{where}: key {key!r}: low, high and step must be finite numbers, got {spec!r}")
    if not isinstance(log, bool):
        raise CikgError(f"{where}: key {key!r}: log must be true or false, got {log!r}")
    if not low < high:
        raise CikgError(f"{where}: key {key!r}: expected low < high, got low={low}, high={high}")
    if log and low <= 0:
        raise CikgError(f"{where}: key {key!r}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or (log and step != 1)):
        raise CikgError(f"{where}: key {key!r}: step must be > 0 (and 1 on a log scale), got {step}")
    return SearchParam(key, low=low, high=high, log=log, step=step)


def load_search_space(path: PathLike) -> List[SearchParam]:
    """Read and check a search-space YAML (errors name the file and the key)."""
    data = load_yaml(path)
    if not data:
        raise CikgError(f"{path}: empty search space (expected dotted keys, e.g. train.lr: {{low: 1e-4, high: 1e-2, "
                        "log: true}})")
    return [_param(str(key), spec, str(path)) for key, spec in data.items()]


def edges_of(space: Sequence[SearchParam], params: Dict[str, Any], margin: float = EDGE_MARGIN) -> Dict[str, str]:
    """``{key: "low" | "high"}`` of the ``params`` that lie at an edge of their range in ``space``."""
    edges = {p.key: p.edge(params[p.key], margin) for p in space if p.key in params}
    return {key: side for key, side in edges.items() if side}


def overrides_for(params: Dict[str, Any]) -> List[str]:
    """``{"train.lr": 0.001}`` as ``["train.lr=0.001"]`` (JSON values read back exactly by the YAML parser)."""
    return [f"{key}={json.dumps(value)}" for key, value in params.items()]


def check_space(space: Sequence[SearchParam], config_path: Optional[PathLike], overrides: Sequence[str],
                space_path: PathLike) -> None:
    """Build the config at every range end / choice, so an unknown key or a bad range fails before trial 0."""
    for param in space:
        for value in param.corners():
            try:
                load_run_config(config_path, [*overrides, *overrides_for({param.key: value})])
            except ConfigError as err:
                raise CikgError(f"{space_path}: key {param.key!r} = {value!r}: {err}") from None


class OptunaPruning(Tracker):
    """Reports the valid metric of every validation epoch to an Optuna trial and stops pruned trials."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def __repr__(self) -> str:
        return f"OptunaPruning(trial={self.trial.number}, metric={self.metric!r})"

    def start(self, trainer) -> None:
        for record in trainer.history:  # a resumed trial: its epochs before the kill count as reported
            self._report(record)

    def log_epoch(self, trainer, record: Dict[str, Any]) -> None:
        import optuna

        if self._report(record) and self.trial.should_prune():
            self.trial.set_user_attr("epochs_run", int(record["epoch"]))
            raise optuna.TrialPruned(f"valid {self.metric} = {record[f'valid_{self.metric}']:.4f} at epoch "
                                     f"{record['epoch']} is below the median of earlier trials")

    def _report(self, record: Dict[str, Any]) -> bool:
        value = record.get(f"valid_{self.metric}")
        if value is None:
            return False
        self.trial.report(float(value), int(record["epoch"]))
        return True


@dataclass
class TuneResult:
    """What :func:`tune` returns: the best trial's valid value, parameters and config, and the trials table."""

    metric: str
    best_value: float
    best_params: Dict[str, Any]
    best_config: Path
    trials: pd.DataFrame
    study_dir: Path
    edges: Dict[str, str]
    """The best parameters at an edge of their range: ``{key: "low" | "high"}`` (see :meth:`SearchParam.edge`)."""


def tune(config_path: Optional[PathLike], space_path: PathLike, n_trials: int, study_dir: PathLike,
         overrides: Sequence[str] = (), metric: Optional[str] = None, seed: int = 2024,
         prune_startup: int = 5, prune_warmup: int = 0, mlflow_uri: Optional[str] = None,
         mlflow_experiment: str = "cikg-tune", callbacks: Sequence[Callable[[Any, Any], None]] = ()) -> TuneResult:
    """Run (or resume) a study until it holds ``n_trials`` finished trials; see the module docstring.

    With ``mlflow_uri`` every trial is also an MLflow run (params, metrics per epoch, artifacts) of
    ``mlflow_experiment``. ``callbacks`` are called as ``callback(study, trial)`` after each trial ends (Optuna's
    ``optimize`` callbacks), e.g. to keep a copy of ``study.db`` elsewhere.
    """
    import optuna

    if n_trials < 1:
        raise CikgError(f"--trials must be >= 1, got {n_trials}")
    base = load_run_config(config_path, overrides)
    metric = metric or base.train.select[0]
    if metric not in _metric_names(base):
        raise CikgError(f"--metric {metric!r} is not reported; expected one of {_metric_names(base)}")
    space = load_search_space(space_path)
    check_space(space, config_path, overrides, space_path)
    study_dir = ensure_dir(Path(study_dir))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(study_dir / 'study.db').resolve()}")
    existing = optuna.load_study(study_name=STUDY_NAME, storage=storage) if _has_study(storage) else None
    seed_offset = len(existing.trials) if existing is not None else 0
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed + seed_offset),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup))
    _check_same_space(study, space_path, study_dir)
    _requeue_interrupted(study)
    remaining = n_trials - _finished(study)
    if remaining > 0:
        logger.info("study %s: %d trial(s) to run (%d finished)", study_dir, remaining, n_trials - remaining)

        def objective(trial) -> float:
            trackers = [*default_trackers(mlflow_uri, experiment=mlflow_experiment), OptunaPruning(trial, metric)]
            return _run_trial(trial, space, config_path, overrides, trackers, study_dir)

        study.optimize(objective, n_trials=remaining, catch=(ConfigError, DivergedError),
                       callbacks=[_log_trial, *callbacks])
    result = _write_outputs(study, config_path, overrides, metric, study_dir, space)
    for key, side in result.edges.items():
        param = next(p for p in space if p.key == key)
        logger.warning("best %s = %s lies at the %s edge of its range [%s, %s] in %s: the optimum may lie beyond; "
                       "widen the range and tune again", key, result.best_params[key], side, param.low, param.high,
                       space_path)
    return result


def _check_same_space(study, space_path: PathLike, study_dir: Path) -> None:
    """Remember the space a study runs over; refuse to resume it over another (its trials would mix)."""
    fingerprint, kept = sha256_file(space_path), study.user_attrs.get(SPACE_ATTR)
    if kept is None:
        study.set_user_attr(SPACE_ATTR, fingerprint)
    elif kept != fingerprint:
        raise CikgError(f"{study_dir / 'study.db'}: the study ran over another search space than {space_path} "
                        f"(SHA-256 {kept[:12]}..., now {fingerprint[:12]}...); give a new --study-dir, or delete "
                        "this one to start the study again")


def _metric_names(config: RunConfig) -> List[str]:
    return [f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit") for k in config.train.ks]


def _has_study(storage) -> bool:
    return any(s.study_name == STUDY_NAME for s in storage.get_all_studies())


def _is_interrupted(trial) -> bool:
    import optuna

    return trial.state == optuna.trial.TrialState.FAIL and bool(trial.user_attrs.get("interrupted"))


def _finished(study) -> int:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(t.state in done and not _is_interrupted(t) for t in study.trials)


def _requeue_interrupted(study) -> None:
    """Trials of a killed process (still RUNNING, or FAILed by Ctrl-C) run again, in their own run directory."""
    from optuna.trial import TrialState

    storage = study._storage  # noqa: SLF001 - Optuna offers no public way to close a dead process's trial
    for trial in study.trials:
        if trial.state == TrialState.RUNNING:
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)  # noqa: SLF001
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
    trials = study.trials
    for k, trial in enumerate(trials):
        run_dir = trial.user_attrs.get("run_dir")
        later = {t.user_attrs.get("run_dir") for t in trials[k + 1:]}
        if _is_interrupted(trial) and run_dir not in later:
            logger.info("trial %d was interrupted: running its parameters again from %s", trial.number, run_dir)
            study.enqueue_trial(trial.params, user_attrs={"run_dir": run_dir, "retry_of": trial.number})


def _run_trial(trial, space: Sequence[SearchParam], config_path, overrides, trackers: List[Tracker],
               study_dir: Path) -> float:
    from .trainer import Trainer

    params = {p.key: p.suggest(trial) for p in space}
    config = load_run_config(config_path, [*overrides, *overrides_for(params)])
    run_dir = trial.user_attrs.get("run_dir") or str(study_dir / "trials" / f"trial-{trial.number:03d}")
    trial.set_user_attr("run_dir", run_dir)
    metric = next(t.metric for t in trackers if isinstance(t, OptunaPruning))
    try:
        result = Trainer(config, run_dir, trackers=trackers).fit()
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        raise
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("epochs_run", result.epochs_run)
    return float(result.valid[metric])


def _log_trial(study, trial) -> None:
    value = "" if trial.value is None else f" valid = {trial.value:.4f}"
    logger.info("trial %d %s%s %s", trial.number, trial.state.name.lower(), value,
                {k: round(v, 6) if isinstance(v, float) else v for k, v in trial.params.items()})


def trials_table(study, metric: str) -> pd.DataFrame:
    """One row per trial: number, state, valid metric, each parameter, best epoch, epochs run, seconds, run dir."""
    rows = []
    for trial in study.trials:
        state = "INTERRUPTED" if _is_interrupted(trial) else trial.state.name
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        rows.append({"trial": trial.number, "state": state, f"valid {metric}": trial.value, **trial.params,
                     "best epoch": trial.user_attrs.get("best_epoch"),
                     "epochs": trial.user_attrs.get("epochs_run",
                                                    max(trial.intermediate_values, default=None)),
                     "seconds": None if seconds is None else round(seconds, 1),
                     "run dir": trial.user_attrs.get("run_dir")})
    return pd.DataFrame(rows)


def _write_outputs(study, config_path, overrides, metric: str, study_dir: Path,
                   space: Sequence[SearchParam]) -> TuneResult:
    from optuna.trial import TrialState

    table = trials_table(study, metric)
    write_text_atomic(study_dir / "trials.csv", table.to_csv(index=False))
    write_text_atomic(study_dir / "trials.md", table.to_markdown(index=False, floatfmt=".6g") + "\n")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise CikgError(f"{study_dir}: no trial completed (see trials.md); nothing to write as best.yaml")
    best = max(complete, key=lambda t: t.value)
    decoded = {p: _decode(v) for p, v in best.params.items()}
    config = load_run_config(config_path, [*overrides, *overrides_for(decoded)])
    header = (f"# best of {len(table)} trials of {study_dir}: valid {metric} = {best.value:.6g} (trial {best.number}, "
              f"run dir {best.user_attrs.get('run_dir')})\n# selected on the validation split; cikg train this file\n")
    write_text_atomic(study_dir / "best.yaml", header + config.to_yaml())
    return TuneResult(metric, best.value, decoded, study_dir / "best.yaml", table, study_dir,
                      edges_of(space, decoded))


def _decode(value: Any) -> Any:
    """A categorical choice that was a list travels as JSON text: back to the list."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


__all__ = ["EDGE_MARGIN", "OptunaPruning", "SearchParam", "TuneResult", "check_space", "edges_of", "load_search_space",
           "overrides_for", "trials_table", "tune"]
