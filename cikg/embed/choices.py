"""How texts become vectors, apart from the encoder so that the ``cikg interests`` parser offers the choice
without importing NumPy, SciPy or torch."""
from __future__ import annotations

from typing import Union

from ..checks import Choice, parse_enum


class EmbeddingKind(Choice):
    """How interest phrases become vectors."""

    MINILM = "minilm"  #: sentence-transformers all-MiniLM-L6-v2, 384-d, dense, normalised, cached
    TFIDF = "tfidf"  #: TF-IDF of word 1-2-grams, sparse, normalised

    @classmethod
    def parse(cls, value: Union[str, "EmbeddingKind"], key: str = "embedding") -> "EmbeddingKind":
        """``"minilm"`` / ``"tfidf"`` (or a member) → member; anything else is a :class:`ConfigError`."""
        return parse_enum(cls, value, key)
