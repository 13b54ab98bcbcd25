"""Prompt templates as data, and the CIKGRec interest-inference requests built from a dataset.

CIKGRec (arXiv 2412.13544, Sec. 3.2) asks an LLM, for each user, for at most five interests given the titles
of the user's last 30 training items. A :class:`PromptTemplate` is a frozen value (name, version, system and
user text with ``{placeholders}``); its ``version`` enters the cache key, so editing a prompt and bumping the
version never serves answers to the old wording.
"""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

log = logging.getLogger(__name__)

Message = Dict[str, str]

DOMAINS = ("books", "movies", "items")


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt with ``str.format`` placeholders in its system and user text.

    Args:
        name: identifier (``cikgrec-interests``).
        version: bumped on every wording change; part of the cache key.
        system: system message text.
        user: user message text.
    """

    name: str
    version: str
    system: str
    user: str

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ConfigError("a prompt template needs a non-empty name and version", key="prompt")

    @property
    def placeholders(self) -> Tuple[str, ...]:
        """Names of the placeholders used by the system and user text, in order of appearance."""
        names: List[str] = []
        for text in (self.system, self.user):
            for _, field_name, _, _ in string.Formatter().parse(text):
                if field_name and field_name not in names:
                    names.append(field_name)
        return tuple(names)

    def render(self, **values: Any) -> List[Message]:
        """Fill the placeholders; returns ``[{"role": "system", ...}, {"role": "user", ...}]``.

        Raises:
            ConfigError: a placeholder has no value.
        """
        missing = [p for p in self.placeholders if p not in values]
        if missing:
            raise ConfigError(f"prompt {self.name!r} v{self.version} needs values for {missing}", key="prompt")
        return [{"role": "system", "content": self.system.format(**values)},
                {"role": "user", "content": self.user.format(**values)}]


CIKGREC_INTERESTS = PromptTemplate(
    name="cikgrec-interests",
    version="1",
    system=("You will be given a list of {domain} that an anonymous user liked. "
            "Reply with at most five of the user's top interests, as short phrases separated by commas. "
            "Give no explanation and nothing else."),
    user="[{titles}]",
)
"""The CIKGRec interest prompt; placeholders ``domain`` (books|movies|items) and ``titles``."""


@dataclass(frozen=True)
class Request:
    """One chat request for one user.

    Attributes:
        user: remapped user id (row of the dataset).
        user_id: the user's original id.
        messages: the rendered chat messages (tuple, so the request is hashable).
        template: ``name`` of the template.
        template_version: its ``version`` (enters the cache key).
        n_titles: how many titles the prompt holds.
    """

    user: int
    user_id: str
    messages: Tuple[Tuple[Tuple[str, str], ...], ...]
    template: str
    template_version: str
    n_titles: int = 0
    extra: Tuple[Tuple[str, Any], ...] = field(default=())

    @staticmethod
    def from_messages(user: int, user_id: str, messages: Sequence[Message], template: PromptTemplate,
                      n_titles: int = 0) -> "Request":
        frozen = tuple(tuple(sorted(m.items())) for m in messages)
        return Request(user, str(user_id), frozen, template.name, template.version, n_titles)

    @property
    def message_dicts(self) -> List[Message]:
        """The messages as the list of dicts the OpenAI API takes."""
        return [dict(m) for m in self.messages]


def titles_of(dataset: Any, items: Sequence[int]) -> List[str]:
    """Titles of ``items`` from ``dataset.item_text``, skipping items without one (``None`` or blank)."""
    out = []
    for item in items:
        title = dataset.item_text[item]
        if title is not None and str(title).strip():
            out.append(" ".join(str(title).split()))
    return out


def build_requests(dataset: Any, template: PromptTemplate = CIKGREC_INTERESTS,
                   users: Optional[Sequence[int]] = None, history_len: int = 30,
                   domain: str = "books") -> Tuple[List[Request], List[int]]:
    """One request per user from the titles of the user's last ``history_len`` train items.

    Args:
        dataset: a :class:`cikg.data.Dataset` (uses ``history``, ``item_text``, ``user_ids``).
        template: the prompt; must take ``domain`` and ``titles``.
        users: remapped user ids (default: all users).
        history_len: how many of the most recent train items to show (CIKGRec: 30).
        domain: ``books``, ``movies`` or ``items``.

    Returns:
        ``(requests, skipped_users)``: users with no titled item in that window get no request; they are
        returned in ``skipped_users`` (and logged).
    """
    if domain not in DOMAINS:
        raise ConfigError(f"domain must be one of {DOMAINS}, got {domain!r}", key="domain")
    if history_len < 1:
        raise ConfigError(f"history_len must be >= 1, got {history_len}", key="history_len")
    user_list = range(dataset.n_users) if users is None else [int(u) for u in users]
    requests: List[Request] = []
    skipped: List[int] = []
    for user in user_list:
        titles = titles_of(dataset, dataset.history(user, "train", last=history_len))
        if not titles:
            skipped.append(user)
            continue
        messages = template.render(domain=domain, titles=", ".join(titles))
        requests.append(Request.from_messages(user, dataset.user_ids[user], messages, template, len(titles)))
    if skipped:
        shown = ", ".join(str(dataset.user_ids[u]) for u in skipped[:10])
        hint = ("" if any(t is not None and str(t).strip() for t in dataset.item_text) else
                "; the dataset has no item text at all: give titles when converting, e.g. `cikg data convert "
                "ratings.csv ... --items items.csv --item-id-col movieId --title-col title -o DIR` (docs/data.md)")
        log.warning("%d user(s) have no titled item among their last %d train items and get no request "
                    "(original ids: %s%s)%s", len(skipped), history_len, shown, "..." if len(skipped) > 10 else "",
                    hint)
    return requests, skipped
