"""Floor topics: the genre taxonomy with known answers, MiniLM zero-shot on obvious texts, reuse of unchanged floors."""
from __future__ import annotations

import numpy as np
import pytest

from models import topic_taxonomy as taxonomy
from models.item_topics import TOPICS as LLM_TOPICS
from models.text_embed import encode, load_encoder


@pytest.mark.parametrize(("genres", "topics"), [
    (["Hip-Hop"], ["hip hop"]),
    (["true crime", "mystery"], ["true crime", "mystery and thriller"]),
    (["indie rock"], ["rock"]),  # not listed: the longest entry it contains
    (["Children's"], ["kids and family"]),
    (["R&B"], ["r&b and soul"]),
    (["Self-Help", "Sci-Fi"], ["self-improvement", "fantasy and sci-fi"]),
    (["jazz", "blues", "soul", "big band"], ["jazz", "r&b and soul"]),  # duplicates once, order kept
    (["astronomy", "cooking", "wildlife", "war"], ["science", "food and drink", "nature and environment"]),  # cap 3
    (["rockets"], []),  # whole words only: 'rockets' is not 'rock'
    ([], []),
    (None, []),
])
def test_genres_map_to_known_topics(genres: list[str] | None, topics: list[str]) -> None:
    assert taxonomy.taxonomy_topics(genres) == topics


def test_vocabulary_is_small_documented_and_shared_with_the_llm() -> None:
    assert 20 <= len(taxonomy.TOPICS) <= 40 and LLM_TOPICS == taxonomy.TOPICS
    assert all("\n" not in text and 20 <= len(text) <= 120 for text in taxonomy.TOPIC_DESCRIPTIONS.values())
    every_target = {topic for topics in taxonomy.GENRE_TOPICS.values() for topic in topics}
    assert every_target <= set(taxonomy.TOPICS)


def test_zero_shot_keeps_close_runners_up_only() -> None:
    topic_vectors = np.eye(len(taxonomy.TOPICS), dtype=np.float32)
    item = np.zeros((2, len(taxonomy.TOPICS)), dtype=np.float32)
    item[0, [3, 7]] = [0.80, 0.79]  # electronic, then r&b and soul within the margin
    item[1, [4, 9]] = [0.90, 0.50]  # jazz alone
    assert taxonomy.zero_shot_topics(item, topic_vectors) == [["electronic", "r&b and soul"], ["jazz"]]
    with pytest.raises(ValueError, match="one vector per topic"):
        taxonomy.zero_shot_topics(item, topic_vectors[:3])


@pytest.fixture(scope="module")
def embed() -> taxonomy.Callable[[list[str]], np.ndarray]:
    encoder = load_encoder()
    return lambda texts: encode(encoder, texts)


@pytest.mark.parametrize(("title", "description", "topic"), [
    ("Murder in the Valley", "Detectives reopen a real killing: the evidence, the suspects and the trial.", "true crime"),
    ("Midnight Basslines", "Two hours of DJ mixes: techno and house for the dancefloor.", "electronic"),
    ("Bedtime with Bunny", "Gentle stories for toddlers and their parents before sleep.", "kids and family"),
    ("The Stock Market Hour", "Investors and founders on startups, profits and the economy.", "business"),
])
def test_zero_shot_picks_the_obvious_topic(embed, title: str, description: str, topic: str) -> None:  # noqa: ANN001
    [floor] = taxonomy.floor_topics([{"title": title, "description": description, "genres": []}], embed)
    assert floor.source == "zero_shot" and floor.topics[0] == topic


def test_every_item_gets_a_floor_and_unchanged_ones_are_kept(embed) -> None:  # noqa: ANN001
    items = [
        {"item_id": "a", "title": "Orbit", "description": "Rockets and planets.", "genres": ["astronomy"]},
        {"item_id": "b", "title": "Laugh Track", "description": "Stand-up comedians and their jokes.", "genres": []},
        {"item_id": "c", "title": "Untitled", "description": "", "genres": ["no such genre"]},
    ]
    first = taxonomy.refresh_floors(items, embed)
    assert first.sources == ["taxonomy", "zero_shot", "zero_shot"] and first.count_computed == 3
    assert first.topics[0] == ["science"] and first.topics[1][0] == "comedy"
    assert all(1 <= len(topics) <= taxonomy.MAX_TOPICS for topics in first.topics)

    def never(texts: list[str]) -> np.ndarray:
        raise AssertionError(f"encoded {texts} although nothing changed")

    carried = [{**item, "previous_floor_hash": digest, "previous_floor_topics": topics, "previous_floor_source": source}
               for item, digest, topics, source in zip(items, first.hashes, first.topics, first.sources)]
    again = taxonomy.refresh_floors(carried, never)
    assert (again.topics, again.sources, again.count_computed) == (first.topics, first.sources, 0)
    carried[0]["genres"] = ["jazz"]  # a changed item is mapped again
    changed = taxonomy.refresh_floors(carried, never)
    assert changed.topics[0] == ["jazz"] and changed.count_computed == 1
