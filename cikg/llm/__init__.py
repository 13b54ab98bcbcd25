"""LLM layer: prompts, an OpenAI-compatible client with cache/retries/Batch API, parsing, backends.

Backends share one interface (``complete_many(requests) -> list[Completion]``): :class:`OpenAIBackend`
(any OpenAI-compatible server), :class:`BatchBackend` (OpenAI Batch API), :class:`ReplayBackend`
(recorded answers) and :class:`KGProfileBackend` (offline, derived from the KG: not an LLM).
:func:`infer_interests` runs the CIKGRec interest step end to end.
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .base import NOT_AN_LLM, Backend, Completion, RunSummary
    from .batch import BatchBackend, BatchConfig
    from .cache import ResponseCache, cache_key
    from .client import LLMConfig, OpenAIBackend, RetryPolicy, parse_retry_after
    from .echo import EchoConfig, echo_mask, filter_echoes
    from .kgprofile import KGProfileBackend, KGProfileConfig
    from .parse import ParsedAnswer, parse_answer, parse_interests
    from .pipeline import RAW_FILE, InferenceResult, infer_interests
    from .prompts import (
        CIKGREC_FEWSHOT,
        CIKGREC_INTERESTS,
        INTEREST_TEMPLATES,
        PromptTemplate,
        Request,
        build_requests,
    )
    from .replay import ReplayBackend, export_replay, import_replay, read_replay

__all__ = [
    "Backend", "BatchBackend", "BatchConfig", "CIKGREC_FEWSHOT", "CIKGREC_INTERESTS", "Completion", "EchoConfig",
    "INTEREST_TEMPLATES", "InferenceResult", "KGProfileBackend", "KGProfileConfig", "LLMConfig", "NOT_AN_LLM",
    "OpenAIBackend", "ParsedAnswer", "PromptTemplate", "RAW_FILE", "ReplayBackend", "Request", "ResponseCache",
    "RetryPolicy", "RunSummary", "build_requests", "cache_key", "echo_mask", "export_replay", "filter_echoes",
    "import_replay", "infer_interests", "parse_answer", "parse_interests", "parse_retry_after", "read_replay",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
