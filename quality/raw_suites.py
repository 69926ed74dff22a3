"""Suites for raw.events (per arrival partition), raw.items and raw.users."""
from __future__ import annotations

import duckdb
import great_expectations.expectations as gxe

from quality.thresholds import EVENT_TYPES, Thresholds
from quality.validate import Report, validate_frame

EVENTS_VERSION = "raw.events/v1"
ITEMS_VERSION = "raw.items/v1"
USERS_VERSION = "raw.users/v1"


def events_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    """Arrival partitions: contract of every stored row, reject rate, quarantined files, and volume against history."""
    if not limits.partitions:
        raise ValueError("raw.events is checked per arrival partition: set Thresholds.partitions")
    params = {"partitions": list(limits.partitions)}
    rows = con.execute(
        "select event_id, user_id, item_id, ts, event_type, ms_played, event_date <= arrival_date as is_not_after_arrival "
        "from raw.events where arrival_date in (select unnest($partitions::date[]))",
        params,
    ).pl()
    report = validate_frame("raw.events", rows, [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(rows.columns), exact_match=True),
        *[gxe.ExpectColumnValuesToNotBeNull(column=column) for column in ("event_id", "user_id", "item_id", "ts", "event_type", "ms_played")],
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(column="ms_played", min_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="is_not_after_arrival", value_set=[True]),
    ], EVENTS_VERSION)
    accounting = con.execute(
        """
        with history as (
            select arrival_date, count_read, count_accepted, count_rejected, count_duplicates,
                   coalesce(count_files_quarantined, 0) as count_files_quarantined,
                   row_number() over (partition by arrival_date order by ingested_at desc) as newest
            from raw.ingest_log
        ),
        latest as (select * from history where newest = 1),
        this as (
            select * from latest where arrival_date in (select unnest($partitions::date[]))
        ),
        recent as (
            -- per checked partition: the median of up to 14 earlier partitions that lost no file to quarantine
            select t.arrival_date, median(h.count_accepted) as median_accepted, count(h.count_accepted) as partitions
            from this as t
            left join latest as h on h.arrival_date < t.arrival_date and h.arrival_date >= t.arrival_date - interval 14 day
                and h.count_files_quarantined = 0
            group by t.arrival_date
        )
        select
            t.arrival_date::varchar as arrival_date, t.count_read, t.count_accepted, t.count_rejected, t.count_duplicates,
            t.count_files_quarantined,
            t.count_rejected / greatest(t.count_read, 1) as reject_rate,
            t.count_read = t.count_accepted + t.count_rejected + t.count_duplicates as accounting_balances,
            -- a partition that lost files is judged by max_quarantined_files, not by its shrunken volume
            case when tr.partitions >= $min_history and t.count_files_quarantined = 0
                 then t.count_accepted / nullif(tr.median_accepted, 0) end as volume_vs_median
        from this as t inner join recent as tr using (arrival_date)
        """,
        {**params, "min_history": limits.min_volume_history},
    ).pl()
    missing = len(limits.partitions) - accounting.height
    if missing:
        report.failed.append({"expectation": "every checked partition is in raw.ingest_log", "column": None, "unexpected_count": missing})
        return report
    checked = validate_frame("raw.events", accounting, [
        gxe.ExpectColumnValuesToBeBetween(column="reject_rate", max_value=limits.max_reject_rate),
        gxe.ExpectColumnValuesToBeInSet(column="accounting_balances", value_set=[True]),
        # per partition: files left out whole (unreadable, empty, another schema) stop the night past this limit
        gxe.ExpectColumnValuesToBeBetween(column="count_files_quarantined", max_value=limits.max_quarantined_files),
        gxe.ExpectColumnValuesToBeBetween(
            column="volume_vs_median", min_value=1 - limits.volume_tolerance, max_value=1 + limits.volume_tolerance,
        ),
    ], EVENTS_VERSION, batch="accounting")
    for failure in checked.failed:
        if failure["column"] == "count_files_quarantined":
            failure["examples"] = _quarantined_files(con, params)
            failure["hint"] = ("replace or remove the named files and ingest their partitions again, "
                               f"or raise max_quarantined_files (now {limits.max_quarantined_files})")
    report.merge(checked)
    return report


def _quarantined_files(con: duckdb.DuckDBPyConnection, params: dict) -> list[str]:
    """The first quarantined files of the checked partitions, as 'path: reason', for the failure's examples."""
    rows = con.execute(
        "select source_file, reason from raw.quarantined_files where arrival_date in (select unnest($partitions::date[])) "
        "order by arrival_date, source_file limit 5",
        params,
    ).fetchall()
    return [f"{source_file}: {reason}" for source_file, reason in rows]


def items_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    rows = con.execute("select item_id, item_type, title, duration_ms, release_date, language from raw.items").pl()
    return validate_frame("raw.items", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeInSet(column="item_type", value_set=list(limits.item_types)),
        gxe.ExpectColumnValuesToBeBetween(column="duration_ms", min_value=0),
        gxe.ExpectColumnValuesToNotBeNull(column="title", mostly=0.95),
    ], ITEMS_VERSION)


def users_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    rows = con.execute("select user_id, country, age_bucket, signup_date from raw.users").pl()
    return validate_frame("raw.users", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
    ], USERS_VERSION)


SUITES = {"raw.events": events_suite, "raw.items": items_suite, "raw.users": users_suite}
