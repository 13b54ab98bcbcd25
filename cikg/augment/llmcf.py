"""LLM-CF: in-context chain-of-thought features (Sun et al., CIKM 2024, arXiv 2403.17688).

LLM-CF distils an LLM's reasoning into collaborative filtering in two stages.

**Offline** (:func:`sample_examples`, :func:`generate_cot`, :func:`build_cot_dataset`): sample
``(user, item, label)`` training examples from the train split (positives are train pairs, negatives are
uniform items the user never interacted with; seeded), ask an LLM through :mod:`cikg.llm` for a
chain-of-thought per example with the :data:`LLMCF_COT` template (analyse the history, introduce the target,
judge the fit, reflect on diversity; the label is *not* shown), encode each answer with the cached sentence
encoder and store the *in-context CoT dataset*

.. math::
    \\mathcal{D} = \\{(c_e, f^u_e, f^i_e, y_e)\\}_e,\\quad c_e \\in \\mathbb{R}^{384}\\ (\\text{CoT embedding}),\\;
    f^u_e, f^i_e \\in \\mathbb{R}^{d_{cf}}\\ (\\text{CF features of its user and item}),\\; y_e \\in \\{0, 1\\}

as ``cot_examples.jsonl`` (one line per example: ids, label, answer text, status, source; it is also a
``replay`` file) and ``cot_dataset.pt`` (the tensors).

**Online** (:func:`retrieve`, :class:`ICTModule`): for a user ``u`` with query
:math:`q_u = [w\\, t_u;\\ (1-w)\\, \\hat f^u_u]` (``t_u`` the encoded history titles, :math:`\\hat f` unit-norm CF
features) and example keys :math:`k_e = [c_e;\\ \\hat f^u_e]`, retrieve the top-K (default 4) examples by
:math:`q_u^\\top k_e = w \\cos(t_u, c_e) + (1-w) \\cos(f^u_u, f^u_e)` — exactly, with one matmul and ``topk``
per block of users, never a users × examples matrix in memory; examples of ``u`` itself are masked out.
The in-context chain-of-thought (ICT) module is a small ``torch.nn.TransformerEncoder`` over the sequence

.. math::
    [\\,r_1, m_1, \\dots, r_K, m_K, x_u\\,],\\quad r_e = W_r [f^u_e; f^i_e] + E_y[y_e],\\;
    m_e = W_c c_e,\\; x_u = W_q [t_u; f^u_u]

(plus rank and token-type embeddings); its output at :math:`x_u` is the feature :math:`h_u \\in \\mathbb{R}^d`.

**Adaptation to full ranking.** The paper scores one (user, target item) pair at a time: the current token
holds the pair's features and the ICT output feeds the backbone for that pair, so ranking all items would
run the transformer ``n_items`` times per user. Here the current token carries the *user* only, so one
forward gives one vector per user. The module is pre-trained on the CoT dataset's labels in that form:
for an example ``(u, i, y)``, :math:`\\hat y = \\sigma(h_u^\\top W_i f^i_i + b)` with binary cross-entropy,
``u``'s own examples excluded from its context (it never sees the label it predicts); early stopping on
held-out examples. After pre-training, :math:`h_u / \\lVert h_u \\rVert` of every user is attached as
``graph['user'].x``, and the backbone consumes it through the shared fusion layer (:mod:`cikg.models.fusion`),
where it is fused with the
ID embedding and trained with the backbone's own loss — the per-user analogue of the paper's concatenation
of the ICT output into the backbone's input.

**Offline LLM.** Any backend of :mod:`cikg.llm` answers the prompts. Requests are per example, so their
``user_id`` is ``"<user id>|<item id>"``: a replay file then holds one answer per example and
:class:`~cikg.llm.ReplayBackend` matches it without a server. :class:`CoTProfileBackend` is the offline
stand-in (**not an LLM**): it writes the four reasoning steps from the KG-profile of the user's history
(:class:`~cikg.llm.KGProfileBackend`) and the target item's own KG entities and title words.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._io import atomic_path, torch_save_atomic
from .._lock import holding_lock
from ..errors import ConfigError, DatasetError, GraphError
from ..llm.base import NOT_AN_LLM, Backend, Completion, RunSummary
from ..llm.cache import OK
from ..llm.client import CONCURRENCY_HELP
from ..llm.kgprofile import KGProfileBackend, KGProfileConfig, top_k_per_row
from ..llm.prompts import PromptTemplate, Request, titles_of
from .base import Augmenter, NodeFeatures

log = logging.getLogger(__name__)

EXAMPLES_FILE = "cot_examples.jsonl"
DATASET_FILE = "cot_dataset.pt"

LLMCF_COT = PromptTemplate(
    name="llmcf-cot",
    version="1",
    system=("You are a recommendation assistant. Think step by step in four short numbered steps. "
            "1. Analyse the user's history: which {domain} and which themes does the user like? "
            "2. Introduce the target item: what is it about? "
            "3. Judge the fit: would this user enjoy the target, and why? "
            "4. Reflect on diversity: does the target repeat the history or broaden it? "
            "Answer in at most 120 words."),
    user="User history: [{history}]\nTarget item: {target}",
)
"""The LLM-CF chain-of-thought prompt; placeholders ``domain``, ``history`` (titles) and ``target`` (title)."""


# ---------------------------------------------------------------------------------------------- config
@dataclass
class LLMCFConfig:
    """Settings of LLM-CF.

    Attributes:
        n_examples: examples sampled for the CoT dataset (positives and negatives together).
        neg_ratio: negatives per positive among them.
        history_len: last train items shown in a prompt and encoded as the user's text.
        k: examples retrieved per user (paper: 4).
        text_weight: :math:`w`, weight of the text cosine in the retrieval similarity (the CF cosine gets
            :math:`1 - w`).
        dim, heads, layers, dropout: the ICT transformer.
        epochs, lr, batch_size, weight_decay, patience: pre-training of the ICT module on the labels.
        holdout: share of examples held out for early stopping.
        block_size: users per retrieval block.
        cf_dim: size of the default CF features (truncated SVD) when none are given.
        seed: sampling, splitting and initialisation.
        domain: ``books``/``movies``/``items`` in the prompt (default: from the dataset name).
        normalize: attach :math:`h_u / \\lVert h_u \\rVert_2` (rows of unit norm, like the sentence
            embeddings); measured better through the fusion layer than the raw LayerNorm output (docs/augment.md).
    """

    n_examples: int = 2000
    neg_ratio: float = 1.0
    history_len: int = 10
    k: int = 4
    text_weight: float = 0.5
    dim: int = 64
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 1e-5
    patience: int = 5
    holdout: float = 0.1
    block_size: int = 1024
    cf_dim: int = 64
    seed: int = 2024
    domain: Optional[str] = None
    normalize: bool = True

    def __post_init__(self) -> None:
        for key in ("n_examples", "history_len", "k", "dim", "heads", "layers", "epochs", "batch_size",
                    "block_size", "cf_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected a positive integer, got {value!r}", key)
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by heads ({self.heads})", "heads")
        if not self.neg_ratio >= 0:
            raise ConfigError(f"expected a number >= 0, got {self.neg_ratio!r}", "neg_ratio")
        for key in ("text_weight",):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"expected a number in [0, 1], got {getattr(self, key)!r}", key)
        for key in ("dropout", "holdout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"expected a number in [0, 1), got {getattr(self, key)!r}", key)
        if not self.lr > 0:
            raise ConfigError(f"expected a positive learning rate, got {self.lr!r}", "lr")
        if self.weight_decay < 0 or self.patience < 0:
            raise ConfigError("weight_decay and patience must be >= 0", "weight_decay" if self.weight_decay < 0
                              else "patience")
        if self.domain is not None and self.domain not in ("books", "movies", "items"):
            raise ConfigError(f"expected books, movies or items, got {self.domain!r}", "domain")


# ---------------------------------------------------------------------------------------------- CF features
def cf_embeddings(dataset: Any, dim: int = 64, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Collaborative user and item features from the train split: a truncated SVD (PureSVD-like).

    With :math:`R` the ``[n_users, n_items]`` train matrix and :math:`D_u, D_i` its degrees,
    :math:`D_u^{-1/2} R D_i^{-1/2} \\approx U S V^\\top` (rank ``dim``, ``torch.svd_lowrank``); users get
    :math:`c\\,U S^{1/2}`, items :math:`c\\,V S^{1/2}`, so :math:`f_u^\\top g_i` ranks like the low-rank
    reconstruction; the scalar :math:`c` makes the scores of the train pairs have unit standard deviation,
    so that a softmax over them is not flat. This is the cheap default when no trained recommender's
    embeddings are passed in.

    Returns:
        ``(users [n_users, d], items [n_items, d])`` with ``d = min(dim, n_users, n_items)``.
    """
    import warnings

    users, items = dataset.train[0], dataset.train[1]
    du = torch.bincount(users, minlength=dataset.n_users).clamp(min=1).double()
    di = torch.bincount(items, minlength=dataset.n_items).clamp(min=1).double()
    values = (du[users] * di[items]).rsqrt().float()
    with warnings.catch_warnings():  # torch notes that sparse support is beta; the product is exact
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_coo_tensor(torch.stack([users, items]), values,
                                         (dataset.n_users, dataset.n_items)).coalesce()
    q = min(dim, dataset.n_users, dataset.n_items)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        u, s, v = torch.svd_lowrank(matrix, q=q, niter=4)
    finally:
        torch.random.set_rng_state(state)
    root = s.clamp(min=0).sqrt()
    user_f, item_f = u * root, v * root
    spread = float(((user_f[users] * item_f[items]).sum(1)).std()) if users.numel() > 1 else 1.0
    c = 1.0 / max(spread, 1e-12) ** 0.5
    return (user_f * c).contiguous(), (item_f * c).contiguous()


