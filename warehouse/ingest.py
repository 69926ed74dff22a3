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
    """What one ingestion read and where every record went: read = accepted + rejected + duplicates.

    Records of quarantined files (left out whole, each with its reason) are not read; `files` counts them.
    """

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
    duplicates_conflicting: int = 0  # same event_id as the kept copy, another payload
    quarantined: tuple[landing.QuarantinedFile, ...] = ()

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.read if self.read else 0.0

    @property
    def duplicates_exact(self) -> int:
        return self.duplicates - self.duplicates_conflicting


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
        quarantined, tallies = _classify(con, files, days)
        file_key = [key for key in files for _ in files[key]]  # by file_no
        read, rejected = dict.fromkeys(keys, 0), dict.fromkeys(keys, 0)
        rejects: dict[str, dict[str, int]] = {key: {} for key in keys}
        for file_no, reason, count in tallies:
            key = file_key[file_no]
            read[key] += count
            if reason is not None:
                rejected[key] += count
                rejects[key][reason] = rejects[key].get(reason, 0) + count
        partition_of = {entry.path: key for key in files for entry in files[key]}
        left_out = {key: tuple(q for q in quarantined if partition_of[q.path] == key) for key in keys}
        with _transaction(con):
            for table in ("raw.events", "raw.rejected_events", "raw.quarantined_files"):
                con.execute(f"delete from {table} where arrival_date in (select unnest($days::date[]))", params)
            run_sql(con, "raw/events_copies")
            run_sql(con, "raw/events_insert")
            run_sql(con, "raw/rejected_events_insert")
            if quarantined:
                run_sql(con, "raw/quarantined_files_insert", {
                    "arrival_dates": [days[partition_of[q.path]] for q in quarantined],
                    "source_files": [str(q.path) for q in quarantined], "sizes": [q.size_bytes for q in quarantined],
                    "formats": [q.fmt for q in quarantined], "reasons": [q.reason for q in quarantined],
                })
            stored = {day: (accepted, late) for day, accepted, late in con.execute(
                "select arrival_date, count(*), count(*) filter (where event_date < arrival_date) from raw.events "
                "where arrival_date in (select unnest($days::date[])) group by 1",
                params,
            ).fetchall()}
            repeats = {day: (count, conflicting) for day, count, conflicting in con.execute(
                "select arrival_date, count(*) filter (where not is_kept), "
                "count(*) filter (where not is_kept and is_conflicting) from _events_copies group by 1"
            ).fetchall()}
            results = {}
            for key, day in days.items():
                (accepted, late), (duplicates, conflicting) = stored.get(day, (0, 0)), repeats.get(day, (0, 0))
                results[key] = result = IngestResult(
                    table="raw.events", read=read[key], accepted=accepted, rejected=rejected[key],
                    duplicates=duplicates,  # repeats here, and events another partition already holds
                    files=len(files[key]), seconds=0.0,
                    rejects_by_reason=dict(sorted(rejects[key].items(), key=lambda item: (-item[1], item[0]))),
                    late_events=late, fingerprint=landing.fingerprint(files[key]),
                    duplicates_conflicting=conflicting, quarantined=left_out[key],
                )
                run_sql(con, "raw/ingest_log_insert", {
                    "day": day, "files": result.files, "read": result.read, "accepted": result.accepted,
                    "rejected": result.rejected, "duplicates": result.duplicates, "fingerprint": result.fingerprint,
                    "quarantined": len(result.quarantined), "conflicting": result.duplicates_conflicting,
                })
    finally:
        con.execute("drop table if exists _events_classified; drop table if exists _events_files; "
                    "drop table if exists _events_copies")
    seconds = time.perf_counter() - started
    total_read = sum(result.read for result in results.values())
    return {key: replace(result, seconds=seconds * (result.read / total_read if total_read else 1 / len(keys)))
            for key, result in results.items()}


