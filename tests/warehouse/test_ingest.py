"""Raw ingestion: table contracts, bad-row routing, the accounting identity, idempotent re-runs, late and repeated events."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from warehouse import ingest, landing
from warehouse.store import Store
from worlds.sample_files import CORRUPTIONS

EVENTS_CONTRACT = [
    ("event_id", "VARCHAR"), ("user_id", "VARCHAR"), ("item_id", "VARCHAR"), ("ts", "TIMESTAMP"),
    ("event_date", "DATE"), ("event_type", "VARCHAR"), ("ms_played", "BIGINT"), ("context", "VARCHAR"),
    ("country", "VARCHAR"), ("arrival_date", "DATE"), ("source_file", "VARCHAR"), ("source_line", "BIGINT"),
]
REJECTED_CONTRACT = [
    ("arrival_date", "DATE"), ("source_file", "VARCHAR"), ("source_line", "BIGINT"), ("reason", "VARCHAR"),
    ("event_id", "VARCHAR"), ("raw_record", "VARCHAR"),
]
QUARANTINED_CONTRACT = [
    ("arrival_date", "DATE"), ("source_file", "VARCHAR"), ("size_bytes", "BIGINT"), ("format", "VARCHAR"),
    ("reason", "VARCHAR"), ("quarantined_at", "TIMESTAMP"),
]
ITEMS_CONTRACT = [
    ("item_id", "VARCHAR"), ("item_type", "VARCHAR"), ("title", "VARCHAR"), ("description", "VARCHAR"),
    ("creator", "VARCHAR"), ("language", "VARCHAR"), ("genres", "VARCHAR[]"), ("duration_ms", "BIGINT"),
    ("release_date", "DATE"), ("is_paid", "BOOLEAN"), ("source_file", "VARCHAR"),
]
USERS_CONTRACT = [
    ("user_id", "VARCHAR"), ("country", "VARCHAR"), ("age_bucket", "VARCHAR"), ("signup_date", "DATE"),
    ("plan", "VARCHAR"), ("source_file", "VARCHAR"),
]
ITEM_TYPES = ("music", "podcast", "audiobook")


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(name, kind) for name, kind, *_ in con.execute(f"describe {table}").fetchall()]


def checksum(con: duckdb.DuckDBPyConnection, table: str, landing_dir: Path) -> tuple[int, str]:
    """Row count and a digest of every column of every row, with source files relative to the landing zone."""
    return con.execute(
        f"""
        with t as (select * replace (replace(source_file, $root, '') as source_file) from {table})
        select count(*), md5(coalesce(string_agg(cast(t as varchar), chr(10) order by cast(t as varchar)), '')) from t
        """,
        {"root": str(landing_dir)},
    ).fetchall()[0]


# --- the sample world, ingested once per session ------------------------------------------------

@pytest.mark.parametrize(("table", "contract"), [
    ("raw.events", EVENTS_CONTRACT), ("raw.rejected_events", REJECTED_CONTRACT), ("raw.quarantined_files", QUARANTINED_CONTRACT),
    ("raw.items", ITEMS_CONTRACT), ("raw.users", USERS_CONTRACT),
])
def test_table_columns_and_types(ingested_world, table: str, contract: list[tuple[str, str]]) -> None:
    with ingested_world.store.read() as con:
        assert columns(con, table) == contract


def test_events_contract_holds_on_stored_rows(ingested_world) -> None:
    with ingested_world.store.read() as con:
        violations = con.execute(
            """
            select
                count(*) - count(distinct event_id) as repeated_ids,
                count(*) filter (where event_type not in ('play', 'skip', 'save', 'follow', 'purchase', 'preview')) as bad_types,
                count(*) filter (where ms_played < 0) as negative_ms,
                count(*) filter (where event_date <> cast(ts as date)) as wrong_event_date,
                count(*) filter (where event_date > arrival_date) as from_the_future,
                count(*) filter (where item_id not in (select item_id from raw.items)) as unknown_items,
                count(*) filter (where source_line < 1) as bad_lines
            from raw.events
            """
        ).pl().to_dicts()[0]
    assert violations == dict.fromkeys(violations, 0)


def test_accounting_identity_per_partition(ingested_world) -> None:
    for key, result in ingested_world.events.items():
        assert result.read == result.accepted + result.rejected + result.duplicates, key
        assert sum(result.rejects_by_reason.values()) == result.rejected, key
    with ingested_world.store.read() as con:
        logged = con.execute(
            "select arrival_date::varchar, count_read, count_accepted, count_rejected, count_duplicates from raw.ingest_log"
        ).fetchall()
        stored = dict(con.execute("select arrival_date::varchar, count(*) from raw.events group by 1").fetchall())
    assert {row[0]: row[1:] for row in logged} == {
        key: (r.read, r.accepted, r.rejected, r.duplicates) for key, r in ingested_world.events.items()
    }
    assert stored == {key: r.accepted for key, r in ingested_world.events.items() if r.accepted}


def test_totals_match_what_the_simulator_wrote(ingested_world) -> None:
    summary, results = ingested_world.summary, ingested_world.events.values()
    assert len(ingested_world.events) == (summary.end_date - summary.start_date).days + 1
    assert sum(r.files for r in results) == summary.event_files
    assert sum(r.read for r in results) == summary.event_rows
    assert sum(r.accepted for r in results) == summary.clean_events
    assert sum(r.duplicates for r in results) == summary.defects["exact_duplicate"]
    assert sum(r.duplicates_conflicting for r in results) == 0  # the simulator repeats events exactly
    assert [q for r in results for q in r.quarantined] == []
    assert sum(r.rejected for r in results) == sum(summary.defects[kind] for kind in CORRUPTIONS)
    assert sum(r.late_events for r in results) == summary.defects["late_event"]


def test_rejects_by_reason_match_the_injected_defects(ingested_world) -> None:
    with ingested_world.store.read() as con:
        by_kind = dict(con.execute(
            "select split_part(reason, ':', 1), count(*) from raw.rejected_events group by 1"
        ).fetchall())
    assert by_kind == {kind: ingested_world.summary.defects[kind] for kind in CORRUPTIONS if ingested_world.summary.defects[kind]}


def test_rejected_rows_say_where_they_came_from(ingested_world) -> None:
    with ingested_world.store.read() as con:
        rows = con.execute(
            "select source_file, source_line, raw_record, arrival_date from raw.rejected_events"
        ).fetchall()
    assert rows
    for source_file, source_line, raw_record, arrival_date in rows:
        assert Path(source_file).is_file()
        assert Path(source_file).parent.name == f"date={arrival_date}"
        assert source_line >= 1 and raw_record


def test_late_events_are_stored_under_the_day_they_happened(ingested_world) -> None:
    with ingested_world.store.read() as con:
        late = con.execute("select count(*) from raw.events where event_date < arrival_date").fetchall()[0][0]
    assert late == ingested_world.summary.defects["late_event"] > 0


def test_items_and_users_match_the_simulated_catalogue(ingested_world) -> None:
    summary = ingested_world.summary
    with ingested_world.store.read() as con:
        by_type = dict(con.execute("select item_type, count(*) from raw.items group by 1").fetchall())
        updated = con.execute(
            "select count(*) from raw.items where source_file like '%items_update.jsonl'"
        ).fetchall()[0][0]
        users = con.execute("select count(*), count(distinct user_id) from raw.users").fetchall()[0]
    assert by_type == summary.items_per_type
    assert updated == summary.items_updated  # the later file by name wins for the items it repeats
    assert ingested_world.items.duplicates == summary.items_updated
    assert users == (summary.users, summary.users)


def test_rerunning_partitions_gives_identical_tables(ingested_world, tmp_path: Path) -> None:
    store = ingested_world.copy_to(tmp_path / "home")
    tables = ("raw.events", "raw.rejected_events")
    with store.read() as con:
        before = {table: checksum(con, table, ingested_world.landing) for table in tables}
    keys = list(ingested_world.events)
    with store.write() as con:
        # newest first: an event repeated in two partitions must still be kept by the earlier one
        rerun = {key: ingest.ingest_events(con, tmp_path / "home" / "landing", key) for key in reversed(keys)}
    with store.read() as con:
        after = {table: checksum(con, table, tmp_path / "home" / "landing") for table in tables}
    assert after == before
    assert {key: (r.read, r.accepted, r.rejected, r.duplicates) for key, r in rerun.items()} == {
        key: (r.read, r.accepted, r.rejected, r.duplicates) for key, r in ingested_world.events.items()
    }


# --- hand-made landing files with known answers -------------------------------------------------

BAD_ROWS = [
    ({"event_id": None}, "missing_field: event_id"),
    ({"event_id": "  "}, "missing_field: event_id"),
    ({"user_id": None}, "missing_field: user_id"),
    ({"item_id": ""}, "missing_field: item_id"),
    ({"ts": None}, "missing_field: ts"),
    ({"event_type": None}, "missing_field: event_type"),
    ({"ms_played": None}, "missing_field: ms_played"),
    ({"ts": "yesterday"}, "bad_timestamp"),
    ({"event_type": "stream"}, "bad_event_type"),
    ({"ms_played": "a lot"}, "bad_ms_played"),
    ({"ms_played": -5}, "negative_ms_played"),
    ({"ts": "2026-11-02T00:00:00Z"}, "future_timestamp"),  # arrival day 2026-11-01 ends at midnight UTC
    ({"item_id": "zz9"}, "unknown_item"),
]


@pytest.mark.parametrize("name", ["part-0.jsonl", "part-0.csv", "part-0.parquet"])
def test_each_bad_row_is_routed_with_its_reason(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    rows = [hand_landing.event("good-1")]
    rows += [hand_landing.event(f"bad-{i}", **fields) for i, (fields, _) in enumerate(BAD_ROWS)]
    rows += [hand_landing.event("good-2")]
    if name.endswith(".parquet"):
        rows = [{key: None if value is None else str(value) for key, value in row.items()} for row in rows]
    hand_landing.events("2026-11-01", rows, name=name)
    (result,) = ingest_hand("2026-11-01").values()
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (len(rows), 2, len(BAD_ROWS), 0)
    with hand_store.read() as con:
        rejected = con.execute("select source_line, reason, source_file, arrival_date, raw_record from raw.rejected_events").fetchall()
        stored = [row[0] for row in con.execute("select event_id from raw.events order by event_id").fetchall()]
    first_bad_line = 3 if name.endswith(".csv") else 2  # a CSV header is line 1
    assert {line: reason for line, reason, *_ in rejected} == {first_bad_line + i: reason for i, (_, reason) in enumerate(BAD_ROWS)}
    assert {(source_file, arrival_date) for _, _, source_file, arrival_date, _ in rejected} == {
        (str(hand_landing.root / "events" / "date=2026-11-01" / name), dt.date(2026, 11, 1)),
    }
    assert all(raw_record for *_, raw_record in rejected)  # the record as read, for a person to inspect
    assert stored == ["good-1", "good-2"]


def test_broken_lines_are_rejected_not_dropped(hand_landing, hand_store, ingest_hand) -> None:
    hand_landing.catalog()
    good = '{"event_id": "e1", "user_id": "u1", "item_id": "p1", "ts": "2026-11-01T08:00:00Z", "event_type": "play", "ms_played": 1}'
    hand_landing.write_lines("events/date=2026-11-01/a.jsonl", [good, good[:30], "not json at all"])
    header = ",".join(landing.EVENT_COLUMNS)
    hand_landing.write_lines("events/date=2026-11-01/b.csv", [
        header, "e2,u1,p1,2026-11-01T09:00:00Z,play,1,home,SE,extra", "e3,u1", "e4,u1,p1,2026-11-01T09:00:00Z,play,1,home,SE",
    ])
    (result,) = ingest_hand("2026-11-01").values()
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (6, 2, 4, 0)
    with hand_store.read() as con:
        rejected = con.execute("select source_file, source_line, reason from raw.rejected_events order by 1, 2").fetchall()
    assert [(Path(f).name, line) for f, line, _ in rejected] == [("a.jsonl", 2), ("a.jsonl", 3), ("b.csv", 2), ("b.csv", 3)]
    assert all(reason.startswith("broken_line") for _, _, reason in rejected)


EXPECTED_EVENTS = [
    # event_id, user_id, item_id, ts (UTC), event_date, event_type, ms_played, context, country
    ("e1", "u1", "p1", dt.datetime(2026, 11, 1, 8, 0), dt.date(2026, 11, 1), "play", 60_000, "home", "SE"),
    ("e2", "u2", "a1", dt.datetime(2026, 10, 30, 23, 30), dt.date(2026, 10, 30), "save", 0, "search, then library", None),
    ("e3", "u3", "m1", dt.datetime(2026, 11, 1, 23, 59, 59, 999_000), dt.date(2026, 11, 1), "skip", 1_500, None, "DE"),
]


@pytest.mark.parametrize("name", [
    "e.jsonl", "e.csv", "e.parquet", "e.jsonl.gz", "e.csv.gz", "bom.jsonl", "bom.csv", "bom.csv.gz",
])
def test_every_format_stores_the_same_events(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    rows = [
        hand_landing.event("e1"),
        # an offset is converted to UTC, which moves this event to the previous day
        hand_landing.event("e2", user_id="u2", item_id="a1", ts="2026-10-31T01:30:00+02:00", event_type="save",
                           ms_played=0, context="search, then library", country=None),
        hand_landing.event("e3", user_id="u3", item_id="m1", ts="2026-11-01T23:59:59.999Z", event_type=" SKIP ",
                           ms_played=1500, context="", country="DE"),
    ]
    hand_landing.events("2026-11-01", rows, name=name, bom=name.startswith("bom"))
    (result,) = ingest_hand("2026-11-01").values()
    assert (result.read, result.accepted, result.rejected, result.late_events) == (3, 3, 0, 1)
    with hand_store.read() as con:
        stored = con.execute(
            "select event_id, user_id, item_id, ts, event_date, event_type, ms_played, context, country "
            "from raw.events order by event_id"
        ).fetchall()
    assert stored == EXPECTED_EVENTS


def test_a_late_event_lands_under_its_event_date(hand_landing, hand_store, ingest_hand) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("on-time")])
    hand_landing.events("2026-11-04", [
        hand_landing.event("late", ts="2026-10-31T22:00:00Z"), hand_landing.event("fresh", ts="2026-11-04T01:00:00Z"),
    ])
    results = ingest_hand("2026-11-01", "2026-11-04")
    assert results["2026-11-04"].late_events == 1
    with hand_store.read() as con:
        rows = con.execute("select event_id, event_date, arrival_date from raw.events order by event_id").fetchall()
    assert rows == [
        ("fresh", dt.date(2026, 11, 4), dt.date(2026, 11, 4)),
        ("late", dt.date(2026, 10, 31), dt.date(2026, 11, 4)),
        ("on-time", dt.date(2026, 11, 1), dt.date(2026, 11, 1)),
    ]


@pytest.mark.parametrize("order", [("2026-11-01", "2026-11-02"), ("2026-11-02", "2026-11-01")])
def test_an_event_repeated_across_partitions_counts_once(hand_landing, hand_store, ingest_hand, order) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("e1"), hand_landing.event("e2")])
    hand_landing.events("2026-11-02", [
        hand_landing.event("e1"), hand_landing.event("e3", ts="2026-11-02T07:00:00Z"), hand_landing.event("e1"),
    ])
    results = ingest_hand(*order)
    # then both again: re-runs in any order must not lose or double the repeated event
    results |= ingest_hand(*reversed(order))
    assert sum(r.read for r in results.values()) == 5
    assert sum(r.accepted for r in results.values()) == 3
    assert sum(r.duplicates for r in results.values()) == 2
    with hand_store.read() as con:
        counts = con.execute("select event_id, count(*) from raw.events group by 1 order by 1").fetchall()
    assert counts == [("e1", 1), ("e2", 1), ("e3", 1)]


def test_rerunning_a_changed_partition_replaces_it_exactly(hand_landing, hand_store, ingest_hand) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("keep"), hand_landing.event("gone"), hand_landing.event("bad", ms_played=-1)])
    hand_landing.events("2026-11-02", [hand_landing.event("other", ts="2026-11-02T07:00:00Z")])
    ingest_hand("2026-11-01", "2026-11-02")
    hand_landing.events("2026-11-01", [hand_landing.event("keep"), hand_landing.event("new", event_type="stream")])
    (result,) = ingest_hand("2026-11-01").values()
    assert (result.read, result.accepted, result.rejected) == (2, 1, 1)
    with hand_store.read() as con:
        stored = [row[0] for row in con.execute("select event_id from raw.events order by 1").fetchall()]
        rejected = con.execute("select event_id, reason from raw.rejected_events").fetchall()
    assert stored == ["keep", "other"]
    assert rejected == [("new", "bad_event_type")]


@pytest.mark.parametrize("key", ["../date=2026-11-01", "../../etc", "2026-11-01/../../..", "..", "2026-11-01/"])
def test_path_traversal_in_a_partition_key_is_refused(hand_landing, hand_store, ingest_hand, key: str) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("e1")])
    ingest_hand("2026-11-01")
    with pytest.raises(landing.LandingError, match="YYYY-MM-DD"), hand_store.write() as con:
        ingest.ingest_events(con, hand_landing.root, key)
    with hand_store.read() as con:
        assert con.execute("select count(*) from raw.events").fetchall()[0][0] == 1


@pytest.mark.parametrize("name", ["items.jsonl", "items.csv", "items.parquet", "items.csv.gz"])
@pytest.mark.parametrize("genres", [
    ["true crime", "history"], '["true crime", "history"]', "true crime|history", " true crime | history |",
])
def test_genres_as_list_json_or_pipe_joined(hand_landing, hand_store, name: str, genres) -> None:
    hand_landing.write(f"items/{name}", [hand_landing.item("p1", "podcast", genres=genres)])
    with hand_store.write() as con:
        result = ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        stored = con.execute("select genres, duration_ms, release_date, is_paid from raw.items").fetchall()
    assert result.rejected == 0
    assert stored == [(["true crime", "history"], 600_000, dt.date(2020, 1, 1), False)]


def test_items_snapshot_last_file_by_name_wins(hand_landing, hand_store) -> None:
    hand_landing.write("items/2026-10-01.parquet", [
        hand_landing.item("p1", "podcast", title="first"), hand_landing.item("a1", "audiobook", title="only"),
    ])
    hand_landing.write("items/2026-11-01.csv", [hand_landing.item("p1", "podcast", title="second")])
    # within one file, the later line wins too
    hand_landing.write("items/2026-11-02.jsonl", [
        hand_landing.item("p1", "podcast", title="third"), hand_landing.item("p1", "podcast", title="fourth"),
    ])
    with hand_store.write() as con:
        result = ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        titles = con.execute("select item_id, title, source_file from raw.items order by 1").fetchall()
    assert [(item_id, title, Path(source).name) for item_id, title, source in titles] == [
        ("a1", "only", "2026-10-01.parquet"), ("p1", "fourth", "2026-11-02.jsonl"),
    ]
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (5, 2, 0, 3)


def test_users_snapshot_last_file_by_name_wins(hand_landing, hand_store) -> None:
    hand_landing.write("users/a.jsonl", [hand_landing.user("u1", plan="free"), hand_landing.user("u2")])
    hand_landing.write("users/b.csv", [hand_landing.user("u1", plan="premium", signup_date="2025-02-03")])
    with hand_store.write() as con:
        result = ingest.ingest_users(con, hand_landing.root)
        users = con.execute("select user_id, plan, signup_date from raw.users order by 1").fetchall()
    assert users == [("u1", "premium", dt.date(2025, 2, 3)), ("u2", "premium", dt.date(2024, 1, 1))]
    assert (result.read, result.accepted, result.duplicates) == (3, 2, 1)


ITEM_FAULTS = [
    ({"item_id": None}, "missing_field: item_id"),
    ({"item_type": ""}, "missing_field: item_type"),
    ({"item_type": "video"}, "unknown_item_type"),
    ({"duration_ms": -1}, "bad_duration_ms"),
    ({"duration_ms": "long"}, "bad_duration_ms"),
    ({"release_date": "someday"}, "bad_release_date"),
    ({"genres": "[broken"}, "bad_genres"),
]


@pytest.mark.parametrize(("fields", "reason"), ITEM_FAULTS, ids=[reason for _, reason in ITEM_FAULTS])
def test_bad_catalogue_records_are_quarantined(hand_landing, hand_store, fields, reason: str) -> None:
    hand_landing.write("items/items.jsonl", [hand_landing.item("p1", "podcast"), hand_landing.item("p2", "podcast", **fields)])
    with hand_store.write() as con:
        result = ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        stored = [row[0] for row in con.execute("select item_id from raw.items").fetchall()]
        rejected = con.execute("select entity, source_line, reason from raw.rejected_records").fetchall()
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (2, 1, 1, 0)
    assert stored == ["p1"]
    assert rejected == [("item", 2, reason)]


def test_item_types_come_from_configuration(hand_landing, hand_store) -> None:
    hand_landing.catalog()
    with hand_store.write() as con:
        result = ingest.ingest_items(con, hand_landing.root, ("podcast", "audiobook"))
        kinds = [row[0] for row in con.execute("select distinct item_type from raw.items order by 1").fetchall()]
    assert kinds == ["audiobook", "podcast"]
    assert result.rejects_by_reason == {"unknown_item_type": 3}


def test_a_missing_catalogue_folder_says_what_to_land(hand_landing, hand_store) -> None:
    hand_landing.root.mkdir(parents=True)
    with pytest.raises(landing.LandingError, match="items"), hand_store.write() as con:
        ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)


def test_changed_partitions_lists_new_and_changed_folders(hand_landing, hand_store, ingest_hand) -> None:
    hand_landing.catalog()
    for day in ("2026-11-01", "2026-11-02"):
        hand_landing.events(day, [hand_landing.event(f"e-{day}", ts=f"{day}T08:00:00Z")])
    ingest_hand("2026-11-01", "2026-11-02")
    hand_landing.events("2026-11-02", [hand_landing.event("e-2026-11-02"), hand_landing.event("extra", ts="2026-11-02T09:00:00Z")])
    hand_landing.events("2026-11-03", [hand_landing.event("e3", ts="2026-11-03T08:00:00Z")])
    with hand_store.read() as con:
        assert ingest.changed_partitions(con, hand_landing.root) == ["2026-11-02", "2026-11-03"]
        assert ingest.changed_partitions(con, hand_landing.root, before=dt.date(2026, 11, 3)) == ["2026-11-02"]



@pytest.mark.parametrize("name", ["part-1.jsonl", "part-1.csv", "part-1.parquet", "part-1.csv.gz"])
def test_a_file_of_another_schema_is_quarantined_as_wrong_schema(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("e1")])
    path = hand_landing.write(f"events/date=2026-11-01/{name}", [{"song": f"s{n}", "listener": "x"} for n in range(3)])
    (result,) = ingest_hand("2026-11-01").values()
    reason = ("wrong_schema: missing columns event_id, user_id, item_id, ts, event_type, ms_played, context, country; "
              "unexpected columns song, listener")
    assert (result.read, result.accepted, result.rejected, result.files) == (1, 1, 0, 2)
    assert [(q.path, q.reason) for q in result.quarantined] == [(path, reason)]
    with hand_store.read() as con:
        assert con.execute("select count(*) from raw.rejected_events").fetchall() == [(0,)]
        assert con.execute("select source_file, reason from raw.quarantined_files").fetchall() == [(str(path), reason)]


def test_of_repeats_in_one_partition_the_first_by_file_then_line_is_kept(hand_landing, hand_store, ingest_hand) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("e1", ms_played=1)], name="b.csv")
    hand_landing.events("2026-11-01", [hand_landing.event("e2"), hand_landing.event("e1", ms_played=2),
                                        hand_landing.event("e1", ms_played=3)], name="a.jsonl")
    (result,) = ingest_hand("2026-11-01").values()
    assert (result.read, result.accepted, result.duplicates) == (4, 2, 2)
    with hand_store.read() as con:
        kept = con.execute("select ms_played, source_line from raw.events where event_id = 'e1'").fetchall()
    assert kept == [(2, 2)]


def test_a_bad_line_in_a_gzip_file_is_rejected_with_its_line(hand_landing, hand_store, ingest_hand) -> None:
    hand_landing.catalog()
    lines = [json.dumps(hand_landing.event(f"e{n}")) for n in range(3)]
    path = hand_landing.write_lines("events/date=2026-11-01/part-0.jsonl.gz", [lines[0], "CAFE", lines[1], lines[2]])
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()).replace(b"CAFE", "caf\u00e9".encode("latin-1"))))
    (result,) = ingest_hand("2026-11-01").values()
    assert (result.read, result.accepted, result.rejected) == (4, 3, 1)
    with hand_store.read() as con:
        rejected = con.execute("select source_line, reason from raw.rejected_events").fetchall()
        lines_kept = con.execute("select source_line from raw.events order by 1").fetchall()
    assert rejected == [(2, "broken_line: invalid encoding")]
    assert lines_kept == [(1,), (3,), (4,)]


def test_an_unreadable_file_is_quarantined_and_leaves_no_temp_tables(hand_landing, hand_store) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("e1")])
    path = hand_landing.write_lines("events/date=2026-11-01/part-1.parquet", ["not parquet at all"])
    with hand_store.write() as con:
        ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        result = ingest.ingest_events(con, hand_landing.root, "2026-11-01")
        assert con.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]
        assert con.execute("select count_files, count_read, count_files_quarantined from raw.ingest_log").fetchall() == [
            (2, 1, 1)
        ]
    assert (result.accepted, [(q.path, q.fmt, q.size_bytes) for q in result.quarantined]) == (
        1, [(path, "parquet", path.stat().st_size)]
    )
    assert result.quarantined[0].reason.startswith("unreadable: ")


def test_timestamps_are_stored_in_utc_whatever_the_session_time_zone(hand_landing, hand_store) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-01", [hand_landing.event("e1", ts="2026-11-01T08:00:00+02:00"),
                                        hand_landing.event("e2", ts="2026-11-01T23:30:00Z")])
    with hand_store.write() as con:
        con.execute("set TimeZone = 'Asia/Tokyo'")
        ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        result = ingest.ingest_events(con, hand_landing.root, "2026-11-01")
        stored = con.execute("select event_id, ts, event_date from raw.events order by 1").fetchall()
    assert (result.accepted, result.rejected) == (2, 0)
    assert stored == [("e1", dt.datetime(2026, 11, 1, 6, 0), dt.date(2026, 11, 1)),
                      ("e2", dt.datetime(2026, 11, 1, 23, 30), dt.date(2026, 11, 1))]


@pytest.mark.parametrize("batch_bytes", [1, 150_000, 2**40])  # one partition, a few, all at once
def test_batches_of_partitions_give_the_tables_of_one_at_a_time(ingested_world, tmp_path: Path, batch_bytes: int) -> None:
    home = tmp_path / "home"
    shutil.copytree(ingested_world.landing, home / "landing")
    store = Store(home / "warehouse" / "crossfade.duckdb")
    keys = list(ingested_world.events)
    with store.write() as con:
        ingest.ingest_items(con, home / "landing", ITEM_TYPES)
        results = ingest.ingest_event_partitions(con, home / "landing", list(reversed(keys)), batch_bytes)  # any order
        logged = con.execute("select count(*), count(distinct arrival_date) from raw.ingest_log").fetchall()
    assert list(results) == keys
    assert {key: (r.read, r.accepted, r.rejected, r.duplicates, r.late_events, r.files, r.rejects_by_reason)
            for key, r in results.items()} == {
        key: (r.read, r.accepted, r.rejected, r.duplicates, r.late_events, r.files, r.rejects_by_reason)
        for key, r in ingested_world.events.items()
    }
    assert logged == [(len(keys), len(keys))]
    for table in ("raw.events", "raw.rejected_events"):
        with store.read() as con:
            ours = checksum(con, table, home / "landing")
        with ingested_world.store.read() as con:
            assert ours == checksum(con, table, ingested_world.landing), table


def test_in_one_batch_the_earliest_arrival_keeps_a_repeated_event(hand_landing, hand_store) -> None:
    hand_landing.catalog()
    hand_landing.events("2026-11-02", [hand_landing.event("e1", ms_played=2), hand_landing.event("e2")])
    hand_landing.events("2026-11-01", [hand_landing.event("e1", ms_played=1)])
    (hand_landing.root / "events" / "date=2026-11-03").mkdir()  # a partition with no files yet
    with hand_store.write() as con:
        ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        results = ingest.ingest_event_partitions(con, hand_landing.root, ["2026-11-02", "2026-11-03", "2026-11-01"])
        stored = con.execute("select event_id, ms_played, arrival_date::varchar from raw.events order by 1").fetchall()
    assert {key: (r.read, r.accepted, r.duplicates, r.files) for key, r in results.items()} == {
        "2026-11-01": (1, 1, 0, 1), "2026-11-02": (2, 1, 1, 1), "2026-11-03": (0, 0, 0, 0),
    }
    assert stored == [("e1", 1, "2026-11-01"), ("e2", 60_000, "2026-11-02")]
