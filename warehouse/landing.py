"""The landing zone: find partition folders and files, read any supported format into text columns."""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

FORMATS = ("jsonl", "csv", "parquet")
PARTITION_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
EVENT_COLUMNS = ("event_id", "user_id", "item_id", "ts", "event_type", "ms_played", "context", "country")
ITEM_COLUMNS = (
    "item_id", "item_type", "title", "description", "creator", "language", "genres",
    "duration_ms", "release_date", "is_paid",
)
USER_COLUMNS = ("user_id", "country", "age_bucket", "signup_date", "plan")


class LandingError(ValueError):
    """The landing zone does not follow the contract in the README."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    fmt: str  # jsonl | csv | parquet
    compressed: bool


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
    if suffix not in FORMATS or (compressed and suffix == "parquet"):
        raise LandingError(f"{path}: unsupported file type; use .jsonl, .csv or .parquet (jsonl and csv may be .gz)")
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
    """Arrival dates that have a folder in landing/events, oldest first."""
    root = landing / "events"
    if not root.is_dir():
        return []
    keys = []
    for child in root.iterdir():
        match = PARTITION_RE.match(child.name)
        if child.is_dir() and match:
            keys.append(parse_partition(match.group(1)).isoformat())
    return sorted(keys)


def fingerprint(files: list[LandingFile]) -> str:
    """Names, sizes and modification times: changes when a partition's files change."""
    digest = hashlib.sha256()
    for entry in files:
        stat = entry.path.stat()
        digest.update(f"{entry.path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def stage_file(con: duckdb.DuckDBPyConnection, entry: LandingFile, columns: tuple[str, ...], table: str) -> None:
    """Append one file's records to `table` as text, with source line, raw record and parse error.

    The staging table has columns (source_file, source_line, raw_record, parse_error, *columns); a
    record that cannot be parsed keeps its raw text and a reason instead of values.
    """
    path = str(entry.path)
    if entry.fmt == "jsonl":
        _stage_jsonl(con, path, columns, table)
    elif entry.fmt == "csv":
        _stage_csv(con, path, entry.compressed, columns, table)
    else:
        _stage_parquet(con, path, columns, table)


def _select_columns(present: set[str], columns: tuple[str, ...], source: str) -> str:
    parts = []
    for column in columns:
        if column in present:
            parts.append(f'cast({source}"{column}" as varchar) as "{column}"')
        else:
            parts.append(f'null::varchar as "{column}"')
    return ", ".join(parts)


def _stage_jsonl(con: duckdb.DuckDBPyConnection, path: str, columns: tuple[str, ...], table: str) -> None:
    structure = "{" + ", ".join(f'"{column}": "VARCHAR"' for column in columns) + "}"
    # Lines go to a table first: its rowid numbers them in file order while the JSON parsing below
    # runs on every core (row_number() over a file scan would force that scan onto one thread).
    # One text column per line: JSON that fails to parse keeps its line number and raw text.
    con.execute(
        """
        create or replace temp table _jsonl_lines as
        select line
        from read_csv($path, columns = {'line': 'VARCHAR'}, delim = '\x1e', quote = '', escape = '', header = false,
                      auto_detect = false, compression = 'auto', strict_mode = false)
        """,
        {"path": path},
    )
    con.execute(
        f"""
        insert into {table}
        with parsed as (
            select rowid + 1 as source_line, line, json_valid(line) and starts_with(ltrim(line), '{{') as is_valid
            from _jsonl_lines
            where line is not null and trim(line) <> ''
        )
        select
            $path as source_file, source_line, line as raw_record,
            case when is_valid then null else 'broken_line' end as parse_error,
            unnest(case when is_valid then json_transform(line, $structure) end)
        from parsed
        """,
        {"path": path, "structure": structure},
    )
    con.execute("drop table _jsonl_lines")


def _csv_header(path: str, compressed: bool) -> list[str]:
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline()
    return [name.strip().lstrip("\ufeff") for name in next(csv.reader([first]), [])]


def _stage_csv(con: duckdb.DuckDBPyConnection, path: str, compressed: bool, columns: tuple[str, ...], table: str) -> None:
    header = _csv_header(path, compressed)
    present = set(header)
    file_columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in _safe_names(header)) + "}"
    select = _select_columns(present, columns, "r.")
    cells = ", ".join(f'coalesce(r."{name}", \'\')' for name in _safe_names(header))
    raw = f"concat_ws(',', {cells})" if cells else "''"
    con.execute("drop table if exists _csv_rejects; drop table if exists _csv_scans")
    # Accepted rows keep file order in the table, so rowid + 1 is the accepted row's number.
    con.execute(
        f"""
        create or replace temp table _csv_rows as
        select {select}, {raw} as raw_record
        from read_csv($path, columns = {file_columns}, header = true, auto_detect = false, delim = ',',
                      quote = '"', escape = '"', compression = 'auto', store_rejects = true,
                      rejects_table = '_csv_rejects', rejects_scan = '_csv_scans') as r
        """,
        {"path": path},
    )
    con.execute(
        """
        create or replace temp table _csv_rejected_lines as
        select line, any_value(csv_line) as csv_line,
               'broken_line: ' || string_agg(distinct lower(error_type::varchar), ', ' order by lower(error_type::varchar)) as reason
        from _csv_rejects
        group by line
        """
    )
    targets = ", ".join(f'r."{column}"' for column in columns)
    if con.execute("select count(*) from _csv_rejected_lines").fetchall() == [(0,)]:
        # The header is line 1 and no line was rejected: the k-th row is line k + 1.
        con.execute(f"insert into {table} select $path, r.rowid + 2, r.raw_record, null, {targets} from _csv_rows as r",
                    {"path": path})
    else:
        # The k-th accepted row is the k-th line that was not rejected.
        con.execute(
            f"""
            insert into {table}
            with line_numbers as (
                select line, row_number() over (order by line) as accepted_no
                from range(2, 2 + (select count(*) from _csv_rows) + (select count(*) from _csv_rejected_lines)) as t(line)
                where line not in (select line from _csv_rejected_lines)
            )
            select $path, n.line, r.raw_record, null, {targets}
            from (select rowid + 1 as accepted_no, * from _csv_rows) as r
            inner join line_numbers as n using (accepted_no)
            """,
            {"path": path},
        )
        con.execute(
            f"insert into {table} (source_file, source_line, raw_record, parse_error) "
            "select $path, line, csv_line, reason from _csv_rejected_lines",
            {"path": path},
        )
    con.execute("drop table _csv_rows; drop table _csv_rejected_lines; drop table _csv_rejects; drop table _csv_scans")
    _flag_wrong_schema(con, table, path, present, columns)


