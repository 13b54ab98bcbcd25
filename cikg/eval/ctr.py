"""The CTR protocol beside top-K: AUC, GAUC and Logloss on test positives against sampled negatives.

CTR papers (KAR, REKI, ...) report AUC and Logloss on labelled (user, item) pairs. cikg builds those pairs
from the top-K splits: every test interaction is a positive, and for each user ``ratio`` negatives per
test positive are drawn uniformly, without replacement, among the items the user never interacted with in
train, valid or test. The negatives depend only on the dataset and the ratio (the seed is
:func:`ctr_seed` of the dataset's name and the ratio, never a model's or a run's seed), so every model of a
dataset is scored on the same pairs; :class:`CTRNegatives` saves them with a fingerprint of the splits,
and :func:`load_or_sample_negatives` reuses a saved set.

Metrics (all on float64):

- **AUC**: the Mann-Whitney statistic with average ranks for ties (equal to ``sklearn.metrics.roc_auc_score``).
- **GAUC**: per-user AUC averaged with weights = the user's number of test positives; users whose pairs
  lack positives or negatives (they interacted with every item) are skipped and counted.
- **Logloss**: binary cross-entropy of :math:`\\sigma(s_{ui})`, clipped to ``[1e-7, 1 - 1e-7]``. Models
  trained with BPR learn scores up to a shift, not calibrated probabilities, so Logloss also measures
  calibration; AUC/GAUC are the rank metrics.

Example::

    negatives = load_or_sample_negatives(dataset, ratio=4, directory="runs/ctr_negatives")
    evaluate_ctr(model, dataset, negatives=negatives).to_dict()   # {"auc": ..., "gauc": ..., "logloss": ...}
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .._io import ensure_dir, torch_save_atomic
from ..errors import CikgError

log = logging.getLogger(__name__)

RATIOS = (1, 4)  # negatives per test positive reported by `cikg evaluate --protocol ctr`
LOGLOSS_CLIP = 1e-7
_DENSE_CELLS = 1 << 24  # users × items drawn at once for users whose complement is small


# ------------------------------------------------------------------------------------ metrics
def group_auc(scores: Tensor, labels: Tensor, groups: Tensor, n_groups: Optional[int] = None
              ) -> Tuple[Tensor, Tensor, Tensor]:
    """AUC within each group, vectorised: ``(auc [n_groups], positives [n_groups], negatives [n_groups])``.

    Ties get the average of their ranks inside the group; a group without positives or negatives has
    AUC ``nan``. Shapes: ``scores``, ``labels`` (0/1) and ``groups`` (ids ``0..n_groups-1``) are ``[n]``.
    """
    scores, labels, groups = _flat(scores, torch.float64), _flat(labels, torch.bool), _flat(groups, torch.long)
    if not scores.numel() == labels.numel() == groups.numel():
        raise CikgError(f"scores, labels and groups must have the same length, got {scores.numel()}, "
                        f"{labels.numel()} and {groups.numel()}")
    if scores.numel() and not bool(torch.isfinite(scores).all()):
        raise CikgError("scores contain nan or inf; AUC needs finite scores")
    n_groups = (int(groups.max()) + 1 if groups.numel() else 0) if n_groups is None else int(n_groups)
    _, score_rank = torch.unique(scores, return_inverse=True)  # dense rank of each score, ties equal
    width = int(score_rank.max()) + 1 if scores.numel() else 1
    # one tie block per (group, score); blocks come sorted by group, then score
    keys, block_of, block_size = torch.unique(groups * width + score_rank, return_inverse=True,
                                              return_counts=True)
    block_group = torch.div(keys, width, rounding_mode="floor")
    # rank of a tie block inside its group: items in earlier blocks of the group + the block's mean position
    block_end = torch.cumsum(block_size, 0)
    group_size = torch.bincount(groups, minlength=n_groups)
    group_start = torch.cumsum(group_size, 0) - group_size
    mean_rank = (block_end - block_size - group_start[block_group]).double() + (block_size.double() + 1) / 2
    rank = mean_rank[block_of]
    positives = torch.bincount(groups[labels], minlength=n_groups)
    negatives = group_size - positives
    rank_sum = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups[labels], rank[labels])
    p, n = positives.double(), negatives.double()
    auc = (rank_sum - p * (p + 1) / 2) / (p * n)
    return torch.where((positives > 0) & (negatives > 0), auc, torch.full_like(auc, float("nan"))), \
        positives, negatives


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC of ``scores`` against 0/1 ``labels`` (ties: average ranks), as ``roc_auc_score``."""
    labels = _flat(labels, torch.bool)
    if bool(labels.all()) or not bool(labels.any()):
        raise CikgError("AUC needs both positive and negative labels")
    return float(group_auc(scores, labels, torch.zeros_like(labels, dtype=torch.long), 1)[0][0])


