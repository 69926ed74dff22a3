"""DuckLake connections: the catalog in SQLite, table data in Parquet files, extensions loaded from installed wheels.

Nothing is downloaded at run time: the `ducklake` and `sqlite` extensions ship as the PyPI wheels
duckdb-extension-ducklake and duckdb-extension-sqlite (pinned to the DuckDB version); their files are
linked (or, across file systems, copied) into an extension directory beside the catalog and loaded with
auto-install off.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import duckdb

CATALOG = "crossfade.sqlite"
DATA = "data"
EXTENSIONS = ".extensions"
SPILL = ".spill"  # DuckDB's temp_directory: where a query past the memory limit spills
MEMORY_LIMIT_ENV = "CROSSFADE_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "4GB"
LAKE = "lake"  # the catalog's name in published.sql, for other DuckDB clients
# wheel package -> the file name DuckDB looks for in its extension directory
WHEELS = {"duckdb_extension_ducklake": "ducklake", "duckdb_extension_sqlite": "sqlite_scanner"}


def wheel_extension(package: str) -> Traversable:
    """The extension file that the wheel `package` (a key of WHEELS) ships for the installed DuckDB."""
    name = WHEELS[package].split("_")[0]  # the wheels name sqlite_scanner's file sqlite.duckdb_extension
    return resources.files(package).joinpath("extensions", f"v{duckdb.__version__}", f"{name}.duckdb_extension")


def extension_directory(root: Path) -> Path:
    """`root`/.extensions laid out as DuckDB expects (version/platform/name.duckdb_extension), filled once."""
    version = f"v{duckdb.__version__}"
    platform = duckdb.execute("pragma platform").fetchone()[0]
    folder = root / EXTENSIONS / version / platform
    for package, name in WHEELS.items():
        target = folder / f"{name}.duckdb_extension"
        if target.is_file():
            continue
        source = wheel_extension(package)
        if not source.is_file():
            raise RuntimeError(
                f"{package} has no extension for DuckDB {duckdb.__version__} ({source}); install "
                f"{package.replace('_', '-')}=={duckdb.__version__} (make install does)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        with resources.as_file(source) as path:
            try:  # a hard link: every home on the wheel's file system shares the wheel's ~70 MB, read only
                os.link(path, partial)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(path, partial)
        partial.replace(target)
    return root / EXTENSIONS


def memory_limit() -> str:
    """DuckDB's buffer pool limit: CROSSFADE_DUCKDB_MEMORY_LIMIT (DuckDB's own format, e.g. '4GB'), else 4GB.

    DuckDB's default, 80% of RAM, sits beside the polars frames and torch tensors of the same process: at
    1M users it took serving to 19 GiB resident. Past the limit DuckDB spills to `SPILL` under the warehouse.
    """
    return os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT


_BASE: dict[str, duckdb.DuckDBPyConnection] = {}  # per process: one DuckDB with the extensions loaded
_BASE_LOCK = threading.Lock()


def _base(root: Path) -> duckdb.DuckDBPyConnection:
    # Loading the two extensions costs about 0.3 s; connections are cursors of one in-memory DuckDB instead.
    key = str(os.getpid())  # a forked child makes its own
    with _BASE_LOCK:
        if key not in _BASE:
            con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                         "extension_directory": str(extension_directory(root)),
                                         "memory_limit": memory_limit(), "temp_directory": str(root / SPILL)})
            con.execute("load ducklake; load sqlite")
            _BASE.clear()
            _BASE[key] = con
        return _BASE[key]


@contextlib.contextmanager
def attached(root: Path, read_only: bool = False, version: int | None = None
             ) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """A connection with the lake under `root` attached (at `version` when given), and the catalog's name there.

    Each connection attaches under its own name, so readers at different snapshots and a writer can share a
    process; the catalog is detached when the connection closes.
    """
    base = _base(root)
    if not read_only:
        _write_ahead_log(root / CATALOG)
    name = f"lake_{uuid.uuid4().hex[:12]}"
    # the data path is the catalog's neighbour wherever CROSSFADE_HOME was copied or moved to
    options = [f"DATA_PATH {literal(str(root / DATA) + '/')}", "OVERRIDE_DATA_PATH TRUE"]
    if read_only:
        options.append("READ_ONLY")
    if version is not None:
        options.append(f"SNAPSHOT_VERSION {int(version)}")
    con = base.cursor()
    try:
        con.execute(f"attach {literal('ducklake:sqlite:' + str(root / CATALOG))} as {name} ({', '.join(options)})")
        con.execute("set TimeZone = 'UTC'")
        yield con, name
    finally:
        con.close()
        cleanup = base.cursor()
        try:
            cleanup.execute(f"detach database if exists {name}")
        finally:
            cleanup.close()


def _write_ahead_log(catalog: Path) -> None:
    """The SQLite catalog in WAL mode: a reader's open transaction then never makes a writer's commit wait."""
    catalog.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(catalog, timeout=30)) as con:
        if con.execute("pragma journal_mode").fetchone()[0].lower() != "wal":
            try:
                con.execute("pragma journal_mode = wal")  # persists in the file; needs no reader inside it
            except sqlite3.OperationalError:
                pass  # a reader holds it now: the next writer switches it


def latest_version(con: duckdb.DuckDBPyConnection, catalog: str) -> int:
    return int(con.execute(f"select id from ducklake_current_snapshot('{catalog}')").fetchall()[0][0])


# one entry of ducklake_snapshot_changes.changes_made: a kind, then a quoted "schema"."table" or a table id
_CHANGE = re.compile(r'(\w+):("(?:[^"]|"")*"\."(?:[^"]|"")*"|\d+)')
_NOT_DATA = ("dropped_table", "created_schema", "dropped_schema", "created_view", "dropped_view")


def changed_tables(con: duckdb.DuckDBPyConnection, catalog: str, after: int, until: int | None = None) -> dict[str, int]:
    """Tables ('schema.name') that snapshots in (after, until] created or changed, with the last such snapshot."""
    metadata = f"__ducklake_metadata_{catalog}"
    rows = con.execute(f"select snapshot_id, changes_made from {metadata}.ducklake_snapshot_changes "
                       "where snapshot_id > $after and snapshot_id <= $until order by snapshot_id",
                       {"after": after, "until": until if until is not None else 2**62}).fetchall()
    if not rows:
        return {}
    names = dict(con.execute(f"""
        select t.table_id::varchar, s.schema_name || '.' || t.table_name
        from {metadata}.ducklake_table as t
        inner join {metadata}.ducklake_schema as s on s.schema_id = t.schema_id
    """).fetchall())
    changed: dict[str, int] = {}
    for snapshot, changes in rows:
        for kind, entry in _CHANGE.findall(changes or ""):
            if kind in _NOT_DATA:
                continue
            table = ".".join(part.replace('""', '"') for part in entry[1:-1].split('"."', 1)) if entry.startswith('"') \
                else names.get(entry)
            if table:
                changed[table] = snapshot
    return changed


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
