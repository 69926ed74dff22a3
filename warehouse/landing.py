"""The landing zone: find partition folders and files, and show every supported format as one view of text columns."""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import hashlib
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb

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
            part = _Part(con, entry, columns, f"{name}_{file_no}", file_no, tables, variables)
            try:
                parts += _READERS[entry.fmt](part)
            except (duckdb.Error, OSError, EOFError) as error:
                if quarantine is None:
                    raise LandingError(f"{entry.path}: cannot be read as {entry.fmt} ({_first_line(error)}); replace or "
                                       "remove the file, then ingest the partition again") from error
                quarantine.append(QuarantinedFile.of(entry, f"unreadable: {_first_line(error)}"))
        empty = ", ".join(["null::integer as file_no", "null::varchar as source_file", "null::bigint as source_line",
                           "null::varchar as raw_record", "null::varchar as parse_error", *_nulls(columns)])
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


def _nulls(columns: tuple[str, ...]) -> list[str]:
    return [f'null::varchar as "{column}"' for column in columns]


@dataclass
class _Part:
    """One file behind a staged view. Its temp tables are named after `table`; its path and schema error
    are session variables, since a view cannot hold bound values. Both are listed for the clean-up."""

    con: duckdb.DuckDBPyConnection
    entry: LandingFile
    columns: tuple[str, ...]
    table: str
    file_no: int
    tables: list[str]
    variables: list[str]

    def register(self, schema_error: str | None) -> None:
        for suffix, value in (("path", str(self.entry.path)), ("error", schema_error)):
            self.con.execute(f"set variable {self.table}_{suffix} = $value::varchar", {"value": value})
            self.variables.append(f"{self.table}_{suffix}")

    def head(self, line: str) -> str:
        """The leading columns of this file's select; `line` is its source_line expression."""
        return (f"select {self.file_no}::integer as file_no, getvariable('{self.table}_path') as source_file, "
                f"{line}::bigint as source_line")

    def schema_error(self) -> str:
        return f"getvariable('{self.table}_error')"

    def read_lines(self, reader: str) -> tuple[str, str, str | None]:
        """Load `reader` (a read_csv call on $path with store_rejects) into the file's table.

        Returns the source_line expression and FROM clause of the accepted rows, and the select of the
        refused rows as broken_line records (None when every line was read).
        """
        table = self.table
        self.tables += [table, f"{table}_rejects", f"{table}_scans", f"{table}_bad", f"{table}_lines"]
        with ThreadPoolExecutor(max_workers=1) as pool:
            # DuckDB reads a gzip stream cut short without complaint, dropping the rest of the file
            # silently; the check runs beside the single-threaded gzip read, so it costs no wall time.
            intact = pool.submit(_check_gzip, self.entry.path) if self.entry.compressed else None
            self.con.execute(f"create or replace temp table {table} as select * from {reader}",
                             {"path": str(self.entry.path)})
            if intact is not None:
                intact.result()
        self.con.execute(
            f"""
            create or replace temp table {table}_bad as
            select line::bigint as line, any_value(csv_line) as raw_record,
                   'broken_line: ' || string_agg(distinct lower(error_type::varchar), ', '
                                                 order by lower(error_type::varchar)) as reason
            from {table}_rejects group by line
            """
        )
        first = 2 if self.entry.fmt == "csv" else 1  # a CSV header is line 1
        if self.con.execute(f"select count(*) from {table}_bad").fetchall() == [(0,)]:
            return f"r.rowid + {first}", f"{table} as r", None
        # The k-th accepted row is the k-th line that was not refused. Between two refused lines the
        # lines run on with a fixed offset, so the map from k to line is generated segment by segment.
        self.con.execute(
            f"""
            create or replace temp table {table}_lines as
            with
            refused as (
                select line, row_number() over (order by line) as count_refused from {table}_bad
                union all
                select {first - 1}, 0
            ),
            segments as (
                select line + 1 as start_line, count_refused, coalesce(
                    lead(line) over (order by line),
                    {first} + (select count(*) from {table}) + (select count(*) from {table}_bad)  -- after the last line
                ) as end_line
                from refused
            ),
            lines as (
                select unnest(range(start_line, end_line)) as line, count_refused from segments
            )
            select line - {first - 1} - count_refused as k, line from lines
            """
        )
        refused = (f"{self.head('b.line')}, b.raw_record, b.reason as parse_error, {', '.join(_nulls(self.columns))} "
                   f"from {table}_bad as b")
        return "n.line", f"{table} as r inner join {table}_lines as n on r.rowid + 1 = n.k", refused


