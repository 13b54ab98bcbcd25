"""The layers of docs/architecture.md, checked on the source: a lower layer never imports a higher one.

Every ``import`` of a ``cikg`` module is read with :mod:`ast`, those inside functions included (a lazy
import is still an edge, and so is a lazy package export: its ``if TYPE_CHECKING:`` import). ``commands.py``
modules are the CLI of their package and sit on the top layer.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cikg"

#: layer of each top-level part of ``cikg``: a part imports only lower layers (``<commands>``: any commands.py)
LAYERS: Dict[str, int] = {
    "errors": 0, "_lazy": 0, "_io": 1, "checks": 1, "_argparse": 1, "_lock": 2, "config": 2, "topk": 2, "viz": 2,
    "data": 3, "embed": 3,
    "llm": 4,
    "interests": 5,
    "graph": 6,
    "augment": 7, "models": 7, "eval": 7,
    "train": 8,
    "serving": 9, "config_reference": 9,
    "demo": 10, "cli": 11, "<commands>": 12, "__main__": 13, "<root>": 13,
}
#: edges between parts on one layer that the design allows (none: augment, models and eval are siblings)
SIDEWAYS: set = set()
#: known upward edges, each with the reason it stays (an entry that no longer occurs fails the test)
KNOWN_UPWARD = {
    ("train", "augment"): "the trainer loads augment's NodeFeatures artifact (features.pt) into the graph",
    ("serving", "<root>"): "the HTTP app reports cikg.__version__",
}


def _part(module: str, path: Path) -> str:
    if path.name == "commands.py":
        return "<commands>"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _imports(path: Path) -> Iterator[Tuple[str, int]]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "cikg" and node.level:  # "from .. import x": x may be a subpackage
                for alias in node.names:
                    yield f"cikg.{alias.name}", node.lineno
            elif target.startswith("cikg"):
                yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cikg"):
                    yield alias.name, node.lineno


def _target_part(target: str) -> str:
    parts = target.split(".")
    if len(parts) == 1:
        return "<root>"
    return parts[1] if parts[1] in LAYERS else "<root>"


def _edges() -> List[Tuple[str, str, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _part(_module_name(path), path)
        for target, line in _imports(path):
            part = _target_part(target)
            if part != source and not (part == "<root>" and target == "cikg" and source == "<root>"):
                edges.append((source, part, f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"))
    return edges


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.name != "__init__.py"}
    assert parts <= set(LAYERS), f"give these a layer in tests/test_layers.py: {sorted(parts - set(LAYERS))}"


def test_no_layer_imports_a_higher_one():
    upward = [(s, t, where) for s, t, where in _edges()
              if LAYERS[t] > LAYERS[s] and (s, t) not in KNOWN_UPWARD]
    assert not upward, "upward imports:\n" + "\n".join(where for _, _, where in upward)


def test_parts_on_one_layer_do_not_import_each_other():
    sideways = [where for s, t, where in _edges() if LAYERS[t] == LAYERS[s] and (s, t) not in SIDEWAYS
                and "<" not in s + t]
    assert not sideways, "imports inside one layer:\n" + "\n".join(sideways)


@pytest.mark.parametrize("edge", sorted(KNOWN_UPWARD))
def test_each_known_upward_edge_still_exists(edge):
    assert edge in {(s, t) for s, t, _ in _edges()}, f"{edge} is gone: remove it from KNOWN_UPWARD"


def test_no_import_cycle_between_modules_of_interests():
    """interests/cluster.py and interests/io.py once imported each other; phrases.py sits below both."""
    graph = {}
    for path in (PACKAGE / "interests").glob("*.py"):
        graph[_module_name(path)] = {t for t, _ in _imports(path) if t.startswith("cikg.interests.")}
    for module, targets in graph.items():
        for target in targets:
            assert module not in graph.get(target, set()), f"{module} <-> {target}"
