"""KAR: open-world knowledge augmentation (Xi et al., *Towards Open-World Recommendation with Knowledge
Augmentation from Large Language Models*, RecSys 2024, arXiv 2306.10933).

Three stages, each kept as a separate, inspectable step:

1. **Knowledge reasoning and generation** with *factorization prompting*. A per-domain list of
   scenario-specific factors ``F`` (books: genre, themes, author and style, era, audience ...; given, the
   :data:`~cikg.augment.prompts.DOMAIN_FACTORS` default, or asked from the LLM once per domain). For every
   user, one *preference reasoning* prompt over the titles of the last ``history_len`` train items asks
   what the user prefers along each factor; for every item, one *factual* prompt asks for its facts along
   the same factors. Prompts are template data (:mod:`cikg.augment.prompts`); calls go through any
   :mod:`cikg.llm` backend (``openai`` with its SQLite cache, so an interrupted run resumes; ``replay``;
   the offline ``kg-profile``, which is *not an LLM* and answers from the KG and titles).
2. **Knowledge encoding**: every answer is encoded by the cached sentence encoder
   (:class:`cikg.embed.Encoder`, all-MiniLM-L6-v2 by default): reasoning vectors
   :math:`r_u \\in \\mathbb{R}^{384}` and factual vectors :math:`f_i \\in \\mathbb{R}^{384}`.
3. **Knowledge utilisation**: the vectors are pre-stored (:class:`~cikg.augment.base.NodeFeatures`, user block
   ``reasoning``, item block ``factual``) and fused into any backbone by the hybrid-expert adaptor
   (:class:`cikg.models.experts.HybridExpertAdaptor` inside :class:`cikg.models.fusion.FeatureFusion`,
   ``model.features.adaptor=experts``), trained jointly with it; training and scoring never call the LLM.

Users or items whose prompt has no titled item, or whose answer failed, get a zero vector (counted in the
provenance as ``missing_users`` / ``missing_items``). Every answer used is written as a ``replay`` JSONL
(``user_id`` = ``user:<id>`` / ``item:<id>``), so a run can be repeated without a server.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import checks
from .._io import atomic_path, write_json_atomic
from ..embed import Encoder
from ..errors import ConfigError
from ..llm.base import NOT_AN_LLM, Backend, Completion, RunSummary
from ..llm.kgprofile import KGProfileBackend, KGProfileConfig
from ..llm.parse import parse_interests
from ..llm.pipeline import default_domain
from ..llm.prompts import PromptTemplate, Request, titles_of
from ._shared import answer_not_an_llm, llm_model
from .base import Augmenter, NodeFeatures
from .prompts import DOMAIN_FACTORS, ITEM_NOUN, KAR_FACTORS, KAR_ITEM_FACTUAL, KAR_USER_REASONING

logger = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
SUMMARY_FILE = "augment_summary.json"


@dataclass
class KARConfig:
    """Settings of :class:`KAR`.

    Attributes:
        domain: ``books`` | ``movies`` | ``items`` (default: from the dataset name).
        factors: the scenario-specific factors (default: :data:`DOMAIN_FACTORS` of the domain).
        ask_factors: ask the LLM for the factor list once (ignored, with a log line, for offline backends).
        n_factors: how many factors to ask for.
        history_len: last train items shown in a user's prompt.
    """

    domain: Optional[str] = None
    factors: Optional[Tuple[str, ...]] = None
    ask_factors: bool = False
    n_factors: int = 6
    history_len: int = 20
    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.one_of(tuple(DOMAIN_FACTORS), "domain", optional=True), checks.positive_int("n_factors", "history_len"),
        checks.boolean("ask_factors"))

    def __post_init__(self) -> None:
        checks.check(self)
        if self.factors is not None:
            self.factors = tuple(str(f).strip() for f in self.factors if str(f).strip())
            if not self.factors:
                raise ConfigError("expected at least one factor", "factors")


# ---------------------------------------------------------------------------------------------- requests
def domain_of(dataset: Any, domain: Optional[str]) -> str:
    return domain or default_domain(dataset)


def make_request(template: PromptTemplate, node: str, index: int, request_id: str, members: Sequence[int],
                 n_titles: int, **values: Any) -> Request:
    """A request about ``node`` ``index`` (a user, an item, or a group whose ``members`` the offline backend reads)."""
    messages = template.render(**values)
    frozen = tuple(tuple(sorted(m.items())) for m in messages)
    return Request(int(index), request_id, frozen, template.name, template.version, n_titles,
                   extra=(("node", node), ("members", tuple(int(m) for m in members))))


def prompt_values(domain: str, factors: Sequence[str]) -> Dict[str, Any]:
    return {"domain": domain, "item_noun": ITEM_NOUN[domain], "factors": ", ".join(factors),
            "n_factors": len(factors)}


def user_requests(dataset: Any, factors: Sequence[str], domain: str, history_len: int,
                  users: Optional[Sequence[int]] = None,
                  template: PromptTemplate = KAR_USER_REASONING) -> Tuple[List[Request], List[int]]:
    """One preference-reasoning request per user (``user_id`` = ``user:<original id>``); users without a titled
    item in their last ``history_len`` train items are returned as skipped."""
    values = prompt_values(domain, factors)
    requests, skipped = [], []
    for user in (range(dataset.n_users) if users is None else users):  # one prompt per user
        history = dataset.history(int(user), "train", last=history_len)
        titles = titles_of(dataset, history)
        if not titles:
            skipped.append(int(user))
            continue
        requests.append(make_request(template, "user", int(user), f"user:{dataset.user_ids[user]}", [user],
                                     len(titles), titles="; ".join(titles), **values))
    return requests, skipped


def item_requests(dataset: Any, factors: Sequence[str], domain: str, items: Optional[Sequence[int]] = None,
                  template: PromptTemplate = KAR_ITEM_FACTUAL) -> Tuple[List[Request], List[int]]:
    """One factual request per titled item (``user_id`` = ``item:<original id>``); untitled items are skipped."""
    values = prompt_values(domain, factors)
    requests, skipped = [], []
    for item in (range(dataset.n_items) if items is None else items):  # one prompt per item
        titles = titles_of(dataset, [int(item)])
        if not titles:
            skipped.append(int(item))
            continue
        requests.append(make_request(template, "item", int(item), f"item:{dataset.item_ids[item]}", [item], 1,
                                     title=titles[0], **values))
    return requests, skipped


def resolve_factors(config: KARConfig, domain: str, backend: Backend) -> Tuple[Tuple[str, ...], str]:
    """``(factors, source)``: the configured list, the LLM's answer (``ask_factors``), or the domain default."""
    if config.factors:
        return tuple(config.factors), "config"
    if config.ask_factors:
        if getattr(backend, "not_an_llm", False):
            logger.info("ask_factors ignored: backend %s is %s; using the %s defaults", backend.name, NOT_AN_LLM,
                        domain)
        else:
            request = make_request(KAR_FACTORS, "user", 0, f"factors:{domain}", [], 0,
                                   **prompt_values(domain, DOMAIN_FACTORS[domain][: config.n_factors]))
            answer = backend.complete_many([request])[0]
            if answer.ok:
                phrases = parse_interests(answer.text, max_phrases=config.n_factors).phrases
                if phrases:
                    return tuple(phrases), "llm"
            logger.warning("the LLM gave no usable factor list (%s); using the %s defaults", answer.reason, domain)
    return DOMAIN_FACTORS[domain][: config.n_factors], "default"


