"""Sample world: a landing zone of events, items and users with learnable structure and injected dirt."""
import dataclasses
import datetime
import json
import pathlib
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from worlds.sample_catalog import (
    CLUSTERS,
    ITEM_TYPES,
    TARGET_TYPE,
    Catalog,
    build_catalog,
    default_items_per_type,
)
from worlds.sample_events import day_events
from worlds.sample_files import DEFECT_KINDS, FORMATS, corrupt, write_events
from worlds.sample_users import Population, build_population
from worlds.sample_vocab import THEMES

SPLIT_EVERY = 5  # every fifth arrival day comes as two files of different formats
SECOND_FILE_SHARE = 0.3
UPDATED_ITEM_SHARE = 0.01
MAX_DELAY_DAYS = 3  # late events arrive 1..3 days after they happened
UPDATE_SUFFIX = {"music": " (Remastered)", "podcast": " (Relaunched)", "audiobook": " (Unabridged)"}


@dataclass(frozen=True)
class WorldConfig:
    """What to simulate; the seed fixes every draw, so equal configs give equal bytes."""

    users: int = 2000
    days: int = 120
    seed: int = 0
    end_date: datetime.date | None = None  # last simulated day; None = yesterday (UTC)
    events_per_user_day: float = 1.5  # mean; heavy-tailed across users
    items_per_type: dict[str, int] | None = None  # None: grows with sqrt(users), 3000/1500/800 at 2000
    cold_share: float = 0.7  # users with no audiobook history before the last holdout_days
    new_release_days: int = 14  # a batch of audiobooks is released within these last days
    dirty_rate: float = 0.01  # share of event rows made bad, spread over DEFECT_KINDS
    topics: int = 16
    # Cold users try their first audiobooks only within these last days: the pipeline's validation and
    # holdout periods (valid_days + holdout_days), so both have cold users with targets.
    holdout_days: int = 28


@dataclass(frozen=True)
class WorldSummary:
    """What simulate() wrote, so that ingestion can check its accounting against it."""

    users: int
    items_per_type: dict[str, int]
    items_updated: int  # items overridden by items/items_update.jsonl
    start_date: datetime.date
    end_date: datetime.date
    holdout_start: datetime.date  # first of the last holdout_days
    event_files: int
    rows_per_format: dict[str, int]  # rows written, bad ones included, per file format
    event_rows: int  # = clean_events + every defect count except late_event
    clean_events: int  # distinct valid events, late ones included
    defects: dict[str, int]  # rows per DEFECT_KINDS; late_event rows are valid and also clean
    users_without_target_history: int  # no clean audiobook event before holdout_start
    cold_users_with_holdout_target: int  # of those, users with audiobook events in the holdout days

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True, eq=False)
class World:
    """The hidden truth behind a landing zone: what the files are drawn from."""

    config: WorldConfig
    start: datetime.date
    end: datetime.date
    holdout_start: int  # day index of the first holdout day
    items_per_type: dict[str, int]
    topic_share: np.ndarray  # (T,) global topic popularity
    catalog: Catalog
    population: Population


def build_world(config: WorldConfig) -> World:
    """Topics, items and users for a config; simulate() draws its events from exactly this world."""
    _check(config)
    end = config.end_date or datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    start = end - datetime.timedelta(days=config.days - 1)
    holdout_start = config.days - config.holdout_days
    items_per_type = config.items_per_type or default_items_per_type(config.users, config.topics)
    rng = np.random.default_rng([config.seed, 0])
    themes = np.sort(rng.choice(len(THEMES), size=config.topics, replace=False))
    topic_share = rng.dirichlet(np.full(config.topics, 4.0))
    catalog = build_catalog(items_per_type, themes, topic_share, start, config.days, config.new_release_days, rng)
    population = build_population(config.users, config.topics, topic_share, start, config.days,
                                  holdout_start, config.cold_share, rng)
    return World(config, start, end, holdout_start, dict(items_per_type), topic_share, catalog, population)


