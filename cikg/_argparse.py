"""argparse helpers shared by :mod:`cikg.cli` and the packages' ``commands`` modules (it sits below both, so a
``commands`` module never imports the CLI it plugs into)."""
from __future__ import annotations

import argparse


def examples(*lines: str) -> str:
    """An ``examples:`` epilog, one indented line per example."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def parser_kwargs(help_text: str, *example_lines: str) -> dict:
    """``add_parser`` keyword arguments: the help as description, the examples as epilog, kept as written."""
    return {"help": help_text, "description": help_text,
            "epilog": examples(*example_lines) if example_lines else None,
            "formatter_class": argparse.RawDescriptionHelpFormatter}