def gauc(scores: Tensor, labels: Tensor, users: Tensor) -> Tuple[float, int]:
    """Per-user AUC averaged with weights = the user's positives; returns ``(gauc, users_skipped)``.

    Users with pairs but without positives or without negatives are skipped (and counted)."""
    users = _flat(users, torch.long)
    per_user, positives, negatives = group_auc(scores, labels, users)
    present = (positives + negatives) > 0
    usable = present & (positives > 0) & (negatives > 0)
    skipped = int((present & ~usable).sum())
    if not bool(usable.any()):
        raise CikgError("GAUC needs at least one user with both positive and negative pairs")
    weights = positives[usable].double()
    return float((per_user[usable] * weights).sum() / weights.sum()), skipped


def logloss(scores: Tensor, labels: Tensor, clip: float = LOGLOSS_CLIP) -> float:
    """Mean binary cross-entropy of :math:`\\sigma(\\text{scores})` clipped to ``[clip, 1 - clip]``."""
    p = torch.sigmoid(_flat(scores, torch.float64)).clamp(clip, 1.0 - clip)
    y = _flat(labels, torch.float64)
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())


def _flat(x: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(x).detach().reshape(-1).cpu().to(dtype)


# ------------------------------------------------------------------------------------ negatives
def split_fingerprint(dataset) -> str:
    """SHA-256 of a dataset's train/valid/test pairs and counts: which splits a negative set belongs to."""
    digest = hashlib.sha256(f"{dataset.n_users}:{dataset.n_items}".encode())
    for split in ("train", "valid", "test"):
        digest.update(split.encode())
        digest.update(dataset.split(split).contiguous().numpy().tobytes())
    return digest.hexdigest()


def ctr_seed(dataset_name: str, ratio: int) -> int:
    """The sampling seed of ``(dataset, ratio)``: the same for every model and every training seed."""
    return int.from_bytes(hashlib.sha256(f"cikg-ctr:{dataset_name}:{ratio}".encode()).digest()[:8], "big") >> 1


@dataclass
class CTRNegatives:
    """A saved set of CTR negatives: ``(users[j], items[j])`` pairs sorted by user then item.

    Attributes:
        dataset, ratio, seed: what they were drawn for and from.
        fingerprint: :func:`split_fingerprint` of the dataset they were drawn against.
        users, items: ``LongTensor [n]``.
        n_short_users: users with fewer never-interacted items than ``ratio`` × test positives (they got
            every such item).
    """

    dataset: str
    ratio: int
    seed: int
    fingerprint: str
    users: Tensor
    items: Tensor
    n_short_users: int = 0

    def __len__(self) -> int:
        return int(self.users.numel())

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        ensure_dir(path.parent)
        torch_save_atomic({"dataset": self.dataset, "ratio": self.ratio, "seed": self.seed,
                           "fingerprint": self.fingerprint, "users": self.users, "items": self.items,
                           "n_short_users": self.n_short_users}, path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path], dataset=None) -> "CTRNegatives":
        """Read a saved set; with ``dataset``, check it was drawn against the same splits."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            negatives = cls(**state)
        except Exception as err:  # a foreign or truncated file: say which
            raise CikgError(f"{path}: not a CTR negative set ({err})") from None
        if dataset is not None and negatives.fingerprint != split_fingerprint(dataset):
            raise CikgError(f"{path}: drawn for other splits of {negatives.dataset!r} than {dataset.name!r} has "
                            "now (fingerprints differ); delete it to draw a new set")
        return negatives

    def pairs(self, dataset) -> Tuple[Tensor, Tensor, Tensor]:
        """``(users, items, labels)``: the dataset's test positives (label 1) then these negatives (0)."""
        test = dataset.split("test")
        labels = torch.cat([torch.ones(test.size(1)), torch.zeros(len(self))])
        return torch.cat([test[0], self.users]), torch.cat([test[1], self.items]), labels

    def __repr__(self) -> str:
        return (f"CTRNegatives(dataset={self.dataset!r}, ratio=1:{self.ratio}, pairs={len(self)}, "
                f"seed={self.seed}, short_users={self.n_short_users})")


