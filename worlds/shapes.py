"""Small landing zones of the shapes a foreign export can have, written by parametrised builders.

Nothing here comes from the sample world: each `Shape` says who listens to what and when, `build` turns
it into rows, and `write` lays them out as README's Landing zone in mixed formats (jsonl, csv,
parquet, gzip or not). Worlds are tens of users and items so `crossfade run` on one takes seconds.

Users fall in three taste clusters (user i in cluster i % 3); each cluster has its own music,
podcasts and target-type items, and every item's description names its cluster's topic, so a model
can learn a cold user's taste from the other types. Roles for the target type (audiobook):
- warm: target events in the train period (and, with `warm_targets`, new ones in validation and the holdout);
- cold: none in the train period; with `cold_targets`, half of them have their first target events in
  validation, the other half in the holdout, so both periods have a cold slice.
"""
from __future__ import annotations

import datetime as dt
import gzip
import io
import itertools
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

TYPES = ("music", "podcast", "audiobook")
TARGET = "audiobook"
HOLDOUT_DAYS = 14  # crossfade's default holdout and validation periods; the worlds' periods are laid out around them
VALID_DAYS = 14
TOPICS = ("space exploration", "medieval history", "home cooking")
GENRES = (("science", "documentary"), ("history", "drama"), ("food", "lifestyle"))
EVENT_FORMATS = ("jsonl", "csv.gz", "parquet", "jsonl.gz", "csv", "parquet.gz")


@dataclass(frozen=True)
class Shape:
    """Who does what in a world; the defaults are a plain healthy world of 24 users over 30 days."""

    name: str
    users: int = 24
    items_per_type: int = 24  # split evenly over the three clusters
    days: int = 44  # the last HOLDOUT_DAYS are the holdout, the VALID_DAYS before them validation, the rest train
    end_date: dt.date = dt.date(2026, 11, 1)  # the last day with events; the as-of date is the day after
    warm_share: float = 0.5  # share of users with target events in the train period
    warm_targets: bool = True  # warm users touch new target items in the validation and holdout periods
    cold_targets: bool = True  # cold users touch target items in the validation and holdout periods
    silent_types: tuple[str, ...] = ()  # catalogue types nobody listens to
    head_only_targets: bool = False  # holdout targets only on the most listened target items (tiers 1-2)
    bare_items: bool = False  # every other item has no genres and no description
    unknown_users: int = 0  # users with events who are missing from the users file
    late: bool = False  # every event arrives in the last day's partition
    heavy_user: bool = False  # user 0 has as many events as everybody else together
    dirty: bool = False  # a few exact duplicates and broken rows beside the good ones
    seed: int = 0
    description: str = ""

    @property
    def as_of(self) -> dt.date:
        return self.end_date + dt.timedelta(days=1)

    @property
    def cut(self) -> dt.date:
        return self.as_of - dt.timedelta(days=HOLDOUT_DAYS)

    @property
    def valid_start(self) -> dt.date:
        return self.cut - dt.timedelta(days=VALID_DAYS)


@dataclass
class World:
    """The rows of one world and, after `write`, what was written where."""

    shape: Shape
    items: list[dict[str, Any]]
    users: list[dict[str, Any]]
    events: list[tuple[dt.date, dict[str, Any]]]  # (arrival day, row); rows may repeat or be broken
    files: dict[str, int] = field(default_factory=dict)  # relative path -> event rows written

    @property
    def event_rows(self) -> int:
        return len(self.events)

    @property
    def distinct_event_ids(self) -> int:
        return len({row["event_id"] for _, row in self.events})


