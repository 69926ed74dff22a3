"""Suites for the feature tables: contracts, no leakage across the split, edge sanity, coverage."""
from __future__ import annotations

import itertools

import duckdb
import great_expectations.expectations as gxe
import polars as pl

from quality.thresholds import Thresholds
from quality.validate import Report, validate_frame
from warehouse.features import PERIODS

VERSION = "features/v1"


def splits_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    rows = con.execute(
        "select split, start_at, end_at, end_at > start_at as is_ordered, "
        "end_at = lead(start_at) over (order by start_at) or split = 'holdout' as is_contiguous "
        "from features.splits"
    ).pl()
    return validate_frame("features.splits", rows, [
        gxe.ExpectTableRowCountToEqual(value=len(PERIODS)),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(PERIODS)),
        gxe.ExpectColumnValuesToBeUnique(column="split"),
        gxe.ExpectColumnValuesToBeInSet(column="is_ordered", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="is_contiguous", value_set=[True]),
    ], VERSION)


def interactions_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    rows = con.execute(
        """
        select i.period, i.user_id, i.item_id, i.item_type, i.completion_rate, i.count_events,
               i.first_seen_at >= s.start_at and i.last_seen_at < s.end_at as is_inside_period
        from features.interactions as i
        inner join features.splits as s on s.split = i.period
        """
    ).pl()
    report = validate_frame("features.interactions", rows, [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["period", "user_id", "item_id"]),
        gxe.ExpectColumnValuesToBeInSet(column="period", value_set=list(PERIODS)),
        gxe.ExpectColumnValuesToBeInSet(column="item_type", value_set=list(limits.item_types)),
        gxe.ExpectColumnValuesToBeBetween(column="completion_rate", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="count_events", min_value=1),
        # Leakage: a train row never holds a holdout event, nor a holdout row a later one.
        gxe.ExpectColumnValuesToBeInSet(column="is_inside_period", value_set=[True]),
    ], VERSION)
    # Nothing can be trained without a train period (one day of data, a window before the first event):
    # the column's name is what the run prints, so it says what is missing.
    counts = pl.DataFrame({"count_train_period_interactions": [int((rows["period"] == "train").sum())]})
    report.merge(validate_frame("features.interactions", counts, [
        gxe.ExpectColumnValuesToBeBetween(column="count_train_period_interactions", min_value=1),
    ], VERSION, batch="train_period"))
    return report


def user_stats_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    rows = con.execute(
        "select user_id, count_events, count_items, is_active, is_warm, "
        "(select count(*) from raw.users) as count_users from features.user_stats"
    ).pl()
    return validate_frame("features.user_stats", rows, [
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeBetween(column="count_events", min_value=0),
        gxe.ExpectTableRowCountToEqual(value=int(rows["count_users"][0]) if rows.height else 0),
        gxe.ExpectColumnMeanToBeBetween(column="is_active", min_value=0.01),  # coverage: someone listened
    ], VERSION)


def item_stats_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    rows = con.execute(
        "select item_id, item_type, count_listeners, popularity_tier, median_completion, "
        "count_listeners > 0 as has_listeners from features.item_stats"
    ).pl()
    return validate_frame("features.item_stats", rows, [
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeBetween(column="popularity_tier", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToBeBetween(column="count_listeners", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="median_completion", min_value=0, max_value=1),
        gxe.ExpectColumnMeanToBeBetween(column="has_listeners", min_value=limits.min_catalog_coverage),
    ], VERSION)


def co_listen_edges_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    relations = ["__".join(sorted(pair)) for pair in itertools.combinations_with_replacement(sorted(limits.graph_types), 2)]
    rows = con.execute(
        """
        select e.src_item_id, e.dst_item_id, e.relation, e.co_listeners,
               e.src_item_id < e.dst_item_id as is_ordered_pair,
               s.item_type = e.src_type and d.item_type = e.dst_type as types_match_catalog
        from features.co_listen_edges as e
        left join raw.items as s on s.item_id = e.src_item_id
        left join raw.items as d on d.item_id = e.dst_item_id
        """
    ).pl()
    return validate_frame("features.co_listen_edges", rows, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["src_item_id", "dst_item_id"]),
        gxe.ExpectColumnValuesToBeInSet(column="is_ordered_pair", value_set=[True]),  # no self loops, once per pair
        gxe.ExpectColumnValuesToBeInSet(column="types_match_catalog", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="relation", value_set=relations),
        gxe.ExpectColumnValuesToBeBetween(column="co_listeners", min_value=limits.min_co_listeners),
    ], VERSION)


SUITES = {
    "features.splits": splits_suite,
    "features.interactions": interactions_suite,
    "features.user_stats": user_stats_suite,
    "features.item_stats": item_stats_suite,
    "features.co_listen_edges": co_listen_edges_suite,
}
