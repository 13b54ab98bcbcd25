"""The in-context CoT dataset: chain-of-thought answers per example (``cot_examples.jsonl``, a replay file),
encoded with CF features attached (:class:`CoTDataset`, ``cot_dataset.pt``)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..._io import torch_save_atomic, write_jsonl_atomic
from ...errors import DatasetError
from ...llm.base import Backend, Completion, RunSummary
from ...llm.cache import OK
from ...llm.prompts import PromptTemplate
from .._shared import answer_not_an_llm, check_cf
from .examples import Examples
from .prompts import LLMCF_COT, build_cot_requests
from .retrieval import join_features

log = logging.getLogger(__name__)

EXAMPLES_FILE = "cot_examples.jsonl"
DATASET_FILE = "cot_dataset.pt"


def _not_an_llm(backend: Backend, completion: Completion) -> bool:
    """Whether an answer is not an LLM's: the backend is a stand-in, or the answer says so (also replayed)."""
    return bool(backend.not_an_llm) or answer_not_an_llm(completion)


@dataclass
class CoTRecords:
    """The answers of :func:`generate_cot`: one record per example plus the backend's summary."""

    records: List[Dict[str, Any]]
    summary: RunSummary
    path: Optional[Path] = None

    @property
    def ok(self) -> Tensor:
        return torch.tensor([r["status"] == OK for r in self.records], dtype=torch.bool)


def generate_cot(dataset: Any, examples: Examples, backend: Backend, template: PromptTemplate = LLMCF_COT,
                 history_len: int = 10, domain: str = "books",
                 out_dir: Union[str, Path, None] = None) -> CoTRecords:
    """Ask ``backend`` for a chain-of-thought per example; write ``cot_examples.jsonl`` into ``out_dir``.

    A failed request keeps its reason; the example is then dropped from the CoT dataset (logged). The JSONL is
    a replay file (``user_id`` is the example id), so ``ReplayBackend(out_dir / "cot_examples.jsonl")``
    answers the same requests again without a server.
    """
    started = time.perf_counter()
    requests = build_cot_requests(dataset, examples, template, history_len, domain)
    completions = backend.complete_many(requests)
    records = []
    for c, user, item, label in zip(completions, examples.users.tolist(), examples.items.tolist(),
                                    examples.labels.tolist(), strict=True):
        records.append({"user_id": c.request.user_id, "user": user, "item": item, "label": label,
                        "raw": c.text if c.ok else None, "status": OK if c.ok else "failed", "reason": c.reason,
                        "source": c.source, "key": c.key, "not_an_llm": _not_an_llm(backend, c),
                        "template": template.name, "template_version": template.version})
    summary = backend.summary() or RunSummary.of(backend.name, completions, started, backend.not_an_llm)
    # replayed answers keep the label of the backend that recorded them
    summary.not_an_llm = bool(records) and all(r["not_an_llm"] for r in records if r["status"] == OK)
    failed = sum(r["status"] != OK for r in records)
    if failed:
        log.warning("LLM-CF: %d of %d chain-of-thought request(s) failed; those examples are dropped", failed,
                    len(records))
    path = None
    if out_dir is not None:
        path = Path(out_dir) / EXAMPLES_FILE
        write_jsonl_atomic(path, records)
    return CoTRecords(records, summary, path)


@dataclass
class CoTDataset:
    """The in-context CoT dataset: per example its CoT embedding, CF features of its user and item, label.

    Attributes:
        users, items, labels: ``LongTensor [n]``.
        cot: ``[n, d_text]`` encoded chain-of-thought answers (unit norm).
        user_cf, item_cf: ``[n, d_cf]`` CF features of the example's user and item.
        meta: provenance (backend, template, encoder, counts).
    """

    users: Tensor
    items: Tensor
    labels: Tensor
    cot: Tensor
    user_cf: Tensor
    item_cf: Tensor
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.users.numel())

    def save(self, path: Union[str, Path]) -> Path:
        payload = {k: getattr(self, k) for k in ("users", "items", "labels", "cot", "user_cf", "item_cf")}
        payload["meta"] = self.meta
        torch_save_atomic(payload, Path(path))
        return Path(path)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "CoTDataset":
        path = Path(path)
        if not path.is_file():
            raise DatasetError("CoT dataset not found", path)
        try:
            payload = torch.load(path, weights_only=True)
            return cls(**payload)
        except Exception as err:  # torch raises several types for corrupt or foreign files
            raise DatasetError(f"not an LLM-CF CoT dataset ({type(err).__name__}: {err})", path) from None

    def keys(self, text_weight: float) -> Tensor:
        """Retrieval keys :math:`[\\sqrt{w}\\,c_e;\\ \\sqrt{1-w}\\,\\hat f^u_e]` ``[n, d_text + d_cf]``."""
        return join_features(self.cot, self.user_cf, text_weight)


def build_cot_dataset(dataset: Any, examples: Examples, answers: CoTRecords, encoder: Any,
                      cf: Tuple[Tensor, Tensor]) -> CoTDataset:
    """Encode the ok answers with ``encoder`` (a :class:`cikg.embed.Encoder`) and attach CF features."""
    ok = answers.ok
    if not bool(ok.any()):
        raise DatasetError(f"{dataset.name}: no chain-of-thought answer is usable (all {len(ok)} failed)")
    kept = examples.subset(ok)
    texts = [r["raw"] for r, keep in zip(answers.records, ok.tolist(), strict=True) if keep]
    cot = torch.from_numpy(encoder.encode(texts)).float()
    user_cf, item_cf = check_cf(dataset, cf)
    meta = {"dataset": dataset.name, "backend": answers.summary.backend, "not_an_llm": answers.summary.not_an_llm,
            "n_examples": len(kept), "n_failed": int((~ok).sum()), "positives": int(kept.labels.sum()),
            "encoder": getattr(encoder, "model_name", type(encoder).__name__),
            "template": f"{LLMCF_COT.name} v{LLMCF_COT.version}"}
    return CoTDataset(kept.users, kept.items, kept.labels, cot, user_cf[kept.users], item_cf[kept.items], meta)