def check_cf(dataset: Any, cf: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
    """``cf`` as float tensors after checking it has one row per user and per item of ``dataset``."""
    user_cf, item_cf = (torch.as_tensor(t).float() for t in cf)
    if user_cf.dim() != 2 or user_cf.size(0) != dataset.n_users:
        raise GraphError(f"{dataset.name}: user CF embeddings must have shape [{dataset.n_users}, d], "
                         f"got {tuple(user_cf.shape)}")
    if item_cf.dim() != 2 or item_cf.size(0) != dataset.n_items or item_cf.size(1) != user_cf.size(1):
        raise GraphError(f"{dataset.name}: item CF embeddings must have shape [{dataset.n_items}, "
                         f"{user_cf.size(1)}], got {tuple(item_cf.shape)}")
    return user_cf, item_cf


# ---------------------------------------------------------------------------------------------- examples
@dataclass
class Examples:
    """Sampled ``(user, item, label)`` examples, each a ``LongTensor [n]`` (``labels`` 1 or 0)."""

    users: Tensor
    items: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.users.numel())

    def subset(self, index: Tensor) -> "Examples":
        return Examples(self.users[index], self.items[index], self.labels[index])


def _train_keys(dataset: Any) -> Tensor:
    return torch.unique(dataset.train[0] * dataset.n_items + dataset.train[1])


