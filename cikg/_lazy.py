"""Lazy package exports (PEP 562): a package names what it exports and from where, and imports the submodule on
first use, so ``import cikg.<package>`` (and with it ``cikg --help``) loads no torch until a name is used."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str,
                 modules: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]], List[str]]:
    """``(__getattr__, __dir__, __all__)`` of ``package`` from ``modules``: ``{module: "Name1 Name2 ..."}``, each
    module relative to the package (``".base"``, ``"..embed"``) and exporting the names listed."""
    where = {name: module for module, names in modules.items() for name in names.split()}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups find it without calling this
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
