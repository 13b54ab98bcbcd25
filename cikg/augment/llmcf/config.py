"""The settings of LLM-CF (:class:`LLMCFConfig`), checked when built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ... import checks
from ...errors import ConfigError
from ...llm.prompts import DOMAINS


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

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("n_examples", "history_len", "k", "dim", "heads", "layers", "epochs", "batch_size",
                            "block_size", "cf_dim"),
        checks.non_negative("neg_ratio", "weight_decay"), checks.non_negative_int("patience"),
        checks.probability("text_weight", closed_high=True), checks.probability("dropout", "holdout"),
        checks.positive("lr"), checks.seed("seed"), checks.one_of(DOMAINS, "domain", optional=True))

    def __post_init__(self) -> None:
        checks.check(self)
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by heads ({self.heads})", "heads")
