"""Sample-world listening: one day of clean events drawn from each user's taste."""
import datetime

import numpy as np
import polars as pl

from worlds.sample_catalog import CLUSTERS, ITEM_TYPES, TARGET_TYPE, Catalog
from worlds.sample_users import Population
from worlds.sample_vocab import LANGUAGES

EVENT_TYPES: tuple[str, ...] = ("play", "skip", "save", "follow", "purchase", "preview")
CONTEXTS: tuple[str, ...] = ("home", "search", "library", "autoplay", "radio")
EXPLORE = 0.1  # share of events on a topic drawn from global popularity instead of the user's taste
CLUSTER_LOYALTY = 0.85  # chance that a user stays in their own cluster of a topic
LIKED_TASTE = 0.12  # taste share above which a topic counts as liked
CANDIDATES = 3  # draws per event to find an item in a language the user understands
ENGLISH = [lang for lang, _ in LANGUAGES].index("en")
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000

# [item type, liked] -> probabilities over EVENT_TYPES; weak signals sit on podcasts and audiobooks
EVENT_TYPE_P = np.array([
    [[0.62, 0.35, 0.02, 0.01, 0.00, 0.00], [0.84, 0.08, 0.06, 0.02, 0.00, 0.00]],
    [[0.60, 0.28, 0.02, 0.02, 0.00, 0.08], [0.72, 0.05, 0.06, 0.10, 0.00, 0.07]],
    [[0.55, 0.22, 0.02, 0.01, 0.01, 0.19], [0.66, 0.04, 0.08, 0.06, 0.06, 0.10]],
])
# [item type] -> probabilities over CONTEXTS
CONTEXT_P = np.array([
    [0.25, 0.10, 0.25, 0.20, 0.20],
    [0.35, 0.20, 0.40, 0.05, 0.00],
    [0.40, 0.25, 0.35, 0.00, 0.00],
])
# hour-of-day weights: commutes and evenings on weekdays, late mornings at weekends
HOUR_WEEKDAY = np.array([2, 1, 1, 1, 1, 2, 4, 8, 10, 7, 5, 5, 6, 5, 5, 5, 6, 9, 10, 9, 8, 7, 5, 3.0])
HOUR_WEEKEND = np.array([4, 3, 2, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 7, 7, 7, 7, 7, 8, 8, 8, 7, 6, 5.0])
WEEKDAY_FACTOR = np.array([1.0, 0.97, 0.98, 1.0, 1.08, 1.15, 1.05])  # Monday first


