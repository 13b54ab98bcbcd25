"""docs/config.md is generated from the config dataclasses and current; every key has a type, default, meaning."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cikg.config_reference import reference, rows
from cikg.errors import ConfigError
from cikg.models import MODEL_CONFIGS
from cikg.train import DataConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_current():
    assert (ROOT / "docs" / "config.md").read_text() == reference(), (
        "docs/config.md is stale: run `python -m cikg.config_reference > docs/config.md`")


def test_every_key_is_documented_with_type_and_default():
    page = reference()
    for prefix, cls in [("data", DataConfig), ("train", TrainConfig)] + [("model", c) for c in MODEL_CONFIGS.values()]:
        for field in dataclasses.fields(cls):
            assert f"| `{prefix}.{field.name}` |" in page, f"{prefix}.{field.name}"
    assert "| `train.lr` | float | `0.001` | learning rate of the Adam optimiser. |" in page
    assert "| `model.cl_anchor` | one of collaborative, full | `full` |" in page
    assert "| `model.features.mode` | one of none, add, features | `none` |" in page
    assert "| `data.root` | str or null | `null` |" in page


def test_a_key_without_meaning_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        """A config whose author forgot one key.

        Attributes:
            documented: has a meaning.
        """

        documented: int = 1
        forgotten: float = 0.5

    with pytest.raises(ConfigError, match="forgotten has no meaning"):
        rows(Undocumented, "model")


def test_a_constraint_checks_by_exactly_one_of_holds_and_parse():
    from cikg import checks

    with pytest.raises(TypeError, match="exactly one of holds and parse"):
        checks.Constraint(("k",), "something")
    with pytest.raises(TypeError, match="exactly one of holds and parse"):
        checks.Constraint(("k",), "something", holds=bool, parse=lambda v, k: v)
    assert checks.check_value(checks.positive_int("k"), 3, "k") == 3
