"""Sample-world generator: same bytes per seed, every format and defect present and counted, learnable structure."""
import dataclasses
import datetime
import gzip
import hashlib
import json
import pathlib
from collections import Counter

import numpy as np
import polars as pl
import pytest

from worlds.sample import World, WorldConfig, WorldSummary, build_world, simulate
from worlds.sample_events import EVENT_TYPES
from worlds.sample_files import DEFECT_KINDS, EVENT_COLUMNS

# conversions in the last 14 days: a 30-day world keeps 16 days of history to be warm or cold in
CONFIG = WorldConfig(users=300, days=30, seed=7, end_date=datetime.date(2025, 3, 31), dirty_rate=0.04, holdout_days=14)
REQUIRED = ["event_id", "user_id", "item_id", "ts"]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, WorldSummary]:
    out = tmp_path_factory.mktemp("landing")
    return out, simulate(CONFIG, out)


@pytest.fixture(scope="module")
def summary(landing: tuple[pathlib.Path, WorldSummary]) -> WorldSummary:
    return landing[1]


@pytest.fixture(scope="module")
def items(landing: tuple[pathlib.Path, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(landing[0] / "items" / "items.parquet")


@pytest.fixture(scope="module")
def parsed(landing: tuple[pathlib.Path, WorldSummary]) -> tuple[pl.DataFrame, int]:
    """Every readable event row with its arrival date and format, and the count of unreadable lines."""
    frames, broken = [], 0
    for path in sorted((landing[0] / "events").glob("date=*/part-*")):
        arrival = datetime.date.fromisoformat(path.parent.name.removeprefix("date="))
        fmt = path.name.split(".", 1)[1]
        if fmt == "parquet":
            frame = pl.read_parquet(path)
        else:
            text = gzip.decompress(path.read_bytes()) if fmt.endswith(".gz") else path.read_bytes()
            lines = text.decode().splitlines()
            rows = [_parse_json(line) for line in lines] if fmt.startswith("jsonl") else _parse_csv(lines)
            broken += sum(row is None for row in rows)
            frame = _text_frame([row for row in rows if row is not None])
        frames.append(frame.select(EVENT_COLUMNS).with_columns(arrival_date=pl.lit(arrival), fmt=pl.lit(fmt)))
    return pl.concat(frames), broken


def _parse_json(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _parse_csv(lines: list[str]) -> list[dict | None]:
    assert lines[0].split(",") == list(EVENT_COLUMNS)
    fields = [line.split(",") for line in lines[1:]]
    return [dict(zip(EVENT_COLUMNS, [v or None for v in f])) if len(f) == len(EVENT_COLUMNS) else None for f in fields]


def _text_frame(rows: list[dict]) -> pl.DataFrame:
    schema = {c: pl.String for c in EVENT_COLUMNS}
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return frame.with_columns(
        pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.6fZ", time_zone="UTC"),
        pl.col("ms_played").cast(pl.Int64),
    )


def _valid(items: pl.DataFrame) -> pl.Expr:
    """What a reader must accept: every defect kind but duplicates and late events fails this."""
    return (
        pl.all_horizontal(pl.col(REQUIRED).is_not_null())
        & pl.col("item_id").is_in(items["item_id"].implode())
        & (pl.col("ms_played") >= 0)
        & (pl.col("ts").dt.date() <= pl.col("arrival_date"))
        & pl.col("event_type").is_in(list(EVENT_TYPES))
    )


def _checksums(folder: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_writes_same_bytes(tmp_path: pathlib.Path) -> None:
    config = WorldConfig(users=120, days=20, seed=3, end_date=datetime.date(2025, 1, 31), dirty_rate=0.05,
                         holdout_days=7)
    simulate(config, tmp_path / "a")
    simulate(config, tmp_path / "b")
    simulate(dataclasses.replace(config, seed=4), tmp_path / "c")
    first = _checksums(tmp_path / "a")
    assert len(first) > 20
    assert first == _checksums(tmp_path / "b")
    day_file = "events/date=2025-01-12/part-0.jsonl"
    assert first[day_file] != _checksums(tmp_path / "c")[day_file]


def test_every_format_and_a_split_day_are_written(landing: tuple[pathlib.Path, WorldSummary]) -> None:
    out, summary = landing
    files = list((out / "events").glob("date=*/part-*"))
    assert {p.name.split(".", 1)[1] for p in files} == {"jsonl", "csv", "parquet", "jsonl.gz", "csv.gz"}
    assert len({p.parent for p in files}) == CONFIG.days
    assert any(len(list(folder.iterdir())) == 2 for folder in (out / "events").iterdir())
    assert summary.event_files == len(files)
    assert json.loads((out / "_world.json").read_text())["clean_events"] == summary.clean_events


def test_rows_add_up(parsed: tuple[pl.DataFrame, int], summary: WorldSummary) -> None:
    events, broken = parsed
    bad = sum(n for kind, n in summary.defects.items() if kind != "late_event")
    assert summary.event_rows == summary.clean_events + bad
    assert events.height + broken == summary.event_rows
    by_format = events.group_by("fmt").len().to_dict(as_series=False)
    assert sum(by_format["len"]) + broken == sum(summary.rows_per_format.values())


def _late_rows(events: pl.DataFrame) -> pl.DataFrame:
    """Rows that arrived after their day and whose event_id no earlier folder holds."""
    first_arrival = events.group_by("event_id").agg(pl.col("arrival_date").min().alias("first"))
    return (
        events.join(first_arrival, on="event_id")
        .filter((pl.col("ts").dt.date() < pl.col("arrival_date")) & (pl.col("arrival_date") == pl.col("first")))
        .unique("event_id")
    )


def _count_defect(kind: str, events: pl.DataFrame, broken: int, items: pl.DataFrame) -> int:
    with_id = events.filter(pl.col("event_id").is_not_null())
    known = pl.col("item_id").is_in(items["item_id"].implode())
    counts = {
        "broken_line": lambda: broken,
        "missing_field": lambda: events.filter(pl.any_horizontal(pl.col(REQUIRED).is_null())).height,
        "unknown_item": lambda: events.filter(pl.col("item_id").is_not_null() & ~known).height,
        "negative_ms_played": lambda: events.filter(pl.col("ms_played") < 0).height,
        "future_timestamp": lambda: events.filter(pl.col("ts").dt.date() > pl.col("arrival_date")).height,
        "bad_event_type": lambda: events.filter(~pl.col("event_type").is_in(list(EVENT_TYPES))).height,
        "exact_duplicate": lambda: with_id.height - with_id["event_id"].n_unique(),
        "late_event": lambda: _late_rows(events).height,
    }
    return counts[kind]()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_kind_is_present_and_counted(
    kind: str, parsed: tuple[pl.DataFrame, int], items: pl.DataFrame, summary: WorldSummary
) -> None:
    events, broken = parsed
    assert summary.defects[kind] > 0
    assert _count_defect(kind, events, broken, items) == summary.defects[kind]


def test_duplicates_are_exact_and_some_arrive_a_day_later(parsed: tuple[pl.DataFrame, int]) -> None:
    events = parsed[0].filter(pl.col("event_id").is_not_null())
    repeated = events.filter(pl.len().over("event_id") > 1)
    assert repeated.drop("arrival_date", "fmt").unique().height == repeated["event_id"].n_unique()
    arrivals = repeated.group_by("event_id").agg(pl.col("arrival_date").n_unique())
    assert arrivals.filter(pl.col("arrival_date") > 1).height > 0


def test_clean_events_are_the_valid_distinct_rows(
    parsed: tuple[pl.DataFrame, int], items: pl.DataFrame, summary: WorldSummary
) -> None:
    events = parsed[0]
    assert events.filter(_valid(items))["event_id"].n_unique() == summary.clean_events


def test_late_events_arrive_one_to_three_days_later(parsed: tuple[pl.DataFrame, int]) -> None:
    late = _late_rows(parsed[0])
    delay = (late["arrival_date"] - late["ts"].dt.date()).dt.total_days()
    assert delay.min() >= 1 and delay.max() <= 3


def test_no_event_before_its_item_release(parsed: tuple[pl.DataFrame, int], items: pl.DataFrame) -> None:
    events = parsed[0].filter(pl.col("ts").is_not_null()).join(items, on="item_id")
    assert events.height > 10_000
    assert events.filter(pl.col("ts").dt.date() < pl.col("release_date")).height == 0


def test_new_audiobooks_are_released_and_heard_in_the_last_days(
    parsed: tuple[pl.DataFrame, int], items: pl.DataFrame, summary: WorldSummary
) -> None:
    first_new = summary.end_date - datetime.timedelta(days=CONFIG.new_release_days - 1)
    new = items.filter((pl.col("item_type") == "audiobook") & (pl.col("release_date") >= first_new))
    assert new.height >= 0.05 * summary.items_per_type["audiobook"]
    assert parsed[0].filter(pl.col("item_id").is_in(new["item_id"].implode())).height > 0


def _audiobook_users(events: pl.DataFrame, items: pl.DataFrame, before: bool, holdout: datetime.date) -> set[str]:
    books = items.filter(pl.col("item_type") == "audiobook")["item_id"].implode()
    in_period = pl.col("ts").dt.date() < holdout if before else pl.col("ts").dt.date() >= holdout
    rows = events.filter(_valid(items) & pl.col("item_id").is_in(books) & in_period)
    return set(rows["user_id"].to_list())


def test_cold_share_is_about_the_configured_share(
    parsed: tuple[pl.DataFrame, int], items: pl.DataFrame, summary: WorldSummary
) -> None:
    warm = _audiobook_users(parsed[0], items, before=True, holdout=summary.holdout_start)
    cold = CONFIG.users - len(warm)
    assert cold == summary.users_without_target_history
    # a few users meant to be warm are quiet enough to miss audiobooks by chance
    assert CONFIG.cold_share - 0.05 <= cold / CONFIG.users <= CONFIG.cold_share + 0.1


def test_cold_users_try_audiobooks_in_the_holdout(
    parsed: tuple[pl.DataFrame, int], items: pl.DataFrame, summary: WorldSummary
) -> None:
    warm = _audiobook_users(parsed[0], items, before=True, holdout=summary.holdout_start)
    holdout = _audiobook_users(parsed[0], items, before=False, holdout=summary.holdout_start)
    converted = holdout - warm
    assert len(converted) == summary.cold_users_with_holdout_target
    assert 0.15 <= len(converted) / summary.users_without_target_history <= 0.4
    assert len(holdout & warm) > 0.5 * len(warm)  # warm users keep listening


def _word_sets(world: World) -> tuple[list[set[str]], np.ndarray, np.ndarray]:
    text = world.catalog.items.select(pl.concat_str("title", "description", separator=" ").str.to_lowercase())
    words = [set(t.replace(",", " ").replace(".", " ").split()) for t in text.to_series().to_list()]
    # template words ("a", "about", "with") are in every item and say nothing about the topic
    common = {w for w, n in Counter(w for ws in words for w in ws).items() if n > 0.1 * len(words)}
    return [ws - common for ws in words], world.catalog.topic, world.catalog.cluster


def _mean_jaccard(words: list[set[str]], pairs: list[tuple[int, int]]) -> float:
    return float(np.mean([len(words[a] & words[b]) / len(words[a] | words[b]) for a, b in pairs]))


def test_text_shows_the_topic_but_not_the_cluster() -> None:
    words, topic, cluster = _word_sets(build_world(CONFIG))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(words), size=(2, 20_000))
    same_topic = [(x, y) for x, y in zip(a, b) if x != y and topic[x] == topic[y]]
    cross_topic = [(x, y) for x, y in zip(a, b) if topic[x] != topic[y]]
    same_cluster = [(x, y) for x, y in same_topic if cluster[x] == cluster[y]]
    other_cluster = [(x, y) for x, y in same_topic if cluster[x] != cluster[y]]
    assert _mean_jaccard(words, same_topic) > 3 * _mean_jaccard(words, cross_topic)
    assert abs(_mean_jaccard(words, same_cluster) - _mean_jaccard(words, other_cluster)) < 0.02


def test_co_listening_reveals_the_hidden_clusters(parsed: tuple[pl.DataFrame, int], items: pl.DataFrame) -> None:
    world = build_world(CONFIG)
    truth = world.catalog.items.select("item_id").with_columns(
        topic=pl.Series(world.catalog.topic), cluster=pl.Series(world.catalog.cluster)
    )
    listened = parsed[0].filter(_valid(items)).select("user_id", "item_id").unique().join(truth, on="item_id")
    pairs = listened.join(listened, on=["user_id", "topic"], suffix="_b")
    pairs = pairs.filter(pl.col("item_id") < pl.col("item_id_b"))
    same_cluster = (pairs["cluster"] == pairs["cluster_b"]).mean()
    assert same_cluster > 0.6  # 1/3 if users ignored clusters


def test_weak_signals_sit_on_podcasts_and_audiobooks(parsed: tuple[pl.DataFrame, int], items: pl.DataFrame) -> None:
    events = parsed[0].filter(_valid(items)).join(items, on="item_id")
    weak = events.filter(pl.col("event_type").is_in(["save", "follow", "purchase", "preview"]))
    assert (weak["item_type"] != "music").mean() > 0.6
    skips = events.filter(pl.col("event_type") == "skip")["ms_played"]
    plays = events.filter(pl.col("event_type") == "play")
    assert skips.max() <= 30_000
    assert (plays["ms_played"] <= plays["duration_ms"]).all()


def test_users_mostly_hear_their_language_or_english(parsed: tuple[pl.DataFrame, int], items: pl.DataFrame) -> None:
    events = parsed[0].filter(_valid(items)).join(items, on="item_id")
    german = events.filter(pl.col("country").is_in(["DE", "AT"]))
    others = events.filter(~pl.col("country").is_in(["DE", "AT"]))
    assert (german["language"] == "de").mean() > 2 * (others["language"] == "de").mean()


def test_items_update_overrides_a_few_known_items(
    landing: tuple[pathlib.Path, WorldSummary], items: pl.DataFrame
) -> None:
    out, summary = landing
    update = pl.read_ndjson(out / "items" / "items_update.jsonl")
    assert update.height == summary.items_updated > 0
    before = items.join(update, on="item_id", suffix="_new")
    assert before.height == update.height
    assert (before["title"] != before["title_new"]).all()
    assert (before["release_date"].cast(pl.String) == before["release_date_new"]).all()


def test_refuses_to_write_over_an_earlier_world(tmp_path: pathlib.Path) -> None:
    config = WorldConfig(users=20, days=16, end_date=datetime.date(2025, 1, 31), holdout_days=7)
    simulate(config, tmp_path)
    with pytest.raises(FileExistsError, match="replace=True"):
        simulate(config, tmp_path)
    assert simulate(config, tmp_path, replace=True).users == 20


@pytest.mark.parametrize(
    ("change", "message"),
    [({"days": 10}, "holdout_days"), ({"topics": 99}, "got 99"), ({"items_per_type": {"music": 5}}, "keys")],
)
def test_rejects_impossible_configs(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_world(dataclasses.replace(CONFIG, **change))


def test_summary_pairs_with_world_dates(summary: WorldSummary) -> None:
    assert summary.end_date - summary.start_date == datetime.timedelta(days=CONFIG.days - 1)
    assert summary.end_date - summary.holdout_start == datetime.timedelta(days=CONFIG.holdout_days - 1)
