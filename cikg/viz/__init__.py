"""Plots with matplotlib: loss terms and validation metrics per epoch, the mask-rate schedule, sparse-user
group bars, the interest cluster map and degree distributions per node type.

Every function returns the ``Figure`` (shown inline in notebooks) and writes a PNG when ``path`` is given.
Epoch axes have integer ticks; curves that select a model mark the epoch selected on validation.
"""
from __future__ import annotations

import matplotlib

# files only, never a window, unless a notebook chose a backend that shows figures inline (matplotlib >= 3.9
# names `%matplotlib inline` "inline", older ones "module://matplotlib_inline.backend_inline")
_NOTEBOOK_BACKENDS = ("inline", "nbagg", "widget", "ipympl")
if not any(name in matplotlib.get_backend().lower() for name in _NOTEBOOK_BACKENDS):
    matplotlib.use("Agg")

from .graph import plot_degrees  # noqa: E402
from .groups import plot_groups  # noqa: E402
from .history import loss_terms, plot_loss_terms, plot_mask_schedule, plot_valid_metrics, read_history  # noqa: E402
from .interests import plot_interest_map  # noqa: E402
from .run import plot_run  # noqa: E402

__all__ = ["loss_terms", "plot_degrees", "plot_groups", "plot_interest_map", "plot_loss_terms",
           "plot_mask_schedule", "plot_run", "plot_valid_metrics", "read_history"]
