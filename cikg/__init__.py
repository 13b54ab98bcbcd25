"""cikg: Collaborative Interest Knowledge Graphs.

An LLM infers what each user is interested in, the interests are clustered into graph nodes, and a graph
neural network (CIKGRec, arXiv 2412.13544) learns from users, items, the item knowledge graph and the
interests together.

Layers (a lower one never imports a higher one)::

    cikg.data -> cikg.llm -> cikg.interests -> cikg.graph -> cikg.models -> cikg.train / cikg.eval
                      \\-> cikg.augment (node features)
"""
from __future__ import annotations

import logging

from .errors import CikgError, ConfigError, DatasetError, GraphError, LLMError

__version__ = "0.1.0"
__all__ = ["CikgError", "ConfigError", "DatasetError", "GraphError", "LLMError", "__version__", "load_model"]


def load_model(run_dir, block_size: int = 1024, device=None):
    """Reopen a run directory for use: :func:`cikg.serving.load_model` (imported on first call, so ``import
    cikg`` stays light)."""
    from .serving import load_model as _load_model

    return _load_model(run_dir, block_size=block_size, device=device)

logging.getLogger(__name__).addHandler(logging.NullHandler())
