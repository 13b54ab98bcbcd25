"""Interest structuring: embed the LLM's interest phrases, cluster them into interest nodes, assign users.

>>> from cikg.interests import ClusterConfig, Encoder, structure_interests
>>> result = structure_interests("runs/dbbook/user_interests_raw.jsonl", ClusterConfig(kappa=400),
...                              dataset=load_dataset("dbbook2014"), encoder=Encoder("cache/emb.sqlite"),
...                              out_dir="runs/dbbook")                      # doctest: +SKIP
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ..embed import EmbeddingCache, EmbeddingKind, Encoder, embed_texts, model_dir, tfidf_vectors
    from .cluster import (
        ClusterConfig,
        ClusterMethod,
        InterestClustering,
        VectorClustering,
        centroid_distances,
        cluster_vectors,
        coverage_problem,
        fit_interests,
        fit_labels,
        most_central,
    )
    from .io import read_clustered, read_raw_interests, save_interests
    from .phrases import clean_pairs, normalise_phrases
    from .pipeline import StructuredInterests, structure_interests
    from .report import InterestReport, PredictiveScore, ScoreRow, interest_report, write_report

__all__ = [
    "ClusterConfig", "ClusterMethod", "EmbeddingCache", "EmbeddingKind", "Encoder", "InterestClustering",
    "InterestReport", "PredictiveScore", "ScoreRow", "StructuredInterests", "VectorClustering", "centroid_distances",
    "clean_pairs", "cluster_vectors", "coverage_problem", "embed_texts", "fit_interests", "fit_labels",
    "interest_report", "model_dir", "most_central", "normalise_phrases", "read_clustered", "read_raw_interests",
    "save_interests", "structure_interests", "tfidf_vectors", "write_report",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
