"""Files left out whole (torn, corrupt, empty, of another schema) and conflicting duplicates: every other file
is stored, each left-out file is named with its reason, and the raw gate decides with a configured limit."""
from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import io
from pathlib import Path

import duckdb
import polars as pl
import pytest

from quality import check
from quality.thresholds import Thresholds
from warehouse import ingest, landing
from warehouse.store import Store, sql_text

ITEM_TYPES = ("music", "podcast", "audiobook")
DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def _rows(hand_landing, day: str, prefix: str, count: int = 4) -> list[dict]:
    return [hand_landing.event(f"{prefix}{n}", ts=f"{day}T{n // 60:02d}:{n % 60:02d}:00Z") for n in range(count)]


def _ingest(hand_landing, hand_store: Store, *keys: str) -> dict[str, ingest.IngestResult]:
    with hand_store.write() as con:
        ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
        return ingest.ingest_event_partitions(con, hand_landing.root, list(keys))


def _stored(hand_store: Store) -> list[str]:
    with hand_store.read() as con:
        return [row[0] for row in con.execute("select event_id from raw.events order by event_id").fetchall()]


def _quarantine_rows(hand_store: Store) -> list[tuple]:
    with hand_store.read() as con:
        return con.execute(
            "select arrival_date::varchar, source_file, size_bytes, format, reason from raw.quarantined_files order by 2"
        ).fetchall()


def _torn_world(hand_landing) -> Path:
    """Three partitions of four good events in two files each; the second file of the middle one is torn."""
    hand_landing.catalog()
    torn = None
    for day in DAYS:
        hand_landing.events(day, _rows(hand_landing, day, f"a{day[-1]}-"), name="part-0.jsonl")
        path = hand_landing.events(day, _rows(hand_landing, day, f"b{day[-1]}-", 200), name="part-1.jsonl.gz")
        if day == DAYS[1]:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut mid-stream
            torn = path
    return torn


def test_a_torn_gzip_is_quarantined_and_every_other_file_and_partition_is_stored(hand_landing, hand_store) -> None:
    torn = _torn_world(hand_landing)
    results = _ingest(hand_landing, hand_store, *DAYS)
    assert {key: (r.read, r.accepted, r.rejected, r.duplicates, r.files, len(r.quarantined)) for key, r in results.items()} == {
        DAYS[0]: (204, 204, 0, 0, 2, 0), DAYS[1]: (4, 4, 0, 0, 2, 1), DAYS[2]: (204, 204, 0, 0, 2, 0),
    }
    (left_out,) = results[DAYS[1]].quarantined
    assert (left_out.path, left_out.fmt, left_out.size_bytes) == (torn, "jsonl.gz", torn.stat().st_size)
    assert left_out.reason.startswith("unreadable: ") and "end-of-stream marker" in left_out.reason
    assert len(_stored(hand_store)) == 204 + 4 + 204
    assert _quarantine_rows(hand_store) == [(DAYS[1], str(torn), torn.stat().st_size, "jsonl.gz", left_out.reason)]
    with hand_store.read() as con:
        logged = con.execute("select arrival_date::varchar, count_files, count_read, count_files_quarantined "
                             "from raw.ingest_log order by 1").fetchall()
    assert logged == [(DAYS[0], 2, 204, 0), (DAYS[1], 2, 4, 1), (DAYS[2], 2, 204, 0)]


def test_replacing_the_torn_file_stores_its_rows_once_and_clears_its_quarantine(hand_landing, hand_store) -> None:
    torn = _torn_world(hand_landing)
    _ingest(hand_landing, hand_store, *DAYS)
    hand_landing.events(DAYS[1], _rows(hand_landing, DAYS[1], "b2-", 200), name=torn.name)  # the sender's new copy
    with hand_store.read() as con:
        assert ingest.changed_partitions(con, hand_landing.root) == [DAYS[1]]
    for _ in range(2):  # and a second run changes nothing
        (result,) = _ingest(hand_landing, hand_store, DAYS[1]).values()
        assert (result.read, result.accepted, result.duplicates, result.quarantined) == (204, 204, 0, ())
        stored = _stored(hand_store)
        assert len(stored) == len(set(stored)) == 3 * 204
        assert _quarantine_rows(hand_store) == []


