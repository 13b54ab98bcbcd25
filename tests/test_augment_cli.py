"""The ``cikg augment`` CLI: one scaffolding for the four methods in ``cikg/augment/commands.py`` (parsers only;
the runs are in test_augment.py and the slow CLI tests of test_augment_coco.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cikg.augment import commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cikg")
    commands.register(parser.add_subparsers())
    return parser


def test_the_four_methods_are_registered_in_order():
    assert list(commands.METHODS) == ["kar", "reki", "llmcf", "coco"]
    top = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    methods = next(a for a in top.choices["augment"]._actions if isinstance(a, argparse._SubParsersAction))
    assert list(methods.choices) == ["kar", "reki", "llmcf", "coco"]


@pytest.mark.parametrize("method", ["kar", "reki", "llmcf", "coco"])
def test_every_method_takes_the_shared_flags_with_one_meaning(method):
    args = _parser().parse_args(["augment", method, "dbbook2014", "-o", "out"])
    assert (args.dataset, args.out, args.seed, args.graph, args.no_progress) == ("dbbook2014", Path("out"), 2024,
                                                                                  False, False)
    assert args.func is getattr(commands, f"{method}_command")
    flags = _parser().parse_args(["augment", method, "d", "-o", "o", "--graph", "--seed", "7", "--no-progress"])
    assert (flags.graph, flags.seed, flags.no_progress) == (True, 7, True)


@pytest.mark.parametrize("method, backend, max_tokens", [("kar", "kg-profile", 128), ("reki", "kg-profile", 128),
                                                         ("llmcf", "cot-profile", 200)])
def test_backend_flags_default_to_the_offline_stand_in(method, backend, max_tokens):
    args = _parser().parse_args(["augment", method, "d", "-o", "o"])
    # concurrency unset: LLMConfig.in_flight picks 2 against a local server, 16 against a remote API
    assert (args.backend, args.max_tokens, args.concurrency, args.timeout, args.model) == (backend, max_tokens, None,
                                                                                            120.0, "smollm2")
    with pytest.raises(SystemExit):
        _parser().parse_args(["augment", method, "d", "-o", "o", "--backend", "cot-profile" if method != "llmcf"
                              else "kg-profile"])


def test_cf_flag_only_where_a_method_reads_it():
    for method in ("reki", "llmcf", "coco"):
        assert _parser().parse_args(["augment", method, "d", "-o", "o", "--cf", "e.pt"]).cf == Path("e.pt")
    with pytest.raises(SystemExit):
        _parser().parse_args(["augment", "kar", "d", "-o", "o", "--cf", "e.pt"])


