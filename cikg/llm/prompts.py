"""Prompt templates as data, and the CIKGRec interest-inference requests built from a dataset.

CIKGRec (arXiv 2412.13544, Sec. 3.2) asks an LLM, for each user, for at most five interests given the titles
of the user's last 30 training items. A :class:`PromptTemplate` is a frozen value (name, version, system and
user text with ``{placeholders}``, optional worked examples and a JSON schema for structured answers); its
``version`` enters the cache key, so editing a prompt (or its examples) and bumping the version never serves
answers to the old wording.

Templates of the interest step (:data:`INTEREST_TEMPLATES`, ``cikg interests infer --prompt NAME``):
``cikgrec-interests`` (the paper's zero-shot prompt) and ``cikgrec-interests-fewshot`` (the same instruction
with two worked examples history → interests before the user's titles, for small models; examples whose
titles are in the user's history are replaced by others from a fixed pool).
"""
from __future__ import annotations

import json
import logging
import re
import string
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

log = logging.getLogger(__name__)

Message = Dict[str, str]

DOMAINS = ("books", "movies", "items")

INTERESTS_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {"interests": {"type": "array", "items": {"type": "string", "maxLength": 40},
                                 "minItems": 1, "maxItems": 5}},
    "required": ["interests"],
    "additionalProperties": False,
}
"""JSON schema of a structured interest answer: ``{"interests": [at most five strings of <= 40 chars]}``."""

_NON_WORD = re.compile(r"[^0-9a-z]+")
_ARTICLE = re.compile(r"^(?:the|a|an) ")


