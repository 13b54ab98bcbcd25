"""CoCo end to end (:func:`run_coco`) and as an :class:`~cikg.augment.base.Augmenter` (:class:`CoCo`)."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..._io import torch_save_atomic, write_json_atomic
from ...errors import GraphError
from .._shared import cf_embeddings, check_cf
from ..base import Augmenter, NodeFeatures
from .config import CoCoConfig
from .fit import UserText, add_lora, knowledge_vectors, train_selector
from .judge import flagged_subset, judge
from .lm import lm_name, lm_source, load_lm, tokenize_histories
from .model import CoCoModel

log = logging.getLogger(__name__)


@dataclass
class CoCoReport:
    """What a CoCo fit did (recorded in the features' provenance)."""

    train: List[Dict[str, float]] = field(default_factory=list)
    lora: List[Dict[str, float]] = field(default_factory=list)
    before: Dict[str, float] = field(default_factory=dict)
    after: Dict[str, float] = field(default_factory=dict)
    flagged_before: int = 0
    still_flagged: int = 0
    code_usage: List[int] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def lines(self) -> List[str]:
        out = [f"judged users: {self.before.get('judged', 0)}; flagged (knowledge lowers validation confidence): "
               f"{self.flagged_before}"]
        if self.lora:
            out.append(f"after targeted LoRA: {self.still_flagged} of {self.flagged_before} still flagged; "
                       f"their mean confidence delta {self.after.get('mean_delta', math.nan):+.4f} "
                       f"(before {self.before.get('flagged_mean_delta', math.nan):+.4f})")
        return out


@dataclass
class CoCoResult:
    """Everything one CoCo run produced.

    Attributes:
        users: the users run on ``LongTensor [n]``; knowledge: their knowledge vectors ``[n, h]``;
        codes: their codebook entries ``[n]``; model: the trained model; report: judge and LoRA figures;
        provenance: JSON-safe record for the graph's feature metadata.
    """

    users: Tensor
    knowledge: Tensor
    codes: Tensor
    model: CoCoModel
    report: CoCoReport
    provenance: Dict[str, Any]

    def user_features(self, n_users: int) -> Tensor:
        """``[n_users, h]`` with the knowledge in the rows of :attr:`users` (zeros elsewhere)."""
        out = torch.zeros(n_users, self.knowledge.size(1))
        out[self.users] = self.knowledge
        return out


def run_coco(dataset: Any, config: CoCoConfig, cf: Optional[Tuple[Tensor, Tensor]] = None,
             users: Optional[Sequence[int]] = None, progress: bool = False,
             lm: Optional[Tuple[nn.Module, Any]] = None, out_dir: Union[str, Path, None] = None) -> CoCoResult:
    """Collaboration enhancement, judge, targeted LoRA: the whole method on ``users`` (default: all).

    Args:
        cf: ``(user [n_users, d], item [n_items, d])`` embeddings of a trained recommender; default: the
            truncated SVD of :func:`cikg.augment.llmcf.cf_embeddings`.
        lm: an already loaded ``(model, tokenizer)`` (default: :func:`load_lm` of ``config.model``).
        out_dir: folder for ``coco_summary.json`` and ``coco_model.pt`` (selector, codebook, ``W``, LoRA).
    """
    started = time.perf_counter()
    cf_source = "given" if cf is not None else f"truncated SVD of the train matrix (d={config.cf_dim})"
    user_cf, item_cf = check_cf(dataset, cf if cf is not None else cf_embeddings(dataset, config.cf_dim,
                                                                                  config.seed))
    torch.manual_seed(config.seed)
    model_lm, tokenizer = lm if lm is not None else load_lm(config.model)
    for p in model_lm.parameters():  # the LM is frozen; only LoRA adapters added later train
        p.requires_grad_(False)
    prefix = 1 if getattr(tokenizer, "cls_token_id", None) is not None else 0
    users_t = torch.arange(dataset.n_users) if users is None else torch.as_tensor(list(users), dtype=torch.long)
    if users_t.numel() == 0:
        raise GraphError(f"{dataset.name}: no user to run CoCo on")
    ids, mask = tokenize_histories(dataset, tokenizer, users_t.tolist(), config.history_len,
                                   config.max_tokens + prefix)
    text = UserText(users_t, ids, mask)
    model = CoCoModel(model_lm, user_cf.size(1), config, prefix)
    report = CoCoReport()
    report.train = train_selector(model, dataset, text, user_cf, item_cf, config, progress=progress)
    knowledge, codes = knowledge_vectors(model, text, user_cf, users_t)
    report.code_usage = torch.bincount(codes, minlength=config.n_codes).tolist()
    verdict = judge(model, dataset, users_t, knowledge, user_cf, item_cf, config.margin)
    report.before = verdict.summary()
    report.flagged_before = verdict.n_flagged
    flagged = flagged_subset(verdict)
    report.before["flagged_mean_delta"] = flagged.summary()["mean_delta"] if flagged.users.numel() else math.nan
    log.info("CoCo judge: %d of %d user(s) flagged", verdict.n_flagged, verdict.n_judged)
    if config.lora_epochs > 0 and verdict.n_flagged > 0:
        add_lora(model, config)
        report.lora = train_selector(model, dataset, text, user_cf, item_cf, config, users=flagged.users,
                                     progress=progress, lora=True)
        adapted, _ = knowledge_vectors(model, text, user_cf, flagged.users)
        after = judge(model, dataset, flagged.users, adapted, user_cf, item_cf, config.margin)
        report.after = after.summary()
        report.still_flagged = after.n_flagged
        knowledge[verdict.flagged] = adapted
    for line in report.lines():
        log.info("CoCo: %s", line)
    provenance = {
        "method": "coco", "paper": "arXiv 2510.14257", "llm_model": lm_name(config.model),
        "lm_path": lm_source(config.model),
        "backend": "transformers (local)", "not_an_llm": False, "template_version": "history titles v1",
        "n_calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
        "encoder": "soft-prompted LM, masked mean of the last hidden states", "cf": cf_source,
        "n_codes": config.n_codes, "prompt_len": config.prompt_len, "users": int(users_t.numel()),
        "judged": report.before.get("judged", 0), "flagged": report.flagged_before,
        "still_flagged_after_lora": report.still_flagged if report.lora else None,
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "targets": list(config.lora_targets),
                 "epochs": config.lora_epochs} if report.lora else None,
        "codes_used": int(sum(1 for c in report.code_usage if c)), "seed": config.seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        out = Path(out_dir)
        trainable = {n: p.detach() for n, p in model.named_parameters()
                     if not n.startswith("encoder.lm.") or "lora_" in n}
        torch_save_atomic({"state_dict": trainable, "config": dataclasses.asdict(config)}, out / "coco_model.pt")
        write_json_atomic(out / "coco_summary.json", {**provenance, "report": report.to_dict()})
    return CoCoResult(users_t, knowledge, codes, model, report, provenance)


class CoCo(Augmenter):
    """CoCo as an :class:`~cikg.augment.base.Augmenter`: :meth:`fit` returns the per-user knowledge vectors.

    Args:
        config: :class:`CoCoConfig` (the LM, codebook, LoRA settings).
        cf: collaborative ``(user, item)`` embeddings of a trained recommender (default: truncated SVD).
        users: run on these users only (the others get zero rows); default all.
        out_dir: where the model and summary go.
    """

    name = "coco"

    def __init__(self, config: Optional[CoCoConfig] = None, cf: Optional[Tuple[Tensor, Tensor]] = None,
                 users: Optional[Sequence[int]] = None, out_dir: Union[str, Path, None] = None,
                 progress: bool = False):
        self.config = config or CoCoConfig()
        self.cf, self.users, self.out_dir, self.progress = cf, users, out_dir, progress
        self.result: Optional[CoCoResult] = None
        self.features: Optional[NodeFeatures] = None

    def __repr__(self) -> str:
        c = self.config
        fitted = "" if self.result is None else f", flagged={self.result.report.flagged_before}"
        return (f"CoCo(model={str(c.model or 'all-MiniLM-L6-v2')!r}, n_codes={c.n_codes}, "
                f"prompt_len={c.prompt_len}, lora_r={c.lora_r}{fitted})")

    def fit(self, dataset: Any, graph: Any = None) -> NodeFeatures:
        """Run the method on ``dataset``; ``NodeFeatures.user`` is ``[n_users, h]`` (``graph`` is only checked)."""
        self.check_graph(dataset, graph)
        self.result = run_coco(dataset, self.config, self.cf, self.users, self.progress, out_dir=self.out_dir)
        user = self.result.user_features(dataset.n_users)
        return self._keep_user_features(user, self.result.provenance, self.config.normalize, self.out_dir)
