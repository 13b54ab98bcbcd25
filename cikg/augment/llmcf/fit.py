"""Pre-training of the ICT module on the CoT dataset's labels (BCE, early stopping) and its user features."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import LLMCFConfig
from .context import Context, _context_tensors
from .cot import CoTDataset
from .ict import ICTModule


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
