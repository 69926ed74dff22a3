"""Sample-world catalogue: items whose text follows a latent topic and whose co-listening follows hidden clusters."""
import datetime
from dataclasses import dataclass

import numpy as np
import polars as pl

from worlds.sample_vocab import (
    FIRST_NAMES,
    LANGUAGES,
    LAST_NAMES,
    NOISE_WORDS,
    PODCAST_SHOW_WORDS,
    THEMES,
    TYPE_PHRASES,
)

ITEM_TYPES: tuple[str, ...] = ("music", "podcast", "audiobook")
TARGET_TYPE = 2  # audiobook: the type cold users have never tried
ID_PREFIXES: tuple[str, ...] = ("mus", "pod", "abk")
CLUSTERS = 3  # hidden sub-communities per topic; only co-listening reveals them
NEW_RELEASE_SHARE = 0.1  # of audiobooks, released within the last new_release_days
NEW_RELEASE_BOOST = 3.0  # new releases are promoted, so they draw more listeners
ZIPF_EXPONENT = 1.0
OFF_TOPIC_WORD = 0.12  # chance that a description word comes from another topic
OFF_TOPIC_GENRE = 0.1


@dataclass(frozen=True, eq=False)
class Catalog:
    """Items sorted by (type, topic, cluster) so that each segment is one contiguous slice."""

    items: pl.DataFrame  # the public item columns, in segment order
    item_type: np.ndarray  # (I,) int8 index into ITEM_TYPES
    topic: np.ndarray  # (I,) int16
    cluster: np.ndarray  # (I,) int8
    language: np.ndarray  # (I,) int8 index into LANGUAGES
    popularity: np.ndarray  # (I,) float64, Zipf within type
    release_day: np.ndarray  # (I,) int32, day index relative to the first simulated day
    duration_ms: np.ndarray  # (I,) int64
    is_paid: np.ndarray  # (I,) bool
    segment_bounds: np.ndarray  # (types*topics*CLUSTERS + 1,) start offsets of the segments


def default_items_per_type(users: int, topics: int) -> dict[str, int]:
    """Catalogue sizes growing with the square root of users: 3000/1500/800 at 2000 users."""
    scale = np.sqrt(users / 2000)
    floor = 2 * topics * CLUSTERS  # every (topic, cluster) segment gets an item released before day 0
    return {t: max(floor, int(round(base * scale))) for t, base in zip(ITEM_TYPES, (3000, 1500, 800))}


def build_catalog(
    items_per_type: dict[str, int],
    themes: np.ndarray,
    topic_share: np.ndarray,
    start: datetime.date,
    days: int,
    new_release_days: int,
    rng: np.random.Generator,
) -> Catalog:
    """Draw every item's topic, cluster, text, popularity and release day."""
    topics = len(themes)
    counts = [items_per_type[t] for t in ITEM_TYPES]
    parts = [_draw_type(code, n, topic_share, days, new_release_days, rng) for code, n in enumerate(counts)]
    raw = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((raw["serial"], raw["cluster"], raw["topic"], raw["item_type"]))
    raw = {k: v[order] for k, v in raw.items()}
    segment = (raw["item_type"].astype(np.int64) * topics + raw["topic"]) * CLUSTERS + raw["cluster"]
    bounds = np.searchsorted(segment, np.arange(len(ITEM_TYPES) * topics * CLUSTERS + 1))
    items = _item_frame(raw, themes, counts, start, rng)
    return Catalog(
        items=items,
        item_type=raw["item_type"],
        topic=raw["topic"],
        cluster=raw["cluster"],
        language=raw["language"],
        popularity=raw["popularity"],
        release_day=raw["release_day"],
        duration_ms=raw["duration_ms"],
        is_paid=raw["is_paid"],
        segment_bounds=bounds,
    )


