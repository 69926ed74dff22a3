"""The landing file formats: each file read once into a narrow temp table, and the select that parses it as text.

`landing.staged` unions one select per file into a view; a reader raises duckdb.Error, OSError or EOFError for a
file it cannot read, which staging turns into a quarantine row.
"""
from __future__ import annotations

import csv
import gzip
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from warehouse.landing import LandingFile


def nulls(columns: tuple[str, ...]) -> list[str]:
    return [f'null::varchar as "{column}"' for column in columns]


@dataclass
class Part:
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
        refused = (f"{self.head('b.line')}, b.raw_record, b.reason as parse_error, {', '.join(nulls(self.columns))} "
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


def _jsonl(part: Part) -> list[str]:
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


def _csv(part: Part) -> list[str]:
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


def _parquet(part: Part) -> list[str]:
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


def _inflated_parquet(part: Part) -> str:
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


READERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}
