"""The run configuration: data, model and training settings as typed dataclasses.

YAML layout (every key optional; ``model.name`` picks the model's config class)::

    data:  {dataset: dbbook2014, valid_fraction: 0.125, split_seed: 2024}
    model: {name: cikgrec, layers: 3, cf_weight: 1.5}
    train: {epochs: 300, batch_size: 1024, lr: 8.0e-4, patience: 10, seed: 2024}

Command-line overrides use dotted keys: ``cikg train run.yaml train.lr=5e-4 model.layers=2``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Union

from .. import checks
from ..config import dump_yaml, from_dict, load_yaml, merge, parse_overrides, to_dict
from ..errors import ConfigError
from ..eval.ranking import DEFAULT_KS, METRICS
from ..models import MODEL_CONFIGS
from ..models.registry import load_entry_point_models


@dataclass
class DataConfig:
    """Which dataset, and how it is split and turned into a CIKG.

    Attributes:
        dataset: a name under ``$CIKG_DATA`` / ``../shared/data``, a dataset directory, or ``synthetic``.
        root: the directory bare dataset names resolve in (default ``$CIKG_DATA``, else ``../shared/data``).
        valid_fraction: share of each user's train items carved out as the validation split (seeded) when the
            dataset has no ``valid.txt``.
        split_seed: seed of that validation carve.
        interests: a directory or ``user_interest_clustered.txt`` from ``cikg interests cluster`` that replaces
            the dataset's own interests.
        features: a node-features artifact (``features.pt`` or its directory, from ``cikg augment``) attached
            to the CIKG as ``x`` of users/items; models consume it through ``model.features``.
        include_kg: put the item KG (entities and relations) into the CIKG.
        include_interests: put the interest nodes and user-interest edges into the CIKG.
        synthetic_users: users of the ``synthetic`` dataset.
        synthetic_items: items of the ``synthetic`` dataset (at least 12).
        synthetic_seed: seed of the ``synthetic`` generator.
    """

    dataset: str = "synthetic"
    root: Optional[str] = None
    valid_fraction: float = 0.125
    split_seed: int = 2024
    interests: Optional[str] = None
    features: Optional[str] = None
    include_kg: bool = True
    include_interests: bool = True
    synthetic_users: int = 2000
    synthetic_items: int = 600
    synthetic_seed: int = 0

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.probability("valid_fraction", expected="a fraction"), checks.positive_int("synthetic_users"),
        checks.int_at_least(12, "synthetic_items"), checks.seed("split_seed", "synthetic_seed"),
        checks.boolean("include_kg", "include_interests"))

    def __post_init__(self) -> None:
        checks.check(self)


@dataclass
class TrainConfig:
    """Optimisation, early stopping and evaluation settings (framework-owned, the same for every model).

    Attributes:
        epochs: the most epochs to train.
        batch_size: BPR triples per batch.
        lr: learning rate of the Adam optimiser.
        weight_decay: Adam's weight decay on every parameter (models have their own batch L2 as ``model.l2``).
        patience: stop after this many validation evaluations without a better selection score (0 = never).
        eval_every: validate every this many epochs (and after the last).
        select: the validation metrics whose sum picks the best epoch (each ``metric@K`` with ``K`` in ``ks``).
        ks: the cut-offs ``K`` of every reported metric (recall, ndcg, precision, hit).
        eval_block_size: users scored per block in full-ranking evaluation (memory vs speed).
        sparse_groups: train-interaction thresholds of the sparse user groups in ``groups.csv``.
        seed: seed of the model's initialisation and of every epoch's sampling, dropout and noise.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        threads: torch intra-op threads (default: torch's choice).
        max_batches: cap the batches per epoch (quick runs and smoke tests; default all).
        progress: per-batch progress bars on a terminal.
        init_from: a trained run directory on the same data whose user and item embeddings (its ``embed()``)
            start this model's ID embeddings (:meth:`~cikg.models.base.Recommender.init_embeddings`), as KGAT's
            published protocol starts from a trained BPR-MF; ``None`` starts from the model's own initialisation.
    """

    epochs: int = 300
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    select: Tuple[str, ...] = ("recall@20", "ndcg@20")
    ks: Tuple[int, ...] = DEFAULT_KS
    eval_block_size: int = 256
    sparse_groups: Tuple[int, ...] = (5, 10)
    seed: int = 2024
    device: str = "cpu"
    threads: Optional[int] = None
    max_batches: Optional[int] = None
    progress: bool = True
    init_from: Optional[str] = None

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("epochs", "batch_size", "eval_every", "eval_block_size"),
        checks.positive_int("max_batches", "threads", optional=True), checks.positive("lr"),
        checks.non_negative("weight_decay"), checks.non_negative_int("patience"), checks.seed("seed"))

    def __post_init__(self) -> None:
        checks.check(self)
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"expected cut-offs >= 1, got {self.ks}", "ks")
        for name in self.select:
            metric, _, k = name.partition("@")
            if metric not in METRICS or not k.isdigit() or int(k) not in self.ks:
                raise ConfigError(f"{name!r} is not a metric@K with K in ks={self.ks}", "select")
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "auto"):
            raise ConfigError(f"expected cpu, cuda, cuda:N or auto, got {self.device!r}", "device")


@dataclass
class RunConfig:
    """Everything a training run needs; ``model`` is the model's own config dataclass."""

    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = MODEL_CONFIGS["lightgcn"]()

    @property
    def model_name(self) -> str:
        return model_name(self.model)

    def default_run_dir(self) -> Path:
        """Where a run of this config goes when no directory is given (``cikg train``, ``train_from_config``):
        ``runs/<name>``, or ``runs/<model>-<dataset>-seed<seed>``."""
        return Path("runs") / (self.name or f"{self.model_name}-{Path(self.data.dataset).name}-seed{self.train.seed}")

    def to_dict(self) -> Dict[str, Any]:
        out = to_dict(self)
        out["model"] = {"name": self.model_name, **to_dict(self.model)}
        # node-feature keys only when used: configs (and checkpoints) of runs without features stay as before
        if out["data"].get("features") is None:
            out["data"].pop("features", None)
        if isinstance(out["model"].get("features"), dict) and out["model"]["features"].get("mode") == "none":
            out["model"].pop("features")
        return out

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


def model_name(model_config: Any) -> str:
    for name, cls in MODEL_CONFIGS.items():
        if type(model_config) is cls:
            return name
    raise ConfigError(f"{type(model_config).__name__} is not a registered model config (register it with "
                      "cikg.models.register_model)", "model")


def run_config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` strictly from a nested mapping (as read from YAML)."""
    data = dict(data)
    unknown = [k for k in data if k not in ("data", "model", "train", "name")]
    if unknown:
        raise ConfigError("unknown key; expected data, model, train, name (or graph in a file)", unknown[0])
    if not isinstance(data.get("model") or {}, Mapping):
        raise ConfigError(f"expected a mapping of model settings, got {data['model']!r}", "model")
    model_data = dict(data.get("model") or {})
    name = model_data.pop("name", "lightgcn")
    if isinstance(name, str) and name not in MODEL_CONFIGS:  # a model of an installed plugin package
        load_entry_point_models()
    if not isinstance(name, str) or name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(MODEL_CONFIGS)} (a model of your own: "
                          "--import MODULE, or install its package's cikg.models entry point)", "model.name")
    return RunConfig(
        data=from_dict(DataConfig, data.get("data") or {}, prefix="data"),
        model=from_dict(MODEL_CONFIGS[name], model_data, prefix="model"),
        train=from_dict(TrainConfig, data.get("train") or {}, prefix="train"),
        name=str(data.get("name", "")),
    )


def load_run_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML run config (or the defaults) and apply ``key=value`` overrides.

    A top-level ``graph: RECIPE.yaml`` names a graph recipe (``graphs/*.yaml``: the ``data`` settings of
    one CIKG); its keys are the base of ``data`` and the config's own ``data`` keys override them. A
    relative recipe path is looked up beside the config file, then from the working directory.
    """
    base = load_yaml(path) if path is not None else {}
    merged = merge(base, parse_overrides(overrides))
    recipe = merged.pop("graph", None)
    if recipe is None:
        return run_config_from_dict(merged)
    recipe_path = _find_recipe(str(recipe), path)
    recipe_keys = load_yaml(recipe_path)
    own = merged.get("data") or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"expected a mapping of data settings, got {own!r}", "data")
    merged["data"] = merge(recipe_keys, dict(own))
    try:
        return run_config_from_dict(merged)  # the recipe is parsed once, as part of the run config
    except ConfigError as err:
        key = (err.key or "").split(".")
        if len(key) > 1 and key[0] == "data" and key[1] in recipe_keys and key[1] not in own:
            raise ConfigError(f"{str(err).split(': ', 1)[-1]} (set in the graph recipe {recipe_path})",
                              err.key) from None
        raise


def load_graph_recipe(path: Union[str, Path], overrides: Sequence[str] = ()) -> DataConfig:
    """Read a graph recipe (``graphs/<name>.yaml``): the :class:`DataConfig` that defines one CIKG."""
    return from_dict(DataConfig, merge(load_yaml(path), parse_overrides(overrides)), prefix="data")


def _find_recipe(recipe: str, config_path: Optional[Union[str, Path]]) -> Path:
    candidates = [Path(config_path).parent / recipe] if config_path is not None else []
    candidates.append(Path(recipe))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"graph recipe not found (looked at {', '.join(map(str, candidates))})", "graph")
