"""Typed dataclass configs from YAML, with ``key=value`` overrides.

Configs are plain dataclasses (validated in their ``__post_init__``); this module only turns nested
mappings into them, strictly: an unknown key, a wrong type or an invalid value raises
:class:`~cikg.errors.ConfigError` naming the dotted key (``train.lr``), before any work starts.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Type, TypeVar, Union

import yaml

from .errors import ConfigError, describe_os_error

T = TypeVar("T")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML mapping; errors name the file (and line for syntax errors)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except OSError as err:  # a directory, a name longer than the OS allows, no permission, ...
        raise ConfigError(f"{path}: cannot read config file: {describe_os_error(err)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    except (ValueError, RecursionError) as err:  # a value YAML cannot build (2001-13-01), or nesting too deep
        raise ConfigError(f"{path}: invalid YAML ({type(err).__name__}: {str(err)[:100]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    """``["train.lr=1e-3", "model.layers=2"]`` → nested ``{"train": {"lr": 0.001}, "model": {...}}``."""
    nested: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=0.001)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError, RecursionError):
            value = raw
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads "5e-4" as a string
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"train": {"lr": 0.001}}`` → ``{"train.lr": 0.001}`` (the inverse of :func:`parse_overrides`' nesting)."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"expected {_describe(hint)}, got {value!r}", key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"expected one of {list(args)}, got {value!r}", key)
        return value
    if origin in (tuple, list, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, got {value!r}", key)
        return dict(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"expected one of {[m.value for m in hint]}, got {value!r}", key) from None
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping of {hint.__name__} settings, got {value!r}", key)
        return from_dict(hint, value, prefix=key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {value!r}", key)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"expected an integer, got {value!r}", key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
                else:
                    if math.isfinite(number):
                        return number
                    raise ConfigError(f"expected a finite number, got {value!r}", key)
            raise ConfigError(f"expected a number, got {value!r}", key)
        if not math.isfinite(float(value)):
            raise ConfigError(f"expected a finite number, got {value!r}", key)
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"expected a string, got {value!r}", key)
        return str(value)
    return value


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def from_dict(cls: Type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types are errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {data!r}", prefix or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key; expected one of {sorted(fields)}", key)
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and err.key and not err.key.startswith(prefix + "."):
            raise ConfigError(str(err).split(": ", 1)[-1], f"{prefix}.{err.key}") from None
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err), prefix or cls.__name__) from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain YAML-safe values: enums by value, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


__all__: List[str] = ["dump_yaml", "flatten", "from_dict", "load_yaml", "merge", "parse_overrides", "to_dict"]
