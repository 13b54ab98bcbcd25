"""LLM layer: prompts, an OpenAI-compatible client with cache/retries/Batch API, parsing, backends.

Backends share one interface (``complete_many(requests) -> list[Completion]``): :class:`OpenAIBackend`
(any OpenAI-compatible server), :class:`BatchBackend` (OpenAI Batch API), :class:`ReplayBackend`
(recorded answers) and :class:`KGProfileBackend` (offline, derived from the KG: not an LLM).
:func:`infer_interests` runs the CIKGRec interest step end to end.
"""
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
    "CIKGREC_FEWSHOT", "CIKGREC_INTERESTS", "EchoConfig", "INTEREST_TEMPLATES", "echo_mask", "filter_echoes",
    "parse_answer", "NOT_AN_LLM", "RAW_FILE", "Backend", "BatchBackend", "BatchConfig", "Completion",
    "InferenceResult", "KGProfileBackend", "KGProfileConfig", "LLMConfig", "OpenAIBackend", "ParsedAnswer",
    "PromptTemplate", "ReplayBackend", "Request", "ResponseCache", "RetryPolicy", "RunSummary", "build_requests", "cache_key",
    "export_replay", "import_replay", "infer_interests", "parse_interests", "parse_retry_after", "read_replay",
]
