"""The ``cikg`` command as a shell user meets it: every (sub-)subcommand's ``--help`` exits 0 and shows
examples; user errors exit non-zero with one actionable line on stderr and no traceback."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from cikg.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _walk(parser: argparse.ArgumentParser, path: Tuple[str, ...] = ()) -> Iterator[Tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, path + (name,))


COMMANDS: List[Tuple[str, ...]] = list(_walk(build_parser()))


def test_every_expected_command_is_registered():
    names = {" ".join(c) for c in COMMANDS}
    expected = {"demo", "data stats", "data split", "data convert", "interests infer", "interests cluster",
                "interests report", "interests sweep", "interests perturb",
                "graph build", "graph stats", "graph export", "train", "evaluate", "augment", "llm serve",
                "llm export-replay", "llm import-replay", "bench", "recommend", "export", "serve"}
    assert expected <= names, expected - names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cikg")
def test_help_exits_zero_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cikg"), out[:200]
    examples = out.split("examples:", 1)
    assert len(examples) == 2, f"`cikg {' '.join(command)} --help` has no examples: section"
    assert "cikg" in examples[1] or "torchrun" in examples[1]


def _error(argv, capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("cikg: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_config_file(capsys, tmp_path):
    line = _error(["train", str(tmp_path / "nope.yaml")], capsys)
    assert "nope.yaml" in line and "not found" in line


def test_unknown_config_key(capsys):
    line = _error(["train", "-", "train.epochz=3"], capsys)
    assert "epochz" in line


def test_unknown_dataset_name(capsys):
    line = _error(["data", "stats", "no-such-dataset"], capsys)
    assert "no-such-dataset" in line and "dbbook2014" in line  # names the problem and the available ones


def test_unknown_dataset_in_train_override(capsys, tmp_path):
    line = _error(["train", "-", "data.dataset=no-such-dataset", "--run-dir", str(tmp_path / "r")], capsys)
    assert "no-such-dataset" in line


def test_missing_csv_for_convert(capsys, tmp_path):
    line = _error(["data", "convert", str(tmp_path / "ratings.csv"), "-o", str(tmp_path / "out")], capsys)
    assert "ratings.csv" in line


def test_evaluate_not_a_run_directory(capsys, tmp_path):
    line = _error(["evaluate", str(tmp_path)], capsys)
    assert str(tmp_path) in line


def test_unreachable_llm_server(capsys, tmp_path):
    line = _error(["interests", "infer", "dbbook2014", "--base-url", "http://127.0.0.1:9/v1", "--timeout", "2",
                   "--max-attempts", "1", "--users", "2", "--no-progress", "-o", str(tmp_path / "out")], capsys)
    assert "http://127.0.0.1:9/v1" in line and "reach" in line and "cikg llm serve" in line


def test_usage_error_is_exit_2_from_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == 2
    assert "config" in capsys.readouterr().err


def test_console_entry_point_exit_code(tmp_path):
    """The real process: exit status 2, one line, no traceback (and --debug shows the traceback)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "cikg", "train", str(tmp_path / "missing.yaml")]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("cikg: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_debug_raises_instead(tmp_path):
    from cikg.errors import CikgError

    with pytest.raises(CikgError, match="missing.yaml"):
        main(["--debug", "train", str(tmp_path / "missing.yaml")])


def test_the_command_line_starts_without_the_heavy_libraries():
    """`cikg --help` (importing cikg.cli and building every sub-parser) loads neither torch, NumPy nor any library
    only some subcommands need: the packages export lazily and the parsers take their choices from light modules."""
    heavy = ("numpy", "scipy", "torch", "torch_geometric", "pandas", "sklearn", "matplotlib", "faiss", "fastapi", "uvicorn", "optuna",
             "mlflow", "sentence_transformers", "transformers")
    code = f"import sys, cikg.cli; cikg.cli.build_parser(); print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded


@pytest.mark.parametrize("command", [["train", "c.yaml", "--run-dir", "runs/x"],
                                     ["tune", "c.yaml", "--space", "s.yaml", "--trials", "3"]])
def test_overrides_may_follow_options(command):
    """argparse ends ``overrides`` at the first option; the ones after it still count, in their order."""
    from cikg.cli import _parse

    args = _parse(build_parser(), [command[0], command[1], "train.lr=1e-3", *command[2:], "model.dim=8",
                                   "train.epochs=2"])
    assert args.config == "c.yaml" and args.overrides == ["train.lr=1e-3", "model.dim=8", "train.epochs=2"]


def test_a_stray_argument_after_the_options_is_still_refused(capsys):
    from cikg.cli import _parse

    with pytest.raises(SystemExit) as exit_info:
        _parse(build_parser(), ["train", "c.yaml", "--run-dir", "runs/x", "train.lr=1e-3", "oops"])
    assert exit_info.value.code == 2 and "unrecognized arguments: train.lr=1e-3 oops" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides takes no key=value either
        _parse(build_parser(), ["data", "stats", "dbbook2014", "train.lr=1e-3"])
