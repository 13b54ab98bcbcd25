"""``cikg export``: a run's final embeddings as parquet keyed by original ids, and a FAISS index of the items.

Written into the output directory::

    users.parquet      user, e0 .. e{d-1}
    items.parquet      item, item_text, e0 .. e{d-1}        (row r = dense item id r = FAISS label r)
    entities.parquet   entity, entity_text, e0 ..          (models that propagate over the KG)
    interests.parquet  interest, label, e0 ..              (models that propagate over interests)
    items.faiss        faiss.IndexFlatIP of the item embeddings
    export.json        run, model, dataset, dim, how scores are computed, the files and their row counts

The index is exact inner product, the model's own score (``user · item``; checked on the loaded model before
the index is written), so ``index.search(user_vectors, k)`` returns the model's top-K before seen items are
removed. Every file is written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import pandas as pd

from .._io import atomic_path, ensure_dir, write_json_atomic
from .model import TrainedModel

FILES = {"user": "users.parquet", "item": "items.parquet", "entity": "entities.parquet",
         "interest": "interests.parquet"}
INDEX_FILE = "items.faiss"


def _frame(model: TrainedModel, node_type: str) -> pd.DataFrame:
    """One node type's embeddings with the id (and text) columns first."""
    frame = model.embeddings_frame(node_type).reset_index()
    dataset = model.dataset
    if node_type == "item":
        frame.insert(1, "item_text", dataset.item_text)
    elif node_type == "entity":
        frame.insert(1, "entity_text", dataset.entity_text[dataset.n_items:])
    elif node_type == "interest":
        labels = dataset.interest_labels or [None] * dataset.n_interests
        frame.insert(1, "label", labels)
    return frame


def item_index(model: TrainedModel):
    """A ``faiss.IndexFlatIP`` over the item embeddings (label = dense item id = row of ``items.parquet``)."""
    import faiss

    model.require_inner_product("a FAISS inner-product index")
    vectors = np.ascontiguousarray(model.item_embeddings().to_numpy(dtype=np.float32))
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def export_run(model: TrainedModel, out_dir: Union[str, Path]) -> Dict[str, Any]:
    """Write the embeddings, the item index and ``export.json`` into ``out_dir``; returns the manifest."""
    import faiss

    out = ensure_dir(out_dir)
    files: Dict[str, Dict[str, Any]] = {}
    for node_type in model.node_types:
        frame = _frame(model, node_type)
        with atomic_path(out / FILES[node_type]) as tmp:
            frame.to_parquet(tmp, index=False)
        files[FILES[node_type]] = {"node_type": node_type, "rows": len(frame), "id_column": node_type}
    index = item_index(model)
    with atomic_path(out / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    files[INDEX_FILE] = {"type": "IndexFlatIP", "metric": "inner_product", "rows": int(index.ntotal),
                         "labels": "row numbers of items.parquet"}
    manifest = {"run_dir": str(model.run_dir.resolve()), "model": model.model_name,
                "model_class": type(model.model).__name__, "dataset": model.dataset.name, "dim": model.dim,
                "score": "inner product of the user and item embeddings", "files": files}
    write_json_atomic(out / "export.json", manifest)
    return manifest

