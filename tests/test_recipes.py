"""Graph recipes (graphs/*.yaml) and the experiment configs that use them."""
from pathlib import Path

import pytest
import torch

from cikg.cli import main
from cikg.errors import ConfigError
from cikg.graph import load_graph
from cikg.train import DataConfig, load_graph_recipe, load_run_config, load_run_dataset

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "graphs").glob("*.yaml"))
CONFIGS = sorted(p for p in (ROOT / "experiments").glob("*/*.yaml") if not p.name.endswith(".space.yaml"))  # not cikg tune spaces


def test_there_is_a_recipe_per_shipped_dataset():
    assert {p.stem for p in RECIPES} == {"dbbook2014", "book-crossing", "ml1m", "amazon-book", "synthetic"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_a_valid_data_config(path):
    recipe = load_graph_recipe(path)
    assert isinstance(recipe, DataConfig) and recipe.dataset == path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_configs_take_their_dataset_from_the_recipe(path):
    config = load_run_config(path)
    assert config.data.dataset == path.parent.name
    assert config.data.valid_fraction == 0.125 and config.data.split_seed == 2024


def test_config_data_keys_override_the_recipe(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"graph: {ROOT / 'graphs' / 'synthetic.yaml'}\ndata: {{synthetic_users: 300}}\n")
    loaded = load_run_config(config, ["data.synthetic_seed=3"])
    assert (loaded.data.dataset, loaded.data.synthetic_users, loaded.data.synthetic_seed) == ("synthetic", 300, 3)


def test_missing_recipe_names_the_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("graph: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="graph"):
        load_run_config(config)


def test_unknown_recipe_key_is_named(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("dataset: synthetic\ninclude_kgs: true\n")
    with pytest.raises(ConfigError, match="include_kgs"):
        load_graph_recipe(recipe)


def test_a_bad_recipe_value_names_the_key_and_the_recipe(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("dataset: synthetic\nvalid_fraction: 1.5\n")
    config = tmp_path / "run.yaml"
    config.write_text("graph: bad.yaml\n")
    with pytest.raises(ConfigError, match=r"expected a fraction in \[0, 1\), got 1.5 \(set in the graph recipe "
                                          r".*bad.yaml\)") as err:
        load_run_config(config)
    assert err.value.key == "data.valid_fraction"
    assert load_run_config(config, ["data.valid_fraction=0.2"]).data.valid_fraction == 0.2  # the config's key wins


def test_cli_builds_the_graph_of_a_recipe(tmp_path, capsys):
    recipe = tmp_path / "small.yaml"
    recipe.write_text("dataset: synthetic\nsynthetic_users: 200\nsynthetic_items: 60\ninclude_interests: false\n")
    out = tmp_path / "g.pt"
    assert main(["graph", "build", str(recipe), "-o", str(out)]) == 0
    graph = load_graph(out)
    dataset = load_run_dataset(load_graph_recipe(recipe))
    assert graph["user"].num_nodes == dataset.n_users == 200 and graph["interest"].num_nodes == 0
    assert graph["user", "interacts", "item"].edge_index.size(1) == dataset.train.size(1)
    assert torch.equal(graph["user", "interacts", "item"].edge_index, dataset.train)
