"""Suites for raw.events (per arrival partition), raw.items and raw.users: counted in SQL, judged by GE."""
from __future__ import annotations

import duckdb
import great_expectations.expectations as gxe

from quality.contracts import columns_report
from quality.facts import between, in_set, is_true, not_null, row_count, unique, validate_facts
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
    report = validate_facts(con, "raw.events", """
        select event_id, user_id, item_id, ts, event_type, ms_played, event_date <= arrival_date as is_not_after_arrival
        from raw.events where arrival_date in (select unnest($partitions::date[]))
        """, [
        *[not_null(column) for column in ("event_id", "user_id", "item_id", "ts", "event_type", "ms_played")],
        unique("event_id"),
        in_set("event_type", EVENT_TYPES),
        between("ms_played", low=0),
        is_true("is_not_after_arrival"),
    ], EVENTS_VERSION, params)
    report.merge(columns_report(con, "raw.events", EVENTS_VERSION))
    accounting = con.execute(
        """
        with history as (
            select arrival_date, count_read, count_accepted, count_rejected, count_duplicates,
                   coalesce(count_files_quarantined, 0) as count_files_quarantined,
                   coalesce(count_duplicates_conflicting, 0) as count_duplicates_conflicting,
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
            -- each count the log records, against what the tables hold: neither side is derived from the other
            t.count_accepted = coalesce(st.count_stored, 0) as accepted_are_stored,
            t.count_rejected = coalesce(rj.count_quarantined_rows, 0) as rejected_are_quarantined,
            t.count_duplicates_conflicting <= t.count_duplicates as conflicting_within_duplicates,
            t.count_duplicates,
            -- a partition that lost files is judged by max_quarantined_files, not by its shrunken volume
            case when tr.partitions >= $min_history and t.count_files_quarantined = 0
                 then t.count_accepted / nullif(tr.median_accepted, 0) end as volume_vs_median
        from this as t
        inner join recent as tr using (arrival_date)
        left join (
            select arrival_date, count(*) as count_stored from raw.events
            where arrival_date in (select unnest($partitions::date[])) group by 1
        ) as st using (arrival_date)
        left join (
            select arrival_date, count(*) as count_quarantined_rows from raw.rejected_events
            where arrival_date in (select unnest($partitions::date[])) group by 1
        ) as rj using (arrival_date)
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
        gxe.ExpectColumnValuesToBeInSet(column="accepted_are_stored", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="rejected_are_quarantined", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="count_duplicates", min_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="conflicting_within_duplicates", value_set=[True]),
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
    report = validate_facts(con, "raw.items", "select item_id, item_type, title, duration_ms from raw.items", [
        row_count(low=1),
        not_null("item_id"),
        unique("item_id"),
        in_set("item_type", limits.item_types),
        between("duration_ms", low=0),
        not_null("title", mostly=0.95),
    ], ITEMS_VERSION)
    report.merge(columns_report(con, "raw.items", ITEMS_VERSION))
    return report


def users_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    report = validate_facts(con, "raw.users", "select user_id from raw.users", [
        row_count(low=1),
        not_null("user_id"),
        unique("user_id"),
    ], USERS_VERSION)
    report.merge(columns_report(con, "raw.users", USERS_VERSION))
    return report


SUITES = {"raw.events": events_suite, "raw.items": items_suite, "raw.users": users_suite}