def simulate(config: WorldConfig, out: pathlib.Path, *, replace: bool = False) -> WorldSummary:
    """Write a sample world's landing zone under out/; the same config gives the same bytes.

    replace=True first deletes what an earlier run wrote there (events/, items/, users/, _world.json).
    """
    world = build_world(config)
    out = pathlib.Path(out)
    _prepare(out, replace)
    items_updated = _write_catalog(out, world.catalog, np.random.default_rng([config.seed, 3]))
    (out / "users").mkdir(parents=True)
    world.population.users.write_parquet(out / "users" / "users.parquet")

    tally = _Tally(config.users, world.holdout_start)
    counts = [world.items_per_type[t] for t in ITEM_TYPES]
    topic_cdf = np.cumsum(world.topic_share)
    pending: dict[int, list[pl.DataFrame]] = {}
    writes: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1) as writer:  # serialising and gzip overlap the next day's draws
        for day in range(config.days):
            day_rng = np.random.default_rng([config.seed, 1, day])
            events = day_events(world.catalog, world.population, topic_cdf, world.start, day,
                                config.events_per_user_day, day_rng)
            arrivals = _arrivals(events, day, config, pending, day_rng)
            date = world.start + datetime.timedelta(days=day)
            folder = out / "events" / f"date={date.isoformat()}"
            folder.mkdir(parents=True)
            epoch_day = (date - datetime.date(1970, 1, 1)).days
            for part, (fmt, rows) in enumerate(_split(arrivals, day, day_rng)):
                rows, tomorrow = corrupt(rows, fmt, config.dirty_rate, epoch_day, counts, day_rng)
                if day + 1 < config.days:
                    pending.setdefault(day + 1, []).append(tomorrow)
                else:
                    rows = pl.concat([rows, tomorrow])
                tally.add(rows, fmt)
                if len(writes) >= 2:  # bounds memory: at most two files wait for the writer
                    writes.pop(0).result()
                file_rng = np.random.default_rng([config.seed, 2, day, part])
                writes.append(writer.submit(write_events, rows, folder / f"part-{part}.{fmt}", fmt, file_rng))
        for write in writes:
            write.result()

    summary = WorldSummary(
        users=config.users,
        items_per_type=world.items_per_type,
        items_updated=items_updated,
        start_date=world.start,
        end_date=world.end,
        holdout_start=world.start + datetime.timedelta(days=world.holdout_start),
        event_files=tally.files,
        rows_per_format=tally.rows_per_format,
        event_rows=sum(tally.rows_per_format.values()),
        clean_events=tally.clean,
        defects=tally.defects,
        users_without_target_history=int((~tally.target_before).sum()),
        cold_users_with_holdout_target=int((~tally.target_before & tally.target_holdout).sum()),
    )
    (out / "_world.json").write_text(summary.to_json())
    return summary


class _Tally:
    """Counts of what was written, and which users have audiobook events before and in the holdout."""

    def __init__(self, users: int, holdout_start: int) -> None:
        self.holdout_start = holdout_start
        self.files = 0
        self.clean = 0
        self.rows_per_format: dict[str, int] = {}
        self.defects = {kind: 0 for kind in DEFECT_KINDS}
        self.target_before = np.zeros(users, dtype=bool)
        self.target_holdout = np.zeros(users, dtype=bool)

    def add(self, rows: pl.DataFrame, fmt: str) -> None:
        self.files += 1
        self.rows_per_format[fmt] = self.rows_per_format.get(fmt, 0) + rows.height
        for kind, count in rows["_defect"].drop_nulls().value_counts().iter_rows():
            self.defects[kind] += count
        clean = rows.filter(pl.col("_defect").is_null() | (pl.col("_defect") == "late_event"))
        self.clean += clean.height
        target = clean.filter(pl.col("_type") == TARGET_TYPE)
        user, day = target["_user"].to_numpy(), target["_day"].to_numpy()
        self.target_before[user[day < self.holdout_start]] = True
        self.target_holdout[user[day >= self.holdout_start]] = True


