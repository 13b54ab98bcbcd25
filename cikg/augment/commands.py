"""``cikg augment METHOD DATASET ...``: run one knowledge-augmentation method and write its NodeFeatures artifact.

Each method module that exists adds its own sub-parser through ``add_cli(subparsers)``; the written
``DIR/features.pt`` is what ``cikg train CONFIG data.features=DIR model.features.mode=add`` reads.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any

METHOD_MODULES = ("kar", "reki", "llmcf", "coco")


def register(subparsers: Any) -> None:
    """Add ``augment`` with one sub-command per available method to the ``cikg`` sub-parsers."""
    parser = subparsers.add_parser(
        "augment", help="turn LLM knowledge into user/item node features (KAR, REKI, LLM-CF, CoCo)",
        description="Extract knowledge with an LLM backend (or an offline one), encode it and write "
                    "DIR/features.pt; train with `cikg train CONFIG data.features=DIR model.features.mode=add`.",
        epilog="examples:\n  cikg augment kar dbbook2014 --backend kg-profile --out runs/kar-dbbook2014\n"
               "  cikg augment reki dbbook2014 --groups 50 --out runs/reki-dbbook2014\n"
               "  cikg train experiments/dbbook2014/augment-lightgcn.yaml  # uses runs/augment/dbbook2014/features/kar",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    methods = parser.add_subparsers(dest="augment_method", required=True, metavar="METHOD")
    for name in METHOD_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as err:  # a method not written yet; a missing dependency inside one is an error
            if err.name == f"{__package__}.{name}":
                continue
            raise
        add_cli = getattr(module, "add_cli", None)
        if add_cli is not None:
            add_cli(methods)


__all__ = ["METHOD_MODULES", "register"]
