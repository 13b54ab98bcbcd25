"""Strict but tolerant parsing of interest answers.

Small models answer "Fantasy, mystery" as often as "1. **Fantasy**\\n2. Mystery", "Interests: ...", "The book
is: Dune (Dune Chronicles, Book 1)" or "a mix of fantasy, sci-fi and horror genres".
:func:`parse_interests` turns any text into at most ``max_phrases`` clean phrases and never raises; an answer
without a usable phrase is a failure that keeps its raw text. :func:`parse_structured` reads the JSON object
that the structured (``response_format``) mode asks for; :func:`parse_answer` tries it first and falls back to
the free-text parser.

Free-text rules, in order: a lead-in ending in a colon (``Interests:``, ``The book is:``, ``Here are the
user's top interests:``) is dropped; the text is split on newlines, bullets, ``|``, sentence ends, and on
commas and semicolons *outside* parentheses; each piece loses its numbering, bullet, quotes and markdown
emphasis, a sentence lead-in (``the user enjoys``, ``a mix of``, ``books about``, ``such as``), a generic
tail word (``genres``, ``categories``); a short ``X and Y`` is split in two when it ends a list or a sentence;
unmatched parentheses are removed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

MIN_CHARS = 2
MAX_CHARS = 50
MAX_PHRASES = 5

_HARD = re.compile(r"[\n\r\u2022|]+")
_SENTENCE_END = re.compile(r"(?<=[a-z]{2}[.!?])\s+(?=[A-Z])")
_SOFT = re.compile(r"[,;]")
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):\]]|\(?[a-zA-Z][.)](?=\s)|[-*+\u2022\u2013\u2014#>]+)\s*")
_LEAD_WORDS = (r"(?:interests?|books?|novels?|movies?|films?|genres?|topics?|answers?|items?|titles?|themes?|"
               r"categories|list|output|response|phrases?|preferences?|tastes?)")
_LEAD = re.compile(
    r"^\s*(?:here\s+(?:are|is)\s+)?(?:(?:the|a|an|my|your|their|this|these|user'?s?|users'|reader'?s?|top|main|"
    r"possible|likely|five|5)\s+){0,4}" + _LEAD_WORDS + r"(?:\s+(?:are|is|include|includes|would\s+be))?\s*:\s*",
    re.IGNORECASE)
"""A lead-in ending in a colon at the start of the answer or of a piece."""
_SENTENCE_LEAD = re.compile(
    r"^(?:(?:it\s+(?:seems|appears)\s+(?:that\s+)?|based\s+on\s+[^,]*?,\s*)?"
    r"(?:the\s+user|this\s+user|the\s+reader|they|he|she|you|i)\s+"
    r"(?:(?:seems?|appears?)\s+to\s+(?:be\s+)?|might\s+|may\s+|would\s+|probably\s+|really\s+|also\s+|mostly\s+)*"
    r"(?:likes?|enjoys?|loves?|prefers?|reads?|is\s+interested\s+in|are\s+interested\s+in|"
    r"(?:has|have)\s+an?\s+interest\s+in|is\s+into|are\s+into|interested\s+in)\s+(?:reading\s+)?)",
    re.IGNORECASE)
_MIX = re.compile(r"^(?:(?:a|an)\s+)?(?:(?:wide|broad|good|diverse|eclectic|great)\s+)?"
                  r"(?:mix|mixture|combination|blend|variety|range|selection|collection|lot|number)\s+of\s+",
                  re.IGNORECASE)
_TOPIC_NOUN = re.compile(r"^(?:books?|novels?|stories|titles|works|literature)\s+(?:about|on|in|of|from)\s+",
                         re.IGNORECASE)
_INTRO = re.compile(r"^(?:\S+\s+){2,}?(?:such\s+as|including|especially|particularly|namely)\s+", re.IGNORECASE)
_GENERIC_TAIL = re.compile(r"(?<=\S)\s+(?:genres?|categories|category)$",
                           re.IGNORECASE)
_AND = re.compile(r"^(\S+(?:\s+\S+){0,2})\s+(?:and|or)\s+(?!(?:the|a|an|of)\b)(\S+(?:\s+\S+){0,2})$",
                  re.IGNORECASE)
_QUOTES = "\"'`\u2018\u2019\u201c\u201d*_[]{}<>"
_TRAILING = ".!?:,;-\u2013"
_ETC = re.compile(r"(?:,?\s+etc\.?|\s*\.\.\.|\u2026)$", re.IGNORECASE)
_EMPHASIS = re.compile(r"\*\*|__")
_EXPLAINED = re.compile(r"^([^:]{2,60}?)\s*:\s+\S+(?:\s+\S+){2,}")
_FILLER = frozenset({"etc", "and more", "more", "others", "and others", "and so on", "n/a", "none"})
_CUT_SHORT = re.compile(r"^(?:the|an)(?: \S)?$|^a$")
"""A title cut off after its article ("the", "the t"): no phrase."""


@dataclass(frozen=True)
class ParsedAnswer:
    """Result of parsing one answer: ``phrases`` (possibly empty), ``reason`` when it failed, and
    ``structured``: the phrases came from a valid JSON answer (:func:`parse_structured`)."""

    phrases: Tuple[str, ...]
    raw: str
    reason: Optional[str] = None
    structured: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.phrases)


def _balance(text: str) -> str:
    """Drop parentheses that have no partner: ``"dune (dune chronicles"`` → ``"dune dune chronicles"``."""
    if "(" not in text and ")" not in text:
        return text
    chars = list(text)
    opened: List[int] = []
    for i, ch in enumerate(chars):
        if ch == "(":
            opened.append(i)
        elif ch == ")":
            if opened:
                opened.pop()
            else:
                chars[i] = " "
    for i in opened:
        chars[i] = " "
    return " ".join("".join(chars).replace("()", " ").split())


def _unwrap(text: str) -> str:
    """``"(fantasy)"`` → ``"fantasy"``; ``"science fiction (sci-fi)"`` stays."""
    while text.startswith("(") and text.endswith(")") and _balance(text[1:-1]) == text[1:-1]:
        text = text[1:-1].strip()
    return text


def clean_phrase(piece: str) -> str:
    """Strip numbering, bullets, quotes, emphasis, a leading ``interests:`` and trailing punctuation; balance
    parentheses; lower-case."""
    text = " ".join(_EMPHASIS.sub("", piece).split())
    for _ in range(4):  # "1. Interests: - 'fantasy'" needs a few passes
        before = text
        text = _NUMBERING.sub("", text)
        text = _LEAD.sub("", text)
        text = _ETC.sub("", text)
        text = _unwrap(text.strip().strip(_QUOTES).strip().rstrip(_TRAILING).strip())
        if text == before:
            break
    if text.lower().startswith("and "):
        text = text[4:]
    return _balance(text).lower()


def _sentence_phrases(text: str, split_and: bool) -> List[str]:
    """One cleaned piece → its phrases, without sentence lead-ins; ``X and Y`` split when ``split_and``."""
    text = _LEAD.sub("", _NUMBERING.sub("", _EMPHASIS.sub("", text).strip()))  # "2. The book is: ..." first
    explained = _EXPLAINED.match(text)
    if explained and len(explained.group(1).split()) <= 5:  # "1. **Fantasy**: the user likes dragons"
        text = explained.group(1)
    text = clean_phrase(text)
    stripped = text
    for pattern in (_SENTENCE_LEAD, _MIX, _TOPIC_NOUN, _MIX, _INTRO):
        stripped = pattern.sub("", stripped, count=1)
    split_and = split_and or stripped != text
    parts = [stripped]
    match = _AND.match(stripped) if split_and else None
    if match:
        parts = [match.group(1), match.group(2)]
    out = []
    for part in parts:
        part = clean_phrase(_GENERIC_TAIL.sub("", part.strip()))
        if part:
            out.append(part)
    return out


def _split_outside_parentheses(text: str) -> List[str]:
    """Split on commas and semicolons at parenthesis depth 0; a piece with an unclosed ``(`` is split as if it
    had none (small models open parentheses they never close)."""
    if "(" not in text:
        return _SOFT.split(text)
    out: List[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and ch in ",;":
            out.append(text[start:i])
            start = i + 1
    tail = text[start:]
    if depth > 0:
        out.extend(_SOFT.split(tail))
    else:
        out.append(tail)
    return out


def split_answer(text: str) -> List[List[str]]:
    """The raw pieces of an answer, grouped by line or sentence (each group is one comma list)."""
    body = _LEAD.sub("", text.strip(), count=1)
    groups: List[List[str]] = []
    for line in _HARD.split(body):
        for sentence in _sentences(line):
            pieces = [p for p in _split_outside_parentheses(sentence) if p.strip()]
            if pieces:
                groups.append(pieces)
    return groups


def _sentences(line: str) -> List[str]:
    """``line`` split at sentence ends outside parentheses ("Cetaganda (Bujold, Lois. Vorkosigan.)" is one)."""
    out: List[str] = []
    for sentence in _SENTENCE_END.split(line):
        if out and out[-1].count("(") > out[-1].count(")"):
            out[-1] += " " + sentence
        else:
            out.append(sentence)
    return out


def _phrases_of(text: str, phrases: List[str], seen: set, max_phrases: int, min_chars: int,
                max_chars: int) -> None:
    """Append the phrases of free text ``text`` to ``phrases`` (at most ``max_phrases`` in all)."""
    for group in split_answer(text):
        for index, piece in enumerate(group):
            if len(piece) > 4 * max_chars and " " in piece.strip():  # a runaway piece holds no phrase
                continue
            for phrase in _sentence_phrases(piece, split_and=len(group) > 1 and index == len(group) - 1):
                _keep(phrases, seen, phrase, min_chars, max_chars)
                if len(phrases) == max_phrases:
                    return


def _keep(phrases: List[str], seen: set, phrase: str, min_chars: int, max_chars: int) -> None:
    if phrase in _FILLER or phrase in seen:
        return
    if _CUT_SHORT.match(phrase):
        return
    if min_chars <= len(phrase) <= max_chars and any(ch.isalnum() for ch in phrase):
        seen.add(phrase)
        phrases.append(phrase)


def parse_interests(text: Optional[str], max_phrases: int = MAX_PHRASES, min_chars: int = MIN_CHARS,
                    max_chars: int = MAX_CHARS) -> ParsedAnswer:
    """Split a free-text answer into at most ``max_phrases`` interest phrases (rules in the module docstring).

    Drops pieces outside ``min_chars..max_chars`` characters; removes duplicates keeping the first.
    Never raises; ``ParsedAnswer.reason`` says why an answer gave nothing.
    """
    raw = "" if text is None else str(text)
    if not raw.strip():
        return ParsedAnswer((), raw, "empty answer")
    phrases: List[str] = []
    seen: set = set()
    _phrases_of(raw, phrases, seen, max_phrases, min_chars, max_chars)
    if not phrases:
        return ParsedAnswer((), raw, f"no phrase of {min_chars}..{max_chars} characters in the answer")
    return ParsedAnswer(tuple(phrases), raw)


def parse_structured(text: Optional[str], max_phrases: int = MAX_PHRASES, min_chars: int = MIN_CHARS,
                     max_chars: int = MAX_CHARS, key: str = "interests") -> Optional[ParsedAnswer]:
    """Phrases of a JSON answer ``{"interests": ["...", ...]}`` (or a bare JSON list of strings); ``None`` when
    ``text`` is not such JSON (the caller then uses :func:`parse_interests`).

    Each string is read like free text (small models put a comma list, or a title with a trailing comma, in
    one string), kept within ``min_chars..max_chars`` and de-duplicated; a valid JSON answer whose strings are
    all unusable is a failure with ``structured=True``.
    """
    raw = "" if text is None else str(text)
    stripped = raw.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        data: Any = json.loads(stripped, strict=False)  # small models put raw newlines inside strings
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        data = data.get(key)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        return None
    phrases: List[str] = []
    seen: set = set()
    for item in data:
        _phrases_of(item, phrases, seen, max_phrases, min_chars, max_chars)
        if len(phrases) == max_phrases:
            break
    if not phrases:
        return ParsedAnswer((), raw, f"no phrase of {min_chars}..{max_chars} characters in the JSON answer",
                            structured=True)
    return ParsedAnswer(tuple(phrases), raw, structured=True)


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _salvage_json(text: str) -> Optional[str]:
    """The complete string literals of a JSON answer cut short (``max_tokens``), one a line; else ``None``."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    strings = []
    for match in _JSON_STRING.finditer(stripped):
        try:
            value = json.loads(f'"{match.group(1)}"')
        except ValueError:
            continue
        after = stripped[match.end():match.end() + 3].lstrip()
        if not after.startswith(":"):  # not an object key
            strings.append(str(value))
    return "\n".join(strings) if strings else None


def parse_answer(text: Optional[str], max_phrases: int = MAX_PHRASES, min_chars: int = MIN_CHARS,
                 max_chars: int = MAX_CHARS) -> ParsedAnswer:
    """:func:`parse_structured` when ``text`` is the JSON the structured mode asks for, else
    :func:`parse_interests` (a JSON answer cut short is read from its complete strings, ``structured=False``)."""
    structured = parse_structured(text, max_phrases, min_chars, max_chars)
    if structured is not None:
        return structured
    raw = "" if text is None else str(text)
    salvaged = _salvage_json(raw)
    if salvaged is not None:
        parsed = parse_interests(salvaged, max_phrases, min_chars, max_chars)
        return ParsedAnswer(parsed.phrases, raw, parsed.reason)
    return parse_interests(text, max_phrases, min_chars, max_chars)

