"""``cikg serve``: a trained run as an HTTP service (FastAPI, served by uvicorn).

The run is loaded once; every request is answered from the embeddings in memory::

    GET  /health                           run, model, dataset, counts
    GET  /recommend?user=ID&k=10           top-k unseen items of a known user (&include_seen=true keeps seen ones)
    POST /recommend  {"items": [...], "k": 10}
                                           fold-in: a user the model has not seen, from the items they liked
    GET  /similar-items?item=ID&k=10       nearest items by cosine similarity of the item embeddings

An unknown user or item id answers 404 with a message naming it; a bad parameter (``k`` outside
``1..n_items``, a missing id, an empty item list) answers 422; a request the model cannot answer
(fold-in for a model whose scores are not inner products) 400. uvicorn ends cleanly on SIGINT and SIGTERM.
"""
# no `from __future__ import annotations`: FastAPI reads the handlers' annotations, and FoldIn is local
import signal
import threading
from typing import Any, Dict, List, Optional, Union

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .. import __version__
from ..errors import CikgError
from .model import TrainedModel, UnknownIdError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def create_app(model: TrainedModel) -> FastAPI:
    """The FastAPI application answering for ``model`` (see the module docstring for the endpoints)."""
    n_items = model.dataset.n_items
    app = FastAPI(title="cikg recommendations", version=__version__,
                  description=f"{model.model_name} trained on {model.dataset.name} ({model.run_dir})")

    class FoldIn(BaseModel):
        items: List[Union[str, int]] = Field(min_length=1, description="original ids of the user's items")
        k: int = Field(10, ge=1, le=n_items)

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, err: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(err), "kind": err.kind, "ids": err.ids})

    @app.exception_handler(CikgError)
    async def cannot_answer(request: Request, err: CikgError) -> JSONResponse:  # a request the model cannot serve
        return JSONResponse(status_code=400, content={"detail": str(err)})

    @app.get("/health")
    def health() -> Dict[str, Any]:
        return {"status": "ok", "run": str(model.run_dir), "model": model.model_name,
                "dataset": model.dataset.name, "users": model.dataset.n_users, "items": n_items, "dim": model.dim}

    @app.get("/recommend")
    def recommend(user: str = Query(min_length=1), k: int = Query(10, ge=1, le=n_items),
                  include_seen: bool = False) -> Dict[str, Any]:
        _, items, scores = model.top_k(model.dense_ids("user", user), k, exclude_seen=not include_seen)
        return {"user": user, "k": k, "items": model.item_records(items, scores)}

    @app.post("/recommend")
    def fold_in(body: FoldIn) -> Dict[str, Any]:
        items = [str(i) for i in body.items]
        return {"given": items, "k": body.k, "items": model.item_records(*model.fold_in_top_k(items, k=body.k))}

    @app.get("/similar-items")
    def similar_items(item: str = Query(min_length=1), k: int = Query(10, ge=1, le=n_items)) -> Dict[str, Any]:
        return {"item": item, "k": k, "items": model.item_records(*model.similar_top_k(item, k=k))}

    return app


def serve(model: TrainedModel, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> Optional[str]:
    """Serve ``model`` with uvicorn until SIGINT or SIGTERM; returns the name of the signal that stopped it.

    uvicorn shuts down gracefully on either signal and then re-raises it to the handler it found installed;
    the handler installed here only records it, so a requested stop ends the command normally (exit 0)
    instead of as a kill or an interrupted run.
    """
    import uvicorn

    stops: List[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda s, _frame: stops.append(s)) for sig in STOP_SIGNALS} if in_main else {}
    try:
        uvicorn.run(create_app(model), host=host, port=port, log_level=log_level)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return signal.Signals(stops[0]).name if stops else None