def _safe_names(header: list[str]) -> list[str]:
    """Header names usable as quoted identifiers; odd names become positional ones."""
    return [name if re.fullmatch(r"[A-Za-z0-9_ .-]{1,64}", name) else f"column{index}" for index, name in enumerate(header)]


def _stage_parquet(con: duckdb.DuckDBPyConnection, path: str, columns: tuple[str, ...], table: str) -> None:
    described = con.execute(
        "select column_name, column_type from (describe select * from read_parquet($path))", {"path": path}
    ).fetchall()
    types = dict(described)
    parts = []
    for column in columns:
        if column not in types:
            parts.append(f'null::varchar as "{column}"')
        elif types[column].endswith("[]") or types[column].startswith(("STRUCT", "MAP")):
            parts.append(f'to_json(p."{column}")::varchar as "{column}"')  # lists stay parseable JSON
        else:
            parts.append(f'cast(p."{column}" as varchar) as "{column}"')
    con.execute(
        f"""
        insert into {table}
        select $path, p.file_row_number + 1, null, null, {", ".join(parts)}
        from read_parquet($path, file_row_number = true) as p
        """,
        {"path": path},
    )
    _flag_wrong_schema(con, table, path, set(types), columns)


def _flag_wrong_schema(
    con: duckdb.DuckDBPyConnection, table: str, path: str, present: set[str], columns: tuple[str, ...]
) -> None:
    missing = [column for column in columns if column not in present]
    if missing and len(missing) > len(columns) // 2:
        con.execute(
            f"update {table} set parse_error = $reason where source_file = $path and parse_error is null",
            {"reason": f"wrong_schema: missing columns {missing}", "path": path},
        )
