"""The landing zone: find partition folders and files, and show every supported format as one view of text columns."""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from warehouse.landing_formats import READERS, Part, nulls

FORMATS = ("jsonl", "csv", "parquet")
EVENT_COLUMNS = ("event_id", "user_id", "item_id", "ts", "event_type", "ms_played", "context", "country")
ITEM_COLUMNS = (
    "item_id", "item_type", "title", "description", "creator", "language", "genres",
    "duration_ms", "release_date", "is_paid",
)
USER_COLUMNS = ("user_id", "country", "age_bucket", "signup_date", "plan")


class LandingError(ValueError):
    """The landing zone does not follow the contract in the README."""


class LandingWarning(UserWarning):
    """Something in the landing zone was skipped; the message names it and says how to fix it."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    fmt: str  # jsonl | csv | parquet
    compressed: bool


@dataclass(frozen=True)
class QuarantinedFile:
    """A landing file left out whole, and why; the other files of its partition are read as usual."""

    path: Path
    fmt: str  # as named: jsonl, csv.gz, parquet, ...
    size_bytes: int
    reason: str  # "<kind>: <detail>", kind one of unreadable, empty, wrong_schema, undecodable

    @classmethod
    def of(cls, entry: LandingFile, reason: str) -> QuarantinedFile:
        size = entry.path.stat().st_size if entry.path.exists() else 0
        return cls(entry.path, entry.fmt + (".gz" if entry.compressed else ""), size, reason)


def file_format(path: Path) -> LandingFile | None:
    """The format of a landing file from its name, or None for files that are not data (_*, .*)."""
    name = path.name
    if name.startswith(("_", ".")):
        return None
    compressed = name.endswith(".gz")
    stem = name[:-3] if compressed else name
    suffix = stem.rsplit(".", 1)[-1].lower() if "." in stem else ""
    if suffix == "json":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise LandingError(f"{path}: unsupported file type; use .jsonl, .csv or .parquet, each optionally .gz")
    return LandingFile(path, suffix, compressed)


def data_files(folder: Path) -> list[LandingFile]:
    """Data files of one folder, sorted by name (for snapshots, the last by name wins)."""
    if not folder.is_dir():
        return []
    found = (file_format(path) for path in sorted(folder.iterdir()) if path.is_file())
    return [entry for entry in found if entry is not None]


def parse_partition(key: str) -> dt.date:
    """A partition key YYYY-MM-DD; anything else (a path, '..') is refused."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", key):
        raise LandingError(f"partition key must be YYYY-MM-DD (got {key!r})")
    try:
        return dt.date.fromisoformat(key)
    except ValueError:
        raise LandingError(f"partition key is not a calendar date (got {key!r})") from None


def event_partition_dir(landing: Path, key: str) -> Path:
    return landing / "events" / f"date={parse_partition(key).isoformat()}"


def event_partitions(landing: Path) -> list[str]:
    """Arrival dates that have a folder in landing/events, oldest first.

    A folder named date=... that is not a calendar date is skipped with a LandingWarning, so one bad
    folder never hides the good ones.
    """
    root = landing / "events"
    if not root.is_dir():
        return []
    keys = []
    for child in root.iterdir():
        if not child.is_dir() or not child.name.startswith("date="):
            continue
        try:
            keys.append(parse_partition(child.name.removeprefix("date=")).isoformat())
        except LandingError as error:
            warnings.warn(f"{child}: skipped, {error}; rename it to date=YYYY-MM-DD with the day its files arrived",
                          LandingWarning, stacklevel=2)
    return sorted(keys)


def fingerprint(files: list[LandingFile]) -> str:
    """Names, sizes and modification times: changes when a partition's files change."""
    digest = hashlib.sha256()
    for entry in files:
        stat = entry.path.stat()
        digest.update(f"{entry.path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def staged(
    con: duckdb.DuckDBPyConnection, files: list[LandingFile], columns: tuple[str, ...], name: str,
    quarantine: list[QuarantinedFile] | None = None,
) -> Iterator[str]:
    """A temp view `name` of every record of `files` as text; the tables behind it are dropped on exit.

    Columns: file_no (position in `files`, so name order), source_file, source_line (1-based line of
    JSONL and CSV, row of Parquet), raw_record (the text as read where it could not be parsed or the
    file has another schema, else null), parse_error (null when parsed), then `columns` as varchar.
    Each file is read once into a narrow temp table; parsing and numbering happen when the view is scanned.

    A file that cannot be read raises LandingError, unless `quarantine` is given: then it is appended
    there and left out. Files already in `quarantine` are left out unread (file_no keeps its position).
    """
    tables: list[str] = []
    variables: list[str] = []
    left_out = {entry.path for entry in quarantine or []}
    try:
        parts = []
        for file_no, entry in enumerate(files):
            if entry.path in left_out:
                continue
            part = Part(con, entry, columns, f"{name}_{file_no}", file_no, tables, variables)
            try:
                parts += READERS[entry.fmt](part)
            except (duckdb.Error, OSError, EOFError) as error:
                if quarantine is None:
                    raise LandingError(f"{entry.path}: cannot be read as {entry.fmt} ({_first_line(error)}); replace or "
                                       "remove the file, then ingest the partition again") from error
                quarantine.append(QuarantinedFile.of(entry, f"unreadable: {_first_line(error)}"))
        empty = ", ".join(["null::integer as file_no", "null::varchar as source_file", "null::bigint as source_line",
                           "null::varchar as raw_record", "null::varchar as parse_error", *nulls(columns)])
        union = " union all ".join(f"({part})" for part in parts) or f"select {empty} where false"
        con.execute(f"create or replace temp view {name} as {union}")
        yield name
    finally:
        con.execute(f"drop view if exists {name}")
        for table in tables:
            con.execute(f"drop table if exists {table}")
        for variable in variables:
            con.execute(f"reset variable {variable}")


def read_error(con: duckdb.DuckDBPyConnection, entry: LandingFile, columns: tuple[str, ...]) -> str | None:
    """Why `entry` cannot be staged in full, as a quarantine reason, or None; reads every record once.

    For the slow path only: a Parquet file can fail on a damaged page long after its footer was read,
    when a batch of files is scanned together, and this finds which file it was.
    """
    try:
        with staged(con, [entry], columns, "_probe_stage") as view:
            con.execute(f"create or replace temp table _probe_rows as select * from {view}")
    except (duckdb.Error, OSError, EOFError, LandingError) as error:
        cause = error.__cause__ if isinstance(error, LandingError) and error.__cause__ else error
        return f"unreadable: {_first_line(cause)}"
    finally:
        con.execute("drop table if exists _probe_rows")
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
