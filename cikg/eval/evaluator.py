"""Full-ranking evaluation over all items, batched over blocks of users.

For each block of ``block_size`` users the model's scores ``[block, n_items]`` are computed, the users'
excluded items (their training items; for the test split also their validation items) are set to
``-inf`` through one flat index, one ``torch.topk`` at ``max(ks)`` ranks the block (ties: lower item id
first, see :mod:`cikg.eval.ranking`), and every metric at every ``K`` is read off the cumulative hit
matrix. Peak memory is ``O(block_size * n_items)``, never ``O(n_users * n_items)``.

Example::

    evaluator = Evaluator(ks=(20, 50), block_size=256)
    result = evaluator.evaluate(model.score, dataset.csr("test"), [dataset.csr("train"), dataset.csr("valid")])
    result.to_dict()   # {"recall@20": 0.081, ...}
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import checks
from ..errors import CikgError, ConfigError
from .ranking import (
    DEFAULT_KS,
    METRICS,
    csr_rows,
    hit_matrix,
    mask_excluded_,
    metrics_from_hits,
    top_items,
    truth_keys,
)

log = logging.getLogger(__name__)

CSR = Tuple[torch.Tensor, torch.Tensor]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    """Per-user metrics of one evaluation and their means.

    Attributes:
        ks, metrics: the cut-offs and metric names evaluated.
        users: ``LongTensor [n]`` users that have ground truth (the ones averaged), ascending.
        per_user: ``{"recall@20": FloatTensor [n], ...}`` aligned with ``users``.
        means: ``{"recall@20": float, ...}`` means over ``users`` (computed in float64).
        n_without_truth: users asked for that have no ground-truth item in the split (excluded from means).
    """

    ks: Tuple[int, ...]
    metrics: Tuple[str, ...]
    users: torch.Tensor
    per_user: Dict[str, torch.Tensor]
    means: Dict[str, float]
    n_without_truth: int = 0

    @property
    def n_users(self) -> int:
        return int(self.users.numel())

    def to_dict(self) -> Dict[str, float]:
        """The means: ``{"recall@20": ..., "ndcg@20": ..., ...}``."""
        return dict(self.means)

    def to_frame(self) -> pd.DataFrame:
        """One row per evaluated user: ``user`` and one column per metric@K."""
        frame = {"user": self.users.cpu().numpy()}
        frame.update({name: values.cpu().numpy() for name, values in self.per_user.items()})
        return pd.DataFrame(frame)

    def __getitem__(self, name: str) -> float:
        return self.means[name]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value:.4f}" for name, value in self.means.items())
        return f"EvalResult(users={self.n_users}, without_truth={self.n_without_truth}, {shown})"


@dataclass
class Evaluator:
    """Configuration of a full-ranking evaluation (no fitted state; reuse it for any model).

    Args:
        ks: cut-offs ``K`` (each ``>= 1``); one top-K at ``max(ks)`` serves them all.
        block_size: users scored at once; memory is about ``block_size * n_items * 12`` bytes
            (float32 scores plus the top-K workspace). 256 was fastest on CPU for amazon-book
            (docs/benchmarks.md); on a GPU use thousands.
        device: where blocks are masked and ranked (``None``: the device of the scores).
        metrics: any of ``"recall"``, ``"ndcg"``, ``"precision"``, ``"hit"``.
        progress: show a tqdm bar over blocks.
    """

    ks: Tuple[int, ...] = DEFAULT_KS
    block_size: int = 256
    device: Optional[str] = None
    metrics: Tuple[str, ...] = METRICS
    progress: bool = True

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        self.metrics = tuple(self.metrics)
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"expected one or more cut-offs >= 1, got {self.ks}", key="ks")
        checks.check(self, (checks.positive_int("block_size"),))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ConfigError(f"unknown metric(s) {unknown}; expected some of {METRICS}", key="metrics")

    # ------------------------------------------------------------------ public API
    def evaluate(self, score_fn: ScoreFn, split_csr: CSR, exclude_csrs: Sequence[CSR] = (),
                 users: Optional[torch.Tensor] = None) -> EvalResult:
        """Rank all items for ``users`` and score the ranking against ``split_csr``.

        Args:
            score_fn: ``score_fn(users LongTensor [b]) -> FloatTensor [b, n_items]`` (e.g. ``model.score``).
                The block is masked in place, so return a fresh tensor; a view (e.g. a slice of a cached
                score matrix) is detected and copied first.
            split_csr: ``(indptr [n_users + 1], indices)`` ground truth (the validation or test split).
            exclude_csrs: CSRs of items to mask per user (train; for test also validation).
            users: users to evaluate (default: all); users without ground truth are skipped and counted.

        Returns:
            :class:`EvalResult` with per-user metrics and means.
        """
        indptr, indices = split_csr
        n_users = indptr.numel() - 1
        users = self._check_users(users, n_users)
        probe = self._scores(score_fn, users[:1])
        n_items = probe.size(1)
        device = probe.device
        keys, n_relevant = truth_keys(indptr.to(device), indices.to(device), n_items)
        excludes = [self._check_csr(csr, n_users, n_items, f"exclude_csrs[{i}]", device)
                    for i, csr in enumerate(exclude_csrs)]
        users = users.to(device)
        has_truth = n_relevant[users] > 0
        n_without = int((~has_truth).sum())
        users = torch.unique(users[has_truth], sorted=True)
        if n_without:
            log.info("%d of the users asked for have no ground truth in the split; they are excluded", n_without)
        per_user = self._rank_blocks(score_fn, users, excludes, keys, n_relevant, n_items, device)
        means = {name: float(values.double().mean()) if values.numel() else float("nan")
                 for name, values in per_user.items()}
        return EvalResult(self.ks, self.metrics, users.cpu(), per_user, means, n_without)

    # ------------------------------------------------------------------ internals
    def _rank_blocks(self, score_fn: ScoreFn, users: torch.Tensor, excludes: Sequence[CSR], keys: torch.Tensor,
                     n_relevant: torch.Tensor, n_items: int, device: torch.device) -> Dict[str, torch.Tensor]:
        max_k = max(self.ks)
        parts: Dict[str, list] = {f"{name}@{k}": [torch.empty(0)] for name in self.metrics for k in self.ks}
        blocks = torch.split(users, self.block_size)
        for block in tqdm(blocks, desc="evaluate", unit="block", disable=not self.progress or len(blocks) < 2,
                          leave=False):
            scores = self._scores(score_fn, block).to(device)
            if scores.shape != (block.numel(), n_items):
                raise CikgError(f"score_fn returned shape {tuple(scores.shape)} for {block.numel()} users; "
                                f"expected ({block.numel()}, {n_items})")
            if scores._base is not None or not scores.is_contiguous():  # never mask the caller's storage
                scores = scores.clone(memory_format=torch.contiguous_format)
            scores = scores.float()
            for ex_indptr, ex_indices in excludes:
                mask_excluded_(scores, *csr_rows(ex_indptr, ex_indices, block))
            items, valid = top_items(scores, max_k)
            del scores
            hits = hit_matrix(block, items, valid, keys, n_items)
            for name, values in metrics_from_hits(hits, n_relevant[block], self.ks, self.metrics).items():
                parts[name].append(values.cpu())
        return {name: torch.cat(values) for name, values in parts.items()}

    def _scores(self, score_fn: ScoreFn, users: torch.Tensor) -> torch.Tensor:
        device = torch.device(self.device) if self.device is not None else None
        with torch.no_grad():
            scores = score_fn(users)
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
            raise CikgError(f"score_fn must return a 2-D tensor [users, n_items], got {type(scores).__name__}"
                            + (f" of shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else ""))
        return scores if device is None else scores.to(device)

    @staticmethod
    def _check_users(users: Optional[torch.Tensor], n_users: int) -> torch.Tensor:
        if users is None:
            return torch.arange(n_users)
        users = torch.as_tensor(users, dtype=torch.long).reshape(-1)
        if users.numel() == 0:
            raise CikgError("no users to evaluate: `users` is empty")
        bad = (users < 0) | (users >= n_users)
        if bool(bad.any()):
            raise CikgError(f"user {int(users[bad][0])} is outside 0..{n_users - 1} (the split's users)")
        return users

    @staticmethod
    def _check_csr(csr: CSR, n_users: int, n_items: int, what: str, device: torch.device) -> CSR:
        indptr, indices = csr
        if indptr.numel() != n_users + 1:
            raise CikgError(f"{what}: indptr has {indptr.numel()} entries, expected n_users + 1 = {n_users + 1}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
            raise CikgError(f"{what}: item id outside 0..{n_items - 1} (the scores' width)")
        return indptr.to(device), indices.to(device)


def evaluate_embeddings(user_emb: torch.Tensor, item_emb: torch.Tensor, split_csr: CSR,
                        exclude_csrs: Sequence[CSR] = (), users: Optional[torch.Tensor] = None,
                        evaluator: Optional[Evaluator] = None) -> EvalResult:
    """Evaluate inner-product scores ``user_emb[u] @ item_emb.T`` (``[n_users, d]``, ``[n_items, d]``)."""
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.size(1) != item_emb.size(1):
        raise CikgError(f"expected user_emb [n_users, d] and item_emb [n_items, d], got "
                        f"{tuple(user_emb.shape)} and {tuple(item_emb.shape)}")
    evaluator = evaluator if evaluator is not None else Evaluator()
    item_t = item_emb.t()

    def score(block: torch.Tensor) -> torch.Tensor:
        return user_emb[block.to(user_emb.device)] @ item_t

    return evaluator.evaluate(score, split_csr, exclude_csrs, users)
