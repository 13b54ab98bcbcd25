"""Data-parallel training with ``torch.distributed``: DistributedDataParallel over ranks launched by torchrun.

``torchrun --nproc_per_node=N -m cikg train CONFIG`` starts N copies of ``cikg train``; each sees
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and trains with a
:class:`DistributedTrainer`, the ordinary :class:`~cikg.train.Trainer` with a few hooks replaced, so there
is one training loop for one and for many processes:

* **Process group.** ``gloo`` when the rank's device is the CPU, ``nccl`` on CUDA, chosen from
  ``train.device`` (``cuda`` / ``auto`` give rank ``r`` the GPU ``LOCAL_RANK``).
* **Data.** Every rank holds the whole dataset and the whole graph (replicated: the CIKG's CSR views are a
  few hundred MB even at a million users, see ``docs/scaling.md``). Each epoch all ranks draw the same
  permutation of the train positives from the epoch seed and rank ``r`` takes ``perm[r::N]``: the shards
  are disjoint and together cover the epoch once; negatives and dropout come from seeds derived from
  ``(seed, epoch, rank)`` (:func:`~cikg.train.trainer.epoch_seed`), while the model's per-epoch draws (edge
  dropout, UIR masks, contrastive noise) come from the epoch's generator shared by all ranks (on the CPU; a
  CUDA model draws from the per-rank seeded CUDA generator). Every rank runs the same number of batches, so
  the collective calls stay in step.
* **Gradients.** The main loss runs through :class:`torch.nn.parallel.DistributedDataParallel`, which
  all-reduces (averages) gradients during ``backward``; a step on ``N`` ranks with batch ``B`` is a step
  with batch ``N * B``, and an epoch has ``N`` times fewer steps. Auxiliary tasks with their own optimiser
  (CIKGRec's TransE, KGAT's TransR) are supported: their batch stream of the epoch is dealt out
  round-robin (rank ``r`` trains on batches ``r, r + N, ...``, wrapping round at the end so that every
  rank steps equally often) and their loss also runs through the DDP module, so their gradients are
  all-reduced by the same reducer (a second, hand-written all-reduce beside DDP's hooks trips its
  unused-parameter bookkeeping). The optimiser's ``zero_grad`` comes before each forward for the same reason.
* **Rank 0** validates, keeps ``best_model.pt``, writes checkpoints and logs; the others wait for its
  decision (a broadcast, which is also the barrier) and go on with identical state. Training-loss terms
  in ``metrics.jsonl`` are means over ranks.
* **Resume.** Rank 0 reads ``checkpoint.pt`` and broadcasts it, so every rank restarts from the same epoch
  (the run directory only has to be visible to rank 0). A run killed at any moment resumes with
  ``torchrun ... cikg train CONFIG`` again, and ends with the metrics of an uninterrupted run with the
  same number of ranks.

Example (2 CPU processes; the same command with ``train.device=cuda`` uses one GPU per process)::

    torchrun --standalone --nproc_per_node=2 -m cikg train experiments/dbbook2014/lightgcn.yaml
"""
from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from ..data import Dataset
from ..errors import CikgError, ConfigError
from ..graph import GraphViews
from ..models.base import AuxiliaryTask, BPRBatch
from .config import RunConfig
from .trainer import FitResult, Trainer

logger = logging.getLogger(__name__)

