"""Settings constraints, one style for every config dataclass: a table declared once, checked once when the config
is built. Each failure is a :class:`~cikg.errors.ConfigError` naming its key (dotted by the loader:
``model.dim``, ``train.lr``)::

    @dataclass
    class LightGCNConfig:
        dim: int = 64
        view: View = View.COLLABORATIVE
        CONSTRAINTS: ClassVar[Constraints] = (positive_int("dim"), choice(View, "view"))

        def __post_init__(self) -> None:
            check(self)  # relations between settings are checked after this, in code

A subclass extends its parent's table: ``CONSTRAINTS = LightGCNConfig.CONSTRAINTS + (positive("temperature"),)``.
A setting that is a choice is a :class:`Choice` enum: ``choice`` turns the string a user wrote into the member
(and refuses others, listing the choices); members compare equal to their strings and print as them.
"""
from __future__ import annotations

import enum
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple, Type

from .errors import ConfigError


class Choice(str, enum.Enum):
    """Base of the enums of settings: ``MaskSchedule.EXP == "exp"``, and it shows as ``'exp'`` in a repr."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    __hash__ = str.__hash__  # as its string's, so a member finds the entries of a dict keyed by strings


def parse_enum(cls: Type[enum.Enum], value: Any, key: str) -> Any:
    """Member of the string enum ``cls`` named by ``value`` (case-insensitive), else a ConfigError listing the
    choices."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(f"expected one of {choices}, got {value!r}", key) from None


@dataclass(frozen=True)
class Constraint:
    """``keys`` must satisfy ``holds`` (described by ``expected``); ``None`` passes when ``optional``. With
    ``parse`` instead, the value is replaced by ``parse(value, key)``, which raises on a bad value."""

    keys: Tuple[str, ...]
    expected: str
    holds: Optional[Callable[[Any], bool]] = None
    optional: bool = False
    parse: Optional[Callable[[Any, str], Any]] = None

    def __post_init__(self) -> None:
        if (self.holds is None) == (self.parse is None):
            raise TypeError(f"Constraint{self.keys}: give exactly one of holds and parse")


Constraints = Tuple[Constraint, ...]


def check(config: object, constraints: Optional[Constraints] = None, prefix: str = "") -> None:
    """Check (and, for choices, convert) the settings of ``config`` against ``constraints`` (default: its
    class's ``CONSTRAINTS``). ``prefix`` dots the keys of errors (``"echo"``: ``echo.threshold``) for a config
    that users set through a section of another's."""
    for constraint in type(config).CONSTRAINTS if constraints is None else constraints:
        for key in constraint.keys:
            value = getattr(config, key)
            checked = check_value(constraint, value, f"{prefix}.{key}" if prefix else key)
            if checked is not value:
                object.__setattr__(config, key, checked)  # a choice's member (frozen configs too)


def check_value(constraint: Constraint, value: Any, key: str) -> Any:
    """``value`` (of setting ``key``; an element of a tuple setting, say) against ``constraint``; returns it, or
    for a choice the member it names."""
    if constraint.optional and value is None:
        return value
    if constraint.parse is not None:
        return constraint.parse(value, key)
    if not constraint.holds(value):
        raise ConfigError(f"expected {constraint.expected}, got {value!r}", key)
    return value


def is_integer(value: Any) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(*keys: str, optional: bool = False) -> Constraint:
    """Each key an integer >= 1 (or ``None`` when ``optional``)."""
    return Constraint(keys, "a positive integer", lambda v: is_integer(v) and v >= 1, optional)


def int_at_least(minimum: int, *keys: str, optional: bool = False) -> Constraint:
    return Constraint(keys, f"an integer >= {minimum}", lambda v: is_integer(v) and v >= minimum, optional)


def non_negative_int(*keys: str, optional: bool = False) -> Constraint:
    return Constraint(keys, "an integer >= 0", lambda v: is_integer(v) and v >= 0, optional)


def non_negative(*keys: str, optional: bool = False) -> Constraint:
    return Constraint(keys, "a number >= 0", lambda v: _number(v) and v >= 0, optional)


def positive(*keys: str, optional: bool = False) -> Constraint:
    return Constraint(keys, "a number > 0", lambda v: _number(v) and v > 0, optional)


def probability(*keys: str, closed_high: bool = False, expected: str = "a probability") -> Constraint:
    """``0 <= value < 1`` (``<= 1`` with ``closed_high``); ``expected`` names what the value is in messages."""
    high = "1]" if closed_high else "1)"
    return Constraint(keys, f"{expected} in [0, {high}",
                      lambda v: _number(v) and 0.0 <= v and (v <= 1.0 if closed_high else v < 1.0))


def share(*keys: str, expected: str = "a share") -> Constraint:
    """``0 < value <= 1``: a share that cannot be empty."""
    return Constraint(keys, f"{expected} in (0, 1]", lambda v: _number(v) and 0.0 < v <= 1.0)


def seed(*keys: str) -> Constraint:
    """Seeds go to ``torch.Generator.manual_seed``, which takes 64-bit values: refuse others up front."""
    return Constraint(keys, "a seed in [0, 2**63)", lambda v: is_integer(v) and 0 <= v < 2**63)


def boolean(*keys: str) -> Constraint:
    return Constraint(keys, "true or false", lambda v: isinstance(v, bool))


def choice(cls: Type[enum.Enum], *keys: str, optional: bool = False) -> Constraint:
    """Each key one of the string enum ``cls``'s values; the setting becomes the member."""
    return Constraint(keys, "one of " + ", ".join(m.value for m in cls), optional=optional,
                      parse=lambda value, key: parse_enum(cls, value, key))


def one_of(allowed: Tuple[str, ...], *keys: str, optional: bool = False) -> Constraint:
    """Each key one of ``allowed`` (strings that are not worth an enum, such as a domain word)."""
    allowed = tuple(allowed)
    return Constraint(keys, f"one of {allowed}", lambda v: v in allowed, optional)