def _draw_type(
    code: int, n: int, topic_share: np.ndarray, days: int, new_release_days: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Latent and numeric attributes of the n items of one type."""
    topics = len(topic_share)
    segments = topics * CLUSTERS
    topic = rng.choice(topics, size=n, p=topic_share)
    cluster = rng.integers(0, CLUSTERS, size=n)
    # the first items cover every segment, so every (topic, cluster) has a released item from day 0
    topic[:segments] = np.arange(segments) // CLUSTERS
    cluster[:segments] = np.arange(segments) % CLUSTERS
    rank = rng.permutation(n)
    popularity = 1.0 / (rank + 1.0) ** ZIPF_EXPONENT
    release_day = -rng.integers(1, 5 * 365, size=n)
    if code == TARGET_TYPE:
        new = segments + rng.choice(n - segments, size=round(NEW_RELEASE_SHARE * n), replace=False)
        release_day[new] = rng.integers(days - new_release_days, days, size=len(new))
        popularity[new] *= NEW_RELEASE_BOOST
    else:
        # a few items appear during the simulated period as well
        later = segments + np.flatnonzero(rng.random(n - segments) < 0.05)
        release_day[later] = rng.integers(0, days, size=len(later))
    if code == 0:
        duration = np.clip(rng.lognormal(np.log(210_000), 0.3, size=n), 90_000, 600_000)
        is_paid = np.zeros(n, dtype=bool)
    elif code == 1:
        duration = np.clip(rng.lognormal(np.log(2_700_000), 0.5, size=n), 600_000, 10_800_000)
        is_paid = rng.random(n) < 0.05
    else:
        duration = np.clip(rng.lognormal(np.log(32_400_000), 0.45, size=n), 7_200_000, 90_000_000)
        is_paid = rng.random(n) < 0.6
    language_share = np.array([share for _, share in LANGUAGES])
    return {
        "item_type": np.full(n, code, dtype=np.int8),
        "serial": rng.permutation(n) + 1,  # the number in the item id, unrelated to topic order
        "topic": topic.astype(np.int16),
        "cluster": cluster.astype(np.int8),
        "language": rng.choice(len(LANGUAGES), size=n, p=language_share / language_share.sum()).astype(np.int8),
        "popularity": popularity,
        "release_day": release_day.astype(np.int32),
        "duration_ms": duration.astype(np.int64),
        "is_paid": is_paid,
    }


def _topic_words(themes: np.ndarray, topic: np.ndarray, k: int, rng: np.random.Generator) -> list[pl.Series]:
    """k distinct words of each item's theme; slots 2.. come from a random other theme with chance OFF_TOPIC_WORD."""
    n, per_theme = len(topic), len(THEMES[0][0])
    theme = themes[topic]
    # base + j * step visits distinct words when step is coprime with the theme size
    steps = np.array([s for s in range(1, per_theme) if np.gcd(s, per_theme) == 1])
    base, step = rng.integers(0, per_theme, size=n), rng.choice(steps, size=n)
    words = []
    for j in range(k):
        stray = (j >= 2) & (rng.random(n) < OFF_TOPIC_WORD)
        shift = np.where(stray, rng.integers(1, len(THEMES), size=n), 0)
        slot_theme = (theme + shift) % len(THEMES)
        words.append(_VOCAB.gather(slot_theme * per_theme + (base + j * step) % per_theme))
    return words


def _item_frame(
    raw: dict[str, np.ndarray], themes: np.ndarray, counts: list[int], start: datetime.date,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """The public item columns; text shows the topic but never the cluster."""
    n = len(raw["topic"])
    topic, code = raw["topic"], raw["item_type"]
    w1, w2, w3, w4, w5 = _topic_words(themes, topic, 5, rng)
    phrases = pl.Series([p for t in ITEM_TYPES for p in TYPE_PHRASES[t]])
    per_type = len(TYPE_PHRASES[ITEM_TYPES[0]])
    cols = pl.DataFrame({
        "code": code, "w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5,
        "n1": _NOISE.gather(rng.integers(0, len(_NOISE), size=n)),
        "n2": _NOISE.gather(rng.integers(0, len(_NOISE), size=n)),
        "show": pl.Series(PODCAST_SHOW_WORDS).gather(rng.integers(0, len(PODCAST_SHOW_WORDS), size=n)),
        "phrase": phrases.gather(code.astype(np.int64) * per_type + rng.integers(0, per_type, size=n)),
        "noisy_title": rng.random(n) < 0.4,
    })
    first = pl.col("w1").str.to_titlecase()
    second = pl.when(pl.col("noisy_title")).then("n1").otherwise("w2").str.to_titlecase()
    title = (
        pl.when(pl.col("code") == 0).then(pl.format("{} {}", second, first))
        .when(pl.col("code") == 1).then(pl.format("The {} {}", first, "show"))
        .otherwise(pl.format("The {} of {}", first, second))
    )
    description = pl.format(
        "{} {}, {} and {}, with {} {} and {} {}.", "phrase", "w1", "w3", "w4", "n1", "w5", "n2", "w2"
    )
    texts = cols.select(title=title, description=description)
    return pl.DataFrame({
        "item_id": _item_ids(code, raw["serial"]),
        "item_type": pl.Series(ITEM_TYPES).gather(code),
        "title": texts["title"],
        "description": texts["description"],
        "creator": _creators(code, topic, len(themes), counts, rng),
        "language": pl.Series([lang for lang, _ in LANGUAGES]).gather(raw["language"]),
        "genres": _genres(themes, topic, rng),
        "duration_ms": raw["duration_ms"],
        "release_date": np.datetime64(start, "D") + raw["release_day"],
        "is_paid": raw["is_paid"],
    })


def _item_ids(code: np.ndarray, serial: np.ndarray) -> pl.Series:
    prefix = pl.Series(ID_PREFIXES).gather(code)
    return prefix + "_" + pl.Series(serial).cast(pl.String).str.zfill(6)


def _creators(code: np.ndarray, topic: np.ndarray, topics: int, counts: list[int],
              rng: np.random.Generator) -> pl.Series:
    """Each (type, topic) has its own pool of creators; names never repeat across pools."""
    names = len(FIRST_NAMES) * len(LAST_NAMES)
    per_pool = np.clip(np.array(counts) // (topics * 6), 3, names // (len(ITEM_TYPES) * topics))
    pool_names = rng.choice(names, size=int(per_pool.sum()) * topics, replace=False)
    pool_start = np.concatenate([[0], np.cumsum(np.repeat(per_pool, topics))])
    pool = code.astype(np.int64) * topics + topic
    pick = pool_names[pool_start[pool] + rng.integers(0, per_pool[code])]
    first = pl.Series(FIRST_NAMES).gather(pick % len(FIRST_NAMES))
    return first + " " + pl.Series(LAST_NAMES).gather(pick // len(FIRST_NAMES))


def _genres(themes: np.ndarray, topic: np.ndarray, rng: np.random.Generator) -> pl.Series:
    """One or two genres of the item's theme, sometimes one of another theme."""
    n = len(topic)
    per_theme = len(THEMES[0][1])
    theme = themes[topic]
    first = theme * per_theme + rng.integers(0, per_theme, size=n)
    second = theme * per_theme + rng.integers(0, per_theme, size=n)
    other = (theme + rng.integers(1, len(THEMES), size=n)) % len(THEMES) * per_theme
    other = other + rng.integers(0, per_theme, size=n)
    frame = pl.DataFrame({
        "g1": _GENRES.gather(first),
        "g2": _GENRES.gather(second),
        "g3": _GENRES.gather(other),
        "has_g2": rng.random(n) < 0.6,
        "has_g3": rng.random(n) < OFF_TOPIC_GENRE,
    })
    genres = pl.concat_list(
        "g1", pl.when(pl.col("has_g2")).then("g2"), pl.when(pl.col("has_g3")).then("g3")
    )
    return frame.select(genres.list.drop_nulls().list.unique(maintain_order=True).alias("genres"))["genres"]


_VOCAB = pl.Series([w for words, _ in THEMES for w in words])
_GENRES = pl.Series([g for _, genres in THEMES for g in genres])
_NOISE = pl.Series(NOISE_WORDS)
