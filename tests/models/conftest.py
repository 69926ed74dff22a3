"""Synthetic feature frames (the schema of README's Tables) with a planted taste: users follow their community."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest

from models.recommender import FeatureFrames
from warehouse.enrichment_tables import CacheKey, cached_answers
from warehouse.llm_cache import LLMCache

AS_OF = datetime(2024, 4, 15)
CUT = AS_OF - timedelta(days=14)
START = CUT - timedelta(days=90)
EVENT_COLUMNS = ("period", "user_id", "item_id", "event_type")


def make_items(item_ids: list[str], item_types: list[str], genres: list[list[str]] | None = None,
               release_dates: list[date | None] | None = None) -> pl.DataFrame:
    """raw.items rows; every item is English, ten minutes long and free unless told otherwise."""
    n = len(item_ids)
    return pl.DataFrame({
        "item_id": item_ids, "item_type": item_types, "title": item_ids, "description": item_ids,
        "creator": "someone", "language": "en",
        "genres": genres if genres is not None else [[] for _ in range(n)],
        "duration_ms": 600_000, "release_date": release_dates or [date(2020, 1, 1)] * n,
        "is_paid": False, "source_file": "items.parquet",
    }, schema_overrides={"genres": pl.List(pl.String), "release_date": pl.Date, "duration_ms": pl.Int64})


def make_users(user_ids: list[str], countries: list[str] | None = None,
               age_buckets: list[str] | None = None) -> pl.DataFrame:
    n = len(user_ids)
    return pl.DataFrame({"user_id": user_ids, "country": countries or ["SE"] * n,
                         "age_bucket": age_buckets or ["25-34"] * n, "plan": "premium"})


def make_frames(events: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame, valid_days: int = 0) -> FeatureFrames:
    """Feature frames from events (period, user_id, item_id, event_type); a play lasts 80% of the item.

    With `valid_days` the validation period is the last days before CUT, and train ends where it starts;
    without, validation is empty and train runs up to CUT."""
    rng = np.random.default_rng(len(events))
    valid_start = CUT - timedelta(days=valid_days)
    span = {"train": (START, valid_start), "valid": (valid_start, CUT), "holdout": (CUT, AS_OF)}
    offsets = rng.random(events.height)
    events = events.with_columns(
        ts=pl.Series([span[p][0] + (span[p][1] - span[p][0]) * o for p, o in zip(events["period"], offsets)]),
    ).join(items.select("item_id", "item_type", "duration_ms"), on="item_id")
    play = pl.col("event_type") == "play"
    ms = pl.when(play).then(pl.col("duration_ms") * 8 // 10).otherwise(0)
    interactions = events.group_by("period", "user_id", "item_id", "item_type").agg(
        pl.len().cast(pl.Int64).alias("count_events"), play.sum().cast(pl.Int64).alias("count_plays"),
        ms.sum().cast(pl.Int64).alias("ms_played_total"),
        (ms / pl.col("duration_ms")).max().clip(0, 1).alias("completion_rate"),
        play.any().alias("is_played"),
        *[(pl.col("event_type") == kind).any().alias(flag) for kind, flag in
          (("skip", "is_skipped"), ("save", "is_saved"), ("follow", "is_followed"), ("preview", "is_previewed"),
           ("purchase", "is_purchased"))],
        pl.col("ts").min().alias("first_seen_at"), pl.col("ts").max().alias("last_seen_at"),
    ).sort("period", "user_id", "item_id")
    train = interactions.filter(pl.col("period") == "train")
    holdout = interactions.filter(pl.col("period") == "holdout")
    per_user = train.group_by("user_id").agg(
        pl.col("count_events").sum(),
        *[pl.col("count_plays").filter(pl.col("item_type") == t).sum().alias(f"count_{t}_plays")
          for t in ("music", "podcast", "audiobook")],
        pl.len().cast(pl.Int64).alias("count_items"),
        (pl.col("item_type") == "audiobook").any().alias("is_warm"),
    )
    user_stats = (users.join(per_user, on="user_id", how="left")
                  .join(holdout.filter(pl.col("item_type") == "audiobook").select("user_id").unique()
                        .with_columns(has_holdout_target=pl.lit(True)), on="user_id", how="left")
                  .with_columns(pl.col("^count_.*$").fill_null(0), pl.col("is_warm").fill_null(False),
                                pl.col("has_holdout_target").fill_null(False),
                                is_active=pl.col("count_events").fill_null(0) > 0))
    return FeatureFrames(interactions, user_stats, _item_stats(train, items), items,
                         pl.DataFrame({"split": ["train", "valid", "holdout"], "start_at": [START, valid_start, CUT],
                                       "end_at": [valid_start, CUT, AS_OF]}))


def _item_stats(train: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    played = train.filter(pl.col("is_played")).group_by("item_id").agg(
        pl.col("user_id").n_unique().cast(pl.Int64).alias("count_listeners"), pl.col("count_plays").sum(),
        pl.col("completion_rate").median().alias("median_completion"))
    stats = items.select("item_id", "item_type", "language", "release_date").join(played, on="item_id", how="left")
    rank = pl.col("count_listeners").fill_null(0).rank("ordinal", descending=True).over("item_type")
    tier = (rank * 5 / pl.len().over("item_type")).ceil().cast(pl.Int32)
    return stats.with_columns(
        pl.col("count_listeners", "count_plays").fill_null(0),
        popularity_tier=pl.when(pl.col("count_listeners").fill_null(0) == 0).then(5).otherwise(tier),
        is_released=pl.col("release_date") < AS_OF.date(),
    ).drop("release_date")


@dataclass(frozen=True)
class World:
    frames: FeatureFrames
    text: pl.DataFrame  # (item_id, embedding), unit vectors near the item's community direction
    hgnn: pl.DataFrame  # stand-in HGNN: (item_id, embedding) near a community one-hot
    profile: pl.DataFrame  # (user_id, embedding) for 70% of users
    communities: pl.DataFrame  # (user_id, community)


def build_world(n_users: int = 800, n_communities: int = 8, books: int = 15, seed: int = 0) -> World:
    """Users of community c play music, podcasts and audiobooks of c; cold users (half of each community) have
    no audiobooks before the cut, and every user plays two new audiobooks of c in the holdout.

    Warm users play two audiobooks and preview a third in the train period. Within a community
    audiobooks are mildly skewed in popularity; communities are equal, so popularity cannot find c.
    Three more audiobooks per community are released during the holdout; a third of users play one.
    """
    rng = np.random.default_rng(seed)
    community = np.arange(n_users) % n_communities
    user_ids = [f"u{u:04d}" for u in range(n_users)]
    cold = np.arange(n_users) // n_communities % 2 == 1  # half of every community
    rows: list[pl.DataFrame] = []

    def pick(prefix: str, n_items: int, m: int, skew: float, tag: str = "") -> np.ndarray:
        # Weighted sampling without replacement for every user at once (Efraimidis-Spirakis keys).
        weights = (1.0 + np.arange(n_items)) ** -skew
        keys = rng.random((n_users, n_items)) ** (1.0 / weights)
        chosen = np.argsort(-keys, axis=1)[:, :m]
        return np.array([[f"{prefix}{c:02d}_{tag}{j:02d}" for j in row] for c, row in zip(community, chosen)])

    def add(period: str, mask: np.ndarray, ids: np.ndarray, event_type: str) -> None:
        users = np.repeat(np.array(user_ids)[mask], ids.shape[1])
        rows.append(pl.DataFrame({"period": period, "user_id": users, "item_id": ids[mask].ravel(),
                                  "event_type": event_type}))

    every = np.ones(n_users, dtype=bool)
    add("train", every, pick("m", 10, 3, 0.0), "play")
    add("train", every, pick("p", 10, 4, 0.0), "play")
    books_drawn = pick("a", books, 5, 0.7)
    add("train", ~cold, books_drawn[:, :2], "play")
    add("train", ~cold, books_drawn[:, 2:3], "preview")
    add("holdout", every, books_drawn[:, 3:5], "play")
    add("holdout", rng.random(n_users) < 1 / 3, pick("a", 3, 1, 0.0, tag="n"), "play")
    events = pl.concat(rows)

    kinds = [("m", "music", 10), ("p", "podcast", 10), ("a", "audiobook", books), ("a", "audiobook", -3)]
    ids, types, genres, released = [], [], [], []
    for prefix, item_type, count in kinds:
        for c in range(n_communities):
            for j in range(abs(count)):
                ids.append(f"{prefix}{c:02d}_{'n' if count < 0 else ''}{j:02d}")
                types.append(item_type)
                genres.append([f"genre{c}", "fiction"] if item_type == "audiobook" else [])
                released.append(CUT.date() + timedelta(days=3) if count < 0 else date(2020, 1, 1))
    items = make_items(ids, types, genres, released)
    countries = rng.choice(["SE", "US", "DE"], n_users).tolist()
    frames = make_frames(events, items, make_users(user_ids, countries))

    of_item = items["item_id"].str.slice(1, 2).cast(pl.Int64).to_numpy()
    directions = rng.normal(size=(n_communities, 16))
    text = _unit(directions[of_item] + 0.6 * rng.normal(size=(len(ids), 16)))
    hgnn = _unit(np.eye(n_communities)[of_item] + 0.1 * rng.normal(size=(len(ids), n_communities)))
    has_profile = rng.random(n_users) < 0.7
    profile = _unit(directions[community] + 0.8 * rng.normal(size=(n_users, 16)))[has_profile]
    graph_items = items["item_type"].is_in(["podcast", "audiobook"]).to_numpy()
    return World(
        frames,
        pl.DataFrame({"item_id": ids, "embedding": text.tolist()}),
        pl.DataFrame({"item_id": np.array(ids)[graph_items], "embedding": hgnn[graph_items].tolist()}),
        pl.DataFrame({"user_id": np.array(user_ids)[has_profile], "embedding": profile.tolist()}),
        pl.DataFrame({"user_id": user_ids, "community": community}),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def world() -> World:
    return build_world()


@pytest.fixture(scope="session")
def frames_from() -> Callable[..., FeatureFrames]:
    """Builds FeatureFrames from (period, user_id, item_id, event_type) tuples and {item_id: item_type}."""

    def build(events: list[tuple[str, str, str, str]], item_types: dict[str, str],
              users: list[str] | None = None) -> FeatureFrames:
        rows = pl.DataFrame(events, schema=list(EVENT_COLUMNS), orient="row")
        user_ids = users or sorted(set(rows["user_id"]))
        return make_frames(rows, make_items(list(item_types), list(item_types.values())), make_users(user_ids))

    return build


class StoredCache:
    """run_batch's cache over DuckDB as the enrichment assets use it: answers read by cached_answers and
    stored by LLMCache.put_many (here after every batch; the assets once a run's calls are done)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        LLMCache(con)  # the table exists from the start, as once an enrichment asset has run

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, dict[str, Any]]:
        return cached_answers(self.con, keys)

    def put_many(self, rows: Sequence[dict[str, Any]]) -> None:
        LLMCache(self.con).put_many(rows)


@pytest.fixture()
def cache(tmp_path: Path) -> StoredCache:
    """An enrich.llm_cache in a fresh DuckDB file."""
    return StoredCache(duckdb.connect(str(tmp_path / "w.duckdb")))
