"""Interest-answer parsing: known shapes of real answers, and properties on arbitrary text."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cikg.llm.parse import MAX_CHARS, MAX_PHRASES, MIN_CHARS, parse_interests


@pytest.mark.parametrize("text, expected", [
    ("Fantasy, Mystery, romance.", ["fantasy", "mystery", "romance"]),
    ("1. **Fantasy**\n2. Mystery\n3) Science Fiction", ["fantasy", "mystery", "science fiction"]),
    ("Interests: history; war; politics", ["history", "war", "politics"]),
    ("The user's top interests are: cooking, travel", ["cooking", "travel"]),
    ("- Epic fantasy\n- \"Detective stories\"\n* 'Space opera'", ["epic fantasy", "detective stories", "space opera"]),
    ("Fantasy, fantasy, FANTASY , horror", ["fantasy", "horror"]),
    ("a, b, ok, c, horror, sci-fi, crime, drama, poetry", ["ok", "horror", "sci-fi", "crime", "drama"]),
    ("[Gardening, Cooking]", ["gardening", "cooking"]),
])
def test_parses_common_answer_shapes(text, expected):
    parsed = parse_interests(text)
    assert list(parsed.phrases) == expected
    assert parsed.ok and parsed.reason is None and parsed.raw == text


@pytest.mark.parametrize("text, reason", [
    ("", "empty answer"), ("   \n ", "empty answer"), (None, "empty answer"),
    ("x" * 60, "no phrase"), ("a, b, ., -, !!", "no phrase"),
])
def test_answers_without_a_phrase_fail_and_keep_raw_text(text, reason):
    parsed = parse_interests(text)
    assert not parsed.ok and parsed.phrases == ()
    assert reason in parsed.reason
    assert parsed.raw == ("" if text is None else text)


def test_length_bounds_are_inclusive():
    parsed = parse_interests("ab, " + "y" * MAX_CHARS + ", " + "z" * (MAX_CHARS + 1))
    assert parsed.phrases == ("ab", "y" * MAX_CHARS)


def test_enormous_answer_is_bounded():
    parsed = parse_interests("Gardening, " + "word " * 200_000 + ", Cooking, travel")
    assert parsed.phrases == ("gardening", "cooking", "travel")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_never_raises_and_respects_bounds(text):
    parsed = parse_interests(text)
    assert len(parsed.phrases) <= MAX_PHRASES
    assert all(MIN_CHARS <= len(p) <= MAX_CHARS for p in parsed.phrases)
    assert len(set(parsed.phrases)) == len(parsed.phrases)
    assert all(p == p.lower() and p == " ".join(p.split()) for p in parsed.phrases)
    assert parsed.ok == (parsed.reason is None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z][A-Za-z ]{1,20}[A-Za-z]", fullmatch=True), min_size=1, max_size=8),
       st.sampled_from([", ", "; ", "\n", "\n- ", "\n1. "]))
def test_clean_lists_round_trip(words, separator):
    parsed = parse_interests(separator.join(words))
    expected = list(dict.fromkeys(" ".join(w.split()).lower() for w in words))[:MAX_PHRASES]
    assert list(parsed.phrases) == expected
