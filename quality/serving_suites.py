"""Candidate suites: K per active user from one named model, no duplicates, nothing consumed, catalogue only,
ordered, coverage."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import duckdb
import great_expectations.expectations as gxe

from quality.facts import between, is_true, unique, validate_facts
from quality.thresholds import Thresholds
from quality.validate import Report, validate_frame

VERSION = "serving/v1"

# {table} is one of the two constant names in SUITES; every value is a bound parameter.
PER_USER = """
with

-- only the columns the facts read: carrying the explanation text through this CTE doubled the suite's time
lists as (
    select user_id, item_id, rank, score, is_fallback, model from {table} where as_of = $as_of
),

catalogue as (
    select distinct item_id
    from raw.items
    where item_type = $target_type and (release_date is null or release_date < $as_of)
),

active as (
    select distinct user_id from features.interactions
),

consumed as (
    select distinct user_id, item_id from features.interactions where item_type = $target_type
),

eligible as (
    select a.user_id, (select count(*) from catalogue) - count(c.item_id) as count_eligible
    from active as a
    left join consumed as x on a.user_id = x.user_id
    left join catalogue as c on x.item_id = c.item_id
    group by a.user_id
),

per_user as (
    select
        l.user_id,
        count(*) as count_rows,
        count(distinct l.item_id) as count_items,
        min(l.rank) as min_rank,
        max(l.rank) as max_rank,
        count(distinct l.rank) as count_ranks,
        count(x.item_id) as count_consumed,
        count(*) filter (where c.item_id is null) as count_outside_catalogue,
        count(*) filter (where l.score is null or not isfinite(l.score)) as count_bad_scores,
        bool_and(l.is_fallback) = bool_or(l.is_fallback) and count(distinct l.model) <= 1 as is_one_source,
        count(*) filter (where l.model is null) as count_rows_without_model
    from lists as l
    left join consumed as x on l.user_id = x.user_id and l.item_id = x.item_id
    left join catalogue as c on l.item_id = c.item_id
    group by l.user_id
),

score_rises as (
    select user_id, count(*) filter (where score > previous_score) as count_score_rises
    from (select user_id, score, lag(score) over (partition by user_id order by rank) as previous_score from lists)
    group by user_id
)

select
    coalesce(a.user_id, p.user_id) as user_id,
    a.user_id is not null as is_active,
    least($k, coalesce(e.count_eligible, 0)) - coalesce(p.count_rows, 0) as count_missing_rows,
    coalesce(p.count_rows - p.count_items, 0) as count_duplicates,
    coalesce(p.count_consumed, 0) as count_consumed,
    coalesce(p.count_outside_catalogue, 0) as count_outside_catalogue,
    coalesce(p.count_bad_scores, 0) as count_bad_scores,
    coalesce(s.count_score_rises, 0) as count_score_rises,
    coalesce((p.min_rank <> 1)::int + (p.max_rank <> p.count_rows)::int + (p.count_ranks <> p.count_rows)::int, 0)
        as count_rank_errors,
    coalesce(p.is_one_source, true) as is_one_source,
    coalesce(p.count_rows_without_model, 0) as count_rows_without_model
from active as a
full outer join per_user as p on a.user_id = p.user_id
left join eligible as e on coalesce(a.user_id, p.user_id) = e.user_id
left join score_rises as s on coalesce(a.user_id, p.user_id) = s.user_id
"""

SUMMARY = """
select
    (select count(*) from {table} where as_of = $as_of) as count_rows,
    (select count(distinct item_id) from {table} where as_of = $as_of)
        / greatest(1, (select count(distinct item_id) from raw.items
                       where item_type = $target_type and (release_date is null or release_date < $as_of)))
        as catalog_coverage,
    coalesce((select max(end_at)::date = $as_of from features.splits where split = 'holdout'), false)
        as is_features_as_of
"""


def _as_of(con: duckdb.DuckDBPyConnection, table: str, limits: Thresholds) -> dt.date | None:
    if limits.partitions:
        return max(limits.partitions)
    return con.execute(f"select max(as_of) from {table}").fetchall()[0][0]


def _candidates_suite(table: str) -> Callable[[duckdb.DuckDBPyConnection, Thresholds], Report]:
    def suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
        """Gate on one as-of date's lists (the newest checked partition, else the newest in the table)."""
        as_of = _as_of(con, table, limits)
        params = {"as_of": as_of, "target_type": limits.target_type, "k": limits.k}
        summary = con.execute(SUMMARY.format(table=table), {key: params[key] for key in ("as_of", "target_type")}).pl()
        zero = ("count_missing_rows", "count_duplicates", "count_consumed", "count_outside_catalogue",
                "count_bad_scores", "count_score_rises", "count_rank_errors", "count_rows_without_model")
        report = validate_facts(con, table, PER_USER.format(table=table), [
            unique("user_id"),
            is_true("is_active"),  # lists only for active users
            # one model or the fallback per list, not mixed, and every row says which
            is_true("is_one_source"),
            *[between(column, 0, 0) for column in zero],
        ], VERSION, params, batch=f"users@{as_of}")
        report.merge(validate_frame(table, summary, [
            gxe.ExpectColumnValuesToBeBetween(column="count_rows", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="catalog_coverage", min_value=limits.min_catalog_coverage),
            # consumed and active users come from the feature tables: they must describe the same date
            gxe.ExpectColumnValuesToBeInSet(column="is_features_as_of", value_set=[True]),
        ], VERSION, batch=f"summary@{as_of}"))
        return report

    return suite


SUITES = {
    "serving.candidates_staging": _candidates_suite("serving.candidates_staging"),
    "serving.candidates": _candidates_suite("serving.candidates"),
}