def build(shape: Shape) -> World:
    """The items, users and events of `shape` (deterministic for its seed)."""
    rng = random.Random(zlib.crc32(f"{shape.name}:{shape.seed}".encode()))
    _TICKS.clear()
    items = [_item(kind, n, shape) for kind in TYPES for n in range(shape.items_per_type)]
    by_cluster = {(kind, c): [i["item_id"] for i in items if i["item_type"] == kind and _cluster(i) == c]
                  for kind in TYPES for c in range(len(TOPICS))}
    user_ids = [f"u{n:03d}" for n in range(shape.users)] + [f"x{n:03d}" for n in range(shape.unknown_users)]
    users = [{"user_id": u, "country": ("SE", "US", "DE")[n % 3], "age_bucket": ("18-24", "25-34", "35-44")[n % 3],
              "signup_date": "2024-01-01", "plan": ("free", "premium")[n % 2]}
             for n, u in enumerate(user_ids) if u.startswith("u")]
    warm = {u for n, u in enumerate(user_ids) if n < round(shape.warm_share * shape.users)}
    events: list[dict[str, Any]] = []
    for n, user in enumerate(user_ids):
        cluster = n % len(TOPICS)
        pick = _picker(rng, by_cluster, cluster)
        rounds = 1 + (shape.users + shape.unknown_users if user == "u000" and shape.heavy_user else 0)
        for _ in range(rounds):
            for period in ("train", "valid", "holdout"):
                days = _days(shape, period)
                if not days:
                    continue
                for kind in ("music", "podcast"):
                    events += [_event(rng, user, item, days) for item in pick(kind, 3)]
                is_warm = user in warm
                if shape.head_only_targets:
                    targets = _head_targets(by_cluster[(TARGET, cluster)], n // len(TOPICS), period, is_warm)
                elif period == "train":
                    targets = pick(TARGET, 2) if is_warm else []
                elif is_warm:
                    targets = pick(TARGET, 2) if shape.warm_targets else []
                else:  # half the cold users convert during validation, the other half in the holdout
                    converts = (period == "valid") == (n % 2 == 0)
                    targets = pick(TARGET, 2) if shape.cold_targets and converts else []
                events += [_event(rng, user, item, days, "play") for item in targets]
    events = [e for e in events if _type_of(e["item_id"]) not in shape.silent_types]
    for number, event in enumerate(events):
        event["event_id"] = f"{shape.name}-{number:06d}"
    if shape.dirty:
        events += [dict(events[k]) for k in range(0, len(events), max(1, len(events) // 5))]  # exact repeats
        events += [dict(events[1], event_id=f"{shape.name}-broken-type", event_type="listened"),
                   dict(events[2], event_id=f"{shape.name}-broken-ms", ms_played=-5)]
    last = shape.end_date
    arrivals = [(last if shape.late else dt.date.fromisoformat(e["ts"][:10]), e) for e in events]
    return World(shape, items, users, sorted(arrivals, key=lambda pair: (pair[0], pair[1]["ts"])))


def write(world: World, landing: Path) -> World:
    """The landing zone of `world` under `landing` (items, users, one events file per arrival day)."""
    landing.mkdir(parents=True, exist_ok=True)
    items = world.items
    half = len(items) // 2
    _write_rows(landing / "items" / "items-1.parquet", items[:half])
    _write_rows(landing / "items" / "items-2.csv", items[half:])
    _write_rows(landing / "users" / "users.csv.gz", world.users)
    days = sorted({day for day, _ in world.events})
    for index, day in enumerate(days):
        rows = [row for arrival, row in world.events if arrival == day]
        relative = f"events/date={day.isoformat()}/part-0.{EVENT_FORMATS[index % len(EVENT_FORMATS)]}"
        _write_rows(landing / relative, rows)
        world.files[relative] = len(rows)
    return world


def shapes() -> Iterator[Shape]:
    """One world per shape a foreign export can have; compatible shapes share a world."""
    yield Shape("no_cold_targets", warm_share=0.6, cold_targets=False,
                description="no cold user has a target event in the holdout (cold slice empty)")
    yield Shape("no_warm", warm_share=0.0,
                description="no warm user: no target-type event in the train period at all")
    yield Shape("no_holdout_targets", warm_targets=False, cold_targets=False,
                description="no target-type event in the holdout")
    yield Shape("head_only_targets", head_only_targets=True, warm_share=0.75, cold_targets=False,
                description="holdout targets only on popular items (long-tail slice empty)")
    yield Shape("silent_podcasts", silent_types=("podcast",), bare_items=True,
                description="a catalogue type (podcast, a graph type) with no events; items without genres "
                            "or descriptions")
    yield Shape("single_user", users=1, warm_share=1.0, description="a single user")
    yield Shape("one_day", days=1, description="one day of data")
    yield Shape("foreign_export", late=True, heavy_user=True, unknown_users=3, dirty=True,
                description="every event late (one arrival partition), one user with half the events, events "
                            "of users missing from the users file, duplicates and broken rows")


def _item(kind: str, n: int, shape: Shape) -> dict[str, Any]:
    cluster = n % len(TOPICS)
    bare = shape.bare_items and n % 2 == 1
    return {"item_id": f"{kind[0]}{n:03d}", "item_type": kind, "title": f"{TOPICS[cluster].title()} {kind} {n}",
            "description": None if bare else f"A {kind} about {TOPICS[cluster]}, part {n}.",
            "creator": f"creator {cluster}", "language": "en",
            "genres": [] if bare else list(GENRES[cluster]), "duration_ms": 600_000 * (1 + n % 5),
            "release_date": "2020-01-01", "is_paid": kind == TARGET and n % 4 == 0}


def _cluster(item: dict[str, Any]) -> int:
    return int(item["item_id"][1:]) % len(TOPICS)


def _type_of(item_id: str) -> str:
    return {kind[0]: kind for kind in TYPES}[item_id[0]]


def _head_targets(pool: list[str], k: int, period: str, is_warm: bool) -> list[str]:
    """Target items of the k-th warm user of a cluster when holdout targets are head items only.

    The cluster's first three items are its head: every warm user hears two of them in the train
    period and the third (a different one per user) in the holdout, so each head item has about twice
    the listeners of any other; each warm user also hears one of the other items in train, round robin,
    so every item has listeners and the heads fill popularity tiers 1-2 (the top 40%).
    """
    if not is_warm:
        return []
    heads, others = pool[:3], pool[3:]
    skipped = heads[k % len(heads)]
    if period == "valid":
        return []  # the skipped head waits for the holdout, so validation has no long-tail target either
    if period == "holdout":
        return [skipped]
    return [h for h in heads if h != skipped] + [others[k % len(others)]]


def _picker(rng: random.Random, by_cluster: dict[tuple[str, int], list[str]], cluster: int):
    """pick(kind, n): n distinct items of the user's cluster; target items are not picked twice while others remain."""
    seen: set[str] = set()

    def pick(kind: str, n: int) -> list[str]:
        pool = by_cluster[(kind, cluster)]
        if kind == TARGET:
            pool = [i for i in pool if i not in seen] or pool
        chosen = rng.sample(pool, min(n, len(pool)))
        if kind == TARGET:
            seen.update(chosen)
        return chosen

    return pick


def _days(shape: Shape, period: str) -> list[dt.date]:
    first = shape.end_date - dt.timedelta(days=shape.days - 1)
    every = [first + dt.timedelta(days=d) for d in range(shape.days)]
    start, end = {"train": (dt.date.min, shape.valid_start), "valid": (shape.valid_start, shape.cut),
                  "holdout": (shape.cut, dt.date.max)}[period]
    return [d for d in every if start <= d < end]


_TICKS: dict[dt.date, Iterator[int]] = {}  # one round-robin counter per period, reset by build()


def _event(rng: random.Random, user: str, item: str, days: list[dt.date], kind: str | None = None) -> dict[str, Any]:
    """One event on a day of `days`, round robin so every day has about as many events (the raw gate compares a
    partition's volume with the trailing median); target items are played (listeners count plays only)."""
    day = days[next(_TICKS.setdefault(days[0], itertools.count())) % len(days)]
    at = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)), dt.timezone.utc)
    kind = kind or rng.choice(("play", "play", "play", "skip", "save", "preview"))
    return {"event_id": "", "user_id": user, "item_id": item, "ts": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "event_type": kind, "ms_played": 0 if kind in ("save", "preview") else rng.randrange(30_000, 600_000),
            "context": rng.choice(("home", "search", "library", "autoplay")), "country": "SE"}


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """rows in the format the file name says (.jsonl, .csv, .parquet, each optionally .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name.removesuffix(".gz")
    if stem.endswith(".parquet"):
        buffer = io.BytesIO()
        pl.DataFrame(rows, infer_schema_length=None).write_parquet(buffer)
        data = buffer.getvalue()
    elif stem.endswith(".csv"):
        columns = list(rows[0])
        lines = [",".join(columns)] + [",".join(csv_cell(row.get(c)) for c in columns) for row in rows]
        data = ("\n".join(lines) + "\n").encode()
    else:
        data = ("\n".join(json.dumps(row) for row in rows) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def csv_cell(value: Any) -> str:
    """One CSV cell as the landing contract writes it: lists joined by '|', quoted when needed."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = "|".join(value)  # the contract's CSV form of a list of genres
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text
