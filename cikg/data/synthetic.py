"""A seeded synthetic CIKG dataset: the embedded default that needs no files.

Users hold a few latent topics; items belong to one topic and carry KG attributes (genre, author, era,
setting, publisher) and titles built from topic words; interactions are drawn from the users' topics with
a popularity skew inside each topic, plus noise. A model that learns the topics beats popularity. Every
step is vectorised, so a million users take seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List

import numpy as np
import torch

from .dataset import Dataset
from .split import carve_validation

_GENRES = [
    ("science fiction", ["Star", "Orbit", "Galaxy", "Android", "Nebula", "Colony"]),
    ("fantasy", ["Dragon", "Sword", "Wizard", "Kingdom", "Crown", "Spell"]),
    ("mystery", ["Murder", "Detective", "Clue", "Alibi", "Witness", "Secret"]),
    ("romance", ["Heart", "Kiss", "Bride", "Summer Love", "Promise", "Wedding"]),
    ("history", ["Empire", "War", "Revolution", "Dynasty", "Battle", "Republic"]),
    ("cooking", ["Kitchen", "Bread", "Feast", "Spice", "Recipe", "Garden Table"]),
    ("horror", ["Ghost", "Shadow", "Haunting", "Blood", "Crypt", "Nightmare"]),
    ("thriller", ["Conspiracy", "Agent", "Target", "Escape", "Code", "Hunter"]),
    ("biography", ["Life", "Memoir", "Journey", "Portrait", "Years", "Voice"]),
    ("philosophy", ["Reason", "Virtue", "Mind", "Truth", "Being", "Ethics"]),
    ("travel", ["Road", "Island", "Voyage", "Map", "Passage", "Compass"]),
    ("poetry", ["Verse", "Song", "Rain", "Elegy", "Moon", "Sonnet"]),
]
_ADJECTIVES = np.array(["The Last", "The Silent", "A Distant", "The Lost", "The Hidden", "The Golden",
                        "A Broken", "The Endless", "The Secret", "A Winter", "The First", "The Dark"])
_FIRST = np.array(["Ada", "Ben", "Clara", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
                   "Kara", "Liam", "Mina", "Noor", "Oscar", "Pia"])
_LAST = np.array(["Adler", "Brook", "Castillo", "Duval", "Eriksen", "Fontaine", "Gupta", "Hale", "Ivanova",
                  "Jensen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov"])
_PLACES = np.array(["Paris", "Kyoto", "Lagos", "Lima", "Oslo", "Cairo", "Boston", "Mumbai", "Rome", "Sydney",
                    "Prague", "Quebec", "Seoul", "Nairobi", "Lisbon", "Dublin"])
_PUBLISHERS = np.array([f"Publisher {c}" for c in "ABCDEFGHIJKLMNOPQRST"])
_RELATIONS = ["genre", "author", "era", "setting", "publisher"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of :func:`synthetic` (all counts must be positive)."""

    n_users: int = 2000
    n_items: int = 600
    n_topics: int = 12
    interactions_per_user: float = 20.0
    topics_per_user: int = 2
    noise: float = 0.1
    popularity_exponent: float = 0.8
    authors_per_topic: int = 6
    with_interests: bool = True
    test_fraction: float = 0.2
    valid_fraction: float = 1 / 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_topics", "topics_per_user", "authors_per_topic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_items < self.n_topics:
            raise ValueError(f"n_items ({self.n_items}) must be >= n_topics ({self.n_topics})")
        if self.topics_per_user > self.n_topics:
            raise ValueError(f"topics_per_user ({self.topics_per_user}) must be <= n_topics ({self.n_topics})")
        if self.interactions_per_user < 3:
            raise ValueError(f"interactions_per_user must be >= 3, got {self.interactions_per_user}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")


def _genre_names(n_topics: int) -> List[str]:
    return [_GENRES[t][0] if t < len(_GENRES) else f"{_GENRES[t % len(_GENRES)][0]} {t // len(_GENRES) + 1}"
            for t in range(n_topics)]


