"""Prompt templates and request building."""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from cikg.data import Dataset
from cikg.errors import ConfigError
from cikg.llm import CIKGREC_INTERESTS, LLMConfig, PromptTemplate, build_requests
from cikg.llm.prompts import (
    CIKGREC_FEWSHOT,
    FEWSHOT_POOL,
    INTEREST_TEMPLATES,
    interest_template,
    normalise_title,
)


def small_dataset() -> Dataset:
    # user 0: items 0..4 (item 2 untitled); user 1: only untitled item 2; user 2: 40 items cycling 0..4
    users = [0] * 5 + [1] + [2] * 40
    items = [0, 1, 2, 3, 4] + [2] + [i % 5 for i in range(40)]
    train = torch.tensor([users, items])
    return Dataset(name="tiny", n_users=3, n_items=5, train=train, test=torch.tensor([[0], [1]]),
                   user_ids=["u0", "u1", "u2"], item_text=["Dune", "Emma  Woodhouse", None, "Ulysses", " "])


def test_template_renders_and_lists_placeholders():
    template = PromptTemplate("t", "3", "about {domain}", "[{titles}] for {domain}")
    assert template.placeholders == ("domain", "titles")
    messages = template.render(domain="movies", titles="A, B")
    assert messages == [{"role": "system", "content": "about movies"},
                        {"role": "user", "content": "[A, B] for movies"}]
    with pytest.raises(ConfigError, match="titles"):
        template.render(domain="books")


def test_cikgrec_prompt_says_what_the_paper_asks():
    system = CIKGREC_INTERESTS.render(domain="books", titles="x")[0]["content"]
    assert "books" in system and "five" in system and "comma" in system and "no explanation" in system.lower()


def test_build_requests_uses_titles_of_last_items_and_skips_untitled_users(caplog):
    ds = small_dataset()
    with caplog.at_level(logging.WARNING):
        requests, skipped = build_requests(ds, history_len=30, domain="books")
    assert skipped == [1] and "u1" in caplog.text
    assert [r.user for r in requests] == [0, 2]
    assert requests[0].message_dicts[1]["content"] == "[Dune, Emma Woodhouse, Ulysses]"
    assert requests[0].n_titles == 3 and requests[0].user_id == "u0"
    # user 2 has 40 items: only the last 30 (positions 10..39 -> items cycle) are shown, untitled ones dropped
    assert requests[1].n_titles == 30 - 6 - 6
    few, _ = build_requests(ds, users=[2], history_len=2)
    assert few[0].message_dicts[1]["content"] == "[Ulysses]"  # last two items are 3 and 4 (blank title)


def test_template_version_changes_the_cache_key():
    ds = small_dataset()
    v2 = PromptTemplate(CIKGREC_INTERESTS.name, "2", CIKGREC_INTERESTS.system, CIKGREC_INTERESTS.user)
    (r1, *_), _ = build_requests(ds, CIKGREC_INTERESTS)
    (r2, *_), _ = build_requests(ds, v2)
    config = LLMConfig(model="m", base_url="http://127.0.0.1:1/v1")
    assert r1.messages == r2.messages and config.key_of(r1) != config.key_of(r2)
    assert config.key_of(r1) != LLMConfig(model="m", base_url="http://127.0.0.1:1/v1", seed=1).key_of(r1)


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="domain"):
        build_requests(small_dataset(), domain="songs")
    with pytest.raises(ConfigError, match="history_len"):
        build_requests(small_dataset(), history_len=0)


def test_real_book_crossing_requests(bookcrossing):
    requests, skipped = build_requests(bookcrossing, users=range(500))
    assert len(requests) + len(skipped) == 500
    for r in requests[:50]:
        titles = [bookcrossing.item_text[i] for i in bookcrossing.history(r.user, last=30)
                  if bookcrossing.item_text[i]]
        assert r.n_titles == len(titles) <= 30
        assert r.message_dicts[1]["content"].startswith("[") and r.message_dicts[1]["content"].endswith("]")


