"""The echo filter: an answer phrase that repeats a title of the user's prompt is not an interest.

Small models often answer with the titles they were shown ("The Dragon Token (Dragon Star, Book 2)"). A
phrase is an *echo* of one of its user's prompt titles when, after :func:`~cikg.llm.prompts.normalise_title`
(case, accents, punctuation, a leading article), it

* equals the title, or
* has a similarity ratio ``>= threshold`` (0.85) with it (``rapidfuzz.fuzz.ratio`` when rapidfuzz is
  installed, else ``difflib.SequenceMatcher.ratio``), or
* contains the title, or is contained in it, on word boundaries, the shorter of the two having at least
  ``min_words`` (3) words ("harry potter und der schrecken" in "harry potter und der schrecken des ...").

Vectorised for ~10^5 phrases: every (phrase, title of the same user) pair gets a cheap upper bound of the
ratio from bags of hashed characters (numpy, in chunks); only pairs whose bound reaches the threshold, or
whose shorter side's bag fits in the longer's (a containment candidate), are compared as strings.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Sequence, Tuple

import numpy as np

from .. import checks
from .prompts import normalise_title

log = logging.getLogger(__name__)

_BUCKETS = 64
_CHUNK = 100_000


@dataclass(frozen=True)
class EchoConfig:
    """Settings of the echo filter.

    Args:
        threshold: similarity ratio (0..1) at or above which a phrase is an echo of a title.
        min_words: the shorter of phrase and title needs this many words for containment to count.
        keep: keep echoes among the phrases (they are still flagged and counted).
    """

    threshold: float = 0.85
    min_words: int = 3
    keep: bool = False
    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.share("threshold", expected="a similarity ratio"), checks.positive_int("min_words"),
        checks.boolean("keep"))

    def __post_init__(self) -> None:
        checks.check(self, prefix="echo")


DEFAULT_ECHO = EchoConfig()
"""The default filter: threshold 0.85, containment from 3 words, echoes dropped."""


def _ratio_function() -> Tuple[str, Callable[[str, str], float]]:
    try:
        from rapidfuzz import fuzz
    except ImportError:
        return "difflib", lambda a, b: difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    return "rapidfuzz", lambda a, b: fuzz.ratio(a, b) / 100.0


def _bags(texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``(counts[n, 64] int16, lengths[n] int32)``: hashed character counts of each text."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    counts = np.zeros((len(texts), _BUCKETS), dtype=np.int16)
    if lengths.sum():
        codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        rows = np.repeat(np.arange(len(texts)), lengths)
        np.add.at(counts, (rows, codes % _BUCKETS), 1)
    return counts, lengths.astype(np.int32)


def echo_mask(phrases: Sequence[str], owners: Sequence[int], titles: Sequence[Sequence[str]],
              config: EchoConfig = DEFAULT_ECHO) -> np.ndarray:
    """Which phrases echo a title of their owner.

    Args:
        phrases: ``n`` phrases.
        owners: ``n`` indices into ``titles`` (the prompt each phrase answers).
        titles: per prompt, the titles it showed.

    Returns:
        ``bool[n]``.
    """
    n = len(phrases)
    owners_arr = np.asarray(owners, dtype=np.int64).reshape(-1)
    if owners_arr.size != n:
        raise ValueError(f"{n} phrases but {owners_arr.size} owners")
    if n == 0:
        return np.zeros(0, dtype=bool)
    # vocabularies of normalised phrases and titles
    vocab: Dict[str, int] = {}
    phrase_ids = np.fromiter((vocab.setdefault(normalise_title(p), len(vocab)) for p in phrases), np.int64, n)
    per_prompt = [len(t) for t in titles]
    title_ids = np.fromiter((vocab.setdefault(normalise_title(t), len(vocab)) for ts in titles for t in ts),
                            np.int64, sum(per_prompt))
    texts = list(vocab)
    counts, lengths = _bags(texts)
    words = np.fromiter((len(t.split()) for t in texts), np.int32, len(texts))
    # every (phrase, title of its prompt) pair
    n_titles = np.asarray(per_prompt, dtype=np.int64)[owners_arr]
    offsets = np.concatenate([[0], np.cumsum(per_prompt)])[owners_arr]
    pair_phrase = np.repeat(np.arange(n), n_titles)
    starts = np.repeat(offsets - np.cumsum(n_titles) + n_titles, n_titles)
    pair_title = title_ids[starts + np.arange(pair_phrase.size)]
    pair_text = phrase_ids[pair_phrase]
    echo = np.zeros(n, dtype=bool)
    matcher_name, ratio = _ratio_function()
    compared = 0
    for lo in range(0, pair_phrase.size, _CHUNK):
        a, b = pair_text[lo:lo + _CHUNK], pair_title[lo:lo + _CHUNK]
        la, lb = lengths[a].astype(np.int64), lengths[b].astype(np.int64)
        shared = np.minimum(counts[a], counts[b]).sum(axis=1, dtype=np.int64)
        usable = (la > 0) & (lb > 0)
        exact = usable & (a == b)
        fuzzy = usable & ~exact & (2 * shared >= config.threshold * (la + lb))
        shorter_words = np.where(la <= lb, words[a], words[b])
        contained = usable & ~exact & (shorter_words >= config.min_words) & (shared == np.minimum(la, lb))
        echo[pair_phrase[lo:lo + _CHUNK][exact]] = True
        candidates = np.flatnonzero(fuzzy | contained)
        for i in candidates:  # only the pairs the bounds leave open
            phrase_index = pair_phrase[lo + i]
            if echo[phrase_index]:
                continue
            x, y = texts[a[i]], texts[b[i]]
            compared += 1
            if contained[i] and (f" {x} " in f" {y} " or f" {y} " in f" {x} "):
                echo[phrase_index] = True
            elif fuzzy[i] and ratio(x, y) >= config.threshold:
                echo[phrase_index] = True
    log.debug("echo filter: %d pair(s), %d compared as strings (%s), %d echo(es)", pair_phrase.size, compared,
              matcher_name, int(echo.sum()))
    return echo


def filter_echoes(records: List[Dict[str, Any]], titles: Sequence[Sequence[str]],
                  config: EchoConfig = DEFAULT_ECHO) -> Dict[str, Any]:
    """Flag (and unless ``config.keep``, drop) the echoes in the ``phrases`` of answer records, in place.

    Args:
        records: dicts with ``phrases`` (list of str) and ``status``; one per prompt.
        titles: per record, the titles its prompt showed.

    Each record gets ``echoes`` (its phrases that echo a title). A record with status ``ok`` whose phrases
    are all echoes and dropped gets status ``echo`` and a reason.

    Returns:
        the counts written in the run summary: ``phrases`` (before the filter), ``echoes``, ``rate``,
        ``users_with_echo``, ``users_only_echo``, ``dropped`` and the settings.
    """
    if len(records) != len(titles):
        raise ValueError(f"{len(records)} records but {len(titles)} title lists")
    lengths = [len(r["phrases"]) for r in records]
    flat = [p for r in records for p in r["phrases"]]
    owners = np.repeat(np.arange(len(records)), lengths)
    mask = echo_mask(flat, owners, titles, config)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    users_with, users_only = 0, 0
    for i, record in enumerate(records):
        flags = mask[bounds[i]:bounds[i + 1]]
        record["echoes"] = [p for p, f in zip(record["phrases"], flags, strict=True) if f]
        if not record["echoes"]:
            continue
        users_with += 1
        users_only += len(record["echoes"]) == lengths[i]
        if not config.keep:
            record["phrases"] = [p for p, f in zip(record["phrases"], flags, strict=True) if not f]
            if not record["phrases"] and record.get("status") == "ok":
                record["status"] = "echo"
                record["reason"] = "every phrase repeats a title of the prompt (echo filter)"
    n_echo = int(mask.sum())
    stats = {"phrases": len(flat), "echoes": n_echo, "rate": n_echo / len(flat) if flat else 0.0,
             "users_with_echo": users_with, "users_only_echo": users_only, "dropped": not config.keep,
             "threshold": config.threshold, "min_words": config.min_words, "matcher": _ratio_function()[0]}
    log.info("echo filter: %d of %d phrase(s) repeat a prompt title (%.1f%%), %s", n_echo, len(flat),
             100 * stats["rate"], "kept (flagged)" if config.keep else "dropped")
    return stats
