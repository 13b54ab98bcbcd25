"""KAR and REKI prompts as template data (:class:`cikg.llm.prompts.PromptTemplate`; the version enters the cache key).

KAR (arXiv 2306.10933, Sec. 3.1) uses *factorization prompting*: the scenario-specific factors that decide
a user's taste in a domain are listed once, then the user-preference reasoning prompt asks the LLM to
reason about the user's history along each factor, and the item factual prompt asks for the item's facts
along the same factors. REKI (arXiv 2408.10520) asks the same questions of a *group* (a cluster of similar
users or items) in its collective extraction.

Placeholders: ``domain`` (plural: books | movies | items), ``item_noun`` (book | movie | item), ``factors``
(comma-separated), ``titles`` (``"; "``-separated), ``title`` (one item), ``n_factors``.
"""
from __future__ import annotations

from typing import Dict, Tuple

from ..llm.prompts import PromptTemplate

DOMAIN_FACTORS: Dict[str, Tuple[str, ...]] = {
    "books": ("genre", "themes", "author and writing style", "era and setting", "target audience",
              "length and complexity"),
    "movies": ("genre", "director", "actors", "era", "mood and tone", "plot", "country of production"),
    "items": ("category", "brand", "quality", "price range", "usage scenario", "target audience"),
}
"""Default factor lists per domain (KAR's scenario-specific factors; override with ``factors=...``)."""

ITEM_NOUN = {"books": "book", "movies": "movie", "items": "item"}

KAR_FACTORS = PromptTemplate(
    name="kar-factors",
    version="1",
    system="You are an expert in {domain} recommendation.",
    user=("List the {n_factors} most important factors that decide whether a user likes a {item_noun}. "
          "Reply with short phrases separated by commas and nothing else."),
)
"""Asked once per domain when no factor list is given (KAR: factors may come from the LLM)."""

KAR_USER_REASONING = PromptTemplate(
    name="kar-user-reasoning",
    version="1",
    system="You are an expert in {domain} recommendation. Answer briefly, one line per factor.",
    user=("Given a user who liked the following {domain}: {titles}. Analyze the user's preferences in terms "
          "of these factors: {factors}. For each factor, say what the user prefers and why."),
)
"""KAR user preference reasoning (one prompt per user, over the last ``history_len`` train items)."""

KAR_ITEM_FACTUAL = PromptTemplate(
    name="kar-item-factual",
    version="1",
    system="You are an expert in {domain}. Answer briefly with facts, one line per factor.",
    user="Introduce the {item_noun} \"{title}\" and describe its attributes in terms of: {factors}.",
)
"""KAR item factual knowledge (one prompt per item)."""

REKI_USER_GROUP = PromptTemplate(
    name="reki-user-group",
    version="1",
    system="You are an expert in {domain} recommendation. Answer briefly, one line per factor.",
    user=("A group of users with similar taste liked the following {domain}: {titles}. Analyze the group's "
          "shared preferences in terms of these factors: {factors}. For each factor, say what they prefer."),
)
"""REKI collective user knowledge (one prompt per user cluster, from a sample of its members)."""

REKI_ITEM_GROUP = PromptTemplate(
    name="reki-item-group",
    version="1",
    system="You are an expert in {domain}. Answer briefly with facts, one line per factor.",
    user=("The following {domain} form a group of similar {domain}: {titles}. Describe what they have in "
          "common in terms of: {factors}."),
)
"""REKI collective item knowledge (one prompt per item cluster, from a sample of its members)."""

TEMPLATES = {t.name: t for t in (KAR_FACTORS, KAR_USER_REASONING, KAR_ITEM_FACTUAL, REKI_USER_GROUP,
                                 REKI_ITEM_GROUP)}

__all__ = ["DOMAIN_FACTORS", "ITEM_NOUN", "KAR_FACTORS", "KAR_ITEM_FACTUAL", "KAR_USER_REASONING",
           "REKI_ITEM_GROUP", "REKI_USER_GROUP", "TEMPLATES"]
