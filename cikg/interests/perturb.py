"""Noisy interests on purpose: drop, replace or add a share of the user-interest edges (seeded).

The CIKGRec paper motivates its masked autoencoder (UIR) by robustness to noisy LLM interests; these
perturbations make that claim measurable (``experiments/noise.py``).

With ``E`` edges and ``k = round(rate * E)``:

========== ================================================================================================
``drop``    ``k`` edges chosen uniformly without replacement are removed (``E - k`` left)
``replace`` ``k`` edges chosen uniformly are rewired to an interest drawn uniformly from those the user does
            not hold (never its own, never twice): still ``E`` edges, ``k`` of them new
``add``     ``k`` new (user, interest) pairs drawn uniformly from the pairs not present (``E + k`` edges)
========== ================================================================================================

The user and interest id spaces are unchanged (every user ``0 .. n_users - 1`` and interest of the
vocabulary may be drawn, also those without an edge); no duplicate edge is ever made. All draws are vectorised
over edges: a pair (user, interest) is the code ``user * n_interests + interest``, and the ``r``-th code *not*
present is found by a binary search over the present codes (:func:`kth_absent`).

>>> result = perturb_interests(load_dataset("dbbook2014"), "replace", 0.2, seed=0)   # doctest: +SKIP
>>> result.summary()["replaced"], result.dataset.n_interests                        # doctest: +SKIP
(1392, 381)
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from .._io import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from ..data import Dataset
from ..errors import ConfigError, DatasetError
from .choices import PerturbMode
from .io import CLUSTERED_FILE, LABEL_FILE

log = logging.getLogger(__name__)

PERTURB_FILE = "perturb.json"


@dataclass(frozen=True)
class Perturbation:
    """The result of :func:`perturb_interests`.

    Attributes:
        edges: ``[n, 2]`` int64 (user, interest id) in the input's ids, sorted by user then interest.
        interest_ids: the interest vocabulary (sorted int64), unchanged by the perturbation.
        n_users: size of the user id space.
        mode, rate, seed: what was asked.
        counts: ``edges_before``, ``dropped``, ``replaced``, ``added``, ``edges_after``,
            ``users_with_interest_before`` / ``_after``.
        dataset: the input dataset with its interests replaced, when a :class:`Dataset` was given.
    """

    edges: np.ndarray
    interest_ids: np.ndarray
    n_users: int
    mode: PerturbMode
    rate: float
    seed: int
    counts: Dict[str, int]
    dataset: Optional[Dataset] = None

    def summary(self) -> Dict[str, Any]:
        """The JSON-ready record of ``perturb.json`` (without the source)."""
        return {"mode": self.mode.value, "rate": self.rate, "seed": self.seed, **self.counts,
                "n_users": self.n_users, "n_interests": int(self.interest_ids.size)}


def check_rate(rate: float) -> float:
    """``rate`` as a float in ``[0, 1]``, or a :class:`ConfigError` naming it."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ConfigError(f"the noise rate must be a share of the edges in [0, 1], got {rate!r}", "rate")
    return float(rate)


