"""Fitting CoCo: BPR training of selector, codebook and ``W`` (LM frozen), LoRA adapters, knowledge vectors."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError
from .._shared import in_sorted, train_keys
from .config import CoCoConfig
from .model import CoCoModel

log = logging.getLogger(__name__)


def sample_pairs(dataset: Any, users: Tensor, m: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """``m`` train positives (with replacement) and ``m`` uniform negatives outside the train items per user
    (``[B, m]`` each; users without train items get item 0 as both, which gives a zero BPR gradient)."""
    indptr, indices = dataset.csr("train")
    start, count = indptr[users], indptr[users + 1] - indptr[users]
    draw = (torch.rand(users.numel(), m, generator=generator) * count.clamp(min=1)[:, None]).long()
    pos = torch.where(count[:, None] > 0, indices[(start[:, None] + draw).clamp(max=max(indices.numel() - 1, 0))],
                      torch.zeros_like(draw))
    known = train_keys(dataset)
    neg = torch.randint(dataset.n_items, (users.numel(), m), generator=generator)
    for _ in range(10):  # redraw negatives that hit a train item
        keys = users[:, None] * dataset.n_items + neg
        hit = in_sorted(known, keys) & (count[:, None] > 0)
        if not bool(hit.any()):
            break
        neg = torch.where(hit, torch.randint(dataset.n_items, neg.shape, generator=generator), neg)
    neg = torch.where(count[:, None] > 0, neg, pos)
    return pos, neg


@dataclass
class UserText:
    """Tokenised history texts of a set of users: ``users [n]``, ``input_ids``/``attention_mask [n, T]``."""

    users: Tensor
    input_ids: Tensor
    attention_mask: Tensor

    def rows(self, users: Tensor) -> Tensor:
        """Positions of ``users`` in this set (all must be present)."""
        position = torch.full((int(self.users.max()) + 1,), -1, dtype=torch.long)
        position[self.users] = torch.arange(self.users.numel())
        return position[users]


def train_selector(model: CoCoModel, dataset: Any, text: UserText, user_cf: Tensor, item_cf: Tensor,
                   config: CoCoConfig, users: Optional[Tensor] = None, progress: bool = False,
                   lora: bool = False) -> List[Dict[str, float]]:
    """Train on ``users`` (default: every user of ``text``) for ``config.epochs`` (or ``lora_epochs``).

    Without ``lora``: selector, codebook and ``W`` train, the LM is frozen (data-dependent codebook start,
    dead entries restarted after each epoch). With ``lora``: only the parameters that require gradients
    inside the LM (the LoRA adapters) train; selector, codebook and ``W`` are frozen.

    Returns:
        One record per epoch: mean loss terms and the number of codebook entries in use.
    """
    generator = torch.Generator().manual_seed(config.seed + (1 if lora else 0))
    users = text.users if users is None else users
    if lora:
        params = [p for p in model.encoder.lm.parameters() if p.requires_grad]
        frozen = [p for p in list(model.selector.parameters()) + list(model.project.parameters())]
        epochs, lr = config.lora_epochs, config.lora_lr
    else:
        params = list(model.selector.parameters()) + list(model.project.parameters())
        frozen = []
        epochs, lr = config.epochs, config.lr
        model.selector.init_codebook(user_cf[users], generator)
    if not params:
        raise ConfigError("nothing to train: no parameter requires a gradient", "lora_targets" if lora else "model")
    states = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=lr)
    history: List[Dict[str, float]] = []
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = users[torch.randperm(users.numel(), generator=generator)]
            sums: Dict[str, float] = {}
            usage = torch.zeros(model.selector.n_codes, dtype=torch.long)
            bar = tqdm(range(0, order.numel(), config.batch_size), desc=f"CoCo {'LoRA' if lora else 'VQ'} "
                       f"epoch {epoch}", disable=not progress, leave=False)
            for start in bar:
                batch = order[start:start + config.batch_size]
                rows = text.rows(batch)
                pos, neg = sample_pairs(dataset, batch, config.pairs_per_user, generator)
                total, terms = model.loss(user_cf[batch], text.input_ids[rows], text.attention_mask[rows],
                                          item_cf[pos], item_cf[neg])
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                with torch.no_grad():
                    usage += torch.bincount(model.selector.nearest(model.selector.encode(user_cf[batch])),
                                            minlength=model.selector.n_codes)
                for name, value in {"loss": total.detach(), **terms}.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * batch.numel()
            record = {"epoch": epoch, **{k: v / max(users.numel(), 1) for k, v in sums.items()},
                      "codes_used": int((usage > 0).sum())}
            if not lora:
                record["codes_restarted"] = model.selector.restart_dead(user_cf[users], usage, generator) \
                    if epoch < epochs else 0
            history.append(record)
            log.info("CoCo %s epoch %d: %s", "LoRA" if lora else "VQ", epoch,
                     {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
    finally:
        for p, state in zip(frozen, states, strict=True):
            p.requires_grad_(state)
        model.eval()
    return history


@torch.no_grad()
def knowledge_vectors(model: CoCoModel, text: UserText, user_cf: Tensor, users: Tensor,
                      batch_size: int = 64) -> Tuple[Tensor, Tensor]:
    """``(knowledge [len(users), h], code index [len(users)])`` in eval mode, in batches."""
    model.eval()
    out, codes = [], []
    for start in range(0, users.numel(), batch_size):
        batch = users[start:start + batch_size]
        rows = text.rows(batch)
        k, vq = model.knowledge(user_cf[batch], text.input_ids[rows], text.attention_mask[rows])
        out.append(k)
        codes.append(vq.index)
    hidden = model.project.in_features
    return (torch.cat(out) if out else torch.zeros(0, hidden)), (torch.cat(codes) if codes else
                                                                 torch.zeros(0, dtype=torch.long))


def add_lora(model: CoCoModel, config: CoCoConfig) -> None:
    """Wrap the LM of ``model`` with ``peft`` LoRA adapters on ``config.lora_targets`` (only they train).

    Raises:
        ConfigError: ``peft`` is not installed, or no module of the LM matches ``lora_targets``.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError:
        raise ConfigError("contradiction elimination needs the peft package (pip install 'cikg[lora]'); "
                          "or set lora_epochs=0", "lora_epochs") from None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.encoder.lm.named_modules()}
    missing = [t for t in config.lora_targets if t not in names]
    if missing:
        raise ConfigError(f"the LM has no module named {missing} for LoRA (it has e.g. "
                          f"{sorted(names)[:12]})", "lora_targets")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none")
    with warnings.catch_warnings():  # transformers deprecation notes raised inside peft, not ours
        warnings.simplefilter("ignore", FutureWarning)
        model.encoder.lm = get_peft_model(model.encoder.lm, lora)


def lora_parameters(model: CoCoModel) -> Dict[str, Tensor]:
    """The adapter weights (names containing ``lora_``) of the LM, detached copies."""
    return {n: p.detach().clone() for n, p in model.encoder.lm.named_parameters() if "lora_" in n}
