"""Models of your own: register a config class under a name that YAML files and ``cikg train`` use.

A model config is a dataclass with ``build(graph) -> Recommender`` (see :mod:`cikg.models.base`), where ``graph``
is the :class:`~cikg.graph.GraphViews` the trainer builds; :func:`build_model` is how the framework calls it.
Three ways in, all ending in :data:`cikg.models.MODEL_CONFIGS`:

* in Python: ``register_model("mymodel", MyConfig)`` or the decorator ``@register_model("mymodel")``;
* on the command line: ``cikg train ... --import my_module`` (a module name importable from the working
  directory, or a ``.py`` file) imports a module that registers its models;
* as an installed package: an entry point in the group ``cikg.models`` whose name is the model name and whose
  object is the config class (``[project.entry-points."cikg.models"] mymodel = "my_pkg:MyConfig"``); entry
  points are read when a config names a model cikg does not know yet.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Dataset
    from ..graph import GraphViews
    from .base import Recommender

from ..errors import CikgError, ConfigError

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "cikg.models"


def register_model(name: str, config_class: Optional[type] = None):
    """Register ``config_class`` as model ``name`` (``model.name`` in YAML); usable as a decorator."""
    from . import MODEL_CONFIGS

    def register(cls: type) -> type:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(f"a model name must be a non-empty string, got {name!r}", "model.name")
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and callable(getattr(cls, "build", None))):
            raise ConfigError(f"{cls!r} is not a model config: expected a dataclass with "
                              "build(graph) -> Recommender", "model.name")
        known = MODEL_CONFIGS.get(name)
        if known is not None and known is not cls and _qualname(known) != _qualname(cls):
            raise ConfigError(f"model {name!r} is already registered as {_qualname(known)}", "model.name")
        MODEL_CONFIGS[name] = cls
        return cls

    return register if config_class is None else register(config_class)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_entry_point_models() -> Sequence[str]:
    """Register the models of installed packages' ``cikg.models`` entry points; returns the names added."""
    from . import MODEL_CONFIGS

    added = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in MODEL_CONFIGS:
            continue
        try:
            cls = point.load()
        except Exception as err:  # a broken plugin names itself, it does not take cikg down
            raise CikgError(f"entry point {ENTRY_POINT_GROUP}:{point.name} = {point.value} cannot be loaded "
                            f"({type(err).__name__}: {err})") from None
        register_model(point.name, cls)
        added.append(point.name)
    return added


def import_model_modules(modules: Sequence[str]) -> None:
    """Import each module (a dotted name found from the working directory, or a path to a ``.py`` file)."""
    for spec in modules:
        _import_one(spec)


def _import_one(spec: str) -> None:
    path = Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise CikgError(f"--import {spec}: no such file")
        module_spec = importlib.util.spec_from_file_location(path.stem, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        _run(lambda: module_spec.loader.exec_module(module), spec)
        return
    if str(Path.cwd()) not in sys.path and "" not in sys.path:  # `cikg` (a console script) does not add the cwd
        sys.path.insert(0, str(Path.cwd()))
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise CikgError(f"--import {spec}: no module named {spec!r} (looked in the working directory and sys.path; "
                        "or pass a path to a .py file)")
    _run(lambda: importlib.import_module(spec), spec)


def _run(load: Callable[[], object], spec: str) -> None:
    try:
        load()
    except CikgError:
        raise
    except Exception as err:
        raise CikgError(f"--import {spec}: importing it failed ({type(err).__name__}: {err})") from None


__all__ = ["ENTRY_POINT_GROUP", "import_model_modules", "load_entry_point_models", "register_model"]


def build_model(config: Any, graph: "GraphViews", dataset: Optional["Dataset"] = None) -> "Recommender":
    """``config.build(graph)``: every built-in model stands on the graph alone.

    A config written against the earlier contract, ``build(views, dataset)`` with a required second
    parameter, still gets the dataset (logged once per class, so its author knows to move to ``build(graph)``).
    """
    parameters = [p for p in inspect.signature(config.build).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(parameters) >= 2 and parameters[1].default is inspect.Parameter.empty:
        if type(config) not in _WARNED_LEGACY:
            _WARNED_LEGACY.add(type(config))
            logger.warning("%s.build takes (views, dataset): the contract is build(graph) now; the dataset is "
                           "passed for this model", type(config).__name__)
        return config.build(graph, dataset)
    return config.build(graph)


_WARNED_LEGACY: set = set()
