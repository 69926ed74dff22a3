"""The DuckDB warehouse: serialised writes, published read-only snapshots, SQL files run with parameters."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

SNAPSHOT_POINTER = "CURRENT"
SNAPSHOTS_KEPT = 3


class WarehouseBusyError(RuntimeError):
    """Another process holds the database file for writing longer than we were told to wait."""


class NothingPublishedError(RuntimeError):
    """No snapshot has been published yet, so there is nothing for readers to query."""


def sql_text(name: str) -> str:
    """The text of a SQL file under warehouse/sql, e.g. 'features/item_stats'."""
    return resources.files("warehouse").joinpath("sql", f"{name}.sql").read_text()


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None) -> None:
    """Run one SQL file; values are bound as $name parameters, never formatted into the text."""
    text = sql_text(name)
    used = {key: value for key, value in (params or {}).items() if f"${key}" in text}
    con.execute(text, used) if used else con.execute(text)


def one_row(con: duckdb.DuckDBPyConnection, query: str, params: Mapping[str, Any] | None = None) -> tuple:
    """The single row of a query, fully consumed (DuckDB 2 keeps a half-read result open otherwise)."""
    rows = con.execute(query, params or {}).fetchall()
    if len(rows) != 1:
        raise ValueError(f"expected one row, got {len(rows)} from: {query.strip()[:80]}")
    return rows[0]


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table` ('schema.name') exists in the connected database."""
    schema, name = table.split(".")
    return bool(scalar(con, "select count(*) from duckdb_tables() where schema_name = $schema and table_name = $name",
                       {"schema": schema, "name": name}))


def scalar(con: duckdb.DuckDBPyConnection, query: str, params: Mapping[str, Any] | None = None) -> Any:
    return one_row(con, query, params)[0]


class Store:
    """One DuckDB file written by one process at a time and read through published snapshots.

    DuckDB lets a single process open a file for writing and nobody else open it meanwhile, so
    readers never touch the working file: after each write, the writer checkpoints and publishes a
    copy, and readers open the newest published copy read-only.
    """

    def __init__(self, database: Path, lock_timeout_s: float = 600.0) -> None:
        self.database = Path(database)
        self.snapshots = self.database.parent / "snapshots"
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def write(self, publish: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection; writers queue on a file lock, and the result is published on success."""
        self.database.parent.mkdir(parents=True, exist_ok=True)
        with self._write_lock():
            con = self._open_for_write()
            try:
                con.execute("set TimeZone = 'UTC'")
                con.execute(sql_text("schema"))
                yield con
                con.execute("checkpoint")
            finally:
                con.close()
            if publish:
                self._publish()

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the last published snapshot; never waits for a writer."""
        for _ in range(5):
            path = self.current_snapshot()
            try:
                con = duckdb.connect(str(path), read_only=True)
                break
            except duckdb.IOException:
                if path.exists():
                    raise
                continue  # replaced between reading the pointer and opening it: read the pointer again
        else:
            raise NothingPublishedError(f"could not open a published snapshot in {self.snapshots}")
        try:
            yield con
        finally:
            con.close()

    def current_snapshot(self) -> Path:
        pointer = self.snapshots / SNAPSHOT_POINTER
        if not pointer.exists():
            raise NothingPublishedError(
                f"nothing published yet in {self.snapshots}; run `crossfade run` (or `make demo`) first"
            )
        return self.snapshots / pointer.read_text().strip()

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        lock_path = self.database.parent / ".write.lock"
        with open(lock_path, "a+") as handle:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WarehouseBusyError(
                            f"{self.database}: another crossfade writer held the lock for over "
                            f"{self.lock_timeout_s:.0f} s; wait for its run to finish"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _open_for_write(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.database))
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise WarehouseBusyError(
                        f"{self.database} is held by another process ({error}); close other DuckDB "
                        "clients on the working file and read published snapshots with `crossfade sql` instead"
                    ) from error
                time.sleep(0.5)

    def _publish(self) -> Path:
        """Copy the checkpointed file and switch the pointer atomically; keep the last few copies.

        A publish that fails (a full disk) removes what it wrote and leaves the pointer as it was; the
        leftovers of a writer killed mid-publish are removed by the next writer, which holds the lock.
        """
        self.snapshots.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        name = f"crossfade-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.duckdb"
        partial = self.snapshots / f".{name}.partial"
        pointer_tmp = self.snapshots / f".{SNAPSHOT_POINTER}.{uuid.uuid4().hex[:8]}"
        try:
            shutil.copyfile(self.database, partial)
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(partial, self.snapshots / name)
            pointer_tmp.write_text(name)
            os.replace(pointer_tmp, self.snapshots / SNAPSHOT_POINTER)
        except BaseException:
            partial.unlink(missing_ok=True)
            pointer_tmp.unlink(missing_ok=True)
            if self._pointed_name() != name:
                (self.snapshots / name).unlink(missing_ok=True)
            raise
        self._prune(keep=name)
        return self.snapshots / name

    def _pointed_name(self) -> str | None:
        pointer = self.snapshots / SNAPSHOT_POINTER
        return pointer.read_text().strip() if pointer.exists() else None

    def _remove_leftovers(self) -> None:
        # Only a writer killed between copy and pointer switch leaves these; nobody reads them.
        for path in [*self.snapshots.glob(".crossfade-*.partial"), *self.snapshots.glob(f".{SNAPSHOT_POINTER}.*")]:
            path.unlink(missing_ok=True)

    def _prune(self, keep: str) -> None:
        # Open readers keep their file alive after unlink, so dropping old copies never breaks a query.
        copies = sorted(self.snapshots.glob("crossfade-*.duckdb"), key=lambda path: path.stat().st_mtime)
        for path in copies[:-SNAPSHOTS_KEPT]:
            if path.name != keep:
                path.unlink(missing_ok=True)
