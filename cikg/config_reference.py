"""The configuration reference (docs/config.md), generated from the config dataclasses.

    python -m cikg.config_reference > docs/config.md

Every key of a run config with its type, default and meaning. Meanings come from a field's
``metadata["help"]`` or else from its class docstring's ``Attributes:`` section (Google style, searched along
the class's bases); a key with neither is an error, so a new setting cannot go undocumented
(tests/test_config_reference.py regenerates the page and compares).
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
import typing
from typing import Any, Dict, List, Tuple

import yaml

from .errors import ConfigError

HEADER = """# Configuration reference

Generated from the config dataclasses by `python -m cikg.config_reference > docs/config.md` (a test checks
that this page is current). A run config is YAML with the sections below (every key optional); `cikg train
CONFIG key=value ...` overrides any key by its dotted name, e.g. `train.lr=5e-4 model.layers=2`; `cikg tune`
search spaces use the same names. Unknown keys, wrong types and out-of-range values are refused before any
work starts, naming the key.

Top level: `name` (run name; the default run directory is `runs/<name>`), `graph` (a graph recipe, `graphs/*.yaml`:
its keys are the base of `data`), and the sections `data`, `model` (`model.name` picks the model; each model has
its own keys) and `train`.
"""


def attribute_docs(cls: type) -> Dict[str, str]:
    """``{field: meaning}`` from the ``Attributes:`` sections of ``cls``'s docstring and its bases'."""
    out: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)+)", doc, flags=re.M)
        if not match:
            continue
        current = None
        for line in match.group(1).splitlines():
            entry = re.match(r"^    (\w+): (.*)$", line)
            if entry:
                current = entry.group(1)
                out[current] = entry.group(2).strip()
            elif current and line.startswith("        "):
                out[current] += " " + line.strip()
    return out


def type_name(hint: Any) -> str:
    """A type hint as a reader writes it: ``int``, ``float or null``, ``list of int``, ``one of exp, linear``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in inner) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    if origin in (tuple, list):
        return f"list of {type_name(args[0])}" if args else "list"
    if dataclasses.is_dataclass(hint):
        return f"mapping ({hint.__name__})"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def default_text(field: dataclasses.Field) -> str:
    from .config import to_dict

    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return "see below"
    text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=1000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def rows(cls: type, prefix: str) -> Tuple[List[Tuple[str, str, str, str]], List[Tuple[type, str]]]:
    """The table rows of one dataclass, and the nested dataclasses (each documented in its own section)."""
    hints = typing.get_type_hints(cls)
    meanings = attribute_docs(cls)
    out, nested = [], []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key = f"{prefix}.{field.name}"
        meaning = field.metadata.get("help") or meanings.get(field.name)
        if not meaning:
            raise ConfigError(f"{cls.__module__}.{cls.__qualname__}.{field.name} has no meaning: add it to the "
                              "class docstring's Attributes section (or field metadata 'help')", key)
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            nested.append((hint, key))
            meaning += f" Keys: see [{key}](#{_anchor(hint.__name__)})."
        out.append((key, type_name(hint), default_text(field), meaning))
    return out, nested


def plain(text: str) -> str:
    """reStructuredText of docstrings as markdown: ``x`` -> `x`, :class:`~a.B` -> `B`, :math:`x` -> `x`."""
    text = re.sub(r":(?:class|func|meth|mod|attr|data):`~?([\w.]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`",
                  text)
    text = re.sub(r":math:`([^`]*)`", lambda m: f"`{m.group(1)}`", text).replace("\\\\", "\\")
    return text.replace("``", "`")


def _anchor(name: str) -> str:
    return name.lower()


def _table(table_rows) -> List[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in table_rows:
        lines.append(f"| `{key}` | {kind} | `{default}` | {plain(meaning).replace('|', '/')} |")
    return lines


def _summary(cls: type) -> str:
    return plain(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " "))


def reference() -> str:
    """The whole page as markdown."""
    from .models import MODEL_CONFIGS
    from .train.config import DataConfig, TrainConfig

    lines = [HEADER]
    nested_all: Dict[type, str] = {}
    sections = [("data", DataConfig, "data"), ("train", TrainConfig, "train")]
    sections += [(f"model: {name}", cls, "model") for name, cls in MODEL_CONFIGS.items()]
    for title, cls, prefix in sections:
        table_rows, nested = rows(cls, prefix)
        if prefix == "model":
            name = title.split(": ", 1)[1]
            table_rows.insert(0, ("model.name", "str", name, "selects this model (without `model.name`: lightgcn)"))
        lines += [f"## {title}", "", _summary(cls), "", *_table(table_rows), ""]
        for nested_cls, key in nested:
            nested_all.setdefault(nested_cls, key.split(".", 1)[0] + "." + key.split(".")[-1])
    for cls, key in nested_all.items():
        table_rows, _ = rows(cls, key)
        lines += [f"## {cls.__name__}", "", f"`{key}.*` of every model that has `{key}`. {_summary(cls)}", "",
                  *_table(table_rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
