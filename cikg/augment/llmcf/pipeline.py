"""LLM-CF end to end (:func:`run_llmcf`) and as an :class:`~cikg.augment.base.Augmenter` (:class:`LLMCF`)."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ..._io import torch_save_atomic, write_json_atomic
from ...embed import Encoder
from ...llm.base import Backend
from ...llm.pipeline import default_domain
from .._shared import cf_embeddings, check_cf, llm_model
from ..base import Augmenter, NodeFeatures
from .backend import CoTProfileBackend
from .config import LLMCFConfig
from .context import Context, retrieve_context, user_text_embeddings
from .cot import DATASET_FILE, CoTDataset, build_cot_dataset, generate_cot
from .examples import sample_examples
from .fit import ICTTraining, ict_user_features, pretrain_ict
from .ict import ICTModule
from .prompts import LLMCF_COT

log = logging.getLogger(__name__)


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
        "method": "llmcf", "paper": "arXiv 2403.17688", "llm_model": llm_model(backend), "backend": summary.backend,
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
            self.encoder = Encoder(None if self.out_dir is None else Path(self.out_dir) / "embeddings.sqlite",
                                   show_progress=self.progress)
        backend = self.backend if self.backend is not None else CoTProfileBackend(dataset)
        self.result = run_llmcf(dataset, self.config, backend, self.encoder, self.cf, self.out_dir, self.progress)
        return self._keep_user_features(self.result.user_features, self.result.provenance, self.config.normalize,
                                        self.out_dir)
