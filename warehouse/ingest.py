"""Raw ingestion: landing files into raw.items, raw.users and one arrival partition of raw.events."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from warehouse import landing
from warehouse.store import one_row, run_sql, scalar


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion read and where every record went: read = accepted + rejected + duplicates."""

    table: str
    read: int
    accepted: int
    rejected: int
    duplicates: int
    files: int
    seconds: float
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    late_events: int = 0
    fingerprint: str = ""

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.read if self.read else 0.0


def _create_stage(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...]) -> None:
    text_columns = ", ".join(f'"{column}" varchar' for column in columns)
    con.execute(
        f"create or replace temp table {table} (source_file varchar, source_line bigint, "
        f"raw_record varchar, parse_error varchar, {text_columns})"
    )


def _stage_folder(con: duckdb.DuckDBPyConnection, folder: Path, columns: tuple[str, ...], table: str) -> int:
    files = landing.data_files(folder)
    _create_stage(con, table, columns)
    for entry in files:
        landing.stage_file(con, entry, columns, table)
    return len(files)


def _reasons(con: duckdb.DuckDBPyConnection, query: str, params: dict | None = None) -> dict[str, int]:
    return {reason: count for reason, count in con.execute(query, params or {}).fetchall()}


def _ingest_snapshot(
    con: duckdb.DuckDBPyConnection, folder: Path, entity: str, columns: tuple[str, ...], params: dict
) -> IngestResult:
    started = time.perf_counter()
    stage = f"_{entity}s_stage"
    count_files = _stage_folder(con, folder, columns, stage)
    if count_files == 0:
        raise landing.LandingError(f"{folder}: no {entity} files; the landing zone needs {folder.name}/*.parquet|jsonl|csv")
    # Later files replace earlier ones by name order: rank files so the newest record per id wins.
    con.execute(f"alter table {stage} add column reason varchar")
    con.execute(f"alter table {stage} add column file_rank integer")
    con.execute(
        f"update {stage} set file_rank = ranks.file_rank from ("
        f"select source_file, dense_rank() over (order by source_file) as file_rank "
        f"from (select distinct source_file from {stage})) as ranks where {stage}.source_file = ranks.source_file"
    )
    run_sql(con, f"raw/{entity}s_classify", params)
    run_sql(con, f"raw/{entity}s", params)
    con.execute("delete from raw.rejected_records where entity = $entity", {"entity": entity})
    con.execute(
        f"""
        insert into raw.rejected_records
        select $entity, source_file, source_line, reason, coalesce(raw_record, '')
        from {stage} where reason is not null
        """,
        {"entity": entity},
    )
    read, rejected = one_row(con, f"select count(*), count(reason) from {stage}")
    stored = scalar(con, f"select count(*) from raw.{entity}s")
    rejects = _reasons(con, f"select reason, count(*) from {stage} where reason is not null group by 1")
    con.execute(f"drop table {stage}")
    return IngestResult(
        table=f"raw.{entity}s", read=read, accepted=stored, rejected=rejected,
        duplicates=read - rejected - stored,  # older snapshots of the same id
        files=count_files, seconds=time.perf_counter() - started, rejects_by_reason=rejects,
    )


def ingest_items(con: duckdb.DuckDBPyConnection, landing_dir: Path, item_types: tuple[str, ...]) -> IngestResult:
    """Replace raw.items with the newest record per item_id across landing/items/*."""
    return _ingest_snapshot(con, landing_dir / "items", "item", landing.ITEM_COLUMNS, {"item_types": list(item_types)})


def ingest_users(con: duckdb.DuckDBPyConnection, landing_dir: Path) -> IngestResult:
    """Replace raw.users with the newest record per user_id across landing/users/*."""
    return _ingest_snapshot(con, landing_dir / "users", "user", landing.USER_COLUMNS, {})


def ingest_events(con: duckdb.DuckDBPyConnection, landing_dir: Path, partition: str) -> IngestResult:
    """Replace one arrival partition of raw.events (and its rejects) exactly, in one transaction."""
    started = time.perf_counter()
    arrival = landing.parse_partition(partition)
    folder = landing.event_partition_dir(landing_dir, partition)
    files = landing.data_files(folder)
    _create_stage(con, "_events_stage", landing.EVENT_COLUMNS)
    for entry in files:
        landing.stage_file(con, entry, landing.EVENT_COLUMNS, "_events_stage")
    params = {"arrival_date": arrival}
    run_sql(con, "raw/events_classify", params)
    con.execute("begin transaction")
    try:
        con.execute("delete from raw.events where arrival_date = $arrival_date", params)
        con.execute("delete from raw.rejected_events where arrival_date = $arrival_date", params)
        run_sql(con, "raw/events_insert", params)
        run_sql(con, "raw/rejected_events_insert", params)
        read, rejected, accepted, late = one_row(
            con,
            """
            select count(*), count(reason),
                   count(*) filter (where reason is null and copy_no = 1 and not seen_elsewhere),
                   count(*) filter (where reason is null and copy_no = 1 and not seen_elsewhere
                                    and cast(ts_utc as date) < $arrival_date)
            from _events_classified
            """,
            params,
        )
        duplicates = read - rejected - accepted
        con.execute(
            "insert into raw.ingest_log values ($arrival_date, now()::timestamp, $files, $read, $accepted, "
            "$rejected, $duplicates, $fingerprint)",
            {**params, "files": len(files), "read": read, "accepted": accepted, "rejected": rejected,
             "duplicates": duplicates, "fingerprint": landing.fingerprint(files)},
        )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    rejects = _reasons(con, "select reason, count(*) from _events_classified where reason is not null group by 1 order by 2 desc")
    con.execute("drop table _events_stage; drop table _events_classified")
    return IngestResult(
        table="raw.events", read=read, accepted=accepted, rejected=rejected, duplicates=duplicates,
        files=len(files), seconds=time.perf_counter() - started, rejects_by_reason=rejects,
        late_events=late, fingerprint=landing.fingerprint(files),
    )


def changed_partitions(con: duckdb.DuckDBPyConnection, landing_dir: Path, before: dt.date | None = None) -> list[str]:
    """Arrival partitions whose files changed since their last ingestion (or were never ingested)."""
    seen = dict(
        con.execute(
            "select arrival_date::varchar, arg_max(fingerprint, ingested_at) from raw.ingest_log group by 1"
        ).fetchall()
    )
    keys = [key for key in landing.event_partitions(landing_dir) if before is None or dt.date.fromisoformat(key) < before]
    return [key for key in keys if seen.get(key) != landing.fingerprint(landing.data_files(landing.event_partition_dir(landing_dir, key)))]