def test_fewshot_prompt_puts_two_worked_examples_before_the_users_titles():
    history = ["Dune", "Emma"]
    messages = CIKGREC_FEWSHOT.render(domain="books", titles=", ".join(history), exclude_titles=history)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    zero = CIKGREC_INTERESTS.render(domain="books", titles=", ".join(history))
    assert messages[0] == zero[0] and messages[-1] == zero[-1] == {"role": "user", "content": "[Dune, Emma]"}
    books = dict(FEWSHOT_POOL)["books"]
    assert messages[1]["content"] == "[" + ", ".join(books[0].titles) + "]"
    assert messages[2]["content"] == ", ".join(books[0].interests)
    assert messages[3]["content"] == "[" + ", ".join(books[1].titles) + "]"
    movies = CIKGREC_FEWSHOT.render(domain="movies", titles="Heat", exclude_titles=["Heat"])
    assert movies[1]["content"] == "[" + ", ".join(dict(FEWSHOT_POOL)["movies"][0].titles) + "]"
    items = CIKGREC_FEWSHOT.render(domain="items", titles="x", exclude_titles=["x"])
    assert items[1:5] == messages[1:5]  # items use the books pool


def test_fewshot_examples_never_show_the_users_own_items():
    books = dict(FEWSHOT_POOL)["books"]
    # the user holds a title of example 0 (spelled differently) and one of example 2
    history = ["the HOBBIT", "Cosmos", "Emma"]
    picked = CIKGREC_FEWSHOT.pick_examples("books", history)
    assert picked == [books[1], books[3]]
    messages = CIKGREC_FEWSHOT.render(domain="books", titles=", ".join(history), exclude_titles=history)
    shown = " ".join(m["content"] for m in messages[1:-1])
    assert "Hobbit" not in shown and "Cosmos" not in shown
    # a user who holds a title of every example still gets two (a fixed pool cannot do better)
    every = [ex.titles[0] for ex in books]
    assert len(CIKGREC_FEWSHOT.pick_examples("books", every)) == 2
    assert CIKGREC_INTERESTS.pick_examples("books", history) == []


def test_fewshot_requests_on_real_dbbook_hold_no_history_title(dbbook):
    requests, _ = build_requests(dbbook, CIKGREC_FEWSHOT, users=range(dbbook.n_users))
    books = dict(FEWSHOT_POOL)["books"]
    replaced = 0
    for r in requests:
        picked = CIKGREC_FEWSHOT.pick_examples("books", r.titles)
        assert len(picked) == 2 and not any(ex.clashes(r.titles) for ex in picked)
        assert [m["content"] for m in r.message_dicts[1:5]] == [
            text for ex in picked for text in ("[" + ", ".join(ex.titles) + "]", ", ".join(ex.interests))]
        replaced += picked != list(books[:2])
    # real users do hold the pool's classics (Pride and Prejudice, The Hobbit...): the swap is exercised
    print(f"{replaced} of {len(requests)} dbbook2014 users got a replacement example")
    assert 0 < replaced < len(requests)


def test_fewshot_template_is_versioned_and_selectable():
    assert CIKGREC_FEWSHOT.version and CIKGREC_FEWSHOT.name != CIKGREC_INTERESTS.name
    assert set(INTEREST_TEMPLATES) == {"cikgrec-interests", "cikgrec-interests-fewshot"}
    assert interest_template("cikgrec-interests-fewshot") is CIKGREC_FEWSHOT
    with pytest.raises(ConfigError, match="known: cikgrec-interests"):
        interest_template("nope")
    ds = small_dataset()
    (zero, *_), _ = build_requests(ds, CIKGREC_INTERESTS)
    (few, *_), _ = build_requests(ds, CIKGREC_FEWSHOT)
    bumped = dataclasses.replace(CIKGREC_FEWSHOT, version="2")
    (few2, *_), _ = build_requests(ds, bumped)
    config = LLMConfig(model="m", base_url="http://127.0.0.1:1/v1")
    assert len({config.key_of(zero), config.key_of(few), config.key_of(few2)}) == 3
    assert few.titles == ("Dune", "Emma Woodhouse", "Ulysses") and few.schema == CIKGREC_INTERESTS.schema
    books = dict(FEWSHOT_POOL)["books"]
    assert few.example_titles == books[0].titles + books[1].titles and zero.example_titles == ()
    assert few.prompt_titles == few.titles + few.example_titles and zero.prompt_titles == zero.titles
    with pytest.raises(ConfigError, match="2 shots"):
        PromptTemplate("t", "1", "s", "u", examples=(("books", FEWSHOT_POOL[0][1][:1]),), shots=2)


def test_normalise_title():
    assert normalise_title("  The Hobbit: or There and Back Again ") == "hobbit or there and back again"
    assert normalise_title("Les Misérables") == "les miserables"
    assert normalise_title("A") == "a" and normalise_title("") == ""