def _check_gzip(path: Path) -> None:
    """Raise EOFError or gzip.BadGzipFile unless the whole stream inflates and its checksums match."""
    with gzip.open(path, "rb") as handle:
        while handle.read(1 << 20):
            pass


def _rejects(table: str) -> str:
    # The date=... folder is the partition, not a column of the file.
    return (f"hive_partitioning = false, store_rejects = true, rejects_table = '{table}_rejects', "
            f"rejects_scan = '{table}_scans'")


def _schema_error(present: list[str], columns: tuple[str, ...]) -> str | None:
    """A file missing most expected columns is another kind of file: every row gets this reason."""
    missing = [column for column in columns if column not in present]
    if len(missing) <= len(columns) // 2:
        return None
    unexpected = [column for column in present if column not in columns]
    return f"wrong_schema: missing columns {', '.join(missing)}" + (
        f"; unexpected columns {', '.join(unexpected)}" if unexpected else "")


def _jsonl(part: _Part) -> list[str]:
    # One text column per line, in file order: the table's rowid numbers the lines while the read runs on
    # every core, and the JSON is parsed when the view is scanned.
    line, source, refused = part.read_lines(
        f"read_csv($path, columns = {{'line': 'VARCHAR'}}, delim = '\x1e', quote = '', escape = '', header = false, "
        f"auto_detect = false, compression = 'auto', {_rejects(part.table)})"
    )
    part.register(None)
    columns = part.columns
    structure = "{" + ", ".join(f'"{column}": "VARCHAR"' for column in columns) + "}"
    expected = "[" + ", ".join(f"'{column}'" for column in columns) + "]"
    absent = " + ".join(f'(j."{column}" is null)::integer' for column in columns)
    missing = f"list_filter({expected}, c -> not list_contains(keys, c))"
    unexpected = f"list_filter(keys, c -> not list_contains({expected}, c))"
    half = len(columns) // 2
    parsed = f"""
        with
        lines as (
            -- trim only what starts with a space: trimming every line costs more than parsing it
            select {line} as source_line, r.line, json_valid(r.line)
                and starts_with(case when starts_with(r.line, ' ') then ltrim(r.line) else r.line end, '{{') as is_object
            from {source}
            where case when starts_with(r.line, ' ') then trim(r.line) else r.line end <> ''
        ),
        records as (
            select *, case when is_object then json_transform(line, '{structure}') end as j from lines
        ),
        keyed as (
            -- keys are listed only for records missing most fields, where a null field and an absent one differ
            select *, case when is_object and {absent} > {half} then json_keys(line) end as keys from records
        ),
        checked as (
            select *,
                case
                    when not is_object then 'broken_line'
                    when len({missing}) > {half}
                        then 'wrong_schema: missing columns ' || array_to_string({missing}, ', ') || case
                            when len({unexpected}) > 0 then '; unexpected columns ' || array_to_string({unexpected}, ', ')
                            else '' end
                end as parse_error
            from keyed
        )
        {part.head('source_line')}, case when parse_error is not null then line end as raw_record, parse_error,
            {", ".join(f'j."{column}" as "{column}"' for column in columns)}
        from checked
    """
    return [parsed] + ([refused] if refused else [])


