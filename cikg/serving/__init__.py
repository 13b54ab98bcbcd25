"""Using a trained run: recommendations, scores and embeddings by original ids, export (parquet + FAISS) and
an HTTP service. It sits above :mod:`cikg.train` (it reopens run directories with :func:`cikg.train.load_run`)
and :mod:`cikg.eval` (its ranking kernel); nothing below imports it.

``cikg.serving.app`` (FastAPI) and ``cikg.serving.export`` (FAISS) are imported on use.
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .model import TrainedModel, UnknownIdError, load_model

__all__ = [
    "TrainedModel", "UnknownIdError", "load_model",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
