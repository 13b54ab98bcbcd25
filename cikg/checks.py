"""Validation of config fields, one style for every config dataclass: each failure is a :class:`~cikg.errors.ConfigError`
naming its key (dotted by the loader: ``model.dim``, ``train.lr``)."""
from __future__ import annotations

from typing import Iterable

from .errors import ConfigError


def positive_int(config: object, *keys: str, optional: bool = False) -> None:
    """Each key an ``int >= 1`` (or ``None`` when ``optional``)."""
    for key in keys:
        value = getattr(config, key)
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"expected a positive integer, got {value!r}", key)


def non_negative_int(config: object, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"expected an integer >= 0, got {value!r}", key)


def non_negative(config: object, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"expected a number >= 0, got {value!r}", key)


def positive(config: object, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"expected a number > 0, got {value!r}", key)


def probability(config: object, *keys: str, closed_high: bool = False) -> None:
    """``0 <= value < 1`` (``<= 1`` with ``closed_high``)."""
    for key in keys:
        value = getattr(config, key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value and (
            value <= 1.0 if closed_high else value < 1.0)
        if not ok:
            raise ConfigError(f"expected a probability in [0, {'1]' if closed_high else '1)'}, got {value!r}", key)


def one_of(config: object, key: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    value = getattr(config, key)
    if value not in allowed:
        raise ConfigError(f"expected one of {allowed}, got {value!r}", key)
