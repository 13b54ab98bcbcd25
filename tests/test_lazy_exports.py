"""The packages that export lazily (cikg._lazy): every exported name resolves to the object of the submodule that
defines it, an unknown name is an AttributeError, ``__all__`` and the TYPE_CHECKING imports cannot drift apart, and
importing the packages loads no torch."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from cikg._lazy import lazy_exports, type_checking_imports

LAZY = ("cikg.data", "cikg.embed", "cikg.llm", "cikg.interests", "cikg.train", "cikg.augment", "cikg.serving")


@pytest.mark.parametrize("package", LAZY)
def test_every_export_resolves_to_its_submodules_object(package):
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__)) and len(module.__all__) > 0
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        value = getattr(module, name)
        owner = getattr(value, "__module__", None)
        if owner is not None and owner.startswith("cikg."):  # a class or function: defined where it is exported from
            assert getattr(importlib.import_module(owner), name) is value
        assert vars(module)[name] is value  # cached: the next lookup skips __getattr__


@pytest.mark.parametrize("package", LAZY)
def test_an_unknown_name_is_an_attribute_error_naming_it(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=f"{package}.*no_such_name"):
        module.no_such_name  # noqa: B018
    assert not hasattr(module, "no_such_name")


def test_star_import_and_from_import_work():
    namespace: dict = {}
    exec("from cikg.llm import *", namespace)
    from cikg.llm import RAW_FILE, Backend
    from cikg.llm.base import RAW_FILE as base_raw_file

    assert namespace["Backend"] is Backend and RAW_FILE == base_raw_file == "user_interests_raw.jsonl"
    from cikg.interests.io import RAW_FILE as interests_raw_file

    assert interests_raw_file is RAW_FILE  # one definition of the file name, below both layers


def test_importing_the_packages_loads_no_torch():
    code = f"import sys; import {', '.join(LAZY)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_type_checking_block_says_where_each_name_lives(tmp_path):
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .base import A, B as C\n"
              "    from ..embed import D\nfrom .other import E\n")
    assert type_checking_imports(source) == {"A": ".base", "C": ".base", "D": "..embed"}  # E is a real import
    init = tmp_path / "__init__.py"
    init.write_text(source)
    with pytest.raises(ImportError, match=r"__init__.py: __all__ and the TYPE_CHECKING imports differ: \['D'\]"):
        lazy_exports("pkg", str(init), ["A", "C"])
    with pytest.raises(SyntaxError, match="line 3"):
        type_checking_imports("if TYPE_CHECKING:\n    from .a import A\n    x = 1\n")
