"""The warehouse store: DuckLake snapshots, write-audit-publish per stage, readers never blocked by a write."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from warehouse.store import (
    CLIENT_SQL,
    NothingPublishedError,
    Store,
    WarehouseBusyError,
    one_row,
    run_sql,
    scalar,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "warehouse" / "crossfade.duckdb", lock_timeout_s=5)
    with store.write() as con:
        con.execute("create table main.notes as select 'first' as text")
    return store


def notes(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute("select text from main.notes order by text").fetchall()]


def test_reading_before_anything_is_published_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(NothingPublishedError, match="crossfade run"), Store(tmp_path / "crossfade.duckdb").read():
        pass


def test_a_write_creates_every_schema_and_publishes_what_it_changed(store: Store) -> None:
    with store.read() as con:
        assert scalar(con, "select text from main.notes") == "first"
        schemas = {row[0] for row in con.execute("select schema_name from duckdb_schemas()").fetchall()}
    assert {"raw", "features", "enrich", "models", "eval", "serving"} <= schemas
    assert (store.root / "crossfade.sqlite").is_file() and list((store.root / "data").rglob("*"))  # catalog, Parquet


def test_readers_are_read_only(store: Store) -> None:
    with store.read() as con, pytest.raises(duckdb.Error):
        con.execute("insert into main.notes values ('nope')")


def test_a_failed_write_publishes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError, match="midway"), store.write() as con:
        con.execute("insert into main.notes values ('half done')")
        raise RuntimeError("midway")
    with store.read() as con:
        assert notes(con) == ["first"]


def test_a_stage_reaches_readers_only_when_its_gate_publishes(store: Store) -> None:
    with store.write("features.scores") as con:
        con.execute("create table features.scores as select 1 as score")
        con.execute("insert into main.notes values ('second')")
    assert store.pending("features.scores") == {"features.scores": store.pending("features.scores")["features.scores"],
                                                "main.notes": store.pending("features.scores")["main.notes"]}
    with store.read() as con:  # not published: the old notes, and no new table
        assert notes(con) == ["first"]
        with pytest.raises(duckdb.CatalogException, match="scores does not exist"):
            con.execute("select * from features.scores").fetchall()
    with store.audit() as con:  # what the gate checks: the newest state
        assert notes(con) == ["first", "second"] and scalar(con, "select score from features.scores") == 1
    published = store.publish("features.scores")
    assert set(published) == {"features.scores", "main.notes"} and store.pending("features.scores") == {}
    with store.read() as con:
        assert notes(con) == ["first", "second"] and scalar(con, "select score from features.scores") == 1


def test_a_failed_gate_keeps_readers_on_the_last_publish_while_others_publish(store: Store) -> None:
    with store.write("features.scores") as con:
        con.execute("create table features.scores as select 1 as score")
    store.publish("features.scores")
    with store.write("features.scores") as con:  # tonight's rows, whose gate fails: never published
        con.execute("create or replace table features.scores as select -1 as score")
    with store.write("features.other") as con:  # another stage writes later and passes
        con.execute("create table features.other as select 7 as value")
    store.publish("features.other")
    with store.read() as con:
        assert scalar(con, "select score from features.scores") == 1  # still the published night
        assert scalar(con, "select value from features.other") == 7
    with store.write("features.scores") as con:  # the retry after fixing the input
        con.execute("create or replace table features.scores as select 2 as score")
    store.publish("features.scores")
    with store.read() as con:
        assert scalar(con, "select score from features.scores") == 2


def test_after_a_refused_write_the_stage_s_next_write_starts_from_the_published_rows(store: Store) -> None:
    with store.write("features.scores") as con:
        con.execute("create table features.scores as select 1 as score")
    store.publish("features.scores")
    with store.write("features.scores") as con:  # an incremental stage appends rows its gate will refuse
        con.execute("insert into features.scores values (-1)")
        con.execute("create table features.fresh as select 5 as value")  # and a table never published
    assert set(store.reject("features.scores")) == {"features.scores", "features.fresh"}
    with store.audit() as con:  # kept for a person to inspect until the stage writes again
        assert sorted(row[0] for row in con.execute("select score from features.scores").fetchall()) == [-1, 1]
    with store.write("features.scores") as con:  # the retry, appending again: it sees the published rows only
        assert [row[0] for row in con.execute("select score from features.scores").fetchall()] == [1]
        assert con.execute("select count(*) from features.fresh").fetchall() == [(0,)]
        con.execute("insert into features.scores values (2)")
    assert "rejected" not in json.loads(store.state_path.read_text()) or \
        not json.loads(store.state_path.read_text())["rejected"]
    with store.write("features.scores") as con:  # later writes of the stage, before its gate, roll nothing back
        con.execute("insert into features.scores values (3)")
    store.publish("features.scores")
    with store.read() as con:
        assert sorted(row[0] for row in con.execute("select score from features.scores").fetchall()) == [1, 2, 3]


def test_publishing_moves_a_version_number_and_copies_no_data(store: Store) -> None:
    with store.write("features.big") as con:
        con.execute("create table features.big as select range as n from range(100000)")
    files = sorted(path.stat().st_mtime_ns for path in (store.root / "data").rglob("*.parquet"))
    started = time.perf_counter()
    store.publish("features.big")
    assert time.perf_counter() - started < 5
    assert sorted(path.stat().st_mtime_ns for path in (store.root / "data").rglob("*.parquet")) == files
    state = json.loads(store.state_path.read_text())
    assert state["tables"]["features.big"] == max(state["tables"].values())


def test_any_duckdb_client_opens_the_published_state_with_published_sql(store: Store) -> None:
    with store.write("features.scores") as con:
        con.execute("create table features.scores as select 1 as score")
    store.publish("features.scores")
    with store.write("features.scores") as con:
        con.execute("create or replace table features.scores as select -1 as score")  # pending
    script = (store.root / CLIENT_SQL).read_text()
    client = duckdb.connect()
    for statement in filter(str.strip, script.split(";\n")):
        client.execute(statement)
    assert client.execute("select score from features.scores").fetchall() == [(1,)]
    assert client.execute("select text from main.notes").fetchall() == [("first",)]


def test_published_sql_is_rewritten_only_when_the_published_versions_move(store: Store) -> None:
    client_sql = store.root / CLIENT_SQL
    first = (client_sql.stat().st_ino, client_sql.read_text())
    with store.write("features.scores") as con:  # pending: readers' versions did not move
        con.execute("create table features.scores as select 1 as score")
    assert (client_sql.stat().st_ino, client_sql.read_text()) == first
    store.publish("features.scores")
    published = client_sql.read_text()
    assert published != first[1] and f'"features.scores":{store.published_version("features.scores")}' in published
    client_sql.write_text(published.replace("features.scores", "features.stale"))  # out of step, e.g. a kill
    with store.write("features.scores") as con:  # any later save puts it back in step
        con.execute("insert into features.scores values (2)")
    assert client_sql.read_text() == published


def test_time_travel_answers_what_was_published_before(store: Store) -> None:
    first = store.published_version("main.notes")
    with store.write() as con:
        con.execute("insert into main.notes values ('second')")
    with store.audit() as con:
        assert con.execute(f"select count(*) from main.notes at (version => {first})").fetchall() == [(1,)]
        assert con.execute("select count(*) from main.notes").fetchall() == [(2,)]


def test_readers_answer_while_another_process_writes(store: Store, writer_process) -> None:
    with writer_process(store.database) as writer:
        started = time.monotonic()
        with store.read() as con:
            assert notes(con) == ["first"]
            with pytest.raises(duckdb.Error):
                con.execute("select * from main.written_meanwhile").fetchall()
        assert time.monotonic() - started < 30  # answered at once, not after the writer
        writer.communicate("go\n", timeout=60)
        assert writer.returncode == 0
    with store.read() as con:
        assert scalar(con, "select answer from main.written_meanwhile") == 42


def test_a_second_writer_waits_then_gives_up_naming_the_warehouse(store: Store) -> None:
    impatient = Store(store.database, lock_timeout_s=0.3)
    with store.write(), pytest.raises(WarehouseBusyError, match="crossfade.sqlite"), impatient.write():
        pass


def test_a_copied_home_is_a_warehouse_of_its_own(store: Store, tmp_path: Path) -> None:
    subprocess.run(["cp", "-r", str(store.root), str(tmp_path / "copy")], check=True)
    copy = Store(tmp_path / "copy" / "crossfade.duckdb")
    with copy.write("features.scores") as con:  # pending: nothing published moved, but the paths are the copy's
        con.execute("create table features.scores as select 1 as score")
    assert str(store.root) not in (copy.root / CLIENT_SQL).read_text().replace(str(copy.root), "")
    with copy.write() as con:
        con.execute("insert into main.notes values ('only in the copy')")
    with copy.read() as con:
        assert notes(con) == ["first", "only in the copy"]
    with store.read() as con:
        assert notes(con) == ["first"]


def test_writers_are_serialised(store: Store) -> None:
    spans: list[tuple[str, float, float]] = []

    def write(name: str) -> None:
        with Store(store.database, lock_timeout_s=30).write() as con:
            began = time.monotonic()
            con.execute("insert into main.notes values ($name)", {"name": name})
            time.sleep(0.3)
            spans.append((name, began, time.monotonic()))

    threads = [threading.Thread(target=write, args=(f"writer-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    spans.sort(key=lambda span: span[1])
    assert len(spans) == 3
    assert all(earlier[2] <= later[1] for earlier, later in zip(spans, spans[1:]))  # no two overlap
    with store.read() as con:
        assert scalar(con, "select count(*) from main.notes") == 4


def test_run_sql_binds_only_the_parameters_a_file_uses(tmp_path: Path) -> None:
    con = duckdb.connect()
    con.execute("create schema features")
    run_sql(con, "features/splits", {"as_of": "2026-11-02", "window_days": 7, "holdout_days": 3, "valid_days": 2,
                                     "unused": object()})
    assert con.execute("select split, start_at::date::varchar from features.splits order by start_at").fetchall() == [
        ("train", "2026-10-21"), ("valid", "2026-10-28"), ("holdout", "2026-10-30"),
    ]


def test_one_row_refuses_other_counts() -> None:
    con = duckdb.connect()
    assert one_row(con, "select 1, 2") == (1, 2)
    with pytest.raises(ValueError, match="expected one row, got 0"):
        one_row(con, "select 1 where false")
