"""The choices of the interest layer's configs, apart from the code that uses them so that the ``cikg interests``
parser offers them without importing pandas, scikit-learn or torch."""
from __future__ import annotations

from ..checks import Choice

#: above this many distinct phrases, ``method="auto"`` uses MiniBatchKMeans.
AUTO_MINIBATCH_ABOVE = 20_000
#: what the predictive score of :func:`cikg.interests.report.interest_report` embeds per item: its title, or its
#: title and the names of its KG neighbours.
ITEM_TEXTS = ("title", "title+kg")


class ClusterMethod(Choice):
    """The scikit-learn clustering algorithm."""

    KMEANS = "kmeans"  #: ``KMeans`` (Lloyd), ``n_init`` restarts
    MINIBATCH = "minibatch"  #: ``MiniBatchKMeans``, for large phrase sets
    AGGLOMERATIVE = "agglomerative"  #: Ward ``AgglomerativeClustering`` (dense vectors, ≤ 20k phrases)
    AUTO = "auto"  #: KMeans up to 20k phrases, MiniBatchKMeans beyond

    def resolve(self, n_phrases: int) -> "ClusterMethod":
        if self is ClusterMethod.AUTO:
            return ClusterMethod.MINIBATCH if n_phrases > AUTO_MINIBATCH_ABOVE else ClusterMethod.KMEANS
        return self


class PerturbMode(Choice):
    """How the edges are perturbed (see :mod:`cikg.interests.perturb`)."""

    DROP = "drop"
    REPLACE = "replace"
    ADD = "add"
