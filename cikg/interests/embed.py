"""The sentence encoder, re-exported: it lives in :mod:`cikg.embed` (below interests and augment)."""
from ..checks import parse_enum
from ..embed import (
    DEFAULT_MODEL_NAME,
    MODEL_PACKAGE,
    EmbeddingCache,
    EmbeddingKind,
    Encoder,
    embed_texts,
    model_dir,
    tfidf_vectors,
)

__all__ = ["DEFAULT_MODEL_NAME", "MODEL_PACKAGE", "EmbeddingCache", "EmbeddingKind", "Encoder", "embed_texts",
           "model_dir", "parse_enum", "tfidf_vectors"]
