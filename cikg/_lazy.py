"""Lazy package exports (PEP 562): a package imports a submodule on first use of a name it exports, so ``import
cikg.<package>`` (and with it ``cikg --help``) loads no torch until a name is used.

Where each name lives is written once, as the ``from .sub import Name`` lines of the package's ``if
TYPE_CHECKING:`` block: type checkers and IDEs read them as imports, and :func:`lazy_exports` reads the same lines
from the source (as scientific-python's ``lazy_loader`` reads its stubs). ``__all__`` stays a literal list, the
public names a type checker and ``from package import *`` see; :func:`lazy_exports` refuses a package whose two
lists differ::

    from typing import TYPE_CHECKING

    from .._lazy import lazy_exports

    if TYPE_CHECKING:
        from .base import Augmenter, NodeFeatures

    __all__ = ["Augmenter", "NodeFeatures"]
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
"""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple


def type_checking_imports(source: str) -> Dict[str, str]:
    """``{name: module}`` of the ``from MODULE import name`` lines under ``if TYPE_CHECKING:`` in ``source``
    (``module`` relative, with its leading dots: ``".base"``, ``"..embed"``)."""
    where = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for line in node.body:
                if not isinstance(line, ast.ImportFrom):
                    raise SyntaxError(f"only `from ... import ...` lines belong in a lazy TYPE_CHECKING block, "
                                      f"line {line.lineno}")
                for alias in line.names:
                    where[alias.asname or alias.name] = "." * line.level + (line.module or "")
    return where


def lazy_exports(package: str, init_file: str,
                 exported: Sequence[str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` of ``package``, whose ``__init__.py`` is ``init_file`` and whose ``__all__`` is
    ``exported``: each name the ``if TYPE_CHECKING:`` block imports is loaded from that module on first use."""
    where = type_checking_imports(Path(init_file).read_text(encoding="utf-8"))
    if set(where) != set(exported):
        raise ImportError(f"{init_file}: __all__ and the TYPE_CHECKING imports differ: "
                          f"{sorted(set(where) ^ set(exported))}")

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups find it without calling this
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
