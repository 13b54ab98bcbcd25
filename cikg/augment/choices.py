"""The choices of REKI's config (:class:`~cikg.augment.reki.REKIConfig`), apart from the method so that the
``cikg augment`` parser offers them without importing torch."""
from __future__ import annotations

from .. import checks


class KnowledgeMode(checks.Choice):
    """Which of REKI's knowledge a run extracts."""

    INDIVIDUAL = "individual"  # per user and per item
    COLLECTIVE = "collective"  # per group of users / items
    BOTH = "both"


class ClusterOn(checks.Choice):
    """What REKI groups users and items by."""

    HISTORY = "history"  # interaction rows
    CF = "cf"  # collaborative embeddings (truncated SVD)


MODES = tuple(m.value for m in KnowledgeMode)