def _csv_header(path: Path, compressed: bool) -> list[str]:
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline()
    return [name.strip().lstrip("\ufeff") for name in next(csv.reader([first]), [])]


def _safe_names(header: list[str]) -> list[str]:
    """Header names usable as quoted identifiers; odd or repeated names become positional ones."""
    names: list[str] = []
    for index, name in enumerate(header):
        usable = re.fullmatch(r"[A-Za-z0-9_ .-]{1,64}", name) and name.lower() not in {n.lower() for n in names}
        names.append(name if usable else f"column{index}")
    return names


def _csv(part: _Part) -> list[str]:
    header = _csv_header(part.entry.path, part.entry.compressed)
    if not any(header):
        return []  # an empty file, or one without a header line, holds no records
    names = _safe_names(header)
    file_columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in names) + "}"
    line, source, refused = part.read_lines(
        f"read_csv($path, columns = {file_columns}, header = true, auto_detect = false, delim = ',', quote = '\"', "
        f"escape = '\"', compression = 'auto', {_rejects(part.table)})"
    )
    schema_error = _schema_error(names, part.columns)
    part.register(schema_error)
    cells = ", ".join(f"coalesce(r.\"{name}\", '')" for name in names)
    raw = f"concat_ws(',', {cells})" if schema_error else "null::varchar"  # the row is kept as read only when unusable
    values = ", ".join(f'r."{column}"' if column in names else f'null::varchar as "{column}"' for column in part.columns)
    accepted = f"{part.head(line)}, {raw} as raw_record, {part.schema_error()} as parse_error, {values} from {source}"
    return [accepted] + ([refused] if refused else [])


def _parquet(part: _Part) -> list[str]:
    if part.entry.compressed:
        source = _inflated_parquet(part)
        described = part.con.execute(f"select column_name, column_type from (describe select * from {source})")
    else:
        source = f"read_parquet(getvariable('{part.table}_path'), file_row_number = true, hive_partitioning = false)"
        described = part.con.execute("select column_name, column_type from (describe select * from "
                                     "read_parquet($path, file_row_number = true, hive_partitioning = false))",
                                     {"path": str(part.entry.path)})
    types = {name: kind for name, kind in described.fetchall() if name != "file_row_number"}
    schema_error = _schema_error(list(types), part.columns)
    part.register(schema_error)
    values = []
    for column in part.columns:
        if column not in types:
            values.append(f'null::varchar as "{column}"')
        elif types[column].endswith("]") or types[column].startswith(("STRUCT", "MAP")):
            values.append(f'to_json(p."{column}")::varchar as "{column}"')  # lists stay parseable JSON
        else:
            values.append(f'cast(p."{column}" as varchar) as "{column}"')
    raw = "to_json(struct_pack(*columns(* exclude (file_row_number))))::varchar" if schema_error else "null::varchar"
    # Parquet numbers its own rows, so the view reads the file directly: nothing is copied first.
    return [f"{part.head('p.file_row_number + 1')}, {raw} as raw_record, {part.schema_error()} as parse_error, "
            f"{', '.join(values)} "
            f"from {source} as p"]


def _inflated_parquet(part: _Part) -> str:
    """A gzipped Parquet file (DuckDB reads Parquet only uncompressed on the outside) copied into the file's
    temp table through a temporary inflated copy; returns the table's name. A torn stream raises EOFError."""
    with tempfile.TemporaryDirectory(prefix="crossfade-parquet-") as folder:
        inflated = Path(folder) / "part.parquet"
        with gzip.open(part.entry.path, "rb") as packed, inflated.open("wb") as plain:
            shutil.copyfileobj(packed, plain)
        part.con.execute(f"create or replace temp table {part.table} as select * from read_parquet($path, "
                         "file_row_number = true, hive_partitioning = false)", {"path": str(inflated)})
    part.tables.append(part.table)
    return part.table


_READERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}