def sample_ctr_negatives(dataset, ratio: int, seed: Optional[int] = None) -> CTRNegatives:
    """Draw ``ratio`` negatives per test positive of each user, uniformly without replacement among the
    items the user never interacted with (train, valid, test). Vectorised: rejection rounds over all
    users at once; users whose never-interacted items are few are drawn from their dense complement."""
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise CikgError(f"CTR ratio must be a positive integer (negatives per positive), got {ratio!r}")
    seed = ctr_seed(dataset.name, ratio) if seed is None else int(seed)
    n_users, n_items = dataset.n_users, dataset.n_items
    seen = torch.unique(torch.cat([dataset.split(s)[0] * n_items + dataset.split(s)[1]
                                   for s in ("train", "valid", "test")]))
    available = n_items - torch.bincount(torch.div(seen, n_items, rounding_mode="floor"), minlength=n_users)
    wanted = ratio * torch.bincount(dataset.split("test")[0], minlength=n_users)
    take = torch.minimum(wanted, available)
    n_short = int((take < wanted).sum())
    if n_short:
        log.warning("%s: %d users have fewer unseen items than %d per test positive; they get all of them",
                    dataset.name, n_short, ratio)
    generator = torch.Generator().manual_seed(seed)
    dense = (take > 0) & (2 * (n_items - available + take) > n_items)  # rejection would keep < half a round
    keys = torch.cat([_rejection_draw(torch.nonzero((take > 0) & ~dense).squeeze(1), take, seen, n_items,
                                      generator),
                      _complement_draw(torch.nonzero(dense).squeeze(1), take, seen, n_items, generator)]).sort()[0]
    return CTRNegatives(dataset.name, ratio, seed, split_fingerprint(dataset),
                        torch.div(keys, n_items, rounding_mode="floor"), keys % n_items, n_short)


def _rejection_draw(users: Tensor, take: Tensor, seen: Tensor, n_items: int, generator: torch.Generator
                    ) -> Tensor:
    """Keys ``user * n_items + item`` of ``take[u]`` distinct unseen items per user in ``users``; each
    user's seen plus wanted items are under half the catalogue, so every round keeps over half the draws."""
    slots = torch.repeat_interleave(users, take[users])
    accepted = torch.empty(0, dtype=torch.long)
    while slots.numel():
        keys = slots * n_items + torch.randint(n_items, (slots.numel(),), generator=generator)
        unique, inverse = torch.unique(keys, return_inverse=True)
        first = torch.full((unique.numel(),), keys.numel(), dtype=torch.long).scatter_reduce_(
            0, inverse, torch.arange(keys.numel()), reduce="amin")
        fresh = torch.zeros(keys.numel(), dtype=torch.bool)
        fresh[first] = True  # the first draw of a repeated key in this round
        good = fresh & ~_contains(seen, keys) & ~torch.isin(keys, accepted)
        accepted = torch.cat([accepted, keys[good]])
        slots = slots[~good]
    return accepted