def day_events(
    catalog: Catalog, population: Population, topic_cdf: np.ndarray, start: datetime.date, day: int,
    events_per_user_day: float, rng: np.random.Generator,
) -> pl.DataFrame:
    """Clean events of one day, in time order, plus internal columns _user, _type and _day."""
    date = start + datetime.timedelta(days=day)
    rate = events_per_user_day * population.activity * WEEKDAY_FACTOR[date.weekday()]
    rate = np.where(population.signup_day <= day, rate, 0.0)
    user = np.repeat(np.arange(len(rate), dtype=np.int32), rng.poisson(rate))
    n = len(user)

    weight = population.type_weight[user]  # (n, types)
    weight[:, TARGET_TYPE] = np.where(population.audiobook_from[user] <= day, population.converted_weight[user], 0.0)
    item_type = _pick(np.cumsum(weight, axis=1), rng.random(n))
    taste_topic = _pick(population.taste_cdf[user], rng.random(n))
    explore_topic = _pick(topic_cdf[None, :], rng.random(n))
    topic = np.where(rng.random(n) < EXPLORE, explore_topic, taste_topic)
    loyal = rng.random(n) < CLUSTER_LOYALTY
    cluster = np.where(loyal, population.cluster_pref[user, topic], rng.integers(0, CLUSTERS, size=n))
    item = _pick_items(catalog, day, item_type, topic, cluster, population.language[user], rng)

    item_topic = catalog.topic[item]
    liked = (population.taste[user, item_topic] >= LIKED_TASTE) & (
        catalog.cluster[item] == population.cluster_pref[user, item_topic]
    )
    event_type = _pick(np.cumsum(EVENT_TYPE_P[item_type, liked.astype(np.int64)], axis=1), rng.random(n))
    event_type = np.where((event_type == 4) & ~catalog.is_paid[item], 0, event_type)
    ms_played = _ms_played(event_type, liked, catalog.duration_ms[item], rng)
    context = _pick(np.cumsum(CONTEXT_P[item_type], axis=1), rng.random(n))
    hours = HOUR_WEEKEND if date.weekday() >= 5 else HOUR_WEEKDAY
    hour = _pick(np.cumsum(hours / hours.sum())[None, :], rng.random(n))
    day_us = (date - datetime.date(1970, 1, 1)).days * DAY_US
    ts = day_us + hour * HOUR_US + rng.integers(0, HOUR_US, size=n)

    order = np.argsort(ts, kind="stable")
    user, item, ts = user[order], item[order], ts[order]
    seq = pl.Series(np.arange(n)).cast(pl.String).str.zfill(8)
    return pl.DataFrame({
        "event_id": f"ev{date:%Y%m%d}_" + seq,
        "user_id": population.user_id.gather(user),
        "item_id": catalog.items["item_id"].gather(item),
        "ts": pl.Series(ts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "event_type": pl.Series(EVENT_TYPES).gather(event_type[order]),
        "ms_played": ms_played[order],
        "context": pl.Series(CONTEXTS).gather(context[order]),
        "country": population.country.gather(user),
        "_user": user,
        "_type": item_type[order].astype(np.int8),
        "_day": np.full(n, day, dtype=np.int32),
    })


def _pick(cdf: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Index of the category whose cumulative weight first exceeds r (rows of cdf, or one shared row)."""
    scaled = r * cdf[:, -1]
    return (scaled[:, None] >= cdf[:, :-1]).sum(axis=1)


def _pick_items(
    catalog: Catalog, day: int, item_type: np.ndarray, topic: np.ndarray, cluster: np.ndarray,
    language: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """Popularity-weighted draw within (type, topic, cluster) among released items.

    Falls back to the whole topic, then the whole type, when a segment has nothing released yet;
    keeps the first of CANDIDATES draws in the user's language or English.
    """
    weight = np.where(catalog.release_day <= day, catalog.popularity, 0.0)
    cw = np.concatenate([[0.0], np.cumsum(weight)])
    bounds = catalog.segment_bounds
    topics = (len(bounds) - 1) // (CLUSTERS * len(ITEM_TYPES))
    topic_segment = (item_type.astype(np.int64) * topics + topic) * CLUSTERS
    lo, hi = bounds[topic_segment + cluster], bounds[topic_segment + cluster + 1]
    for wide_lo, wide_hi in (
        (bounds[topic_segment], bounds[topic_segment + CLUSTERS]),
        (bounds[item_type * topics * CLUSTERS], bounds[(item_type + 1) * topics * CLUSTERS]),
    ):
        empty = cw[hi] <= cw[lo]
        lo, hi = np.where(empty, wide_lo, lo), np.where(empty, wide_hi, hi)
    low, mass, high = cw[lo], cw[hi] - cw[lo], np.nextafter(cw[hi], -np.inf)

    def draw(rows: np.ndarray) -> np.ndarray:
        target = np.minimum(low[rows] + rng.random(len(rows)) * mass[rows], high[rows])
        return np.searchsorted(cw, target, side="right") - 1

    def understood(items: np.ndarray, rows: np.ndarray) -> np.ndarray:
        lang = catalog.language[items]
        return (lang == language[rows]) | (lang == ENGLISH)

    rows = np.arange(len(lo))
    chosen = draw(rows)
    for attempt in range(1, CANDIDATES):
        rows = rows[~understood(chosen[rows], rows)]
        candidate = draw(rows)
        # the last draw stands whatever its language
        keep = understood(candidate, rows) | (attempt == CANDIDATES - 1)
        chosen[rows[keep]] = candidate[keep]
    return chosen


def _ms_played(event_type: np.ndarray, liked: np.ndarray, duration: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Plays run further on liked items; skips and previews are short; other signals play nothing."""
    n = len(event_type)
    completion = np.where(liked, rng.beta(4.0, 1.5, size=n), rng.beta(1.2, 3.0, size=n))
    play = np.clip(completion * duration, 1_000, duration)
    skip = np.minimum(rng.integers(500, 30_000, size=n), duration)
    preview = np.minimum(rng.integers(15_000, 120_000, size=n), duration)
    ms = np.select([event_type == 0, event_type == 1, event_type == 5], [play, skip, preview], 0)
    return ms.astype(np.int64)
