"""Interest-answer parsing: known shapes of real answers, and properties on arbitrary text."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cikg.errors import ConfigError
from cikg.llm.echo import EchoConfig, echo_mask, filter_echoes
from cikg.llm.parse import (
    _CUT_SHORT,
    _FILLER,
    MAX_CHARS,
    MAX_PHRASES,
    MIN_CHARS,
    parse_answer,
    parse_interests,
    parse_structured,
)

# measured on tests/fixtures/smollm2_answers.jsonl (280 answers; see test_fixture_of_real_smollm2_answers_parses)
PARSED_SHARE = 0.97        # measured 0.989: answers with >= 1 phrase
STRUCTURED_SHARE = 0.92    # measured 0.950 of the json_object answers are valid JSON (the rest cut by max_tokens)


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
@example(words=["AAA", "THE"], separator=", ")  # found in CI: a lone article is dropped
@example(words=["None", "Fantasy"], separator="\n- ")
def test_clean_lists_round_trip(words, separator):
    parsed = parse_interests(separator.join(words))
    # every word comes back, lower-cased and deduplicated, except filler ("none", "etc") and a lone article or
    # an article and one letter ("the", "an x": a title cut short), which are no interest
    normalised = dict.fromkeys(" ".join(w.split()).lower() for w in words)
    expected = [p for p in normalised if p not in _FILLER and not _CUT_SHORT.match(p)][:MAX_PHRASES]
    assert list(parsed.phrases) == expected


# --------------------------------------------------------------------------------- what small models write
@pytest.mark.parametrize("text, expected", [
    # commas inside parentheses do not split; an unclosed parenthesis is removed
    ("The Dragon Token (Dragon Star, Book 2), The Hobbit", ["the dragon token (dragon star, book 2)", "the hobbit"]),
    ("Science fiction (space opera, cyberpunk); horror", ["science fiction (space opera, cyberpunk)", "horror"]),
    ("The Dragon Token (Dragon Star, Book 2", ["the dragon token dragon star", "book 2"]),
    ("(Fantasy), (romance)", ["fantasy", "romance"]),
    # lead-ins ending in a colon
    ("The book is: Harry Potter und der Schrecken, Fantasy", ["harry potter und der schrecken", "fantasy"]),
    ("Interests: fantasy, horror", ["fantasy", "horror"]),
    ("Here are the user's top interests: fantasy, romance", ["fantasy", "romance"]),
    ("1. The book is: Dune\n2. Interests: space", ["dune", "space"]),
    ("1. Fantasy\n2. The book is: Harry Potter und der Schrecken", ["fantasy", "harry potter und der schrecken"]),
    # numbered and bulleted lists, emphasis, "X: explanation"
    ("1. Fantasy\n2. Science fiction (sci-fi)\n3. Horror", ["fantasy", "science fiction (sci-fi)", "horror"]),
    ("\u2022 Romance \u2022 Mystery \u2022 Thrillers", ["romance", "mystery", "thrillers"]),
    ("1. **Fantasy**: the user likes dragons\n2. **Romance**: love stories are common", ["fantasy", "romance"]),
    ("Fantasy, romance, etc.", ["fantasy", "romance"]),
    # sentences
    ("a mix of fantasy, sci-fi and horror genres", ["fantasy", "sci-fi", "horror"]),
    ("The user enjoys a mix of fantasy, sci-fi and horror genres.", ["fantasy", "sci-fi", "horror"]),
    ("The user likes books about history and politics. They also enjoy cooking.", ["history", "politics", "cooking"]),
    ("The user's interests include genres such as mystery, thriller and romance", ["mystery", "thriller", "romance"]),
    # "and" inside a title is not a list
    ("Harry Potter and the Sorcerer's Stone, The Hobbit", ["harry potter and the sorcerer's stone", "the hobbit"]),
    ("Pride and Prejudice", ["pride and prejudice"]),
])
def test_parses_what_small_models_write(text, expected):
    parsed = parse_interests(text)
    assert list(parsed.phrases) == expected
    assert not parsed.structured


@pytest.mark.parametrize("text, expected, structured", [
    ('{"interests": ["Fantasy", "Sci-Fi", "horror"]}', ["fantasy", "sci-fi", "horror"], True),
    ('{"interests" :[ "The Hobbit", "Dune (Dune Chronicles, Book 1)"]}', ["the hobbit", "dune (dune chronicles, book 1)"],
     True),
    ('["Cooking", "travel", "cooking"]', ["cooking", "travel"], True),
    ('{"interests": ["a", "b", "c", "d", "e", "f", "g", "h"]}', [], True),  # all too short: a structured failure
    ('{"interests": ["Fantasy", "Sci-Fi", "hor', ["fantasy", "sci-fi"], False),  # cut by max_tokens: salvaged
    ('{"genres": "fantasy"}', ["fantasy"], False),  # not the schema: its strings are read as free text
    ("Fantasy, Mystery", ["fantasy", "mystery"], False),
    # recorded SmolLM2 shapes: a raw newline inside a string, a comma list or a cut title inside one string,
    # a bracketed free-text list cut short
    ('{"interests" : [ "The Curious Incident of the Dog in the\nN" ] }', ["the curious incident of the dog in the"],
     True),
    ('{"interests":[ "Hocus Pocus, In the Beginning, Immortal", "Ethan Frome (Dover Thrift Editions), A"]}',
     ["hocus pocus", "in the beginning", "immortal", "ethan frome (dover thrift editions)"], True),
    ('{"interests": [ "The Scarlet Letter", "One Day in the Life of Ivan Denisovich, " ]}',
     ["the scarlet letter", "one day in the life of ivan denisovich"], True),
    ('{"interests": [ "The Smoke Jumper, The T" ,"Three Fates, The', ["the smoke jumper"], False),  # complete strings
    ("[The Jedi (Star Wars), So You Want to Be a Wizard, The Invasion (Animorphs, No 1), Magic Kingdom (Magic",
     ["the jedi (star wars)", "so you want to be a wizard", "the invasion (animorphs, no 1)", "magic kingdom magic"],
     False),
])
def test_structured_answers_and_their_fallback(text, expected, structured):
    parsed = parse_answer(text)
    assert list(parsed.phrases) == expected and parsed.structured is structured and parsed.raw == text
    assert parse_structured(text) is None or structured


# --------------------------------------------------------------------------------- echo filter
def test_echo_mask_matches_exact_fuzzy_and_contained_titles_of_the_same_user():
    titles = [["The Dragon Token (Dragon Star, Book 2)", "Fantasy Lover", "Harry Potter und der Schrecken des Krieges"],
              ["Dune"]]
    phrases = ["the dragon token (dragon star, book 2)",  # exact after normalisation
               "the dragon token dragon star book",         # fuzzy: ratio >= 0.85
               "harry potter und der schrecken",            # contained, 5 words
               "fantasy",                                   # a word of a title: not an echo
               "dune",                                      # a title of the *other* user
               "dune"]                                      # its own user's title
    owners = [0, 0, 0, 0, 0, 1]
    assert echo_mask(phrases, owners, titles).tolist() == [True, True, True, False, False, True]
    assert echo_mask(phrases, owners, titles, EchoConfig(min_words=6)).tolist()[2] is False
    assert echo_mask([], [], titles).shape == (0,)
    with pytest.raises(ValueError, match="owners"):
        echo_mask(["a"], [0, 1], titles)


def test_filter_echoes_drops_flags_and_counts():
    records = [{"phrases": ["the hobbit", "fantasy"], "status": "ok"},
               {"phrases": ["dune"], "status": "ok"},
               {"phrases": [], "status": "failed"}]
    titles = [["The Hobbit"], ["Dune"], ["Emma"]]
    kept = [dict(r, phrases=list(r["phrases"])) for r in records]
    stats = filter_echoes(records, titles)
    assert [r["phrases"] for r in records] == [["fantasy"], [], []]
    assert [r["echoes"] for r in records] == [["the hobbit"], ["dune"], []]
    assert [r["status"] for r in records] == ["ok", "echo", "failed"] and "echo filter" in records[1]["reason"]
    assert stats["phrases"] == 3 and stats["echoes"] == 2 and stats["rate"] == pytest.approx(2 / 3)
    assert stats["users_with_echo"] == 2 and stats["users_only_echo"] == 1 and stats["dropped"]
    stats = filter_echoes(kept, titles, EchoConfig(keep=True))
    assert [r["phrases"] for r in kept] == [["the hobbit", "fantasy"], ["dune"], []] and not stats["dropped"]
    assert [r["status"] for r in kept] == ["ok", "ok", "failed"] and stats["echoes"] == 2
    with pytest.raises(ConfigError, match="threshold"):
        EchoConfig(threshold=0)


def test_echo_filter_is_vectorised_for_1e5_phrases():
    rng = random.Random(0)
    words = ["dragon", "star", "token", "magic", "war", "love", "city", "night", "king", "river", "stone", "book"]
    n_users = 20_000
    titles = [[" ".join(rng.choices(words, k=rng.randint(1, 6))) + f" {u}-{t}" for t in range(30)]
              for u in range(n_users)]
    phrases, owners = [], []
    for u in range(n_users):
        for k in range(5):
            phrases.append(titles[u][k] if k == 0 else " ".join(rng.choices(words, k=2)))
            owners.append(u)
    started = time.perf_counter()
    mask = echo_mask(phrases, owners, titles)
    elapsed = time.perf_counter() - started
    assert mask.reshape(n_users, 5)[:, 0].all()  # every echoed title found
    assert mask.mean() < 0.5
    assert elapsed < 30, f"{elapsed:.1f} s for 1e5 phrases x 30 titles"


# --------------------------------------------------------------------------------- real SmolLM2 answers
FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_answers.jsonl"


def _echo_rate(rows, parsed) -> float:
    phrases = [ph for p in parsed for ph in p.phrases]
    owners = [i for i, p in enumerate(parsed) for _ in p.phrases]
    return float(echo_mask(phrases, owners, [r["titles"] + r["example_titles"] for r in rows]).mean())


def test_fixture_of_real_smollm2_answers_parses():
    """Answers recorded from the bundled server by scripts/record_llm_answers.py (free text and json_object,
    zero- and few-shot, dbbook2014 and book-crossing)."""
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 200
    assert {r["dataset"] for r in rows} == {"dbbook2014", "book-crossing"}
    assert {r["mode"] for r in rows} == {"off", "json_object"}
    parsed = [parse_answer(r["raw"]) for r in rows]
    assert [p.structured for p in parsed] == [r["structured"] for r in rows]  # as recorded
    free = [p for p, r in zip(parsed, rows, strict=True) if r["mode"] == "off"]
    structured = [p for p, r in zip(parsed, rows, strict=True) if r["mode"] == "json_object"]
    assert not any(p.structured for p in free)
    assert sum(p.structured for p in structured) >= STRUCTURED_SHARE * len(structured)
    assert sum(p.ok for p in parsed) >= PARSED_SHARE * len(parsed)
    phrases = [ph for p in parsed for ph in p.phrases]
    assert not any(ph.startswith(("the book is", "interests", "here are")) for ph in phrases)
    assert all(ph.count("(") == ph.count(")") for ph in phrases)
    assert all(MIN_CHARS <= len(ph) <= MAX_CHARS and ph == ph.lower() for ph in phrases)
    # the echo rate: SmolLM2-135M mostly repeats titles with the paper's prompt; two worked examples cut that
    groups = {}
    for key in {(r["mode"], r["template"]) for r in rows}:
        chosen = [(r, p) for r, p in zip(rows, parsed, strict=True) if (r["mode"], r["template"]) == key]
        groups[key] = _echo_rate([r for r, _ in chosen], [p for _, p in chosen])
    zero_free, few_free = groups[("off", "cikgrec-interests")], groups[("off", "cikgrec-interests-fewshot")]
    assert zero_free > 0.8 and few_free < 0.1, groups  # measured 0.884 and 0.016
    assert 0.5 < _echo_rate(rows, parsed) < 0.8  # measured 0.690 over all 280 answers (see docs/llm.md)
