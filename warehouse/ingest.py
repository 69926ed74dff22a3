"""Raw ingestion: landing files into raw.items, raw.users and arrival partitions of raw.events."""
from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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


def _reasons(con: duckdb.DuckDBPyConnection, query: str, params: dict | None = None) -> dict[str, int]:
    return {reason: count for reason, count in con.execute(query, params or {}).fetchall()}


def _ingest_snapshot(
    con: duckdb.DuckDBPyConnection, folder: Path, entity: str, columns: tuple[str, ...], params: dict
) -> IngestResult:
    started = time.perf_counter()
    stage = f"_{entity}s_stage"
    files = landing.data_files(folder)
    if not files:
        raise landing.LandingError(f"{folder}: no {entity} files; the landing zone needs {folder.name}/*.parquet|jsonl|csv")
    # Later files replace earlier ones by name order: file_rank orders them so the newest record per id wins.
    with landing.staged(con, files, columns, f"_{entity}s_files") as view:
        con.execute(f"create or replace temp table {stage} as select *, null::varchar as reason, file_no + 1 as file_rank "
                    f"from {view}")
    run_sql(con, f"raw/{entity}s_classify", params)
    run_sql(con, f"raw/{entity}s", params)
    con.execute("delete from raw.rejected_records where entity = $entity", {"entity": entity})
    fields = ", ".join(f'"{column}" := "{column}"' for column in columns)
    con.execute(
        f"""
        insert into raw.rejected_records
        select $entity, source_file, source_line, reason, coalesce(raw_record, to_json(struct_pack({fields}))::varchar)
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
        files=len(files), seconds=time.perf_counter() - started, rejects_by_reason=rejects,
    )


def ingest_items(con: duckdb.DuckDBPyConnection, landing_dir: Path, item_types: tuple[str, ...]) -> IngestResult:
    """Replace raw.items with the newest record per item_id across landing/items/*."""
    return _ingest_snapshot(con, landing_dir / "items", "item", landing.ITEM_COLUMNS, {"item_types": list(item_types)})


def ingest_users(con: duckdb.DuckDBPyConnection, landing_dir: Path) -> IngestResult:
    """Replace raw.users with the newest record per user_id across landing/users/*."""
    return _ingest_snapshot(con, landing_dir / "users", "user", landing.USER_COLUMNS, {})


# Files of about this size on disk are ingested in one transaction: small daily partitions then share
# statements and take DuckDB's bulk write path, while memory stays bounded (a big partition goes alone).
BATCH_BYTES = 64 * 2**20


def ingest_events(con: duckdb.DuckDBPyConnection, landing_dir: Path, partition: str) -> IngestResult:
    """Replace one arrival partition of raw.events (and its rejects) exactly, in one transaction."""
    return _ingest_batch(con, landing_dir, [partition])[partition]


def ingest_event_partitions(
    con: duckdb.DuckDBPyConnection, landing_dir: Path, partitions: list[str], batch_bytes: int = BATCH_BYTES
) -> dict[str, IngestResult]:
    """Replace several arrival partitions, oldest first, a few per transaction (about `batch_bytes` of files).

    Each partition is replaced exactly as ingest_events would; an event_id landing in several of them is
    kept by the earliest arrival. A partition's `seconds` is its share (by records read) of its batch.
    """
    keys = sorted({landing.parse_partition(key).isoformat() for key in partitions})
    results: dict[str, IngestResult] = {}
    batch: list[str] = []
    size = 0
    for key in keys:
        folder = landing.event_partition_dir(landing_dir, key)
        key_size = sum(entry.path.stat().st_size for entry in landing.data_files(folder))
        if batch and size + key_size > batch_bytes:
            results |= _ingest_batch(con, landing_dir, batch)
            batch, size = [], 0
        batch.append(key)
        size += key_size
    if batch:
        results |= _ingest_batch(con, landing_dir, batch)
    return results


def _ingest_batch(con: duckdb.DuckDBPyConnection, landing_dir: Path, keys: list[str]) -> dict[str, IngestResult]:
    started = time.perf_counter()
    files = {key: landing.data_files(landing.event_partition_dir(landing_dir, key)) for key in keys}
    days = {key: landing.parse_partition(key) for key in keys}
    params = {"days": list(days.values())}
    try:
        _classify(con, files, days)
        counted = {day: (read, rejected) for day, read, rejected in con.execute(
            "select arrival_date, count(*), count(reason) from _events_classified group by 1").fetchall()}
        rejects: dict[dt.date, dict[str, int]] = {}
        for day, reason, count in con.execute(
            "select arrival_date, reason, count(*) from _events_classified where reason is not null "
            "group by 1, 2 order by 3 desc, 2"
        ).fetchall():
            rejects.setdefault(day, {})[reason] = count
        with _transaction(con):
            con.execute("delete from raw.events where arrival_date in (select unnest($days::date[]))", params)
            con.execute("delete from raw.rejected_events where arrival_date in (select unnest($days::date[]))", params)
            run_sql(con, "raw/events_insert")
            run_sql(con, "raw/rejected_events_insert")
            stored = {day: (accepted, late) for day, accepted, late in con.execute(
                "select arrival_date, count(*), count(*) filter (where event_date < arrival_date) from raw.events "
                "where arrival_date in (select unnest($days::date[])) group by 1",
                params,
            ).fetchall()}
            results = {}
            for key, day in days.items():
                (read, rejected), (accepted, late) = counted.get(day, (0, 0)), stored.get(day, (0, 0))
                results[key] = IngestResult(
                    table="raw.events", read=read, accepted=accepted, rejected=rejected,
                    duplicates=read - rejected - accepted,  # repeats here, and events another partition already holds
                    files=len(files[key]), seconds=0.0, rejects_by_reason=rejects.get(day, {}), late_events=late,
                    fingerprint=landing.fingerprint(files[key]),
                )
                con.execute(
                    "insert into raw.ingest_log values ($day, now()::timestamp, $files, $read, $accepted, $rejected, "
                    "$duplicates, $fingerprint)",
                    {"day": day, "files": len(files[key]), "read": read, "accepted": accepted, "rejected": rejected,
                     "duplicates": results[key].duplicates, "fingerprint": results[key].fingerprint},
                )
    finally:
        con.execute("drop table if exists _events_classified; drop table if exists _events_files")
    seconds = time.perf_counter() - started
    total_read = sum(result.read for result in results.values())
    return {key: replace(result, seconds=seconds * (result.read / total_read if total_read else 1 / len(keys)))
            for key, result in results.items()}


def _classify(
    con: duckdb.DuckDBPyConnection, files: dict[str, list[landing.LandingFile]], days: dict[str, dt.date]
) -> None:
    """_events_classified: every record of the batch typed, with its reason if bad; _events_files names its file."""
    every_file = [entry for key in files for entry in files[key]]
    # file_no is the file's place in the staged view: oldest partition first, then by name
    con.execute(
        "create or replace temp table _events_files as select unnest(range(len($paths::varchar[]))) as file_no, "
        "unnest($days::date[]) as arrival_date, unnest($paths::varchar[]) as source_file",
        {"days": [days[key] for key in files for _ in files[key]], "paths": [str(entry.path) for entry in every_file]},
    )
    with landing.staged(con, every_file, landing.EVENT_COLUMNS, "_events_stage"):
        run_sql(con, "raw/events_classify")


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("begin transaction")
    try:
        yield
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def changed_partitions(con: duckdb.DuckDBPyConnection, landing_dir: Path, before: dt.date | None = None) -> list[str]:
    """Arrival partitions whose files changed since their last ingestion (or were never ingested)."""
    seen = dict(
        con.execute(
            "select arrival_date::varchar, arg_max(fingerprint, ingested_at) from raw.ingest_log group by 1"
        ).fetchall()
    )
    keys = [key for key in landing.event_partitions(landing_dir) if before is None or dt.date.fromisoformat(key) < before]
    return [key for key in keys if seen.get(key) != landing.fingerprint(landing.data_files(landing.event_partition_dir(landing_dir, key)))]