@pytest.mark.parametrize("name", ["part-1.parquet", "part-1.csv.gz", "part-1.jsonl.gz"])
def test_a_file_cut_short_is_quarantined_by_name(hand_landing, hand_store, name: str) -> None:
    hand_landing.catalog()
    hand_landing.events(DAYS[0], _rows(hand_landing, DAYS[0], "a"), name="part-0.jsonl")
    path = hand_landing.events(DAYS[0], _rows(hand_landing, DAYS[0], "b", 50), name=name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (result,) = _ingest(hand_landing, hand_store, DAYS[0]).values()
    assert (result.read, result.accepted, result.files) == (4, 4, 2)
    assert [(q.path, q.reason.split(":")[0]) for q in result.quarantined] == [(path, "unreadable")]
    assert _stored(hand_store) == ["a0", "a1", "a2", "a3"]


def test_a_parquet_page_damaged_behind_a_sound_footer_is_found_file_by_file(hand_landing, hand_store) -> None:
    """The footer reads, so the file stages; the damage shows only when the batch is scanned."""
    hand_landing.catalog()
    hand_landing.events(DAYS[0], _rows(hand_landing, DAYS[0], "a"), name="part-0.parquet")
    frame = pl.DataFrame([hand_landing.event(f"b{n:05d}", ms_played=n) for n in range(20_000)])
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="snappy", statistics=False)
    data = bytearray(buffer.getvalue())
    data[100:4000] = bytes(3900)  # zeroes over the first column's data pages; the footer at the end stays sound
    path = hand_landing.root / "events" / f"date={DAYS[0]}" / "part-1.parquet"
    path.write_bytes(bytes(data))
    con = duckdb.connect()
    con.execute("describe select * from read_parquet($path)", {"path": str(path)}).fetchall()  # the footer reads
    (result,) = _ingest(hand_landing, hand_store, DAYS[0]).values()
    assert [(q.path.name, q.reason.split(":")[0]) for q in result.quarantined] == [("part-1.parquet", "unreadable")]
    assert (result.read, result.accepted) == (4, 4)
    assert _stored(hand_store) == ["a0", "a1", "a2", "a3"]
    with hand_store.write() as con:
        assert con.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("part-1.jsonl", '{"event_id": "caf\u00e9"}\n'.encode("latin-1") * 20, "undecodable"),  # no line is UTF-8
    ("part-1.csv", (",".join(landing.EVENT_COLUMNS) + "\n\u00e9,x\n").encode("latin-1"), "undecodable"),
    ("part-1.jsonl", bytes(range(256)) * 40, "unreadable"),  # binary bytes under a text name
    ("part-1.jsonl.gz", b"\x1f\x8b not really gzip", "unreadable"),
    ("part-1.csv", b"", "empty"),
    ("part-1.jsonl.gz", gzip.compress(b"", mtime=0), "empty"),
    ("part-1.parquet", b"", "unreadable"),
])
def test_undecodable_and_empty_files_are_quarantined_with_their_kind(
    hand_landing, hand_store, name: str, content: bytes, kind: str
) -> None:
    hand_landing.catalog()
    hand_landing.events(DAYS[0], _rows(hand_landing, DAYS[0], "a"), name="part-0.jsonl")
    path = hand_landing.root / "events" / f"date={DAYS[0]}" / name
    path.write_bytes(content)
    (result,) = _ingest(hand_landing, hand_store, DAYS[0]).values()
    assert (result.read, result.accepted, result.rejected, result.files) == (4, 4, 0, 2)
    assert [(q.path, q.size_bytes, q.reason.split(":")[0]) for q in result.quarantined] == [(path, len(content), kind)]


def test_a_file_with_some_broken_lines_is_not_quarantined(hand_landing, hand_store) -> None:
    hand_landing.catalog()
    good = [f'{{"event_id": "a{n}", "user_id": "u1", "item_id": "p1", "ts": "{DAYS[0]}T08:00:00Z", '
            f'"event_type": "play", "ms_played": 1, "context": "home", "country": "SE"}}' for n in range(3)]
    hand_landing.write_lines(f"events/date={DAYS[0]}/part-0.jsonl", [good[0], "{not json", good[1], good[2]])
    (result,) = _ingest(hand_landing, hand_store, DAYS[0]).values()
    assert (result.read, result.accepted, result.rejected, result.quarantined) == (4, 3, 1, ())


