"""The warehouse store: serialised writers, published snapshots, readers never blocked by a write."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest

from warehouse.store import (
    SNAPSHOTS_KEPT,
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


def test_reading_before_anything_is_published_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(NothingPublishedError, match="crossfade run"), Store(tmp_path / "crossfade.duckdb").read():
        pass


def test_a_write_creates_every_schema_and_publishes_a_snapshot(store: Store) -> None:
    with store.read() as con:
        assert scalar(con, "select text from main.notes") == "first"
        schemas = {row[0] for row in con.execute("select schema_name from information_schema.schemata").fetchall()}
        path = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchall()[0][0]
    assert {"raw", "features", "enrich", "models", "eval", "serving"} <= schemas
    assert Path(path).parent == store.snapshots  # readers never open the working file
    assert Path(path) == store.current_snapshot()


def test_readers_are_read_only(store: Store) -> None:
    with store.read() as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("insert into main.notes values ('nope')")


def test_a_failed_write_publishes_nothing(store: Store) -> None:
    before = store.current_snapshot()
    with pytest.raises(RuntimeError, match="midway"), store.write() as con:
        con.execute("insert into main.notes values ('half done')")
        raise RuntimeError("midway")
    assert store.current_snapshot() == before
    with store.read() as con:
        assert con.execute("select text from main.notes").fetchall() == [("first",)]


def test_readers_answer_from_the_last_snapshot_while_another_process_writes(store: Store, writer_process) -> None:
    with writer_process(store.database) as writer:
        # the writer really holds the working file: DuckDB would refuse a second process outright
        with pytest.raises(duckdb.IOException, match="[Ll]ock"):
            duckdb.connect(str(store.database), read_only=True)
        started = time.monotonic()
        with store.read() as con:
            assert con.execute("select text from main.notes").fetchall() == [("first",)]
            assert con.execute("select count(*) from duckdb_tables() where table_name = 'written_meanwhile'").fetchall() == [(0,)]
        assert time.monotonic() - started < 30  # answered at once, not after the writer (which waits for us)
        writer.communicate("go\n", timeout=60)
        assert writer.returncode == 0
    with store.read() as con:
        assert scalar(con, "select answer from main.written_meanwhile") == 42


def test_a_second_writer_waits_then_gives_up_naming_the_file(store: Store) -> None:
    impatient = Store(store.database, lock_timeout_s=0.3)
    with store.write(), pytest.raises(WarehouseBusyError, match="crossfade.duckdb"), impatient.write():
        pass


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


def test_old_snapshots_are_pruned_but_open_readers_keep_theirs(store: Store) -> None:
    with store.read() as reader:
        for n in range(SNAPSHOTS_KEPT + 2):
            with store.write() as con:
                con.execute("insert into main.notes values ($n)", {"n": str(n)})
        assert len(list(store.snapshots.glob("crossfade-*.duckdb"))) == SNAPSHOTS_KEPT
        assert reader.execute("select count(*) from main.notes").fetchall() == [(1,)]  # its snapshot, still readable
    with store.read() as con:
        assert scalar(con, "select count(*) from main.notes") == SNAPSHOTS_KEPT + 3


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