def _contains(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    """``keys`` found in the ascending ``sorted_keys`` (one binary search each)."""
    if not sorted_keys.numel():
        return torch.zeros(keys.shape, dtype=torch.bool)
    at = torch.searchsorted(sorted_keys, keys).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[at] == keys


def _complement_draw(users: Tensor, take: Tensor, seen: Tensor, n_items: int, generator: torch.Generator
                     ) -> Tensor:
    """Keys of ``take[u]`` unseen items per user, by random keys over each user's whole item row."""
    out = [torch.empty(0, dtype=torch.long)]
    position = torch.full((int(take.numel()),), -1, dtype=torch.long)
    position[users] = torch.arange(users.numel())
    seen_row = position[torch.div(seen, n_items, rounding_mode="floor")]
    block = max(1, _DENSE_CELLS // max(n_items, 1))
    for start in range(0, users.numel(), block):
        rows = users[start:start + block]
        noise = torch.rand(rows.numel(), n_items, generator=generator)
        mine = (seen_row >= start) & (seen_row < start + rows.numel())
        noise[seen_row[mine] - start, seen[mine] % n_items] = 2.0  # never drawn: above every U[0, 1)
        order = noise.argsort(dim=1)
        keep = torch.arange(n_items).expand(rows.numel(), -1) < take[rows].unsqueeze(1)
        out.append((rows.unsqueeze(1) * n_items + order)[keep])
    return torch.cat(out)


def negatives_path(directory: Union[str, Path], dataset, ratio: int) -> Path:
    """``DIR/<dataset>-ctr1to<ratio>-<fingerprint[:12]>.pt``: one file per splits and ratio."""
    return Path(directory) / f"{dataset.name}-ctr1to{ratio}-{split_fingerprint(dataset)[:12]}.pt"


def load_or_sample_negatives(dataset, ratio: int, directory: Optional[Union[str, Path]] = None) -> CTRNegatives:
    """The saved negatives of ``(dataset, ratio)`` under ``directory``, drawn and saved there if absent."""
    if directory is None:
        return sample_ctr_negatives(dataset, ratio)
    path = negatives_path(directory, dataset, ratio)
    if path.exists():
        return CTRNegatives.load(path, dataset)
    negatives = sample_ctr_negatives(dataset, ratio)
    negatives.save(path)
    log.info("saved %r to %s", negatives, path)
    return negatives


# ------------------------------------------------------------------------------------ evaluation
@dataclass
class CTRResult:
    """AUC, GAUC and Logloss of one model at one negative ratio."""

    ratio: int
    auc: float
    gauc: float
    logloss: float
    n_positives: int
    n_negatives: int
    n_users: int
    n_users_skipped: int

    def to_dict(self) -> Dict[str, float]:
        return {"auc": self.auc, "gauc": self.gauc, "logloss": self.logloss}

    def row(self) -> Dict[str, object]:
        """Every field, for a table with one row per ratio."""
        return {"ratio": f"1:{self.ratio}", **self.to_dict(), "positives": self.n_positives,
                "negatives": self.n_negatives, "users": self.n_users, "users_skipped": self.n_users_skipped}

    def __repr__(self) -> str:
        return (f"CTRResult(ratio=1:{self.ratio}, auc={self.auc:.4f}, gauc={self.gauc:.4f}, "
                f"logloss={self.logloss:.4f}, pairs={self.n_positives}+{self.n_negatives})")


@torch.no_grad()
def pair_scores(model, users: Tensor, items: Tensor, block: int = 1 << 16) -> Tensor:
    """``model``'s inner-product scores of ``(users[j], items[j])`` pairs ``[n]``, in blocks of pairs."""
    was_training = model.training
    model.eval()
    user_emb, item_emb = model.embed()
    model.train(was_training)
    device = user_emb.device
    parts = [(user_emb[u.to(device)] * item_emb[i.to(device)]).sum(-1).cpu()
             for u, i in zip(torch.split(users, block), torch.split(items, block))]
    return torch.cat(parts) if parts else torch.empty(0)


def evaluate_ctr(model, dataset, ratio: int = 1, negatives: Optional[CTRNegatives] = None) -> CTRResult:
    """AUC / GAUC / Logloss of ``model`` on the test positives and ``negatives`` (drawn for ``ratio`` when
    not given; pass a saved set from :func:`load_or_sample_negatives` to skip the draw)."""
    negatives = sample_ctr_negatives(dataset, ratio) if negatives is None else negatives
    if negatives.dataset != dataset.name:
        raise CikgError(f"the negatives were drawn for {negatives.dataset!r}, not {dataset.name!r}")
    users, items, labels = negatives.pairs(dataset)
    scores = pair_scores(model, users, items)
    grouped, skipped = gauc(scores, labels, users)
    return CTRResult(negatives.ratio, auc(scores, labels), grouped, logloss(scores, labels),
                     int(labels.sum()), len(negatives), int(torch.unique(users).numel()), skipped)
