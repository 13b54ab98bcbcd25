"""Shared fixtures: the real datasets in ../shared/data (loaded once per session) and small synthetic ones."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# one intra-op thread per test process: the suite runs on 2 shared cores, where oversubscription makes
# small sparse ops many times slower than single-threaded
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
