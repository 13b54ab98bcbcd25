"""Strict but tolerant parsing of interest answers.

Small models answer "Fantasy, mystery" as often as "1. **Fantasy**\\n2. Mystery" or "Interests: ...".
:func:`parse_interests` turns any text into at most ``max_phrases`` clean phrases and never raises; an answer
without a usable phrase is a failure that keeps its raw text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

MIN_CHARS = 2
MAX_CHARS = 50
MAX_PHRASES = 5

_SEPARATORS = re.compile(r"[,;\n\r\u2022|]+")
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):\]]|\(?[a-zA-Z][.)](?=\s)|[-*+\u2022\u2013\u2014#>]+)\s*")
_LEAD = re.compile(r"^\s*(?:(?:the\s+)?(?:user'?s?\s+)?(?:top\s+)?interests?|answer|topics?)\s*(?:are|is)?\s*:\s*",
                   re.IGNORECASE)
_QUOTES = "\"'`\u2018\u2019\u201c\u201d*_[](){}<>"
_TRAILING = ".!?:"


@dataclass(frozen=True)
class ParsedAnswer:
    """Result of parsing one answer: ``phrases`` (possibly empty) and ``reason`` when it failed."""

    phrases: Tuple[str, ...]
    raw: str
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return bool(self.phrases)


def clean_phrase(piece: str) -> str:
    """Strip numbering, bullets, quotes, a leading ``interests:`` and trailing punctuation; lower-case."""
    text = " ".join(piece.split())
    for _ in range(3):  # "1. Interests: - 'fantasy'" needs a few passes
        before = text
        text = _NUMBERING.sub("", text)
        text = _LEAD.sub("", text)
        text = text.strip().strip(_QUOTES).strip().rstrip(_TRAILING).strip()
        if text == before:
            break
    if text.lower().startswith("and "):
        text = text[4:]
    return text.lower()


def parse_interests(text: Optional[str], max_phrases: int = MAX_PHRASES, min_chars: int = MIN_CHARS,
                    max_chars: int = MAX_CHARS) -> ParsedAnswer:
    """Split an answer into at most ``max_phrases`` interest phrases.

    Splits on commas, semicolons, newlines, bullets and ``|``; cleans each piece (:func:`clean_phrase`); drops
    pieces outside ``min_chars..max_chars`` characters; removes duplicates keeping the first.

    Never raises; ``ParsedAnswer.reason`` says why an answer gave nothing.
    """
    raw = "" if text is None else str(text)
    if not raw.strip():
        return ParsedAnswer((), raw, "empty answer")
    phrases: List[str] = []
    seen = set()
    for piece in _SEPARATORS.split(_LEAD.sub("", raw.strip(), count=1)):
        phrase = clean_phrase(piece)
        if not min_chars <= len(phrase) <= max_chars or phrase in seen:
            continue
        if not any(ch.isalnum() for ch in phrase):
            continue
        seen.add(phrase)
        phrases.append(phrase)
        if len(phrases) == max_phrases:
            break
    if not phrases:
        return ParsedAnswer((), raw, f"no phrase of {min_chars}..{max_chars} characters in the answer")
    return ParsedAnswer(tuple(phrases), raw)