def test_conflicting_duplicates_are_counted_apart_from_exact_repeats(hand_landing, hand_store) -> None:
    hand_landing.catalog()
    first = hand_landing.event("e1", ms_played=1)
    hand_landing.events(DAYS[0], [first, hand_landing.event("e2")], name="a.jsonl")
    hand_landing.events(DAYS[0], [first, hand_landing.event("e1", ms_played=2), hand_landing.event("e2", country="NO")],
                        name="b.csv")  # an exact repeat of e1 in another format, then two conflicts
    hand_landing.events(DAYS[1], [hand_landing.event("e1", ms_played=1), hand_landing.event("e1", user_id="u2"),
                                  hand_landing.event("e3", ts=f"{DAYS[1]}T08:00:00Z")])
    results = _ingest(hand_landing, hand_store, DAYS[0], DAYS[1])
    assert {key: (r.read, r.accepted, r.rejected, r.duplicates, r.duplicates_exact, r.duplicates_conflicting)
            for key, r in results.items()} == {DAYS[0]: (5, 2, 0, 3, 1, 2), DAYS[1]: (3, 1, 0, 2, 1, 1)}
    with hand_store.read() as con:
        kept = con.execute("select event_id, ms_played, country, arrival_date::varchar, source_line from raw.events "
                           "order by 1").fetchall()
        logged = con.execute("select arrival_date::varchar, count_duplicates, count_duplicates_conflicting "
                             "from raw.ingest_log order by 1").fetchall()
    # the first copy by arrival, then file name, then line wins
    assert [(e, ms, country, day, line) for e, ms, country, day, line in kept] == [
        ("e1", 1, "SE", DAYS[0], 1), ("e2", 60_000, "SE", DAYS[0], 2), ("e3", 60_000, "SE", DAYS[1], 3),
    ]
    assert logged == [(DAYS[0], 3, 2), (DAYS[1], 2, 1)]
    # re-ingesting the later partition alone judges its copies against the stored one: same verdicts
    (again,) = _ingest(hand_landing, hand_store, DAYS[1]).values()
    assert (again.duplicates_exact, again.duplicates_conflicting) == (1, 1)


def _gate(hand_store: Store, **changes) -> list[dict]:
    limits = dataclasses.replace(Thresholds(partitions=tuple(dt.date.fromisoformat(day) for day in DAYS)), **changes)
    with hand_store.read() as con:
        return [f for f in check(con, "raw.events", limits).failed if f["column"] == "count_files_quarantined"]


def test_the_raw_gate_stops_the_night_only_past_max_quarantined_files(hand_landing, hand_store) -> None:
    torn = _torn_world(hand_landing)
    _ingest(hand_landing, hand_store, *DAYS)
    assert _gate(hand_store) == []  # the default limit lets the night go on
    assert _gate(hand_store, max_quarantined_files=1) == []
    (failure,) = _gate(hand_store, max_quarantined_files=0)
    assert failure["unexpected_count"] == 1
    assert failure["examples"] == [f"{torn}: {_quarantine_rows(hand_store)[0][4]}"]
    assert "max_quarantined_files (now 0)" in failure["hint"]


def test_an_older_ingest_log_gains_the_new_columns(tmp_path: Path) -> None:
    store = Store(tmp_path / "warehouse" / "crossfade.duckdb")
    with store.write() as con:  # a warehouse from before the columns: the table as it was then
        con.execute("drop table raw.ingest_log")
        con.execute("create table raw.ingest_log (arrival_date date not null, ingested_at timestamp not null, "
                    "count_files integer not null, count_read bigint not null, count_accepted bigint not null, "
                    "count_rejected bigint not null, count_duplicates bigint not null, fingerprint varchar not null)")
        con.execute("insert into raw.ingest_log values ('2026-11-01', now(), 1, 3, 2, 1, 0, 'f')")
    store.state_path.write_text(store.state_path.read_text().replace('"schema"', '"schema_before"'))
    with store.write() as con:
        upgraded = con.execute("select count_files_quarantined, count_duplicates_conflicting from raw.ingest_log").fetchall()
    assert upgraded == [(0, 0)]


def test_a_partition_that_lost_a_file_is_judged_by_the_quarantine_limit_not_by_volume() -> None:
    con = duckdb.connect()
    con.execute(sql_text("schema"))
    # five whole days of 100 events, one day that lost its only file, then a whole day again
    days = [dt.date(2026, 11, d) for d in range(1, 8)]
    lost = days[5]
    for day in days:
        accepted, quarantined = (0, 1) if day == lost else (100, 0)
        con.execute("insert into raw.ingest_log (arrival_date, ingested_at, count_files, count_read, count_accepted, "
                    "count_rejected, count_duplicates, fingerprint, count_files_quarantined) "
                    "values ($d, now(), 1, $n, $n, 0, 0, 'f', $q)", {"d": day, "n": accepted, "q": quarantined})
        con.execute("insert into raw.events select $d::varchar || '-' || range, 'u', 'i', $d::timestamp, $d, 'play', 1, "
                    "null, null, $d, 'events.jsonl', range + 1 from range($n)", {"d": day, "n": accepted})
    limits = Thresholds(partitions=(lost, days[6]), volume_tolerance=0.5)
    assert check(con, "raw.events", limits).success  # the empty day is not a volume outlier, nor in the median
    failed = check(con, "raw.events", dataclasses.replace(limits, max_quarantined_files=0)).failed
    assert [failure["column"] for failure in failed] == ["count_files_quarantined"]