def normalise_title(text: str) -> str:
    """Lower-case, accents and punctuation removed, whitespace collapsed, a leading article dropped:
    ``"The Hobbit: or There and Back Again"`` → ``"hobbit or there and back again"``."""
    decomposed = unicodedata.normalize("NFKD", str(text).casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _ARTICLE.sub("", " ".join(_NON_WORD.sub(" ", plain).split()))


@dataclass(frozen=True)
class FewShotExample:
    """A worked example of the interest prompt: the titles shown and the answer expected."""

    titles: Tuple[str, ...]
    interests: Tuple[str, ...]

    def clashes(self, history: Sequence[str]) -> bool:
        """Whether one of the example's titles is (after :func:`normalise_title`) in ``history``."""
        mine = {normalise_title(t) for t in self.titles}
        return any(normalise_title(t) in mine for t in history)


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
    examples: Tuple[Tuple[str, Tuple[FewShotExample, ...]], ...] = ()
    shots: int = 0
    schema: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ConfigError("a prompt template needs a non-empty name and version", key="prompt")
        for domain, pool in self.examples:
            if len(pool) < self.shots:
                raise ConfigError(f"prompt {self.name!r} v{self.version}: {self.shots} shots need as many "
                                  f"examples, domain {domain!r} has {len(pool)}", key="prompt")

    def pick_examples(self, domain: str, history: Sequence[str] = ()) -> List[FewShotExample]:
        """The first ``shots`` examples of ``domain``'s pool (``books`` when it has none) that share no title
        with ``history``; when fewer than ``shots`` are free, the least clashing ones make up the number."""
        if not self.shots:
            return []
        pools = dict(self.examples)
        pool = pools.get(domain) or pools.get("books") or next(iter(pools.values()))
        free = [ex for ex in pool if not ex.clashes(history)]
        if len(free) < self.shots:
            log.debug("prompt %s: only %d example(s) share no title with the history", self.name, len(free))
            free += [ex for ex in pool if ex not in free][: self.shots - len(free)]
        return free[: self.shots]

    @property
    def placeholders(self) -> Tuple[str, ...]:
        """Names of the placeholders used by the system and user text, in order of appearance."""
        names: List[str] = []
        for text in (self.system, self.user):
            for _, field_name, _, _ in string.Formatter().parse(text):
                if field_name and field_name not in names:
                    names.append(field_name)
        return tuple(names)

    def render(self, *, exclude_titles: Sequence[str] = (), **values: Any) -> List[Message]:
        """Fill the placeholders; returns ``[{"role": "system", ...}, {"role": "user", ...}]``.

        A few-shot template (``shots > 0``) puts a user/assistant pair per worked example between the two,
        each rendered with the example's titles (comma-joined into ``titles``) and its interests as the
        answer; examples sharing a title with ``exclude_titles`` (the user's history) are skipped.

        Raises:
            ConfigError: a placeholder has no value.
        """
        missing = [p for p in self.placeholders if p not in values]
        if missing:
            raise ConfigError(f"prompt {self.name!r} v{self.version} needs values for {missing}", key="prompt")
        messages = [{"role": "system", "content": self.system.format(**values)}]
        for example in self.pick_examples(str(values.get("domain", "books")), exclude_titles):
            shown = {**values, "titles": ", ".join(example.titles)}
            messages += [{"role": "user", "content": self.user.format(**shown)},
                         {"role": "assistant", "content": ", ".join(example.interests)}]
        messages.append({"role": "user", "content": self.user.format(**values)})
        return messages

    @property
    def schema_dict(self) -> Optional[Dict[str, Any]]:
        """The JSON schema of a structured answer (``None``: free text only)."""
        return json.loads(self.schema) if self.schema else None


CIKGREC_INTERESTS = PromptTemplate(
    name="cikgrec-interests",
    version="1",
    system=("You will be given a list of {domain} that an anonymous user liked. "
            "Reply with at most five of the user's top interests, as short phrases separated by commas. "
            "Give no explanation and nothing else."),
    user="[{titles}]",
    schema=json.dumps(INTERESTS_SCHEMA, sort_keys=True),
)
"""The CIKGRec interest prompt; placeholders ``domain`` (books|movies|items) and ``titles``. Its ``schema``
asks for ``{"interests": [...]}`` where the backend sends ``response_format`` (the wording is the paper's)."""


def _ex(titles: Sequence[str], interests: Sequence[str]) -> FewShotExample:
    return FewShotExample(tuple(titles), tuple(interests))


FEWSHOT_POOL: Tuple[Tuple[str, Tuple[FewShotExample, ...]], ...] = (
    ("books", (
        _ex(["The Hobbit", "A Game of Thrones", "The Name of the Wind", "Mistborn: The Final Empire"],
            ["epic fantasy", "magic", "medieval worlds", "dragons"]),
        _ex(["Gone Girl", "The Girl on the Train", "Sharp Objects", "Big Little Lies"],
            ["psychological thrillers", "domestic suspense", "crime", "unreliable narrators"]),
        _ex(["A Brief History of Time", "Cosmos", "The Selfish Gene", "The Origin of Species"],
            ["popular science", "cosmology", "evolution", "physics"]),
        _ex(["Pride and Prejudice", "Jane Eyre", "Wuthering Heights", "Sense and Sensibility"],
            ["classic romance", "victorian literature", "english countryside", "strong heroines"]),
        _ex(["Salt, Fat, Acid, Heat", "Kitchen Confidential", "Mastering the Art of French Cooking"],
            ["cooking", "food writing", "french cuisine", "chefs"]),
    )),
    ("movies", (
        _ex(["Alien", "The Terminator", "Blade Runner", "The Matrix"],
            ["science fiction", "dystopian futures", "artificial intelligence", "action"]),
        _ex(["Toy Story", "Finding Nemo", "The Lion King", "Shrek"],
            ["animation", "family films", "talking animals", "comedy"]),
        _ex(["The Godfather", "Goodfellas", "Scarface", "Casino"],
            ["crime dramas", "mafia", "gangsters", "violence"]),
        _ex(["When Harry Met Sally...", "Notting Hill", "Pretty Woman", "Sleepless in Seattle"],
            ["romantic comedies", "love stories", "city life", "friendship"]),
        _ex(["Schindler's List", "Saving Private Ryan", "Platoon", "Dunkirk"],
            ["war films", "world war ii", "history", "drama"]),
    )),
)
"""Worked examples of the few-shot prompt, per domain (``items`` uses the books pool); real titles, so a
user may hold one: such an example is replaced by the next free one of the pool."""

CIKGREC_FEWSHOT = PromptTemplate(
    name="cikgrec-interests-fewshot",
    version="1",
    system=CIKGREC_INTERESTS.system,
    user=CIKGREC_INTERESTS.user,
    examples=FEWSHOT_POOL,
    shots=2,
    schema=CIKGREC_INTERESTS.schema,
)
"""The CIKGRec prompt with two worked examples (history → interests) before the user's titles."""

INTEREST_TEMPLATES: Dict[str, PromptTemplate] = {t.name: t for t in (CIKGREC_INTERESTS, CIKGREC_FEWSHOT)}
"""Interest-step templates by name (``cikg interests infer --prompt NAME``)."""


def interest_template(name: str) -> PromptTemplate:
    """The interest template called ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return INTEREST_TEMPLATES[name]
    except KeyError:
        raise ConfigError(f"unknown prompt {name!r}; known: {', '.join(INTEREST_TEMPLATES)}", key="prompt") from None


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
        extra: backend- or step-specific values.
        titles: the user's titles shown in the prompt (the echo filter compares answers with them).
        schema: JSON schema of a structured answer (canonical JSON; ``""``: free text only).
        example_titles: titles of the few-shot examples in the prompt (small models echo those too).
    """

    user: int
    user_id: str
    messages: Tuple[Tuple[Tuple[str, str], ...], ...]
    template: str
    template_version: str
    n_titles: int = 0
    extra: Tuple[Tuple[str, Any], ...] = field(default=())
    titles: Tuple[str, ...] = field(default=())
    schema: str = ""
    example_titles: Tuple[str, ...] = field(default=())

    @staticmethod
    def from_messages(user: int, user_id: str, messages: Sequence[Message], template: PromptTemplate,
                      n_titles: int = 0, titles: Sequence[str] = (), domain: str = "books") -> "Request":
        """The request of ``messages`` rendered from ``template`` for ``domain`` with the user's ``titles``."""
        frozen = tuple(tuple(sorted(m.items())) for m in messages)
        examples = template.pick_examples(domain, titles)
        return Request(user, str(user_id), frozen, template.name, template.version, n_titles,
                       titles=tuple(titles), schema=template.schema,
                       example_titles=tuple(t for ex in examples for t in ex.titles))

    @property
    def prompt_titles(self) -> Tuple[str, ...]:
        """Every title the prompt shows: the user's, then the few-shot examples' (what the echo filter uses)."""
        return self.titles + self.example_titles

    @property
    def schema_dict(self) -> Optional[Dict[str, Any]]:
        return json.loads(self.schema) if self.schema else None

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
        messages = template.render(domain=domain, titles=", ".join(titles), exclude_titles=titles)
        requests.append(Request.from_messages(user, dataset.user_ids[user], messages, template, len(titles),
                                              titles, domain))
    if skipped:
        shown = ", ".join(str(dataset.user_ids[u]) for u in skipped[:10])
        hint = ("" if any(t is not None and str(t).strip() for t in dataset.item_text) else
                "; the dataset has no item text at all: give titles when converting, e.g. `cikg data convert "
                "ratings.csv ... --items items.csv --item-id-col movieId --title-col title -o DIR` (docs/data.md)")
        log.warning("%d user(s) have no titled item among their last %d train items and get no request "
                    "(original ids: %s%s)%s", len(skipped), history_len, shown, "..." if len(skipped) > 10 else "",
                    hint)
    return requests, skipped