#: seconds a rank waits in a collective (rank 0's validation runs while the others wait)
DEFAULT_TIMEOUT_S = 2 * 3600


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in a torchrun launch: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Optional["DistributedEnv"]:
        """The launch described by torchrun's variables, or ``None`` outside a multi-process launch."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            return None
        values: Dict[str, int] = {}
        for key, default in (("WORLD_SIZE", None), ("RANK", None), ("LOCAL_RANK", "0")):
            text = environ.get(key, default)
            if text is None:
                raise ConfigError(f"WORLD_SIZE is set but {key} is not (launch with torchrun)", key)
            try:
                values[key] = int(text)
            except ValueError:
                raise ConfigError(f"expected an integer, got {text!r}", key) from None
        world, rank = values["WORLD_SIZE"], values["RANK"]
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}", "RANK")
        if world == 1:
            return None
        return cls(rank, world, values["LOCAL_RANK"])


def rank_device(device: str, env: DistributedEnv) -> torch.device:
    """The device of this rank for ``train.device``: the CPU, or GPU ``LOCAL_RANK`` for ``cuda``/``auto``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available (use train.device=cpu)",
                          "train.device")
    if device != "cuda":  # cuda:N names one GPU, which several ranks of a node cannot share with nccl
        raise ConfigError(f"with {env.world_size} processes use train.device=cuda (rank r takes GPU LOCAL_RANK), "
                          f"not {device!r}", "train.device")
    if env.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} GPUs on this node; "
                          "start at most one process per GPU", "train.device")
    return torch.device("cuda", env.local_rank)


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA ranks, ``gloo`` for CPU ranks."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(env: DistributedEnv, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Join the process group of ``env`` (``env://`` rendezvous from torchrun's variables); returns the backend."""
    backend = backend_for(device)
    if dist.is_initialized():
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise ConfigError(f"a process group of {dist.get_world_size()} ranks already exists; expected "
                              f"{env.world_size}", "WORLD_SIZE")
        return dist.get_backend()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s))
    return backend


def broadcast_object(obj: Any, device: torch.device, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; put CPU tensors in it)."""
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=device if device.type == "cuda" else None)
    return box[0]


class _LossModule(nn.Module):
    """What DDP wraps, so that every ``backward`` all-reduces gradients: ``forward(batch)`` is
    ``model.loss(batch)``, ``forward(batch, k)`` the ``k``-th auxiliary task's ``loss(batch)`` (an index, so
    that DDP's input handling never copies the task)."""

    def __init__(self, model: nn.Module, tasks: List[AuxiliaryTask]):
        super().__init__()
        self.model = model
        self.tasks = tasks

    def forward(self, batch: Any, task: int = -1):  # type: ignore[override]
        return self.model.loss(batch) if task < 0 else self.tasks[task].loss(batch)