def _arrivals(
    events: pl.DataFrame, day: int, config: WorldConfig, pending: dict[int, list[pl.DataFrame]],
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Today's on-time events plus what earlier days held back; holds back today's late events."""
    events = events.with_columns(_fresh=pl.lit(True), _defect=pl.lit(None, dtype=pl.String))
    late = rng.random(events.height) < config.dirty_rate / len(DEFECT_KINDS)
    delay = np.where(late, rng.integers(1, MAX_DELAY_DAYS + 1, size=events.height), 0)
    delay = np.where(day + delay < config.days, delay, 0)  # nothing arrives after the last day
    for k in range(1, MAX_DELAY_DAYS + 1):
        held = events.filter(pl.Series(delay == k))
        pending.setdefault(day + k, []).append(held.with_columns(_fresh=pl.lit(False), _defect=pl.lit("late_event")))
    return pl.concat([events.filter(pl.Series(delay == 0)), *pending.pop(day, [])])


def _split(arrivals: pl.DataFrame, day: int, rng: np.random.Generator) -> list[tuple[str, pl.DataFrame]]:
    """One file per arrival day in the day's format; every SPLIT_EVERY-th day a second in the next format."""
    fmt = FORMATS[day % len(FORMATS)]
    if day % SPLIT_EVERY != SPLIT_EVERY - 1:
        return [(fmt, arrivals)]
    second = pl.Series(rng.random(arrivals.height) < SECOND_FILE_SHARE)
    return [(fmt, arrivals.filter(~second)), (FORMATS[(day + 1) % len(FORMATS)], arrivals.filter(second))]


def _write_catalog(out: pathlib.Path, catalog: Catalog, rng: np.random.Generator) -> int:
    """items.parquet, then items_update.jsonl: a later snapshot of a few items that wins by file name."""
    folder = out / "items"
    folder.mkdir(parents=True)
    items = catalog.items
    items.sort("item_id").write_parquet(folder / "items.parquet")
    released = np.flatnonzero(catalog.release_day < 0)
    chosen = rng.choice(released, size=max(1, round(UPDATED_ITEM_SHARE * len(items))), replace=False)
    suffix = pl.col("item_type").replace_strict(UPDATE_SUFFIX)
    updated = items[np.sort(chosen)].sort("item_id").with_columns(
        title=pl.col("title") + suffix,
        description=pl.col("description") + " New edition.",
        release_date=pl.col("release_date").cast(pl.String),
    )
    updated.write_ndjson(folder / "items_update.jsonl")
    return updated.height


def _prepare(out: pathlib.Path, replace: bool) -> None:
    written = [out / name for name in ("events", "items", "users", "_world.json")]
    existing = [path for path in written if path.exists()]
    if existing and not replace:
        raise FileExistsError(
            f"{existing[0]} already exists; write to an empty folder, or pass replace=True to overwrite it"
        )
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _check(config: WorldConfig) -> None:
    """Reject configurations the generator cannot honour, naming the bad value."""
    problems = []
    if config.users < 1:
        problems.append(f"users must be >= 1 (got {config.users})")
    if not 1 <= config.holdout_days < config.days:
        problems.append(f"holdout_days must be in [1, days) (got {config.holdout_days}, days={config.days})")
    if not 1 <= config.new_release_days <= config.days:
        problems.append(f"new_release_days must be in [1, days] (got {config.new_release_days})")
    if not 0.0 <= config.cold_share <= 1.0:
        problems.append(f"cold_share must be in [0, 1] (got {config.cold_share})")
    if not 0.0 <= config.dirty_rate <= 0.5:
        problems.append(f"dirty_rate must be in [0, 0.5] (got {config.dirty_rate})")
    if config.events_per_user_day <= 0:
        problems.append(f"events_per_user_day must be > 0 (got {config.events_per_user_day})")
    if not 1 <= config.topics <= len(THEMES):
        problems.append(f"topics must be in [1, {len(THEMES)}] (got {config.topics})")
    if config.items_per_type is not None:
        minimum = 2 * config.topics * CLUSTERS  # every (topic, cluster) needs an item released before day 0
        if set(config.items_per_type) != set(ITEM_TYPES):
            problems.append(f"items_per_type needs exactly the keys {ITEM_TYPES} (got {sorted(config.items_per_type)})")
        elif min(config.items_per_type.values()) < minimum:
            problems.append(f"items_per_type needs >= {minimum} items per type for {config.topics} topics "
                            f"(got {config.items_per_type})")
    if problems:
        raise ValueError("WorldConfig: " + "; ".join(problems))