def _classify(
    con: duckdb.DuckDBPyConnection, files: dict[str, list[landing.LandingFile]], days: dict[str, dt.date]
) -> tuple[list[landing.QuarantinedFile], list[tuple[int, str | None, int]]]:
    """_events_classified: every record of the batch's usable files typed, with its reason if bad;
    _events_files names each file. Returns the files quarantined and (file_no, reason, records) tallies.

    All files are staged together; only when that scan fails is each file probed on its own.
    """
    every_file = [entry for key in files for entry in files[key]]
    # file_no is the file's place in the staged view: oldest partition first, then by name
    con.execute(
        "create or replace temp table _events_files as select unnest(range(len($paths::varchar[]))) as file_no, "
        "unnest($days::date[]) as arrival_date, unnest($paths::varchar[]) as source_file",
        {"days": [days[key] for key in files for _ in files[key]], "paths": [str(entry.path) for entry in every_file]},
    )
    quarantined: list[landing.QuarantinedFile] = []
    try:
        with landing.staged(con, every_file, landing.EVENT_COLUMNS, "_events_stage", quarantined):
            run_sql(con, "raw/events_classify")
    except duckdb.Error:
        # a file failed only when scanned with the others (a damaged Parquet page, say): find it, leave it out
        found = len(quarantined)
        for entry in every_file:
            reason = None if entry.path in {q.path for q in quarantined} else landing.read_error(
                con, entry, landing.EVENT_COLUMNS)
            if reason is not None:
                quarantined.append(landing.QuarantinedFile.of(entry, reason))
        if len(quarantined) == found:
            raise
        with landing.staged(con, every_file, landing.EVENT_COLUMNS, "_events_stage", quarantined):
            run_sql(con, "raw/events_classify")
    tallies = con.execute("select file_no, reason, count(*) from _events_classified group by all").fetchall()
    unusable = _unusable(every_file, {q.path for q in quarantined}, tallies)
    if unusable:
        con.execute("delete from _events_classified where file_no in (select unnest($file_nos::integer[]))",
                    {"file_nos": list(unusable)})
        quarantined += unusable.values()
    return quarantined, [row for row in tallies if row[0] not in unusable]


def _unusable(
    every_file: list[landing.LandingFile], unread: set[Path], tallies: list[tuple[int, str | None, int]]
) -> dict[int, landing.QuarantinedFile]:
    """Files read without error that hold no event: no record at all, or none that parses."""
    by_file: dict[int, dict[str | None, int]] = {}
    for file_no, reason, count in tallies:
        by_file.setdefault(file_no, {})[reason] = count
    unusable = {}
    for file_no, entry in enumerate(every_file):
        if entry.path in unread:
            continue
        reasons = by_file.get(file_no, {})
        records = sum(reasons.values())
        unparsed = {reason: count for reason, count in reasons.items() if reason and reason.startswith(_UNPARSED)}
        commonest = min(unparsed, key=lambda reason: (-unparsed[reason], reason)) if unparsed else ""
        if not records:
            unusable[file_no] = landing.QuarantinedFile.of(entry, "empty: no records")
        elif sum(unparsed.values()) == records and commonest.startswith("wrong_schema"):
            unusable[file_no] = landing.QuarantinedFile.of(entry, commonest)
        elif sum(unparsed.values()) == records:
            unusable[file_no] = landing.QuarantinedFile.of(
                entry, f"undecodable: none of its {records} records parses (mostly {commonest})")
    return unusable


# A record with one of these reasons was not parsed into fields; a file of nothing else holds no event.
_UNPARSED = ("wrong_schema", "broken_line")


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("begin transaction")
    try:
        yield
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def unpublished_partitions(con: duckdb.DuckDBPyConnection, published_version: int | None) -> list[dt.date]:
    """Arrival partitions ingested after the published snapshot of raw.ingest_log (all of them when none is)."""
    if published_version is None:
        return [row[0] for row in con.execute("select distinct arrival_date from raw.ingest_log order by 1").fetchall()]
    return [row[0] for row in con.execute(f"""
        select arrival_date, max(ingested_at) as ingested_at from raw.ingest_log group by 1
        except
        select arrival_date, max(ingested_at) from raw.ingest_log at (version => {int(published_version)}) group by 1
        order by 1
    """).fetchall()]


def changed_partitions(con: duckdb.DuckDBPyConnection, landing_dir: Path, before: dt.date | None = None) -> list[str]:
    """Arrival partitions whose files changed since their last ingestion (or were never ingested)."""
    seen = dict(
        con.execute(
            "select arrival_date::varchar, arg_max(fingerprint, ingested_at) from raw.ingest_log group by 1"
        ).fetchall()
    )
    keys = [key for key in landing.event_partitions(landing_dir) if before is None or dt.date.fromisoformat(key) < before]
    return [key for key in keys if seen.get(key) != landing.fingerprint(landing.data_files(landing.event_partition_dir(landing_dir, key)))]