def sample_examples(dataset: Any, n_examples: int, neg_ratio: float = 1.0, seed: int = 2024,
                    users: Optional[Sequence[int]] = None) -> Examples:
    """Sample labelled examples from the train split (seeded, vectorised).

    Positives are distinct train pairs drawn uniformly; each negative pairs the user of a drawn train pair
    (so users appear as often as they interact) with a uniform item outside the user's train items.

    Args:
        users: restrict to these users (default: all).

    Returns:
        :class:`Examples` sorted by (user, item), positives and negatives interleaved.
    """
    generator = torch.Generator().manual_seed(seed)
    pairs = dataset.train
    if users is not None:
        keep = torch.zeros(dataset.n_users, dtype=torch.bool)
        keep[torch.as_tensor(list(users), dtype=torch.long)] = True
        pairs = pairs[:, keep[pairs[0]]]
    if pairs.size(1) == 0:
        raise DatasetError(f"{dataset.name}: no train interaction to sample examples from")
    n_pos = max(1, min(int(round(n_examples / (1.0 + neg_ratio))), pairs.size(1)))
    n_neg = max(0, min(n_examples - n_pos, int(round(n_pos * neg_ratio))) if neg_ratio > 0 else 0)
    pos = pairs[:, torch.randperm(pairs.size(1), generator=generator)[:n_pos]]
    pos = torch.unique(pos[0] * dataset.n_items + pos[1])
    known = _train_keys(dataset)
    neg_users = pairs[0, torch.randint(pairs.size(1), (n_neg,), generator=generator)]
    neg = torch.empty(0, dtype=torch.long)
    todo = neg_users
    for _ in range(20):  # rejection rounds; each keeps the draws that miss the train set
        if todo.numel() == 0:
            break
        items = torch.randint(dataset.n_items, (todo.numel(),), generator=generator)
        keys = todo * dataset.n_items + items
        at = torch.searchsorted(known, keys).clamp(max=known.numel() - 1)
        hit = known[at] == keys
        neg = torch.cat([neg, keys[~hit]])
        todo = todo[hit]
    neg = torch.unique(neg)
    neg = neg[~torch.isin(neg, pos)]
    keys = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(pos.numel(), dtype=torch.long), torch.zeros(neg.numel(), dtype=torch.long)])
    order = torch.argsort(keys)
    keys, labels = keys[order], labels[order]
    return Examples(keys // dataset.n_items, keys % dataset.n_items, labels)


def example_id(dataset: Any, user: int, item: int) -> str:
    """The id of one example in requests and replay files: ``"<original user id>|<original item id>"``."""
    return f"{dataset.user_ids[user]}|{dataset.item_ids[item]}"


def history_text(dataset: Any, user: int, history_len: int) -> str:
    """Titles of the user's last ``history_len`` train items, comma-separated (``""`` when none has one)."""
    return ", ".join(titles_of(dataset, dataset.history(user, "train", last=history_len)))


def item_title(dataset: Any, item: int) -> str:
    title = dataset.item_text[item]
    return " ".join(str(title).split()) if title is not None and str(title).strip() else f"item {dataset.item_ids[item]}"


def build_cot_requests(dataset: Any, examples: Examples, template: PromptTemplate = LLMCF_COT,
                       history_len: int = 10, domain: str = "books") -> List[Request]:
    """One chat request per example; ``extra`` holds ``("item", i)`` and ``("label", y)`` (the label is never
    rendered into the prompt)."""
    histories: Dict[int, str] = {}
    requests = []
    for user, item, label in zip(examples.users.tolist(), examples.items.tolist(), examples.labels.tolist(),
                                 strict=True):
        if user not in histories:
            histories[user] = history_text(dataset, user, history_len) or "(no titled item)"
        messages = template.render(domain=domain, history=histories[user], target=item_title(dataset, item))
        frozen = tuple(tuple(sorted(m.items())) for m in messages)
        requests.append(Request(user, example_id(dataset, user, item), frozen, template.name, template.version,
                                n_titles=histories[user].count(", ") + 1,
                                extra=(("item", item), ("label", label))))
    return requests


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
        crow, col = csr.crow_indices(), csr.col_indices()
        counts = crow[items_t + 1] - crow[items_t]
        rows = torch.repeat_interleave(torch.arange(items_t.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        cols = col[torch.repeat_interleave(crow[items_t], counts) + offsets]
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


def _not_an_llm(backend: Backend, completion: Completion) -> bool:
    recorded = str(completion.meta.get("recorded_source") or "")
    return bool(backend.not_an_llm or completion.meta.get("not_an_llm") or NOT_AN_LLM in recorded)


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
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
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
        return _join(self.cot, self.user_cf, text_weight)


def _join(text: Tensor, cf: Tensor, text_weight: float) -> Tensor:
    text = nn.functional.normalize(text.float(), dim=1)
    cf = nn.functional.normalize(cf.float(), dim=1)
    # sqrt weights on both sides: q.k = w cos(text) + (1 - w) cos(cf)
    return torch.cat([text * text_weight ** 0.5, cf * (1.0 - text_weight) ** 0.5], dim=1)


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


# ---------------------------------------------------------------------------------------------- retrieval
def retrieve(queries: Tensor, keys: Tensor, k: int, block_size: int = 1024,
             query_owner: Optional[Tensor] = None, key_owner: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Exact top-``k`` keys per query by inner product, one ``[block, n_keys]`` matmul + ``topk`` per block.

    Args:
        queries: ``[n_q, d]``; keys: ``[n_k, d]``.
        query_owner, key_owner: ``LongTensor`` owners (users); a key owned by the query's owner is skipped.

    Returns:
        ``(index [n_q, k], score [n_q, k])`` sorted by descending score; where fewer than ``k`` keys are
        allowed, the missing slots hold index ``-1`` and score ``-inf``.
    """
    if keys.size(0) == 0:
        raise DatasetError("no example to retrieve from (the CoT dataset is empty)")
    kk = min(k, keys.size(0))
    index = torch.empty(queries.size(0), k, dtype=torch.long)
    score = torch.empty(queries.size(0), k)
    keys_t = keys.t().contiguous()
    for start in range(0, queries.size(0), block_size):
        sims = queries[start:start + block_size] @ keys_t
        if query_owner is not None and key_owner is not None:
            same = query_owner[start:start + block_size, None] == key_owner[None, :]
            sims = sims.masked_fill(same, float("-inf"))
        top = torch.topk(sims, kk, dim=1)
        index[start:start + block_size, :kk] = top.indices
        score[start:start + block_size, :kk] = top.values
    index[:, kk:] = -1
    score[:, kk:] = float("-inf")
    index[torch.isinf(score)] = -1
    return index, score


# ---------------------------------------------------------------------------------------------- ICT module
class ICTModule(nn.Module):
    """The in-context chain-of-thought module: a transformer encoder over retrieved examples and the user.

    Args:
        text_dim: size of CoT and history embeddings (384 for MiniLM).
        cf_dim: size of the CF features.
        dim, heads, layers, dropout: the transformer (``norm_first`` pre-LN layers).
        k: examples per user.

    Shapes:
        ``forward(ctx_cot [B, K, text_dim], ctx_user_cf [B, K, cf_dim], ctx_item_cf [B, K, cf_dim],
        ctx_label [B, K] (long, -1 = empty slot), user_text [B, text_dim], user_cf [B, cf_dim]) -> [B, dim]``;
        :meth:`logits` scores ``[B, dim]`` user features against ``[B, cf_dim]`` item CF features.
    """

    def __init__(self, text_dim: int, cf_dim: int, dim: int = 64, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1, k: int = 4):
        super().__init__()
        self.k = k
        self.rec = nn.Linear(2 * cf_dim, dim)
        self.cot = nn.Linear(text_dim, dim)
        self.query = nn.Linear(text_dim + cf_dim, dim)
        self.label = nn.Embedding(2, dim)
        self.kind = nn.Embedding(3, dim)  # 0: example features, 1: example CoT, 2: current user
        self.rank = nn.Embedding(k + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.item = nn.Linear(cf_dim, dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.rec, self.cot, self.query, self.item):
            module.reset_parameters()
        for emb in (self.label, self.kind, self.rank):
            nn.init.normal_(emb.weight, std=0.02)
        for layer in self.encoder.layers:
            for sub in layer.modules():
                if sub is not layer and hasattr(sub, "_reset_parameters"):
                    sub._reset_parameters()
                elif sub is not layer and isinstance(sub, (nn.Linear, nn.LayerNorm)):
                    sub.reset_parameters()
        self.norm.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, ctx_cot: Tensor, ctx_user_cf: Tensor, ctx_item_cf: Tensor, ctx_label: Tensor,
                user_text: Tensor, user_cf: Tensor) -> Tensor:
        batch, k = ctx_label.shape
        empty = ctx_label < 0
        rank = self.rank.weight[:k].unsqueeze(0)
        rec = self.rec(torch.cat([ctx_user_cf, ctx_item_cf], -1)) + self.label(ctx_label.clamp(min=0)) \
            + self.kind.weight[0] + rank
        cot = self.cot(ctx_cot) + self.kind.weight[1] + rank
        tokens = torch.stack([rec, cot], dim=2).reshape(batch, 2 * k, -1)  # r_1, m_1, r_2, m_2, ...
        current = self.query(torch.cat([user_text, user_cf], -1)) + self.kind.weight[2] + self.rank.weight[k]
        tokens = torch.cat([tokens, current.unsqueeze(1)], dim=1)
        pad = torch.cat([empty.repeat_interleave(2, dim=1), torch.zeros(batch, 1, dtype=torch.bool,
                                                                         device=empty.device)], dim=1)
        out = self.encoder(tokens, src_key_padding_mask=pad)
        return self.norm(out[:, -1])

    def logits(self, user_features: Tensor, item_cf: Tensor) -> Tensor:
        """:math:`h_u^\\top W_i f^i + b` for aligned rows ``[B, dim]``, ``[B, cf_dim]`` → ``[B]``."""
        return (user_features * self.item(item_cf)).sum(-1) + self.bias

    def __repr__(self) -> str:
        return (f"ICTModule(dim={self.rec.out_features}, k={self.k}, layers={len(self.encoder.layers)}, "
                f"heads={self.encoder.layers[0].self_attn.num_heads})")


# ---------------------------------------------------------------------------------------------- pre-training
def user_text_embeddings(dataset: Any, encoder: Any, history_len: int,
                         users: Optional[Sequence[int]] = None) -> Tensor:
    """Encoded history titles ``[n_users, d_text]`` (zeros for users without a titled train item)."""
    users = range(dataset.n_users) if users is None else users
    texts = [history_text(dataset, u, history_len) for u in users]
    has = torch.tensor([bool(t) for t in texts], dtype=torch.bool)
    vectors = torch.from_numpy(encoder.encode([t for t in texts if t])).float()
    out = torch.zeros(len(texts), vectors.size(1) if vectors.numel() else int(encoder.dim))
    out[has] = vectors
    return out


@dataclass
class Context:
    """The retrieved examples of every user: ``index [n_users, K]`` into the CoT dataset (``-1`` = none) and
    their similarity ``score [n_users, K]``."""

    index: Tensor
    score: Tensor


def retrieve_context(cot: CoTDataset, user_text: Tensor, user_cf: Tensor, k: int, text_weight: float,
                     block_size: int = 1024) -> Context:
    """Top-``k`` examples per user (exact, blocked; the user's own examples excluded)."""
    queries = _join(user_text, user_cf, text_weight)
    owners = torch.arange(user_text.size(0))
    index, score = retrieve(queries, cot.keys(text_weight), k, block_size, owners, cot.users)
    return Context(index, score)


def _context_tensors(cot: CoTDataset, context: Context, users: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    index = context.index[users]
    safe = index.clamp(min=0)
    labels = torch.where(index >= 0, cot.labels[safe], torch.full_like(index, -1))
    return cot.cot[safe], cot.user_cf[safe], cot.item_cf[safe], labels


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC by ranks (ties get their mean rank); ``nan`` when one class is absent."""
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    ranks = torch.empty(scores.numel(), dtype=torch.double)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.double)
    values, inverse = torch.unique(scores, return_inverse=True)
    mean_rank = torch.zeros(values.numel(), dtype=torch.double).index_add_(0, inverse, ranks) / torch.bincount(
        inverse, minlength=values.numel()).double()
    ranks = mean_rank[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class ICTTraining:
    """What :func:`pretrain_ict` did: per-epoch records and the selected epoch (lowest held-out loss)."""

    history: List[Dict[str, float]]
    best_epoch: int
    n_train: int
    n_holdout: int

    @property
    def best(self) -> Dict[str, float]:
        return next(h for h in self.history if h["epoch"] == self.best_epoch)


def pretrain_ict(module: ICTModule, cot: CoTDataset, context: Context, user_text: Tensor, user_cf: Tensor,
                 config: LLMCFConfig, progress: bool = False) -> ICTTraining:
    """Pre-train ``module`` to predict the CoT dataset's labels from each example user's context (BCE).

    A seeded ``holdout`` share of the examples selects the epoch (lowest held-out BCE, patience
    ``config.patience``); the module is left with the weights of that epoch.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(config.seed)
    n = len(cot)
    perm = torch.randperm(n, generator=generator)
    n_hold = int(round(n * config.holdout)) if n >= 10 else 0
    hold, train = perm[:n_hold], perm[n_hold:]
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()

    def run(rows: Tensor) -> Tensor:
        users = cot.users[rows]
        h = module(*_context_tensors(cot, context, users), user_text[users], user_cf[users])
        return module.logits(h, cot.item_cf[rows])

    history: List[Dict[str, float]] = []
    best_loss, best_epoch, best_state, bad = float("inf"), 0, None, 0
    for epoch in tqdm(range(1, config.epochs + 1), desc="LLM-CF ICT", disable=not progress, leave=False):
        module.train()
        order = train[torch.randperm(train.numel(), generator=generator)]
        total = 0.0
        for start in range(0, order.numel(), config.batch_size):
            rows = order[start:start + config.batch_size]
            loss = loss_fn(run(rows), cot.labels[rows].float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * rows.numel()
        record = {"epoch": epoch, "train_bce": total / max(train.numel(), 1)}
        if n_hold:
            module.eval()
            with torch.no_grad():
                logits = run(hold)
            record["holdout_bce"] = float(loss_fn(logits, cot.labels[hold].float()))
            record["holdout_auc"] = auc(logits, cot.labels[hold])
        history.append(record)
        watched = record.get("holdout_bce", record["train_bce"])
        if watched < best_loss - 1e-6:
            best_loss, best_epoch, bad = watched, epoch, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad += 1
            if bad > config.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return ICTTraining(history, best_epoch, int(train.numel()), n_hold)


@torch.no_grad()
def ict_user_features(module: ICTModule, cot: CoTDataset, context: Context, user_text: Tensor, user_cf: Tensor,
                      block_size: int = 1024) -> Tensor:
    """The ICT output :math:`h_u` of every user ``[n_users, dim]``, in blocks."""
    module.eval()
    out = []
    for start in range(0, user_text.size(0), block_size):
        users = torch.arange(start, min(start + block_size, user_text.size(0)))
        out.append(module(*_context_tensors(cot, context, users), user_text[users], user_cf[users]))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- the method
@dataclass
class LLMCFResult:
    """Everything one LLM-CF run produced.

    Attributes:
        user_features: :math:`h_u` of every user ``[n_users, dim]``.
        provenance: method, backend, template, encoder, counts, pre-training summary (JSON-safe).
        cot: the in-context CoT dataset; context: each user's retrieved examples.
        module: the pre-trained ICT module; training: its epochs.
    """

    user_features: Tensor
    provenance: Dict[str, Any]
    cot: CoTDataset
    context: Context
    module: ICTModule
    training: ICTTraining


def _llm_model(backend: Any) -> str:
    """The model behind ``backend``: the server's model name, or the backend's own name offline."""
    config = getattr(backend, "config", None)
    return str(getattr(config, "model", None) or getattr(backend, "name", type(backend).__name__))


def run_llmcf(dataset: Any, config: LLMCFConfig, backend: Backend, encoder: Any,
              cf: Optional[Tuple[Tensor, Tensor]] = None, out_dir: Union[str, Path, None] = None,
              progress: bool = False) -> LLMCFResult:
    """LLM-CF end to end: sample, generate CoT, encode, retrieve, pre-train the ICT module, user features.

    Args:
        backend: any :mod:`cikg.llm` backend, or :class:`CoTProfileBackend` offline (not an LLM).
        encoder: a :class:`cikg.embed.Encoder` (cached sentence model).
        cf: ``(user [n_users, d], item [n_items, d])`` collaborative embeddings of a trained recommender;
            default :func:`cf_embeddings` (truncated SVD of the train matrix).
        out_dir: folder for ``cot_examples.jsonl`` (a replay file), ``cot_dataset.pt`` and ``ict_module.pt``.
    """
    from .._io import write_json_atomic
    from ..llm.pipeline import default_domain

    started = time.perf_counter()
    domain = config.domain or default_domain(dataset)
    cf_source = "given" if cf is not None else f"truncated SVD of the train matrix (d={config.cf_dim})"
    cf = check_cf(dataset, cf if cf is not None else cf_embeddings(dataset, config.cf_dim, config.seed))
    examples = sample_examples(dataset, config.n_examples, config.neg_ratio, config.seed)
    answers = generate_cot(dataset, examples, backend, LLMCF_COT, config.history_len, domain, out_dir)
    generated = time.perf_counter()
    cot = build_cot_dataset(dataset, examples, answers, encoder, cf)
    user_text = user_text_embeddings(dataset, encoder, config.history_len)
    encoded = time.perf_counter()
    context = retrieve_context(cot, user_text, cf[0], config.k, config.text_weight, config.block_size)
    torch.manual_seed(config.seed)
    module = ICTModule(user_text.size(1), cf[0].size(1), config.dim, config.heads, config.layers, config.dropout,
                       config.k)
    training = pretrain_ict(module, cot, context, user_text, cf[0], config, progress=progress)
    features = ict_user_features(module, cot, context, user_text, cf[0], config.block_size)
    summary = answers.summary
    provenance = {
        "method": "llmcf", "paper": "arXiv 2403.17688", "llm_model": _llm_model(backend), "backend": summary.backend,
        "not_an_llm": bool(summary.not_an_llm), "template": LLMCF_COT.name, "template_version": LLMCF_COT.version,
        "encoder": getattr(encoder, "model_name", type(encoder).__name__), "cf": cf_source,
        "examples": len(cot), "examples_failed": int((~answers.ok).sum()), "positives": int(cot.labels.sum()),
        "k": config.k, "n_calls": summary.sent, "cached_calls": summary.cached,
        "prompt_tokens": summary.prompt_tokens, "completion_tokens": summary.completion_tokens,
        "generation_s": round(generated - started, 3), "encode_seconds": round(encoded - generated, 3),
        "ict_best_epoch": training.best_epoch, "ict_best": training.best,
        "users_without_context": int((context.index[:, 0] < 0).sum()),
        "seed": config.seed, "seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        out = Path(out_dir)
        cot.save(out / DATASET_FILE)
        torch_save_atomic({"state_dict": module.state_dict(), "config": dataclasses.asdict(config),
                           "context_index": context.index, "context_score": context.score}, out / "ict_module.pt")
        write_json_atomic(out / "llmcf_summary.json", {**provenance, "training": training.history,
                                                       "llm": summary.to_dict()})
    log.info("LLM-CF: %d examples (%s), ICT best epoch %d %s, %d user features of dim %d in %.1f s",
             len(cot), summary.label, training.best_epoch,
             {k: round(v, 4) for k, v in training.best.items() if k != "epoch"}, features.size(0), features.size(1),
             provenance["seconds"])
    return LLMCFResult(features, provenance, cot, context, module, training)


class LLMCF(Augmenter):
    """LLM-CF as an :class:`~cikg.augment.base.Augmenter`: :meth:`fit` returns the per-user ICT features.

    Args:
        config: :class:`LLMCFConfig`.
        backend: any :mod:`cikg.llm` backend; default :class:`CoTProfileBackend` (offline, not an LLM).
        encoder: a :class:`cikg.embed.Encoder`; default one cached in ``out_dir`` (or in memory).
        cf: collaborative ``(user, item)`` embeddings of a trained recommender (default: truncated SVD).
        out_dir: where the CoT dataset, the ICT module and the summary go.
    """

    name = "llmcf"

    def __init__(self, config: Optional[LLMCFConfig] = None, backend: Optional[Backend] = None,
                 encoder: Any = None, cf: Optional[Tuple[Tensor, Tensor]] = None,
                 out_dir: Union[str, Path, None] = None, progress: bool = False):
        self.config = config or LLMCFConfig()
        self.backend, self.encoder, self.cf, self.out_dir, self.progress = backend, encoder, cf, out_dir, progress
        self.result: Optional[LLMCFResult] = None
        self.features: Optional[NodeFeatures] = None

    def __repr__(self) -> str:
        c = self.config
        fitted = "" if self.result is None else f", fitted on {self.result.provenance['examples']} examples"
        return (f"LLMCF(n_examples={c.n_examples}, k={c.k}, dim={c.dim}, layers={c.layers}, "
                f"backend={getattr(self.backend, 'name', 'cot-profile')!r}{fitted})")

    def fit(self, dataset: Any, graph: Any = None) -> NodeFeatures:
        """Run the method on ``dataset``; ``NodeFeatures.user`` is ``[n_users, dim]`` (``graph`` is only checked)."""
        self.check_graph(dataset, graph)
        if self.encoder is None:
            from ..embed import Encoder

            self.encoder = Encoder(None if self.out_dir is None else Path(self.out_dir) / "embeddings.sqlite",
                                   show_progress=self.progress)
        backend = self.backend if self.backend is not None else CoTProfileBackend(dataset)
        self.result = run_llmcf(dataset, self.config, backend, self.encoder, self.cf, self.out_dir, self.progress)
        return self._keep_user_features(self.result.user_features, self.result.provenance, self.config.normalize,
                                        self.out_dir)


# ---------------------------------------------------------------------------------------------- CLI
def load_cf_file(path: Union[str, Path], dataset: Any) -> Tuple[Tensor, Tensor]:
    """``(user, item)`` embeddings from a ``torch.save`` file holding ``{"user": [n_users, d], "item": [n_items, d]}``.

    Raises:
        DatasetError: the file is missing or holds something else; GraphError: the shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("CF embedding file not found", path)
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise DatasetError(f"not a torch file ({type(err).__name__})", path) from None
    if not isinstance(payload, dict) or not {"user", "item"} <= set(payload):
        raise DatasetError("expected a dict with tensors 'user' [n_users, d] and 'item' [n_items, d]", path)
    return check_cf(dataset, (payload["user"], payload["item"]))


def add_common_arguments(p: Any) -> None:
    """Arguments every ``cikg augment`` method of this family takes (dataset, output, CF, graph)."""
    p.add_argument("dataset", help="dataset name under CIKG_DATA (dbbook2014, ...) or a folder")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--cf", type=Path, default=None, metavar="FILE",
                   help="torch file {'user': [n_users, d], 'item': [n_items, d]} of a trained recommender's "
                        "embeddings (default: truncated SVD of the train matrix)")
    p.add_argument("--graph", action="store_true", help="also write DIR/graph.pt: the CIKG with the features")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def write_outputs(args: Any, dataset: Any, augmenter: Any, features: NodeFeatures) -> List[str]:
    """``DIR/features.pt`` (the artifact ``cikg train ... data.features=DIR`` reads) and, with ``--graph``,
    ``DIR/graph.pt`` (the CIKG with the features attached); returns lines to print."""
    from ..graph import build_cikg, save_graph

    lines = [f"{features!r} -> {features.save(args.out)}"]  # fit wrote it too; saving is atomic and idempotent
    if args.graph:
        graph = augmenter.attach(build_cikg(dataset))
        lines.append(f"graph with features -> {save_graph(graph, args.out / 'graph.pt')}")
    return lines


def add_cli(subparsers: Any) -> None:
    """Add ``llmcf`` to the sub-parsers of ``cikg augment``."""
    import argparse

    p = subparsers.add_parser(
        "llmcf", help="LLM-CF: in-context chain-of-thought user features (arXiv 2403.17688)",
        description="Sample labelled train examples, generate a chain-of-thought per example, encode them, "
                    "retrieve the top-K per user and pre-train the ICT transformer; writes per-user features.",
        epilog="examples:\n"
               "  cikg augment llmcf dbbook2014 -o runs/dbbook-llmcf                  # offline cot-profile\n"
               "  cikg augment llmcf dbbook2014 -o runs/again --backend replay "
               "--replay runs/dbbook-llmcf/cot_examples.jsonl\n"
               "  cikg augment llmcf book-crossing -o runs/bx-llmcf --backend openai "
               "--base-url http://127.0.0.1:8080/v1 --model smollm2 --examples 500",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--backend", choices=("cot-profile", "openai", "openai-batch", "replay"), default="cot-profile",
                   help="where chain-of-thought answers come from (default: cot-profile, offline, not an LLM)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server root ending in /v1")
    p.add_argument("--model", default="smollm2", help="model name on the server")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE", help="a cot_examples.jsonl to replay")
    p.add_argument("--cache", type=Path, default=None, help="SQLite answer cache (default: DIR/llm_cache.sqlite)")
    p.add_argument("--concurrency", type=int, default=None, help=CONCURRENCY_HELP)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--max-attempts", type=int, default=6)
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--batch-poll", type=float, default=30.0)
    p.add_argument("--examples", type=int, default=2000, help="examples in the CoT dataset (default: 2000)")
    p.add_argument("--k", type=int, default=4, help="examples retrieved per user (default: 4)")
    p.add_argument("--epochs", type=int, default=30, help="ICT pre-training epochs (default: 30)")
    p.add_argument("--dim", type=int, default=64, help="ICT width = feature size (default: 64)")
    p.add_argument("--history-len", type=int, default=10, help="last train titles per user (default: 10)")
    p.set_defaults(func=llmcf_command)


@holding_lock(lambda args: args.out)
def llmcf_command(args: Any) -> int:
    import sys

    from ..data import load_dataset
    from ..embed import Encoder

    config = LLMCFConfig(n_examples=args.examples, k=args.k, epochs=args.epochs, dim=args.dim,
                         history_len=args.history_len, seed=args.seed)
    dataset = load_dataset(args.dataset)
    if args.backend == "cot-profile":
        backend: Any = CoTProfileBackend(dataset)
    else:
        from ..llm.commands import build_backend

        backend = build_backend(args, dataset)
    cf = load_cf_file(args.cf, dataset) if args.cf is not None else None
    encoder = Encoder(args.out / "embeddings.sqlite", show_progress=not args.no_progress)
    augmenter = LLMCF(config, backend, encoder, cf, args.out, progress=not args.no_progress)
    features = augmenter.fit(dataset)
    p = features.provenance
    lines = [f"LLM-CF on {dataset.name}: {p['examples']} examples from {p['backend']}"
             + (f" ({NOT_AN_LLM})" if p["not_an_llm"] else "")
             + f", {p['n_calls']} LLM call(s), {p['prompt_tokens'] + p['completion_tokens']} tokens",
             f"ICT pre-training: best epoch {p['ict_best_epoch']}, "
             + ", ".join(f"{k} {v:.4f}" for k, v in p["ict_best"].items() if k != "epoch"),
             f"wall time {p['seconds']:.1f} s; CoT dataset and replay file in {args.out}"]
    lines += write_outputs(args, dataset, augmenter, features)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
