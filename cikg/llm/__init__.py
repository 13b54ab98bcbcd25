"""LLM layer: prompts, an OpenAI-compatible client with cache/retries/Batch API, parsing, backends.

Backends share one interface (``complete_many(requests) -> list[Completion]``): :class:`OpenAIBackend`
(any OpenAI-compatible server), :class:`BatchBackend` (OpenAI Batch API), :class:`ReplayBackend`
(recorded answers) and :class:`KGProfileBackend` (offline, derived from the KG: not an LLM).
:func:`infer_interests` runs the CIKGRec interest step end to end.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".base": "NOT_AN_LLM Backend Completion RunSummary",
    ".batch": "BatchBackend BatchConfig",
    ".cache": "ResponseCache cache_key",
    ".client": "LLMConfig OpenAIBackend RetryPolicy parse_retry_after",
    ".echo": "EchoConfig echo_mask filter_echoes",
    ".kgprofile": "KGProfileBackend KGProfileConfig",
    ".parse": "ParsedAnswer parse_answer parse_interests",
    ".pipeline": "RAW_FILE InferenceResult infer_interests",
    ".prompts": "CIKGREC_FEWSHOT CIKGREC_INTERESTS INTEREST_TEMPLATES PromptTemplate Request build_requests",
    ".replay": "ReplayBackend export_replay import_replay read_replay",
})
