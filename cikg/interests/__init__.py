"""Interest structuring: embed the LLM's interest phrases, cluster them into interest nodes, assign users.

>>> from cikg.interests import ClusterConfig, Encoder, structure_interests
>>> result = structure_interests("runs/dbbook/user_interests_raw.jsonl", ClusterConfig(kappa=400),
...                              dataset=load_dataset("dbbook2014"), encoder=Encoder("cache/emb.sqlite"),
...                              out_dir="runs/dbbook")                      # doctest: +SKIP
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "..embed": "EmbeddingCache EmbeddingKind Encoder embed_texts model_dir tfidf_vectors",
    ".cluster": "ClusterConfig ClusterMethod InterestClustering VectorClustering centroid_distances cluster_vectors "
                "coverage_problem fit_interests fit_labels most_central",
    ".io": "read_clustered read_raw_interests save_interests",
    ".phrases": "clean_pairs normalise_phrases",
    ".pipeline": "StructuredInterests structure_interests",
    ".report": "InterestReport PredictiveScore ScoreRow interest_report write_report",
})