def synthetic(n_users: int = 2000, n_items: int = 600, *, seed: int = 0, **kwargs) -> Dataset:
    """Generate a seeded synthetic dataset; keyword arguments are the fields of :class:`SyntheticConfig`."""
    config = SyntheticConfig(n_users=n_users, n_items=n_items, seed=seed, **kwargs)
    rng = np.random.default_rng(config.seed)
    n_topics = config.n_topics

    item_topic = rng.permutation(np.arange(n_items) % n_topics)
    popularity = rng.permutation(n_items).astype(np.float64)
    weight = 1.0 / (1.0 + popularity) ** config.popularity_exponent
    by_topic = np.lexsort((popularity, item_topic))  # items grouped by topic
    topic_start = np.searchsorted(item_topic[by_topic], np.arange(n_topics))
    cum = np.cumsum(weight[by_topic])
    topic_total = np.add.reduceat(weight[by_topic], topic_start)
    before = np.concatenate(([0.0], np.cumsum(topic_total)[:-1]))
    within = (cum - np.repeat(before, np.diff(np.append(topic_start, n_items)))) / np.repeat(
        topic_total, np.diff(np.append(topic_start, n_items)))
    cdf = item_topic[by_topic] + within  # topic t's items occupy (t, t + 1]

    user_topics = np.argsort(rng.random((n_users, n_topics)), axis=1)[:, : config.topics_per_user]
    counts = np.maximum(3, rng.poisson(config.interactions_per_user, n_users))
    counts = np.minimum(counts, max(3, n_items // 2))
    draws = counts * 2  # oversample, then keep the first distinct items
    users = np.repeat(np.arange(n_users), draws)
    topic = user_topics[users, rng.integers(0, config.topics_per_user, users.size)]
    noisy = rng.random(users.size) < config.noise
    topic[noisy] = rng.integers(0, n_topics, int(noisy.sum()))
    position = np.searchsorted(cdf, topic + rng.random(users.size) * (1 - 1e-12) + 1e-12)
    items = by_topic[np.minimum(position, n_items - 1)]
    key = users * n_items + items
    _, first = np.unique(key, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    rank = np.arange(users.size) - np.searchsorted(users, users)
    keep = rank < counts[users]
    pairs = torch.from_numpy(np.stack([users[keep], items[keep]]))
    rest, test = carve_validation(pairs, n_users, config.test_fraction, config.seed)
    train, valid = carve_validation(rest, n_users, config.valid_fraction, config.seed + 1)

    genres = _genre_names(n_topics)
    n_authors = n_topics * config.authors_per_topic
    author_names = [f"{_FIRST[a % len(_FIRST)]} {_LAST[(a * 7 + a // len(_FIRST)) % len(_LAST)]}"
                    + ("" if a < len(_FIRST) * len(_LAST) else f" {a}") for a in range(n_authors)]
    eras = [f"{1900 + 10 * d}s" for d in range(12)]
    offsets = np.cumsum([n_items, n_topics, n_authors, len(eras), len(_PLACES)])
    item_author = item_topic * config.authors_per_topic + rng.integers(0, config.authors_per_topic, n_items)
    item_era = rng.integers(0, len(eras), n_items)
    item_place = (item_topic * 3 + rng.integers(0, 4, n_items)) % len(_PLACES)
    item_publisher = rng.integers(0, len(_PUBLISHERS), n_items)
    tails = [item_topic + offsets[0], item_author + offsets[1], item_era + offsets[2],
             item_place + offsets[3], item_publisher + offsets[4]]
    item_ids = np.arange(n_items)
    kg = np.concatenate([np.stack([item_ids, np.full(n_items, r), t]) for r, t in enumerate(tails)], axis=1)
    entity_text = (genres + author_names + eras + [str(p) for p in _PLACES] + [str(p) for p in _PUBLISHERS])
    n_entities = n_items + len(entity_text)

    nouns = np.array([_GENRES[t % len(_GENRES)][1] for t in range(n_topics)], dtype=object)
    noun = np.array([nouns[t][k] for t, k in zip(item_topic, rng.integers(0, 6, n_items))], dtype=object)
    titles = (_ADJECTIVES[rng.integers(0, len(_ADJECTIVES), n_items)].astype(object) + " " + noun
              + " of " + _PLACES[item_place].astype(object))
    item_text = [str(t) for t in titles]

    dataset = Dataset(
        name=f"synthetic-{n_users}u-{n_items}i-s{config.seed}", n_users=n_users, n_items=n_items, train=train,
        valid=valid, test=test, n_entities=n_entities, n_relations=len(_RELATIONS),
        kg=torch.from_numpy(kg.astype(np.int64)), user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        entity_ids=[f"i{i}" for i in range(n_items)] + [f"e{e}" for e in range(n_items, n_entities)],
        relation_ids=list(_RELATIONS), relation_names=list(_RELATIONS), item_text=item_text,
        entity_text=item_text + entity_text,
        meta={"source": "synthetic", "synthetic": asdict(config),
              "split": {"method": "carved per user", "test_fraction": config.test_fraction,
                        "valid_fraction": config.valid_fraction, "seed": config.seed}})
    if config.with_interests:
        ui_users = np.repeat(np.arange(n_users), config.topics_per_user)
        ui = torch.from_numpy(np.stack([ui_users, user_topics.reshape(-1)]).astype(np.int64))
        dataset = dataset.with_interests(ui, [n_entities + t for t in range(n_topics)], genres,
                                         source="synthetic latent topics (ground truth, not inferred)")
    return dataset
