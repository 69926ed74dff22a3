"""The warehouse: serialised writes to a DuckLake catalog, write-audit-publish per stage, SQL files run with parameters."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from warehouse import lake

STATE = "published.json"  # {"tables": {table: version readers see}, "pending": {stage: {table: version}}}
CLIENT_SQL = "published.sql"  # the same, for any DuckDB client


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
    """Whether `table` ('schema.name') is there for this connection: a table, or a reader's published view."""
    if not re.fullmatch(r"\w+\.\w+", table):
        raise ValueError(f"table must be 'schema.name' (got {table!r})")
    try:  # resolved as the connection resolves names: its own catalog, never another connection's
        con.execute(f"select 1 from {table} limit 0").fetchall()
    except duckdb.CatalogException:
        return False
    return True


def scalar(con: duckdb.DuckDBPyConnection, query: str, params: Mapping[str, Any] | None = None) -> Any:
    return one_row(con, query, params)[0]


class Store:
    """The warehouse: a DuckLake catalog (SQLite) over Parquet files, written by one process at a time.

    Write, audit, publish: a write commits snapshots that only writers and audits see; readers see each
    table at the snapshot its stage last published (`published.json`), so a stage's tables reach readers
    only when its gate passes, and publishing moves version numbers, never data. A write without a stage
    publishes what it changed when it ends (scripts and tests); a write for a stage leaves its tables
    pending until `publish(stage)`.
    """

    def __init__(self, database: Path, lock_timeout_s: float = 600.0) -> None:
        self.database = Path(database)  # names the warehouse: CROSSFADE_HOME/warehouse/crossfade.duckdb by default
        self.root = self.database.parent  # the catalog, data files and published state live here
        self.lock_timeout_s = lock_timeout_s

    @property
    def state_path(self) -> Path:
        return self.root / STATE

    @contextlib.contextmanager
    def write(self, stage: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection on the newest state; writers queue on a file lock.

        On success the tables it changed are published (no stage) or left pending for `publish(stage)`.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._write_lock(), lake.attached(self.root) as (con, catalog):
            started = lake.latest_version(con, catalog)
            con.execute(f"use {catalog}")
            schema = sql_text("schema")
            digest = _digest(schema)
            before = self._state()  # under the write lock: no other writer changes it meanwhile
            if before.get("schema") != digest:  # creating what exists costs a catalog round trip each
                con.execute(schema)
            rejected = before.get("rejected", {}).get(stage, {}) if stage else {}
            if rejected:  # the stage's last gate failed: this write starts again from what readers see
                _roll_back(con, rejected, before["tables"])
            yield con
            changed = lake.changed_tables(con, catalog, started)
            state = self._state()
            state["schema"] = digest
            if stage is None:
                _pin(state["tables"], changed)
            else:
                _pin(state["pending"].setdefault(stage, {}), changed)
                state.get("rejected", {}).pop(stage, None)
            self._save(state)

    def publish(self, stage: str) -> dict[str, int]:
        """Readers now see the tables `stage` wrote since its last publish; returns them with their versions."""
        with self._write_lock():
            state = self._state()
            pending = state["pending"].pop(stage, {})
            _pin(state["tables"], pending)
            self._save(state)
        return pending

    def reject(self, stage: str) -> dict[str, int]:
        """The stage's gate failed: readers stay where they were, and its writes stay in the newest state for a
        person to inspect (and by time travel after that) until the stage writes again. That next write first
        puts each of its tables back to the version readers see (a copy, on this path only), so a retry never
        builds on rows its gate refused. Returns the refused tables with their versions."""
        with self._write_lock():
            state = self._state()
            refused = dict(state["pending"].get(stage, {}))
            if refused:
                state.setdefault("rejected", {})[stage] = refused
                self._save(state)
        return refused

    def maintain(self, retention_days: int) -> dict[str, int]:
        """Compact small files, expire snapshots older than `retention_days` (never one a reader sees), delete the
        files no snapshot left needs; returns what it did. Time travel reaches back `retention_days`."""
        published = self._state()["tables"]
        with self._write_lock(), lake.attached(self.root) as (con, catalog):
            merged = len(con.execute(f"call ducklake_merge_adjacent_files('{catalog}')").fetchall())
            # the versions to drop, listed: older than the retention and than any snapshot a reader sees
            versions = [row[0] for row in con.execute(
                f"select snapshot_id from ducklake_snapshots('{catalog}') where snapshot_time < now() - to_days($days) "
                "and snapshot_id < $oldest and snapshot_id < (select max(snapshot_id) from ducklake_snapshots("
                f"'{catalog}'))", {"days": retention_days, "oldest": min(published.values(), default=2**62)}).fetchall()]
            if versions:
                con.execute(f"call ducklake_expire_snapshots('{catalog}', versions => {[int(v) for v in versions]})")
            expired = len(versions)
            removed = len(con.execute(f"call ducklake_cleanup_old_files('{catalog}', cleanup_all => true)").fetchall())
        return {"files_merged": merged, "snapshots_expired": expired, "files_removed": removed}

    def published_tables(self) -> set[str]:
        return set(self._state()["tables"])

    def published_version(self, table: str) -> int | None:
        """The snapshot at which readers see `table`; None when it was never published."""
        return self._state()["tables"].get(table)

    def pending_stages(self) -> dict[str, dict[str, int]]:
        """Every stage with writes readers do not see yet, and those tables."""
        return {stage: dict(tables) for stage, tables in self._state()["pending"].items() if tables}

    def pending(self, stage: str) -> dict[str, int]:
        """Tables `stage` wrote that readers do not see yet (its gate has not passed since)."""
        return dict(self._state()["pending"].get(stage, {}))

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the published state: each table as its gate last published it."""
        for attempt in range(3):
            published = self._state()["tables"]
            if not published:
                raise NothingPublishedError(
                    f"nothing published yet in {self.root}; run `crossfade run` (or `make demo`) first"
                )
            version = max(published.values())
            stack = contextlib.ExitStack()
            try:
                con, catalog = stack.enter_context(lake.attached(self.root, read_only=True, version=version))
                views = f"published_{catalog}"
                con.execute(f"attach ':memory:' as {views}")
                stack.callback(con.execute, f"detach {views}")
                stack.callback(con.execute, "use memory")
                for statement in published_views(con, catalog, views, published, version):
                    con.execute(statement)
                break
            except duckdb.Error as error:
                stack.close()
                # published.json moved on and maintenance expired what it named meanwhile: read it again
                if attempt == 2 or "snapshot" not in str(error).lower():
                    raise
        with stack:
            yield con

    @contextlib.contextmanager
    def audit(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the newest state, published or not: what a gate checks."""
        if not (self.root / lake.CATALOG).exists():
            raise NothingPublishedError(f"nothing written yet in {self.root}; run `crossfade run` first")
        with lake.attached(self.root, read_only=True) as (con, catalog):
            con.execute(f"use {catalog}")
            yield con

    def published_sql(self, state: dict[str, Any] | None = None) -> str:
        """The statements that open the published state in any DuckDB client (also written to published.sql)."""
        state = state or self._state()
        published = state["tables"]
        if not published:
            return f"-- nothing published yet: run `crossfade run`\n{_pins_line(state, self.root)}\n"
        version = max(published.values())
        with lake.attached(self.root, read_only=True, version=version) as (con, catalog):
            views = [statement.replace(catalog, lake.LAKE)
                     for statement in published_views(con, catalog, "memory", published, version)]
        lines = [
            "-- crossfade's published state (each table as its gate last published it): duckdb -init published.sql",
            _pins_line(state, self.root),
            f"set extension_directory = {lake.literal(str(lake.extension_directory(self.root)))};",
            "load ducklake;",
            "load sqlite;",
            f"attach {lake.literal('ducklake:sqlite:' + str(self.root / lake.CATALOG))} as {lake.LAKE} "
            f"(DATA_PATH {lake.literal(str(self.root / lake.DATA) + '/')}, OVERRIDE_DATA_PATH TRUE, READ_ONLY, SNAPSHOT_VERSION {version});",
            *[f"{statement};" for statement in views],
        ]
        return "\n".join(lines) + "\n"

    def _state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"tables": {}, "pending": {}}
        return json.loads(self.state_path.read_text())

    def _save(self, state: dict[str, Any]) -> None:
        """Both files written beside their places first, then moved over them: a failure changes neither.

        published.sql names the published versions only, so it is written again only when they moved (a write
        left pending, or one that changed nothing, leaves it as it is)."""
        for leftover in self.root.glob(f".{STATE}.*"), self.root.glob(f".{CLIENT_SQL}.*"):  # of a killed writer
            for path in leftover:  # the caller holds the write lock: no other save is under way
                path.unlink(missing_ok=True)
        texts = {self.state_path: json.dumps(state, indent=1, sort_keys=True)}
        client_sql = self.root / CLIENT_SQL
        if not client_sql.exists() or _pins_line(state, self.root) not in client_sql.read_text().splitlines():
            texts[client_sql] = self.published_sql(state)
        partials = {path: path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}") for path in texts}
        try:
            for path, text in texts.items():
                partials[path].write_text(text)
            for path, partial in partials.items():
                os.replace(partial, path)
        finally:
            for partial in partials.values():
                partial.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        lock_path = self.root / ".write.lock"
        with open(lock_path, "a+") as handle:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WarehouseBusyError(
                            f"{self.root / lake.CATALOG}: another crossfade writer held the lock for over "
                            f"{self.lock_timeout_s:.0f} s; wait for its run to finish"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _roll_back(con: duckdb.DuckDBPyConnection, refused: Mapping[str, int], published: Mapping[str, int]) -> None:
    """Each refused table back to its published rows (emptied when it was never published); a table published
    again since (by a write without a stage) is left as it is."""
    for table, version in refused.items():
        was = published.get(table)
        if was is not None and was >= version:
            continue
        con.execute(f"delete from {table}")
        if was is not None:
            con.execute(f"insert into {table} select * from {table} at (version => {int(was)})")


def _pins_line(state: Mapping[str, Any], root: Path) -> str:
    """The comment of published.sql naming the versions it opens and the warehouse whose paths it holds; the
    file is rewritten when either differs (a publish, or a CROSSFADE_HOME copied elsewhere)."""
    return f"-- versions: {json.dumps(state['tables'], sort_keys=True, separators=(',', ':'))} in {root}"


def published_views(con: duckdb.DuckDBPyConnection, catalog: str, views: str, published: Mapping[str, int],
                    version: int) -> list[str]:
    """What a connection with the lake attached as `catalog` at `version` (the newest published) runs to show the
    published state, with its views in the database `views`.

    Most tables are read at `version` itself; a table written since its own publish (its gate failed or has
    not run) is a view at its published snapshot, and one never published is an empty view of its columns.
    """
    changed = lake.changed_tables(con, catalog, min(published.values()), version)
    stale = {table: pinned for table, pinned in published.items() if changed.get(table, 0) > pinned}
    existing = [row[0] for row in con.execute(
        f"select schema_name || '.' || table_name from duckdb_tables() where database_name = '{catalog}'").fetchall()]
    hidden = sorted(set(existing) - set(published))
    schemas = sorted({row[0] for row in con.execute(
        f"select schema_name from duckdb_schemas() where database_name = '{catalog}'").fetchall()})
    statements = [f"create schema if not exists {views}.{schema}" for schema in schemas]
    statements += [f"create view {views}.{table} as select * from {catalog}.{table} at (version => {int(pinned)})"
                   for table, pinned in sorted(stale.items())]
    # never published: empty, with its columns, so readers see no rows rather than unchecked ones
    statements += [f"create view {views}.{table} as select * from {catalog}.{table} where false" for table in hidden]
    search = [f"{views}.{schema}" for schema in schemas] + [f"{catalog}.{schema}" for schema in schemas]
    return [*statements, f"use {views}", f"set search_path = {lake.literal(','.join(search))}"]


def _pin(pins: dict[str, int], changed: Mapping[str, int]) -> None:
    # versions only move forward: a stage published after another that wrote the same table later keeps the later
    for table, version in changed.items():
        pins[table] = max(pins.get(table, 0), version)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
