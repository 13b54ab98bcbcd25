"""Using a trained run: recommendations, scores and embeddings by original ids, export (parquet + FAISS) and
an HTTP service. It sits above :mod:`cikg.train` (it reopens run directories with :func:`cikg.train.load_run`)
and :mod:`cikg.eval` (its ranking kernel); nothing below imports it.

``cikg.serving.app`` (FastAPI) and ``cikg.serving.export`` (FAISS) are imported on use.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".model": "TrainedModel UnknownIdError load_model",
})
