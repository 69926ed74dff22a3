"""Floor topics without an LLM: a fixed topic vocabulary, a genre-to-topic taxonomy, and MiniLM zero-shot.

Every item of the graph and target types gets topics every night from here, whatever the LLM budget did:
its genres mapped through GENRE_TOPICS where any map, else its title and description embedded with
all-MiniLM-L6-v2 and matched (cosine) against the embedded one-line descriptions of the topics.
The LLM labels items from the same vocabulary, so its answers and the floor can be compared.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TAXONOMY_VERSION = "taxonomy.v1"  # change it with TOPICS, GENRE_TOPICS or the zero-shot rule: floors are redone
MAX_TOPICS = 3  # as many as the LLM may give
ZERO_SHOT_MARGIN = 0.03  # a second or third topic only when its cosine is this close to the best one

# The vocabulary: broad enough for music, podcasts and audiobooks (podcast directories' top categories, music's
# main genres, fiction's main shelves). The description is what zero-shot embeds, so it names typical contents.
TOPIC_DESCRIPTIONS: dict[str, str] = {
    "pop": "pop music: catchy songs, chart hits, singers and boy bands",
    "rock": "rock music: electric guitars, drums, bands, punk, metal anthems and alternative rock",
    "hip hop": "hip hop and rap music: rhymes, beats, MCs, verses, freestyle and mixtapes",
    "electronic": "electronic dance music: techno, house, trance, synths, DJs, raves and remixes",
    "jazz": "jazz music: saxophone, trumpet, swing, bebop, blues, improvisation and big bands",
    "classical": "classical music: symphony, orchestra, opera, violin, piano sonatas and concertos",
    "folk": "folk music: acoustic songs, ballads, fiddle and banjo, traditional tunes",
    "r&b and soul": "r&b and soul music: smooth vocals, grooves, gospel-rooted love songs",
    "metal": "heavy metal music: distorted guitars, loud drums, screaming vocals",
    "country": "country music: cowboys, ranches, whiskey, trucks, banjo and americana",
    "latin": "latin music: reggaeton, salsa, bachata, cumbia and songs in spanish",
    "world music": "world music: traditional music of many cultures and countries",
    "news and politics": "news and politics: elections, government, policy, debates, current affairs",
    "business": "business and finance: companies, startups, investing, money, careers and the economy",
    "technology": "technology: software, computers, the internet, gadgets, artificial intelligence and code",
    "science": "science: physics, astronomy, space, biology, medicine, psychology and research",
    "history": "history: ancient empires, wars, kings, revolutions, past centuries and biographies",
    "true crime": "true crime: real murders, criminal cases, investigations, trials and forensic evidence",
    "comedy": "comedy: jokes, stand-up, sketches, satire, improv and funny banter",
    "sports": "sports: football, matches, teams, leagues, athletes and coaches",
    "health and fitness": "health and fitness: exercise, wellness, meditation, sleep, mental health and diet",
    "education": "education: learning, lessons, courses, languages and study skills",
    "society and culture": "society and culture: people, relationships, identity, communities and everyday life",
    "arts": "arts: painting, design, literature, theatre, photography and creativity",
    "religion and spirituality": "religion and spirituality: faith, god, prayer, church, buddhism and the soul",
    "kids and family": "kids and family: parenting, children, bedtime stories, babies and school",
    "fiction": "fiction: novels, short stories and invented characters and plots",
    "self-improvement": "self-improvement: habits, productivity, motivation, confidence and personal growth",
    "film and tv": "film and tv: movies, television series, actors, directors and reviews",
    "games": "games: video games, board games, gaming and esports",
    "nature and environment": "nature and environment: wildlife, forests, oceans, climate change and ecology",
    "food and drink": "food and drink: cooking, recipes, chefs, restaurants, baking and wine",
    "travel": "travel: journeys, trips, destinations, countries, road trips and adventures abroad",
    "philosophy": "philosophy: ethics, logic, meaning, consciousness, truth and wisdom",
    "mystery and thriller": "mystery and thriller fiction: detectives, suspense, spies and whodunits",
    "fantasy and sci-fi": "fantasy and science fiction: dragons, wizards, magic, quests, aliens and the future",
    "romance": "romance fiction: love stories, couples, passion, weddings and heartbreak",
    "horror": "horror: ghosts, haunted houses, monsters, vampires, curses and nightmares",
}
TOPICS: tuple[str, ...] = tuple(TOPIC_DESCRIPTIONS)

def normalise_genre(genre: str) -> str:
    """Lower case, '&' as 'and', punctuation as spaces: 'Hip-Hop' -> 'hip hop', "Children's" -> 'children s'."""
    text = genre.lower().replace("&", " and ")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


# Normalised genre (see normalise_genre) -> topics, most specific first. A genre absent here maps through the
# longest entry it contains as whole words ("indie rock" -> rock); one containing none maps to nothing.
GENRE_TOPICS: dict[str, tuple[str, ...]] = {
    **{normalise_genre(topic): (topic,) for topic in TOPICS},
    # music
    "dance": ("electronic",), "techno": ("electronic",), "house": ("electronic",), "house music": ("electronic",),
    "edm": ("electronic",), "trance": ("electronic",), "ambient": ("electronic",), "synthwave": ("electronic",),
    "rap": ("hip hop",), "hip hop": ("hip hop",), "trap": ("hip hop",), "urban": ("hip hop",),
    "r and b": ("r&b and soul",), "rnb": ("r&b and soul",), "soul": ("r&b and soul",), "funk": ("r&b and soul",),
    "gospel": ("r&b and soul", "religion and spirituality"), "blues": ("jazz",), "big band": ("jazz",),
    "swing": ("jazz",), "punk": ("rock",), "alternative": ("rock",), "indie": ("rock",), "grunge": ("rock",),
    "heavy metal": ("metal",), "americana": ("country",), "bluegrass": ("country", "folk"),
    "singer songwriter": ("folk",), "opera": ("classical",), "instrumental": ("classical",),
    "soundtrack": ("classical", "film and tv"), "reggaeton": ("latin",), "salsa": ("latin",),
    "love songs": ("pop", "romance"), "meditation music": ("health and fitness", "electronic"),
    "reggae": ("world music",), "afrobeat": ("world music",), "k pop": ("pop",),
    # podcasts and non-fiction
    "news": ("news and politics",), "politics": ("news and politics",), "current affairs": ("news and politics",),
    "government": ("news and politics",), "society": ("society and culture",), "culture": ("society and culture",),
    "finance": ("business",), "entrepreneurship": ("business",), "careers": ("business",), "economics": ("business",),
    "investing": ("business",), "marketing": ("business",), "computing": ("technology",),
    "artificial intelligence": ("technology",), "gadgets": ("technology",), "programming": ("technology",),
    "astronomy": ("science",), "space exploration": ("science",), "physics": ("science",),
    "popular science": ("science",), "psychology": ("science",), "medicine": ("science", "health and fitness"),
    "biology": ("science",), "mathematics": ("science",), "biography": ("history",), "war": ("history",),
    "military history": ("history",), "archaeology": ("history",), "law": ("true crime",),
    "crime": ("true crime",), "entertainment": ("comedy", "film and tv"), "improv comedy": ("comedy",),
    "satire": ("comedy",), "stand up": ("comedy",), "football": ("sports",), "soccer": ("sports",),
    "sports news": ("sports",), "fitness": ("health and fitness",), "wellness": ("health and fitness",),
    "mental health": ("health and fitness",), "meditation": ("health and fitness",), "nutrition": ("health and fitness",),
    "self help": ("self-improvement",), "personal development": ("self-improvement",), "productivity": ("self-improvement",),
    "parenting": ("kids and family",), "children": ("kids and family",), "childrens": ("kids and family",),
    "children s stories": ("kids and family",), "childrens stories": ("kids and family",), "animation": ("kids and family",),
    "spirituality": ("religion and spirituality",), "religion": ("religion and spirituality",),
    "christianity": ("religion and spirituality",), "buddhism": ("religion and spirituality",),
    "ideas": ("philosophy",), "food": ("food and drink",), "cooking": ("food and drink",),
    "restaurants": ("food and drink",), "wine": ("food and drink",), "lifestyle": ("society and culture",),
    "places": ("travel",), "nature": ("nature and environment",), "environment": ("nature and environment",),
    "wildlife": ("nature and environment",), "climate": ("nature and environment",), "documentary": ("film and tv",),
    "tv": ("film and tv",), "film": ("film and tv",), "musical": ("film and tv",), "video games": ("games",),
    "gaming": ("games",), "language learning": ("education",), "design": ("arts",), "literature": ("arts",),
    "poetry": ("arts",), "theatre": ("arts",),
    # fiction shelves
    "mystery": ("mystery and thriller",), "thriller": ("mystery and thriller",), "suspense": ("mystery and thriller",),
    "film noir": ("mystery and thriller",), "detective": ("mystery and thriller",), "fantasy": ("fantasy and sci-fi",),
    "epic fantasy": ("fantasy and sci-fi",), "science fiction": ("fantasy and sci-fi",), "sci fi": ("fantasy and sci-fi",),
    "young adult": ("fiction",), "adventure": ("fiction",), "action": ("fiction",), "western": ("fiction",),
    "drama": ("fiction",), "contemporary fiction": ("fiction",), "literary fiction": ("fiction",), "novel": ("fiction",),
    "supernatural": ("horror",), "paranormal": ("horror",), "dark fiction": ("horror",), "gothic": ("horror",),
}


_BY_LENGTH = sorted(GENRE_TOPICS, key=lambda key: (-len(key), key))  # longest whole-word match wins


def genre_topics(genre: str) -> tuple[str, ...]:
    """The topics of one genre: its entry in GENRE_TOPICS, else that of the longest entry it contains."""
    key = normalise_genre(genre)
    if key in GENRE_TOPICS:
        return GENRE_TOPICS[key]
    padded = f" {key} "
    for entry in _BY_LENGTH:
        if f" {entry} " in padded:
            return GENRE_TOPICS[entry]
    return ()


def taxonomy_topics(genres: Sequence[str] | None) -> list[str]:
    """Up to MAX_TOPICS topics from an item's genres, in the genres' order; empty when none maps."""
    topics: list[str] = []
    for genre in genres or ():
        topics.extend(topic for topic in genre_topics(str(genre)) if topic not in topics)
    return topics[:MAX_TOPICS]


def topic_texts() -> list[str]:
    """What zero-shot embeds for each topic of TOPICS, in order."""
    return [TOPIC_DESCRIPTIONS[topic] for topic in TOPICS]


def item_text(item: dict[str, Any]) -> str:
    """An item as zero-shot reads it: title and description."""
    return ". ".join(part for part in (str(item.get("title") or "").strip(),
                                       " ".join(str(item.get("description") or "").split())) if part)


def zero_shot_topics(item_vectors: np.ndarray, topic_vectors: np.ndarray) -> list[list[str]]:
    """Per item (rows of unit vectors, (N, d)), the best topic by cosine against topic_vectors ((len(TOPICS), d)),
    then up to MAX_TOPICS - 1 more whose cosine is within ZERO_SHOT_MARGIN of the best."""
    if topic_vectors.shape[0] != len(TOPICS):
        raise ValueError(f"need one vector per topic ({len(TOPICS)}; got {topic_vectors.shape[0]})")
    if not len(item_vectors):
        return []
    scores = item_vectors @ topic_vectors.T  # (N, T) cosines of unit vectors
    order = np.argsort(-scores, axis=1, kind="stable")[:, :MAX_TOPICS]
    best = np.take_along_axis(scores, order[:, :1], axis=1)  # (N, 1)
    chosen = np.take_along_axis(scores, order, axis=1) >= best - ZERO_SHOT_MARGIN  # (N, MAX_TOPICS); column 0 True
    return [[TOPICS[j] for j, keep in zip(row, keeps) if keep] for row, keeps in zip(order, chosen)]


def floor_hash(item: dict[str, Any]) -> str:
    """Changes when what the floor reads (genres, title, description) or the taxonomy changes."""
    payload = json.dumps([TAXONOMY_VERSION, list(item.get("genres") or []), item_text(item)], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Floor:
    topics: list[str]
    source: str  # 'taxonomy' | 'zero_shot'


def floor_topics(items: Sequence[dict[str, Any]], encode: Callable[[list[str]], np.ndarray]) -> list[Floor]:
    """Floor topics of raw.items rows (dicts with genres, title, description), in order.

    `encode(texts)` gives unit vectors ((N, d)), e.g. `lambda texts: text_embed.encode(encoder, texts)`;
    it is called once for the topics and once for the items the taxonomy leaves without topics.
    """
    floors: list[Floor | None] = []
    unmapped: list[int] = []
    for n, item in enumerate(items):
        topics = taxonomy_topics(item.get("genres"))
        floors.append(Floor(topics, "taxonomy") if topics else None)
        if not topics:
            unmapped.append(n)
    if unmapped:
        texts = [item_text(items[n]) or str(items[n].get("item_id") or "") for n in unmapped]
        picks = zero_shot_topics(encode(texts), encode(topic_texts()))
        for n, topics in zip(unmapped, picks):
            floors[n] = Floor(topics, "zero_shot")
    return [floor for floor in floors if floor is not None]  # every slot is filled by now


@dataclass(frozen=True)
class Floors:
    topics: list[list[str]]  # per item, in order
    sources: list[str]
    hashes: list[str]  # floor_hash of each item
    count_computed: int  # items whose floor was (re)computed; the others kept last run's


def refresh_floors(items: Sequence[dict[str, Any]], encode: Callable[[list[str]], np.ndarray]) -> Floors:
    """Floor topics of every item, keeping last run's (`previous_floor_hash`, `previous_floor_topics`,
    `previous_floor_source` in the dicts) where the item's floor_hash is unchanged, so nightly runs encode nothing
    for an unchanged catalogue."""
    hashes = [floor_hash(item) for item in items]
    kept = [bool(item.get("previous_floor_topics")) and item.get("previous_floor_hash") == digest
            for item, digest in zip(items, hashes)]
    computed = iter(floor_topics([item for item, keep in zip(items, kept) if not keep], encode))
    floors = [Floor(list(item["previous_floor_topics"]), str(item["previous_floor_source"])) if keep else next(computed)
              for item, keep in zip(items, kept)]
    return Floors([floor.topics for floor in floors], [floor.source for floor in floors], hashes,
                  kept.count(False))