# ---------------------------------------------------------------------------------------------- answers
@dataclass
class Answers:
    """The completions of one extraction and what they cost."""

    completions: List[Completion]
    summary: RunSummary

    def texts(self) -> Dict[str, str]:
        """``request user_id -> answer text`` of the ok answers."""
        return {c.request.user_id: c.text for c in self.completions if c.ok and c.text and c.text.strip()}


def ask(backend: Backend, requests: Sequence[Request]) -> Answers:
    """Send ``requests`` through ``backend`` (its cache makes a re-run resume) and summarise."""
    started = time.perf_counter()
    completions = backend.complete_many(list(requests)) if requests else []
    summary = (backend.summary() if requests else None) or RunSummary.of(backend.name, completions, started)
    summary.not_an_llm = bool(getattr(backend, "not_an_llm", False)) or any(answer_not_an_llm(c) for c in completions)
    return Answers(completions, summary)


def write_answers(path: Union[str, Path], answers: Sequence[Answers]) -> Path:
    """All answers as one ``replay`` JSONL (``user_id``, ``raw``, ``status``, ``source``, ``key``, ...)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for batch in answers:
            for c in batch.completions:
                source = str(c.meta.get("recorded_source") or c.source)  # a replay keeps the original source
                fh.write(json.dumps({"user_id": c.request.user_id, "raw": c.text if c.ok else None,
                                     "status": c.status, "reason": c.reason, "source": source, "key": c.key,
                                     "template": c.request.template, "template_version": c.request.template_version,
                                     "not_an_llm": answer_not_an_llm(c)}, ensure_ascii=False)
                         + "\n")
    return path


def encode_rows(n_rows: int, row_texts: Dict[int, str], encoder: Any) -> Tensor:
    """``[n_rows, d]`` encoded texts (rows without a text are zero)."""
    rows = sorted(row_texts)
    vectors = torch.as_tensor(encoder.encode([row_texts[r] for r in rows])) if rows else torch.zeros(0, encoder.dim)
    out = torch.zeros(n_rows, int(vectors.size(1)) if rows else int(encoder.dim))
    if rows:
        out[torch.tensor(rows, dtype=torch.long)] = vectors.float()
    return out


def base_provenance(method: str, backend: Backend, encoder: Any, answers: Sequence[Answers],
                    templates: Sequence[PromptTemplate], seconds: float) -> Dict[str, Any]:
    return {
        "method": method, "backend": backend.name, "llm_model": llm_model(backend),
        "not_an_llm": bool(getattr(backend, "not_an_llm", False)) or any(a.summary.not_an_llm for a in answers),
        "template_version": ", ".join(f"{t.name} v{t.version}" for t in templates),
        "encoder": getattr(encoder, "model_name", type(encoder).__name__),
        "n_calls": sum(a.summary.requests for a in answers), "n_sent": sum(a.summary.sent for a in answers),
        "n_cached": sum(a.summary.cached for a in answers), "n_failed": sum(a.summary.failed for a in answers),
        "prompt_tokens": sum(a.summary.prompt_tokens for a in answers),
        "completion_tokens": sum(a.summary.completion_tokens for a in answers),
        "seconds": round(seconds, 3),
    }


# ---------------------------------------------------------------------------------------------- method
class KAR(Augmenter):
    """KAR as an :class:`~cikg.augment.base.Augmenter` (see the module docstring).

    Args:
        config: :class:`KARConfig`.
        backend: any :mod:`cikg.llm` backend.
        encoder: a :class:`cikg.embed.Encoder` (default: one with an in-memory cache, or
            ``out_dir/embeddings.sqlite`` when ``out_dir`` is given).
        out_dir: where ``answers.jsonl`` (replay file), ``augment_summary.json`` and ``features.pt`` go.

    ``fit(dataset)`` returns :class:`NodeFeatures` with ``user`` ``[n_users, 384]`` (block ``reasoning``) and
    ``item`` ``[n_items, 384]`` (block ``factual``).
    """

    name = "kar"

    def __init__(self, config: Optional[KARConfig] = None, backend: Optional[Backend] = None, encoder: Any = None,
                 out_dir: Union[str, Path, None] = None):
        self.config = config or KARConfig()
        self.backend = backend
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.encoder = encoder
        self.features: Optional[NodeFeatures] = None

    def __repr__(self) -> str:
        return f"KAR({self.config}, backend={getattr(self.backend, 'name', None)!r})"

    def _setup(self, dataset: Any) -> Tuple[Backend, Any]:
        backend = self.backend
        if backend is None:
            backend = self.backend = KGProfileBackend(dataset, KGProfileConfig(history_len=self.config.history_len))
        if self.encoder is None:
            self.encoder = Encoder(self.out_dir / "embeddings.sqlite" if self.out_dir else None, show_progress=False)
        return backend, self.encoder

    def fit(self, dataset: Any, graph: Any = None) -> NodeFeatures:
        self.check_graph(dataset, graph)
        backend, encoder = self._setup(dataset)
        c = self.config
        domain = domain_of(dataset, c.domain)
        started = time.perf_counter()
        factors, factor_source = resolve_factors(c, domain, backend)
        u_requests, u_skipped = user_requests(dataset, factors, domain, c.history_len)
        i_requests, i_skipped = item_requests(dataset, factors, domain)
        answers = [ask(backend, u_requests), ask(backend, i_requests)]
        extraction = time.perf_counter() - started
        started = time.perf_counter()
        texts = {**answers[0].texts(), **answers[1].texts()}
        user_texts = {r.user: texts[r.user_id] for r in u_requests if r.user_id in texts}
        item_texts = {r.user: texts[r.user_id] for r in i_requests if r.user_id in texts}
        users = encode_rows(dataset.n_users, user_texts, encoder)
        items = encode_rows(dataset.n_items, item_texts, encoder)
        provenance = base_provenance("kar", backend, encoder, answers, [KAR_USER_REASONING, KAR_ITEM_FACTUAL],
                                     extraction)
        provenance.update({
            "dataset": dataset.name, "domain": domain, "factors": list(factors), "factor_source": factor_source,
            "history_len": c.history_len, "encode_seconds": round(time.perf_counter() - started, 3),
            "missing_users": dataset.n_users - len(user_texts), "missing_items": dataset.n_items - len(item_texts),
            "skipped_users": len(u_skipped), "skipped_items": len(i_skipped)})
        self.features = NodeFeatures(user=users, item=items,
                                     blocks={"user": {"reasoning": users.size(1)}, "item": {"factual": items.size(1)}},
                                     provenance=provenance)
        if self.out_dir is not None:
            write_artifacts(self.out_dir, self.features, answers)
        logger.info("KAR on %s: %d prompts (%s%s), %.1f s extraction", dataset.name, provenance["n_calls"],
                    backend.name, f", {NOT_AN_LLM}" if provenance["not_an_llm"] else "", extraction)
        return self.features


def write_artifacts(out_dir: Path, features: NodeFeatures, answers: Sequence[Answers]) -> List[Path]:
    """``features.pt``, ``answers.jsonl`` (replay) and ``augment_summary.json`` (the provenance) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [features.save(out_dir), write_answers(out_dir / ANSWERS_FILE, answers)]
    write_json_atomic(out_dir / SUMMARY_FILE, {**features.provenance, "blocks": features.blocks,
                                               "label": NOT_AN_LLM if features.provenance.get("not_an_llm")
                                               else "LLM"})
    return paths + [out_dir / SUMMARY_FILE]


__all__ = ["ANSWERS_FILE", "Answers", "KAR", "KARConfig", "ask", "encode_rows", "item_requests", "make_request",
           "resolve_factors", "user_requests", "write_answers"]
