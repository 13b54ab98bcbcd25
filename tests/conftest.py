"""Shared fixtures: the real datasets in ../shared/data (loaded once per session) and small synthetic ones."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

# one intra-op thread per test process: the suite runs on 2 shared cores, where oversubscription makes
# small sparse ops many times slower than single-threaded
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
DATA_DIR = Path(os.environ.get("CIKG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _require_data(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.fail(f"real dataset {name} not found under {DATA_DIR}: tests need ../shared/data beside the repo")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def dbbook():
    from cikg.data import load_dataset

    return load_dataset(_require_data("dbbook2014"))


@pytest.fixture(scope="session")
def bookcrossing():
    from cikg.data import load_dataset

    return load_dataset(_require_data("book-crossing"))


@pytest.fixture(scope="session")
def ml1m():
    from cikg.data import load_dataset

    return load_dataset(_require_data("ml1m"))


@pytest.fixture(scope="session")
def amazon():
    from cikg.data import load_dataset

    return load_dataset(_require_data("amazon-book"))


@pytest.fixture(scope="session")
def small_synthetic():
    from cikg.data import synthetic

    return synthetic(300, 90, seed=3)


@pytest.fixture(scope="session")
def experiment():
    """``experiment("noise")``: a script of ``experiments/`` imported as a module (the scripts import each other
    by name from their folder, so it is on ``sys.path`` for the session)."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(EXPERIMENTS))


@pytest.fixture
def tracked():
    """``tracked("noise*")``: the bytes of the tracked ``experiments/dbbook2014`` files a glob matches, to check that
    a script left them alone."""
    return lambda pattern: {p: p.read_bytes() for p in (EXPERIMENTS / "dbbook2014").glob(pattern) if p.is_file()}