def perturb_interests(source: Union[Dataset, np.ndarray, torch.Tensor], mode: Union[str, PerturbMode],
                      rate: float, seed: int, *, n_users: Optional[int] = None,
                      interest_ids: Optional[Sequence[int]] = None) -> Perturbation:
    """Drop, replace or add ``round(rate * E)`` of the ``E`` user-interest edges of ``source``.

    Args:
        source: a :class:`Dataset` (its ``user_interest`` edges; users ``0 .. n_users - 1``, every interest
            node of its vocabulary), or an ``[n, 2]`` (user, interest id) edge table.
        mode: ``drop``, ``replace`` or ``add``.
        rate: share of the edges, in ``[0, 1]``; 0 gives the input back unchanged.
        seed: seed of every draw (the same seed and input give the same edges).
        n_users: with an edge table, the size of the user id space (default: largest user + 1).
        interest_ids: with an edge table, the interest vocabulary (default: the ids on the edges).

    Raises:
        ConfigError: an unknown mode or a rate outside ``[0, 1]``.
        DatasetError: edges outside the id spaces, duplicate edges, or too few free pairs for the draw.
    """
    mode = _mode(mode)
    rate = check_rate(rate)
    dataset = source if isinstance(source, Dataset) else None
    if dataset is not None:
        users, dense = (t.numpy().astype(np.int64) for t in dataset.user_interest)
        n_users, vocabulary = dataset.n_users, np.asarray(dataset.interest_ids, dtype=np.int64)
    else:
        users, dense, n_users, vocabulary = _edge_table(source, n_users, interest_ids)
    n_interests = int(vocabulary.size)
    if not n_interests:
        raise DatasetError("there are no interests to perturb (the interest vocabulary is empty)")
    present = np.sort(users * n_interests + dense)
    if present.size and (np.diff(present) == 0).any():
        first = int(present[np.flatnonzero(np.diff(present) == 0)[0]])
        raise DatasetError(f"duplicate user-interest edge (user {first // n_interests}, interest "
                           f"{vocabulary[first % n_interests]})")
    k = int(math.floor(rate * present.size + 0.5))
    rng = np.random.default_rng(seed)
    if mode is PerturbMode.DROP:
        codes = np.delete(present, rng.choice(present.size, size=k, replace=False))
    elif mode is PerturbMode.ADD:
        free = n_users * n_interests - present.size
        if k > free:
            raise DatasetError(f"cannot add {k} edges: only {free} (user, interest) pairs are free")
        codes = np.concatenate([present, kth_absent(present, rng.choice(free, size=k, replace=False))])
    else:
        chosen = np.zeros(present.size, dtype=bool)
        chosen[rng.choice(present.size, size=k, replace=False)] = True
        codes = np.concatenate([present[~chosen], _rewire(present, present[chosen], n_interests, rng)])
    codes = np.sort(codes)
    out_users, out_dense = codes // n_interests, codes % n_interests
    counts = {"edges_before": int(present.size), "dropped": k if mode is PerturbMode.DROP else 0,
              "replaced": k if mode is PerturbMode.REPLACE else 0, "added": k if mode is PerturbMode.ADD else 0,
              "edges_after": int(codes.size),
              "users_with_interest_before": int(np.unique(present // n_interests).size),
              "users_with_interest_after": int(np.unique(out_users).size)}
    log.debug("perturbed interests (%s, rate %g, seed %d): %s", mode.value, rate, seed, counts)
    perturbed = None
    if dataset is not None:
        perturbed = dataset.with_interests(torch.from_numpy(np.stack([out_users, out_dense])),
                                           dataset.interest_ids, dataset.interest_labels)
    return Perturbation(edges=np.stack([out_users, vocabulary[out_dense]], axis=1), interest_ids=vocabulary,
                        n_users=int(n_users), mode=mode, rate=rate, seed=int(seed), counts=counts,
                        dataset=perturbed)


def kth_absent(present: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The ``ranks``-th (0-based) non-negative integers *not* in ``present``.

    Args:
        present: sorted distinct int64 codes.
        ranks: int64 ranks, any shape.

    The ``r``-th absent code is ``r + j`` with ``j`` the number of present codes below it, i.e. the number of
    ``i`` with ``present[i] - i <= r`` (``present[i] - i`` counts the absent codes below ``present[i]``).
    """
    shifted = present - np.arange(present.size, dtype=np.int64)
    return ranks + np.searchsorted(shifted, ranks, side="right")


def _rewire(present: np.ndarray, chosen: np.ndarray, n_interests: int, rng: np.random.Generator) -> np.ndarray:
    """New codes for the ``chosen`` edges (codes of ``present``): per user, as many distinct interests as it
    has chosen edges, drawn uniformly from the interests it does not hold.

    Per user, Floyd's algorithm draws ``m`` distinct ranks out of its ``a`` free interests in ``m`` vectorised
    rounds (round ``j`` serves every user's ``j``-th chosen edge; ``m`` is at most a user's degree).
    """
    if not chosen.size:
        return chosen
    users = chosen // n_interests  # sorted, as ``present`` is
    held = np.bincount(present // n_interests, minlength=int(users.max()) + 1)[users]
    free = n_interests - held
    first = np.searchsorted(users, users, side="left")
    m = np.searchsorted(users, users, side="right") - first
    if (m > free).any():
        bad = int(np.argmax(m > free))
        raise DatasetError(f"user {int(users[bad])} holds {int(held[bad])} of the {n_interests} interests: "
                           f"{int(m[bad])} of its edges cannot be replaced by interests it does not hold")
    position = np.arange(chosen.size) - first
    ranks = np.full(chosen.size, -1, dtype=np.int64)
    for j in range(int(m.max())):
        rows = np.flatnonzero(position == j)
        top = free[rows] - m[rows] + j  # Floyd: draw in [0, top]; if taken by this user already, take top
        draw = rng.integers(0, top + 1)
        done = ranks >= 0
        taken = np.isin(users[rows] * n_interests + draw, users[done] * n_interests + ranks[done])
        ranks[rows] = np.where(taken, top, draw)
    # rank r among user u's free interests -> its rank among all absent codes -> the code
    block = users * n_interests
    absent_before = block - np.searchsorted(present, block, side="left")
    return kth_absent(present, absent_before + ranks)


def _mode(mode: Union[str, PerturbMode]) -> PerturbMode:
    try:
        return PerturbMode(mode)
    except ValueError:
        raise ConfigError(f"unknown perturbation {mode!r}; choose one of "
                          f"{', '.join(m.value for m in PerturbMode)}", "mode") from None


def _edge_table(source: Any, n_users: Optional[int], interest_ids: Optional[Sequence[int]]):
    table = np.asarray(source.numpy() if isinstance(source, torch.Tensor) else source)
    if table.ndim != 2 or table.shape[1] != 2 or not np.issubdtype(table.dtype, np.integer):
        raise DatasetError(f"expected an [n, 2] integer (user, interest) table, got shape {table.shape} "
                           f"of {table.dtype}")
    table = table.astype(np.int64)
    if table.size and table.min() < 0:
        raise DatasetError("user and interest ids must be non-negative")
    users, ids = table[:, 0], table[:, 1]
    if n_users is None:
        n_users = int(users.max()) + 1 if users.size else 0
    if users.size and users.max() >= n_users:
        raise DatasetError(f"user {int(users.max())} is outside the {n_users} users")
    vocabulary = np.unique(ids if interest_ids is None else np.asarray(interest_ids, dtype=np.int64))
    if ids.size and not vocabulary.size:
        raise DatasetError("the interest vocabulary is empty")
    dense = np.searchsorted(vocabulary, ids)
    unknown = vocabulary[np.minimum(dense, vocabulary.size - 1)] != ids
    if unknown.any():
        raise DatasetError(f"interest {int(ids[np.argmax(unknown)])} is not in the interest vocabulary")
    return users, dense.astype(np.int64), int(n_users), vocabulary


def write_perturbation(result: Perturbation, out_dir: Union[str, Path], source: Optional[Union[str, Path]],
                       labels: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Write ``user_interest_clustered.txt``, ``interest_list.txt`` and ``perturb.json`` into ``out_dir``.

    ``interest_list.txt`` (``org_id remap_id [label]``) lists the whole vocabulary, so that an interest whose
    edges were all dropped stays a node when the file is read back (:func:`cikg.data.load_interests`);
    ``perturb.json`` records the mode, rate, seed, counts and the source file with its SHA-256 (``None`` for
    interests that come from no file, e.g. a synthetic dataset's).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (CLUSTERED_FILE, LABEL_FILE, PERTURB_FILE)}
    with atomic_path(paths[CLUSTERED_FILE]) as tmp:
        np.savetxt(tmp, result.edges, fmt="%d", delimiter=" ")
    rows = [f"{org} {dense}" + ("" if labels is None else f" {labels[dense]}")
            for dense, org in enumerate(result.interest_ids.tolist())]
    header = "org_id remap_id" + ("" if labels is None else " label")
    write_text_atomic(paths[LABEL_FILE], "\n".join([header, *rows]) + "\n")
    write_json_atomic(paths[PERTURB_FILE], {**result.summary(), "source": None if source is None else str(source),
                                            "source_sha256": None if source is None else sha256_file(source)})
    return paths