class DistributedTrainer(Trainer):
    """A :class:`~cikg.train.Trainer` that is one rank of a DDP run (the process group must be initialised).

    Args:
        config, run_dir, dataset, views: as for :class:`~cikg.train.Trainer`.
        env: this rank's place (default: read from torchrun's environment variables).
        trackers: as for :class:`~cikg.train.Trainer` (called on rank 0 only).
    """

    def __init__(self, config: RunConfig, run_dir: Union[str, Path], env: Optional[DistributedEnv] = None,
                 dataset: Optional[Dataset] = None, views: Optional[GraphViews] = None, trackers=None):
        env = env or DistributedEnv.from_env()
        if env is None:
            raise ConfigError("not a multi-process launch (WORLD_SIZE unset or 1); use Trainer", "WORLD_SIZE")
        if not dist.is_initialized():
            raise ConfigError("the torch.distributed process group is not initialised (call "
                              "init_process_group or use train_distributed)", "WORLD_SIZE")
        self.env = env
        device = rank_device(config.train.device, env)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # "cuda" below resolves to this rank's GPU
        super().__init__(config, run_dir, dataset=dataset, views=views, rank=env.rank, world_size=env.world_size,
                         trackers=trackers)
        self.device = device
        self.ddp = nn.parallel.DistributedDataParallel(
            _LossModule(self.model, self.aux_tasks), device_ids=[device.index] if device.type == "cuda" else None,
            # the main loss leaves the auxiliary tasks' own parameters (TransE relations) without gradient, an
            # auxiliary step leaves most of the model's; DDP must not wait for them
            find_unused_parameters=True)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", rank={self.rank}/{self.world_size}, backend={dist.get_backend()})"

    # ------------------------------------------------------------------ training hooks
    def _loss(self, batch: BPRBatch):
        return self.ddp(batch)

    def _aux_batches(self, task: AuxiliaryTask, generator: torch.Generator, epoch: int) -> Iterator[Any]:
        """Deal the epoch's batch stream out round-robin: this rank's are ``rank, rank + N, ...``; the last
        round wraps round to the first batches so every rank steps equally often (ceil(n / N) steps)."""
        first: List[Any] = []
        round_: List[Any] = []
        for batch in task.batches(generator, epoch):
            if len(first) < self.world_size:
                first.append(batch)
            round_.append(batch)
            if len(round_) == self.world_size:
                yield round_[self.rank]
                round_ = []
        if round_:
            yield (round_ + first * self.world_size)[self.rank]

    def _aux_loss(self, task: AuxiliaryTask, batch: Any):
        return self.ddp(batch, next(k for k, t in enumerate(self.aux_tasks) if t is task))

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One epoch on this rank's shard; returns the loss terms averaged over ranks."""
        logged = super().train_epoch(epoch)
        names = sorted(logged)
        values = torch.tensor([float(logged[n]) for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        values /= self.world_size
        return dict(zip(names, values.tolist()))

    # ------------------------------------------------------------------ rank 0 decides
    def _validate_epoch(self, epoch: int, record: Dict[str, Any]) -> bool:
        decision = None
        if self.is_main:
            stopped = super()._validate_epoch(epoch, record)
            decision = {"valid": {k: v for k, v in record.items() if k.startswith("valid_")}, "stopped": stopped,
                        "best": (self.best_score, self.best_epoch, self.bad_evals)}
        decision = broadcast_object(decision, self.device)
        if not self.is_main:
            record.update(decision["valid"])
            self.best_score, self.best_epoch, self.bad_evals = decision["best"]
        return bool(decision["stopped"])

    def load_checkpoint(self) -> bool:
        """Rank 0 reads ``checkpoint.pt`` and broadcasts it; every rank restores the same state."""
        state = self._read_checkpoint("cpu") if self.is_main else None
        state = broadcast_object(state, self.device)
        if state is None:
            return False
        self._restore(state)
        return True

    def finish(self) -> FitResult:
        """Rank 0 evaluates the best weights on valid and test and writes the metrics; all ranks return them.

        Raises:
            CikgError: when the ranks' parameters differ (a bug or a non-deterministic collective).
        """
        self.check_in_step()
        result = super().finish() if self.is_main else None
        return broadcast_object(result, self.device)

    @torch.no_grad()
    def check_in_step(self, rtol: float = 1e-6) -> None:
        """Check that every rank holds the same parameters (sum and sum of squares of each tensor)."""
        mine = torch.stack([torch.stack([p.double().sum(), p.double().pow(2).sum()])
                            for p in self.model.parameters()]).reshape(-1)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.allclose(low, high, rtol=rtol, atol=1e-9):
            raise CikgError(f"rank {self.rank}: the {self.world_size} ranks' parameters differ after epoch "
                            f"{self.epoch} (max gap {float((high - low).abs().max()):.3g})")


def train_distributed(config: RunConfig, run_dir: Union[str, Path], env: Optional[DistributedEnv] = None,
                      resume: bool = True, dataset: Optional[Dataset] = None,
                      timeout_s: float = DEFAULT_TIMEOUT_S, trackers=None) -> FitResult:
    """Join the process group, train one rank with :class:`DistributedTrainer`, leave the group.

    The process group is destroyed at the end only if this call created it. Ranks other than 0 log
    warnings only.
    """
    env = env or DistributedEnv.from_env()
    if env is None:
        raise ConfigError("not a multi-process launch (WORLD_SIZE unset or 1)", "WORLD_SIZE")
    created = not dist.is_initialized()
    init_process_group(env, rank_device(config.train.device, env), timeout_s)
    if env.rank != 0:
        logging.getLogger("cikg").setLevel(logging.WARNING)
    trainer: Optional[DistributedTrainer] = None
    try:
        trainer = DistributedTrainer(config, run_dir, env, dataset=dataset, trackers=trackers)
        logger.info("%r", trainer)
        result = trainer.fit(resume=resume)
        dist.barrier()  # every rank is done with collectives before any tears down
        return result
    finally:
        # free the DDP reducer while the process group still exists: torch's reducer destructor can
        # otherwise block for ever at interpreter exit (seen with gloo in about 1 run in 3)
        if trainer is not None:
            trainer.ddp = None
        del trainer
        gc.collect()
        if created and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["DEFAULT_TIMEOUT_S", "DistributedEnv", "DistributedTrainer", "backend_for", "broadcast_object",
           "init_process_group", "rank_device", "train_distributed"]
