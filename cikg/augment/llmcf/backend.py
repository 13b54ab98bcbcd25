"""The offline chain-of-thought stand-in :class:`CoTProfileBackend` (**not an LLM**)."""
from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence

import torch

from ...errors import ConfigError
from ...llm.base import NOT_AN_LLM, Completion, RunSummary
from ...llm.cache import OK
from ...llm.kgprofile import KGProfileBackend, KGProfileConfig, top_k_per_row
from ...llm.prompts import Request
from .._shared import csr_rows, item_title


class CoTProfileBackend:
    """Offline chain-of-thought answers from the KG and titles: **not an LLM**.

    For an LLM-CF request about ``(user, item)`` it writes the four steps of :data:`LLMCF_COT` from facts:
    the user's KG-profile (:meth:`cikg.llm.KGProfileBackend.profiles`), the target item's own named KG
    entities and title words (ranked by IDF), the facets they share (fit) and the facets the target adds
    (diversity). Answers are deterministic, derived only from the train split, and never use the label.

    Args:
        dataset: the dataset the requests were built from.
        config: settings of the underlying KG-profile.
        item_facets: facets listed per target item.
    """

    not_an_llm = True
    name = "cot-profile"

    def __init__(self, dataset: Any, config: Optional[KGProfileConfig] = None, item_facets: int = 4):
        self.dataset = dataset
        self.profile = KGProfileBackend(dataset, config or KGProfileConfig())
        self.item_facets = item_facets
        self._summary: Optional[RunSummary] = None

    def __repr__(self) -> str:
        return f"CoTProfileBackend({self.dataset.name!r}) [{NOT_AN_LLM}]"

    def summary(self) -> Optional[RunSummary]:
        return self._summary

    def item_profiles(self, items: Sequence[int]) -> List[List[str]]:
        """Per item, its ``item_facets`` named features (entities first, then title words, by IDF)."""
        matrix, idf, names, kinds = self.profile.features()
        items_t = torch.as_tensor(list(items), dtype=torch.long)
        csr = matrix.to_sparse_csr()
        rows, cols = csr_rows(csr.crow_indices(), csr.col_indices(), items_t)
        is_entity = torch.tensor([k.startswith("entity:") for k in kinds], dtype=torch.bool)
        scores = idf[cols] + torch.where(is_entity[cols], 1e4, 0.0).double()
        best = top_k_per_row(rows, cols, scores, self.item_facets)
        out: List[List[str]] = [[] for _ in range(items_t.numel())]
        for r, c in zip(rows[best].tolist(), cols[best].tolist(), strict=True):
            out[r].append(names[c])
        return out

    def complete_many(self, requests: Sequence[Request]) -> List[Completion]:
        started = time.perf_counter()
        items = [dict(r.extra).get("item") for r in requests]
        missing = [r.user_id for r, i in zip(requests, items, strict=True) if i is None]
        if missing:
            raise ConfigError(f"cot-profile answers LLM-CF requests only; request {missing[0]!r} names no item",
                              "backend")
        user_profiles = self.profile.profiles([r.user for r in requests])
        item_profiles = self.item_profiles(items)
        out = []
        for request, item, profile, facets in zip(requests, items, user_profiles, item_profiles, strict=True):
            liked = [p for p, _, _ in profile]
            shared = [f for f in facets if f in liked]
            new = [f for f in facets if f not in liked]
            title = item_title(self.dataset, item)
            steps = [
                "1. History: the user's items centre on " + (", ".join(liked) if liked else "no named theme") + ".",
                f"2. Target: {title}" + (f" is about {', '.join(facets)}." if facets else " has no known facets."),
                ("3. Fit: it shares " + ", ".join(shared) + " with the history, a likely fit.") if shared else
                "3. Fit: it shares no named theme with the history, an uncertain fit.",
                ("4. Diversity: it would add " + ", ".join(new) + ".") if new else
                "4. Diversity: it adds nothing new to the history.",
            ]
            out.append(Completion(request, OK, " ".join(steps), source=f"{self.name} ({NOT_AN_LLM})",
                                  meta={"not_an_llm": True}))
        self._summary = RunSummary.of(self.name, out, started, not_an_llm=True)
        return out
